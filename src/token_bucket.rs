//! A token bucket: tokens come back at `rate` per second up to `burst`; each event takes
//! one. Used for `--msg-rate` (frames per connection) and the relay (datagrams per party).
//! Pure: time is an argument, in milliseconds.

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    refilled_ms: u64,
}

impl TokenBucket {
    /// A bucket holding `burst` tokens at `now_ms`.
    pub fn full(burst: f64, now_ms: u64) -> TokenBucket {
        TokenBucket { tokens: burst, refilled_ms: now_ms }
    }

    /// Takes one token. `Err(ms)` when the bucket is empty: one is back `ms` from `now_ms`.
    pub fn take(&mut self, rate: f64, burst: f64, now_ms: u64) -> Result<(), u64> {
        let elapsed = now_ms.saturating_sub(self.refilled_ms) as f64;
        self.tokens = (self.tokens + elapsed * rate / 1000.0).min(burst);
        self.refilled_ms = now_ms;
        if self.tokens < 1.0 {
            return Err(((1.0 - self.tokens) * 1000.0 / rate).ceil() as u64);
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Gives back the token of an event that did not happen after all.
    pub fn give_back(&mut self) {
        self.tokens += 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::full(2.0, 0);
        assert_eq!(b.take(10.0, 2.0, 0), Ok(()));
        assert_eq!(b.take(10.0, 2.0, 0), Ok(()));
        assert_eq!(b.take(10.0, 2.0, 0), Err(100), "one token per 100 ms at 10/s");
        assert_eq!(b.take(10.0, 2.0, 60), Err(40));
        assert_eq!(b.take(10.0, 2.0, 100), Ok(()));
        b.give_back();
        assert_eq!(b.take(10.0, 2.0, 100), Ok(()));
        // Never more than the burst, however long the pause.
        assert_eq!(b.take(10.0, 2.0, 100_000), Ok(()));
        assert_eq!(b.take(10.0, 2.0, 100_000), Ok(()));
        assert!(b.take(10.0, 2.0, 100_000).is_err());
    }
}
