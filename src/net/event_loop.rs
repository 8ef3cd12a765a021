//! The event loop: one mio `Poll` that owns the listener, every TCP connection, the UDP
//! relay socket, the worker waker and the signal pipe.
//!
//! One iteration ([`EventLoop::tick`]) runs named phases in data-flow order:
//! poll, read the clock once, accept and note readiness, take finished jobs, read and
//! handle frames, run due timers, commit the store and queue the answers, flush, reap.
//! Answers are only written in the flush phase, after the commit, so no answer that
//! depends on a write ever leaves before the write is durable.
//!
//! Readiness is edge-triggered: a readable connection is read until `WouldBlock`, a short
//! read, or its per-iteration budget is spent, in which case it keeps its `readable` flag
//! and is carried to the next iteration (with a zero poll timeout), because no new event
//! will come for bytes already waiting. Closing is a mark: the reap phase is the one door out.

use super::conn::Conn;
use super::metrics::{self, MetricsServer, NetCounters};
use super::output::OutputBudget;
use super::relay_socket::RelaySocket;
use super::resume::Resume;
use super::signals::Signals;
use super::worker::Workers;
use crate::chat::{ConnId, Core, Now};
use crate::config::NetLimits;
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use slab::Slab;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const UDP: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);
pub const SIGNAL: Token = Token(usize::MAX - 4);
pub const METRICS: Token = Token(usize::MAX - 5);

/// Bytes per `read` call.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per iteration before others get their turn.
pub(super) const READ_BUDGET: usize = 256 * 1024;
/// Backlog messages read from the store per batch.
pub(super) const CATCH_UP_BATCH: usize = 2048;
/// A connection catching up gets more backlog only while its unsent output is below a low
/// water mark: a quarter of `--max-output`, at most this. Each batch adds at most as much
/// again, so a large backlog is paced by the socket and never reaches the output cap.
const CATCH_UP_LOW_WATER_MAX: usize = 1 << 20;
/// Backlog bytes one connection gets per iteration before others get their turn.
pub(super) const CATCH_UP_BUDGET: usize = 4 << 20;
/// How long shutdown waits for sockets to take the last answers.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// One poll event, copied out of mio's buffer so the handlers can borrow the loop.
#[derive(Clone, Copy)]
pub(super) struct Readiness {
    token: Token,
    readable: bool,
    /// The peer closed its side or the socket has an error: read to the end, whatever a
    /// short read suggests, since that was the last edge this socket will give.
    hung_up: bool,
    writable: bool,
}

