//! WebSocket and HTTP on the one port (PROTOCOL.md sections 13 and 18), checked with a
//! client that is not natter's code: tungstenite for WebSocket, raw HTTP over TCP.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{client::IntoClientRequest, Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn ws_connect(s: &Server, origin: Option<&str>) -> Result<Ws, String> {
    let stream = TcpStream::connect(s.addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut req = format!("ws://{}/ws", s.addr).into_client_request().map_err(|e| e.to_string())?;
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().map_err(|_| "origin")?);
    }
    tungstenite::client(req, stream).map(|(ws, _)| ws).map_err(|e| e.to_string())
}

/// The next server message as JSON (one object per text message, no newline).
fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                assert!(!t.contains('\n'), "one object per message, without the newline: {t:?}");
                return serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

fn login_ws(ws: &mut Ws, email: &str, plain: &str) {
    send(ws, &json!({"type":"login","details":{"email":email,"password":md5_hex(plain)}}).to_string());
    let v = next(ws);
    assert_eq!((v["event"].as_str(), v["type"].as_str()), (Some("success"), Some("login")), "{v}");
}

/// The close frame the server ends with.
fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    for _ in 0..10 {
        match ws.read() {
            Ok(Message::Close(f)) => return f.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// A raw HTTP request; the whole answer until the server closes (or 5 s).
fn http(s: &Server, request: &str) -> String {
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    c.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if request.contains("Connection: close") || !String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200") {
            continue;
        }
        // A 200 keeps the connection: stop once the body is complete.
        let text = String::from_utf8_lossy(&out).into_owned();
        if let (Some(end), Some(len)) = (
            text.find("\r\n\r\n"),
            text.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|n| n.trim().parse::<usize>().ok()),
        ) {
            if out.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn objects_span_messages_and_several_share_one() {
    let s = Server::start();
    s.user_add(&email("ann"), "ann", &plain("ann"));
    let mut ws = ws_connect(&s, None).expect("upgrade");
    // Two objects in one message, then one split over three.
    send(&mut ws, r#"{"type":"ping"} {"type":"ping"}"#);
    for piece in [r#"{"ty"#, r#"pe":"pi"#, r#"ng"}"#] {
        send(&mut ws, piece);
    }
    for _ in 0..3 {
        assert_eq!(next(&mut ws), json!({"event":"success","type":"pong"}));
    }
    // Section 3's rules hold as on TCP.
    send(&mut ws, r#"{"type":"nonsense"}"#);
    assert_eq!(next(&mut ws)["event"], "invalid");
    login_ws(&mut ws, &email("ann"), &plain("ann"));
}

#[test]
fn a_tcp_user_and_a_websocket_user_of_one_account_both_get_everything() {
    let s = Server::start();
    for n in ["ann", "bob"] {
        s.user_add(&email(n), n, &plain(n));
    }
    let mut tcp = logged_in(&s, &email("ann"), &plain("ann"));
    let mut ws = ws_connect(&s, Some(&format!("http://{}", s.addr))).expect("same-origin upgrade");
    login_ws(&mut ws, &email("ann"), &plain("ann"));
    let mut bob = logged_in(&s, &email("bob"), &plain("bob"));
    for i in 0..3 {
        let v = bob.request(
            &json!({"event":"personal","type":"message","details":{"to":email("ann"),"message":format!("hi {i}")}}),
        );
        assert_eq!(v["event"], "sent", "{v}");
        let a = tcp.recv();
        let b = next(&mut ws);
        assert_eq!(a, b, "the same delivery on both transports");
        assert_eq!(b["details"]["message"], format!("hi {i}"));
    }
    // And a message sent over WebSocket reaches bob.
    send(
        &mut ws,
        &json!({"event":"personal","type":"message","details":{"to":email("bob"),"message":"from the browser"}})
            .to_string(),
    );
    assert_eq!(next(&mut ws)["event"], "sent");
    assert_eq!(bob.recv()["details"]["message"], "from the browser");
}

#[test]
fn binary_oversize_and_close_get_their_codes_and_ping_its_pong() {
    let s = Server::start_with(&["--max-frame", "1024"]);
    let mut ws = ws_connect(&s, None).expect("upgrade");
    ws.send(Message::Ping(b"are you there".to_vec().into())).expect("ping");
    ws.flush().expect("flush");
    match ws.read().expect("read") {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).expect("binary");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Unsupported), "binary: 1003");

    let mut ws = ws_connect(&s, None).expect("upgrade");
    ws.send(Message::text("x".repeat(2000))).expect("big");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Size), "over --max-frame: 1009");

    let mut ws = ws_connect(&s, None).expect("upgrade");
    ws.close(None).expect("close");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Normal), "close is answered with close");
}

