//! Read marks and unread counts (PROTOCOL.md section 15).
//!
//! A mark says how far a user has read a conversation; it only moves forward, never past
//! the conversation's newest message, and is stored. The other side of a personal
//! conversation and the reader's other devices learn it, when they subscribed to `read`
//! and no block stands between the two; a group's mark goes to the reader's other devices
//! only. A mark aimed at an unknown user, a stranger or a group the caller is not in is
//! dropped without an answer (section 19). Unread counts are read from indexes on demand.
//! Never touches sockets.

use super::sessions::ConnId;
use super::{blocks, groups, Core, OnCommitFail};
use crate::protocol::{response, Conversation};
use crate::store::StoreError;

fn store_failed(core: &mut Core, conn: ConnId, ty: &'static str, e: &StoreError) {
    log::error!("{ty} failed in the store: {e}");
    core.out.failed(conn, ty, "could not be done now; try again");
}

/// Sends the read event to the read-subscribed connections of `users` (but `except`).
fn tell(
    core: &mut Core,
    users: &[i64],
    except: ConnId,
    reader: &str,
    with: Option<&str>,
    group: Option<i64>,
    upto: i64,
) {
    let mut bytes = None;
    for &u in users {
        for c in core.sessions.subscribed(u, |s| s.read).into_iter().filter(|c| *c != except) {
            let range = bytes.get_or_insert_with(|| core.out.encode(|b| response::read(b, reader, with, group, upto)));
            core.out.send_again(c, range.clone(), OnCommitFail::Drop);
        }
    }
}

pub(super) fn read(core: &mut Core, conn: ConnId, of: &Conversation, upto: i64) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    match of {
        Conversation::With(email) => {
            let Ok(Some((peer, peer_email))) = core.user_by_email(email) else { return };
            let newest = match core.store.newest_between(me.user_id, peer) {
                Ok(n) => n,
                Err(e) => return store_failed(core, conn, "read", &e),
            };
            if newest == 0 || peer == me.user_id {
                return;
            }
            let stored = match core.store.mark_personal(me.user_id, peer, upto.min(newest)) {
                Ok(s) => s,
                Err(e) => return store_failed(core, conn, "read", &e),
            };
            let mut to = vec![me.user_id];
            if !blocks::blocks(core, me.user_id, peer) && !blocks::blocks(core, peer, me.user_id) {
                to.push(peer);
            }
            tell(core, &to, conn, &me.email, Some(&peer_email), None, stored);
        }
        Conversation::Group(group) => {
            let Some(id) = groups::wire_id(group) else { return };
            if !groups::members_of(core, id).is_some_and(|m| m.contains(&me.user_id)) {
                return;
            }
            let newest = match core.store.newest_in_group(id) {
                Ok(n) => n,
                Err(e) => return store_failed(core, conn, "read", &e),
            };
            if newest == 0 {
                return;
            }
            let stored = match core.store.mark_group(me.user_id, id, upto.min(newest)) {
                Ok(s) => s,
                Err(e) => return store_failed(core, conn, "read", &e),
            };
            tell(core, &[me.user_id], conn, &me.email, None, Some(id), stored);
        }
    }
}

pub(super) fn unread(core: &mut Core, conn: ConnId) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    match core.store.unread(me) {
        Ok(list) => core.out.send_sized(conn, "unread", |b, max| response::unread(b, max, list.iter())),
        Err(e) => store_failed(core, conn, "unread", &e),
    }
}
