//! What the core asks the event loop to do after an iteration: the core's only output.
//!
//! Encoded messages go into one byte arena that is reused every iteration; a [`Send`] names
//! a range of it and a connection. A message for many connections (a global message) is
//! encoded once and named by many sends. Sends that depend on the iteration's writes say
//! what becomes of them if the commit fails ([`OnCommitFail`]).

use super::ConnId;
use crate::protocol::response::{self, ErrorKind};
use std::ops::Range;

/// What a send becomes when the iteration's commit fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCommitFail {
    /// Not about a write (a pong, an error): sent anyway.
    Keep,
    /// A delivery of something that was not stored: never sent.
    Drop,
    /// The answer to the request that wrote: replaced by `failed` with this type.
    Fail(&'static str),
}

/// Bytes for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub to: ConnId,
    pub range: Range<usize>,
    pub on_fail: OnCommitFail,
    /// A personal message id whose delivery completes once these bytes are written.
    pub delivers: Option<i64>,
}

/// Why the core wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    AuthTimeout,
    /// What waited for the connection passed its cap (see `listing.rs`).
    SlowConsumer,
    /// An answer could not be finished (a store error inside a long line).
    Broken,
}

/// Blocking or CPU-heavy work for the worker threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// argon2id over a client's md5 digest, for a new account.
    HashPassword { conn: ConnId, md5: String },
    /// Checks a client's md5 digest against a stored argon2id hash.
    VerifyPassword { conn: ConnId, hash: String, md5: String },
    /// Mails a one-time password: for a registration, or (`reset`) a password reset.
    SendOtp { conn: ConnId, to: String, otp: String, reset: bool },
}

/// A finished [`Job`], back on the loop thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDone {
    Hashed {
        conn: ConnId,
        hash: Option<String>,
    },
    Verified {
        conn: ConnId,
        ok: bool,
    },
    /// `Err` holds a reason for the log (never the OTP).
    OtpSent {
        conn: ConnId,
        result: Result<(), String>,
        /// The mail of a password reset (nobody waits for it).
        reset: bool,
    },
}

impl JobDone {
    /// The connection the job was for.
    pub fn conn(&self) -> ConnId {
        match self {
            JobDone::Hashed { conn, .. } | JobDone::Verified { conn, .. } | JobDone::OtpSent { conn, .. } => *conn,
        }
    }
}

/// The iteration's output.
#[derive(Debug, Default)]
pub struct Outbox {
    pub bytes: Vec<u8>,
    pub sends: Vec<Send>,
    pub closes: Vec<(ConnId, CloseReason)>,
    pub jobs: Vec<Job>,
    /// The connection whose frames are being handled, if the loop said so
    /// ([`watch`](Self::watch)): bytes sent to it are counted, and sized answers to it are
    /// held to the room it has left.
    watch: Option<(ConnId, usize)>,
    /// Bytes sent to the watched connection since [`watch`](Self::watch).
    watched: usize,
    /// Bytes of all sends since the last [`clear`](Self::clear), each counted per receiver.
    queued: usize,
}

/// Arena capacity kept from one iteration to the next; more was for a rare burst.
const ARENA_KEEP: usize = 4 << 20;

/// Where a sized answer (`history`, `users`) would have to stop: the room its connection
/// has left under `--max-output`. Passing it is answered `failed` instead.
pub const TOO_BIG: &str = "the answer would pass this connection's output limit; ask for less";

impl Outbox {
    /// Starts counting the bytes sent to `conn`, which has `room` bytes left under its
    /// output cap (the loop calls this before handing over the connection's frames).
    pub fn watch(&mut self, conn: ConnId, room: usize) {
        self.watch = Some((conn, room));
        self.watched = 0;
    }

    /// Stops counting (the connection's frames are handled).
    pub fn unwatch(&mut self) {
        self.watch = None;
        self.watched = 0;
    }

    /// Bytes sent to the watched connection since [`watch`](Self::watch): what its frames
    /// have added to its unsent output so far in this iteration.
    pub fn watched(&self) -> usize {
        self.watched
    }

    /// The bytes an answer to `conn` may take: unlimited unless `conn` is watched.
    pub fn room(&self, conn: ConnId) -> usize {
        match self.watch {
            Some((c, room)) if c == conn => room.saturating_sub(self.watched),
            _ => usize::MAX,
        }
    }

