//! Giving freed memory back to the system after big buffers were released.
//!
//! Output buffers of several MB (a `history` of long messages, a slow consumer cut off)
//! are freed in the middle of glibc's heap, which returns to the system only what sits at
//! its top. Without help, memory that an attack made the server allocate stays counted
//! against it long after the buffers are gone (a test saw 135 MB kept after 40 connections
//! that never read were cut off, with 16 MiB of output actually held). So once enough has
//! been freed, and at most once a second, the loop asks glibc to return free pages
//! (`malloc_trim`, which walks the heap: a few hundred microseconds on a small heap, too
//! much to do after every release at high load). Elsewhere than glibc it does nothing.

/// Bytes of buffer capacity released since the last trim before the next one is worth it.
const TRIM_AFTER_BYTES: usize = 16 << 20;
/// A buffer at least this big is worth giving back.
const BIG: usize = 1 << 20;
/// Least time between two trims.
const TRIM_EVERY_MS: u64 = 1_000;

/// Counts released buffer capacity and decides when to trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    released: usize,
    last_ms: Option<u64>,
    /// Trims done (the tests read it).
    trims: u64,
}

impl Trimmer {
    /// `bytes` of buffer capacity were freed. Only big buffers count: small ones go back
    /// to malloc's bins and are reused by the next answers (counting them made a trim every
    /// few seconds at a steady low load, for nothing).
    pub fn released(&mut self, bytes: usize) {
        if bytes >= BIG {
            self.released = self.released.saturating_add(bytes);
        }
    }

    /// Returns free memory to the system when enough was released and the last trim is
    /// long enough ago.
    pub fn maybe_trim(&mut self, now_ms: u64) {
        if self.released < TRIM_AFTER_BYTES || self.last_ms.is_some_and(|t| now_ms < t + TRIM_EVERY_MS) {
            return;
        }
        self.released = 0;
        self.last_ms = Some(now_ms);
        self.trims += 1;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists; no pointers of
    // ours are involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_enough_was_released_at_most_once_a_second() {
        let mut t = Trimmer::default();
        for _ in 0..10_000 {
            t.released(4096);
        }
        t.released(TRIM_AFTER_BYTES - BIG);
        t.maybe_trim(0);
        assert_eq!(t.trims, 0, "small buffers do not count");
        t.released(BIG);
        t.maybe_trim(0);
        assert_eq!(t.trims, 1);
        t.released(TRIM_AFTER_BYTES);
        t.maybe_trim(999);
        assert_eq!(t.trims, 1, "too soon");
        t.maybe_trim(1_000);
        assert_eq!(t.trims, 2);
    }
}
