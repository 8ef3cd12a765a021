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

use super::connections::Connections;
use super::listener::Listener;
use super::metrics::{self, MetricsServer, NetCounters};
use super::output::OutputBudget;
use super::relay_socket::RelaySocket;
use super::resume::Resume;
use super::signals::Signals;
use super::worker::Workers;
use crate::chat::{ConnId, Core, Now};
use crate::config::NetLimits;
use mio::{Events, Poll, Token};
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
/// Finished worker jobs taken per iteration: a thousand logins whose hashes finish together
/// would otherwise be answered in one iteration (each a friends list, a presence burst and
/// a catch-up), holding every other connection's messages for tens of milliseconds.
const JOBS_PER_ITERATION: usize = 32;
/// Backlog messages read from the store per batch.
pub(super) const CATCH_UP_BATCH: usize = 2048;
/// A connection catching up gets more backlog only while its unsent output is below a low
/// water mark: a quarter of `--max-output`, at most this. Each batch adds at most as much
/// again, so a large backlog is paced by the socket and never reaches the output cap.
const CATCH_UP_LOW_WATER_MAX: usize = 1 << 20;
/// Backlog bytes (or bytes of a long answer such as `users`) one connection gets per
/// iteration before others get their turn: reading and encoding them is the loop's stall
/// for everyone else. At 4 MiB a `users` over 100,000 accounts held a bystander's ping for
/// 34 ms; at 256 KiB, about 2 ms, with the same total time.
pub(super) const CATCH_UP_BUDGET: usize = 256 << 10;
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

/// The poll and what its last wait reported.
pub(super) struct Poller {
    pub poll: Poll,
    events: Events,
    pub ready: Vec<Readiness>,
}

/// The loop's clock: read once per iteration.
pub(super) struct Clock {
    pub start: Instant,
    /// The clock as read at the start of this iteration.
    pub now: Now,
}

/// The metrics endpoint, if configured, and what the loop counts for it.
pub(super) struct Metrics {
    pub server: Option<MetricsServer>,
    pub counters: NetCounters,
}

/// The state of the refill phase: connections reading their backlog (egress.rs).
pub(super) struct CatchUp {
    /// Scratch list of the connections catching up.
    pub ids: Vec<ConnId>,
    /// See [`CATCH_UP_LOW_WATER_MAX`].
    pub low_water: usize,
    /// A backlog stopped on its per-iteration budget, not on a full socket: go on without
    /// sleeping (no writable event will come for a socket that never filled).
    pub again: bool,
}

