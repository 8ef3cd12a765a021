//! A hashed timer wheel: every deadline the server keeps (anonymous timeouts, OTP expiry,
//! call ringing, relay silence) lives here.
//!
//! Time is a number of milliseconds passed in by the caller; the wheel never reads a clock.
//! It is cut into ticks of `slot_ms`; a deadline belongs to the first tick that ends at or
//! after it, and that tick hashes to one of `slots` buckets. Each bucket is a doubly linked
//! list threaded through one slab of entries, so insert and cancel are O(1) and nothing is
//! allocated per timer once the slab has grown. A deadline further away than one turn of the
//! wheel waits in its bucket and is skipped (by its absolute tick) until its turn comes.
//!
//! Deadlines fire late by at most one tick, never early. A bitmap of non-empty buckets lets
//! [`TimerWheel::next_due`] find the next bucket to visit without walking empty ones; a
//! bucket holding only far-future entries costs one spurious wake-up per turn.

use slab::Slab;

/// A handle to a scheduled deadline. Stale handles (the timer fired or was cancelled, the
/// slot reused) are recognised by their generation and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: u32,
    generation: u32,
}

struct Entry<T> {
    tick: u64,
    generation: u32,
    prev: Option<u32>,
    next: Option<u32>,
    value: T,
}

/// Deadlines carrying a value of type `T`, expired in tick order.
pub struct TimerWheel<T> {
    slot_ms: u64,
    heads: Vec<Option<u32>>,
    occupied: Vec<u64>,
    entries: Slab<Entry<T>>,
    /// The first tick not yet expired.
    cursor: u64,
    next_generation: u32,
}

impl<T> TimerWheel<T> {
    /// A wheel of `slots` buckets (rounded up to a multiple of 64) of `slot_ms` each.
    pub fn new(slot_ms: u64, slots: usize) -> Self {
        let slots = slots.max(64).next_multiple_of(64);
        TimerWheel {
            slot_ms: slot_ms.max(1),
            heads: vec![None; slots],
            occupied: vec![0; slots / 64],
            entries: Slab::new(),
            cursor: 0,
            next_generation: 0,
        }
    }

