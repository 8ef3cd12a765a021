//! Waiting for something observable, with a deadline, instead of sleeping for a guess.

use std::thread;
use std::time::{Duration, Instant};

/// Checks `cond` until it holds or `limit` has passed; returns whether it held. The checks
/// start 0.1 ms apart and back off to 10 ms, so a quick event is seen quickly and a slow one
/// costs little.
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(100);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // The one sleep behind every wait: the pause between two checks.
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Waits (at most `limit`) until `cond` holds; panics naming `what` otherwise.
pub fn wait_until(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(poll_until(limit, cond), "{what}: did not happen within {limit:?}");
}
