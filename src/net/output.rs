//! What the loop holds of answers not yet written, and the bounds on it (PROTOCOL.md
//! section 10): the pause mark per connection, the answers built per iteration, the unsent
//! output of all connections together, and giving freed memory back.
//!
//! The loop reports every change of what connections hold (queued, written, dropped with a
//! closed connection); this keeps the total, so nothing ever sums over the connections but
//! the rare pass that picks the biggest holders to cut. Never touches sockets.

use super::memory::Trimmer;
use crate::config::NetLimits;

/// A connection's requests are not read or handled while its unsent output is at or above
/// its pause mark: half of `--max-output`, at most this. So pipelined requests for big
/// answers (`history`, `users`) cannot pile answers up: one connection holds at most the
/// mark plus one answer, and that answer is held to `--max-output`.
const PAUSE_MARK_MAX: usize = 1 << 20;
/// Answers built in one iteration before the remaining connections wait for the next one:
/// a quarter of `--max-output-total`, at most this. Answers are built before they are
/// queued, so without it forty big answers requested at once would all be in memory
/// together, whatever the caps on what is queued.
const ARENA_LIMIT_MAX: usize = 16 << 20;

pub struct OutputBudget {
    pause_mark: usize,
    arena_limit: usize,
    max_total: usize,
    /// Unsent output of every connection together (bytes queued and not yet written).
    unsent: usize,
    trimmer: Trimmer,
}

impl OutputBudget {
    pub fn new(net: &NetLimits) -> OutputBudget {
        OutputBudget {
            pause_mark: (net.max_output / 2).clamp(1, PAUSE_MARK_MAX),
            arena_limit: (net.max_output_total / 4).clamp(1, ARENA_LIMIT_MAX),
            max_total: net.max_output_total,
            unsent: 0,
            trimmer: Trimmer::default(),
        }
    }

    /// Whether a connection holding `pending` unsent bytes (its answers of this iteration
    /// included) must stop being read and handled.
    pub fn must_pause(&self, pending: usize) -> bool {
        pending >= self.pause_mark
    }

    /// Whether the iteration has built enough answers (`built` bytes) for now.
    pub fn arena_full(&self, built: usize) -> bool {
        built >= self.arena_limit
    }

    /// `bytes` were queued for a connection.
    pub fn queued(&mut self, bytes: usize) {
        self.unsent += bytes;
    }

    /// A connection wrote `bytes`, and its buffer gave back `freed` bytes of capacity.
    pub fn written(&mut self, bytes: usize, freed: usize) {
        self.unsent -= bytes;
        self.trimmer.released(freed);
    }

    /// A connection went with `pending` unsent bytes in a buffer of `capacity`.
    pub fn dropped(&mut self, pending: usize, capacity: usize) {
        self.unsent -= pending;
        self.trimmer.released(capacity);
    }

    /// The answers' arena gave back `freed` bytes of capacity.
    pub fn arena_released(&mut self, freed: usize) {
        self.trimmer.released(freed);
    }

    /// Unsent bytes of all connections.
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// How much more than `--max-output-total` is held (0 when under it).
    pub fn excess(&self) -> usize {
        self.unsent.saturating_sub(self.max_total)
    }

    /// Once per iteration: returns freed memory to the system when it is worth it.
    pub fn maybe_trim(&mut self, now_ms: u64) {
        self.trimmer.maybe_trim(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marks_follow_the_limits_and_the_total_follows_the_reports() {
        let net = NetLimits { max_output: 8 << 20, max_output_total: 32 << 20, ..NetLimits::default() };
        let mut b = OutputBudget::new(&net);
        assert!(!b.must_pause((1 << 20) - 1) && b.must_pause(1 << 20), "half of 8 MiB, at most 1 MiB");
        assert!(!b.arena_full((8 << 20) - 1) && b.arena_full(8 << 20), "a quarter of the total");
        b.queued(40 << 20);
        assert_eq!(b.excess(), 8 << 20);
        b.written(5 << 20, 0);
        b.dropped(3 << 20, 4 << 20);
        assert_eq!((b.unsent(), b.excess()), (32 << 20, 0));
        let small = NetLimits { max_output: 64 * 1024, ..NetLimits::default() };
        let small = OutputBudget::new(&small);
        assert!(!small.must_pause(32 * 1024 - 1) && small.must_pause(32 * 1024), "half of a small --max-output");
    }
}
