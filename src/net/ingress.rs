//! The loop's way in: accepting connections and reading, framing and handing frames to
//! the core (the "events" and "read and handle" phases of the tick).
//!
//! Edge-triggered readiness: a readable connection is read until `WouldBlock`, a short read,
//! or until its per-iteration budget is spent; then it keeps its `readable` flag and is
//! carried over, because no new event will come for bytes already waiting.
//!
//! A short read (fewer bytes than asked for) means the socket's receive queue was empty
//! when the read ended; bytes that arrive later raise a new edge. So the read that would
//! only say `WouldBlock` is skipped: one system call less per connection per iteration
//! (at low load, every other read). Not once the peer has hung up, because its end of
//! stream raises no further edge (tokio does the same). One known gap, shared with tokio:
//! a read stops short at TCP urgent data (`MSG_OOB`), so requests a client sends behind an
//! urgent byte wait for its next bytes or its close; only that client is slowed, and no
//! chat client has a reason to send urgent data.

use super::conn::{CloseWhy, Conn, ReadOutcome};
use super::event_loop::{EventLoop, READ_BUDGET, READ_CHUNK};
use super::proxy::Header;
use super::sockopt;
use crate::chat::Now;
use crate::token_bucket::TokenBucket;
use mio::{Interest, Token};

