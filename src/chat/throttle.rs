//! Sliding-window counters: at most `limit` events per key in any `window_ms`.
//!
//! Used for failed logins (per name, per IP address) and OTP mails (per address). Each key
//! keeps the times of its last `limit` events only, so memory per key is bounded; keys whose
//! events have all aged out are dropped by [`Throttle::sweep`], which the core runs once a
//! minute, so memory overall is bounded by the event rate times the window.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub struct Throttle<K> {
    window_ms: u64,
    limit: u32,
    events: HashMap<K, VecDeque<u64>>,
}

impl<K: Hash + Eq> Throttle<K> {
    pub fn new(window_ms: u64, limit: u32) -> Self {
        Throttle { window_ms, limit, events: HashMap::new() }
    }

    /// `Some(ms until an event is allowed again)` when `key` has used up its window.
    pub fn blocked(&self, key: &K, now_ms: u64) -> Option<u64> {
        let times = self.events.get(key)?;
        let in_window = times.iter().filter(|&&t| t + self.window_ms > now_ms).count();
        if in_window < self.limit as usize {
            return None;
        }
        // The window frees up when the oldest of the last `limit` events ages out.
        let oldest = times[times.len() - self.limit as usize];
        Some((oldest + self.window_ms).saturating_sub(now_ms).max(1))
    }

    /// Counts one event for `key`.
    pub fn record(&mut self, key: K, now_ms: u64) {
        let times = self.events.entry(key).or_default();
        times.push_back(now_ms);
        while times.len() > self.limit.max(1) as usize {
            times.pop_front();
        }
    }

    /// Forgets `key`'s events (a successful login clears its name's failures).
    pub fn clear(&mut self, key: &K) {
        self.events.remove(key);
    }

    /// Drops keys whose last event has left the window.
    pub fn sweep(&mut self, now_ms: u64) {
        let w = self.window_ms;
        self.events.retain(|_, t| t.back().is_some_and(|&last| last + w > now_ms));
    }

    /// Number of keys remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_until_the_oldest_ages_out() {
        let mut t = Throttle::new(60_000, 3);
        for at in [0, 10_000, 20_000] {
            assert_eq!(t.blocked(&"a", at), None);
            t.record("a", at);
        }
        assert_eq!(t.blocked(&"a", 30_000), Some(30_000));
        assert_eq!(t.blocked(&"b", 30_000), None);
        assert_eq!(t.blocked(&"a", 60_000), None);
    }

    #[test]
    fn clear_and_sweep_forget() {
        let mut t = Throttle::new(1_000, 1);
        t.record("a", 0);
        t.record("b", 900);
        t.clear(&"a");
        assert_eq!(t.blocked(&"a", 10), None);
        t.sweep(1_500);
        assert_eq!(t.len(), 1);
        t.sweep(1_900);
        assert_eq!(t.len(), 0);
    }
}
