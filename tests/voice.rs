//! Voice calls over real TCP and UDP (issue 4; PROTOCOL.md sections 9 and 12, FORMAT.md
//! "Audio Call"): every FORMAT.md voice shape field by field, offline / unknown / self /
//! busy, the call deadline, every way a call ends, and the UDP relay (latching, forwarding
//! unchanged, drops, re-latching, rate limit, forgetting both parties when the call ends).
//!
//! Every message is compared whole. "Nothing arrives" is a bounded wait (300 ms unless said
//! otherwise) on a real socket.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";

const USERS: [(&str, &str, &str); 4] =
    [(ALICE, "alice", "alice-pw"), (BOB, "bob", "bob-pw"), (CAROL, "carol", "carol-pw"), (DAVE, "dave", "dave-pw")];

/// How long "nothing arrives" is watched for.
const QUIET_MS: u64 = 300;

fn plain_of(email: &str) -> &'static str {
    USERS.iter().find(|(e, _, _)| *e == email).map(|(_, _, p)| *p).expect("known test user")
}

/// A server with `extra` flags and the four test accounts.
fn server_with(extra: &[&str]) -> Server {
    let s = Server::start_with(extra);
    for (email, username, plain) in USERS {
        s.user_add(email, username, plain);
    }
    s
}

fn server() -> Server {
    server_with(&[])
}

/// A fresh connection logged in as `email`.
fn user(s: &Server, email: &str) -> Client {
    logged_in(s, email, plain_of(email))
}

// ---------------------------------------------------------------------------------------------
// Signalling helpers
// ---------------------------------------------------------------------------------------------

/// `{"type":"voice","event":E,"details":{"email":X}}`: both the request shape and the shape of
/// every server voice message except `accept` and errors.
fn voice(event: &str, email: &str) -> Value {
    json!({"type":"voice","event":event,"details":{"email":email}})
}

/// A voice request exactly as FORMAT.md prints it: pretty, tab-indented, `type` first.
fn format_md_request(event: &str, email: &str) -> Vec<u8> {
    format!("{{\n\t\"type\": \"voice\",\n\t\"event\": \"{event}\",\n\t\"details\": {{\n\t\t\"email\": \"{email}\"\n\t}}\n}}\n")
        .into_bytes()
}

/// Reads the next message and asserts it is exactly `voice(event, email)`.
fn expect_voice(c: &mut Client, event: &str, email: &str, who: &str) {
    let v = c.recv();
    assert_eq!(v, voice(event, email), "{who}: expected voice {event} {{email:{email}}}, got {v}\n{}", c.tail());
}

fn expect_failed_voice(c: &mut Client, who: &str) -> String {
    let v = c.recv();
    assert_eq!(v["event"], json!("failed"), "{who}: expected a failed voice answer, got {v}\n{}", c.tail());
    assert_failed(&v, "voice")
}

fn quiet(c: &mut Client) {
    c.expect_silence(QUIET_MS);
}

/// Nothing arrives on any of `cs`: the first is watched for 300 ms, the rest briefly after that
/// (whatever the server sent them meanwhile is already there).
fn quiet_all(cs: &mut [&mut Client]) {
    for (i, c) in cs.iter_mut().enumerate() {
        c.expect_silence(if i == 0 { QUIET_MS } else { 30 });
    }
}

/// The `accept` a party receives once the callee answers.
#[derive(Debug, Clone)]
struct Accept {
    ip: String,
    port: u16,
    token: String,
}

impl Accept {
    fn relay(&self) -> SocketAddr {
        let ip: IpAddr =
            self.ip.parse().unwrap_or_else(|e| panic!("accept ip {:?} is not an IP address: {e}", self.ip));
        SocketAddr::new(ip, self.port)
    }
}

/// Checks an `accept` message field by field: exactly `type`, `event`, `details`; details
/// exactly `ip`, `port`, `token`, all strings; port a decimal port number; token 32 hex digits.
fn parse_accept(v: &Value, who: &str) -> Accept {
    let obj = v.as_object().unwrap_or_else(|| panic!("{who}: accept is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["details", "event", "type"], "{who}: accept must have exactly type/event/details: {v}");
    assert_eq!(v["type"], json!("voice"), "{who}: type of {v}");
    assert_eq!(v["event"], json!("accept"), "{who}: event of {v}");
    let d = v["details"].as_object().unwrap_or_else(|| panic!("{who}: details is not an object: {v}"));
    let mut dkeys: Vec<&str> = d.keys().map(|k| k.as_str()).collect();
    dkeys.sort();
    assert_eq!(dkeys, vec!["ip", "port", "token"], "{who}: accept details must be exactly ip/port/token: {v}");
    let ip = d["ip"].as_str().unwrap_or_else(|| panic!("{who}: ip must be a string (FORMAT.md): {v}")).to_string();
    let port_s = d["port"].as_str().unwrap_or_else(|| panic!("{who}: port must be a string (FORMAT.md \"0000\"): {v}"));
    assert!(
        !port_s.is_empty() && port_s.chars().all(|c| c.is_ascii_digit()),
        "{who}: port must be decimal digits: {v}"
    );
    let port: u16 = port_s.parse().unwrap_or_else(|e| panic!("{who}: port {port_s:?} is not a port number: {e}"));
    assert_ne!(port, 0, "{who}: port 0 in {v}");
    let token = d["token"].as_str().unwrap_or_else(|| panic!("{who}: token must be a string: {v}")).to_string();
    assert_eq!(token.len(), 32, "{who}: token must be 32 hex characters: {v}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{who}: token must be hex: {v}");
    Accept { ip, port, token }
}

fn expect_accept(c: &mut Client, who: &str) -> Accept {
    let v = c.recv();
    parse_accept(&v, who)
}

/// Tokens and relay address of an answered call.
struct Call {
    caller: Accept,
    callee: Accept,
}

impl Call {
    fn relay(&self) -> SocketAddr {
        self.caller.relay()
    }
}

/// `a` (logged in as `a_email`) calls `b_email`; `b` answers. Asserts the request and both
/// accepts, and that both parties were told the same relay with different tokens.
fn answered_call(a: &mut Client, a_email: &str, b: &mut Client, b_email: &str) -> Call {
    a.send(&voice("call", b_email));
    expect_voice(b, "request", a_email, "callee");
    b.send(&voice("accept", a_email));
    let callee = expect_accept(b, "callee");
    let caller = expect_accept(a, "caller");
    assert_eq!(caller.ip, callee.ip, "both parties get the same relay ip");
    assert_eq!(caller.port, callee.port, "both parties get the same relay port");
    assert_ne!(caller.token, callee.token, "each party gets its own token");
    Call { caller, callee }
}

// ---------------------------------------------------------------------------------------------
// UDP helpers
// ---------------------------------------------------------------------------------------------

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    s.set_read_timeout(Some(Duration::from_millis(QUIET_MS))).unwrap();
    s
}

fn send_dgram(sock: &UdpSocket, relay: SocketAddr, bytes: &[u8]) {
    let n = sock.send_to(bytes, relay).unwrap_or_else(|e| panic!("udp send_to {relay}: {e}"));
    assert_eq!(n, bytes.len(), "short udp send");
}

/// The next datagram within `limit`, with its source address.
fn recv_dgram(sock: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        sock.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A stray ICMP error from an earlier send: not a datagram.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => panic!("udp recv: {e}"),
        }
    }
}

