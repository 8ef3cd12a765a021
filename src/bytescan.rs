//! Finding the first byte of a kind in a byte string, eight bytes per step (SWAR: SIMD
//! within a register), for the two loops every byte of chat traffic goes through: the
//! frame scanner skipping string contents, and the encoder copying strings into JSON.
//!
//! Pure functions over slices. A byte equal to `c` is a zero byte of `word ^ (c * ONES)`,
//! and the lowest byte flagged by the classic has-a-zero-byte test is always a real hit
//! (false flags only ever sit above a real one), so the first match is exact.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

fn equal_bytes(word: u64, c: u8) -> u64 {
    zero_bytes(word ^ (ONES * u64::from(c)))
}

/// The first offset in `s` where `hits` (over eight bytes read little-endian) flags a byte,
/// else where `slow` holds for the tail.
#[inline(always)]
fn first(s: &[u8], hits: impl Fn(u64) -> u64, slow: impl Fn(u8) -> bool) -> Option<usize> {
    let mut i = 0;
    while i + 8 <= s.len() {
        let c = &s[i..i + 8];
        let h = hits(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        if h != 0 {
            return Some(i + (h.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&b| slow(b)).map(|p| i + p)
}

/// The offset of the first `"` or `\` in `s`.
pub fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    first(s, |w| equal_bytes(w, b'"') | equal_bytes(w, b'\\'), |b| b == b'"' || b == b'\\')
}

/// The offset of the first byte a JSON string must escape: `"`, `\` or a control byte.
pub fn json_escape(s: &[u8]) -> Option<usize> {
    // Bytes below 0x20: `word - 0x20..` borrows exactly there (bytes of 0x80 and up have
    // their high bit set and are masked out by `!word`).
    let below_space = |w: u64| w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    first(s, |w| equal_bytes(w, b'"') | equal_bytes(w, b'\\') | below_space(w), |b| b == b'"' || b == b'\\' || b < 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        /// Hits are rare (about one byte in 15), so the first one falls anywhere in the
        /// first 80 bytes: in every lane of the first word, in later words and in the tail.
        fn the_first_hit_is_the_first_byte_of_its_kind(
            s in prop::collection::vec(
                prop_oneof![
                    40 => (0x20u8..=0xff).prop_filter("not a hit", |b| *b != b'"' && *b != b'\\'),
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                ],
                0..80,
            ),
        ) {
            prop_assert_eq!(quote_or_backslash(&s), s.iter().position(|&b| b == b'"' || b == b'\\'));
            prop_assert_eq!(json_escape(&s), s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20));
        }
    }

    #[test]
    fn hits_in_every_lane_and_the_tail() {
        for at in 0..20 {
            let mut s = vec![b'a'; 20];
            s[at] = b'"';
            assert_eq!(quote_or_backslash(&s), Some(at));
            s[at] = 0x1f;
            assert_eq!(json_escape(&s), Some(at));
            assert_eq!(quote_or_backslash(&s), None);
            s[at] = 0xff;
            assert_eq!(json_escape(&s), None);
        }
    }
}
