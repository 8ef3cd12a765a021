//! Secrets from the OS random source, and comparing them without leaking timing.

/// Six decimal digits, uniformly distributed (rejection sampling: no modulo bias).
pub fn otp() -> Result<String, getrandom::Error> {
    // The largest multiple of 10^6 that fits in a u32; draws at or above it are redrawn.
    const ZONE: u32 = 4_294_000_000;
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)?;
        let n = u32::from_le_bytes(b);
        if n < ZONE {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

/// A random token of `bytes` random bytes as lowercase hex (ASCII, safe in JSON and UDP).
pub fn token(bytes: usize) -> Result<String, getrandom::Error> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equality whose running time depends only on the lengths, not on where inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otps_are_six_digits_and_vary() {
        let a: Vec<String> = (0..50).map(|_| otp().unwrap()).collect();
        assert!(a.iter().all(|o| o.len() == 6 && o.bytes().all(|b| b.is_ascii_digit())));
        assert!(a.iter().any(|o| o != &a[0]));
    }

    #[test]
    fn tokens_are_hex_of_twice_the_length() {
        let t = token(16).unwrap();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"123456", b"123456"));
        assert!(!constant_time_eq(b"123456", b"123457"));
        assert!(!constant_time_eq(b"12345", b"123456"));
    }
}
