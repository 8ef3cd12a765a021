//! Registration with an emailed OTP, verification, login, logout, and the anonymous timeout
//! (PROTOCOL.md sections 2, 4, 5 and 12).
//!
//! Password hashing and mail go to the worker threads. While a connection waits for one,
//! its session is `busy` and the loop holds back its further frames, so a client that sends
//! `registration` then `verify` back to back is answered in order. The path of a
//! registration: validate, pick an OTP, hash the password (worker), mail the OTP (mail
//! worker), answer `sent`, wait for `verify`, insert the account (group commit), answer
//! `success`. A login: throttle check, look the name up, check the password against its
//! hash, or against a dummy hash for an unknown name so both cost the same (worker), answer.

use super::sessions::{Busy, ConnId, Member, Pending};
use super::{validate, Core, Job, JobDone, Now, OnCommitFail, Timer};
use crate::protocol::{response, Login};
use crate::secret;
use crate::store::users::Taken;
use std::rc::Rc;

const BAD_CREDENTIALS: &str = "invalid credentials";

pub(super) fn registration(core: &mut Core, conn: ConnId, email: &str, password: &str, username: &str, now: Now) {
    const T: &str = "registration";
    if let Err(rule) = validate::email(email).and(validate::username(username)).and(validate::md5_hex(password)) {
        return core.out.failed(conn, T, rule);
    }
    match core.store.name_taken(email, username) {
        Ok(None) => {}
        Ok(Some(Taken::Email)) => return core.out.failed(conn, T, "email already registered"),
        Ok(Some(Taken::Username)) => return core.out.failed(conn, T, "username already taken"),
        Err(e) => {
            log::error!("registration lookup failed: {e}");
            return core.out.failed(conn, T, "could not register now; try again");
        }
    }
    let Some(peer) = core.sessions.get(conn).map(|s| s.peer) else { return };
    let email_key = email.to_ascii_lowercase();
    if let Some(wait) = core.guards.otp_wait(&email_key, peer, now.ms) {
        return core.out.failed(conn, "otp", &wait.message());
    }
    let otp = match secret::otp() {
        Ok(otp) => otp,
        Err(e) => {
            log::error!("OS random source failed: {e}");
            return core.out.failed(conn, T, "could not register now; try again");
        }
    };
    let Some(session) = core.sessions.get_mut(conn) else {
        return;
    };
    // A new registration replaces the pending one (FORMAT.md: a new request, a new OTP).
    if let Some(old) = session.pending.take().and_then(|p| p.timer) {
        core.timers.cancel(old);
    }
    session.busy = Some(Box::new(Busy::Registering(Pending {
        email: email.to_owned(),
        username: username.to_owned(),
        hash: None,
        otp,
        tries_left: core.limits.otp_tries,
        expires_ms: 0,
        timer: None,
    })));
    core.guards.otp_accepted(email_key, peer, now.ms);
    core.out.jobs.push(Job::HashPassword { conn, md5: password.to_ascii_lowercase() });
}

pub(super) fn verify(core: &mut Core, conn: ConnId, otp: &str, now: Now) {
    const T: &str = "verify";
    let Some(session) = core.sessions.get_mut(conn) else {
        return;
    };
    let Some(p) = session.pending.as_mut() else {
        return core.out.failed(conn, T, "no pending registration on this connection; register first");
    };
    if now.ms >= p.expires_ms {
        drop_pending(core, conn);
        return core.out.failed(conn, T, "the OTP has expired; register again for a new one");
    }
    if !secret::constant_time_eq(otp.as_bytes(), p.otp.as_bytes()) {
        p.tries_left = p.tries_left.saturating_sub(1);
        if p.tries_left == 0 {
            drop_pending(core, conn);
            return core.out.failed(conn, T, "wrong OTP and no tries left; register again for a new one");
        }
        let msg = format!("wrong OTP; {} {} left", p.tries_left, if p.tries_left == 1 { "try" } else { "tries" });
        return core.out.failed(conn, T, &msg);
    }
    let Some(p) = drop_pending(core, conn) else {
        return;
    };
    let Some(hash) = p.hash else {
        return core.out.failed(conn, T, "could not register now; try again");
    };
    match core.store.name_taken(&p.email, &p.username) {
        Ok(None) => {}
        Ok(Some(Taken::Email)) => return core.out.failed(conn, T, "email already registered"),
        Ok(Some(Taken::Username)) => return core.out.failed(conn, T, "username already taken"),
        Err(e) => {
            log::error!("verify lookup failed: {e}");
            return core.out.failed(conn, T, "could not register now; try again");
        }
    }
    match core.store.insert_user(&p.email, &p.username, &hash, now.unix) {
        Ok(id) => {
            log::info!("account {id} registered ({})", p.username);
            core.out.send(conn, OnCommitFail::Fail(T), response::verify_ok);
        }
        Err(e) => {
            log::error!("could not store a new account: {e}");
            core.out.failed(conn, T, "could not register now; try again");
        }
    }
}

