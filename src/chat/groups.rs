//! Groups (PROTOCOL.md section 14): creating and changing them, their messages, and who
//! gets what.
//!
//! Owns the cache of groups in use (name, owner, members in joining order), so that a
//! message to a thousand members looks up nobody in the store. Every change goes to the
//! store in the iteration's transaction and to the cache at once; a failed commit or
//! another process's commit drops the cache, which is then read again. Delivery state is
//! the members' watermarks (delivery.rs): group and personal messages share one id
//! sequence. A member reads a group's messages from its latest joining on, live, at
//! catch-up and in history alike. Never touches sockets; answers through the outbox.

use super::sessions::ConnId;
use super::{delivery, messages, validate, Core, Now, OnCommitFail};
use crate::protocol::response::{self, GroupMessageOut, GroupOut, HistoryItem};
use crate::protocol::{GroupRequest, Message, Text};
use crate::store::groups::NewGroupMessage;
use crate::store::StoreError;
use std::collections::HashMap;
use std::rc::Rc;

const T: &str = "group";

/// A group as the core keeps it.
#[derive(Debug, Clone)]
pub(super) struct Group {
    name: String,
    owner: i64,
    /// (user, email, joining order), in joining order.
    members: Vec<(i64, Rc<str>, i64)>,
}

impl Group {
    fn has(&self, user: i64) -> bool {
        self.members.iter().any(|m| m.0 == user)
    }

    fn owner_email(&self) -> &str {
        self.members.iter().find(|m| m.0 == self.owner).map_or("", |m| &m.1)
    }
}

/// The groups read from the store, by id.
#[derive(Default)]
pub(super) struct Groups {
    cache: HashMap<i64, Group>,
}

impl Groups {
    /// Forgets every group: the store changed under the cache (a failed commit, another
    /// process).
    pub fn forget(&mut self) {
        self.cache.clear();
    }
}

/// The members of group `id` (read into the cache when needed); `None` when there is no
/// such group or it cannot be read now.
pub(super) fn members_of(core: &mut Core, id: i64) -> Option<Vec<i64>> {
    match load(core, id) {
        Ok(Some(g)) => Some(g.members.iter().map(|m| m.0).collect()),
        Ok(None) => None,
        Err(e) => {
            log::warn!("reading group {id} failed: {e}");
            None
        }
    }
}

/// A wire group id: decimal digits of a positive id.
pub(super) fn wire_id(group: &str) -> Option<i64> {
    parse_id(group)
}

/// A wire group id: decimal digits of a positive id.
fn parse_id(group: &str) -> Option<i64> {
    if group.is_empty() || group.len() > 18 || !group.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    group.parse().ok().filter(|&id| id > 0)
}

/// The group `id`, read into the cache when needed.
fn load(core: &mut Core, id: i64) -> Result<Option<&mut Group>, StoreError> {
    if !core.groups.cache.contains_key(&id) {
        let Some(row) = core.store.group(id)? else { return Ok(None) };
        let members =
            core.store.group_members(id)?.into_iter().map(|m| (m.user, Rc::from(m.email), m.joined)).collect();
        core.groups.cache.insert(id, Group { name: row.name, owner: row.owner, members });
    }
    Ok(core.groups.cache.get_mut(&id))
}

/// The group a member names, or `failed` (an unknown group and one the caller is not in
/// read alike).
fn member_group(core: &mut Core, conn: ConnId, user: i64, group: &str, ty: &'static str) -> Option<i64> {
    let Some(id) = parse_id(group) else {
        core.out.failed(conn, ty, "unknown group");
        return None;
    };
    match load(core, id) {
        Ok(Some(g)) if g.has(user) => Some(id),
        Ok(_) => {
            core.out.failed(conn, ty, "unknown group");
            None
        }
        Err(e) => {
            store_failed(core, conn, ty, &e);
            None
        }
    }
}

fn store_failed(core: &mut Core, conn: ConnId, ty: &'static str, e: &StoreError) {
    log::error!("a group request failed in the store: {e}");
    core.groups.forget();
    core.out.failed(conn, ty, "could not be done now; try again");
}

/// Encodes G with `event`.
fn encode(core: &mut Core, id: i64, event: &str, g: &Group) -> std::ops::Range<usize> {
    core.out.encode(|b| {
        response::group(
            b,
            event,
            GroupOut { id, name: &g.name, owner: g.owner_email(), members: g.members.iter().map(|m| &*m.1) },
        )
    })
}

