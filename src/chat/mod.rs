//! The chat core: every protocol rule, and no I/O but the database.
//!
//! The event loop feeds the core events (a connection opened, a frame arrived, a worker
//! job finished, time passed, a connection closed) together with the current time, and the
//! core answers by filling an [`Outbox`]: bytes to send to connections, connections to
//! close, jobs for the worker threads. The core never touches sockets, threads or the clock,
//! so unit tests drive it with a store in a temp dir and made-up times.
//!
//! Rooms: `dispatch` (the one match over requests), `accounts` (registration, verify,
//! login), `sessions` (who is connected as whom), `throttle` (sliding-window counters),
//! `validate` (field rules), `outbox` (what the loop must do next).

mod accounts;
pub mod address;
mod blocks;
mod calls;
mod contacts;
mod delivery;
mod directory;
mod dispatch;
mod groups;
mod guards;
mod listing;
mod messages;
pub mod metrics;
mod outbox;
mod presence;
mod reads;
pub mod relay;
mod self_service;
mod sessions;
mod throttle;
mod typing;
pub(crate) mod validate;

pub use outbox::{CloseReason, Job, JobDone, OnCommitFail, Outbox, Send};
pub use sessions::ConnId;

use crate::config::Limits;
use crate::store::Store;
use crate::timer_wheel::TimerWheel;
use sessions::Sessions;
use std::net::IpAddr;
use std::rc::Rc;

/// A client address holds as many connections as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFull;

/// The current time, read once per loop iteration and passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a monotonic clock since the server started: for deadlines.
    pub ms: u64,
    /// Wall-clock Unix seconds: for timestamps that leave the process.
    pub unix: i64,
}

/// What a deadline in the timer wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// An anonymous connection has been idle for the auth timeout.
    Auth(ConnId),
    /// A pending registration's OTP expires.
    OtpExpiry(ConnId),
    /// A ringing call's deadline.
    Ring(u64),
    /// A typist's `true` lapses.
    TypingLapse(i64, typing::Target),
    /// A password reset code expires.
    ResetExpiry(ConnId),
    /// A user's presence announcement is due.
    PresenceDue(i64),
    /// A talking call's check for relay silence.
    Silence(u64),
    /// Store the delivery watermarks raised since the last commit that wrote them.
    PersistWatermarks,
    /// Forget throttle entries that have aged out.
    Sweep,
    /// Look for another process's commits even when no frame arrives.
    ExternalCheck,
}

const SWEEP_EVERY_MS: u64 = 60_000;
/// How often an idle server looks for another process's commits, so that a user deleted
/// by `natter user del` is logged out within about this long (PROTOCOL.md section 19).
const EXTERNAL_CHECK_EVERY_MS: u64 = 1_000;
/// Raised delivery watermarks are stored at most this long after they rose, in one UPDATE
/// per user. Not with every commit: at low load each message is a commit of its own, and
/// the users page would double what it writes. A crash in between only means that those
/// messages are delivered again (delivery is at least once).
const WATERMARK_DELAY_MS: u64 = 200;

/// Where callers are told to send their voice datagrams.
#[derive(Debug, Clone, Copy)]
pub struct VoiceConfig {
    /// The address put in `accept`; `None`: the callee connection's local address.
    pub public_ip: Option<IpAddr>,
    /// The relay's UDP port.
    pub relay_port: u16,
    /// Datagrams per second per party.
    pub relay_rate: u32,
}

/// The whole chat state owned by the event loop.
pub struct Core {
    limits: Limits,
    store: Store,
    sessions: Sessions,
    timers: TimerWheel<Timer>,
    /// Failed logins, OTP mails and call attempts over time.
    guards: guards::Guards,
    /// A valid argon2id hash of nothing anyone knows: checked against when a login names an
    /// unknown account, so unknown and known accounts cost the same time.
    dummy_hash: String,
    out: Outbox,
    /// Watermarks to store, holds to undo, backlogs being read.
    ledger: delivery::Ledger,
    /// The friends list's writes, batched per commit.
    contacts: contacts::Contacts,
    /// Calls in progress and their relay.
    calls: calls::Calls,
    /// Accounts by email, cached for the lookups of every message.
    directory: directory::Directory,
    /// Groups in use, cached.
    groups: groups::Groups,
    /// Who blocks whom, cached.
    blocks: blocks::Blocks,
    /// The contacts of online users, for presence events.
    presence: presence::Presence,
    /// Typing states in progress.
    typing: typing::Typing,
    /// Answers written a slice at a time (`users`), and what waits behind them.
    listings: listing::Listings,
    /// Password resets waiting for their code, by connection.
    resets: self_service::Resets,
    /// When (`Now::ms`) `data_version` is read next.
    external_check_due: u64,
    /// Counters for `/metrics`.
    pub counters: metrics::Counters,
}

