//! Framing over real TCP (PROTOCOL.md section 1 and section 3): objects split across
//! segments or packed together, strings holding braces and quotes, invalid frames that keep
//! the connection, and frames that cannot be resynchronised and close it.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn pong() -> Value {
    json!({"event":"success","type":"pong"})
}

/// `{"type":"ping","pad":"xxx…"}` of exactly `len` bytes.
fn ping_of_len(len: usize) -> Vec<u8> {
    let base = br#"{"type":"ping","pad":""}"#.len();
    assert!(len >= base);
    format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(len - base)).into_bytes()
}

#[test]
fn object_written_byte_by_byte() {
    let s = Server::start();
    let mut c = s.connect();
    let frame = br#"{"type":"ping","note":"a \"quoted\" {brace} [x]"}"#;
    for (i, b) in frame.iter().enumerate() {
        c.send_raw(&[*b]);
        // Kept: a pause so every byte is a read of its own.
        thread::sleep(Duration::from_millis(3));
        if i == frame.len() / 2 {
            // Half an object is not an answerable frame.
            c.expect_silence(150);
        }
    }
    assert_eq!(c.recv(), pong());
    // A registration split into single bytes works the same.
    let req = serde_json::to_vec(&registration("bytes@example.com", &md5_hex("pw"), "bytes")).unwrap();
    for b in &req {
        c.send_raw(&[*b]);
        // Kept: as above.
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.recv(), sent_otp("bytes@example.com"));
    c.expect_silence(200);
}