    /// Number of pending deadlines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Schedules `value` to be returned by the first [`expire`](Self::expire) whose `now` is
    /// at or past `deadline_ms`. A deadline already past fires at the next expire.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerId {
        let tick = deadline_ms.div_ceil(self.slot_ms).max(self.cursor);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let bucket = self.bucket(tick);
        let head = self.heads[bucket];
        let key = self.entries.insert(Entry { tick, generation, prev: None, next: head, value });
        let key = key as u32;
        if let Some(h) = head {
            self.entries[h as usize].prev = Some(key);
        }
        self.heads[bucket] = Some(key);
        self.occupied[bucket / 64] |= 1 << (bucket % 64);
        TimerId { key, generation }
    }

    /// Removes a pending deadline and returns its value; `None` when it already fired or
    /// was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        match self.entries.get(id.key as usize) {
            Some(e) if e.generation == id.generation => Some(self.unlink(id.key)),
            _ => None,
        }
    }

    /// Moves every deadline at or before `now_ms` into `out`, earliest tick first.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<T>) {
        let now_tick = now_ms / self.slot_ms;
        if now_tick < self.cursor {
            return;
        }
        let turns = (now_tick - self.cursor + 1).min(self.heads.len() as u64);
        for step in 0..turns {
            let bucket = self.bucket(self.cursor + step);
            let mut cur = self.heads[bucket];
            while let Some(key) = cur {
                let e = &self.entries[key as usize];
                cur = e.next;
                if e.tick <= now_tick {
                    out.push(self.unlink(key));
                }
            }
        }
        self.cursor = now_tick + 1;
    }

    /// The time in ms at which the next non-empty bucket is due, for the poll timeout.
    /// `None` when nothing is pending.
    pub fn next_due(&self) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        let n = self.heads.len();
        let start = self.bucket(self.cursor);
        let mut k = 0;
        while k < n {
            let b = (start + k) % n;
            let word = self.occupied[b / 64] >> (b % 64);
            if word != 0 {
                let distance = k + word.trailing_zeros() as usize;
                return Some((self.cursor + distance as u64) * self.slot_ms);
            }
            // Skip the rest of this word of the bitmap at once.
            k += 64 - b % 64;
        }
        None
    }

    fn bucket(&self, tick: u64) -> usize {
        (tick % self.heads.len() as u64) as usize
    }

    fn unlink(&mut self, key: u32) -> T {
        let e = self.entries.remove(key as usize);
        match e.prev {
            Some(p) => self.entries[p as usize].next = e.next,
            None => {
                let bucket = self.bucket(e.tick);
                self.heads[bucket] = e.next;
                if e.next.is_none() {
                    self.occupied[bucket / 64] &= !(1 << (bucket % 64));
                }
            }
        }
        if let Some(n) = e.next {
            self.entries[n as usize].prev = e.prev;
        }
        e.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expire(w: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.expire(now, &mut out);
        out
    }

    #[test]
    fn fires_at_its_deadline_not_before() {
        let mut w = TimerWheel::new(10, 64);
        w.insert(105, 1);
        assert!(expire(&mut w, 104).is_empty());
        assert!(expire(&mut w, 109).is_empty());
        assert_eq!(expire(&mut w, 110), vec![1]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancelled_timers_never_fire_and_stale_ids_are_ignored() {
        let mut w = TimerWheel::new(10, 64);
        let a = w.insert(50, 1);
        let b = w.insert(50, 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        let c = w.insert(50, 3); // likely reuses a's slab key
        assert_eq!(w.cancel(a), None);
        assert_eq!(expire(&mut w, 60), vec![3, 2]);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(c), None);
    }

    #[test]
    fn deadlines_beyond_one_turn_wait_for_their_turn() {
        let mut w = TimerWheel::new(10, 64); // one turn is 640 ms
        w.insert(100 + 640 * 3, 7);
        w.insert(100, 8);
        assert_eq!(expire(&mut w, 100), vec![8]);
        for t in (110..2020).step_by(10) {
            assert!(expire(&mut w, t).is_empty(), "fired early at {t}");
        }
        assert_eq!(expire(&mut w, 2020), vec![7]);
    }

    #[test]
    fn a_long_jump_in_time_fires_everything_due() {
        let mut w = TimerWheel::new(10, 64);
        for i in 0..200 {
            w.insert(i * 37, i as u32);
        }
        let mut got = expire(&mut w, 1_000_000);
        got.sort();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn next_due_points_at_the_first_occupied_bucket() {
        let mut w: TimerWheel<u32> = TimerWheel::new(10, 64);
        assert_eq!(w.next_due(), None);
        w.insert(255, 1);
        assert_eq!(w.next_due(), Some(260));
        let id = w.insert(31, 2);
        assert_eq!(w.next_due(), Some(40));
        w.cancel(id);
        assert_eq!(w.next_due(), Some(260));
    }

    #[test]
    fn past_deadlines_fire_at_the_next_expire() {
        let mut w = TimerWheel::new(10, 64);
        expire(&mut w, 500);
        w.insert(20, 1);
        assert!(w.next_due().unwrap() <= 510);
        assert_eq!(expire(&mut w, 510), vec![1]);
    }

    /// One step of [`inserts_cancels_and_expires_interleaved_match_a_model`].
    #[derive(Debug, Clone)]
    enum Op {
        /// An entry due this long after the current time.
        Insert(u64),
        /// Cancels the n-th entry inserted so far (modulo their number), if still there.
        Cancel(usize),
        /// Time moves on this far, then `expire` runs.
        Advance(u64),
    }

    proptest! {
        /// Inserts, cancels and expires in any order, against a plain list: everything
        /// fires exactly once, never early and never a whole tick late (after each expire,
        /// no live entry is a tick or more overdue), cancelled entries never fire, and
        /// `next_due` never lies beyond a live entry's tick.
        #[test]
        fn inserts_cancels_and_expires_interleaved_match_a_model(
            ops in prop::collection::vec(
                prop_oneof![
                    3 => (0u64..3000).prop_map(Op::Insert),
                    1 => any::<usize>().prop_map(Op::Cancel),
                    2 => (1u64..400).prop_map(Op::Advance),
                ],
                1..300,
            ),
        ) {
            const TICK: u64 = 10;
            let mut w = TimerWheel::new(TICK, 64);
            // (deadline, id, cancelled, fired)
            let mut model: Vec<(u64, TimerId, bool, bool)> = Vec::new();
            let mut now = 0;
            for op in ops.iter().chain(std::iter::once(&Op::Advance(4000))) {
                match *op {
                    Op::Insert(d) => {
                        let id = w.insert(now + d, model.len() as u32);
                        model.push((now + d, id, false, false));
                    }
                    Op::Cancel(n) if !model.is_empty() => {
                        let len = model.len();
                        let e = &mut model[n % len];
                        let was_live = !e.2 && !e.3;
                        prop_assert_eq!(w.cancel(e.1).is_some(), was_live, "cancel of a {} entry", if was_live { "live" } else { "dead" });
                        e.2 = true;
                    }
                    Op::Cancel(_) => {}
                    Op::Advance(step) => {
                        now += step;
                        let mut out = Vec::new();
                        w.expire(now, &mut out);
                        for v in out {
                            let e = &mut model[v as usize];
                            prop_assert!(e.0 <= now, "fired early: due {} at {now}", e.0);
                            prop_assert!(!e.2 && !e.3, "fired after cancel or twice");
                            e.3 = true;
                        }
                        for (i, e) in model.iter().enumerate() {
                            if !e.2 && !e.3 {
                                prop_assert!(e.0 + TICK > now, "entry {i} due {} still waits at {now}", e.0);
                            }
                        }
                    }
                }
                if let Some(first) = model.iter().filter(|e| !e.2 && !e.3).map(|e| e.0).min() {
                    let due = w.next_due();
                    prop_assert!(due.is_some_and(|d| d <= first.max(now) + TICK), "next_due {due:?}, first live due {first}");
                }
            }
            prop_assert!(model.iter().all(|e| e.2 || e.3), "something never fired");
            prop_assert!(w.is_empty());
        }

        /// Against a plain list: everything fires exactly once, never early, and cancelled
        /// entries never fire (all inserts and cancels before the first expire).
        #[test]
        fn matches_a_naive_model(
            ops in prop::collection::vec((0u64..3000, any::<bool>()), 1..200),
            steps in prop::collection::vec(1u64..400, 1..40),
        ) {
            let mut w = TimerWheel::new(10, 64);
            let mut live = Vec::new();
            for (i, &(d, cancel)) in ops.iter().enumerate() {
                let id = w.insert(d, i as u32);
                live.push((d, i as u32, id, cancel));
            }
            for &(_, _, id, cancel) in &live {
                if cancel { w.cancel(id); }
            }
            let mut now = 0;
            let mut fired = Vec::new();
            for s in steps.iter().chain(std::iter::once(&4000)) {
                now += s;
                let mut out = Vec::new();
                w.expire(now, &mut out);
                for v in out {
                    let (d, ..) = live[v as usize];
                    prop_assert!(d <= now, "fired early");
                    fired.push(v);
                }
            }
            fired.sort();
            let want: Vec<u32> = live.iter().filter(|e| !e.3).map(|e| e.1).collect();
            prop_assert_eq!(fired, want);
            prop_assert!(w.is_empty());
        }
    }
}