pub(super) fn login(core: &mut Core, conn: ConnId, req: &Login, now: Now) {
    const T: &str = "login";
    let name_key = match (&req.email, &req.username) {
        (Some(e), _) => e.to_lowercase(),
        (None, Some(u)) => u.to_lowercase(),
        (None, None) => return core.out.invalid(conn, T, "`details` needs `email` or `username`"),
    };
    let Some(session) = core.sessions.get(conn) else {
        return;
    };
    if let Some(wait) = core.guards.login_wait(&name_key, session.peer, now.ms) {
        let msg = format!("too many attempts, retry in {} s", wait.div_ceil(1000));
        return core.out.failed(conn, T, &msg);
    }
    if validate::md5_hex(&req.password).is_err() {
        return login_failed(core, conn, name_key, now);
    }
    let user = match lookup(core, req) {
        Ok(user) => user,
        Err(e) => {
            log::error!("login lookup failed: {e}");
            return core.out.failed(conn, T, "could not log in now; try again");
        }
    };
    let hash = user.as_ref().map_or_else(|| core.dummy_hash.clone(), |u| u.password_hash.clone());
    if let Some(s) = core.sessions.get_mut(conn) {
        s.busy = Some(Box::new(Busy::LoggingIn { user, name_key, acks: req.acks, subscribe: req.subscribe }));
        core.out.jobs.push(Job::VerifyPassword { conn, hash, md5: req.password.to_ascii_lowercase() });
    }
}

/// The account named by a login: by email, by username, or by both when they agree.
fn lookup(core: &Core, req: &Login) -> Result<Option<crate::store::UserRow>, crate::store::StoreError> {
    let by_email = match &req.email {
        Some(e) => Some(core.store.user_by_email(e)?),
        None => None,
    };
    let by_username = match &req.username {
        Some(u) => Some(core.store.user_by_username(u)?),
        None => None,
    };
    Ok(match (by_email, by_username) {
        (Some(Some(a)), Some(Some(b))) if a.id == b.id => Some(a),
        (Some(_), Some(_)) => None,
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => None,
    })
}

fn login_failed(core: &mut Core, conn: ConnId, name_key: String, now: Now) {
    core.counters.logins_failed += 1;
    if let Some(peer) = core.sessions.get(conn).map(|s| s.peer) {
        core.guards.login_failed(name_key, peer, now.ms);
    }
    core.out.failed(conn, "login", BAD_CREDENTIALS);
}

pub(super) fn logout(core: &mut Core, conn: ConnId, now: Now) {
    end_login(core, conn, now);
    core.out.send(conn, OnCommitFail::Keep, response::logout_ok);
}

/// Makes a logged-in connection anonymous again, whoever asked: its calls end, and the
/// anonymous deadline runs from now. (Its backlog reading, if any, stops by itself: the
/// loop's next catch-up finds the connection no longer catching up.)
fn end_login(core: &mut Core, conn: ConnId, now: Now) {
    if let Some(member) = core.sessions.logout(conn) {
        super::calls::connection_gone(core, conn, member.user_id, now);
        super::typing::connection_gone(core, conn, member.user_id);
        super::presence::logged_out(core, member.user_id, &member.email, now);
        rearm_auth(core, conn, now);
    }
}

