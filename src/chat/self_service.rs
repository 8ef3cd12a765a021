//! Account self-service (PROTOCOL.md section 17): changing one's password and deleting
//! one's account, each confirmed by the current password.
//!
//! Owns the steps of these requests while a worker checks or hashes a password (the loop
//! never hashes): check the old password, then hash the new one; or check the password,
//! then delete. A wrong password counts as a failed login for the throttles of section 12.
//! A change logs the user's other connections out at once, a deletion all of them (the
//! asking connection becomes anonymous). Never touches sockets.

use super::sessions::{Busy, ConnId};
use super::{accounts, validate, Core, Job, Now, OnCommitFail};
use crate::protocol::response;
use std::rc::Rc;

/// Where a self-service request stands while a worker has its password.
#[derive(Debug)]
pub enum Step {
    /// The old password is being checked; then `new` (an md5 digest) is hashed.
    CheckOld { user: i64, email: Rc<str>, new: String },
    /// The new password is being hashed.
    HashNew { user: i64 },
    /// The password is being checked before the account is deleted.
    CheckDelete { user: i64, email: Rc<str> },
}

/// Starts a check of `md5` against the caller's stored hash, unless the throttles say wait.
fn check(
    core: &mut Core,
    conn: ConnId,
    ty: &'static str,
    md5: &str,
    now: Now,
    step: impl FnOnce(i64, Rc<str>) -> Step,
) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    let Some(peer) = core.sessions.get(conn).map(|s| s.peer) else { return };
    let name_key = me.email.to_lowercase();
    if let Some(wait) = core.guards.login_wait(&name_key, peer, now.ms) {
        return core.out.failed(conn, ty, &format!("too many attempts, retry in {} s", wait.div_ceil(1000)));
    }
    if validate::md5_hex(md5).is_err() {
        core.guards.login_failed(name_key, peer, now.ms);
        return core.out.failed(conn, ty, "wrong password");
    }
    let hash = match core.store.user_by_id(me.user_id) {
        Ok(Some(row)) => row.password_hash,
        Ok(None) => return core.out.failed(conn, ty, "no such account"),
        Err(e) => {
            log::error!("{ty}: reading the account failed: {e}");
            return core.out.failed(conn, ty, "could not be done now; try again");
        }
    };
    if let Some(s) = core.sessions.get_mut(conn) {
        s.busy = Some(Box::new(Busy::SelfService(step(me.user_id, Rc::clone(&me.email)))));
        core.out.jobs.push(Job::VerifyPassword { conn, hash, md5: md5.to_ascii_lowercase() });
    }
}

pub(super) fn password(core: &mut Core, conn: ConnId, old: &str, new: &str, now: Now) {
    if validate::md5_hex(new).is_err() {
        return core.out.failed(conn, "password", "the new password must be an md5 digest (32 hex digits)");
    }
    let new = new.to_ascii_lowercase();
    check(core, conn, "password", old, now, |user, email| Step::CheckOld { user, email, new });
}

pub(super) fn delete(core: &mut Core, conn: ConnId, password: &str, now: Now) {
    check(core, conn, "delete", password, now, |user, email| Step::CheckDelete { user, email });
}

/// A worker checked the password of a self-service request.
pub(super) fn verified(core: &mut Core, conn: ConnId, ok: bool, now: Now) {
    let Some(s) = core.sessions.get_mut(conn) else { return };
    let Some(Busy::SelfService(step)) = s.busy.take().map(|b| *b) else { return };
    let peer = s.peer;
    let (ty, email) = match &step {
        Step::CheckOld { email, .. } => ("password", Rc::clone(email)),
        Step::CheckDelete { email, .. } => ("delete", Rc::clone(email)),
        Step::HashNew { .. } => return,
    };
    if !ok {
        core.counters.logins_failed += 1;
        core.guards.login_failed(email.to_lowercase(), peer, now.ms);
        return core.out.failed(conn, ty, "wrong password");
    }
    match step {
        Step::CheckOld { user, new, .. } => {
            if let Some(s) = core.sessions.get_mut(conn) {
                s.busy = Some(Box::new(Busy::SelfService(Step::HashNew { user })));
                core.out.jobs.push(Job::HashPassword { conn, md5: new });
            }
        }
        Step::CheckDelete { user, email } => delete_now(core, conn, user, &email, now),
        Step::HashNew { .. } => {}
    }
}

/// A worker hashed the new password.
pub(super) fn hashed(core: &mut Core, conn: ConnId, hash: Option<String>, now: Now) {
    let Some(s) = core.sessions.get_mut(conn) else { return };
    let Some(Busy::SelfService(Step::HashNew { user })) = s.busy.take().map(|b| *b) else { return };
    let stored = match hash {
        Some(h) => core.store.set_password(user, &h),
        None => return core.out.failed(conn, "password", "could not be done now; try again"),
    };
    if let Err(e) = stored {
        log::error!("storing a new password failed: {e}");
        return core.out.failed(conn, "password", "could not be done now; try again");
    }
    log::info!("user {user} changed its password");
    core.out.send(conn, OnCommitFail::Fail("password"), |b| response::success(b, "password"));
    accounts::log_out_others(core, user, conn, "password changed", now);
}

fn delete_now(core: &mut Core, conn: ConnId, user: i64, email: &str, now: Now) {
    match core.store.delete_user(email) {
        Ok(_) => {}
        Err(e) => {
            log::error!("deleting account {user} failed: {e}");
            return core.out.failed(conn, "delete", "could not be done now; try again");
        }
    }
    log::info!("user {user} deleted its account");
    core.forget_caches();
    core.out.send(conn, OnCommitFail::Fail("delete"), |b| response::success(b, "delete"));
    accounts::log_out_others(core, user, conn, "account deleted", now);
    accounts::end_login_quietly(core, conn, now);
}
