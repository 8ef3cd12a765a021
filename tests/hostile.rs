//! Hostile frames against the real binary (issue 6, "Bad input"; PROTOCOL.md sections 1, 3
//! and 12).
//!
//! `hostile_frames_table` is table-driven: every row sends raw bytes on a fresh connection
//! (anonymous or logged in) and lists what must come back: `invalid` with the connection left
//! open (then a ping on the same connection gets pong), or `invalid` and a close (only where
//! section 1 says the stream cannot be resynchronised: bytes outside an object, a frame over
//! `--max-frame`). After every row a client that has been connected since the start still
//! gets pong, so the server kept serving everybody else.
//!
//! `random_mutations_never_close_silently` is a bounded, fixed-seed fuzz loop: 300 mutations
//! (byte flips, truncations, duplications, insertions, deletions) of valid frames on one
//! connection, each followed by a ping and a sync frame whose `invalid` answer echoes a
//! unique type. A close must always come right after an `invalid`; where a reference scanner
//! says the mutated frame was complete, the connection must stay open and the ping must be
//! answered; and a fresh connection gets pong at the end.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `natter user add` with cheap argon2 parameters, asserting success.
fn add_user(s: &Server, name: &str) {
    let (e, p) = (email(name), plain(name));
    let mut args = vec!["user", "add", "--email", &e, "--username", name, "--password", &p];
    args.extend(ARGON);
    let out = s.admin(&args);
    assert!(out.status.success(), "natter user add {name}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn start_with_users(extra: &[&str]) -> Server {
    let s = Server::start_with(extra);
    add_user(&s, "alice");
    add_user(&s, "bob");
    s
}

fn login_alice(c: &mut Client) -> Result<(), String> {
    let req = json!({"type":"login","details":{"email":email("alice"),"password":md5_hex(&plain("alice"))}});
    c.send(&req);
    match next(c, READ_TIMEOUT)? {
        Some(v) if v["event"] == json!("success") && v["type"] == json!("login") => Ok(()),
        Some(v) => Err(format!("login of alice answered {v}")),
        None => Err("login of alice: the connection closed".into()),
    }
}

/// The next message within `limit`: `Ok(Some)` for a line, `Ok(None)` when the server closed
/// the connection, `Err` on timeout or on a line that is not one compact JSON object.
fn next(c: &mut Client, limit: Duration) -> Result<Option<Value>, String> {
    match c.read_line(limit) {
        ReadOutcome::Line(l) => {
            let body = l.strip_suffix('\n').ok_or_else(|| format!("line without newline {l:?}"))?;
            let v: Value = serde_json::from_str(body).map_err(|e| format!("server sent invalid JSON {body:?}: {e}"))?;
            if !v.is_object() {
                return Err(format!("server message is not an object: {body}"));
            }
            if serde_json::to_string(&v).unwrap().len() != body.len() {
                return Err(format!("server message is not compact JSON: {body:?}"));
            }
            Ok(Some(v))
        }
        ReadOutcome::Closed(_) => Ok(None),
        ReadOutcome::Timeout => Err(format!("nothing within {limit:?}")),
    }
}

/// Checks `v` is exactly `{"event":"invalid","type":T,"message":M}` with T one of `types`
/// and M one short sentence without internals (section 3).
fn check_invalid(v: &Value, types: &[&str]) -> Result<(), String> {
    let obj = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    if keys != ["event", "message", "type"] || v["event"] != json!("invalid") {
        return Err(format!("expected {{\"event\":\"invalid\",\"type\":T,\"message\":M}}, got {v}"));
    }
    let t = v["type"].as_str().ok_or_else(|| format!("type is not a string: {v}"))?;
    if !types.contains(&t) {
        return Err(format!("invalid with type {t:?}, expected one of {types:?}: {v}"));
    }
    let m = v["message"].as_str().ok_or_else(|| format!("message is not a string: {v}"))?;
    if m.trim().is_empty() || m.len() > 200 || m.contains('\n') {
        return Err(format!("message must be one short sentence: {v}"));
    }
    for bad in ["panicked", ".rs:", "SELECT ", "INSERT ", "/tmp/"] {
        if m.contains(bad) {
            return Err(format!("message leaks internals ({bad:?}): {v}"));
        }
    }
    Ok(())
}

fn is_pong(v: &Value) -> bool {
    *v == json!({"event":"success","type":"pong"})
}

/// Pings on `c` and checks the exact pong comes back next.
fn ping_ok(c: &mut Client, what: &str) -> Result<(), String> {
    c.try_send_raw(b"{\"type\":\"ping\"}\n").map_err(|e| format!("{what}: write of ping failed: {e}"))?;
    match next(c, READ_TIMEOUT) {
        Ok(Some(v)) if is_pong(&v) => Ok(()),
        Ok(Some(v)) => Err(format!("{what}: ping answered {v}, expected pong")),
        Ok(None) => Err(format!("{what}: the connection closed instead of answering ping")),
        Err(e) => Err(format!("{what}: ping: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Who {
    Anonymous,
    LoggedIn,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Limit {
    /// The default `--max-frame` (64 KiB).
    Default,
    /// `--max-frame 1024`.
    Small,
}

/// One expected answer, in order.
#[derive(Clone, Debug)]
enum Step {
    /// `{"event":"invalid","type":T,...}` with T one of these.
    Invalid(&'static [&'static str]),
    /// The exact pong.
    Pong,
    /// The server closes the connection (EOF or reset) without sending anything more.
    Closed,
}

struct Row {
    name: &'static str,
    who: Who,
    limit: Limit,
    bytes: Vec<u8>,
    expect: Vec<Step>,
}

/// The type a frame that cannot be decoded gets. Section 3: T is the request's `type` when it
/// had a string one, else "unknown". For a frame that is not valid JSON (or not UTF-8) at all
/// there is arguably no request whose type could be read, so either answer is accepted for
/// those rows; rows with valid JSON insist on one type.
const UNKNOWN: &[&str] = &["unknown"];
const PING_OR_UNKNOWN: &[&str] = &["ping", "unknown"];
const LOGIN_OR_UNKNOWN: &[&str] = &["login", "unknown"];
const MESSAGE_OR_UNKNOWN: &[&str] = &["message", "unknown"];
const LOGIN: &[&str] = &["login"];
const MESSAGE: &[&str] = &["message"];
const REGISTRATION: &[&str] = &["registration"];
const GROUP: &[&str] = &["group"];
const HISTORY: &[&str] = &["history"];
const TYPING: &[&str] = &["typing"];
const READ: &[&str] = &["read"];
const BLOCK: &[&str] = &["block"];
const PASSWORD: &[&str] = &["password"];
const DELETE: &[&str] = &["delete"];
const RESET: &[&str] = &["reset"];

fn stays_open(types: &'static [&'static str]) -> Vec<Step> {
    vec![Step::Invalid(types)]
}

fn closes() -> Vec<Step> {
    vec![Step::Invalid(UNKNOWN), Step::Closed]
}

fn row(name: &'static str, who: Who, bytes: impl Into<Vec<u8>>, expect: Vec<Step>) -> Row {
    Row { name, who, limit: Limit::Default, bytes: bytes.into(), expect }
}

fn small(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Vec<Step>) -> Row {
    Row { name, who: Who::Anonymous, limit: Limit::Small, bytes: bytes.into(), expect }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A login frame whose email is `email_json` (already JSON, quotes included).
fn login_with_email(email_json: &[u8]) -> Vec<u8> {
    let pw = md5_hex(&plain("alice"));
    cat(&[b"{\"type\":\"login\",\"details\":{\"email\":", email_json, b",\"password\":\"", pw.as_bytes(), b"\"}}\n"])
}

/// A personal message to bob whose `details` end with `extra` (already JSON, e.g. `,"time":1`).
fn message_with(extra: &[u8]) -> Vec<u8> {
    cat(&[
        b"{\"event\":\"personal\",\"type\":\"message\",\"details\":{\"to\":\"bob@example.com\",\"message\":\"hi\"",
        extra,
        b"}}\n",
    ])
}

/// A ping frame of exactly `len` bytes (padding in an unknown field), without the newline.
fn ping_of_len(len: usize) -> Vec<u8> {
    let head = b"{\"type\":\"ping\",\"pad\":\"";
    let tail = b"\"}";
    assert!(len >= head.len() + tail.len());
    let mut v = head.to_vec();
    v.resize(len - tail.len(), b'p');
    v.extend_from_slice(tail);
    assert_eq!(v.len(), len);
    v
}

fn rows() -> Vec<Row> {
    use Who::*;
    let pw = md5_hex(&plain("alice"));
    let login_details =
        |details: &str| -> Vec<u8> { format!("{{\"type\":\"login\",\"details\":{details}}}\n").into_bytes() };

    // Nesting 10,000 deep, inside a frame that fits the 64 KiB limit.
    let deep_objects = {
        let mut v = b"{\"type\":\"ping\",\"a\":".to_vec();
        for _ in 0..10_000 {
            v.extend_from_slice(b"{\"a\":");
        }
        v.push(b'1');
        v.extend(std::iter::repeat_n(b'}', 10_001));
        v.push(b'\n');
        assert!(v.len() < 65_536, "the deep frame must fit the default limit");
        v
    };
    let deep_in_login = {
        let mut v =
            format!("{{\"type\":\"login\",\"details\":{{\"email\":\"alice@example.com\",\"password\":\"{pw}\",\"x\":")
                .into_bytes();
        v.extend(std::iter::repeat_n(b'[', 10_000));
        v.extend(std::iter::repeat_n(b']', 10_000));
        v.extend_from_slice(b"}}\n");
        v
    };
    let deep_arrays = {
        let mut v = b"{\"type\":\"ping\",\"a\":".to_vec();
        v.extend(std::iter::repeat_n(b'[', 10_000));
        v.extend(std::iter::repeat_n(b']', 10_000));
        v.extend_from_slice(b"}\n");
        v
    };
    let digits = "9".repeat(10_000);
    let big_string = {
        let mut v = b"{\"type\":\"ping\",\"x\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'a', 64 * 1024));
        v.extend_from_slice(b"\"}\n");
        v
    };
    let big_message = message_with(format!(",\"pad\":\"{}\"", "m".repeat(64 * 1024)).as_bytes());

    vec![
        // ---- invalid UTF-8 ---------------------------------------------------------------
        row("invalid UTF-8 (0xff 0xfe) inside an unknown string", Anonymous, b"{\"type\":\"ping\",\"x\":\"a\xff\xfeb\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("invalid UTF-8 inside the login email", Anonymous, login_with_email(b"\"al\xc3\x28ice@example.com\""), stays_open(LOGIN_OR_UNKNOWN)),
        row("overlong UTF-8 encoding of '/'", Anonymous, b"{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("UTF-8-encoded surrogate (CESU) in a string", Anonymous, b"{\"type\":\"ping\",\"x\":\"\xed\xa0\x80\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("truncated UTF-8 sequence inside a message text", LoggedIn, message_with(b",\"x\":\"\xe2\x82\""), stays_open(MESSAGE_OR_UNKNOWN)),
        // ---- lone surrogates in \u escapes --------------------------------------------------
        row("lone high surrogate in a known field (login email)", Anonymous, login_with_email(b"\"\\ud800alice@example.com\""), stays_open(LOGIN_OR_UNKNOWN)),
        row("lone high surrogate in an unknown field of a ping", Anonymous, b"{\"type\":\"ping\",\"x\":\"\\ud800\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("lone low surrogate in an unknown field of a message", LoggedIn, message_with(b",\"extra\":\"\\udc00\""), stays_open(MESSAGE_OR_UNKNOWN)),
        row("lone surrogate in the message text", LoggedIn, b"{\"event\":\"personal\",\"type\":\"message\",\"details\":{\"to\":\"bob@example.com\",\"message\":\"a\\uD800b\"}}\n".to_vec(), stays_open(MESSAGE_OR_UNKNOWN)),
        row("reversed surrogate pair in an unknown field", Anonymous, b"{\"type\":\"ping\",\"x\":\"\\udc00\\ud800\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("lone surrogate in an object key", Anonymous, b"{\"type\":\"ping\",\"\\ud800\":1}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        // ---- deep nesting ------------------------------------------------------------------
        row("objects nested 10,000 deep in an unknown field", Anonymous, deep_objects, stays_open(PING_OR_UNKNOWN)),
        row("arrays nested 10,000 deep in an unknown field of a good login", Anonymous, deep_in_login, stays_open(LOGIN_OR_UNKNOWN)),
        row("arrays nested 10,000 deep in an unknown field", Anonymous, deep_arrays.clone(), stays_open(PING_OR_UNKNOWN)),
        row("arrays nested 10,000 deep next to a \\u escape", Anonymous, cat(&[b"{\"e\":\"\\u0041\",", &deep_arrays[1..]]), stays_open(PING_OR_UNKNOWN)),
        // ---- huge numbers (valid JSON, the request has a string type) -----------------------
        row("10,000-digit number as the time of a message", LoggedIn, message_with(format!(",\"time\":{digits}").as_bytes()), stays_open(MESSAGE)),
        row("negative 10,000-digit number as the time of a message", LoggedIn, message_with(format!(",\"time\":-{digits}").as_bytes()), stays_open(MESSAGE)),
        row("time with an exponent far out of range", LoggedIn, message_with(b",\"time\":1e999999"), stays_open(MESSAGE)),
        // ---- duplicate keys ----------------------------------------------------------------
        row("duplicate `type` with the same value", Anonymous, b"{\"type\":\"ping\",\"type\":\"ping\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("duplicate `type` with different values", Anonymous, b"{\"type\":\"ping\",\"type\":\"users\"}\n".to_vec(), stays_open(&["ping", "users", "unknown"])),
        row("duplicate key in login details", Anonymous, login_details(&format!("{{\"email\":\"alice@example.com\",\"email\":\"bob@example.com\",\"password\":\"{pw}\"}}")), stays_open(LOGIN_OR_UNKNOWN)),
        row("duplicate message text in a message", LoggedIn, message_with(b",\"message\":\"again\""), stays_open(MESSAGE_OR_UNKNOWN)),
        // Duplicates of a key the request does not use are ignored like any unknown field
        // (PROTOCOL.md section 1); duplicates of the keys it reads are `invalid` (above).
        row("duplicate unknown key in a ping is ignored", Anonymous, b"{\"type\":\"ping\",\"x\":1,\"x\":2}\n".to_vec(), vec![Step::Pong]),
        // ---- `type` of every JSON type --------------------------------------------------------
        row("type missing", Anonymous, b"{\"details\":{}}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is an integer", Anonymous, b"{\"type\":5}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is a float", LoggedIn, b"{\"type\":1.5}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is true", Anonymous, b"{\"type\":true}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is false", LoggedIn, b"{\"type\":false}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is null", Anonymous, b"{\"type\":null}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is an array", Anonymous, b"{\"type\":[\"ping\"]}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is an object", LoggedIn, b"{\"type\":{\"type\":\"ping\"}}\n".to_vec(), stays_open(UNKNOWN)),
        row("type is an unknown string", Anonymous, b"{\"type\":\"nonsense\"}\n".to_vec(), stays_open(&["nonsense"])),
        // ---- `details` missing or not an object ---------------------------------------------
        row("login without details", Anonymous, b"{\"type\":\"login\"}\n".to_vec(), stays_open(LOGIN)),
        row("login details null", Anonymous, login_details("null"), stays_open(LOGIN)),
        row("login details a number", Anonymous, login_details("42"), stays_open(LOGIN)),
        row("login details a string", Anonymous, login_details("\"alice@example.com\""), stays_open(LOGIN)),
        row("login details true", Anonymous, login_details("true"), stays_open(LOGIN)),
        row("login details an array", Anonymous, login_details(&format!("[\"alice@example.com\",\"{pw}\"]")), stays_open(LOGIN)),
        row("registration details an array", Anonymous, b"{\"type\":\"registration\",\"details\":[]}\n".to_vec(), stays_open(REGISTRATION)),
        row("message without details", LoggedIn, b"{\"event\":\"personal\",\"type\":\"message\"}\n".to_vec(), stays_open(MESSAGE)),
        row("message details a string", LoggedIn, b"{\"event\":\"personal\",\"type\":\"message\",\"details\":\"hi\"}\n".to_vec(), stays_open(MESSAGE)),
        // ---- NUL bytes -----------------------------------------------------------------------
        row("raw NUL inside an unknown string", Anonymous, b"{\"type\":\"ping\",\"x\":\"a\x00b\"}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("raw NUL inside the login email", Anonymous, login_with_email(b"\"alice\x00@example.com\""), stays_open(LOGIN_OR_UNKNOWN)),
        row("raw NUL inside a message text", LoggedIn, b"{\"event\":\"personal\",\"type\":\"message\",\"details\":{\"to\":\"bob@example.com\",\"message\":\"a\x00b\"}}\n".to_vec(), stays_open(MESSAGE_OR_UNKNOWN)),
        row("raw NUL between tokens of an object", Anonymous, b"{\"type\":\"ping\",\x00\"x\":1}\n".to_vec(), stays_open(PING_OR_UNKNOWN)),
        row("raw NUL before a frame (stray byte)", Anonymous, b"\x00{\"type\":\"ping\"}\n".to_vec(), closes()),
        // ---- size limits ---------------------------------------------------------------------
        row("a 64 KiB string (frame over the default limit)", Anonymous, big_string, closes()),
        row("a 64 KiB field in a logged-in message", LoggedIn, big_message, closes()),
        small("a frame of exactly --max-frame (1024) bytes", cat(&[&ping_of_len(1024), b"\n"]), vec![Step::Pong]),
        small("a frame of exactly --max-frame bytes, no newline after it", ping_of_len(1024), vec![Step::Pong]),
        small("a frame one byte over --max-frame (1025)", cat(&[&ping_of_len(1025), b"\n"]), closes()),
        small("whitespace between frames does not count toward --max-frame", cat(&[b"{\"type\":\"ping\"}", &[b' '; 3000], b"\n\t\r ", b"{\"type\":\"ping\"}\n"]), vec![Step::Pong, Step::Pong]),
        small("two frames of 1024 bytes packed into one write", cat(&[&ping_of_len(1024), &ping_of_len(1024)]), vec![Step::Pong, Step::Pong]),
        // ---- frames that cannot be resynchronised ---------------------------------------------
        row("stray bytes before a frame", Anonymous, b"x{\"type\":\"ping\"}\n".to_vec(), closes()),
        row("stray bytes after a good frame", LoggedIn, b"{\"type\":\"ping\"} junk\n".to_vec(), vec![Step::Pong, Step::Invalid(UNKNOWN), Step::Closed]),
        row("an array frame", Anonymous, b"[{\"type\":\"ping\"}]\n".to_vec(), closes()),
        row("a string frame", LoggedIn, b"\"ping\"\n".to_vec(), closes()),
        row("a number frame", Anonymous, b"42\n".to_vec(), closes()),
        row("a lone closing brace", Anonymous, b"}\n".to_vec(), closes()),
        // ---- the requests of sections 14-17: missing or wrongly typed fields ------------------
        row("group create without members", LoggedIn, b"{\"type\":\"group\",\"event\":\"create\",\"details\":{\"name\":\"g\"}}\n".to_vec(), stays_open(GROUP)),
        row("group create with members a string", LoggedIn, b"{\"type\":\"group\",\"event\":\"create\",\"details\":{\"name\":\"g\",\"members\":\"a@b.org\"}}\n".to_vec(), stays_open(GROUP)),
        row("group create with a number among the members", LoggedIn, b"{\"type\":\"group\",\"event\":\"create\",\"details\":{\"name\":\"g\",\"members\":[1]}}\n".to_vec(), stays_open(GROUP)),
        row("group event not a string", LoggedIn, b"{\"type\":\"group\",\"event\":7,\"details\":{\"group\":\"1\"}}\n".to_vec(), stays_open(GROUP)),
        row("group message without group", LoggedIn, b"{\"event\":\"group\",\"type\":\"message\",\"details\":{\"message\":\"x\"}}\n".to_vec(), stays_open(MESSAGE)),
        row("group id an object", LoggedIn, b"{\"type\":\"group\",\"event\":\"leave\",\"details\":{\"group\":{}}}\n".to_vec(), stays_open(GROUP)),
        row("history with both with and group", LoggedIn, b"{\"type\":\"history\",\"details\":{\"with\":\"a@b.org\",\"group\":\"1\"}}\n".to_vec(), stays_open(HISTORY)),
        row("typing without typing", LoggedIn, b"{\"type\":\"typing\",\"details\":{\"to\":\"bob@example.com\"}}\n".to_vec(), stays_open(TYPING)),
        row("typing a string", LoggedIn, b"{\"type\":\"typing\",\"details\":{\"to\":\"bob@example.com\",\"typing\":\"yes\"}}\n".to_vec(), stays_open(TYPING)),
        row("read without upto", LoggedIn, b"{\"type\":\"read\",\"details\":{\"with\":\"bob@example.com\"}}\n".to_vec(), stays_open(READ)),
        row("read upto a float", LoggedIn, b"{\"type\":\"read\",\"details\":{\"with\":\"bob@example.com\",\"upto\":1.5}}\n".to_vec(), stays_open(READ)),
        row("block without email", LoggedIn, b"{\"type\":\"block\",\"details\":{}}\n".to_vec(), stays_open(BLOCK)),
        row("password with new a number", LoggedIn, b"{\"type\":\"password\",\"details\":{\"old\":\"x\",\"new\":5}}\n".to_vec(), stays_open(PASSWORD)),
        row("delete without password", LoggedIn, b"{\"type\":\"delete\",\"details\":{}}\n".to_vec(), stays_open(DELETE)),
        row("reset with a code but no password", Anonymous, b"{\"type\":\"reset\",\"details\":{\"email\":\"a@b.org\",\"otp\":\"123456\"}}\n".to_vec(), stays_open(RESET)),
        row("login with subscribe a string", Anonymous, login_details(&format!("{{\"email\":\"alice@example.com\",\"password\":\"{pw}\",\"subscribe\":\"presence\"}}")), stays_open(LOGIN)),
        row("login subscribing to something unknown", Anonymous, login_details(&format!("{{\"email\":\"alice@example.com\",\"password\":\"{pw}\",\"subscribe\":[\"gossip\"]}}")), stays_open(LOGIN)),
        // ---- sanity: hostile-looking but valid ------------------------------------------------
        row("braces, quotes and escapes inside strings", Anonymous, b"{\"type\":\"ping\",\"x\":\"}{\\\"}]\\\\\",\"y\":\"\\u00e9\\ud83d\\ude00\"}\n".to_vec(), vec![Step::Pong]),
    ]
}

fn run_row(srv: &Server, row: &Row) -> Result<(), String> {
    let mut c = srv.connect();
    if row.who == Who::LoggedIn {
        login_alice(&mut c)?;
    }
    let closes = row.expect.iter().any(|s| matches!(s, Step::Closed));
    if let Err(e) = c.try_send_raw(&row.bytes) {
        // The server may close while a frame it already rejected is still being written.
        if !closes {
            return Err(format!("write failed: {e}"));
        }
    }
    for (i, step) in row.expect.iter().enumerate() {
        let got = next(&mut c, READ_TIMEOUT).map_err(|e| format!("answer #{i} ({step:?}): {e}"))?;
        match (step, got) {
            (Step::Invalid(types), Some(v)) => check_invalid(&v, types).map_err(|e| format!("answer #{i}: {e}"))?,
            (Step::Pong, Some(v)) if is_pong(&v) => {}
            (Step::Closed, None) => return Ok(()),
            (step, Some(v)) => return Err(format!("answer #{i}: expected {step:?}, got {v}")),
            (step, None) => return Err(format!("answer #{i}: expected {step:?}, the connection closed")),
        }
    }
    // Still open: nothing else was sent, and the same connection answers a ping.
    ping_ok(&mut c, "the same connection afterwards")
}

#[test]
fn hostile_frames_table() {
    let started = Instant::now();
    let default = start_with_users(&[]);
    let small = start_with_users(&["--max-frame", "1024"]);
    // Anonymous, so that nothing a row might (wrongly) get delivered can reach them.
    let mut observers = [default.connect(), small.connect()];
    for o in observers.iter_mut() {
        o.ping();
    }
    let rows = rows();
    let mut failures: Vec<String> = Vec::new();
    for row in &rows {
        let (srv, obs) = match row.limit {
            Limit::Default => (&default, 0),
            Limit::Small => (&small, 1),
        };
        if let Err(e) = run_row(srv, row) {
            failures.push(format!("[{}] ({:?}, {} bytes): {e}", row.name, row.who, row.bytes.len()));
        }
        if let Err(e) = ping_ok(&mut observers[obs], "the other client") {
            panic!(
                "after row [{}] the server stopped serving others: {e}\nearlier failures: {failures:#?}\n{}",
                row.name,
                srv.tail()
            );
        }
    }
    for srv in [&default, &small] {
        let lines = srv.log_lines();
        assert!(!lines.iter().any(|l| l.contains("panicked")), "the server panicked\n{}", srv.tail());
    }
    eprintln!("{} rows in {:?}", rows.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} hostile-frame rows failed:\n{}\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n"),
        default.tail()
    );
}

// ---------------------------------------------------------------------------------------------
// Random mutations
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a frame scanner must conclude about `bytes` followed by more input.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Scan {
    /// The first non-whitespace byte is not `{`: invalid, then close.
    Garbage,
    /// One complete frame of this many bytes, followed only by whitespace.
    Complete(usize),
    /// Anything else (incomplete, or more after the frame): no prediction.
    Unknown,
}

/// A reference scanner. Scanners may count only braces or braces and brackets; a prediction
/// is made only when both ways agree.
fn scan(bytes: &[u8]) -> Scan {
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let Some(start) = bytes.iter().position(|&b| !ws(b)) else {
        return Scan::Unknown;
    };
    if bytes[start] != b'{' {
        return Scan::Garbage;
    }
    let end_with = |count_brackets: bool| -> Option<usize> {
        let (mut depth, mut in_str, mut esc) = (0i64, false, false);
        for (i, &b) in bytes.iter().enumerate().skip(start) {
            if in_str {
                if esc {
                    esc = false;
                } else if b == b'\\' {
                    esc = true;
                } else if b == b'"' {
                    in_str = false;
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'[' if count_brackets => depth += 1,
                b'}' => depth -= 1,
                b']' if count_brackets => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                return Some(i + 1);
            }
        }
        None
    };
    match (end_with(false), end_with(true)) {
        (Some(a), Some(b)) if a == b && bytes[a..].iter().all(|&c| ws(c)) => Scan::Complete(a - start),
        _ => Scan::Unknown,
    }
}

fn mutate(rng: &mut Rng, base: &[u8]) -> (Vec<u8>, Vec<String>) {
    const INTERESTING: &[u8] = b"{}[]\":,\\ \n0-e.u\x00\xff";
    let mut v = base.to_vec();
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if v.is_empty() {
            v.push(b'{');
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(v.len());
                let b = if rng.below(2) == 0 { INTERESTING[rng.below(INTERESTING.len())] } else { rng.next() as u8 };
                what.push(format!("flip@{i}={b:#04x}"));
                v[i] = b;
            }
            1 => {
                let i = 1 + rng.below(v.len());
                what.push(format!("truncate@{i}"));
                v.truncate(i);
            }
            2 => {
                let i = rng.below(v.len());
                let j = (i + 1 + rng.below(40)).min(v.len());
                let k = rng.below(v.len() + 1);
                let chunk = v[i..j].to_vec();
                what.push(format!("dup[{i}..{j}]@{k}"));
                v.splice(k..k, chunk);
            }
            3 => {
                let i = rng.below(v.len());
                what.push(format!("delete@{i}"));
                v.remove(i);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                what.push(format!("insert@{i}={b:#04x}"));
                v.insert(i, b);
            }
        }
    }
    (v, what)
}

fn base_frames() -> Vec<Vec<u8>> {
    let pw = md5_hex(&plain("alice"));
    [
        r#"{"type":"ping"}"#.to_string(),
        r#"{"type":"users"}"#.to_string(),
        r#"{"event":"personal","type":"message","details":{"to":"bob@example.com","message":"hello \"bob\" {not a brace} [x]","time":1700000000}}"#.to_string(),
        r#"{"event":"global","type":"message","details":{"message":"hi all","media":"https://example.com/a.png"}}"#.to_string(),
        r#"{"type":"history","details":{"with":"bob@example.com","limit":5}}"#.to_string(),
        r#"{"type":"voice","event":"call","details":{"email":"bob@example.com"}}"#.to_string(),
        format!(r#"{{"type":"login","details":{{"email":"alice@example.com","password":"{pw}"}}}}"#),
        r#"{"type":"verify","otp":"123456"}"#.to_string(),
        r#"{"type":"ping","x":"\u00e9\ud83d\ude00","n":[1,2.5,-3e2,true,null,{"k":[]}]}"#.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

#[test]
fn random_mutations_never_close_silently() {
    const ROUNDS: usize = 300;
    const MAX_FRAME: usize = 512;
    let started = Instant::now();
    let s = start_with_users(&["--max-frame", "512"]);
    let mut observer = s.connect();
    observer.ping();
    let bases = base_frames();
    assert!(bases.iter().all(|b| b.len() <= 200), "base frames stay well under the limit");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let fresh = |s: &Server| -> Client {
        let mut c = s.connect();
        login_alice(&mut c).unwrap_or_else(|e| panic!("{e}\n{}", s.tail()));
        c
    };
    let mut c = fresh(&s);
    let (mut closes, mut kept_open, mut predicted_open, mut predicted_close) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let base = &bases[rng.below(bases.len())];
        let (m, what) = mutate(&mut rng, base);
        let prediction = scan(&m);
        let ctx = || {
            format!(
                "round {round}: mutation {what:?} of {:?} gave {:?} (scanner: {prediction:?})",
                String::from_utf8_lossy(base),
                String::from_utf8_lossy(&m)
            )
        };
        // The mutated frame, a ping, a sync frame whose `invalid` answer echoes its type, then
        // more whitespace than --max-frame: an incomplete frame cannot swallow it all, so the
        // server must either answer the sync frame or say `invalid` and close. Nothing stalls.
        let sync = format!("sync-{round}");
        let mut bytes = m.clone();
        bytes.extend_from_slice(format!("\n{{\"type\":\"ping\"}}\n{{\"type\":\"{sync}\"}}\n").as_bytes());
        bytes.extend(std::iter::repeat_n(b' ', MAX_FRAME + 100));
        bytes.push(b'\n');
        let write_failed = c.try_send_raw(&bytes).err();

        let mut pongs = 0;
        let mut last: Option<Value> = None;
        let closed = loop {
            let got = next(&mut c, READ_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}: {e} (write error: {write_failed:?})\n{}", ctx(), s.tail()));
            match got {
                None => break true,
                Some(v) if v["event"] == json!("invalid") && v["type"] == json!(sync) => break false,
                Some(v) => {
                    if is_pong(&v) {
                        pongs += 1;
                    }
                    last = Some(v);
                }
            }
        };
        if closed {
            closes += 1;
            let last =
                last.unwrap_or_else(|| panic!("{}: the server closed without sending anything\n{}", ctx(), s.tail()));
            check_invalid(&last, &["unknown"])
                .unwrap_or_else(|e| panic!("{}: the last message before the close: {e}\n{}", ctx(), s.tail()));
            assert!(
                !matches!(prediction, Scan::Complete(n) if n <= MAX_FRAME),
                "{}: a complete frame of at most --max-frame bytes was followed by a close\n{}",
                ctx(),
                s.tail()
            );
            c = fresh(&s);
        } else {
            kept_open += 1;
            assert!(write_failed.is_none(), "{}: write failed on an open connection: {write_failed:?}", ctx());
            assert!(
                prediction != Scan::Garbage,
                "{}: a frame not starting with `{{` did not close the connection\n{}",
                ctx(),
                s.tail()
            );
            if matches!(prediction, Scan::Complete(n) if n <= MAX_FRAME) {
                assert!(
                    pongs >= 1,
                    "{}: the ping after a complete frame was not answered (last: {last:?})\n{}",
                    ctx(),
                    s.tail()
                );
            }
        }
        match prediction {
            Scan::Complete(n) if n <= MAX_FRAME => predicted_open += 1,
            Scan::Garbage => predicted_close += 1,
            _ => {}
        }
    }
    eprintln!(
        "{ROUNDS} mutations in {:?}: {kept_open} kept the connection open, {closes} closed it; \
         the scanner predicted {predicted_open} open and {predicted_close} close",
        started.elapsed()
    );
    assert!(closes > 0 && kept_open > 0, "the mutations should exercise both outcomes");
    assert!(
        predicted_open > 30 && predicted_close > 5,
        "the mutations should give the reference scanner predictions to check"
    );
    observer.ping();
    let mut last_one = s.connect();
    last_one.ping();
    assert!(!s.log_lines().iter().any(|l| l.contains("panicked")), "the server panicked\n{}", s.tail());
}