/// Logs `user`'s connections other than `keep` out from the server's side with `reason`.
pub(super) fn log_out_others(core: &mut Core, user: i64, keep: ConnId, reason: &str, now: Now) {
    let conns: Vec<ConnId> = core.sessions.conns_of(user).iter().copied().filter(|c| *c != keep).collect();
    for conn in conns {
        end_login(core, conn, now);
        core.out.send(conn, OnCommitFail::Keep, |b| response::logged_out(b, reason));
    }
}

/// Makes `conn` anonymous without a `logout` event (its request's answer says why).
pub(super) fn end_login_quietly(core: &mut Core, conn: ConnId, now: Now) {
    end_login(core, conn, now);
}

/// Logs every connection of `user` out from the server's side (PROTOCOL.md section 17):
/// each gets the `logout` event with `reason`, its calls end as on a logout, and it is
/// anonymous again, with the anonymous deadline from now.
pub(super) fn log_out_everywhere(core: &mut Core, user: i64, reason: &str, now: Now) {
    let conns = core.sessions.conns_of(user).to_vec();
    for conn in conns {
        end_login(core, conn, now);
        core.out.send(conn, OnCommitFail::Keep, |b| response::logged_out(b, reason));
    }
}

/// FORMAT.md's `users`: every account, in one line written a slice at a time
/// (`listing.rs`).
pub(super) fn users(core: &mut Core, conn: ConnId) {
    super::listing::start_users(core, conn);
}

/// Restarts the anonymous deadline: when a connection becomes anonymous again (logout).
/// Requests never extend it (PROTOCOL.md section 2).
pub(super) fn rearm_auth(core: &mut Core, conn: ConnId, now: Now) {
    let deadline = now.ms + core.limits.auth_timeout_ms;
    let Some(s) = core.sessions.get_mut(conn) else {
        return;
    };
    if s.member.is_some() {
        return;
    }
    if let Some(t) = s.auth_timer.take() {
        core.timers.cancel(t);
    }
    let t = core.timers.insert(deadline, Timer::Auth(conn));
    if let Some(s) = core.sessions.get_mut(conn) {
        s.auth_timer = Some(t);
    }
}

pub(super) fn auth_timeout(core: &mut Core, conn: ConnId, now: Now) {
    let Some(s) = core.sessions.get_mut(conn) else {
        return;
    };
    s.auth_timer = None;
    if s.member.is_some() {
        return;
    }
    // Not while a job is under way, nor before a pending OTP expires.
    let later = match (&s.busy, &s.pending) {
        (Some(_), _) => Some(now.ms + core.limits.auth_timeout_ms),
        (None, Some(p)) if p.expires_ms > now.ms => Some(p.expires_ms),
        _ => None,
    };
    match later {
        Some(at) => {
            let t = core.timers.insert(at, Timer::Auth(conn));
            if let Some(s) = core.sessions.get_mut(conn) {
                s.auth_timer = Some(t);
            }
        }
        None => core.out.closes.push((conn, super::CloseReason::AuthTimeout)),
    }
}

pub(super) fn otp_expired(core: &mut Core, conn: ConnId) {
    if let Some(p) = core.sessions.get_mut(conn).and_then(|s| s.pending.as_mut()) {
        // The timer already fired; only the pending registration remains to forget.
        p.timer = None;
        drop_pending(core, conn);
    }
}

fn drop_pending(core: &mut Core, conn: ConnId) -> Option<Box<Pending>> {
    let p = core.sessions.get_mut(conn)?.pending.take()?;
    if let Some(t) = p.timer {
        core.timers.cancel(t);
    }
    Some(p)
}

pub(super) fn job_done(core: &mut Core, done: JobDone, now: Now) {
    let self_service = core
        .sessions
        .get(done.conn())
        .and_then(|s| s.busy.as_deref())
        .is_some_and(|b| matches!(b, Busy::SelfService(_)));
    match done {
        JobDone::Hashed { conn, hash } if self_service => super::self_service::hashed(core, conn, hash, now),
        JobDone::Verified { conn, ok } if self_service => super::self_service::verified(core, conn, ok, now),
        JobDone::Hashed { conn, hash } => hashed(core, conn, hash),
        JobDone::OtpSent { result, reset: true, .. } => super::self_service::reset_mailed(core, result),
        JobDone::OtpSent { conn, result, reset: false } => otp_sent(core, conn, result, now),
        JobDone::Verified { conn, ok } => verified(core, conn, ok, now),
    }
}

