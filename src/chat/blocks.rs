//! Blocking (PROTOCOL.md section 16): who blocks whom, and the requests that change it.
//!
//! Owns the set of blocks, read whole from the store when first needed (blocks are few) so
//! that every personal message and call checks it in memory; dropped, and read again, when
//! a commit fails or another process commits. A block stops the blocked user's personal
//! messages and calls to the blocker; groups are unaffected. Never touches sockets.

use super::sessions::ConnId;
use super::{Core, OnCommitFail};
use crate::protocol::response;
use std::collections::HashSet;

/// (blocker, blocked) pairs; `None` until read.
#[derive(Default)]
pub(super) struct Blocks {
    set: Option<HashSet<(i64, i64)>>,
}

impl Blocks {
    pub fn forget(&mut self) {
        self.set = None;
    }
}

/// True when `blocker` blocks `blocked`. A store error counts as no block (and is logged):
/// a message is then delivered rather than lost.
pub(super) fn blocks(core: &mut Core, blocker: i64, blocked: i64) -> bool {
    if core.blocks.set.is_none() {
        match core.store.all_blocks() {
            Ok(all) => core.blocks.set = Some(all.into_iter().collect()),
            Err(e) => {
                log::error!("reading the blocks failed: {e}");
                return false;
            }
        }
    }
    core.blocks.set.as_ref().is_some_and(|s| s.contains(&(blocker, blocked)))
}

/// `block` and `unblock`.
pub(super) fn request(core: &mut Core, conn: ConnId, block: bool, email: &str) {
    let ty = if block { "block" } else { "unblock" };
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    let other = match core.user_by_email(email) {
        Ok(Some((id, _))) => id,
        Ok(None) => return core.out.failed(conn, ty, "unknown user"),
        Err(e) => {
            log::error!("{ty} lookup failed: {e}");
            return core.out.failed(conn, ty, "could not be done now; try again");
        }
    };
    if other == me {
        return core.out.failed(conn, ty, "you cannot block yourself");
    }
    // Read the set first, so that the change below is made to it.
    blocks(core, me, other);
    let result = if block { core.store.block(me, other) } else { core.store.unblock(me, other) };
    if let Err(e) = result {
        log::error!("{ty} failed: {e}");
        core.blocks.forget();
        return core.out.failed(conn, ty, "could not be done now; try again");
    }
    if let Some(set) = core.blocks.set.as_mut() {
        if block {
            set.insert((me, other));
        } else {
            set.remove(&(me, other));
        }
    }
    core.out.send(conn, OnCommitFail::Fail(if block { "block" } else { "unblock" }), |b| response::success(b, ty));
}

/// `blocked`: the emails the caller blocks.
pub(super) fn list(core: &mut Core, conn: ConnId) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.as_ref()).map(|m| m.user_id) else { return };
    match core.store.blocked_by(me) {
        Ok(emails) => core.out.send_sized(conn, "blocked", |b, max| response::blocked(b, max, emails.iter())),
        Err(e) => {
            log::error!("reading blocks failed: {e}");
            core.out.failed(conn, "blocked", "could not be read now; try again");
        }
    }
}