fn show(bytes: &[u8]) -> String {
    if bytes.len() > 64 {
        format!("{} bytes starting {:?}", bytes.len(), String::from_utf8_lossy(&bytes[..64]))
    } else {
        format!("{:?}", String::from_utf8_lossy(bytes))
    }
}

/// Asserts the next datagram on `sock` (within 2 s) is exactly `want`, sent from the relay.
fn expect_dgram(sock: &UdpSocket, relay: SocketAddr, want: &[u8], what: &str) {
    match recv_dgram(sock, Duration::from_secs(2)) {
        Some((got, from)) => {
            assert_eq!(got, want, "{what}: forwarded datagram differs: got {} want {}", show(&got), show(want));
            assert_eq!(from, relay, "{what}: a forwarded datagram must come from the relay's address");
        }
        None => panic!("{what}: datagram {} was not forwarded within 2 s", show(want)),
    }
}

/// Asserts nothing arrives on `sock` for 300 ms.
fn expect_no_dgram(sock: &UdpSocket, what: &str) {
    expect_no_dgrams(&[(sock, what)]);
}

/// Asserts nothing arrives on any of `socks`: the first is watched for 300 ms, the rest
/// briefly after that.
fn expect_no_dgrams(socks: &[(&UdpSocket, &str)]) {
    for (i, (sock, what)) in socks.iter().enumerate() {
        let limit = Duration::from_millis(if i == 0 { QUIET_MS } else { 20 });
        if let Some((got, from)) = recv_dgram(sock, limit) {
            panic!("{what}: expected no datagram, got {} from {from}", show(&got));
        }
    }
}

/// Latches one socket for each party and checks that one datagram goes each way.
fn latched_pair(call: &Call) -> (UdpSocket, UdpSocket) {
    let relay = call.relay();
    let ua = udp();
    let ub = udp();
    send_dgram(&ua, relay, call.caller.token.as_bytes());
    send_dgram(&ub, relay, call.callee.token.as_bytes());
    send_dgram(&ua, relay, b"probe from caller");
    expect_dgram(&ub, relay, b"probe from caller", "caller -> callee after latching");
    send_dgram(&ub, relay, b"probe from callee");
    expect_dgram(&ua, relay, b"probe from callee", "callee -> caller after latching");
    (ua, ub)
}

/// Asserts the relay forwards nothing between the two sockets, either way.
fn expect_relay_forgot(ua: &UdpSocket, ub: &UdpSocket, relay: SocketAddr, why: &str) {
    send_dgram(ua, relay, b"caller after the call ended");
    send_dgram(ub, relay, b"callee after the call ended");
    expect_no_dgrams(&[(ub, &format!("{why}: caller's datagram")), (ua, &format!("{why}: callee's datagram"))]);
}

/// A deterministic payload: direction byte, sequence number (big endian u32), then
/// pseudo-random bytes of every value; some are exactly 1,500 bytes (the largest allowed).
fn payload(dir: u8, seq: u32) -> Vec<u8> {
    let len = if seq % 97 == 0 { 1500 } else { 5 + (seq as usize * 37) % 700 };
    let mut v = Vec::with_capacity(len);
    v.push(dir);
    v.extend_from_slice(&seq.to_be_bytes());
    let mut x = seq.wrapping_mul(2_654_435_761) ^ (dir as u32) << 24;
    while v.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        v.push((x >> 16) as u8);
    }
    v
}

/// Datagrams with their source, and when the last one arrived.
type Collected = (Vec<(Vec<u8>, SocketAddr)>, Instant);

