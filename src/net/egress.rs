//! The loop's way out: committing, moving the core's answers into output buffers, writing
//! them, feeding backlogs, and closing (the "commit", "flush", "refill" and "reap" phases).
//!
//! Nothing is written before the commit of the iteration; a connection closes only here,
//! in `reap`, the one door out.

use super::conn::CloseWhy;
use super::event_loop::{EventLoop, CATCH_UP_BATCH, CATCH_UP_BUDGET};
use crate::chat::Now;
use std::time::Instant;

impl EventLoop {
    /// Commits the iteration's writes, then moves the core's answers into the connections'
    /// output buffers, closes what the core asked to close and hands out jobs.
    pub(super) fn commit_and_queue(&mut self) {
        let (before, t) = (self.core.store().commits, Instant::now());
        self.core.commit();
        if self.core.store().commits != before {
            self.metrics.counters.commit.observe(t.elapsed());
        }
        self.queue_outbox();
    }

    /// Moves the core's outbox into the connections.
    pub(super) fn queue_outbox(&mut self) {
        let out = self.core.sendable();
        for send in out.sends.drain(..) {
            let key = send.to.slot as usize;
            let Some(conn) = self.conns.live(send.to) else { continue };
            if conn.closing == Some(CloseWhy::SlowConsumer) {
                continue;
            }
            if let Some(added) = conn.queue(&out.bytes[send.range], self.net.max_output, send.delivers) {
                self.output.queued(added);
                self.conns.mark_dirty(key);
            } else {
                log::warn!("{}: {}", conn.peer, CloseWhy::SlowConsumer.as_str());
                self.metrics.counters.slow_consumers += 1;
                conn.closing = Some(CloseWhy::SlowConsumer);
                self.conns.closing.push(key);
            }
        }
        for (id, why) in out.closes.drain(..) {
            if self.conns.is_live(id) {
                self.conns.close(id.slot as usize, why.into());
            }
        }
        for job in out.jobs.drain(..) {
            self.workers.submit(job);
        }
        let arena = out.bytes.capacity();
        out.clear();
        self.output.arena_released(arena.saturating_sub(out.bytes.capacity()));
    }

    /// Feeds connections that read their backlog, while their output is low, and writes it.
    /// A connection stops when its socket is full (its writable event resumes it) or when it
    /// had its per-iteration budget (the next iteration resumes it).
    pub(super) fn refill(&mut self) {
        self.catch_up.again = false;
        self.core.catching_up(&mut self.catch_up.ids);
        for i in 0..self.catch_up.ids.len() {
            let id = self.catch_up.ids[i];
            let key = id.slot as usize;
            let mut queued = 0;
            loop {
                let Some(conn) = self.conns.live(id) else {
                    self.core.catch_up(id, 0, 0);
                    break;
                };
                if conn.closing.is_some() {
                    break;
                }
                if conn.pending_output() >= self.catch_up.low_water {
                    self.flush_one(key);
                    if self.conns.get(key).is_none_or(|c| c.pending_output() >= self.catch_up.low_water) {
                        break;
                    }
                }
                if queued >= CATCH_UP_BUDGET {
                    self.catch_up.again = true;
                    break;
                }
                let before = self.conns.get(key).map_or(0, |c| c.pending_output());
                let max_bytes = self.catch_up.low_water.min(CATCH_UP_BUDGET);
                let more = self.core.catch_up(id, CATCH_UP_BATCH, max_bytes);
                self.queue_outbox();
                let added = self.conns.get(key).map_or(0, |c| c.pending_output()).saturating_sub(before);
                queued += added;
                if more && added == 0 {
                    // Nothing came of it (a read failed, or every message was skipped):
                    // the next iteration tries again, instead of this one for ever.
                    self.catch_up.again = true;
                    break;
                }
                if !more {
                    // A long answer's end lets its connection's waiting requests be read
                    // (readiness will not fire again for bytes already there).
                    self.resume.next_iteration(key);
                    break;
                }
            }
        }
        self.flush();
    }

    pub(super) fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.conns.dirty);
        for &key in &dirty {
            self.flush_one(key);
        }
        // flush_one never queues anything, so the list stays empty; keep its allocation.
        dirty.clear();
        self.conns.dirty = dirty;
    }

    /// Writes one connection's output as far as its socket takes it, and reports what that
    /// delivered.
    pub(super) fn flush_one(&mut self, key: usize) {
        let now = self.clock.now;
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.dirty = false;
        let (before, capacity) = (conn.bytes_written(), conn.output_capacity());
        let result = conn.flush();
        let written = conn.bytes_written() - before;
        self.metrics.counters.bytes_out += written;
        self.output.written(written as usize, capacity.saturating_sub(conn.output_capacity()));
        if conn.paused && !self.output.must_pause(conn.pending_output()) {
            conn.paused = false;
            if conn.closing.is_none() {
                // Its frames wait in the input buffer or the socket: handle them next.
                self.resume.next_iteration(key);
            }
        }
        if let Some((upto, count)) = conn.take_delivered() {
            self.core.on_written(conn.id, upto, count, now);
        }
        if let Err(e) = result {
            log::debug!("write to {}: {e}", conn.peer);
            if conn.closing.is_none() {
                self.conns.close(key, CloseWhy::WriteError);
            }
        } else if conn.linger && conn.pending_output() == 0 && conn.closing.is_none() {
            self.conns.close(key, CloseWhy::Answered("answered"));
        }
    }

    /// Keeps the unsent output of all connections under `--max-output-total`: when the
    /// flush left more, the connections holding the most are marked for closing as slow
    /// consumers until what the others hold is under it. Readers that keep up hold almost
    /// nothing after a flush, so this picks the ones that stopped reading.
    pub(super) fn bound_output_total(&mut self) {
        let mut excess = self.output.excess();
        if excess == 0 {
            return;
        }
        let mut holders: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_none() && c.pending_output() > 0)
            .map(|(k, c)| (c.pending_output(), k))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        for (pending, key) in holders {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(pending);
            if let Some(conn) = self.conns.get_mut(key) {
                log::warn!("{}: {}", conn.peer, CloseWhy::OutputTotal.as_str());
                conn.closing = Some(CloseWhy::OutputTotal);
                self.conns.closing.push(key);
                self.metrics.counters.slow_consumers += 1;
            }
        }
    }

    /// The one door out: deregisters, tells the core and frees each closing connection.
    pub(super) fn reap(&mut self, now: Now) {
        let mut closing = std::mem::take(&mut self.conns.closing);
        for key in closing.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Some(why) = conn.closing else { continue };
            if !matches!(why, CloseWhy::SlowConsumer | CloseWhy::OutputTotal) {
                // Best effort: the last answer (an `invalid` before a close, a TLS alert or
                // close_notify) gets out.
                if why != CloseWhy::Tls {
                    conn.say_goodbye();
                }
                let _ = conn.flush();
            }
            let Some(mut conn) = self.conns.remove(key) else { continue };
            self.output.dropped(conn.pending_output(), conn.output_capacity());
            let _ = self.poller.poll.registry().deregister(&mut conn.stream);
            self.core.on_close(conn.id, now);
            log::debug!("closed {} ({:?}): {}", conn.peer, conn.id, why.as_str());
        }
        // Closing a connection marks no other (on_close only queues answers), so the list
        // is still empty; keep its allocation.
        self.conns.closing = closing;
    }
}