impl EventLoop {
    /// Accepts until `WouldBlock`. Past `--max-connections`, or past its address's caps
    /// (`Core::admit`), a connection is accepted and dropped at once.
    pub(super) fn accept(&mut self, now: Now) {
        while let Some((mut stream, peer)) = self.listener.next(now.ms, &mut self.resume) {
            if self.conns.len() >= self.net.max_connections {
                self.metrics.counters.refused_full += 1;
                log::debug!("refusing {peer}: {}", CloseWhy::ServerFull.as_str());
                continue;
            }
            // A proxy's own address holds every client behind it: its clients are counted
            // at their own addresses once their PROXY headers name them.
            let trusted = self.listener.trusts(peer.ip());
            if !trusted && self.core.admit(peer.ip()).is_err() {
                self.metrics.counters.refused_address += 1;
                log::debug!("refusing {peer}: {}", CloseWhy::AddressFull.as_str());
                continue;
            }
            if let Err(e) = sockopt::keepalive(&stream).and_then(|_| stream.set_nodelay(true)) {
                log::debug!("socket options for {peer}: {e}");
            }
            let local = stream.local_addr().map_or(peer.ip(), |a| a.ip());
            let registry = self.poller.poll.registry();
            let (max_frame, msg_rate) = (self.net.max_frame, self.net.msg_rate);
            let opened = self.conns.insert_with(|id| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = registry.register(&mut stream, Token(id.slot as usize), interest) {
                    log::warn!("cannot register {peer}: {e}");
                    return None;
                }
                let mut conn = Conn::new(stream, id, peer, max_frame, trusted);
                conn.bucket = msg_rate.map(|rate| TokenBucket::full(f64::from(rate) * 2.0, now.ms));
                Some(conn)
            });
            if let Some(id) = opened {
                self.core.on_open(id, peer.ip(), local, now);
                log::debug!("accepted {peer} as {id:?}");
            }
        }
    }

    pub(super) fn read_and_handle(&mut self, now: Now) {
        let mut work = std::mem::take(&mut self.conns.work);
        for &key in &work {
            self.service(key, now);
        }
        work.clear();
        self.conns.work = work;
    }

    /// Handles the frames a connection has buffered and reads more, until it would block,
    /// its budget is spent, it waits for a job, or it is throttled.
    pub(super) fn service(&mut self, key: usize, now: Now) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.queued = false;
        let id = conn.id;
        let mut budget = READ_BUDGET;
        let mut eof = false;
        let mut deferred = false;
        self.core.outbox().watch(id, self.net.max_output.saturating_sub(conn.pending_output()));
        loop {
            while conn.closing.is_none() && !self.core.is_busy(id) {
                // What the iteration's answers will copy into connections, a fan-out once per
                // receiver: a rename of a big group, or a group message, copies its bytes to
                // every member.
                if self.output.arena_full(self.core.outbox().queued()) {
                    deferred = true;
                    break;
                }
                if self.output.must_pause(conn.pending_output() + self.core.outbox().watched()) {
                    // Resumed by the flush that takes it back under the mark (egress.rs).
                    if !conn.paused {
                        conn.paused = true;
                        self.metrics.counters.reads_paused += 1;
                    }
                    break;
                }
                if let Some(resume) = take_token(conn, self.net.msg_rate, now.ms) {
                    self.resume.at(resume, key);
                    conn.compact();
                    self.core.outbox().unwatch();
                    return;
                }
                match conn.next_frame() {
                    Ok(Some(range)) => self.core.on_frame(id, &conn.input()[range], conn.frame_depth(), now),
                    Ok(None) => {
                        refund_token(conn);
                        break;
                    }
                    Err(e) => {
                        match e {
                            crate::framing::FrameError::TooLarge => self.metrics.counters.frames_too_large += 1,
                            crate::framing::FrameError::NotAnObject => self.metrics.counters.frames_not_object += 1,
                        }
                        self.core.on_bad_stream(id, e);
                        conn.closing = Some(e.into());
                    }
                }
            }
            conn.compact();
            let stop = conn.closing.is_some() || conn.paused || deferred || self.core.is_busy(id);
            if stop || eof || !conn.readable || budget == 0 {
                break;
            }
            let len = budget.min(READ_CHUNK);
            let outcome = conn.read_some(&mut self.scratch[..len], &self.listener.offer);
            self.output.queued(conn.take_transport_bytes());
            match outcome {
                ReadOutcome::Data(n) => {
                    budget -= n;
                    self.metrics.counters.bytes_in += n as u64;
                    if n > 0 && n < len && !conn.hung_up {
                        conn.readable = false;
                    }
                    let news = std::mem::take(&mut conn.news);
                    if let Some(header) = news.proxied {
                        self.metrics.counters.proxy_headers += 1;
                        if let Header::Proxied { source, destination } = header {
                            if self.core.readdress(id, source.ip(), destination.ip()).is_err() {
                                self.metrics.counters.refused_address += 1;
                                conn.closing = Some(CloseWhy::AddressFull);
                            }
                        }
                    }
                    match news.handshake {
                        Some(true) => self.metrics.counters.handshakes_ok += 1,
                        Some(false) => self.metrics.counters.handshakes_failed += 1,
                        None => {}
                    }
                    match conn.closing {
                        Some(CloseWhy::Refused(_)) => self.metrics.counters.transports_refused += 1,
                        Some(CloseWhy::TlsRequired) => self.core.on_plain_refused(id),
                        _ => {}
                    }
                }
                ReadOutcome::WouldBlock => conn.readable = false,
                ReadOutcome::Eof => {
                    conn.readable = false;
                    eof = true;
                }
                ReadOutcome::Error(e) => {
                    log::debug!("read from {}: {e}", conn.peer);
                    conn.closing = Some(CloseWhy::ReadError);
                }
            }
        }
        self.core.outbox().unwatch();
        if eof && conn.closing.is_none() {
            conn.closing = Some(CloseWhy::PeerClosed);
        }
        // A TLS handshake's records, or an answer the transport queued, go out with this
        // iteration's flush.
        let transport_output = conn.transport_wants_write() || conn.pending_output() > 0;
        let closing = conn.closing.is_some();
        let carry = deferred || (conn.readable && budget == 0 && !conn.paused && !self.core.is_busy(id));
        if transport_output {
            self.conns.mark_dirty(key);
        }
        if closing {
            self.conns.closing.push(key);
        } else if carry {
            self.resume.next_iteration(key);
        }
    }
}

/// Takes one frame token under `--msg-rate` (burst: two seconds' worth); `Some(resume_ms)`
/// when the bucket is empty.
fn take_token(conn: &mut Conn, rate: Option<u32>, now_ms: u64) -> Option<u64> {
    let rate = f64::from(rate?);
    conn.bucket.as_mut()?.take(rate, rate * 2.0, now_ms).err().map(|wait| now_ms + wait)
}

/// Gives back the token taken for a frame that turned out not to be there yet.
fn refund_token(conn: &mut Conn) {
    if let Some(b) = conn.bucket.as_mut() {
        b.give_back();
    }
}