/// Collects datagrams on `sock` in a thread until `n` arrived (then 200 ms more, to catch
/// extras) or nothing came for `stall`; counts arrivals in `count`.
fn spawn_collector(
    sock: UdpSocket,
    n: usize,
    stall: Duration,
    count: Arc<AtomicUsize>,
) -> thread::JoinHandle<Collected> {
    thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut last = Instant::now();
        let hard = Instant::now() + Duration::from_secs(30);
        let mut done_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now > hard || now.duration_since(last) > stall {
                break;
            }
            if let Some(t) = done_at {
                if now.duration_since(t) > Duration::from_millis(200) {
                    break;
                }
            }
            match sock.recv_from(&mut buf) {
                Ok((k, from)) => {
                    got.push((buf[..k].to_vec(), from));
                    last = Instant::now();
                    count.fetch_add(1, Ordering::SeqCst);
                    if got.len() >= n && done_at.is_none() {
                        done_at = Some(last);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("udp recv in collector: {e}"),
            }
        }
        (got, last)
    })
}

/// Checks that `got` holds exactly the payloads `dir`/0..n, each once, byte-identical, all
/// from the relay. Order is not checked (UDP).
fn check_stream(got: &[(Vec<u8>, SocketAddr)], dir: u8, n: u32, relay: SocketAddr, what: &str) {
    let mut seen = BTreeSet::new();
    for (bytes, from) in got {
        assert_eq!(*from, relay, "{what}: datagram from {from}, expected the relay {relay}");
        assert!(bytes.len() >= 5 && bytes[0] == dir, "{what}: unexpected datagram {}", show(bytes));
        let seq = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        assert!(seq < n, "{what}: sequence number {seq} out of range");
        assert_eq!(*bytes, payload(dir, seq), "{what}: datagram {seq} was altered");
        assert!(seen.insert(seq), "{what}: datagram {seq} arrived twice");
    }
    if seen.len() != n as usize {
        let missing: Vec<u32> = (0..n).filter(|s| !seen.contains(s)).take(20).collect();
        panic!("{what}: {} of {n} datagrams arrived; first missing: {missing:?}", seen.len());
    }
}

// ---------------------------------------------------------------------------------------------
// FORMAT.md shapes, field by field
// ---------------------------------------------------------------------------------------------

#[test]
fn format_call_request_and_accept_shapes() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    // The call exactly as FORMAT.md prints it.
    a.send_raw(&format_md_request("call", BOB));
    let v = b.recv();
    assert_eq!(v, json!({"type":"voice","event":"request","details":{"email":ALICE}}), "request shape");
    quiet(&mut a); // ringing: the caller is told nothing yet
    b.send_raw(&format_md_request("accept", ALICE));
    let vb = b.recv();
    let va = a.recv();
    let acc_b = parse_accept(&vb, "callee");
    let acc_a = parse_accept(&va, "caller");
    // ip: no --public-ip, so the local address of the callee's TCP connection.
    assert_eq!(acc_a.ip, "127.0.0.1", "caller accept ip: {va}");
    assert_eq!(acc_b.ip, "127.0.0.1", "callee accept ip: {vb}");
    let udp_addr = s.udp_addr.unwrap_or_else(|| panic!("listening line lacks udp=\n{}", s.tail()));
    assert_eq!(va["details"]["port"], json!(udp_addr.port().to_string()), "caller accept port is the relay port");
    assert_eq!(vb["details"]["port"], json!(udp_addr.port().to_string()), "callee accept port is the relay port");
    assert_ne!(acc_a.token, acc_b.token, "the token differs per party");
    quiet_all(&mut [&mut a, &mut b]);
}

#[test]
fn format_reject_shape() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    a.send_raw(&format_md_request("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    b.send_raw(&format_md_request("reject", ALICE));
    let v = a.recv();
    assert_eq!(v, json!({"type":"voice","event":"reject","details":{"email":BOB}}), "reject shape to the caller");
    // the rejecting connection is told nothing
    quiet_all(&mut [&mut b, &mut a]);
    // The call is over: accepting it now fails, and a new call rings.
    b.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b, "accept after reject");
    quiet(&mut a);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee, second call");
}

#[test]
fn format_time_shape_with_call_timeout_1() {
    let s = server_with(&["--call-timeout", "1"]);
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    a.send_raw(&format_md_request("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    let v = a.recv();
    assert_eq!(v, json!({"type":"voice","event":"time","details":{"email":BOB}}), "time shape to the caller");
    let v = b.recv();
    assert_eq!(v, json!({"type":"voice","event":"time","details":{"email":ALICE}}), "time shape to the callee");
}

#[test]
fn format_offline_shape_and_its_cases() {
    let s = server();
    let mut a = user(&s, ALICE);
    // Dave has never connected.
    a.send_raw(&format_md_request("call", DAVE));
    let v = a.recv();
    assert_eq!(v, json!({"type":"voice","event":"offline","details":{"email":DAVE}}), "offline shape");

    // An anonymous connection is nobody's connection.
    let mut anon = s.connect();
    a.send(&voice("call", DAVE));
    expect_voice(&mut a, "offline", DAVE, "callee connected but not logged in");
    quiet(&mut anon);

    // Logged in, then logged out on the same (still open) connection.
    let mut d = user(&s, DAVE);
    let v = d.request(&json!({"type":"logout"}));
    assert_eq!(v, json!({"event":"success","type":"logout"}));
    a.send(&voice("call", DAVE));
    expect_voice(&mut a, "offline", DAVE, "callee logged out");
    quiet(&mut d);

    // Logged in, then disconnected.
    let d2 = user(&s, DAVE);
    d2.close();
    a.send(&voice("call", DAVE));
    expect_voice(&mut a, "offline", DAVE, "callee disconnected");

    // None of those left the caller in a call: a call to an online user rings.
    let mut b = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee after the offline calls");
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_callee_is_failed() {
    let s = server();
    let mut a = user(&s, ALICE);
    a.send(&voice("call", "nobody@example.com"));
    expect_failed_voice(&mut a, "call to an unknown user");
    // The caller is not left ringing.
    let mut b = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee after the failed call");
}

#[test]
fn calling_oneself_is_failed() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut a2 = user(&s, ALICE);
    a.send(&voice("call", ALICE));
    expect_failed_voice(&mut a, "call to oneself");
    quiet(&mut a2); // the other device does not ring
    let mut b = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee after the failed self-call");
}

#[test]
fn calling_oneself_in_other_case_is_failed() {
    // Emails compare case-insensitively (PROTOCOL.md section 4).
    let s = server();
    let mut a = user(&s, ALICE);
    let mut a2 = user(&s, ALICE);
    a.send(&voice("call", "ALICE@Example.COM"));
    expect_failed_voice(&mut a, "call to oneself in upper case");
    quiet(&mut a2);
}

#[test]
fn accept_or_reject_without_pending_call_is_failed() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    b.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b, "accept with no call at all");
    b.send(&voice("reject", ALICE));
    expect_failed_voice(&mut b, "reject with no call at all");
    quiet(&mut a);
    // A pending call from Alice to Bob: the caller cannot accept its own call, and Bob cannot
    // accept a call from Carol that does not exist.
    let mut c = user(&s, CAROL);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    a.send(&voice("accept", BOB));
    expect_failed_voice(&mut a, "caller accepting its own call");
    b.send(&voice("accept", CAROL));
    expect_failed_voice(&mut b, "accept of a call from someone else");
    b.send(&voice("reject", CAROL));
    expect_failed_voice(&mut b, "reject of a call from someone else");
    quiet(&mut c);
    // The real call is untouched.
    answered_call_after_request(&mut a, &mut b);
}