#[test]
fn many_objects_in_one_write_are_answered_in_order() {
    let s = Server::start();
    let mut c = s.connect();
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..30 {
        match i % 3 {
            0 => {
                batch.extend_from_slice(br#"{"type":"ping"}"#);
                expected.push(pong());
            }
            1 => {
                batch.extend_from_slice(br#"{"type":"users"}"#);
                expected.push(json!({"event":"invalid","type":"users","message":"log in or register first"}));
            }
            _ => {
                batch.extend_from_slice(br#"{"type":"logout"}"#);
                expected.push(json!({"event":"invalid","type":"logout","message":"log in or register first"}));
            }
        }
        batch.push(b'\n');
    }
    c.send_raw(&batch);
    for (i, e) in expected.iter().enumerate() {
        let v = c.recv();
        assert_eq!(&v, e, "answer {i}");
    }
    c.expect_silence(200);
}

/// A client that writes its requests and half-closes at once (`printf ... | nc -N`) gets
/// every answer and then the close. The bytes and the end of stream usually arrive under one
/// readiness event, so a server that stopped reading at a short read would never see the
/// end and keep the connection until its idle timeout.
#[test]
fn requests_followed_by_a_half_close_are_answered_then_closed() {
    let s = Server::start();
    for round in 0..20 {
        let mut c = s.connect();
        c.send_raw(b"{\"type\":\"ping\"}\n{\"type\":\"users\"}");
        c.shutdown_write();
        assert_eq!(c.recv(), pong(), "round {round}");
        let v = c.recv();
        assert_eq!(v["type"], "users", "round {round}: {v}");
        c.expect_closed_within(Duration::from_secs(2));
    }
}

#[test]
fn braces_quotes_and_escapes_inside_strings() {
    let s = Server::start();
    let mut c = s.connect();
    let frames: Vec<&[u8]> = vec![
        br#"{"type":"ping","x":"}"}"#,
        br#"{"type":"ping","x":"{"}"#,
        br#"{"type":"ping","x":"}}}{{{"}"#,
        br#"{"type":"ping","x":"\"}"}"#,
        br#"{"type":"ping","x":"\\"}"#,
        br#"{"type":"ping","x":"\\\"}{\\"}"#,
        br#"{"type":"ping","x":"\u007d\u007b\u0022"}"#,
        br#"{"type":"ping","x":{"y":["}",{"z":"{"}]},"w":"\\\\"}"#,
        br#"{"x":"\"type\":\"users\"","type":"ping"}"#,
        "{\"type\":\"ping\",\"x\":\"h\u{e9}llo \u{1F600} }\"}".as_bytes(),
    ];
    // One write holding all of them, then each on its own.
    let mut all = Vec::new();
    for f in &frames {
        all.extend_from_slice(f);
    }
    c.send_raw(&all);
    for i in 0..frames.len() {
        assert_eq!(c.recv(), pong(), "frame {i} of the packed write");
    }
    for f in &frames {
        c.send_raw(f);
        assert_eq!(c.recv(), pong(), "frame {}", String::from_utf8_lossy(f));
    }
    // A username full of braces and quotes is one frame: one `failed` answer (bad username),
    // not a cascade of framing errors.
    let req = br#"{"type":"registration","details":{"email":"q@example.com","password":"0123456789abcdef0123456789abcdef","username":"x\"}{\"y"}}"#;
    c.send_raw(req);
    let v = c.recv();
    assert_failed(&v, "registration");
    c.expect_silence(200);
    c.ping();
}

#[test]
fn whitespace_or_nothing_between_objects() {
    let s = Server::start();
    let mut c = s.connect();
    c.send_raw(
        b" \r\n\t {\"type\":\"ping\"}{\"type\":\"ping\"} \t\r\n {\"type\":\"ping\"}\n\n\n{\"type\" : \"ping\" }\r\n",
    );
    for i in 0..4 {
        assert_eq!(c.recv(), pong(), "answer {i}");
    }
    // Whitespace alone produces nothing and keeps the connection.
    c.send_raw(b"\n\n   \t\r\n");
    c.expect_silence(200);
    c.ping();
}

#[test]
fn every_two_way_split_of_a_stream_gives_the_same_answers() {
    let s = Server::start();
    let mut c = s.connect();
    let stream = br#"{"type":"ping","a":"}{\""} {"type":"users"}
{"type":"ping","b":[{"c":"\\"}]}"#;
    let expected = [pong(), json!({"event":"invalid","type":"users","message":"log in or register first"}), pong()];
    for cut in 1..stream.len() {
        c.send_raw(&stream[..cut]);
        // Kept: a pause so the two parts arrive as two reads.
        thread::sleep(Duration::from_millis(2));
        c.send_raw(&stream[cut..]);
        c.send_raw(b"\n");
        for (i, e) in expected.iter().enumerate() {
            let v = c.recv();
            assert_eq!(&v, e, "split at byte {cut}, answer {i}");
        }
    }
    c.expect_silence(100);
}

#[test]
fn invalid_json_in_a_frame_is_answered_and_the_connection_survives() {
    let s = Server::start();
    let mut c = s.connect();
    c.send_raw(br#"{"type":}"#);
    let v = c.recv();
    assert_invalid(&v, "unknown");
    c.ping();
    // More malformed but well-bracketed frames; each is answered invalid, none closes.
    let frames: Vec<&[u8]> = vec![
        br#"{"type":"ping",}"#,
        br#"{type:"ping"}"#,
        br#"{"type" "ping"}"#,
        br#"{"type":'ping'}"#,
        br#"{"type":"ping","x":tru}"#,
        b"{\"type\":\"ping\",\"x\":\"a\x01b\"}",
        br#"{"type":"ping","x":"\q"}"#,
    ];
    for f in frames {
        c.send_raw(f);
        let v = c.recv();
        let (_t, _m) = assert_invalid_any_type(&v);
        c.ping();
    }
}

#[test]
fn missing_or_wrongly_typed_type_is_invalid_unknown() {
    let s = Server::start();
    let mut c = s.connect();
    for f in [
        json!({}),
        json!({"details":{}}),
        json!({"type":5}),
        json!({"type":null}),
        json!({"type":true}),
        json!({"type":["ping"]}),
        json!({"type":{"ping":1}}),
    ] {
        let v = c.request(&f);
        assert_invalid(&v, "unknown");
    }
    c.ping();
}

#[test]
fn unknown_type_is_invalid_with_that_type() {
    let s = Server::start();
    let mut anon = s.connect();
    // Anonymous: `invalid` with the request's type whatever the message says.
    let v = anon.request(&json!({"type":"frobnicate"}));
    assert_invalid(&v, "frobnicate");
    anon.ping();

    register_and_verify(&s, "wire@example.com", "wire", "pw");
    let mut c = logged_in(&s, "wire@example.com", "pw");
    for t in ["frobnicate", "", "users "] {
        let v = c.request(&json!({"type":t}));
        assert_invalid(&v, t);
    }
    c.ping();
    let v = c.request(&json!({"type":"users"}));
    assert_eq!(v["event"], json!("success"), "{v}");
}

#[test]
fn invalid_utf8_inside_a_string_is_invalid_and_the_connection_survives() {
    let s = Server::start();
    let mut c = s.connect();
    c.send_raw(b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}");
    let v = c.recv();
    assert_invalid_any_type(&v);
    c.ping();
    // A truncated multi-byte sequence and an overlong encoding.
    c.send_raw(b"{\"type\":\"ping\",\"x\":\"\xe2\x82\"}\n{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}");
    assert_invalid_any_type(&c.recv());
    assert_invalid_any_type(&c.recv());
    c.ping();
    // In a field the server reads.
    c.send_raw(b"{\"type\":\"registration\",\"details\":{\"email\":\"u\xff@example.com\",\"password\":\"0123456789abcdef0123456789abcdef\",\"username\":\"utf\"}}");
    assert_invalid_any_type(&c.recv());
    c.ping();
    assert_eq!(std::fs::read_dir(s.outbox()).unwrap().count(), 0);
}

#[test]
fn deeply_nested_frame_does_not_break_the_server() {
    let s = Server::start();
    let mut c = s.connect();
    let depth = 2000;
    let mut f = String::from(r#"{"type":"ping","x":"#);
    f.push_str(&"[".repeat(depth));
    f.push_str(&"]".repeat(depth));
    f.push('}');
    c.send_raw(f.as_bytes());
    let v = c.recv();
    // serde_json refuses this depth; either way the server answers and keeps going.
    assert!(v == pong() || v["event"] == json!("invalid"), "answer {v}");
    if v != pong() {
        assert_invalid_any_type(&v);
    }
    c.ping();
    let mut other = s.connect();
    other.ping();
}

#[test]
fn oversize_frame_is_answered_and_closed() {
    let s = Server::start_with(&["--max-frame", "1024"]);
    // A small frame first works.
    let mut c = s.connect();
    c.send_raw(&ping_of_len(900));
    assert_eq!(c.recv(), pong());
    c.send_raw(&ping_of_len(2000));
    let v = c.recv();
    assert_invalid_any_type(&v);
    c.expect_closed();

    // An oversize frame that never ends must not wait for its end.
    let mut d = s.connect();
    let mut open = br#"{"type":"ping","pad":""#.to_vec();
    open.extend(std::iter::repeat_n(b'y', 3000));
    d.send_raw(&open);
    let v = d.recv();
    assert_invalid_any_type(&v);
    d.expect_closed();

    // Other connections are unaffected.
    let mut e = s.connect();
    e.ping();
}

#[test]
fn frame_size_limit_boundary() {
    let s = Server::start_with(&["--max-frame", "1024"]);
    let mut c = s.connect();
    c.send_raw(&ping_of_len(1024));
    assert_eq!(c.recv(), pong(), "a frame of exactly --max-frame bytes is allowed");
    c.send_raw(&ping_of_len(1025));
    assert_invalid_any_type(&c.recv());
    c.expect_closed();
}

#[test]
fn default_frame_limit_is_64_kib() {
    let s = Server::start();
    let mut c = s.connect();
    c.send_raw(&ping_of_len(60 * 1024));
    assert_eq!(c.recv(), pong());
    c.send_raw(&ping_of_len(70 * 1024));
    assert_invalid_any_type(&c.recv());
    c.expect_closed();
}

#[test]
fn frames_not_starting_with_a_brace_close_the_connection() {
    let s = Server::start();
    let garbage: Vec<&[u8]> =
        vec![b"[1]", b"hello", b"\"string\"", b"42\n", b"}", b"null", b"\n\n  [{\"type\":\"ping\"}]"];
    for g in garbage {
        let mut c = s.connect();
        c.send_raw(g);
        let v = c.recv();
        assert_invalid(&v, "unknown");
        c.expect_closed();
    }
    // Stray bytes after a good object: the object is answered, then invalid, then close.
    let mut c = s.connect();
    c.send_raw(b"{\"type\":\"ping\"} xyz{\"type\":\"ping\"}");
    assert_eq!(c.recv(), pong());
    assert_invalid(&c.recv(), "unknown");
    c.expect_closed();
    // The server itself is fine.
    let mut d = s.connect();
    d.ping();
}

#[test]
fn max_connections_accepts_and_closes_extra_ones() {
    let s = Server::start_with(&["--max-connections", "2"]);
    let mut a = s.connect();
    let mut b = s.connect();
    a.ping();
    b.ping();
    let mut extra = s.connect();
    extra.expect_closed();
    // Room again after one leaves.
    a.close();
    let mut d = s.connect();
    d.ping();
    b.ping();
}

#[test]
fn accepted_sockets_have_tcp_keepalive() {
    // `ss -o` shows the server side's keepalive timer: idle 60 s, so a peer that vanished
    // without a FIN is noticed (PROTOCOL.md section 2).
    let s = Server::start();
    let mut c = s.connect();
    c.ping();
    let port = s.addr.port();
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", &format!("( sport = :{port} )")])
        .output()
        .expect("ss (iproute2) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keepalive"), "no keepalive timer on the server's socket:\n{text}");
    // ss prints the time left as e.g. `59sec`, `1min` (exactly 60 s) or `800ms`.
    let secs: Vec<u32> = text
        .split("keepalive,")
        .skip(1)
        .filter_map(|t| {
            let digits = t.find(|ch: char| !ch.is_ascii_digit())?;
            let n: u32 = t[..digits].parse().ok()?;
            let unit = &t[digits..];
            Some(if unit.starts_with("min") {
                n * 60
            } else if unit.starts_with("ms") {
                n / 1000
            } else {
                n
            })
        })
        .collect();
    assert!(!secs.is_empty(), "no keepalive time in:\n{text}");
    assert!(secs.iter().all(|&t| (50..=60).contains(&t)), "keepalive idle should be 60 s: {text}");
}

#[test]
fn msg_rate_paces_a_connection_without_dropping_frames() {
    // --msg-rate 100: a burst of 200 frames, then 100 per second. 300 pings sent at once
    // are all answered, in order, and the last ones no sooner than about a second later.
    let s = Server::start_with(&["--msg-rate", "100"]);
    let mut fast = s.connect();
    let mut c = s.connect();
    let t0 = std::time::Instant::now();
    c.send_raw("{\"type\":\"ping\"}\n".repeat(300).as_bytes());
    for i in 0..300 {
        let v = c.recv();
        assert_eq!(v, serde_json::json!({"event":"success","type":"pong"}), "answer {i}");
        if i == 150 {
            // Another connection is not held up by this one's pacing.
            let t = std::time::Instant::now();
            fast.ping();
            // A paced connection holding others up would take seconds here.
            assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
        }
    }
    let took = t0.elapsed();
    assert!(took >= std::time::Duration::from_millis(800), "300 frames at 100/s after a burst of 200 took {took:?}");
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}

/// The first bytes tell the transport (PROTOCOL.md section 13). Without a certificate or
/// `--proxy-from`, a TLS handshake and a PROXY header are closed without a word; JSON
/// whitespace that could start a PROXY v2 header waits for the bytes that decide; HTTP is
/// refused as any stream that does not start with `{` (section 1).
#[test]
fn the_first_bytes_choose_the_transport() {
    let s = Server::start();
    for (what, first) in [
        ("a TLS ClientHello", &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..]),
        ("a PROXY v1 header", b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 5050\r\n{\"type\":\"ping\"}\n"),
        ("a PROXY v2 header", b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"),
    ] {
        let mut c = s.connect();
        c.send_raw(first);
        match c.read_line(Duration::from_secs(5)) {
            ReadOutcome::Closed(_) => {}
            other => panic!("{what}: expected a close without an answer, got {other:?}"),
        }
    }
    // CR LF, a pause, then a request: whitespace after all.
    let mut c = s.connect();
    c.send_raw(b"\r\n");
    c.expect_silence(200);
    c.send_raw(b"\r\n{\"type\":\"ping\"}\n");
    assert_eq!(c.recv(), serde_json::json!({"event":"success","type":"pong"}));
    // HTTP: answered as HTTP (section 13's row), here a 404, then closed.
    let mut c = s.connect();
    c.send_raw(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    match c.read_line(std::time::Duration::from_secs(10)) {
        ReadOutcome::Line(l) => assert!(l.starts_with("HTTP/1.1 404"), "{l}"),
        _ => panic!("no HTTP answer"),
    }
    let closed = (0..20).any(|_| matches!(c.read_line(std::time::Duration::from_secs(10)), ReadOutcome::Closed(_)));
    assert!(closed, "an HTTP error answer closes the connection");
}
