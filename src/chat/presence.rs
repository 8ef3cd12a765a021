//! Presence (PROTOCOL.md section 15): who of a user's contacts is online, told to the
//! connections that subscribed at login.
//!
//! A user is online while at least one connection is logged in as it; the events go out
//! when that changes (the first login, the last logout or close), not per connection. Owns
//! the contacts of each online user, read from its friends list at its first login, so that
//! going offline tells the same people going online told. A block hides the blocker from
//! the blocked user only. Never touches sockets.

use super::sessions::ConnId;
use super::{blocks, Core, OnCommitFail};
use crate::protocol::response;
use std::collections::HashMap;
use std::rc::Rc;

/// The contacts (user, email) of every online user.
#[derive(Default)]
pub(super) struct Presence {
    contacts: HashMap<i64, Vec<(i64, Rc<str>)>>,
}

impl Presence {
    /// True when `other` is among the contacts `user` had at its login (`user` online).
    pub fn is_contact(&self, user: i64, other: i64) -> bool {
        self.contacts.get(&user).is_some_and(|c| c.iter().any(|(id, _)| *id == other))
    }
}

/// The contacts of `user` among `friends` (email, username), as (user, email).
fn resolve(core: &mut Core, friends: &[(String, String)]) -> Vec<(i64, Rc<str>)> {
    let mut out = Vec::with_capacity(friends.len());
    for (email, _) in friends {
        match core.user_by_email(email) {
            Ok(Some(u)) => out.push(u),
            Ok(None) => {}
            Err(e) => log::warn!("presence: looking up a contact failed: {e}"),
        }
    }
    out
}

/// Sends `user`'s presence to the presence-subscribed connections of its online contacts
/// that may see it.
fn announce(core: &mut Core, user: i64, email: &str, online: bool, contacts: &[(i64, Rc<str>)]) {
    let mut bytes = None;
    for &(contact, _) in contacts {
        if core.sessions.conns_of(contact).is_empty() || blocks::blocks(core, user, contact) {
            continue;
        }
        let conns: Vec<ConnId> = core
            .sessions
            .conns_of(contact)
            .iter()
            .copied()
            .filter(|c| core.sessions.get(*c).and_then(|s| s.member.as_ref()).is_some_and(|m| m.subscribe.presence))
            .collect();
        if conns.is_empty() {
            continue;
        }
        let range = bytes.get_or_insert_with(|| core.out.encode(|b| response::presence(b, email, online))).clone();
        for c in conns {
            core.out.send_again(c, range.clone(), OnCommitFail::Keep);
        }
    }
}

/// `conn` just logged in as `user`, whose friends list is `friends`.
pub(super) fn logged_in(core: &mut Core, conn: ConnId, user: i64, email: &str, friends: &[(String, String)]) {
    let first = core.sessions.conns_of(user).len() == 1;
    let subscribed = core.sessions.get(conn).and_then(|s| s.member.as_ref()).is_some_and(|m| m.subscribe.presence);
    if !first && !subscribed {
        return;
    }
    let contacts = match core.presence.contacts.get(&user) {
        Some(c) if !first => c.clone(),
        _ => resolve(core, friends),
    };
    if first {
        announce(core, user, email, true, &contacts);
    }
    if subscribed {
        // One event per online contact that does not hide from this user.
        for (contact, contact_email) in &contacts {
            if !core.sessions.conns_of(*contact).is_empty() && !blocks::blocks(core, *contact, user) {
                core.out.send(conn, OnCommitFail::Keep, |b| response::presence(b, contact_email, true));
            }
        }
    }
    core.presence.contacts.insert(user, contacts);
}

/// A connection of `user` logged out or closed; when it was the last, its contacts learn
/// it went offline.
pub(super) fn logged_out(core: &mut Core, user: i64, email: &str) {
    if !core.sessions.conns_of(user).is_empty() {
        return;
    }
    if let Some(contacts) = core.presence.contacts.remove(&user) {
        announce(core, user, email, false, &contacts);
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
    let contacts = resolve(core, &friends);
    let list: Vec<(Rc<str>, bool)> = contacts
        .into_iter()
        .map(|(id, email)| {
            let online = !core.sessions.conns_of(id).is_empty() && !blocks::blocks(core, id, me);
            (email, online)
        })
        .collect();
    core.out.send_sized(conn, "presence", |b, max| {
        response::presence_list(b, max, list.iter().map(|(e, online)| (&**e, *online)))
    });
}