    fn push(&mut self, s: Send) {
        if self.watch.is_some_and(|(c, _)| c == s.to) {
            self.watched += s.range.len();
        }
        self.queued += s.range.len();
        self.sends.push(s);
    }

    /// Bytes the iteration's sends will copy into connections: a fan-out counts once per
    /// receiver (what the loop's per-iteration bound holds back), the arena once.
    pub fn queued(&self) -> usize {
        self.queued.max(self.bytes.len())
    }

    /// Encodes with `f` into the arena and sends the result to `to`.
    pub fn send(&mut self, to: ConnId, on_fail: OnCommitFail, f: impl FnOnce(&mut Vec<u8>)) {
        let range = self.encode(f);
        self.push(Send { to, range, on_fail, delivers: None });
    }

    /// Encodes an answer whose size depends on stored data (`history`, `users`) with `f`,
    /// which is given the most bytes it may write and returns false when it had to stop
    /// there; then `to` gets `failed` of type `ty` instead, and the arena is cut back, so
    /// no answer is ever built or queued past the connection's output cap.
    pub fn send_sized(&mut self, to: ConnId, ty: &str, f: impl FnOnce(&mut Vec<u8>, usize) -> bool) {
        let (start, room) = (self.bytes.len(), self.room(to));
        if f(&mut self.bytes, room) && self.bytes.len() - start <= room {
            let range = start..self.bytes.len();
            self.push(Send { to, range, on_fail: OnCommitFail::Keep, delivers: None });
        } else {
            self.bytes.truncate(start);
            self.failed(to, ty, TOO_BIG);
        }
    }

    /// Encodes with `f` into the arena without sending, for [`send_again`](Self::send_again).
    pub fn encode(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = self.bytes.len();
        f(&mut self.bytes);
        start..self.bytes.len()
    }

    /// Sends bytes already in the arena (encoded once for many receivers) to `to`.
    pub fn send_again(&mut self, to: ConnId, range: Range<usize>, on_fail: OnCommitFail) {
        self.push(Send { to, range, on_fail, delivers: None });
    }

    /// Sends a personal message whose delivery is counted when `to` has written it.
    pub fn deliver(&mut self, to: ConnId, range: Range<usize>, on_fail: OnCommitFail, id: Option<i64>) {
        self.push(Send { to, range, on_fail, delivers: id });
    }

    pub fn error(&mut self, to: ConnId, kind: ErrorKind, ty: &str, message: &str) {
        self.send(to, OnCommitFail::Keep, |b| response::error(b, kind, ty, message));
    }

    pub fn invalid(&mut self, to: ConnId, ty: &str, message: &str) {
        self.error(to, ErrorKind::Invalid, ty, message);
    }

    pub fn failed(&mut self, to: ConnId, ty: &str, message: &str) {
        self.error(to, ErrorKind::Failed, ty, message);
    }

    /// Rewrites the sends after a failed commit (see [`OnCommitFail`]).
    pub(super) fn commit_failed(&mut self) {
        let sends = std::mem::take(&mut self.sends);
        for s in sends {
            match s.on_fail {
                OnCommitFail::Keep => self.sends.push(s),
                OnCommitFail::Drop => {}
                OnCommitFail::Fail(ty) => self.failed(s.to, ty, "could not be stored; try again"),
            }
        }
    }

    /// Empties everything for the next iteration, keeping the allocations (but not an
    /// arena that one big answer blew up: it would hold that memory for good).
    pub fn clear(&mut self) {
        if self.bytes.capacity() > ARENA_KEEP {
            self.bytes = Vec::new();
        }
        self.watch = None;
        self.watched = 0;
        self.queued = 0;
        self.bytes.clear();
        self.sends.clear();
        self.closes.clear();
        self.jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fan-out is encoded once but copied to every receiver: what the loop's
    /// per-iteration bound counts is the copies.
    #[test]
    fn queued_counts_a_fan_out_once_per_receiver() {
        let mut out = Outbox::default();
        let range = out.encode(|b| b.extend_from_slice(&[b'x'; 100]));
        for slot in 0..50 {
            out.send_again(ConnId { slot, generation: 1 }, range.clone(), OnCommitFail::Drop);
        }
        assert_eq!(out.bytes.len(), 100);
        assert_eq!(out.queued(), 5_000);
        out.clear();
        assert_eq!(out.queued(), 0);
    }
}