/// How often, at most, `PRAGMA data_version` looks for another process's commits.
const EXTERNAL_CHECK_MS: u64 = 50;

impl Core {
    /// A core over an opened store. `dummy_hash` is any argon2id PHC string made with the
    /// server's parameters.
    pub fn new(store: Store, limits: Limits, voice: VoiceConfig, dummy_hash: String, now: Now) -> Core {
        let mut timers = TimerWheel::new(10, 1024);
        timers.insert(now.ms + SWEEP_EVERY_MS, Timer::Sweep);
        timers.insert(now.ms + EXTERNAL_CHECK_EVERY_MS, Timer::ExternalCheck);
        Core {
            guards: guards::Guards::new(&limits),
            limits,
            store,
            sessions: Sessions::default(),
            timers,
            dummy_hash,
            out: Outbox::default(),
            ledger: delivery::Ledger::default(),
            contacts: contacts::Contacts::default(),
            calls: calls::Calls::new(voice),
            directory: directory::Directory::default(),
            groups: groups::Groups::default(),
            blocks: blocks::Blocks::default(),
            presence: presence::Presence::default(),
            typing: typing::Typing::default(),
            listings: listing::Listings::default(),
            resets: self_service::Resets::default(),
            external_check_due: 0,
            counters: metrics::Counters::default(),
        }
    }

    /// The store, for the loop's shutdown and for tests.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Whether a connection from `peer` may open (PROTOCOL.md section 2): `Err` when its
    /// client address already holds `--max-connections-per-ip` connections, or
    /// `--max-anonymous-per-ip` anonymous ones (a new connection is anonymous). The loop
    /// then closes it at once, before [`on_open`](Self::on_open).
    pub fn admit(&self, peer: IpAddr) -> Result<(), AddressFull> {
        let n = self.sessions.at_address(peer);
        if n.total >= self.limits.max_connections_per_ip || n.anonymous >= self.limits.max_anonymous_per_ip {
            return Err(AddressFull);
        }
        Ok(())
    }

    /// A PROXY header named the client behind a trusted proxy (PROTOCOL.md section 13):
    /// its address stands for the connection from now on (the caps, the throttles, the
    /// logs, the default `ip` of voice `accept`). `Err` when that address already holds as
    /// many connections as it may; the loop then closes this one.
    pub fn readdress(&mut self, conn: ConnId, peer: IpAddr, local: IpAddr) -> Result<(), AddressFull> {
        self.admit(peer)?;
        self.sessions.readdress(conn, peer, local);
        Ok(())
    }

    /// A connection was accepted.
    pub fn on_open(&mut self, conn: ConnId, peer: IpAddr, local: IpAddr, now: Now) {
        let timer = self.timers.insert(now.ms + self.limits.auth_timeout_ms, Timer::Auth(conn));
        self.sessions.open(conn, peer, local, timer);
    }

    /// A complete frame arrived on a connection that is not [`busy`](Self::is_busy);
    /// `depth` is its deepest nesting, as the frame scanner measured it.
    pub fn on_frame(&mut self, conn: ConnId, frame: &[u8], depth: u32, now: Now) {
        self.notice_external_changes(now);
        dispatch::frame(self, conn, frame, depth, now);
    }

    /// The connection's stream cannot be resynchronised (PROTOCOL.md section 1): answer
    /// `invalid`, after whatever it was already owed. The loop closes it after the flush.
    pub fn on_bad_stream(&mut self, conn: ConnId, err: crate::framing::FrameError) {
        use crate::framing::FrameError;
        let msg = match err {
            FrameError::TooLarge => "frame too large; closing the connection",
            FrameError::NotAnObject => "expected a JSON object; closing the connection",
        };
        self.out.invalid(conn, "unknown", msg);
    }

    /// The plain stream from a client that is not on loopback, under `--require-tls`
    /// (PROTOCOL.md section 13): answer `invalid`; the loop closes it after the flush.
    pub fn on_plain_refused(&mut self, conn: ConnId) {
        self.out.invalid(conn, "unknown", "TLS required");
    }

    /// True when the core holds output the loop has not taken yet (produced outside the
    /// handle phase, e.g. by a connection closing): the loop must not sleep on it.
    pub fn has_output(&self) -> bool {
        !self.out.sends.is_empty()
            || !self.out.closes.is_empty()
            || !self.out.jobs.is_empty()
            || self.store.has_pending_writes()
            || self.presence.has_pending()
    }

