//! When the loop comes back to something without a readiness event: the loop's own
//! deadlines, in one place (the chat core's are in its timer wheel).
//!
//! - Connections to serve again next iteration: their read budget ran out with bytes
//!   waiting, their output drained below the pause mark, or the iteration's answers were
//!   enough. Edge-triggered readiness will not fire again for bytes already waiting, so
//!   forgetting one would leave it stalled: the poll does not sleep while any is listed.
//! - Connections paused by `--msg-rate` until a time (a heap: O(log n) per pause, where a
//!   list scanned every iteration cost O(n)).
//! - Accepting again after an accept error such as EMFILE.
//!
//! Entries name slab keys; a key whose connection closed meanwhile (or whose slot was
//! reused) is served harmlessly: serving a connection with nothing to read does nothing.
//! Never touches sockets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default)]
pub struct Resume {
    next: Vec<usize>,
    at: BinaryHeap<Reverse<(u64, usize)>>,
    accept_at: Option<u64>,
}

impl Resume {
    /// Serve `key` again in the next iteration.
    pub fn next_iteration(&mut self, key: usize) {
        self.next.push(key);
    }

    /// Serve `key` again at `ms` (on the loop's clock).
    pub fn at(&mut self, ms: u64, key: usize) {
        self.at.push(Reverse((ms, key)));
    }

    /// Accept nothing before `ms`.
    pub fn pause_accepting_until(&mut self, ms: u64) {
        self.accept_at = Some(ms);
    }

    /// True while accepting is paused.
    pub fn accepting_paused(&self) -> bool {
        self.accept_at.is_some()
    }

    /// True when connections wait for the next iteration: the poll must not sleep.
    pub fn has_work_now(&self) -> bool {
        !self.next.is_empty()
    }

    /// The earliest timed resumption, for the poll timeout.
    pub fn next_deadline(&self) -> Option<u64> {
        let paused = self.at.peek().map(|Reverse((ms, _))| *ms);
        [paused, self.accept_at].into_iter().flatten().min()
    }

    /// Hands every connection due at `now_ms` to `serve`; returns true when accepting is
    /// due again (and no longer paused).
    pub fn due(&mut self, now_ms: u64, mut serve: impl FnMut(usize)) -> bool {
        for key in self.next.drain(..) {
            serve(key);
        }
        while let Some(&Reverse((ms, key))) = self.at.peek() {
            if ms > now_ms {
                break;
            }
            self.at.pop();
            serve(key);
        }
        let accept = self.accept_at.is_some_and(|t| t <= now_ms);
        if accept {
            self.accept_at = None;
        }
        accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_come_back_when_due_and_accepting_after_its_pause() {
        let mut r = Resume::default();
        assert_eq!(r.next_deadline(), None);
        r.at(300, 7);
        r.at(100, 5);
        r.next_iteration(9);
        r.pause_accepting_until(200);
        assert!(r.has_work_now() && r.accepting_paused());
        assert_eq!(r.next_deadline(), Some(100));
        let mut due = Vec::new();
        assert!(!r.due(150, |k| due.push(k)));
        assert_eq!(due, vec![9, 5]);
        assert!(!r.has_work_now());
        due.clear();
        assert!(r.due(250, |k| due.push(k)), "accepting is due at 200");
        assert!(due.is_empty() && !r.accepting_paused());
        assert_eq!(r.next_deadline(), Some(300));
        assert!(!r.due(300, |k| due.push(k)));
        assert_eq!(due, vec![7]);
        assert_eq!(r.next_deadline(), None);
    }
}
