//! The one match over requests: decode a frame, apply the connection-state rules of
//! PROTOCOL.md section 2, and hand the request to its handler.

use super::sessions::ConnId;
use super::{
    accounts, blocks, calls, groups, messages, presence, reads, self_service, typing, Core, Now, OnCommitFail,
};
use crate::protocol::Conversation;
use crate::protocol::{self, response, Request};

pub(super) fn frame(core: &mut Core, conn: ConnId, frame: &[u8], depth: u32, now: Now) {
    let req = match protocol::decode_frame(frame, depth) {
        Ok(r) => r,
        Err(e) => {
            core.counters.frames_undecodable += 1;
            return core.out.invalid(conn, &e.ty, &e.message);
        }
    };
    let Some(session) = core.sessions.get(conn) else {
        return;
    };
    let logged_in = session.member.is_some();
    let ty = req.type_name();
    core.counters.request(ty);
    match (&req, logged_in) {
        (Request::Ping, _) => {}
        (Request::Registration { .. } | Request::Verify { .. } | Request::Login(_) | Request::Reset { .. }, true) => {
            return core.out.failed(conn, ty, "already logged in; log out first");
        }
        (Request::Registration { .. } | Request::Verify { .. } | Request::Login(_) | Request::Reset { .. }, false) => {}
        (_, false) => {
            core.counters.frames_not_logged_in += 1;
            return core.out.invalid(conn, ty, "log in or register first");
        }
        (_, true) => {}
    }
    if matches!(
        req,
        Request::Personal(_)
            | Request::Verify { .. }
            | Request::Voice { .. }
            | Request::Group(_)
            | Request::GroupMessage { .. }
            | Request::Block { .. }
            | Request::Delete { .. }
            | Request::Read { .. }
    ) {
        core.begin_write(now);
        if logged_in && core.sessions.get(conn).is_some_and(|s| s.member.is_none()) {
            // Its account was deleted by another process just now; it got `logout`.
            return core.out.invalid(conn, ty, "log in or register first");
        }
    }
    match req {
        Request::Ping => {
            core.out.send(conn, OnCommitFail::Keep, response::pong);
        }
        Request::Registration { email, password, username } => {
            accounts::registration(core, conn, &email, &password, &username, now)
        }
        Request::Verify { otp } => accounts::verify(core, conn, &otp, now),
        Request::Login(login) => accounts::login(core, conn, &login, now),
        Request::Logout => accounts::logout(core, conn, now),
        Request::Users => accounts::users(core, conn),
        Request::Personal(m) => messages::personal(core, conn, &m, now),
        Request::Global(m) => messages::global(core, conn, &m, now),
        Request::History { of, before, limit } => messages::history(core, conn, &of, before, limit),
        Request::Group(g) => groups::request(core, conn, &g, now),
        Request::Groups => groups::list(core, conn),
        Request::GroupMessage { group, message } => groups::message(core, conn, &group, &message, now),
        Request::Block { block, email } => blocks::request(core, conn, block, &email),
        Request::Blocked => blocks::list(core, conn),
        Request::Presence => presence::query(core, conn),
        Request::Password { old, new } => self_service::password(core, conn, &old, &new, now),
        Request::Delete { password } => self_service::delete(core, conn, &password, now),
        Request::Read { of, upto } => reads::read(core, conn, &of, upto),
        Request::Unread => reads::unread(core, conn),
        Request::Reset { email, code: None } => self_service::reset_request(core, conn, &email, now),
        Request::Reset { email, code: Some((otp, password)) } => {
            self_service::reset_with_code(core, conn, &email, &otp, &password, now)
        }
        Request::Typing { of, typing } => {
            // A target that names nobody is dropped without an answer (section 19).
            let target = match of {
                Conversation::With(email) => match core.user_by_email(&email) {
                    Ok(Some((id, _))) => Some(typing::Target::User(id)),
                    _ => None,
                },
                Conversation::Group(g) => groups::wire_id(&g).map(typing::Target::Group),
            };
            if let Some(target) = target {
                typing::request(core, conn, target, typing, now);
            }
        }
        Request::Ack { id } => messages::ack(core, conn, id, now),
        Request::Voice { event, email } => calls::request(core, conn, event, &email, now),
    }
}
