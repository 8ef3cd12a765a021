//! Account self-service (PROTOCOL.md section 17): changing one's password and deleting
//! one's account, each confirmed by the current password, and resetting a forgotten
//! password with a mailed code.
//!
//! A reset answers the same whether the email has an account or not, at once (the mail is
//! sent behind the answer, only for an account), and counts against the OTP mail limits of
//! registration either way; its code is checked like a registration's (5 tries, the OTP
//! lifetime), per connection. Resets in progress are this part's own state.
//!
//! Owns the steps of these requests while a worker checks or hashes a password (the loop
//! never hashes): check the old password, then hash the new one; or check the password,
//! then delete. A wrong password counts as a failed login for the throttles of section 12.
//! A change logs the user's other connections out at once, a deletion all of them (the
//! asking connection becomes anonymous). Never touches sockets.

use super::sessions::{Busy, ConnId};
use super::{accounts, validate, Core, Job, Now, OnCommitFail, Timer};
use crate::protocol::response;
use crate::secret;
use crate::timer_wheel::TimerId;
use std::collections::HashMap;
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
    /// A reset's new password is being hashed.
    ResetHash { user: i64 },
}

/// A reset waiting for its code.
struct PendingReset {
    email_key: String,
    /// `None` when the email has no account: the code is then never mailed, and no code
    /// matches (the answers read the same as for an account).
    user: Option<i64>,
    otp: String,
    tries_left: u32,
    expires_ms: u64,
    timer: TimerId,
}

/// Resets in progress, by connection.
#[derive(Default)]
pub(super) struct Resets {
    pending: HashMap<ConnId, PendingReset>,
}

impl Resets {
    /// Forgets `conn`'s reset (it closed); gives back its timer to cancel.
    pub fn forget(&mut self, conn: ConnId) -> Option<TimerId> {
        self.pending.remove(&conn).map(|p| p.timer)
    }
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
        Step::HashNew { .. } | Step::ResetHash { .. } => return,
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
        Step::HashNew { .. } | Step::ResetHash { .. } => {}
    }
}

/// A worker hashed the new password.
pub(super) fn hashed(core: &mut Core, conn: ConnId, hash: Option<String>, now: Now) {
    let Some(s) = core.sessions.get_mut(conn) else { return };
    let user = match s.busy.take().map(|b| *b) {
        Some(Busy::SelfService(Step::HashNew { user })) => user,
        Some(Busy::SelfService(Step::ResetHash { user })) => return reset_hashed(core, conn, user, hash, now),
        _ => return,
    };
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

/// `reset` with an email only: a code for it, mailed when it has an account.
pub(super) fn reset_request(core: &mut Core, conn: ConnId, email: &str, now: Now) {
    const T: &str = "reset";
    if let Err(rule) = validate::email(email) {
        return core.out.failed(conn, T, rule);
    }
    let Some(peer) = core.sessions.get(conn).map(|s| s.peer) else { return };
    let email_key = email.to_ascii_lowercase();
    if let Some(wait) = core.guards.otp_wait(&email_key, peer, now.ms) {
        return core.out.failed(conn, "otp", &wait.message());
    }
    let user = match core.store.user_by_email(email) {
        Ok(u) => u.map(|row| row.id),
        Err(e) => {
            log::error!("reset lookup failed: {e}");
            return core.out.failed(conn, T, "could not be done now; try again");
        }
    };
    let otp = match secret::otp() {
        Ok(otp) => otp,
        Err(e) => {
            log::error!("OS random source failed: {e}");
            return core.out.failed(conn, T, "could not be done now; try again");
        }
    };
    core.guards.otp_accepted(email_key.clone(), peer, now.ms);
    if let Some(old) = core.resets.forget(conn) {
        core.timers.cancel(old);
    }
    let timer = core.timers.insert(now.ms + core.limits.otp_lifetime_ms, Timer::ResetExpiry(conn));
    if user.is_some() {
        core.out.jobs.push(Job::SendOtp { conn, to: email.to_owned(), otp: otp.clone(), reset: true });
    }
    let pending = PendingReset {
        email_key,
        user,
        otp,
        tries_left: core.limits.otp_tries,
        expires_ms: now.ms + core.limits.otp_lifetime_ms,
        timer,
    };
    core.resets.pending.insert(conn, pending);
    // The same answer, at once, with or without an account.
    core.out.send(conn, OnCommitFail::Keep, |b| response::otp_sent(b, email));
}

/// The reset mail went out (or not): nobody waits for it; only the log and the counters.
pub(super) fn reset_mailed(core: &mut Core, result: Result<(), String>) {
    match result {
        Ok(()) => core.counters.otp_sent += 1,
        Err(reason) => {
            core.counters.otp_failed += 1;
            log::warn!("a password reset mail failed: {reason}");
        }
    }
}

/// A reset's code expired.
pub(super) fn reset_expired(core: &mut Core, conn: ConnId) {
    core.resets.pending.remove(&conn);
}

/// `reset` with the code and the new password.
pub(super) fn reset_with_code(core: &mut Core, conn: ConnId, email: &str, otp: &str, password: &str, now: Now) {
    const T: &str = "reset";
    let email_key = email.to_ascii_lowercase();
    let Some(p) = core.resets.pending.get_mut(&conn).filter(|p| p.email_key == email_key) else {
        return core.out.failed(conn, T, "no reset for this email on this connection; ask for a code first");
    };
    if now.ms >= p.expires_ms {
        if let Some(t) = core.resets.forget(conn) {
            core.timers.cancel(t);
        }
        return core.out.failed(conn, T, "the code has expired; ask for a new one");
    }
    let right = secret::constant_time_eq(otp.as_bytes(), p.otp.as_bytes());
    let Some(user) = p.user.filter(|_| right) else {
        p.tries_left = p.tries_left.saturating_sub(1);
        if p.tries_left == 0 {
            if let Some(t) = core.resets.forget(conn) {
                core.timers.cancel(t);
            }
            return core.out.failed(conn, T, "wrong code and no tries left; ask for a new one");
        }
        let left = p.tries_left;
        return core.out.failed(
            conn,
            T,
            &format!("wrong code; {left} {} left", if left == 1 { "try" } else { "tries" }),
        );
    };
    if validate::md5_hex(password).is_err() {
        return core.out.failed(conn, T, "the new password must be an md5 digest (32 hex digits)");
    }
    if let Some(t) = core.resets.forget(conn) {
        core.timers.cancel(t);
    }
    if let Some(s) = core.sessions.get_mut(conn) {
        s.busy = Some(Box::new(Busy::SelfService(Step::ResetHash { user })));
        core.out.jobs.push(Job::HashPassword { conn, md5: password.to_ascii_lowercase() });
    }
}

fn reset_hashed(core: &mut Core, conn: ConnId, user: i64, hash: Option<String>, now: Now) {
    let stored = match hash {
        Some(h) => core.store.set_password(user, &h),
        None => return core.out.failed(conn, "reset", "could not be done now; try again"),
    };
    if let Err(e) = stored {
        log::error!("storing a reset password failed: {e}");
        return core.out.failed(conn, "reset", "could not be done now; try again");
    }
    log::info!("user {user} reset its password");
    core.out.send(conn, OnCommitFail::Fail("reset"), |b| response::success(b, "reset"));
    accounts::log_out_everywhere(core, user, "password reset", now);
}
