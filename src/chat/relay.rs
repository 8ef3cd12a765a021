//! The voice relay's table: which UDP address speaks for which party of which call, and
//! where its datagrams go. Pure: the loop passes each datagram and the time in, and sends
//! what this returns.
//!
//! A party latches by sending its token (ASCII, exactly) as a datagram; from then on its
//! datagrams are forwarded unchanged to the other party's latched address. Sending the token
//! again from a new address moves the latch (a NAT rebinding). Everything else is dropped
//! and counted by reason: unknown sources or tokens, oversize datagrams, a party above its
//! rate (a token bucket of `rate` per second with a burst of one second's worth), a peer
//! not latched yet. A token lives exactly as long as its call.

use crate::token_bucket::TokenBucket;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Datagrams longer than this are dropped.
pub const MAX_DATAGRAM: usize = 1500;

/// What became of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the same bytes to this address.
    Forward(SocketAddr),
    /// A token latched (or re-latched) its sender; nothing to send.
    Latched,
    Drop(DropReason),
}

/// Why a datagram was dropped; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Unknown,
    Oversize,
    RateLimited,
    PeerNotLatched,
}

impl DropReason {
    pub const ALL: [DropReason; 4] =
        [DropReason::Unknown, DropReason::Oversize, DropReason::RateLimited, DropReason::PeerNotLatched];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unknown => "unknown",
            DropReason::Oversize => "oversize",
            DropReason::RateLimited => "rate_limited",
            DropReason::PeerNotLatched => "peer_not_latched",
        }
    }
}

/// One side of a relayed call.
#[derive(Debug, Clone, Default)]
struct Party {
    token: Vec<u8>,
    addr: Option<SocketAddr>,
    bucket: TokenBucket,
    /// Datagrams and bytes forwarded from this party.
    datagrams: u64,
    bytes: u64,
}

#[derive(Debug, Clone)]
struct Session {
    parties: [Party; 2],
    last_forward_ms: u64,
}

/// Totals over the relay's life.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayStats {
    pub forwarded: u64,
    pub dropped: [u64; 4],
}

/// The relay sessions of all calls that are talking.
pub struct Relay {
    rate: f64,
    sessions: HashMap<u64, Session>,
    by_token: HashMap<Vec<u8>, (u64, usize)>,
    by_addr: HashMap<SocketAddr, (u64, usize)>,
    pub stats: RelayStats,
}

impl Relay {
    /// A relay allowing `rate` datagrams per second per party.
    pub fn new(rate: u32) -> Relay {
        Relay {
            rate: f64::from(rate.max(1)),
            sessions: HashMap::new(),
            by_token: HashMap::new(),
            by_addr: HashMap::new(),
            stats: RelayStats::default(),
        }
    }

    /// Opens a session for `call` with the two parties' tokens (caller first).
    pub fn open(&mut self, call: u64, tokens: [String; 2], now_ms: u64) {
        let mut parties: [Party; 2] = Default::default();
        for (i, t) in tokens.into_iter().enumerate() {
            let t = t.into_bytes();
            self.by_token.insert(t.clone(), (call, i));
            parties[i] = Party { token: t, bucket: TokenBucket::full(self.rate, now_ms), ..Party::default() };
        }
        self.sessions.insert(call, Session { parties, last_forward_ms: now_ms });
    }

    /// Closes `call`'s session; its tokens stop working at once. Returns (datagrams, bytes)
    /// forwarded from each party.
    pub fn close(&mut self, call: u64) -> Option<[(u64, u64); 2]> {
        let s = self.sessions.remove(&call)?;
        for p in &s.parties {
            self.by_token.remove(&p.token);
            if let Some(a) = p.addr {
                self.by_addr.remove(&a);
            }
        }
        Some([(s.parties[0].datagrams, s.parties[0].bytes), (s.parties[1].datagrams, s.parties[1].bytes)])
    }