pub struct EventLoop {
    pub(super) poll: Poll,
    pub(super) events: Events,
    pub(super) ready: Vec<Readiness>,
    pub(super) listener: Option<TcpListener>,
    pub(super) relay: RelaySocket,
    pub(super) conns: Slab<Conn>,
    pub(super) generations: Vec<u32>,
    pub(super) core: Core,
    pub(super) workers: Workers,
    pub(super) signals: Signals,
    pub(super) net: NetLimits,
    pub(super) start: Instant,
    pub(super) scratch: Vec<u8>,
    /// Connections to read and handle this iteration.
    pub(super) work: Vec<usize>,
    /// When to come back to connections and to accepting without a readiness event.
    pub(super) resume: Resume,
    /// Scratch list of the connections `resume` says are due.
    due: Vec<usize>,
    /// Connections with output to write.
    pub(super) dirty: Vec<usize>,
    /// Connections marked for closing.
    pub(super) closing: Vec<usize>,
    /// Scratch list of connections reading their backlog.
    pub(super) catching_up: Vec<ConnId>,
    /// See [`CATCH_UP_LOW_WATER_MAX`].
    pub(super) low_water: usize,
    /// What connections hold of answers not yet written, and its bounds.
    pub(super) output: OutputBudget,
    /// A backlog stopped on its per-iteration budget, not on a full socket: go on without
    /// sleeping (no writable event will come for a socket that never filled).
    pub(super) refill_again: bool,
    pub(super) last_accept_warning_ms: Option<u64>,
    pub(super) stopping: bool,
    /// The clock as read at the start of this iteration.
    pub(super) tick_now: Now,
    pub(super) metrics: Option<MetricsServer>,
    pub(super) counters: NetCounters,
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
        let output = OutputBudget::new(&net);
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
            resume: Resume::default(),
            due: Vec::new(),
            dirty: Vec::new(),
            closing: Vec::new(),
            catching_up: Vec::new(),
            low_water,
            output,
            refill_again: false,
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
        self.bound_output_total();
        self.reap(now);
        self.output.maybe_trim(now.ms);
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
            let hung_up = e.is_read_closed() || e.is_error();
            self.ready.push(Readiness {
                token: e.token(),
                readable: e.is_readable() || hung_up,
                hung_up,
                writable: e.is_writable() || e.is_write_closed(),
            });
        }
        Ok(())
    }

    /// Zero when work is carried over; else until the next deadline of the core, of a
    /// throttled connection or of an accept retry; else forever.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.resume.has_work_now() || self.relay.readable || self.refill_again || self.core.has_output() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.core.next_deadline(),
            self.resume.next_deadline(),
            self.metrics.as_ref().and_then(MetricsServer::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()?;
        let now = self.start.elapsed().as_millis() as u64;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    fn handle_events(&mut self, now: Now) {
        for i in 0..self.ready.len() {
            let Readiness { token, readable, hung_up, writable } = self.ready[i];
            match token {
                LISTENER => self.accept(now),
                UDP => self.relay.readable = true,
                WAKER => {}
                METRICS => {
                    if let Some(m) = self.metrics.as_mut() {
                        m.accept(self.poll.registry(), now.ms);
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
                    self.counters.unsent_bytes = self.output.unsent() as u64;
                    if let Some(m) = self.metrics.as_mut() {
                        m.on_ready(token, self.poll.registry(), &mut self.core, &self.counters);
                    }
                }
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if writable && !conn.dirty {
                        conn.dirty = true;
                        self.dirty.push(key);
                    }
                    conn.hung_up |= hung_up;
                    if readable {
                        conn.readable = true;
                        self.schedule(key);
                    }
                }
            }
        }
        let mut due = std::mem::take(&mut self.due);
        let accept = self.resume.due(now.ms, &mut due);
        for key in due.drain(..) {
            self.schedule(key);
        }
        self.due = due;
        if accept {
            self.accept(now);
        }
        if let Some(m) = self.metrics.as_mut() {
            m.expire(now.ms, self.poll.registry());
        }
    }

    /// Hands finished worker jobs to the core, and wakes the connections they were for.
    fn finish_jobs(&mut self, now: Now) {
        while let Some(done) = self.workers.try_done() {
            let id = done.conn();
            self.core.on_job_done(done, now);
            if self.conns.get(id.slot as usize).is_some_and(|c| c.id == id) {
                self.schedule(id.slot as usize);
            }
        }
    }

    /// Puts a connection on this iteration's work list, once.
    fn schedule(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.queued {
                conn.queued = true;
                self.work.push(key);
            }
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
        // Record what the last writes delivered, then close every connection through the
        // core as any other close goes (calls in progress end and are stored as ended),
        // and store it all with everything else.
        for (_, conn) in self.conns.iter_mut() {
            if let Some((upto, count)) = conn.take_delivered() {
                self.core.on_written(conn.id, upto, count, now);
            }
        }
        for (_, conn) in self.conns.iter() {
            self.core.on_close(conn.id, now);
        }
        self.core.persist_all();
        self.core.commit().clear();
        let n = self.conns.len();
        for (_, conn) in self.conns.iter_mut() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        let store = self.core.store();
        log::info!(
            "stopped; closed {n} connections; stored {} messages in {} commits; saw other processes' commits {} times",
            store.messages_committed,
            store.commits,
            store.external_changes
        );
    }
}