/// Answers the requester `success` G and sends `update` G to every connection of every
/// member in `to` (the requester's other connections included).
fn announce(core: &mut Core, conn: ConnId, id: i64, g: &Group, to: &[i64]) {
    let answer = encode(core, id, "success", g);
    core.out.send_again(conn, answer, OnCommitFail::Fail(T));
    let update = encode(core, id, "update", g);
    for &user in to {
        let conns: Vec<ConnId> = core.sessions.conns_of(user).iter().copied().filter(|c| *c != conn).collect();
        for c in conns {
            core.out.send_again(c, update.clone(), OnCommitFail::Drop);
        }
    }
}

/// (user, email) pairs.
type Users = Vec<(i64, Rc<str>)>;

/// Resolves member emails to (user, email), without duplicates; `Ok(Err)` names the first
/// email that is no account.
fn resolve(core: &mut Core, emails: &[Text]) -> Result<Result<Users, String>, StoreError> {
    let mut out: Users = Vec::new();
    for e in emails {
        match core.user_by_email(e)? {
            Some((user, email)) => {
                if !out.iter().any(|(u, _)| *u == user) {
                    out.push((user, email));
                }
            }
            None => return Ok(Err(format!("unknown user {}", clip(e)))),
        }
    }
    Ok(Ok(out))
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Checks that each of `users` may join one more group.
fn room_for_one_more(core: &mut Core, users: &[(i64, Rc<str>)]) -> Result<Result<(), String>, StoreError> {
    for (user, email) in users {
        if core.store.group_count(*user)? >= core.limits.max_groups_per_user {
            return Ok(Err(format!("{email} is in {} groups, the most allowed", core.limits.max_groups_per_user)));
        }
    }
    Ok(Ok(()))
}

pub(super) fn request(core: &mut Core, conn: ConnId, req: &GroupRequest, now: Now) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    let result = match req {
        GroupRequest::Create { name, members } => create(core, conn, (me.user_id, &me.email), name, members, now),
        GroupRequest::Add { group, members } => add(core, conn, me.user_id, group, members),
        GroupRequest::Remove { group, members } => remove(core, conn, me.user_id, group, members),
        GroupRequest::Rename { group, name } => rename(core, conn, me.user_id, group, name),
        GroupRequest::Leave { group } => leave(core, conn, me.user_id, group),
    };
    if let Err(e) = result {
        store_failed(core, conn, T, &e);
    }
}

fn create(
    core: &mut Core,
    conn: ConnId,
    me: (i64, &Rc<str>),
    name: &str,
    emails: &[Text],
    now: Now,
) -> Result<(), StoreError> {
    if let Err(rule) = validate::group_name(name) {
        core.out.failed(conn, T, rule);
        return Ok(());
    }
    let mut members = match resolve(core, emails)? {
        Ok(m) => m,
        Err(why) => {
            core.out.failed(conn, T, &why);
            return Ok(());
        }
    };
    if !members.iter().any(|(u, _)| *u == me.0) {
        members.insert(0, (me.0, Rc::clone(me.1)));
    }
    if members.len() > core.limits.max_group_members {
        core.out.failed(conn, T, &format!("a group has at most {} members", core.limits.max_group_members));
        return Ok(());
    }
    if let Err(why) = room_for_one_more(core, &members)? {
        core.out.failed(conn, T, &why);
        return Ok(());
    }
    let id = core.store.create_group(name, me.0, now.unix)?;
    let from = core.store.next_id_peek();
    for (i, (user, _)) in members.iter().enumerate() {
        core.store.add_group_member(id, *user, i as i64 + 1, from)?;
    }
    core.store.touch_group(id, from - 1)?;
    let g = Group {
        name: name.to_owned(),
        owner: me.0,
        members: members.iter().enumerate().map(|(i, (u, e))| (*u, Rc::clone(e), i as i64 + 1)).collect(),
    };
    let users: Vec<i64> = g.members.iter().map(|m| m.0).collect();
    core.counters.groups_created += 1;
    announce(core, conn, id, &g, &users);
    core.groups.cache.insert(id, g);
    Ok(())
}

/// The group, when `user` is its owner; else answers `failed` and gives `None`.
fn owned(core: &mut Core, conn: ConnId, user: i64, group: &str, what: &str) -> Result<Option<i64>, StoreError> {
    let Some(id) = member_group(core, conn, user, group, T) else { return Ok(None) };
    if core.groups.cache.get(&id).is_some_and(|g| g.owner == user) {
        Ok(Some(id))
    } else {
        core.out.failed(conn, T, &format!("only the group's owner may {what}"));
        Ok(None)
    }
}

