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
}

/// Blocking or CPU-heavy work for the worker threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// argon2id over a client's md5 digest, for a new account.
    HashPassword { conn: ConnId, md5: String },
    /// Checks a client's md5 digest against a stored argon2id hash.
    VerifyPassword { conn: ConnId, hash: String, md5: String },
    /// Mails a one-time password.
    SendOtp { conn: ConnId, to: String, otp: String },
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
}

impl Outbox {
    /// Encodes with `f` into the arena and sends the result to `to`.
    pub fn send(&mut self, to: ConnId, on_fail: OnCommitFail, f: impl FnOnce(&mut Vec<u8>)) {
        let range = self.encode(f);
        self.sends.push(Send { to, range, on_fail, delivers: None });
    }

    /// Encodes with `f` into the arena without sending, for [`send_again`](Self::send_again).
    pub fn encode(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = self.bytes.len();
        f(&mut self.bytes);
        start..self.bytes.len()
    }

    /// Sends bytes already in the arena (encoded once for many receivers) to `to`.
    pub fn send_again(&mut self, to: ConnId, range: Range<usize>, on_fail: OnCommitFail) {
        self.sends.push(Send { to, range, on_fail, delivers: None });
    }

    /// Sends a personal message whose delivery is counted when `to` has written it.
    pub fn deliver(&mut self, to: ConnId, range: Range<usize>, on_fail: OnCommitFail, id: Option<i64>) {
        self.sends.push(Send { to, range, on_fail, delivers: id });
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

    /// Empties everything for the next iteration, keeping the allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.sends.clear();
        self.closes.clear();
        self.jobs.clear();
    }
}