fn hashed(core: &mut Core, conn: ConnId, hash: Option<String>) {
    let Some(s) = core.sessions.get_mut(conn) else {
        return;
    };
    let Some(Busy::Registering(p)) = s.busy.as_deref_mut() else {
        return;
    };
    match hash {
        Some(h) => {
            p.hash = Some(h);
            let job = Job::SendOtp { conn, to: p.email.clone(), otp: p.otp.clone(), reset: false };
            core.out.jobs.push(job);
        }
        None => {
            s.busy = None;
            core.out.failed(conn, "registration", "could not register now; try again");
        }
    }
}

fn otp_sent(core: &mut Core, conn: ConnId, result: Result<(), String>, now: Now) {
    let Some(s) = core.sessions.get_mut(conn) else {
        return;
    };
    let Some(Busy::Registering(mut p)) = s.busy.take().map(|b| *b) else {
        return;
    };
    if let Err(reason) = result {
        core.counters.otp_failed += 1;
        log::warn!("OTP mail to {} failed: {reason}", p.email);
        return core.out.failed(conn, "otp", "could not send the OTP mail; try again later");
    }
    core.counters.otp_sent += 1;
    p.expires_ms = now.ms + core.limits.otp_lifetime_ms;
    p.timer = Some(core.timers.insert(p.expires_ms, Timer::OtpExpiry(conn)));
    let email = p.email.clone();
    if let Some(s) = core.sessions.get_mut(conn) {
        s.pending = Some(Box::new(p));
    }
    core.out.send(conn, OnCommitFail::Keep, |b| response::otp_sent(b, &email));
}

fn verified(core: &mut Core, conn: ConnId, ok: bool, now: Now) {
    let Some(s) = core.sessions.get_mut(conn) else {
        return;
    };
    let Some(Busy::LoggingIn { user, name_key, acks, subscribe }) = s.busy.take().map(|b| *b) else {
        return;
    };
    let Some(user) = user.filter(|_| ok) else {
        return login_failed(core, conn, name_key, now);
    };
    let friends = match core.store.friends(user.id) {
        Ok(f) => f,
        Err(e) => {
            log::error!("reading friends of {} failed: {e}", user.id);
            return core.out.failed(conn, "login", "could not log in now; try again");
        }
    };
    let watermark = match core.sessions.online(user.id) {
        Some(online) => online.watermark,
        None => match core.store.watermark(user.id) {
            Ok(w) => w.max(core.ledger.unstored(user.id).unwrap_or(0)),
            Err(e) => {
                log::error!("reading the delivery watermark of {} failed: {e}", user.id);
                return core.out.failed(conn, "login", "could not log in now; try again");
            }
        },
    };
    if let Some(peer) = core.sessions.get(conn).map(|s| s.peer) {
        core.guards.login_succeeded(name_key, peer);
    }
    if let Some(t) = core.sessions.get_mut(conn).and_then(|s| s.auth_timer.take()) {
        core.timers.cancel(t);
    }
    drop_pending(core, conn);
    core.out.send(conn, OnCommitFail::Keep, |b| {
        response::login_ok(
            b,
            &user.username,
            &user.email,
            friends.iter().map(|f| (f.email.as_str(), f.username.as_str())),
        )
    });
    log::debug!("user {} logged in on {conn:?}", user.id);
    let member = Member { user_id: user.id, email: user.email.into(), acks, subscribe };
    let email = Rc::clone(&member.email);
    core.sessions.login(conn, member, watermark);
    core.counters.logins_ok += 1;
    super::presence::logged_in(core, conn, user.id, &email, &friends, now);
    // The backlog follows the login answer (PROTOCOL.md section 5).
    super::delivery::start(core, conn);
}