fn add(core: &mut Core, conn: ConnId, me: i64, group: &str, emails: &[Text]) -> Result<(), StoreError> {
    let Some(id) = owned(core, conn, me, group, "add members")? else { return Ok(()) };
    let found = match resolve(core, emails)? {
        Ok(m) => m,
        Err(why) => {
            core.out.failed(conn, T, &why);
            return Ok(());
        }
    };
    let Some(g) = core.groups.cache.get(&id).cloned() else { return Ok(()) };
    let new: Vec<(i64, Rc<str>)> = found.into_iter().filter(|(u, _)| !g.has(*u)).collect();
    if g.members.len() + new.len() > core.limits.max_group_members {
        core.out.failed(conn, T, &format!("a group has at most {} members", core.limits.max_group_members));
        return Ok(());
    }
    if let Err(why) = room_for_one_more(core, &new)? {
        core.out.failed(conn, T, &why);
        return Ok(());
    }
    let from = core.store.next_id_peek();
    let mut joined = g.members.last().map_or(0, |m| m.2);
    let mut g = g;
    for (user, email) in new {
        joined += 1;
        core.store.add_group_member(id, user, joined, from)?;
        g.members.push((user, email, joined));
    }
    core.store.touch_group(id, from - 1)?;
    let users: Vec<i64> = g.members.iter().map(|m| m.0).collect();
    announce(core, conn, id, &g, &users);
    core.groups.cache.insert(id, g);
    Ok(())
}

fn remove(core: &mut Core, conn: ConnId, me: i64, group: &str, emails: &[Text]) -> Result<(), StoreError> {
    let Some(id) = owned(core, conn, me, group, "remove members")? else { return Ok(()) };
    let found = match resolve(core, emails)? {
        Ok(m) => m,
        Err(why) => {
            core.out.failed(conn, T, &why);
            return Ok(());
        }
    };
    let Some(g) = core.groups.cache.get(&id) else { return Ok(()) };
    if let Some((_, email)) = found.iter().find(|(u, _)| !g.has(*u)) {
        core.out.failed(conn, T, &format!("{email} is not a member"));
        return Ok(());
    }
    if found.iter().any(|(u, _)| *u == me) {
        core.out.failed(conn, T, "the owner leaves with `leave`, not `remove`");
        return Ok(());
    }
    let mut g = g.clone();
    for (user, _) in &found {
        core.store.remove_group_member(id, *user)?;
    }
    g.members.retain(|m| !found.iter().any(|(u, _)| *u == m.0));
    core.store.touch_group(id, core.store.next_id_peek() - 1)?;
    // Those removed get one last update, without themselves in it.
    let mut to: Vec<i64> = g.members.iter().map(|m| m.0).collect();
    to.extend(found.iter().map(|(u, _)| *u));
    announce(core, conn, id, &g, &to);
    core.groups.cache.insert(id, g);
    Ok(())
}

fn rename(core: &mut Core, conn: ConnId, me: i64, group: &str, name: &str) -> Result<(), StoreError> {
    let Some(id) = owned(core, conn, me, group, "rename it")? else { return Ok(()) };
    if let Err(rule) = validate::group_name(name) {
        core.out.failed(conn, T, rule);
        return Ok(());
    }
    core.store.rename_group(id, name)?;
    let Some(g) = core.groups.cache.get_mut(&id) else { return Ok(()) };
    g.name = name.to_owned();
    let g = g.clone();
    let users: Vec<i64> = g.members.iter().map(|m| m.0).collect();
    announce(core, conn, id, &g, &users);
    Ok(())
}

fn leave(core: &mut Core, conn: ConnId, me: i64, group: &str) -> Result<(), StoreError> {
    let Some(id) = member_group(core, conn, me, group, T) else { return Ok(()) };
    let Some(g) = core.groups.cache.get(&id) else { return Ok(()) };
    let mut g = g.clone();
    let owner_email = Rc::from(g.owner_email());
    core.store.remove_group_member(id, me)?;
    g.members.retain(|m| m.0 != me);
    let mut to: Vec<i64> = g.members.iter().map(|m| m.0).collect();
    to.push(me);
    match g.members.first() {
        None => {
            // The last member: the group goes, and the answer names its last owner.
            core.store.delete_group(id)?;
            core.groups.cache.remove(&id);
            // A past member may have read its messages ahead.
            core.ledger.forget_backlogs();
            let answer = core.out.encode(|b| {
                response::group(
                    b,
                    "success",
                    GroupOut { id, name: &g.name, owner: &owner_email, members: std::iter::empty() },
                )
            });
            core.out.send_again(conn, answer.clone(), OnCommitFail::Fail(T));
            let update = core.out.encode(|b| {
                response::group(
                    b,
                    "update",
                    GroupOut { id, name: &g.name, owner: &owner_email, members: std::iter::empty() },
                )
            });
            let conns: Vec<ConnId> = core.sessions.conns_of(me).iter().copied().filter(|c| *c != conn).collect();
            for c in conns {
                core.out.send_again(c, update.clone(), OnCommitFail::Drop);
            }
            return Ok(());
        }
        Some(first) => {
            if g.owner == me {
                g.owner = first.0;
                core.store.set_group_owner(id, first.0)?;
            }
        }
    }
    core.store.touch_group(id, core.store.next_id_peek() - 1)?;
    announce(core, conn, id, &g, &to);
    core.groups.cache.insert(id, g);
    Ok(())
}

