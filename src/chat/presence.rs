//! Presence (PROTOCOL.md section 15): who of a user's contacts is online, told to the
//! connections that subscribed at login.
//!
//! A user is online while at least one connection is logged in as it; the events go out
//! when that changes (the first login, the last logout or close), not per connection. Owns
//! the contacts of each online user, read from its friends list at its first login, so that
//! going offline tells the same people going online told. A block hides the blocker from
//! the blocked user only. Never touches sockets.
//!
//! What it costs is bounded. A user is announced at most once a second (a user flapping in
//! and out is told as its state a second later, and not at all when it came back), and an
//! announcement goes out to at most [`PER_ITERATION`] connections per loop iteration, so a
//! user with thousands of contacts never stalls the loop for the others (issue 14 measured
//! a 49 ms p99 for a bystander before, with one send per contact in one iteration).

use super::sessions::ConnId;
use super::{blocks, Core, Now, OnCommitFail, Timer};
use crate::protocol::response;
use crate::store::Friend;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Connections told of presence changes per loop iteration, at most.
const PER_ITERATION: usize = 512;
/// A user's presence is announced at most this often.
const EVERY_MS: u64 = 1_000;

type Contacts = Rc<Vec<(i64, Rc<str>)>>;

/// What was last announced of a user, and what is now.
struct UserState {
    email: Rc<str>,
    contacts: Contacts,
    online: bool,
    /// Changed since the last announcement (even if back where it was: a contact may have
    /// subscribed in between and seen the other state).
    dirty: bool,
    last_ms: Option<u64>,
    scheduled: bool,
}

/// One announcement being sent: its bytes, and the connections still to get them.
struct Outgoing {
    email: Rc<str>,
    online: bool,
    conns: Vec<ConnId>,
}

/// The contacts (user, email) of every online user, and the announcements in progress.
#[derive(Default)]
pub(super) struct Presence {
    contacts: HashMap<i64, Contacts>,
    states: HashMap<i64, UserState>,
    outgoing: VecDeque<Outgoing>,
}