/// The loop's state, grouped by owner: the poll, the listening socket, the connections
/// and their lists, the relay socket, the worker threads, the signal pipe, the metrics,
/// the loop's own deadlines, the output budget and the catch-up phase; and the chat core.
pub struct EventLoop {
    pub(super) poller: Poller,
    pub(super) listener: Listener,
    pub(super) conns: Connections,
    pub(super) relay: RelaySocket,
    pub(super) workers: Workers,
    signals: Signals,
    pub(super) metrics: Metrics,
    /// When to come back to connections and to accepting without a readiness event.
    pub(super) resume: Resume,
    /// What connections hold of answers not yet written, and its bounds.
    pub(super) output: OutputBudget,
    pub(super) catch_up: CatchUp,
    pub(super) clock: Clock,
    pub(super) core: Core,
    pub(super) net: NetLimits,
    /// Read buffer shared by every connection.
    pub(super) scratch: Vec<u8>,
    stopping: bool,
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        poll: Poll,
        listener: Listener,
        relay: RelaySocket,
        core: Core,
        workers: Workers,
        signals: Signals,
        net: NetLimits,
        metrics: Option<MetricsServer>,
        start: Instant,
    ) -> EventLoop {
        let low_water = (net.max_output / 4).clamp(1, CATCH_UP_LOW_WATER_MAX);
        EventLoop {
            poller: Poller { poll, events: Events::with_capacity(1024), ready: Vec::with_capacity(1024) },
            listener,
            conns: Connections::default(),
            relay,
            workers,
            signals,
            metrics: Metrics { server: metrics, counters: NetCounters::default() },
            resume: Resume::default(),
            output: OutputBudget::new(&net),
            catch_up: CatchUp { ids: Vec::new(), low_water, again: false },
            clock: Clock { start, now: Now { ms: 0, unix: 0 } },
            core,
            net,
            scratch: vec![0; READ_CHUNK],
            stopping: false,
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
        self.clock.now = now;
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
        self.metrics.counters.iteration.observe(started.elapsed());
        Ok(())
    }

    fn now(&self) -> Now {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        Now { ms: self.clock.start.elapsed().as_millis() as u64, unix }
    }

    fn poll_events(&mut self) -> io::Result<()> {
        let timeout = self.poll_timeout();
        match self.poller.poll.poll(&mut self.poller.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.poller.ready.clear();
        for e in self.poller.events.iter() {
            let hung_up = e.is_read_closed() || e.is_error();
            self.poller.ready.push(Readiness {
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
        if self.resume.has_work_now()
            || self.relay.readable
            || self.catch_up.again
            || self.core.has_output()
            || self.workers.more
        {
            return Some(Duration::ZERO);
        }
        let next = [
            self.core.next_deadline(),
            self.resume.next_deadline(),
            self.metrics.server.as_ref().and_then(MetricsServer::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()?;
        let now = self.clock.start.elapsed().as_millis() as u64;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    fn handle_events(&mut self, now: Now) {
        for i in 0..self.poller.ready.len() {
            let Readiness { token, readable, hung_up, writable } = self.poller.ready[i];
            match token {
                LISTENER => self.accept(now),
                UDP => self.relay.readable = true,
                WAKER => {}
                METRICS => {
                    if let Some(m) = self.metrics.server.as_mut() {
                        m.accept(self.poller.poll.registry(), now.ms);
                    }
                }
                SIGNAL => {
                    let got = self.signals.drain();
                    if got.reload {
                        self.listener.reload_tls();
                    }
                    if got.stop {
                        log::info!("signal received: shutting down");
                        self.stopping = true;
                    }
                }
                // Scrape connections: below the fixed tokens above, above every chat connection.
                Token(t) if (metrics::BASE..METRICS.0).contains(&t) => {
                    self.metrics.counters.relay_send_dropped = self.relay.send_dropped;
                    self.metrics.counters.unsent_bytes = self.output.unsent() as u64;
                    if let Some(m) = self.metrics.server.as_mut() {
                        let conns = &self.conns;
                        let registry = self.poller.poll.registry();
                        m.on_ready(token, registry, &mut self.core, &mut self.metrics.counters, || {
                            conns.count_by_transport()
                        });
                    }
                }
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    conn.hung_up |= hung_up;
                    conn.readable |= readable;
                    if writable {
                        self.conns.mark_dirty(key);
                    }
                    if readable {
                        self.conns.schedule(key);
                    }
                }
            }
        }
        let conns = &mut self.conns;
        let accept = self.resume.due(now.ms, |key| conns.schedule(key));
        if accept {
            self.accept(now);
        }
        if let Some(m) = self.metrics.server.as_mut() {
            m.expire(now.ms, self.poller.poll.registry());
        }
    }

    /// Hands finished worker jobs to the core, and wakes the connections they were for.
    fn finish_jobs(&mut self, now: Now) {
        self.workers.more = false;
        for _ in 0..JOBS_PER_ITERATION {
            let Some(done) = self.workers.try_done() else { return };
            let id = done.conn();
            self.core.on_job_done(done, now);
            if self.conns.is_live(id) {
                self.conns.schedule(id.slot as usize);
            }
        }
        self.workers.more = true;
    }

    /// Stops accepting, writes what the sockets take within a short grace period, and
    /// closes every connection. The store was committed by the last iteration.
    fn shutdown(&mut self) {
        let now = self.now();
        if let Some(mut l) = self.listener.socket.take() {
            let _ = self.poller.poll.registry().deregister(&mut l);
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
            let _ = self.poller.poll.poll(&mut self.poller.events, Some(left.min(Duration::from_millis(50))));
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
