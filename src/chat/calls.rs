//! Voice call signalling (PROTOCOL.md section 9): a state machine per call, with its
//! deadlines in the timer wheel and its media on the relay.
//!
//! A call rings (every connection of the callee got `request`; deadline `call_timeout`),
//! then talks (it belongs to the caller's connection that placed it and the callee's that
//! answered; the relay carries its datagrams; a silence check every 60 s), then ends. Every
//! end goes through [`finish`], which tells whoever must be told, closes the relay session,
//! cancels the deadline, stores the outcome and logs one line. A user is in one call at most.

use super::relay::Relay;
use super::sessions::ConnId;
use super::VoiceConfig;
use super::{Core, Now, OnCommitFail, Timer};
use crate::protocol::response;
use crate::protocol::VoiceEvent;
use crate::secret;
use crate::store::calls::CallEnd;
use crate::timer_wheel::TimerId;
use std::collections::HashMap;

const T: &str = "voice";
/// A talking call with no datagram forwarded for this long ends.
pub const SILENCE_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing,
    /// Answered on this connection of the callee.
    Talking {
        callee_conn: ConnId,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Call {
    caller: i64,
    caller_email: String,
    caller_conn: ConnId,
    callee: i64,
    callee_email: String,
    state: State,
    timer: Option<TimerId>,
    /// The call's row in the store, once inserted.
    row: Option<i64>,
}

/// The calls in progress, by id and by party, and the relay that carries their media.
/// A user is in one call at most: `by_user` has an entry for both parties of every call.
pub(super) struct Calls {
    by_id: HashMap<u64, Call>,
    by_user: HashMap<i64, u64>,
    next: u64,
    pub relay: Relay,
    pub voice: VoiceConfig,
}

impl Calls {
    pub fn new(voice: VoiceConfig) -> Calls {
        Calls { by_id: HashMap::new(), by_user: HashMap::new(), next: 1, relay: Relay::new(voice.relay_rate), voice }
    }

    /// Calls ringing or talking.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    fn busy(&self, user: i64) -> bool {
        self.by_user.contains_key(&user)
    }

    /// Registers a new call under `id` (from [`next_id`](Self::next_id)) for both parties.
    fn start(&mut self, id: u64, call: Call) {
        self.by_user.insert(call.caller, id);
        self.by_user.insert(call.callee, id);
        self.by_id.insert(id, call);
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    /// The id of `user`'s call, if it is in one that `matches`.
    fn of(&self, user: i64, matches: impl Fn(&Call) -> bool) -> Option<u64> {
        self.by_user.get(&user).copied().filter(|id| self.by_id.get(id).is_some_and(&matches))
    }

    fn get(&self, id: u64) -> Option<&Call> {
        self.by_id.get(&id)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Call> {
        self.by_id.get_mut(&id)
    }

    fn remove(&mut self, id: u64) -> Option<Call> {
        let c = self.by_id.remove(&id)?;
        self.by_user.remove(&c.caller);
        self.by_user.remove(&c.callee);
        Some(c)
    }
}

/// How a call ended: stored, logged, and decides who is told what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Rejected on this connection of the callee.
    Rejected {
        on: ConnId,
    },
    Timeout,
    /// Ended by `end` (or a hang-up) from `by`.
    Ended {
        by: i64,
    },
    /// A party's connection logged out or closed.
    Gone {
        user: i64,
    },
    Silence,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Rejected { .. } => "rejected",
            Outcome::Timeout => "timeout",
            Outcome::Ended { .. } => "ended",
            Outcome::Gone { .. } => "disconnected",
            Outcome::Silence => "silence",
        }
    }
}

pub(super) fn request(core: &mut Core, conn: ConnId, event: VoiceEvent, email: &str, now: Now) {
    let Some(me) = core.sessions.get(conn).and_then(|s| s.member.clone()) else { return };
    match event {
        VoiceEvent::Call => place(core, conn, me.user_id, &me.email, email, now),
        VoiceEvent::Accept => answer(core, conn, me.user_id, email, true, now),
        VoiceEvent::Reject => answer(core, conn, me.user_id, email, false, now),
        VoiceEvent::End => hang_up(core, conn, me.user_id, email, now),
    }
}