/// `groups`: the caller's groups, most recently active first.
pub(super) fn list(core: &mut Core, conn: ConnId) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    let ids = match core.store.groups_of(me) {
        Ok(ids) => ids,
        Err(e) => return store_failed(core, conn, "groups", &e),
    };
    let mut groups = Vec::with_capacity(ids.len());
    for id in ids {
        match load(core, id) {
            Ok(Some(g)) => groups.push((id, g.clone())),
            Ok(None) => {}
            Err(e) => return store_failed(core, conn, "groups", &e),
        }
    }
    core.out.send_sized(conn, "groups", |b, max| {
        response::groups(
            b,
            max,
            groups.iter().map(|(id, g)| GroupOut {
                id: *id,
                name: &g.name,
                owner: g.owner_email(),
                members: g.members.iter().map(|m| &*m.1),
            }),
        )
    });
}

/// A message to a group: stored once, answered `sent` after the commit, and the same bytes
/// handed to every member's live connections (the sender's other ones included).
pub(super) fn message(core: &mut Core, conn: ConnId, group: &str, m: &Message, now: Now) {
    const M: &str = "message";
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    let Some(id) = member_group(core, conn, me.user_id, group, M) else { return };
    if let Err(rule) = messages::check(m) {
        return core.out.failed(conn, M, rule);
    }
    if let Some(cid) = m.client_id.as_deref() {
        match core.store.group_message_by_client_id(me.user_id, cid) {
            Ok(Some(done)) => {
                core.out.send(conn, OnCommitFail::Keep, |b| response::message_sent(b, done));
                return;
            }
            Ok(None) => {}
            Err(e) => return store_failed(core, conn, M, &e),
        }
    }
    let time = m.time.unwrap_or(now.unix);
    let new = NewGroupMessage {
        group: id,
        sender: me.user_id,
        body: &m.message,
        media: m.media.as_deref(),
        client_time: time,
        server_time: now.unix,
        client_id: m.client_id.as_deref(),
    };
    let msg_id = match core.store.insert_group_message(&new) {
        Ok(i) => i,
        Err(e) => return store_failed(core, conn, M, &e),
    };
    core.out.send(conn, OnCommitFail::Fail(M), |b| response::message_sent(b, msg_id));
    let out = GroupMessageOut {
        id: msg_id,
        group: id,
        message: &m.message,
        media: m.media.as_deref(),
        from: &me.email,
        time,
    };
    let bytes = core.out.encode(|b| response::group_message(b, &out));
    let members: Vec<i64> =
        core.groups.cache.get(&id).map(|g| g.members.iter().map(|m| m.0).collect()).unwrap_or_default();
    let before = core.out.sends.len();
    for user in members {
        delivery::deliver_live(core, user, msg_id, bytes.clone(), conn);
    }
    core.counters.group_messages += 1;
    core.counters.group_deliveries += (core.out.sends.len() - before) as u64;
}

/// `history` of a group: its messages from the caller's latest joining on, newest first.
pub(super) fn history(core: &mut Core, conn: ConnId, group: &str, before: Option<i64>, limit: usize) {
    const H: &str = "history";
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    let Some(id) = parse_id(group) else { return core.out.failed(conn, H, "unknown group") };
    let from = match core.store.member_from(id, me) {
        Ok(Some(from)) => from,
        Ok(None) => return core.out.failed(conn, H, "unknown group"),
        Err(e) => return store_failed(core, conn, H, &e),
    };
    let rows = match core.store.group_history(id, from, before.unwrap_or(i64::MAX), limit) {
        Ok(rows) => rows,
        Err(e) => return store_failed(core, conn, H, &e),
    };
    core.out.send_sized(conn, H, |b, max| {
        response::history(
            b,
            max,
            rows.iter().map(|r| HistoryItem {
                id: r.id,
                from: &r.sender_email,
                to: None,
                group: Some(id),
                message: &r.body,
                media: r.media.as_deref(),
                time: r.time,
            }),
        )
    });
}