#[test]
fn http_answers_404_405_400_426_403_and_serves_the_page() {
    let s = Server::start();
    let page = http(&s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'"), "{page}");
    assert!(page.contains("X-Content-Type-Options: nosniff") && page.contains("ETag: \""), "{page}");
    assert!(page.contains("<script src=\"/app.js\""), "{page}");
    let status = |req: &str| http(&s, req).lines().next().unwrap_or("").to_owned();
    assert_eq!(status("GET /secret HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(status("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(status(&format!("{upgrade}Sec-WebSocket-Version: 8\r\n\r\n")), "HTTP/1.1 426 Upgrade Required");
    // The cross-site check, through a real client: refused with 403.
    let err = ws_connect(&s, Some("http://evil.example")).err().unwrap_or_default();
    assert!(err.contains("403"), "{err}");
    // A listed origin passes.
    let s2 = Server::start_with(&["--ws-origins", "https://chat.example.org"]);
    assert!(ws_connect(&s2, Some("https://chat.example.org")).is_ok());
    // Plain JSON on the same port is untouched by all of this.
    let mut c = s.connect();
    c.ping();
}

#[test]
fn metrics_count_websocket_connections_as_ws() {
    let s = Server::start_with(&["--metrics", "127.0.0.1:0"]);
    let mut ws = ws_connect(&s, None).expect("upgrade");
    send(&mut ws, r#"{"type":"ping"}"#);
    assert_eq!(next(&mut ws)["type"], "pong");
    let mut plain = s.connect();
    plain.ping();
    let m = scrape(&s.metrics_url());
    assert_eq!(m.get("natter_connections_open{transport=\"ws\"}"), Some(&1.0), "{m:?}");
    assert_eq!(m.get("natter_connections_open{transport=\"plain\"}"), Some(&1.0), "{m:?}");
    // Every byte a connection was given counts in the output budget, framing and the
    // transport's own answers (pages, pongs) included: once all is written, none is held.
    // (Counting the unframed lines only once took the total below zero.)
    assert!(http(&s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 200"));
    for _ in 0..20 {
        ws.send(Message::Ping(b"p".to_vec().into())).expect("ping");
        send(&mut ws, r#"{"type":"ping"}"#);
        assert_eq!(next(&mut ws)["type"], "pong");
    }
    let drained = poll_until(Duration::from_secs(10), || {
        scrape(&s.metrics_url()).get("natter_output_unsent_bytes") == Some(&0.0)
    });
    assert!(drained, "{:?}", scrape(&s.metrics_url()).get("natter_output_unsent_bytes"));
}

#[test]
fn hostile_http_and_frames_are_refused_and_nothing_else_is_hurt() {
    let s = Server::start_with(&["--auth-timeout", "2"]);
    s.user_add(&email("ann"), "ann", &plain("ann"));
    let mut bystander = logged_in(&s, &email("ann"), &plain("ann"));
    // Endless headers: 431 at 8 KiB.
    let endless = format!("GET / HTTP/1.1\r\nX-A: {}\r\n", "a".repeat(9000));
    assert!(http(&s, &endless).starts_with("HTTP/1.1 431"), "endless header");
    // Too many headers.
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    assert!(http(&s, &format!("GET / HTTP/1.1\r\n{many}\r\n")).starts_with("HTTP/1.1 431"));
    // A bad key.
    let bad = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: nope\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert!(http(&s, bad).starts_with("HTTP/1.1 400"));
    // Slowloris on the upgrade: half a head, then nothing; --auth-timeout closes it.
    let mut slow = TcpStream::connect(s.addr).expect("connect");
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 64];
    assert!(matches!(slow.read(&mut buf), Ok(0) | Err(_)), "closed by --auth-timeout");
    // Unmasked client frames and a 2^63 length, written raw after a real upgrade.
    for frame in [&[0x81u8, 0x02, b'h', b'i'][..], &[0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]] {
        let ws = ws_connect(&s, None).expect("upgrade");
        let mut raw = ws.into_inner();
        raw.write_all(frame).expect("write");
        let mut got = Vec::new();
        let _ = raw.read_to_end(&mut got);
        assert_eq!(got.first(), Some(&0x88), "a close frame: {got:?}");
    }
    bystander.ping();
}

/// One masked client frame, written by hand (tungstenite will not send the hostile ones).
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The bytes the server sends until it closes (or 10 s).
fn read_to_close(raw: &mut TcpStream) -> Vec<u8> {
    raw.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    got
}

#[test]
fn a_fragment_storm_is_assembled_within_max_frame_and_refused_past_it() {
    let s = Server::start_with(&["--max-frame", "65536"]);
    s.user_add(&email("ann"), "ann", &plain("ann"));
    let mut bystander = logged_in(&s, &email("ann"), &plain("ann"));

    // 40,000 one-byte fragments making one message: a ping and then spaces. It arrives whole.
    let mut text = br#"{"type":"ping"}"#.to_vec();
    text.resize(40_000, b' ');
    let mut storm = Vec::with_capacity(text.len() * 7);
    for (i, b) in text.iter().enumerate() {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        let fin = if i + 1 == text.len() { 0x80 } else { 0 };
        storm.extend(raw_frame(fin | opcode, &[*b]));
    }
    let mut raw = ws_connect(&s, None).expect("upgrade").into_inner();
    raw.write_all(&storm).expect("storm");
    raw.write_all(&raw_frame(0x81, br#"{"type":"ping"}"#)).expect("second ping");
    let mut ws = tungstenite::WebSocket::from_raw_socket(raw, tungstenite::protocol::Role::Client, None);
    for _ in 0..2 {
        assert_eq!(next(&mut ws), json!({"event":"success","type":"pong"}));
    }
    bystander.ping();

    // Fragments adding up past --max-frame end the connection with 1009, whatever their size,
    // and the server never holds the message: the connection's memory stays near a frame's.
    let mut raw = ws_connect(&s, None).expect("upgrade").into_inner();
    let mut storm = raw_frame(0x01, b"{");
    for _ in 0..70_000 {
        storm.extend(raw_frame(0x00, b" "));
    }
    let _ = raw.write_all(&storm); // the server may close before it has read everything
    let got = read_to_close(&mut raw);
    assert_eq!(got.get(..4), Some(&[0x88, 0x02, 0x03, 0xf1][..]), "close 1009: {got:?}");
    bystander.ping();
}

#[test]
fn control_frames_over_125_bytes_or_fragmented_are_a_protocol_error() {
    let s = Server::start();
    for frame in [raw_frame(0x89, &[b'p'; 126]), raw_frame(0x09, b"fragmented ping")] {
        let mut raw = ws_connect(&s, None).expect("upgrade").into_inner();
        raw.write_all(&frame).expect("write");
        let got = read_to_close(&mut raw);
        assert_eq!(got.get(..4), Some(&[0x88, 0x02, 0x03, 0xea][..]), "close 1002: {got:?}");
    }
}