fn place(core: &mut Core, conn: ConnId, me: i64, my_email: &str, callee_email: &str, now: Now) {
    if let Some(wait) = core.guards.call_attempt(me, now.ms) {
        let msg = format!("too many call attempts, retry in {} s", wait.div_ceil(1000));
        return core.out.failed(conn, T, &msg);
    }
    let callee = match core.store.user_by_email(callee_email) {
        Ok(Some(u)) => u,
        Ok(None) => return core.out.failed(conn, T, "unknown user"),
        Err(e) => {
            log::error!("call lookup failed: {e}");
            return core.out.failed(conn, T, "could not place the call now; try again");
        }
    };
    if callee.id == me {
        return core.out.failed(conn, T, "you cannot call yourself");
    }
    if super::blocks::blocks(core, callee.id, me) {
        return core.out.failed(conn, T, "not accepted by this recipient");
    }
    let callee_conns = core.sessions.conns_of(callee.id).to_vec();
    if callee_conns.is_empty() {
        core.out.send(conn, OnCommitFail::Keep, |b| response::voice(b, "offline", &callee.email));
        return;
    }
    if core.calls.busy(me) || core.calls.busy(callee.id) {
        core.out.send(conn, OnCommitFail::Keep, |b| response::voice(b, "busy", &callee.email));
        return;
    }
    let id = core.calls.next_id();
    let row = core.store.insert_call(me, callee.id, now.unix).map_err(|e| log::error!("storing a call: {e}")).ok();
    let timer = core.timers.insert(now.ms + core.limits.call_timeout_ms, Timer::Ring(id));
    let bytes = core.out.encode(|b| response::voice(b, "request", my_email));
    for c in callee_conns {
        core.out.send_again(c, bytes.clone(), OnCommitFail::Keep);
    }
    let call = Call {
        caller: me,
        caller_email: my_email.to_owned(),
        caller_conn: conn,
        callee: callee.id,
        callee_email: callee.email,
        state: State::Ringing,
        timer: Some(timer),
        row,
    };
    core.calls.start(id, call);
}

/// `accept` or `reject` from the callee.
fn answer(core: &mut Core, conn: ConnId, me: i64, caller_email: &str, accept: bool, now: Now) {
    let found = core
        .calls
        .of(me, |c| c.callee == me && c.state == State::Ringing && c.caller_email.eq_ignore_ascii_case(caller_email));
    let Some(id) = found else { return core.out.failed(conn, T, "no pending call from that user") };
    if !accept {
        return finish(core, id, Outcome::Rejected { on: conn }, now);
    }
    let tokens = match (secret::token(16), secret::token(16)) {
        (Ok(a), Ok(b)) => [a, b],
        _ => return core.out.failed(conn, T, "could not answer the call now; try again"),
    };
    let ip = match (core.calls.voice.public_ip, core.sessions.get(conn)) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(s)) => s.local.to_string(),
        (None, None) => return,
    };
    let port = core.calls.voice.relay_port;
    let Some(call) = core.calls.get_mut(id) else { return };
    call.state = State::Talking { callee_conn: conn };
    if let Some(t) = call.timer.take() {
        core.timers.cancel(t);
    }
    call.timer = Some(core.timers.insert(now.ms + SILENCE_MS, Timer::Silence(id)));
    let (caller_conn, callee, caller_email, row) = (call.caller_conn, call.callee, call.caller_email.clone(), call.row);
    core.calls.relay.open(id, tokens.clone(), now.ms);
    core.out.send(caller_conn, OnCommitFail::Keep, |b| response::voice_accept(b, &ip, port, &tokens[0]));
    core.out.send(conn, OnCommitFail::Keep, |b| response::voice_accept(b, &ip, port, &tokens[1]));
    // The callee's other devices stop ringing: answered elsewhere.
    let others: Vec<ConnId> = core.sessions.conns_of(callee).iter().copied().filter(|c| *c != conn).collect();
    for c in others {
        core.out.send(c, OnCommitFail::Keep, |b| response::voice(b, "end", &caller_email));
    }
    if let Some(row) = row {
        if let Err(e) = core.store.answer_call(row, now.unix) {
            log::error!("storing a call answer: {e}");
        }
    }
}

/// `end` from either party, at any time.
fn hang_up(core: &mut Core, conn: ConnId, me: i64, peer_email: &str, now: Now) {
    let found = core.calls.of(me, |c| {
        let peer = if c.caller == me { &c.callee_email } else { &c.caller_email };
        peer.eq_ignore_ascii_case(peer_email)
    });
    let Some(id) = found else { return core.out.failed(conn, T, "no call with that user") };
    finish(core, id, Outcome::Ended { by: me }, now);
}

