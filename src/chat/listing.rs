//! Answers too long to build whole: `users` over every account. FORMAT.md answers it in one
//! message, and a million accounts make about 50 MB of it, past any connection's output cap.
//! The line is written a slice at a time as the connection takes it, paced by the loop as a
//! backlog is ([`Core::catch_up`](super::Core::catch_up)), each slice read from the store
//! by a keyset cursor (the usernames after the last one written), so neither the rows nor
//! the answer are ever held whole, and no iteration of the loop reads more than a slice.
//!
//! While a connection's line is unfinished nothing else may land inside it: what else is
//! sent to that connection waits here, in order, once its iteration has committed (so a
//! failed commit's rewrites are done), and follows the line's end. The connection's own
//! requests wait too ([`Core::is_busy`](super::Core::is_busy)). What waits is capped at the
//! room the connection had when it asked; past that the connection is closed as a slow
//! consumer, as a full output buffer would have it.
//!
//! Owns no socket and no clock: reads the store, writes the outbox.

use super::outbox::{CloseReason, Outbox};
use super::{ConnId, Core, OnCommitFail};
use crate::protocol::response;
use std::collections::HashMap;
use std::ops::Range;

/// Accounts read per store query, at most (an account takes about 50 bytes of the answer).
const ROWS_PER_READ: usize = 1024;
/// The cap on what waits when the connection's room was not known.
const DEFAULT_HOLD: usize = 8 << 20;

#[derive(Debug, Default)]
pub struct Listings {
    active: HashMap<ConnId, Listing>,
}

#[derive(Debug)]
struct Listing {
    /// The last username written ("" before the first).
    after: String,
    /// Items written so far (the next one needs a comma when any were).
    written: usize,
    /// Where in the outbox's arena this listing's latest slice starts, until the sends are
    /// sorted out: sends to the connection before it pass, after it wait. (An arena offset,
    /// not an index in the sends: a failed commit drops sends and would shift an index.)
    own: Option<usize>,
    /// What waits for the line's end: bytes, and (range, personal message delivered).
    held: Vec<u8>,
    sends: Vec<(Range<usize>, Option<i64>)>,
    cap: usize,
}

impl Listings {
    pub fn is_active(&self, conn: ConnId) -> bool {
        self.active.contains_key(&conn)
    }

    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.active.keys().copied()
    }

    pub fn forget(&mut self, conn: ConnId) {
        self.active.remove(&conn);
    }

    /// Sorts the committed sends: those to a connection inside its listing's line wait.
    /// Call with the outbox of a committed iteration, before it goes to the connections.
    pub fn hold(&mut self, out: &mut Outbox) {
        if self.active.is_empty() {
            return;
        }
        let sends = std::mem::take(&mut out.sends);
        for s in sends {
            let Some(l) = self.active.get_mut(&s.to) else {
                out.sends.push(s);
                continue;
            };
            if let Some(own) = l.own {
                // Before the slice, or the slice itself: in the line's place.
                if s.range.start == own {
                    l.own = None;
                }
                out.sends.push(s);
                continue;
            }
            let start = l.held.len();
            l.held.extend_from_slice(&out.bytes[s.range.clone()]);
            l.sends.push((start..l.held.len(), s.delivers));
            if l.held.len() > l.cap {
                log::warn!("output waiting for a long answer passed {} bytes; closing", l.cap);
                out.closes.push((s.to, CloseReason::SlowConsumer));
                self.active.remove(&s.to);
            }
        }
        for l in self.active.values_mut() {
            l.own = None;
        }
    }
}