    /// True while the connection waits for a worker job: its further frames must wait too,
    /// so that answers keep the order of requests.
    pub fn is_busy(&self, conn: ConnId) -> bool {
        self.sessions.get(conn).is_some_and(|s| s.busy.is_some()) || self.listings.is_active(conn)
    }

    /// A worker job finished.
    pub fn on_job_done(&mut self, done: JobDone, now: Now) {
        accounts::job_done(self, done, now);
    }

    /// A connection is gone (closed by either side or by the server).
    pub fn on_close(&mut self, conn: ConnId, now: Now) {
        self.listings.forget(conn);
        if let Some(member) = self.sessions.logout(conn) {
            calls::connection_gone(self, conn, member.user_id, now);
            typing::connection_gone(self, conn, member.user_id);
            presence::logged_out(self, member.user_id, &member.email, now);
        }
        if let Some(s) = self.sessions.close(conn) {
            for t in s.timers() {
                self.timers.cancel(t);
            }
        }
        if let Some(t) = self.resets.forget(conn) {
            self.timers.cancel(t);
        }
    }

    /// Runs every deadline that is due.
    pub fn on_timers(&mut self, now: Now) {
        let mut due = Vec::new();
        self.timers.expire(now.ms, &mut due);
        for t in due {
            match t {
                Timer::Auth(conn) => accounts::auth_timeout(self, conn, now),
                Timer::OtpExpiry(conn) => accounts::otp_expired(self, conn),
                Timer::Ring(call) => calls::ring_timeout(self, call, now),
                Timer::Silence(call) => calls::silence_check(self, call, now),
                Timer::TypingLapse(from, target) => typing::lapse(self, from, target),
                Timer::ResetExpiry(conn) => self_service::reset_expired(self, conn),
                Timer::PresenceDue(user) => presence::due(self, user, now),
                Timer::PersistWatermarks => self.ledger.persist_now(true),
                Timer::Sweep => {
                    self.guards.sweep(now.ms);
                    self.typing.sweep(now.ms);
                    self.timers.insert(now.ms + SWEEP_EVERY_MS, Timer::Sweep);
                }
                Timer::ExternalCheck => {
                    self.check_external_changes(now);
                    self.timers.insert(now.ms + EXTERNAL_CHECK_EVERY_MS, Timer::ExternalCheck);
                }
            }
        }
        // Presence announcements go out a part per iteration.
        presence::send_some(self);
    }

