//! Fuzzing on the stable toolchain: bounded proptest runs over the places where raw
//! bytes from the network first meet our code. Each property runs `PROPTEST_CASES` cases
//! (proptest's default, 256, under `cargo test`; `.ci/run` raises it so that each target
//! runs for about a minute). Run longer, for example:
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test --release --test fuzz
//! ```
//!
//! A failing case is shrunk and saved by proptest under `tests/fuzz.proptest-regressions`;
//! commit that file, and the case is replayed before the random ones on every run.

use natter::chat::relay::{DropReason, Relay, Verdict, MAX_DATAGRAM};
use natter::framing::FrameScanner;
use natter::net::http::{self, WebConfig};
use natter::net::proxy;
use natter::net::transport::{detect, Offer, Step, Transport};
use natter::net::websocket::WsReader;
use natter::protocol::decode;
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;

const SEEDS: &[&str] = &[
    r#"{"type":"registration","details":{"email":"a@b.org","password":"5f4dcc3b5aa765d61d8327deb882cf99","username":"u"}}"#,
    r#"{"type":"verify","otp":"123456"}"#,
    r#"{"type":"login","details":{"username":null,"email":"a@b.org","password":"x","acks":true}}"#,
    r#"{"event":"personal","type":"message","details":{"to":"b@c.org","message":"h\"i\\ \u00e9","media":"https://x/","time":5,"client_id":"c"}}"#,
    r#"{"event":"global","type":"message","details":{"message":"{}[]"}}"#,
    r#"{"type":"voice","event":"call","details":{"email":"b@c.org"}}"#,
    r#"{"type":"history","details":{"with":"b@c.org","before":"9","limit":3}}"#,
    r#"{"type":"ack","details":{"id":"7"}}"#,
    r#"{"type":"group","event":"create","details":{"name":"team","members":["b@c.org","d@e.org"]}}"#,
    r#"{"type":"group","event":"rename","details":{"group":"3","name":"x"}}"#,
    r#"{"event":"group","type":"message","details":{"group":"3","message":"hi","client_id":"c"}}"#,
    r#"{"type":"history","details":{"group":"3","before":"9","limit":3}}"#,
    r#"{"type":"groups"}"#,
    r#"{"type":"block","details":{"email":"b@c.org"}}"#,
    r#"{"type":"blocked"}"#,
    r#"{"type":"presence"}"#,
    r#"{"type":"read","details":{"with":"b@c.org","upto":"7"}}"#,
    r#"{"type":"unread"}"#,
    r#"{"type":"password","details":{"old":"5f4dcc3b5aa765d61d8327deb882cf99","new":"x"}}"#,
    r#"{"type":"delete","details":{"password":"5f4dcc3b5aa765d61d8327deb882cf99"}}"#,
    r#"{"type":"reset","details":{"email":"a@b.org","otp":"123456","password":"5f4dcc3b5aa765d61d8327deb882cf99"}}"#,
    r#"{"type":"typing","details":{"to":"b@c.org","typing":true}}"#,
    r#"{"type":"typing","details":{"group":"3","typing":false}}"#,
    r#"{"type":"login","details":{"email":"a@b.org","password":"x","subscribe":["presence","typing"]}}"#,
    r#"{"type":"ping"}"#,
];

