//! The load generator's pseudo-random numbers: xorshift64, seeded by the caller so that a
//! run can be repeated. Not for anything secret (natter's own secrets come from getrandom).

pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero, which xorshift would keep at zero, is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