/// Bob accepts Alice's ringing call.
fn answered_call_after_request(a: &mut Client, b: &mut Client) -> Call {
    b.send(&voice("accept", ALICE));
    let callee = expect_accept(b, "callee");
    let caller = expect_accept(a, "caller");
    assert_ne!(caller.token, callee.token);
    Call { caller, callee }
}

#[test]
fn voice_requests_need_login_and_well_typed_fields() {
    let s = server();
    let mut anon = s.connect();
    let v = anon.request(&voice("call", BOB));
    assert_eq!(v, json!({"event":"invalid","type":"voice","message":"log in or register first"}));
    let mut a = user(&s, ALICE);
    for req in [
        json!({"type":"voice","event":"call"}),
        json!({"type":"voice","event":"call","details":{}}),
        json!({"type":"voice","event":"call","details":{"email":null}}),
        json!({"type":"voice","event":"call","details":{"email":42}}),
        json!({"type":"voice","event":"call","details":"bob@example.com"}),
        json!({"type":"voice","details":{"email":BOB}}),
    ] {
        let v = a.request(&req);
        assert_invalid(&v, "voice");
    }
    a.ping();
}

// ---------------------------------------------------------------------------------------------
// Busy
// ---------------------------------------------------------------------------------------------

#[test]
fn busy_when_callee_is_ringing() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let mut c = user(&s, CAROL);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    c.send(&voice("call", BOB));
    let v = c.recv();
    assert_eq!(v, json!({"type":"voice","event":"busy","details":{"email":BOB}}), "busy shape");
    // no second request
    quiet_all(&mut [&mut b, &mut a]);
    // Calling the ringing caller is busy too.
    c.send(&voice("call", ALICE));
    expect_voice(&mut c, "busy", ALICE, "call to a caller whose call rings");
    quiet(&mut a);
    // The first call is intact.
    answered_call_after_request(&mut a, &mut b);
    quiet(&mut c);
    // The busy caller is free: its next call rings.
    let mut d = user(&s, DAVE);
    c.send(&voice("call", DAVE));
    expect_voice(&mut d, "request", CAROL, "callee of the busy caller's next call");
}

#[test]
fn busy_when_callee_is_talking() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let mut c = user(&s, CAROL);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    c.send(&voice("call", BOB));
    expect_voice(&mut c, "busy", BOB, "call to a talking callee");
    c.send(&voice("call", ALICE));
    expect_voice(&mut c, "busy", ALICE, "call to a talking caller");
    quiet_all(&mut [&mut a, &mut b]);
    // The call still relays.
    let _pair = latched_pair(&call);
    let mut d = user(&s, DAVE);
    c.send(&voice("call", DAVE));
    expect_voice(&mut d, "request", CAROL, "callee of the busy caller's next call");
}

#[test]
fn busy_when_caller_is_already_in_a_call() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let mut c = user(&s, CAROL);
    // Alice's call to Bob rings; Alice calls Carol.
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    a.send(&voice("call", CAROL));
    expect_voice(&mut a, "busy", CAROL, "caller whose call rings");
    quiet(&mut c);
    // Bob (callee of a ringing call) calls Carol.
    b.send(&voice("call", CAROL));
    expect_voice(&mut b, "busy", CAROL, "callee whose call rings");
    quiet(&mut c);
    // Talking now.
    answered_call_after_request(&mut a, &mut b);
    a.send(&voice("call", CAROL));
    expect_voice(&mut a, "busy", CAROL, "talking caller");
    b.send(&voice("call", CAROL));
    expect_voice(&mut b, "busy", CAROL, "talking callee");
    quiet(&mut c);
    // offline is checked before busy.
    a.send(&voice("call", DAVE));
    expect_voice(&mut a, "offline", DAVE, "talking caller calling an offline user");
    // A user is in at most one call: Alice's other device is busy too.
    let mut a2 = user(&s, ALICE);
    a2.send(&voice("call", CAROL));
    expect_voice(&mut a2, "busy", CAROL, "other device of a talking user");
    quiet(&mut c);
}