    /// When the next deadline is due (ms on the `Now::ms` clock), for the poll timeout.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next_due()
    }

    /// Commits the iteration's writes and hands over what the loop must do. When the commit
    /// fails, answers that promised a stored result become `failed` and deliveries that
    /// depended on it are dropped, so nothing is acknowledged that was not stored.
    pub fn commit(&mut self) -> &mut Outbox {
        let result = self.write_batched().and_then(|()| self.store.commit());
        if let Err(e) = &result {
            log::error!("commit failed, answering `failed` to the iteration's writers: {e}");
            self.store.rollback();
            self.out.commit_failed();
            self.groups.forget();
            self.blocks.forget();
        }
        self.ledger.committed(result.is_ok(), &mut self.sessions);
        self.contacts.committed(result.is_ok());
        &mut self.out
    }

    /// Looks for another process's commits (an admin command) before a frame is handled,
    /// at most every [`EXTERNAL_CHECK_MS`]: outside a transaction the pragma costs a read
    /// lock, as much as a small message. (A timer also looks every
    /// [`EXTERNAL_CHECK_EVERY_MS`], and every write transaction when it begins.)
    fn notice_external_changes(&mut self, now: Now) {
        if now.ms >= self.external_check_due {
            self.check_external_changes(now);
        }
    }

    /// Reads whether another process committed, and catches up with it if so.
    fn check_external_changes(&mut self, now: Now) {
        self.external_check_due = now.ms + EXTERNAL_CHECK_MS;
        match self.store.changed_elsewhere() {
            Ok(true) => self.after_external_change(now),
            Ok(false) => {}
            Err(e) => log::warn!("reading the database's data_version: {e}"),
        }
    }

    /// Opens the iteration's write transaction before a request that writes is handled,
    /// and catches up with what another process committed before it began. Under the
    /// write lock nothing else can commit, so a user found to exist here still exists when
    /// the rows staged for it are written: a request of a deleted user can no longer fail
    /// the other requests of the iteration (it once failed 60 of 200 other messages).
    fn begin_write(&mut self, now: Now) {
        match self.store.write() {
            Ok(_) => {
                if self.store.take_changed_at_begin() {
                    self.after_external_change(now);
                }
            }
            // The request's own write reports it.
            Err(e) => log::debug!("opening the write transaction: {e}"),
        }
    }

    /// Drops every cache of rows another change may have removed (an account deleted).
    fn forget_caches(&mut self) {
        self.directory.clear();
        self.groups.forget();
        self.blocks.forget();
        self.contacts.forget();
        self.ledger.forget_backlogs();
    }

    /// Drops what is cached from the database, and logs out the connections of accounts
    /// that no longer exist (`natter user del`) with the `logout` event.
    fn after_external_change(&mut self, now: Now) {
        self.forget_caches();
        let online: Vec<i64> = self.sessions.online_users().collect();
        for user in online {
            match self.store.user_by_id(user) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    log::info!("account {user} was deleted by another process; logging out its connections");
                    accounts::log_out_everywhere(self, user, "account deleted", now);
                }
                Err(e) => log::warn!("checking that account {user} still exists: {e}"),
            }
        }
    }

    /// Writes what is kept in memory during the iteration and stored once per commit.
    fn write_batched(&mut self) -> Result<(), crate::store::StoreError> {
        self.ledger.write(&mut self.store)?;
        self.contacts.write(&mut self.store)
    }

    /// A datagram arrived on the relay socket; `data` holds at most `MAX_DATAGRAM + 1` of
    /// its `len` bytes. Returns where to forward it, if anywhere.
    pub fn on_datagram(
        &mut self,
        from: std::net::SocketAddr,
        data: &[u8],
        len: usize,
        now: Now,
    ) -> Option<std::net::SocketAddr> {
        match self.calls.relay.on_datagram(from, data, len, now.ms) {
            relay::Verdict::Forward(to) => Some(to),
            _ => None,
        }
    }

    /// The relay's counters.
    pub fn relay_stats(&self) -> relay::RelayStats {
        self.calls.relay.stats
    }

    /// (anonymous connections, logged-in connections, users online, calls in progress).
    pub fn population(&self) -> (usize, usize, usize, usize) {
        let (anonymous, logged_in, users) = self.sessions.counts();
        (anonymous, logged_in, users, self.calls.len())
    }

    /// The output produced outside [`commit`](Self::commit) (backlog batches).
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The outbox of a committed iteration (or of a backlog's batch), ready for the
    /// connections: sends to a connection inside a long answer's line are taken out to wait
    /// for its end (`listing.rs`).
    pub fn sendable(&mut self) -> &mut Outbox {
        self.listings.hold(&mut self.out);
        &mut self.out
    }

    /// The account with this email (case-insensitive) as (id, email as registered).
    fn user_by_email(&mut self, email: &str) -> Result<Option<(i64, Rc<str>)>, crate::store::StoreError> {
        self.directory.by_email(&self.store, email)
    }

    /// Copies the connections that still read their backlog into `into`. Rows they read
    /// ahead are dropped first if another process may have deleted them.
    pub fn catching_up(&mut self, into: &mut Vec<ConnId>) {
        self.ledger.check_read_ahead(&self.store);
        into.clear();
        into.extend_from_slice(&self.ledger.catching_up);
        into.extend(self.listings.conns().filter(|c| !self.ledger.catching_up.contains(c)));
    }

    /// Queues the next batch of `conn`'s backlog: at most `limit` messages and about
    /// `max_bytes`; or, first, the next slice of a long answer it asked for. Returns true
    /// while more remains. Call only after [`commit`](Self::commit), before new requests.
    pub fn catch_up(&mut self, conn: ConnId, limit: usize, max_bytes: usize) -> bool {
        if self.listings.is_active(conn) {
            return listing::next(self, conn, max_bytes) || self.ledger.catching_up.contains(&conn);
        }
        let more = delivery::catch_up(self, conn, limit, max_bytes);
        if !more {
            self.ledger.catching_up.retain(|c| *c != conn);
        }
        more
    }

    /// The loop has written every byte of `conn`'s personal messages up to id `upto`.
    /// `count` is how many personal messages that write completed.
    pub fn on_written(&mut self, conn: ConnId, upto: i64, count: u64, now: Now) {
        self.counters.messages_delivered += count;
        delivery::written(self, conn, upto);
        self.schedule_watermarks(now);
    }

    /// Makes sure raised watermarks are stored within [`WATERMARK_DELAY_MS`].
    fn schedule_watermarks(&mut self, now: Now) {
        if self.ledger.needs_timer() {
            self.timers.insert(now.ms + WATERMARK_DELAY_MS, Timer::PersistWatermarks);
        }
    }

    /// Stores every raised watermark with the next commit (at shutdown).
    pub fn persist_all(&mut self) {
        self.ledger.persist_now(false);
    }
}

#[cfg(test)]
mod tests;