    /// When `call` last forwarded a datagram (ms).
    pub fn last_forward(&self, call: u64) -> Option<u64> {
        self.sessions.get(&call).map(|s| s.last_forward_ms)
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Decides what to do with a datagram of `len` bytes (`data` may be cut at
    /// `MAX_DATAGRAM + 1`) from `from`.
    pub fn on_datagram(&mut self, from: SocketAddr, data: &[u8], len: usize, now_ms: u64) -> Verdict {
        let v = self.judge(from, data, len, now_ms);
        match v {
            Verdict::Forward(_) => self.stats.forwarded += 1,
            Verdict::Drop(r) => self.stats.dropped[r as usize] += 1,
            Verdict::Latched => {}
        }
        v
    }

    fn judge(&mut self, from: SocketAddr, data: &[u8], len: usize, now_ms: u64) -> Verdict {
        if len > MAX_DATAGRAM {
            return Verdict::Drop(DropReason::Oversize);
        }
        if let Some(&(call, party)) = self.by_token.get(data) {
            return self.latch(call, party, from);
        }
        let Some(&(call, party)) = self.by_addr.get(&from) else { return Verdict::Drop(DropReason::Unknown) };
        let Some(s) = self.sessions.get_mut(&call) else { return Verdict::Drop(DropReason::Unknown) };
        let rate = self.rate;
        if s.parties[party].bucket.take(rate, rate, now_ms).is_err() {
            return Verdict::Drop(DropReason::RateLimited);
        }
        let Some(to) = s.parties[1 - party].addr else { return Verdict::Drop(DropReason::PeerNotLatched) };
        let p = &mut s.parties[party];
        p.datagrams += 1;
        p.bytes += len as u64;
        s.last_forward_ms = now_ms;
        Verdict::Forward(to)
    }

    fn latch(&mut self, call: u64, party: usize, from: SocketAddr) -> Verdict {
        let Some(s) = self.sessions.get_mut(&call) else { return Verdict::Drop(DropReason::Unknown) };
        if let Some(old) = s.parties[party].addr.replace(from) {
            self.by_addr.remove(&old);
        }
        // An address speaks for one party only: a stale latch of another party goes.
        if let Some((c, p)) = self.by_addr.insert(from, (call, party)) {
            if (c, p) != (call, party) {
                if let Some(other) = self.sessions.get_mut(&c) {
                    other.parties[p].addr = None;
                }
            }
        }
        Verdict::Latched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn relay() -> Relay {
        let mut r = Relay::new(200);
        r.open(1, ["tokA".into(), "tokB".into()], 0);
        r
    }

    fn send(r: &mut Relay, from: u16, data: &[u8], now: u64) -> Verdict {
        r.on_datagram(addr(from), data, data.len(), now)
    }

    #[test]
    fn forwards_between_latched_parties_only() {
        let mut r = relay();
        assert_eq!(send(&mut r, 1, b"voice", 0), Verdict::Drop(DropReason::Unknown));
        assert_eq!(send(&mut r, 1, b"tokA", 0), Verdict::Latched);
        assert_eq!(send(&mut r, 1, b"voice", 0), Verdict::Drop(DropReason::PeerNotLatched));
        assert_eq!(send(&mut r, 2, b"tokB", 0), Verdict::Latched);
        assert_eq!(send(&mut r, 1, b"voice", 1), Verdict::Forward(addr(2)));
        assert_eq!(send(&mut r, 2, b"voice", 1), Verdict::Forward(addr(1)));
        assert_eq!(send(&mut r, 3, b"voice", 1), Verdict::Drop(DropReason::Unknown));
        assert_eq!(send(&mut r, 3, b"tokX", 1), Verdict::Drop(DropReason::Unknown));
        assert_eq!(r.last_forward(1), Some(1));
    }

    #[test]
    fn relatching_moves_the_stream() {
        let mut r = relay();
        send(&mut r, 1, b"tokA", 0);
        send(&mut r, 2, b"tokB", 0);
        assert_eq!(send(&mut r, 5, b"tokA", 0), Verdict::Latched);
        assert_eq!(send(&mut r, 1, b"voice", 0), Verdict::Drop(DropReason::Unknown));
        assert_eq!(send(&mut r, 2, b"voice", 0), Verdict::Forward(addr(5)));
    }

    #[test]
    fn oversize_and_rate_limited_datagrams_are_dropped() {
        let mut r = relay();
        send(&mut r, 1, b"tokA", 0);
        send(&mut r, 2, b"tokB", 0);
        let big = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(send(&mut r, 1, &big, 0), Verdict::Drop(DropReason::Oversize));
        let forwarded = (0..300).filter(|_| matches!(send(&mut r, 1, b"v", 0), Verdict::Forward(_))).count();
        assert_eq!(forwarded, 200, "a burst of one second's worth");
        assert_eq!(send(&mut r, 1, b"v", 0), Verdict::Drop(DropReason::RateLimited));
        assert!(matches!(send(&mut r, 1, b"v", 10), Verdict::Forward(_)), "two tokens back after 10 ms");
        assert_eq!(r.stats.dropped[DropReason::RateLimited as usize], 101);
    }

    #[test]
    fn closing_kills_the_tokens_and_reports_counts() {
        let mut r = relay();
        send(&mut r, 1, b"tokA", 0);
        send(&mut r, 2, b"tokB", 0);
        send(&mut r, 1, b"12345", 0);
        assert_eq!(r.close(1), Some([(1, 5), (0, 0)]));
        assert_eq!(send(&mut r, 1, b"voice", 0), Verdict::Drop(DropReason::Unknown));
        assert_eq!(send(&mut r, 1, b"tokA", 0), Verdict::Drop(DropReason::Unknown));
        assert!(r.is_empty());
    }
}