// ---------------------------------------------------------------------------------------------
// Timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn timeout_tells_both_then_nothing_rings_and_a_new_call_works() {
    let s = server_with(&["--call-timeout", "1"]);
    let mut a = user(&s, ALICE);
    let mut b1 = user(&s, BOB);
    let mut b2 = user(&s, BOB);
    let t0 = Instant::now();
    a.send(&voice("call", BOB));
    expect_voice(&mut b1, "request", ALICE, "callee device 1");
    expect_voice(&mut b2, "request", ALICE, "callee device 2");
    expect_voice(&mut a, "time", BOB, "caller");
    let elapsed = t0.elapsed();
    expect_voice(&mut b1, "time", ALICE, "callee device 1");
    expect_voice(&mut b2, "time", ALICE, "callee device 2");
    assert!(elapsed >= Duration::from_millis(900), "time came after {elapsed:?}, before the 1 s deadline");
    assert!(elapsed <= Duration::from_millis(3000), "time came after {elapsed:?}, long after the 1 s deadline");
    // Nothing rings afterwards.
    a.expect_silence(1500);
    quiet_all(&mut [&mut b1, &mut b2]);
    // The call is gone.
    b1.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b1, "accept after time");
    quiet_all(&mut [&mut a, &mut b2]);
    // A new call is possible, and once answered it does not time out.
    a.send(&voice("call", BOB));
    expect_voice(&mut b1, "request", ALICE, "callee device 1, second call");
    expect_voice(&mut b2, "request", ALICE, "callee device 2, second call");
    b2.send(&voice("accept", ALICE));
    let callee = expect_accept(&mut b2, "callee");
    let caller = expect_accept(&mut a, "caller");
    expect_voice(&mut b1, "end", ALICE, "callee device that did not answer");
    // Past the second call's 1 s deadline: an answered call does not time out.
    a.expect_silence(1200);
    quiet_all(&mut [&mut b2, &mut b1]);
    let _pair = latched_pair(&Call { caller, callee });
}

#[test]
fn stale_deadline_does_not_end_a_new_call() {
    let s = server_with(&["--call-timeout", "1"]);
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    // Kept: half of the 1 s deadline passes in the first call.
    thread::sleep(Duration::from_millis(500));
    b.send(&voice("reject", ALICE));
    expect_voice(&mut a, "reject", BOB, "caller");
    // The first call's deadline would fire about 0.5 s into this one.
    let t1 = Instant::now();
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee, second call");
    expect_voice(&mut a, "time", BOB, "caller, second call");
    let elapsed = t1.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "second call timed out after {elapsed:?}: the first call's deadline fired"
    );
    expect_voice(&mut b, "time", ALICE, "callee, second call");
    quiet_all(&mut [&mut a, &mut b]);
}

// ---------------------------------------------------------------------------------------------
// Ends: reject, cancel, hang up, other devices
// ---------------------------------------------------------------------------------------------

#[test]
fn reject_on_one_device_ends_ringing_on_the_others() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b1 = user(&s, BOB);
    let mut b2 = user(&s, BOB);
    let mut b3 = user(&s, BOB);
    a.send(&voice("call", BOB));
    for (b, who) in [(&mut b1, "device 1"), (&mut b2, "device 2"), (&mut b3, "device 3")] {
        expect_voice(b, "request", ALICE, who);
    }
    b1.send(&voice("reject", ALICE));
    expect_voice(&mut a, "reject", BOB, "caller");
    expect_voice(&mut b2, "end", ALICE, "other ringing device 2");
    expect_voice(&mut b3, "end", ALICE, "other ringing device 3");
    quiet_all(&mut [&mut b1, &mut a, &mut b2]);
    // Gone on every device.
    b2.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b2, "accept on another device after the reject");
    quiet(&mut a);
}

#[test]
fn accept_on_one_device_gives_the_others_end_and_the_call_belongs_to_two_connections() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b1 = user(&s, BOB);
    let mut b2 = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b1, "request", ALICE, "device 1");
    expect_voice(&mut b2, "request", ALICE, "device 2");
    b2.send(&voice("accept", ALICE));
    let callee = expect_accept(&mut b2, "answering device");
    let caller = expect_accept(&mut a, "caller");
    expect_voice(&mut b1, "end", ALICE, "device that did not answer");
    quiet(&mut b1);
    // The other device cannot take the call any more.
    b1.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b1, "accept on the other device after the answer");
    quiet_all(&mut [&mut a, &mut b2]);
    let call = Call { caller, callee };
    let (ua, ub) = latched_pair(&call);
    // Hang up: only the answering connection hears about it.
    a.send(&voice("end", BOB));
    expect_voice(&mut b2, "end", ALICE, "answering device");
    quiet_all(&mut [&mut b1, &mut a]);
    expect_relay_forgot(&ua, &ub, call.relay(), "after end");
}

#[test]
fn caller_cancels_while_ringing() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b1 = user(&s, BOB);
    let mut b2 = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b1, "request", ALICE, "device 1");
    expect_voice(&mut b2, "request", ALICE, "device 2");
    a.send(&voice("end", BOB));
    expect_voice(&mut b1, "end", ALICE, "device 1");
    expect_voice(&mut b2, "end", ALICE, "device 2");
    quiet(&mut a);
    b1.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b1, "accept of a cancelled call");
    quiet(&mut a);
    // Not busy afterwards.
    a.send(&voice("call", BOB));
    expect_voice(&mut b1, "request", ALICE, "device 1, new call");
    expect_voice(&mut b2, "request", ALICE, "device 2, new call");
}

#[test]
fn end_from_caller_hangs_up_and_relay_stops() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let (ua, ub) = latched_pair(&call);
    a.send(&voice("end", BOB));
    let v = b.recv();
    assert_eq!(v, json!({"type":"voice","event":"end","details":{"email":ALICE}}), "end shape");
    quiet(&mut a);
    expect_relay_forgot(&ua, &ub, call.relay(), "after the caller's end");
    // Both are free again.
    b.send(&voice("call", ALICE));
    expect_voice(&mut a, "request", BOB, "new call the other way");
}