/// Starts `users` for `conn`: the first slice now (a store error is still answered
/// `failed`), the rest as the connection takes it.
pub(super) fn start_users(core: &mut Core, conn: ConnId) {
    let room = core.out.room(conn);
    let cap = if room == usize::MAX { DEFAULT_HOLD } else { room };
    let listing = Listing { after: String::new(), written: 0, own: None, held: Vec::new(), sends: Vec::new(), cap };
    core.listings.active.insert(conn, listing);
    if let Err(e) = write_slice(core, conn, ROWS_PER_READ * 64) {
        core.listings.active.remove(&conn);
        log::error!("listing users failed: {e}");
        core.out.failed(conn, "users", "could not list users now; try again");
    }
}

/// Writes the next slice of `conn`'s line, about `max_bytes`; true while more remains.
/// A store error inside the line cannot be answered any more: the connection is closed.
pub(super) fn next(core: &mut Core, conn: ConnId, max_bytes: usize) -> bool {
    match write_slice(core, conn, max_bytes) {
        Ok(more) => more,
        Err(e) => {
            log::error!("listing users failed halfway: {e}; closing the connection");
            core.listings.active.remove(&conn);
            core.out.closes.push((conn, CloseReason::Broken));
            false
        }
    }
}

fn write_slice(core: &mut Core, conn: ConnId, max_bytes: usize) -> Result<bool, crate::store::StoreError> {
    let Some(l) = core.listings.active.get_mut(&conn) else { return Ok(false) };
    let out = &mut core.out;
    let start = out.bytes.len();
    if l.written == 0 {
        response::list_open(&mut out.bytes, b"users");
    }
    let mut done = false;
    let per_read = (max_bytes / 64).clamp(16, ROWS_PER_READ);
    while out.bytes.len() - start < max_bytes {
        let mut rows = 0;
        let mut last = None;
        core.store.users_after(&l.after, per_read, |username, email| {
            response::user_item(&mut out.bytes, l.written > 0, username, email);
            l.written += 1;
            rows += 1;
            last = Some(username.to_owned());
        })?;
        if let Some(u) = last {
            l.after = u;
        }
        if rows < per_read {
            done = true;
            break;
        }
    }
    if done {
        response::list_close(&mut out.bytes);
    }
    l.own = Some(start);
    out.send_again(conn, start..out.bytes.len(), OnCommitFail::Keep);
    if !done {
        return Ok(true);
    }
    // The line is complete: what waited follows it.
    if let Some(l) = core.listings.active.remove(&conn) {
        for (range, delivers) in l.sends {
            let r = out.encode(|b| b.extend_from_slice(&l.held[range]));
            out.deliver(conn, r, OnCommitFail::Keep, delivers);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed commit drops deliveries from the outbox, which moves the sends after them:
    /// what follows a listing's slice must still wait behind the line.
    #[test]
    fn after_a_failed_commit_what_follows_the_slice_still_waits() {
        let ann = ConnId { slot: 1, generation: 1 };
        let mut out = Outbox::default();
        let mut listings = Listings::default();
        for text in ["delivery 1\n", "delivery 2\n"] {
            let r = out.encode(|b| b.extend_from_slice(text.as_bytes()));
            out.deliver(ann, r, OnCommitFail::Drop, Some(1));
        }
        let slice = out.encode(|b| b.extend_from_slice(b"{\"event\":\"success\",\"type\":\"users\",\"details\":["));
        let listing = Listing {
            after: "x".into(),
            written: 1,
            own: Some(slice.start),
            held: Vec::new(),
            sends: Vec::new(),
            cap: 1 << 20,
        };
        listings.active.insert(ann, listing);
        out.send_again(ann, slice.clone(), OnCommitFail::Keep);
        let after = out.encode(|b| b.extend_from_slice(b"{\"event\":\"global\"}\n"));
        out.send_again(ann, after, OnCommitFail::Keep);
        out.commit_failed();
        listings.hold(&mut out);
        let sent: Vec<_> = out.sends.iter().map(|s| s.range.clone()).collect();
        assert_eq!(sent, vec![slice], "only the slice goes out; the global message waits");
        assert_eq!(listings.active[&ann].held, b"{\"event\":\"global\"}\n");
    }
}
