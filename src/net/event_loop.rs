//! The event loop: one mio `Poll` that owns the listener, every TCP connection, the UDP
//! relay socket, the worker waker and the signal pipe.
//!
//! One iteration ([`EventLoop::tick`]) runs named phases in data-flow order:
//! poll, read the clock once, accept and note readiness, take finished jobs, read and
//! handle frames, run due timers, commit the store and queue the answers, flush, reap.
//! Answers are only written in the flush phase, after the commit, so no answer that
//! depends on a write ever leaves before the write is durable.
//!
//! Readiness is edge-triggered: a readable connection is read until `WouldBlock`, or until
//! its per-iteration budget is spent, in which case it keeps its `readable` flag and is
//! carried to the next iteration (with a zero poll timeout), because no new event will come
//! for bytes already waiting. Closing is a mark: the reap phase is the one door out.

use super::conn::{CloseWhy, Conn, ReadOutcome};
use super::metrics::{self, MetricsServer, NetCounters};
use super::relay_socket::RelaySocket;
use super::signals::Signals;
use super::sockopt;
use super::worker::Workers;
use crate::chat::{ConnId, Core, Now};
use crate::config::NetLimits;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const UDP: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);
pub const SIGNAL: Token = Token(usize::MAX - 4);
pub const METRICS: Token = Token(usize::MAX - 5);

/// Bytes per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per iteration before others get their turn.
const READ_BUDGET: usize = 256 * 1024;
/// Backlog messages read from the store per batch.
const CATCH_UP_BATCH: usize = 2048;
/// A connection catching up gets more backlog only while its unsent output is below a low
/// water mark: a quarter of `--max-output`, at most this. Each batch adds at most as much
/// again, so a large backlog is paced by the socket and never reaches the output cap.
const CATCH_UP_LOW_WATER_MAX: usize = 1 << 20;
/// Backlog bytes one connection gets per iteration before others get their turn.
const CATCH_UP_BUDGET: usize = 4 << 20;
/// How long shutdown waits for sockets to take the last answers.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