/// The ring deadline passed: both sides get `time`.
pub(super) fn ring_timeout(core: &mut Core, id: u64, now: Now) {
    if let Some(c) = core.calls.get_mut(id) {
        c.timer = None;
        finish(core, id, Outcome::Timeout, now);
    }
}

/// The silence check of a talking call: ends it after 60 s without a forwarded datagram.
pub(super) fn silence_check(core: &mut Core, id: u64, now: Now) {
    let last = core.calls.relay.last_forward(id).unwrap_or(0);
    let Some(c) = core.calls.get_mut(id) else { return };
    c.timer = None;
    if now.ms >= last + SILENCE_MS {
        finish(core, id, Outcome::Silence, now);
    } else {
        c.timer = Some(core.timers.insert(last + SILENCE_MS, Timer::Silence(id)));
    }
}

/// A connection logged out or closed: the calls it takes part in end.
pub(super) fn connection_gone(core: &mut Core, conn: ConnId, user: i64, now: Now) {
    let Some(id) = core.calls.of(user, |_| true) else { return };
    let Some(c) = core.calls.get(id) else { return };
    let involved = match c.state {
        State::Talking { callee_conn } => conn == c.caller_conn || conn == callee_conn,
        // A ringing call ends when its caller goes, or when the callee has no device left.
        State::Ringing => conn == c.caller_conn || (user == c.callee && core.sessions.conns_of(user).is_empty()),
    };
    if involved {
        finish(core, id, Outcome::Gone { user }, now);
    }
}

/// Ends a call: tells the parties, closes the relay session, stores and logs the outcome.
fn finish(core: &mut Core, id: u64, outcome: Outcome, now: Now) {
    let Some(c) = core.calls.remove(id) else { return };
    if let Some(t) = c.timer {
        core.timers.cancel(t);
    }
    let counts = core.calls.relay.close(id).unwrap_or_default();
    // Who hears what: (connection, event, the other party's email).
    let mut tell: Vec<(ConnId, &str, &str)> = Vec::new();
    let callee_conns: Vec<ConnId> = match c.state {
        State::Ringing => core.sessions.conns_of(c.callee).to_vec(),
        State::Talking { callee_conn } => vec![callee_conn],
    };
    match outcome {
        Outcome::Rejected { on } => {
            tell.push((c.caller_conn, "reject", &c.callee_email));
            // The callee's other devices stop ringing.
            tell.extend(callee_conns.iter().filter(|&&cc| cc != on).map(|&cc| (cc, "end", c.caller_email.as_str())));
        }
        Outcome::Timeout => {
            tell.push((c.caller_conn, "time", &c.callee_email));
            tell.extend(callee_conns.iter().map(|&cc| (cc, "time", c.caller_email.as_str())));
        }
        Outcome::Silence => {
            tell.push((c.caller_conn, "end", &c.callee_email));
            tell.extend(callee_conns.iter().map(|&cc| (cc, "end", c.caller_email.as_str())));
        }
        Outcome::Ended { by: user } | Outcome::Gone { user } => {
            if user == c.caller {
                tell.extend(callee_conns.iter().map(|&cc| (cc, "end", c.caller_email.as_str())));
            } else {
                tell.push((c.caller_conn, "end", &c.callee_email));
                if c.state == State::Ringing {
                    // Other devices of the callee that were still ringing.
                    tell.extend(callee_conns.iter().map(|&cc| (cc, "end", c.caller_email.as_str())));
                }
            }
        }
    }
    for (to, event, email) in tell {
        core.out.send(to, OnCommitFail::Keep, |b| response::voice(b, event, email));
    }
    if let Some(row) = c.row {
        let end =
            CallEnd { ended_at: now.unix, outcome: outcome.as_str(), from_caller: counts[0], from_callee: counts[1] };
        if let Err(e) = core.store.end_call(row, &end) {
            log::error!("storing a call end: {e}");
        }
    }
    core.counters.call_ended(outcome.as_str());
    log::info!(
        "call {id} between users {} and {} ended: {}; relayed {}/{} datagrams",
        c.caller,
        c.callee,
        outcome.as_str(),
        counts[0].0,
        counts[1].0
    );
}