#[test]
fn end_from_callee_hangs_up_and_relay_stops() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let (ua, ub) = latched_pair(&call);
    b.send(&voice("end", ALICE));
    expect_voice(&mut a, "end", BOB, "caller");
    quiet(&mut b);
    expect_relay_forgot(&ua, &ub, call.relay(), "after the callee's end");
    // Latching again with the dead tokens does not revive anything.
    let (ua2, ub2) = (udp(), udp());
    send_dgram(&ua2, call.relay(), call.caller.token.as_bytes());
    send_dgram(&ub2, call.relay(), call.callee.token.as_bytes());
    send_dgram(&ua2, call.relay(), b"after relatch with a dead token");
    expect_no_dgrams(&[(&ub2, "dead token relatch"), (&ub, "dead token relatch, old socket")]);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "new call");
}

// ---------------------------------------------------------------------------------------------
// Logout and disconnect
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Party {
    Caller,
    Callee,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaves {
    Disconnecting,
    LoggingOut,
}

/// An answered call with both parties latched; then `who` leaves `how`. The other party is
/// told `end`, the relay forgets both addresses, and calling the one who left is `offline`.
fn leaving_ends_the_call_and_relay_forgets_both(who: Party, how: Leaves) {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let (ua, ub) = latched_pair(&call);
    let (leaver, leaver_email, mut stayer) = match who {
        Party::Caller => (a, ALICE, b),
        Party::Callee => (b, BOB, a),
    };
    let what = format!("{who:?} {how:?}");
    let mut leaver = match how {
        Leaves::Disconnecting => {
            drop(leaver);
            None
        }
        Leaves::LoggingOut => {
            let mut c = leaver;
            let v = c.request(&json!({"type":"logout"}));
            assert_eq!(v, json!({"event":"success","type":"logout"}), "logout answer during a call");
            Some(c)
        }
    };
    expect_voice(&mut stayer, "end", leaver_email, &format!("the other party, {what}"));
    if let Some(c) = leaver.as_mut() {
        quiet(c);
    }
    expect_relay_forgot(&ua, &ub, call.relay(), &format!("after {what}"));
    stayer.send(&voice("call", leaver_email));
    expect_voice(&mut stayer, "offline", leaver_email, &format!("calling the party that left, {what}"));
    if let Some(c) = leaver.as_mut() {
        quiet(c);
    }
}

#[test]
fn caller_disconnect_ends_the_call_and_relay_forgets_both() {
    leaving_ends_the_call_and_relay_forgets_both(Party::Caller, Leaves::Disconnecting);
}

#[test]
fn callee_disconnect_ends_the_call_and_relay_forgets_both() {
    leaving_ends_the_call_and_relay_forgets_both(Party::Callee, Leaves::Disconnecting);
}

#[test]
fn caller_logout_ends_the_call_and_relay_forgets_both() {
    leaving_ends_the_call_and_relay_forgets_both(Party::Caller, Leaves::LoggingOut);
}

#[test]
fn callee_logout_ends_the_call_and_relay_forgets_both() {
    leaving_ends_the_call_and_relay_forgets_both(Party::Callee, Leaves::LoggingOut);
}

#[test]
fn caller_disconnect_while_ringing_ends_it_on_every_callee_device() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b1 = user(&s, BOB);
    let mut b2 = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b1, "request", ALICE, "device 1");
    expect_voice(&mut b2, "request", ALICE, "device 2");
    drop(a);
    expect_voice(&mut b1, "end", ALICE, "device 1");
    expect_voice(&mut b2, "end", ALICE, "device 2");
    b1.send(&voice("accept", ALICE));
    expect_failed_voice(&mut b1, "accept after the caller left");
}

#[test]
fn callee_logout_while_ringing_ends_it_for_the_caller() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    let v = b.request(&json!({"type":"logout"}));
    assert_eq!(v, json!({"event":"success","type":"logout"}), "logout answer while ringing");
    expect_voice(&mut a, "end", BOB, "caller after the only callee device logged out");
    quiet(&mut b);
    // Alice is free again.
    let mut c = user(&s, CAROL);
    a.send(&voice("call", CAROL));
    expect_voice(&mut c, "request", ALICE, "next call");
}

// ---------------------------------------------------------------------------------------------
// Relay
// ---------------------------------------------------------------------------------------------

#[test]
fn relay_port_defaults_to_the_tcp_port() {
    let s = server();
    let udp_addr = s.udp_addr.unwrap_or_else(|| panic!("listening line lacks udp=\n{}", s.tail()));
    assert_eq!(udp_addr.port(), s.addr.port(), "the UDP relay defaults to the TCP port number");
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    assert_eq!(call.caller.port, s.addr.port());
}

#[test]
fn accept_reports_public_ip_and_udp_flag() {
    let s = server_with(&["--public-ip", "203.0.113.7", "--udp", "127.0.0.1:0"]);
    let udp_addr = s.udp_addr.unwrap_or_else(|| panic!("listening line lacks udp=\n{}", s.tail()));
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    assert_eq!(call.caller.ip, "203.0.113.7", "--public-ip is the accept ip");
    assert_eq!(call.callee.ip, "203.0.113.7", "--public-ip is the accept ip");
    assert_eq!(call.caller.port, udp_addr.port(), "--udp port is the accept port");
    // The relay really is on that port.
    let relay = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), udp_addr.port());
    let (ua, ub) = (udp(), udp());
    send_dgram(&ua, relay, call.caller.token.as_bytes());
    send_dgram(&ub, relay, call.callee.token.as_bytes());
    send_dgram(&ua, relay, b"via --udp");
    expect_dgram(&ub, relay, b"via --udp", "relay on the --udp port");
}