pub struct EventLoop {
    pub(super) poll: Poll,
    events: Events,
    ready: Vec<(Token, bool, bool)>,
    pub(super) listener: Option<TcpListener>,
    pub(super) relay: RelaySocket,
    conns: Slab<Conn>,
    generations: Vec<u32>,
    pub(super) core: Core,
    pub(super) workers: Workers,
    pub(super) signals: Signals,
    net: NetLimits,
    start: Instant,
    scratch: Vec<u8>,
    /// Connections to read and handle this iteration.
    work: Vec<usize>,
    /// Connections whose read budget ran out with bytes still waiting.
    carry: Vec<usize>,
    /// Connections with output to write.
    dirty: Vec<usize>,
    /// Connections marked for closing.
    closing: Vec<usize>,
    /// Connections paused by `--msg-rate`, with when to resume (ms).
    throttled: Vec<(u64, usize)>,
    /// Scratch list of connections reading their backlog.
    catching_up: Vec<ConnId>,
    /// See [`CATCH_UP_LOW_WATER_MAX`].
    low_water: usize,
    /// A backlog stopped on its per-iteration budget, not on a full socket: go on without
    /// sleeping (no writable event will come for a socket that never filled).
    refill_again: bool,
    /// After an accept error such as EMFILE: when to try accepting again (ms).
    accept_retry_ms: Option<u64>,
    last_accept_warning_ms: Option<u64>,
    stopping: bool,
    /// The clock as read at the start of this iteration.
    tick_now: Now,
    pub(super) metrics: Option<MetricsServer>,
    counters: NetCounters,
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        poll: Poll,
        listener: TcpListener,
        relay: RelaySocket,
        core: Core,
        workers: Workers,
        signals: Signals,
        net: NetLimits,
        start: Instant,
    ) -> EventLoop {
        let low_water = (net.max_output / 4).clamp(1, CATCH_UP_LOW_WATER_MAX);
        EventLoop {
            poll,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            listener: Some(listener),
            relay,
            conns: Slab::new(),
            generations: Vec::new(),
            core,
            workers,
            signals,
            net,
            start,
            scratch: vec![0; READ_CHUNK],
            work: Vec::new(),
            carry: Vec::new(),
            dirty: Vec::new(),
            closing: Vec::new(),
            throttled: Vec::new(),
            catching_up: Vec::new(),
            low_water,
            refill_again: false,
            accept_retry_ms: None,
            last_accept_warning_ms: None,
            stopping: false,
            tick_now: Now { ms: 0, unix: 0 },
            metrics: None,
            counters: NetCounters::default(),
        }
    }

    /// Runs until SIGINT or SIGTERM, then shuts down in order.
    pub fn run(mut self) -> io::Result<()> {
        while !self.stopping {
            self.tick()?;
        }
        self.shutdown();
        Ok(())
    }

    /// One iteration of the loop.
    fn tick(&mut self) -> io::Result<()> {
        self.poll_events()?;
        let started = Instant::now();
        let now = self.now();
        self.tick_now = now;
        self.handle_events(now);
        self.finish_jobs(now);
        self.read_and_handle(now);
        if self.relay.readable {
            self.relay.drain(&mut self.core, now);
        }
        self.core.on_timers(now);
        self.commit_and_queue();
        self.flush();
        self.refill();
        self.reap(now);
        self.counters.iteration.observe(started.elapsed());
        Ok(())
    }

    fn now(&self) -> Now {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        Now { ms: self.start.elapsed().as_millis() as u64, unix }
    }

    fn poll_events(&mut self) -> io::Result<()> {
        let timeout = self.poll_timeout();
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.ready.clear();
        for e in self.events.iter() {
            let readable = e.is_readable() || e.is_read_closed() || e.is_error();
            self.ready.push((e.token(), readable, e.is_writable() || e.is_write_closed()));
        }
        Ok(())
    }

    /// Zero when work is carried over; else until the next deadline of the core, of a
    /// throttled connection or of an accept retry; else forever.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.carry.is_empty() || self.relay.readable || self.refill_again || self.core.has_output() {
            return Some(Duration::ZERO);
        }
        let next = [self.core.next_deadline(), self.throttled.iter().map(|t| t.0).min(), self.accept_retry_ms]
            .into_iter()
            .flatten()
            .min()?;
        let now = self.start.elapsed().as_millis() as u64;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    fn handle_events(&mut self, now: Now) {
        for i in 0..self.ready.len() {
            let (token, readable, writable) = self.ready[i];
            match token {
                LISTENER => self.accept(now),
                UDP => self.relay.readable = true,
                WAKER => {}
                METRICS => {
                    if let Some(m) = self.metrics.as_mut() {
                        m.accept(self.poll.registry());
                    }
                }
                SIGNAL => {
                    if self.signals.drain() {
                        log::info!("signal received: shutting down");
                        self.stopping = true;
                    }
                }
                // Scrape connections: below the fixed tokens above, above every chat connection.
                Token(t) if (metrics::BASE..METRICS.0).contains(&t) => {
                    self.counters.relay_send_dropped = self.relay.send_dropped;
                    if let Some(m) = self.metrics.as_mut() {
                        m.on_ready(token, self.poll.registry(), &mut self.core, &self.counters);
                    }
                }
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if readable {
                        conn.readable = true;
                        if !conn.queued {
                            conn.queued = true;
                            self.work.push(key);
                        }
                    }
                    if writable && !conn.dirty {
                        conn.dirty = true;
                        self.dirty.push(key);
                    }
                }
            }
        }
        for key in self.carry.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                if !conn.queued {
                    conn.queued = true;
                    self.work.push(key);
                }
            }
        }
        let due = now.ms;
        let mut i = 0;
        while i < self.throttled.len() {
            if self.throttled[i].0 <= due {
                let (_, key) = self.throttled.swap_remove(i);
                if let Some(conn) = self.conns.get_mut(key) {
                    if !conn.queued {
                        conn.queued = true;
                        self.work.push(key);
                    }
                }
            } else {
                i += 1;
            }
        }
        if self.accept_retry_ms.is_some_and(|t| t <= now.ms) {
            self.accept_retry_ms = None;
            self.accept(now);
        }
    }

    /// Accepts until `WouldBlock`. Past `--max-connections` a connection is accepted and
    /// dropped at once. When the process is out of descriptors, accepting pauses for 100 ms
    /// instead of spinning on the error.
    fn accept(&mut self, now: Now) {
        if self.accept_retry_ms.is_some() {
            return;
        }
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    if self.last_accept_warning_ms.is_none_or(|t| now.ms >= t + 10_000) {
                        log::warn!("accept failed ({e}); pausing accepts for 100 ms");
                        self.last_accept_warning_ms = Some(now.ms);
                    }
                    self.accept_retry_ms = Some(now.ms + 100);
                    return;
                }
            };
            if self.conns.len() >= self.net.max_connections {
                self.counters.refused_full += 1;
                log::debug!("refusing {peer}: {}", CloseWhy::ServerFull.as_str());
                continue;
            }
            if let Err(e) = sockopt::keepalive(&stream).and_then(|_| stream.set_nodelay(true)) {
                log::debug!("socket options for {peer}: {e}");
            }
            let local = stream.local_addr().map_or(peer.ip(), |a| a.ip());
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self.generations.len() <= key {
                self.generations.resize(key + 1, 0);
            }
            self.generations[key] = self.generations[key].wrapping_add(1);
            let id = ConnId { slot: key as u32, generation: self.generations[key] };
            if let Err(e) =
                self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("cannot register {peer}: {e}");
                continue;
            }
            let mut conn = Conn::new(stream, id, peer, self.net.max_frame);
            if let Some(rate) = self.net.msg_rate {
                conn.bucket = Some((f64::from(rate) * 2.0, now.ms));
            }
            entry.insert(conn);
            self.core.on_open(id, peer.ip(), local, now);
            log::debug!("accepted {peer} as {id:?}");
        }
    }

    /// Hands finished worker jobs to the core, and wakes the connections they were for.
    fn finish_jobs(&mut self, now: Now) {
        while let Some(done) = self.workers.try_done() {
            let id = done.conn();
            self.core.on_job_done(done, now);
            if let Some(conn) = self.conns.get_mut(id.slot as usize).filter(|c| c.id == id) {
                if !conn.queued {
                    conn.queued = true;
                    self.work.push(id.slot as usize);
                }
            }
        }
    }

    fn read_and_handle(&mut self, now: Now) {
        let mut work = std::mem::take(&mut self.work);
        for &key in &work {
            self.service(key, now);
        }
        work.clear();
        self.work = work;
    }

    /// Handles the frames a connection has buffered and reads more, until it would block,
    /// its budget is spent, it waits for a job, or it is throttled.
    fn service(&mut self, key: usize, now: Now) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.queued = false;
        let id = conn.id;
        let mut budget = READ_BUDGET;
        let mut eof = false;
        loop {
            while conn.closing.is_none() && !self.core.is_busy(id) {
                if let Some(resume) = take_token(conn, self.net.msg_rate, now.ms) {
                    self.throttled.push((resume, key));
                    conn.compact();
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
                            crate::framing::FrameError::TooLarge => self.counters.frames_too_large += 1,
                            crate::framing::FrameError::NotAnObject => self.counters.frames_not_object += 1,
                        }
                        self.core.on_bad_stream(id, e);
                        conn.closing = Some(e.into());
                    }
                }
            }
            conn.compact();
            if conn.closing.is_some() || self.core.is_busy(id) || eof || !conn.readable || budget == 0 {
                break;
            }
            let len = budget.min(READ_CHUNK);
            match conn.read_some(&mut self.scratch[..len]) {
                ReadOutcome::Data(n) => {
                    budget -= n;
                    self.counters.bytes_in += n as u64;
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
        if eof && conn.closing.is_none() {
            conn.closing = Some(CloseWhy::PeerClosed);
        }
        if conn.closing.is_some() {
            self.closing.push(key);
        } else if conn.readable && budget == 0 && !self.core.is_busy(id) {
            self.carry.push(key);
        }
    }

    /// Commits the iteration's writes, then moves the core's answers into the connections'
    /// output buffers, closes what the core asked to close and hands out jobs.
    fn commit_and_queue(&mut self) {
        let (before, t) = (self.core.store().commits, Instant::now());
        self.core.commit();
        if self.core.store().commits != before {
            self.counters.commit.observe(t.elapsed());
        }
        self.queue_outbox();
    }

    /// Moves the core's outbox into the connections.
    fn queue_outbox(&mut self) {
        let out = self.core.outbox();
        for send in out.sends.drain(..) {
            let key = send.to.slot as usize;
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == send.to) else { continue };
            if conn.closing == Some(CloseWhy::SlowConsumer) {
                continue;
            }
            if !conn.queue(&out.bytes[send.range], self.net.max_output, send.delivers) {
                log::warn!("{}: {}", conn.peer, CloseWhy::SlowConsumer.as_str());
                self.counters.slow_consumers += 1;
                conn.closing = Some(CloseWhy::SlowConsumer);
                self.closing.push(key);
            } else if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
        for (id, why) in out.closes.drain(..) {
            let key = id.slot as usize;
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id) {
                if conn.closing.is_none() {
                    conn.closing = Some(why.into());
                }
                self.closing.push(key);
            }
        }
        for job in out.jobs.drain(..) {
            self.workers.submit(job);
        }
        out.clear();
    }

    /// Feeds connections that read their backlog, while their output is low, and writes it.
    /// A connection stops when its socket is full (its writable event resumes it) or when it
    /// had its per-iteration budget (the next iteration resumes it).
    fn refill(&mut self) {
        self.refill_again = false;
        self.core.catching_up(&mut self.catching_up);
        for i in 0..self.catching_up.len() {
            let id = self.catching_up[i];
            let key = id.slot as usize;
            let mut queued = 0;
            loop {
                let Some(conn) = self.conns.get(key).filter(|c| c.id == id) else {
                    self.core.catch_up(id, 0, 0);
                    break;
                };
                if conn.closing.is_some() {
                    break;
                }
                if conn.pending_output() >= self.low_water {
                    self.flush_one(key);
                    if self.conns.get(key).is_none_or(|c| c.pending_output() >= self.low_water) {
                        break;
                    }
                }
                if queued >= CATCH_UP_BUDGET {
                    self.refill_again = true;
                    break;
                }
                let before = self.conns.get(key).map_or(0, |c| c.pending_output());
                let more = self.core.catch_up(id, CATCH_UP_BATCH, self.low_water);
                self.queue_outbox();
                queued += self.conns.get(key).map_or(0, |c| c.pending_output()).saturating_sub(before);
                if !more {
                    break;
                }
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            self.flush_one(key);
        }
        // flush_one never queues anything, so the list stays empty; keep its allocation.
        dirty.clear();
        self.dirty = dirty;
    }

    /// Writes one connection's output as far as its socket takes it, and reports what that
    /// delivered.
    fn flush_one(&mut self, key: usize) {
        let now = self.tick_now;
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.dirty = false;
        let before = conn.bytes_written();
        let result = conn.flush();
        self.counters.bytes_out += conn.bytes_written() - before;
        if let Some((upto, count)) = conn.take_delivered() {
            self.core.on_written(conn.id, upto, count, now);
        }
        if let Err(e) = result {
            log::debug!("write to {}: {e}", conn.peer);
            if conn.closing.is_none() {
                conn.closing = Some(CloseWhy::WriteError);
                self.closing.push(key);
            }
        }
    }

    /// The one door out: deregisters, tells the core and frees each closing connection.
    fn reap(&mut self, now: Now) {
        for key in self.closing.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Some(why) = conn.closing else { continue };
            if why != CloseWhy::SlowConsumer {
                // Best effort: the last answer (an `invalid` before a close) gets out.
                let _ = conn.flush();
            }
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.core.on_close(conn.id, now);
            log::debug!("closed {} ({:?}): {}", conn.peer, conn.id, why.as_str());
        }
    }

    /// Stops accepting, writes what the sockets take within a short grace period, and
    /// closes every connection. The store was committed by the last iteration.
    fn shutdown(&mut self) {
        let now = self.now();
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            let mut pending = false;
            for (_, conn) in self.conns.iter_mut() {
                if conn.pending_output() > 0 && conn.flush().is_ok() && conn.pending_output() > 0 {
                    pending = true;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !pending || left.is_zero() {
                break;
            }
            let _ = self.poll.poll(&mut self.events, Some(left.min(Duration::from_millis(50))));
        }
        // Record what the last writes delivered, and store it with everything else.
        for (_, conn) in self.conns.iter_mut() {
            if let Some((upto, count)) = conn.take_delivered() {
                self.core.on_written(conn.id, upto, count, now);
            }
        }
        self.core.persist_all();
        self.core.commit().clear();
        let n = self.conns.len();
        for (_, conn) in self.conns.iter_mut() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        let store = self.core.store();
        log::info!(
            "stopped; closed {n} connections; stored {} messages in {} commits",
            store.messages_committed,
            store.commits
        );
    }
}

/// Takes one frame token under `--msg-rate`; `Some(resume_ms)` when the bucket is empty.
fn take_token(conn: &mut Conn, rate: Option<u32>, now_ms: u64) -> Option<u64> {
    let (rate, (tokens, last)) = (f64::from(rate?), conn.bucket.as_mut()?);
    *tokens = (*tokens + (now_ms.saturating_sub(*last)) as f64 * rate / 1000.0).min(rate * 2.0);
    *last = now_ms;
    if *tokens < 1.0 {
        return Some(now_ms + ((1.0 - *tokens) * 1000.0 / rate).ceil() as u64);
    }
    *tokens -= 1.0;
    None
}

/// Gives back the token taken for a frame that turned out not to be there yet.
fn refund_token(conn: &mut Conn) {
    if let Some((tokens, _)) = conn.bucket.as_mut() {
        *tokens += 1.0;
    }
}
