//! Getting personal and group messages to every connection of their recipients, and
//! knowing when they count as delivered.
//!
//! Each logged-in connection is fed in id order: first its backlog, read from the store in
//! batches after the watermark (catch-up, paced by how fast its socket drains), then live.
//! Because of that order, "this connection has written (or acked) message X" means it got
//! every message to its user from the watermark at its login up to X, except the messages
//! to oneself that it sent itself. So each user has one number, the watermark, below which
//! everything is delivered: a connection's progress raises it, and it is stored once per
//! loop iteration per user instead of one UPDATE per message.
//!
//! The exception is kept in `holds`: a message to oneself is delivered only once another
//! connection has it, so the watermark stops below it on its sender's word alone. With no
//! other connection, it waits for the next login (PROTOCOL.md section 12).

use super::sessions::{ConnId, Feed, Sessions};
use super::{Core, OnCommitFail};
use crate::protocol::response::{self, GroupMessageOut, PersonalOut};
use crate::store::backlog::Backlog;
use crate::store::{Store, StoreError};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

/// Delivery state kept across an iteration: the watermarks raised and not yet stored, the
/// holds added (undone if the commit fails), and the connections reading their backlog.
#[derive(Default)]
pub(super) struct Ledger {
    /// Watermarks raised since they were last stored, by user.
    dirty: HashMap<i64, i64>,
    /// A `PersistWatermarks` deadline is pending.
    timer_pending: bool,
    /// Store the dirty watermarks with this iteration's commit.
    persist: bool,
    /// Holds added this iteration.
    holds_added: Vec<(i64, i64)>,
    /// Connections reading their backlog.
    pub catching_up: Vec<ConnId>,
    /// Where each of them stands in its backlog, with the rows it read ahead.
    backlogs: HashMap<ConnId, Backlog>,
}

impl Ledger {
    /// A raised watermark not stored yet for `user`.
    pub fn unstored(&self, user: i64) -> Option<i64> {
        self.dirty.get(&user).copied()
    }

    /// True (once) when raised watermarks need a `PersistWatermarks` deadline.
    pub fn needs_timer(&mut self) -> bool {
        let needed = !self.dirty.is_empty() && !self.timer_pending;
        self.timer_pending |= needed;
        needed
    }

    /// The deadline came (or the server stops): store them with the next commit.
    pub fn persist_now(&mut self, from_timer: bool) {
        if from_timer {
            self.timer_pending = false;
        }
        self.persist = true;
    }

    /// Writes the watermarks into the open transaction when their time has come.
    pub fn write(&mut self, store: &mut Store) -> Result<(), StoreError> {
        if std::mem::take(&mut self.persist) {
            for (user, upto) in self.dirty.drain() {
                store.set_watermark(user, upto)?;
            }
        }
        Ok(())
    }

    /// Drops the backlogs' rows read ahead when another process committed (it may have
    /// deleted an account and its messages) and the core has not caught up with it yet.
    /// Rows already read must not go out after their deletion, and the core looks for
    /// other processes' commits only every so often.
    pub fn check_read_ahead(&mut self, store: &Store) {
        if !self.backlogs.values().any(Backlog::holds_rows) {
            return;
        }
        match store.changed_elsewhere_since_seen() {
            Ok(false) => {}
            Ok(true) => self.forget_backlogs(),
            Err(e) => {
                log::warn!("reading the database's data_version: {e}");
                self.forget_backlogs();
            }
        }
    }

    /// Drops every backlog's rows read ahead: rows were deleted (a group, an account).
    /// Each is opened again from the last message its connection was sent.
    pub fn forget_backlogs(&mut self) {
        self.backlogs.clear();
    }

    /// The commit ended; when nothing was stored, the holds it added are undone.
    pub fn committed(&mut self, stored: bool, sessions: &mut Sessions) {
        for (user, id) in self.holds_added.drain(..) {
            if !stored {
                if let Some(o) = sessions.online_mut(user) {
                    o.holds.remove(&id);
                }
            }
        }
    }
}

/// Sends an encoded message to every live connection of `recipient` but `except`.
pub(super) fn deliver_live(core: &mut Core, recipient: i64, id: i64, bytes: Range<usize>, except: ConnId) {
    let mut i = 0;
    while let Some(&c) = core.sessions.conns_of(recipient).get(i) {
        i += 1;
        if c == except {
            continue;
        }
        let Some(s) = core.sessions.get_mut(c) else { continue };
        if s.feed != Feed::Live {
            continue;
        }
        s.last_sent = s.last_sent.max(id);
        let mark = if s.member.as_ref().is_some_and(|m| m.acks) { None } else { Some(id) };
        core.out.deliver(c, bytes.clone(), OnCommitFail::Drop, mark);
    }
}

/// Records a message to oneself sent from `sender`.
pub(super) fn hold(core: &mut Core, user: i64, id: i64, sender: ConnId) {
    if let Some(online) = core.sessions.online_mut(user) {
        online.holds.insert(id, sender);
        core.ledger.holds_added.push((user, id));
    }
}

/// Starts feeding a freshly logged-in connection its backlog.
pub(super) fn start(core: &mut Core, conn: ConnId) {
    core.ledger.backlogs.remove(&conn);
    core.ledger.catching_up.push(conn);
}