/// The first bytes of connections: PROXY headers (v1, v2 over IPv4 and IPv6, LOCAL, with
/// a TLV), a TLS start, JSON, HTTP.
const FIRST_BYTES: &[&[u8]] = &[
    b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 5050\r\n{\"type\":\"ping\"}\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
    b"PROXY UNKNOWN\r\n",
    b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\xc0\x00\x02\x01\xdc\x04\x13\xba{}",
    b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x9c\x40\x13\xba",
    b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
    b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x11\xcb\x00\x71\x07\xc0\x00\x02\x01\xdc\x04\x13\xba\x05\x00\x02id",
    b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03",
    b"{\"type\":\"ping\"}\n",
    b"GET / HTTP/1.1\r\n\r\n",
];

/// The frame limit of these targets.
const MAX_FRAME: usize = 4096;

/// `seed` with a `pad` field that makes it `len` bytes long (at least the seed's own length
/// plus the field), so that frames land just under, at and just over the limit.
fn padded(seed: &str, len: usize) -> Vec<u8> {
    let field = "\"pad\":\"\",";
    let fill = len.saturating_sub(seed.len() + field.len());
    format!("{{\"pad\":\"{}\",{}", "x".repeat(fill), &seed[1..]).into_bytes()
}

/// A seed frame, in a quarter of the cases padded to within 32 bytes of the frame limit,
/// with a few byte-level mutations: flips, insertions, deletions.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6);
    let size = prop_oneof![3 => Just(None), 1 => (MAX_FRAME - 32..MAX_FRAME + 32).prop_map(Some)];
    (prop::sample::select(SEEDS), size, edits).prop_map(|(seed, size, edits)| {
        let mut b = match size {
            Some(len) => padded(seed, len),
            None => seed.as_bytes().to_vec(),
        };
        for (at, byte, kind) in edits {
            let i = at % (b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
        }
        b
    })
}

/// Feeds `stream` through the scanner in `cuts`-sized reads, as a connection would, and
/// decodes every frame.
fn scan_and_decode(stream: &[u8], cuts: &[usize]) -> usize {
    let mut s = FrameScanner::new(MAX_FRAME);
    let mut buf = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    let mut frames = 0;
    while !rest.is_empty() {
        let n = cuts[i % cuts.len()].clamp(1, rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match s.next_frame(&buf) {
                Ok(Some(r)) => {
                    let frame = &buf[r];
                    assert_eq!(frame[0], b'{');
                    assert!(frame.len() <= MAX_FRAME);
                    // Decoding must give a value or an error, never a panic. The type may be
                    // empty (a request whose `type` was "" has it echoed); the reason may not.
                    if let Err(e) = decode(frame) {
                        assert!(!e.message.is_empty());
                        assert!(!e.ty.is_empty() || e.message == "`type` must not be empty", "{e:?}");
                    }
                    frames += 1;
                }
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
        let keep = s.keep_from();
        buf.drain(..keep);
        s.consumed(keep);
    }
    frames
}

/// The padded frames of the generator do reach the limit: at it a frame is read and
/// decoded, one byte over it the stream stops.
#[test]
fn padded_seeds_reach_the_frame_limit() {
    for seed in SEEDS {
        let at = padded(seed, MAX_FRAME);
        assert_eq!(at.len(), MAX_FRAME, "{seed}");
        assert!(decode(&at).is_ok(), "{seed}");
        let mut stream = at.clone();
        stream.push(b'\n');
        stream.extend_from_slice(&padded(seed, MAX_FRAME + 1));
        stream.push(b'\n');
        stream.extend_from_slice(seed.as_bytes());
        assert_eq!(scan_and_decode(&stream, &[37]), 1, "the frame over the limit ends the stream: {seed}");
    }
}

/// HTTP request heads as browsers and attackers send them.
const HTTP_SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:5050\r\nIf-None-Match: \"abc\"\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://x\r\n\r\n",
    b"HEAD /app.js HTTP/1.1\r\n\r\nGET /app.css HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
];

/// Client WebSocket frames: (first byte, masked, length form, payload), so that lengths,
/// masks, opcodes, fragments and control frames all vary.
fn ws_frames() -> impl Strategy<Value = Vec<u8>> {
    let frame = (any::<u8>(), any::<bool>(), 0u8..4, prop::collection::vec(any::<u8>(), 0..200), any::<[u8; 4]>());
    prop::collection::vec(frame, 1..6).prop_map(|frames| {
        let mut out = Vec::new();
        for (first, masked, form, payload, mask) in frames {
            // Mostly valid first bytes (FIN or not, text, continuation, ping, pong, close).
            let first = if first % 4 == 0 {
                first
            } else {
                (first & 0x80) | [0x1, 0x0, 0x9, 0xA, 0x8, 0x2][first as usize % 6]
            };
            out.push(first);
            let m = if masked { 0x80 } else { 0 };
            match form {
                0 if payload.len() < 126 => out.push(m | payload.len() as u8),
                0 | 1 => {
                    out.push(m | 126);
                    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                }
                2 => {
                    out.push(m | 127);
                    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
                }
                _ => {
                    // A huge claimed length (up to 2^64 - 1) with a short body.
                    out.push(m | 127);
                    out.extend_from_slice(&u64::MAX.to_be_bytes()[..8]);
                }
            }
            if masked {
                out.extend_from_slice(&mask);
            }
            out.extend_from_slice(&payload);
        }
        out
    })
}

/// Feeds `bytes` to a WebSocket decoder in pieces; what it passed on, what it answered,
/// and the first error, after which it stops as the connection does.
fn ws_decode(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<u8>, Option<String>) {
    let mut r = WsReader::new(MAX_FRAME);
    let (mut text, mut replies) = (Vec::new(), Vec::new());
    let (mut at, mut i) = (0, 0);
    while at < bytes.len() {
        let end = (at + cuts[i % cuts.len()]).min(bytes.len());
        if let Err(e) = r.receive(&bytes[at..end], &mut text, &mut replies) {
            return (text, replies, Some(e.to_string()));
        }
        at = end;
        i += 1;
    }
    (text, replies, None)
}

/// `seed` with a few byte-level mutations.
fn mutated_first_bytes() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..5);
    (prop::sample::select(FIRST_BYTES), edits).prop_map(|(seed, edits)| {
        let mut b = seed.to_vec();
        for (at, byte, kind) in edits {
            let i = at % (b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
        }
        b
    })
}

proptest! {
    /// Detection and the PROXY parser never panic, read a header the same whether its
    /// bytes come at once or in pieces, never take more bytes than they were given, and
    /// leave the bytes after a header untouched for the next transport.
    #[test]
    fn fuzz_transport_detection_and_proxy_headers(
        bytes in mutated_first_bytes(),
        cuts in prop::collection::vec(1usize..20, 1..6),
    ) {
        let _ = detect(&bytes);
        let whole = proxy::parse(&bytes);
        if let Ok(Some((_, n))) = whole {
            prop_assert!(n <= bytes.len());
            for end in n..=bytes.len() {
                prop_assert_eq!(proxy::parse(&bytes[..end]), whole);
            }
            for end in 0..n {
                prop_assert!(matches!(proxy::parse(&bytes[..end]), Ok(None) | Err(_)));
            }
        }
        // As a connection from a trusted proxy reads them, in pieces.
        let peer = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut transport = Transport::new(true, MAX_FRAME);
        let mut input = Vec::new();
        let (mut at, mut i) = (0, 0);
        let mut taken = 0;
        'feed: while at < bytes.len() {
            let end = (at + cuts[i % cuts.len()]).min(bytes.len());
            input.extend_from_slice(&bytes[at..end]);
            at = end;
            i += 1;
            loop {
                match transport.step(&mut input, peer, &Offer::default()) {
                    Ok(Step::Proxied(_)) => taken = at - input.len(),
                    Ok(Step::Wait) => break,
                    Ok(_) | Err(_) => break 'feed,
                }
            }
        }
        prop_assert!(bytes[taken..].starts_with(&input[..input.len().min(bytes.len() - taken)]));
    }

    #[test]
    fn fuzz_framing_and_decoding_never_panic(
        frames in prop::collection::vec(mutated(), 1..6),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(1usize..40, 1..5),
    ) {
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend_from_slice(f);
            stream.push(b'\n');
        }
        scan_and_decode(&stream, &cuts);
        stream.extend_from_slice(&noise);
        scan_and_decode(&stream, &cuts);
    }

    /// HTTP heads: any bytes are answered or waited on, never panic, and an answer never
    /// takes more than it was given; a head is waited on only while it may still fit.
    #[test]
    fn fuzz_http_heads(
        seed in prop::sample::select(HTTP_SEEDS),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut b = seed.to_vec();
        for (at, byte) in edits {
            let i = at % b.len();
            b[i] = byte;
        }
        let b = &b[..=cut % b.len()];
        for secure in [false, true] {
            match http::answer(b, &WebConfig::default(), secure) {
                http::Answer::NeedMore => prop_assert!(b.len() <= http::MAX_HEAD),
                http::Answer::Respond { used, bytes, .. } | http::Answer::Upgrade { used, bytes } => {
                    prop_assert!(used <= b.len());
                    prop_assert!(bytes.starts_with(b"HTTP/1.1 "));
                }
            }
        }
    }

    /// WebSocket frames give the same text, answers and error whether their bytes come at
    /// once or in pieces, never panic, and never pass on more than --max-frame per message.
    #[test]
    fn fuzz_websocket_frames(bytes in ws_frames(), cuts in prop::collection::vec(1usize..30, 1..5)) {
        let whole = ws_decode(&bytes, &[bytes.len()]);
        let pieces = ws_decode(&bytes, &cuts);
        prop_assert_eq!(&whole, &pieces);
        prop_assert!(whole.0.len() <= bytes.len());
    }

    #[test]
    fn fuzz_unmutated_seeds_always_decode(seed in prop::sample::select(SEEDS), cuts in prop::collection::vec(1usize..40, 1..5)) {
        let stream = format!("{seed}\n{seed}");
        prop_assert_eq!(scan_and_decode(stream.as_bytes(), &cuts), 2);
        prop_assert!(decode(seed.as_bytes()).is_ok());
    }

    /// The relay forwards only from a latched address of an open call to the other party's
    /// latched address, never to a stranger, and counts every datagram it drops.
    #[test]
    fn fuzz_relay_forwards_only_between_latched_parties(
        ops in prop::collection::vec((0u16..6, 0u8..6, 0usize..1600, any::<u8>()), 1..400),
        close_at in 0usize..400,
    ) {
        let tokens = [["tokA".to_owned(), "tokB".to_owned()], ["tokC".to_owned(), "tokD".to_owned()]];
        let mut r = Relay::new(50);
        r.open(1, tokens[0].clone(), 0);
        r.open(2, tokens[1].clone(), 0);
        // Our model of who is latched: address -> (call, party).
        let mut latched: HashMap<SocketAddr, (u64, usize)> = HashMap::new();
        let mut open = [true, true];
        let (mut forwarded, mut dropped) = (0u64, 0u64);
        for (step, (src, what, len, byte)) in ops.into_iter().enumerate() {
            if step == close_at {
                r.close(2);
                open[1] = false;
                latched.retain(|_, v| v.0 != 2);
            }
            let from = SocketAddr::from(([127, 0, 0, 1], 4000 + src));
            let data: Vec<u8> = match what {
                0..=3 => tokens[(what / 2) as usize][(what % 2) as usize].clone().into_bytes(),
                _ => vec![byte; len],
            };
            let cut = &data[..data.len().min(MAX_DATAGRAM + 1)];
            match r.on_datagram(from, cut, data.len(), step as u64) {
                Verdict::Latched => {
                    let call = (what / 2) as u64 + 1;
                    prop_assert!(what < 4 && open[call as usize - 1]);
                    latched.retain(|_, v| *v != (call, (what % 2) as usize));
                    latched.insert(from, (call, (what % 2) as usize));
                }
                Verdict::Forward(to) => {
                    forwarded += 1;
                    let (call, party) = latched.get(&from).copied().expect("forwarded from an unlatched address");
                    prop_assert_eq!(latched.get(&to).copied(), Some((call, 1 - party)));
                    prop_assert!(data.len() <= MAX_DATAGRAM);
                }
                Verdict::Drop(reason) => {
                    dropped += 1;
                    if reason == DropReason::Oversize {
                        prop_assert!(data.len() > MAX_DATAGRAM);
                    }
                }
            }
        }
        let stats = r.stats;
        prop_assert_eq!(stats.forwarded, forwarded);
        prop_assert_eq!(stats.dropped.iter().sum::<u64>(), dropped);
    }
}
