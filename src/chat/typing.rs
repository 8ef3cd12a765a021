//! Typing (PROTOCOL.md section 15): who is typing to whom, passed on to the typing-
//! subscribed connections of the other side, never stored.
//!
//! Owns the typing states in progress, each with its lapse in the timer wheel (10 s after
//! the last `true`; no scan), and the rate cap per sender and target. A state ends with
//! `false`, its lapse, or the close or logout of the connection that typed; the others then
//! get `typing:false`. Events go only to contacts or co-members and never across a block,
//! in either direction; a target that is unknown, no contact, or a group the sender is not
//! in is dropped without an answer (section 19). Never touches sockets.

use super::sessions::ConnId;
use super::{blocks, Core, Now, OnCommitFail, Timer};
use crate::protocol::response;
use crate::timer_wheel::TimerId;
use std::collections::HashMap;

/// A `true` lapses this long after the last one.
const LAPSE_MS: u64 = 10_000;
/// Events passed on per sender and target per second.
const PER_SECOND: u32 = 2;

/// Whom a typing event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Target {
    User(i64),
    Group(i64),
}

struct Active {
    conn: ConnId,
    timer: TimerId,
}

#[derive(Default)]
pub(super) struct Typing {
    /// typist -> target -> the state in progress. By typist, so that a connection's close
    /// looks at its own user's states, not at everyone's.
    active: HashMap<i64, HashMap<Target, Active>>,
    /// (typist, target) -> (the second it counts, events passed on in it).
    rate: HashMap<(i64, Target), (u64, u32)>,
}

impl Typing {
    /// Ends `from`'s state about `target`, if any.
    fn take(&mut self, from: i64, target: Target) -> Option<Active> {
        let mine = self.active.get_mut(&from)?;
        let a = mine.remove(&target);
        if mine.is_empty() {
            self.active.remove(&from);
        }
        a
    }

    /// The targets `user` is typing to from `conn`.
    fn typed_on(&self, user: i64, conn: ConnId) -> Vec<Target> {
        self.active
            .get(&user)
            .map_or(Vec::new(), |mine| mine.iter().filter(|(_, a)| a.conn == conn).map(|(t, _)| *t).collect())
    }

    /// Forgets rate entries of past seconds (the sweep timer).
    pub fn sweep(&mut self, now_ms: u64) {
        let second = now_ms / 1000;
        self.rate.retain(|_, (s, _)| *s == second);
    }
}

/// The users that get `from`'s typing about `target`: its other side (a contact) or the
/// group's other members; empty when the target is not one `from` may type to.
fn recipients(core: &mut Core, from: i64, target: Target) -> Vec<i64> {
    let users: Vec<i64> = match target {
        Target::User(to) => {
            if to != from && core.presence.is_contact(from, to) {
                vec![to]
            } else {
                Vec::new()
            }
        }
        Target::Group(g) => match super::groups::members_of(core, g) {
            Some(members) if members.contains(&from) => members.into_iter().filter(|&m| m != from).collect(),
            _ => Vec::new(),
        },
    };
    users.into_iter().filter(|&u| !blocks::blocks(core, from, u) && !blocks::blocks(core, u, from)).collect()
}

/// Sends the event to the typing-subscribed connections of `users`.
fn tell(core: &mut Core, users: &[i64], from_email: &str, target: Target, typing: bool) {
    let group = match target {
        Target::Group(g) => Some(g),
        Target::User(_) => None,
    };
    let mut bytes = None;
    for &u in users {
        for c in core.sessions.subscribed(u, |s| s.typing) {
            let range =
                bytes.get_or_insert_with(|| core.out.encode(|b| response::typing(b, from_email, group, typing)));
            core.out.send_again(c, range.clone(), OnCommitFail::Keep);
        }
    }
}

/// `{"type":"typing",...}` from `conn`.
pub(super) fn request(core: &mut Core, conn: ConnId, target: Target, typing: bool, now: Now) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    let key = (me.user_id, target);
    let second = now.ms / 1000;
    let count = core.typing.rate.entry(key).or_insert((second, 0));
    if count.0 != second {
        *count = (second, 0);
    }
    if count.1 >= PER_SECOND {
        return;
    }
    let users = recipients(core, me.user_id, target);
    if users.is_empty() {
        return;
    }
    if let Some(count) = core.typing.rate.get_mut(&key) {
        count.1 += 1;
    }
    if let Some(old) = core.typing.take(me.user_id, target) {
        core.timers.cancel(old.timer);
    }
    if typing {
        let timer = core.timers.insert(now.ms + LAPSE_MS, Timer::TypingLapse(me.user_id, target));
        core.typing.active.entry(me.user_id).or_default().insert(target, Active { conn, timer });
    }
    tell(core, &users, &me.email, target, typing);
}

/// A `true` was not renewed in time.
pub(super) fn lapse(core: &mut Core, from: i64, target: Target) {
    if core.typing.take(from, target).is_none() {
        return;
    }
    stopped(core, from, target);
}

fn stopped(core: &mut Core, from: i64, target: Target) {
    let Ok(Some(row)) = core.store.user_by_id(from) else { return };
    let users = recipients(core, from, target);
    tell(core, &users, &row.email, target, false);
}

/// `conn` (logged in as `user`) closed or logged out: what it was typing ends.
pub(super) fn connection_gone(core: &mut Core, conn: ConnId, user: i64) {
    for target in core.typing.typed_on(user, conn) {
        if let Some(a) = core.typing.take(user, target) {
            core.timers.cancel(a.timer);
        }
        stopped(core, user, target);
    }
}