#[test]
fn relay_forwards_1000_datagrams_each_way_unchanged() {
    const N: u32 = 1000;
    const WINDOW: usize = 64;
    let s = server_with(&["--relay-rate", "100000"]);
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let relay = call.relay();
    let (ua, ub) = latched_pair(&call);
    let got_at_a = Arc::new(AtomicUsize::new(0));
    let got_at_b = Arc::new(AtomicUsize::new(0));
    let ca = spawn_collector(ua.try_clone().unwrap(), N as usize, Duration::from_secs(5), got_at_a.clone());
    let cb = spawn_collector(ub.try_clone().unwrap(), N as usize, Duration::from_secs(5), got_at_b.clone());
    // Interleaved both ways, never more than WINDOW datagrams ahead of the receiver, so no
    // socket buffer can overflow however slowly the server is scheduled.
    let start = Instant::now();
    for i in 0..N {
        let need = (i as usize).saturating_sub(WINDOW);
        // At most 5 s; past that the collectors report what is missing.
        poll_until(Duration::from_secs(5), || {
            got_at_b.load(Ordering::SeqCst) >= need && got_at_a.load(Ordering::SeqCst) >= need
        });
        send_dgram(&ua, relay, &payload(b'A', i));
        send_dgram(&ub, relay, &payload(b'B', i));
    }
    let (at_b, _) = cb.join().expect("collector at the callee");
    let (at_a, _) = ca.join().expect("collector at the caller");
    check_stream(&at_b, b'A', N, relay, "caller -> callee");
    check_stream(&at_a, b'B', N, relay, "callee -> caller");
    eprintln!("relayed {} datagrams each way in {:?}", N, start.elapsed());
    quiet_all(&mut [&mut a, &mut b]);
}

#[test]
fn relay_drops_datagrams_before_the_peer_latches() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let relay = call.relay();
    let (ua, ub) = (udp(), udp());
    send_dgram(&ua, relay, call.caller.token.as_bytes());
    send_dgram(&ua, relay, b"before the callee latched");
    send_dgram(&ub, relay, call.callee.token.as_bytes());
    expect_no_dgrams(&[
        (&ub, "a datagram sent before the peer latched must be dropped, not queued"),
        (&ua, "latching is not answered"),
    ]);
    send_dgram(&ua, relay, b"after both latched");
    expect_dgram(&ub, relay, b"after both latched", "caller -> callee");
}

#[test]
fn relay_drops_strangers_wrong_tokens_and_oversize_datagrams() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let relay = call.relay();
    let (ua, ub) = latched_pair(&call);

    // A stranger's datagram.
    let stranger = udp();
    send_dgram(&stranger, relay, b"hello from a stranger");
    expect_no_dgrams(&[(&ub, "stranger's datagram at the callee"), (&ua, "stranger's datagram at the caller")]);

    // Wrong tokens: random hex, the caller's token cut short, the caller's token plus a newline.
    let tok = &call.caller.token;
    let mut wrong: String = tok.chars().rev().collect();
    if wrong == *tok || wrong == call.callee.token {
        wrong = "0123456789abcdef0123456789abcdef".to_string();
    }
    for bad in [wrong.clone(), tok[..31].to_string(), format!("{tok}\n")] {
        let w = udp();
        send_dgram(&w, relay, bad.as_bytes());
        send_dgram(&w, relay, b"data after a wrong token");
        let what = format!("data after wrong token {bad:?}");
        expect_no_dgrams(&[(&ub, &what), (&ua, &what)]);
        // The caller is still latched where it was: the callee's datagram goes to it, not to w.
        send_dgram(&ub, relay, b"callee after a wrong token");
        expect_dgram(&ua, relay, b"callee after a wrong token", "caller still latched");
        expect_no_dgram(&w, &format!("socket that sent wrong token {bad:?}"));
    }

    // Oversize: 1,501 bytes are dropped both ways; 1,500 bytes pass.
    let big = vec![0x5au8; 1501];
    send_dgram(&ua, relay, &big);
    send_dgram(&ub, relay, &big);
    expect_no_dgrams(&[(&ub, "1,501-byte datagram from the caller"), (&ua, "1,501-byte datagram from the callee")]);
    let max = vec![0xa5u8; 1500];
    send_dgram(&ua, relay, &max);
    expect_dgram(&ub, relay, &max, "1,500-byte datagram from the caller");

    expect_no_dgram(&stranger, "the relay never answers a stranger");
    // The session still works both ways.
    send_dgram(&ua, relay, b"still fine");
    expect_dgram(&ub, relay, b"still fine", "caller -> callee after the drops");
    send_dgram(&ub, relay, b"still fine too");
    expect_dgram(&ua, relay, b"still fine too", "callee -> caller after the drops");
}

#[test]
fn relatching_from_a_new_socket_moves_the_stream() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let relay = call.relay();
    let (ua1, ub1) = latched_pair(&call);
    // The caller's NAT mapping changes.
    let ua2 = udp();
    send_dgram(&ua2, relay, call.caller.token.as_bytes());
    send_dgram(&ua2, relay, b"from the caller's new socket");
    expect_dgram(&ub1, relay, b"from the caller's new socket", "caller (new socket) -> callee");
    send_dgram(&ub1, relay, b"to the caller's new socket");
    expect_dgram(&ua2, relay, b"to the caller's new socket", "callee -> caller's new socket");
    expect_no_dgram(&ua1, "the caller's old socket after re-latching");
    send_dgram(&ua1, relay, b"from the caller's old socket");
    expect_no_dgram(&ub1, "a datagram from the caller's old (unlatched) address");
    // Now the callee moves too.
    let ub2 = udp();
    send_dgram(&ub2, relay, call.callee.token.as_bytes());
    send_dgram(&ub2, relay, b"from the callee's new socket");
    expect_dgram(&ua2, relay, b"from the callee's new socket", "callee (new socket) -> caller");
    send_dgram(&ua2, relay, b"to the callee's new socket");
    expect_dgram(&ub2, relay, b"to the callee's new socket", "caller -> callee's new socket");
    expect_no_dgrams(&[(&ub1, "the callee's old socket after re-latching"), (&ua1, "the caller's old socket")]);
}