impl Presence {
    /// True when `other` is among the contacts `user` had at its login (`user` online).
    /// True while announcements wait to go out (the loop must not sleep on them).
    pub fn has_pending(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn is_contact(&self, user: i64, other: i64) -> bool {
        self.contacts.get(&user).is_some_and(|c| c.iter().any(|(id, _)| *id == other))
    }
}

/// Whether `user` is online now. A new subscriber's burst and the query say what is; an
/// announcement still held back by the quiet second follows it (the events are states, so
/// hearing one twice is harmless).
fn shown_online(core: &Core, user: i64) -> bool {
    !core.sessions.conns_of(user).is_empty()
}

/// A friends list as presence keeps it: (user, email).
fn contacts_of(friends: &[Friend]) -> Vec<(i64, Rc<str>)> {
    friends.iter().map(|f| (f.id, Rc::from(f.email.as_str()))).collect()
}

/// `user` went online or offline: announced now, or a second after its last announcement.
fn changed(core: &mut Core, user: i64, email: &str, online: bool, contacts: Contacts, now: Now) {
    let st = core.presence.states.entry(user).or_insert_with(|| UserState {
        email: Rc::from(email),
        contacts: Rc::clone(&contacts),
        online,
        dirty: false,
        last_ms: None,
        scheduled: false,
    });
    st.online = online;
    st.contacts = contacts;
    st.dirty = true;
    if st.scheduled {
        return;
    }
    st.scheduled = true;
    let at = st.last_ms.map_or(now.ms, |last| (last + EVERY_MS).max(now.ms));
    core.timers.insert(at, Timer::PresenceDue(user));
}

/// A user's announcement is due: its state now goes to its contacts, if it changed since
/// the last one.
pub(super) fn due(core: &mut Core, user: i64, now: Now) {
    let Some(st) = core.presence.states.get_mut(&user) else { return };
    st.scheduled = false;
    if !st.dirty {
        if !st.online {
            core.presence.states.remove(&user);
        }
        return;
    }
    st.dirty = false;
    st.last_ms = Some(now.ms);
    let (email, online, contacts) = (Rc::clone(&st.email), st.online, Rc::clone(&st.contacts));
    let mut conns = Vec::new();
    for &(contact, _) in contacts.iter() {
        if blocks::blocks(core, user, contact) {
            continue;
        }
        conns.extend(core.sessions.subscribed(contact, |s| s.presence));
    }
    if !conns.is_empty() {
        core.presence.outgoing.push_back(Outgoing { email, online, conns });
    }
    if !online {
        // Offline and told: forget it after the quiet second (a quick return is announced
        // by the next change; an entry is kept only while it can matter).
        core.timers.insert(now.ms + EVERY_MS, Timer::PresenceDue(user));
        if let Some(st) = core.presence.states.get_mut(&user) {
            st.scheduled = true;
        }
    }
}

/// Sends the next part of the announcements in progress (each loop iteration).
pub(super) fn send_some(core: &mut Core) {
    let mut budget = PER_ITERATION;
    while budget > 0 {
        let Some(job) = core.presence.outgoing.front_mut() else { return };
        let take = job.conns.len().min(budget);
        let batch: Vec<ConnId> = job.conns.drain(job.conns.len() - take..).collect();
        let (email, online) = (Rc::clone(&job.email), job.online);
        if job.conns.is_empty() {
            core.presence.outgoing.pop_front();
        }
        budget -= take;
        let bytes = core.out.encode(|b| response::presence(b, &email, online));
        for c in batch {
            core.out.send_again(c, bytes.clone(), OnCommitFail::Keep);
        }
    }
}

/// `conn` just logged in as `user`, whose friends list is `friends`.
pub(super) fn logged_in(core: &mut Core, conn: ConnId, user: i64, email: &str, friends: &[Friend], now: Now) {
    let first = core.sessions.conns_of(user).len() == 1;
    let subscribed = core.sessions.get(conn).and_then(|s| s.member.as_ref()).is_some_and(|m| m.subscribe.presence);
    if !first && !subscribed {
        return;
    }
    let contacts: Contacts = match core.presence.contacts.get(&user) {
        Some(c) if !first => Rc::clone(c),
        _ => Rc::new(contacts_of(friends)),
    };
    if first {
        changed(core, user, email, true, Rc::clone(&contacts), now);
    }
    if subscribed {
        // One event per online contact that does not hide from this user.
        for (contact, contact_email) in contacts.iter() {
            if shown_online(core, *contact) && !blocks::blocks(core, *contact, user) {
                core.out.send(conn, OnCommitFail::Keep, |b| response::presence(b, contact_email, true));
            }
        }
    }
    core.presence.contacts.insert(user, contacts);
}

/// A connection of `user` logged out or closed; when it was the last, its contacts learn
/// it went offline.
pub(super) fn logged_out(core: &mut Core, user: i64, email: &str, now: Now) {
    if !core.sessions.conns_of(user).is_empty() {
        return;
    }
    if let Some(contacts) = core.presence.contacts.remove(&user) {
        changed(core, user, email, false, contacts, now);
    }
}

/// `{"type":"presence"}`: every contact and whether it is online (as this user may see it).
pub(super) fn query(core: &mut Core, conn: ConnId) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    let friends = match core.store.friends(me) {
        Ok(f) => f,
        Err(e) => {
            log::error!("reading friends of {me} failed: {e}");
            return core.out.failed(conn, "presence", "could not be read now; try again");
        }
    };
    let contacts = contacts_of(&friends);
    let list: Vec<(Rc<str>, bool)> = contacts
        .into_iter()
        .map(|(id, email)| {
            let online = shown_online(core, id) && !blocks::blocks(core, id, me);
            (email, online)
        })
        .collect();
    core.out.send_sized(conn, "presence", |b, max| {
        response::presence_list(b, max, list.iter().map(|(e, online)| (&**e, *online)))
    });
}