/// Sends the next batch of `conn`'s backlog: at most `limit` messages, and no more once
/// `max_bytes` are encoded (at least one message goes). Returns true while the connection
/// still has backlog to read. Must run when no write is pending (after the commit), so
/// that the backlog never includes an uncommitted message.
pub(super) fn catch_up(core: &mut Core, conn: ConnId, limit: usize, max_bytes: usize) -> bool {
    let more = next_batch(core, conn, limit, max_bytes);
    if !more {
        core.ledger.backlogs.remove(&conn);
    }
    more
}

fn next_batch(core: &mut Core, conn: ConnId, limit: usize, max_bytes: usize) -> bool {
    let Some(s) = core.sessions.get_mut(conn) else { return false };
    let Feed::CatchUp { cursor } = s.feed else { return false };
    let Some(me) = s.member.as_ref() else { return false };
    let (user, acks, email) = (me.user_id, me.acks, Rc::clone(&me.email));
    let backlog = match core.ledger.backlogs.entry(conn) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => match core.store.backlog(user, cursor) {
            Ok(b) => e.insert(b),
            Err(err) => {
                log::error!("opening the backlog of user {user} failed: {err}");
                return true;
            }
        },
    };
    let skip = std::mem::take(&mut s.skip);
    let mut last = cursor;
    let out = &mut core.out;
    let start = out.bytes.len();
    let read = core.store.read_backlog(backlog, limit, |m, group| {
        last = m.id;
        if !skip.contains(&m.id) {
            let range = match group {
                None => {
                    let to = (m.sender == user).then_some(&*email);
                    let msg = PersonalOut {
                        id: m.id,
                        message: m.body,
                        media: m.media,
                        from: m.sender_email,
                        time: m.time,
                        to,
                    };
                    out.encode(|b| response::personal(b, &msg))
                }
                Some(group) => {
                    let msg = GroupMessageOut {
                        id: m.id,
                        group,
                        message: m.body,
                        media: m.media,
                        from: m.sender_email,
                        time: m.time,
                    };
                    out.encode(|b| response::group_message(b, &msg))
                }
            };
            out.deliver(conn, range, OnCommitFail::Keep, if acks { None } else { Some(m.id) });
        }
        out.bytes.len() - start < max_bytes
    });
    let Some(s) = core.sessions.get_mut(conn) else { return false };
    s.last_sent = s.last_sent.max(last);
    // On an error the messages already given are sent, and the backlog goes on after them.
    if let Err(e) = &read {
        log::error!("reading the backlog of user {user} failed: {e}");
    }
    if let Ok(false) = read {
        s.feed = Feed::Live;
        return false;
    }
    s.feed = Feed::CatchUp { cursor: last };
    s.skip = skip.into_iter().filter(|&id| id > last).collect();
    true
}

/// `conn` has written (or acked) every message to its user up to `upto`.
pub(super) fn advance(core: &mut Core, conn: ConnId, upto: i64) {
    let Some(user) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    let Some(online) = core.sessions.online_mut(user) else { return };
    let mut limit = upto;
    online.holds.retain(|&id, &mut sender| {
        if id > upto {
            true
        } else if sender == conn {
            limit = limit.min(id - 1);
            true
        } else {
            false
        }
    });
    if limit > online.watermark {
        online.watermark = limit;
        core.ledger.dirty.insert(user, limit);
    }
}

/// The loop wrote every byte of the messages up to `upto` to `conn`.
pub(super) fn written(core: &mut Core, conn: ConnId, upto: i64) {
    let acks = core.sessions.get(conn).and_then(|s| s.member.as_ref()).is_some_and(|m| m.acks);
    if !acks {
        advance(core, conn, upto);
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnId, Ledger};
    use crate::store::groups::NewGroupMessage;
    use crate::store::{Durability, Store};
    use std::time::Duration;

    /// Rows read ahead are dropped once another process commits (`natter user del` may
    /// have deleted them), and kept while nothing else changed the database.
    #[test]
    fn another_process_commit_drops_the_rows_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut s = Store::open(&path, Durability::Normal, Duration::from_millis(100)).unwrap();
        let me = s.insert_user("me@x.org", "me", "h", 0).unwrap();
        let other = s.insert_user("o@x.org", "o", "h", 0).unwrap();
        let g = s.create_group("g", other, 0).unwrap();
        s.add_group_member(g, other, 1, 1).unwrap();
        s.add_group_member(g, me, 2, 1).unwrap();
        for _ in 0..50 {
            let m = NewGroupMessage {
                group: g,
                sender: other,
                body: "m",
                media: None,
                client_time: 0,
                server_time: 0,
                client_id: None,
            };
            s.insert_group_message(&m).unwrap();
        }
        s.commit().unwrap();
        s.changed_elsewhere().unwrap();
        let conn = ConnId { slot: 1, generation: 1 };
        let mut ledger = Ledger::default();
        let mut b = s.backlog(me, 0).unwrap();
        assert!(s.read_backlog(&mut b, 10, |_, _| false).unwrap());
        assert!(b.holds_rows());
        ledger.backlogs.insert(conn, b);
        ledger.check_read_ahead(&s);
        assert!(ledger.backlogs.contains_key(&conn), "nothing changed elsewhere");
        let admin = rusqlite::Connection::open(&path).unwrap();
        admin.execute("DELETE FROM group_messages WHERE sender_id = ?1", [other]).unwrap();
        ledger.check_read_ahead(&s);
        assert!(ledger.backlogs.is_empty());
    }
}