#[test]
fn tokens_are_fresh_per_call_and_die_with_it() {
    let s = server();
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call1 = answered_call(&mut a, ALICE, &mut b, BOB);
    let (ua, ub) = latched_pair(&call1);
    a.send(&voice("end", BOB));
    expect_voice(&mut b, "end", ALICE, "callee");
    let call2 = answered_call(&mut a, ALICE, &mut b, BOB);
    let toks = [&call1.caller.token, &call1.callee.token, &call2.caller.token, &call2.callee.token];
    let distinct: BTreeSet<&String> = toks.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "tokens must be unique per party and call: {toks:?}");
    let relay = call2.relay();
    // A dead token from the first call does not latch anyone in the second.
    let x = udp();
    send_dgram(&x, relay, call1.caller.token.as_bytes());
    let y = udp();
    send_dgram(&y, relay, call2.callee.token.as_bytes());
    send_dgram(&y, relay, b"callee in call 2");
    expect_no_dgram(&x, "socket latched with a dead token");
    // The old sockets are not part of the new call either.
    send_dgram(&ua, relay, b"old caller socket");
    expect_no_dgram(&y, "old caller socket in call 2");
    // The live tokens work.
    let z = udp();
    send_dgram(&z, relay, call2.caller.token.as_bytes());
    send_dgram(&z, relay, b"caller in call 2");
    expect_dgram(&y, relay, b"caller in call 2", "call 2 caller -> callee");
    send_dgram(&y, relay, b"callee in call 2 again");
    expect_dgram(&z, relay, b"callee in call 2 again", "call 2 callee -> caller");
    expect_no_dgram(&ub, "old callee socket");
}

#[test]
fn relay_rate_limit_per_party_default_200_per_second() {
    const SENT: u32 = 400;
    let s = server(); // default --relay-rate 200, burst 200
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    let call = answered_call(&mut a, ALICE, &mut b, BOB);
    let relay = call.relay();
    let (ua, ub) = latched_pair(&call);
    thread::sleep(Duration::from_millis(200)); // Kept: the probes' tokens come back.
    let count = Arc::new(AtomicUsize::new(0));
    let cb = spawn_collector(ub.try_clone().unwrap(), SENT as usize, Duration::from_millis(700), count);
    let t0 = Instant::now();
    for i in 0..SENT {
        send_dgram(&ua, relay, &payload(b'A', i));
        if i % 20 == 19 {
            // Kept: the flood's pace is part of what this test sends.
            thread::sleep(Duration::from_millis(2));
        }
    }
    // The limit is per party: the callee is not limited by the caller's flood.
    send_dgram(&ub, relay, b"callee during the caller's flood");
    expect_dgram(&ua, relay, b"callee during the caller's flood", "callee -> caller while the caller is limited");
    let (got, last) = cb.join().expect("collector");
    // Whatever got through is intact and unique.
    let mut seqs = BTreeSet::new();
    for (bytes, from) in &got {
        assert_eq!(*from, relay);
        let seq = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        assert_eq!(*bytes, payload(b'A', seq), "datagram {seq} altered");
        assert!(seqs.insert(seq), "datagram {seq} twice");
    }
    let n = got.len();
    eprintln!("rate limit: {n} of {SENT} forwarded, last arrival {:?} after the first send", last - t0);
    // Every forwarded datagram was forwarded before it arrived, so at most the burst plus what
    // refilled between the first send and the last arrival got through.
    let window = last.saturating_duration_since(t0).as_secs_f64();
    let upper = 201 + (200.0 * window).ceil() as usize + 1;
    assert!(n >= 200, "only {n} of {SENT} datagrams forwarded: the burst of 200 must pass");
    assert!(
        n <= upper,
        "{n} of {SENT} datagrams forwarded within {window:.3} s: above 200/s with a burst of 200 (max {upper})"
    );
    assert!(n < SENT as usize, "all {SENT} datagrams forwarded: no rate limit");
    // Tokens come back (kept: they do with time).
    thread::sleep(Duration::from_millis(300));
    send_dgram(&ua, relay, b"after the bucket refilled");
    expect_dgram(&ub, relay, b"after the bucket refilled", "caller after the limit");
}

/// A call in progress when the server is stopped ends like any other: its row says when
/// and how (it once kept `ended_at` NULL, because shutdown closed sockets behind the core's
/// back).
#[test]
fn a_call_in_progress_at_shutdown_is_stored_as_ended() {
    let mut s = server_with(&[]);
    let mut a = user(&s, ALICE);
    let mut b = user(&s, BOB);
    a.send(&voice("call", BOB));
    expect_voice(&mut b, "request", ALICE, "callee");
    b.send(&voice("accept", ALICE));
    expect_accept(&mut b, "callee");
    expect_accept(&mut a, "caller");
    assert!(s.stop().success(), "{}", s.tail());
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    let (ended, outcome): (Option<i64>, Option<String>) =
        db.query_row("SELECT ended_at, outcome FROM calls", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(ended.is_some(), "ended_at is NULL after a shutdown");
    assert_eq!(outcome.as_deref(), Some("disconnected"));
}
