//! Messaging over real TCP against the real binary: PROTOCOL.md sections 5 (friends, backlog
//! at login), 7 (personal messages), 8 (global messages), 11 (history, `client_id`, `ack`) and
//! 12, with every shape of FORMAT.md section "Messages" exactly as written there.
//!
//! Accounts are created with `natter user add` (no OTP dance); the protocol password is the
//! md5 of the plain one. Every test has its own server and temporary directory, and every read
//! is bounded in time.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn user_add_args(name: &str) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "user".into(),
        "add".into(),
        "--email".into(),
        email(name),
        "--username".into(),
        name.into(),
        "--password".into(),
        plain(name),
    ];
    v.extend(ARGON.iter().map(|s| s.to_string()));
    v
}

/// `natter user add` for every name (email `NAME@example.com`, password `pw-NAME`).
fn add_users(s: &Server, names: &[&str]) {
    for name in names {
        let args = user_add_args(name);
        let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let out = s.admin(&refs);
        assert!(
            out.status.success(),
            "natter user add {name}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn start(names: &[&str]) -> Server {
    let s = Server::start();
    add_users(&s, names);
    s
}

fn login_details(name: &str, acks: bool) -> Value {
    let mut d = json!({"email": email(name), "password": md5_hex(&plain(name))});
    if acks {
        d["acks"] = json!(true);
    }
    d
}

/// Logs `name` in on `c` and returns the login answer (asserting success, email, username).
fn login_on(c: &mut Client, name: &str, acks: bool) -> Value {
    let v = c.request(&json!({"type":"login","details":login_details(name, acks)}));
    assert_eq!(v["event"], json!("success"), "login of {name}: {v}\n{}", c.tail());
    assert_eq!(v["type"], json!("login"), "login of {name}: {v}");
    assert_eq!(v["details"]["email"], json!(email(name)), "login of {name}: {v}");
    assert_eq!(v["details"]["username"], json!(name), "login of {name}: {v}");
    v
}

fn online(s: &Server, name: &str) -> Client {
    let mut c = s.connect();
    login_on(&mut c, name, false);
    c
}

fn online_acks(s: &Server, name: &str) -> Client {
    let mut c = s.connect();
    login_on(&mut c, name, true);
    c
}

fn friends_of(login_answer: &Value) -> Value {
    login_answer["details"]["friends"].clone()
}

fn friend_list(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({"email": email(n), "username": n})).collect())
}

/// A personal message request with `to` and `message` only.
fn pm(to: &str, message: &str) -> Value {
    json!({"event":"personal","type":"message","details":{"to":to,"message":message}})
}

/// A global message request with `message` only.
fn gm(message: &str) -> Value {
    json!({"event":"global","type":"message","details":{"message":message}})
}

/// `v` with `details.key = val`.
fn with(mut v: Value, key: &str, val: Value) -> Value {
    v["details"][key] = val;
    v
}

/// What a recipient receives (PROTOCOL.md 7, FORMAT.md "Receiving Personal Message").
fn incoming(id: &str, message: &str, media: Option<&str>, from: &str, time: i64) -> Value {
    let mut d = json!({"id": id, "message": message, "from": from, "time": time});
    if let Some(m) = media {
        d["media"] = json!(m);
    }
    json!({"event":"personal","type":"message","details":d})
}

/// The copy for the sender's other connections: the same plus `to`.
fn with_to(mut v: Value, to: &str) -> Value {
    v["details"]["to"] = json!(to);
    v
}

/// What every other connection receives for a global message (PROTOCOL.md 8).
fn global_in(message: &str, media: Option<&str>, from: &str, time: i64) -> Value {
    let mut d = json!({"message": message, "from": from, "time": time});
    if let Some(m) = media {
        d["media"] = json!(m);
    }
    json!({"event":"global","type":"message","details":d})
}

/// Asserts `v` is exactly `{"event":"sent","type":"message","id":ID}` with ID a decimal
/// string, and returns ID.
fn sent_id(v: &Value) -> String {
    check_sent(v).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `req` and returns the id of the `sent` answer.
fn send_ok(c: &mut Client, req: &Value) -> String {
    let v = c.request(req);
    check_sent(&v).unwrap_or_else(|e| panic!("answer to {req}: {e}\n{}", c.tail()))
}

/// Asserts that `v` is a personal message equal to `expected` except for `time`, which must be
/// the server's Unix time in seconds between `t0` and `t1`.
fn assert_server_time(v: &Value, expected_without_time: Value, t0: i64, t1: i64) {
    let t = v["details"]["time"].as_i64().unwrap_or_else(|| panic!("time is not an integer: {v}"));
    assert!(t0 <= t && t <= t1, "time {t} should be the server's Unix time in seconds, in [{t0}, {t1}]: {v}");
    let mut expected = expected_without_time;
    expected["details"]["time"] = json!(t);
    assert_eq!(*v, expected, "message with the server's time");
}

fn history_req(with_email: &str, before: Option<&str>, limit: Option<i64>) -> Value {
    let mut d = json!({"with": with_email});
    if let Some(b) = before {
        d["before"] = json!(b);
    }
    if let Some(l) = limit {
        d["limit"] = json!(l);
    }
    json!({"type":"history","details":d})
}

/// Sends a history request, asserts the success shape and returns the items.
fn history(c: &mut Client, with_email: &str, before: Option<&str>, limit: Option<i64>) -> Vec<Value> {
    let v = c.request(&history_req(with_email, before, limit));
    let obj = v.as_object().unwrap_or_else(|| panic!("history answer is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["details", "event", "type"], "history answer keys: {v}");
    assert_eq!(v["event"], json!("success"), "history answer: {v}\n{}", c.tail());
    assert_eq!(v["type"], json!("history"), "history answer: {v}");
    v["details"].as_array().unwrap_or_else(|| panic!("history details is not an array: {v}")).clone()
}

fn history_item(id: &str, from: &str, to: &str, message: &str, media: Option<&str>, time: i64) -> Value {
    let mut item = json!({"id": id, "from": from, "to": to, "message": message, "time": time});
    if let Some(m) = media {
        item["media"] = json!(m);
    }
    item
}

/// The pretty-printed request exactly as FORMAT.md shows it (tabs, spaces after colons).
fn format_md_personal(to: &str, media: Option<&str>) -> Vec<u8> {
    let media_line = media.map(|m| format!("\t\t\"media\": \"{m}\",\n")).unwrap_or_default();
    format!(
        "{{\n\t\"event\": \"personal\",\n\t\"type\": \"message\",\n\t\"details\": {{\n\t\t\"to\": \"{to}\",\n\t\t\"message\": \"Hello World\",\n{media_line}\t\t\"time\": 1234567890\n\t}}\n}}\n"
    )
    .into_bytes()
}

fn format_md_global(media: Option<&str>) -> Vec<u8> {
    let media_line = media.map(|m| format!("\t\t\"media\": \"{m}\",\n")).unwrap_or_default();
    format!(
        "{{\n\t\"event\": \"global\",\n\t\"type\": \"message\",\n\t\"details\": {{\n\t\t\"message\": \"Hello World\",\n{media_line}\t\t\"time\": 1234567890\n\t}}\n}}\n"
    )
    .into_bytes()
}

fn ack(id: &str) -> Value {
    json!({"type":"ack","details":{"id":id}})
}

// ----- a raw connection whose reading and writing sides can live in different threads ---------

fn personal_line(to: &str, text: &str) -> Vec<u8> {
    let mut b = serde_json::to_vec(&pm(to, text)).unwrap();
    b.push(b'\n');
    b
}

/// Logs `from` in on a raw connection and streams one personal message per text to `to` as
/// fast as possible from one thread, while another reads the `sent` answers. The handle
/// yields the ids in order.
fn start_flood(
    addr: SocketAddr,
    from: &str,
    to: &str,
    texts: Vec<String>,
) -> thread::JoinHandle<Result<Vec<String>, String>> {
    let mut p = Pipe::login(addr, &json!({"type":"login","details":login_details(from, false)}));
    let mut w = p.writer.try_clone().unwrap();
    let n = texts.len();
    let to = to.to_string();
    thread::spawn(move || {
        let writer = thread::spawn(move || {
            let mut batch: Vec<u8> = Vec::new();
            for (i, t) in texts.iter().enumerate() {
                batch.extend_from_slice(&personal_line(&to, t));
                if batch.len() >= 32 * 1024 || i + 1 == texts.len() {
                    if let Err(e) = w.write_all(&batch) {
                        return Err(format!("write failed after {i} messages: {e}"));
                    }
                    batch.clear();
                }
            }
            Ok(())
        });
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            match p.next(Duration::from_secs(30)) {
                Got::Msg(v) => ids.push(check_sent(&v).map_err(|e| format!("answer #{}: {e}", ids.len()))?),
                Got::Closed(why) => return Err(format!("flood sender closed ({why}) after {} answers", ids.len())),
                Got::Timeout => return Err(format!("flood sender: no answer for 30 s after {} answers", ids.len())),
            }
        }
        writer.join().map_err(|_| "writer thread panicked".to_string())??;
        Ok(ids)
    })
}

// ---------------------------------------------------------------------------------------------
// FORMAT.md shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn personal_message_shapes_exactly_as_format_md() {
    let s = start(&["alice", "bob"]);
    let (alice, bob) = (email("alice"), email("bob"));
    let mut a = online(&s, "alice");
    let mut b = online(&s, "bob");

    // "Sending Personal Message without Media", byte for byte as printed (pretty, with tabs).
    a.send_raw(&format_md_personal(&bob, None));
    let id1 = sent_id(&a.recv());
    // "Receving Personal Message without Media": exactly these fields, no `media`, no `to`.
    assert_eq!(b.recv(), incoming(&id1, "Hello World", None, &alice, 1234567890), "bob's copy without media");

    // "Sending Personal Message with Media".
    a.send_raw(&format_md_personal(&bob, Some("https://url-to-firestore/")));
    let id2 = sent_id(&a.recv());
    assert_eq!(
        b.recv(),
        incoming(&id2, "Hello World", Some("https://url-to-firestore/"), &alice, 1234567890),
        "bob's copy with media"
    );

    // Ids are unique and increase with every message, in both directions.
    let id3 = send_ok(&mut b, &with(pm(&alice, "back"), "time", json!(7)));
    assert_eq!(a.recv(), incoming(&id3, "back", None, &bob, 7));
    let id4 = send_ok(&mut a, &with(pm(&bob, "again"), "time", json!(8)));
    assert_eq!(b.recv(), incoming(&id4, "again", None, &alice, 8));
    let ids = [num(&id1), num(&id2), num(&id3), num(&id4)];
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must increase: {ids:?}");

    // The sender never gets its own message back, and nothing else arrives.
    a.expect_silence(300);
    b.expect_silence(100);
}

#[test]
fn absent_or_null_time_and_media() {
    let s = start(&["alice", "bob"]);
    let (alice, bob) = (email("alice"), email("bob"));
    let mut a = online(&s, "alice");
    let mut b = online(&s, "bob");

    // No `time`: the server's Unix time in seconds.
    let t0 = now_secs();
    let id = send_ok(&mut a, &pm(&bob, "no time"));
    let v = b.recv();
    let t1 = now_secs();
    assert_server_time(&v, incoming(&id, "no time", None, &alice, 0), t0, t1);

    // `media` and `time` sent as null are treated as absent (PROTOCOL.md 12).
    let t0 = now_secs();
    let id = send_ok(&mut a, &with(with(pm(&bob, "nulls"), "media", Value::Null), "time", Value::Null));
    let v = b.recv();
    let t1 = now_secs();
    assert_server_time(&v, incoming(&id, "nulls", None, &alice, 0), t0, t1);

    // `http://` is accepted as well as `https://`; text with quotes, braces, escapes and
    // non-ASCII characters comes back unchanged.
    let text = "h\u{e9}llo \"quoted\" {brace} [x] \\ back\nslash \u{2713} \u{1F600}";
    let id =
        send_ok(&mut a, &with(with(pm(&bob, text), "media", json!("http://example.com/a.png")), "time", json!(42)));
    assert_eq!(b.recv(), incoming(&id, text, Some("http://example.com/a.png"), &alice, 42));
    b.expect_silence(200);
}

#[test]
fn global_message_shapes_exactly_as_format_md() {
    let s = start(&["alice", "bob", "carol", "eve"]);
    let alice = email("alice");
    let mut a1 = online(&s, "alice");
    let mut a2 = online(&s, "alice");
    let mut b = online(&s, "bob");
    let mut c = online(&s, "carol");
    let mut anon = s.connect();

    // "Sending Message / Without media", as printed: no answer to the sender; every other
    // logged-in connection (the sender's other device included) gets "Receiving Messages
    // without Media" exactly.
    a1.send_raw(&format_md_global(None));
    let want = global_in("Hello World", None, &alice, 1234567890);
    for (who, conn) in [("alice's other device", &mut a2), ("bob", &mut b), ("carol", &mut c)] {
        assert_eq!(conn.recv(), want, "global without media at {who}");
    }
    a1.expect_silence(300);

    // With media.
    a1.send_raw(&format_md_global(Some("https://url-to-firestore/")));
    let want = global_in("Hello World", Some("https://url-to-firestore/"), &alice, 1234567890);
    for (who, conn) in [("alice's other device", &mut a2), ("bob", &mut b), ("carol", &mut c)] {
        assert_eq!(conn.recv(), want, "global with media at {who}");
    }
    a1.expect_silence(300);

    // No time: the server's; a forged `from` is ignored.
    let t0 = now_secs();
    a1.send(&with(gm("no time"), "from", json!(email("carol"))));
    for (who, conn) in [("alice's other device", &mut a2), ("bob", &mut b), ("carol", &mut c)] {
        let v = conn.recv();
        let t1 = now_secs();
        let t = v["details"]["time"].as_i64().unwrap_or_else(|| panic!("time is not an integer at {who}: {v}"));
        assert!(t0 <= t && t <= t1, "time at {who} should be the server's Unix time: {v}");
        assert_eq!(v, global_in("no time", None, &alice, t), "global with server time at {who}");
    }

    // From bob: both of alice's connections get it, bob does not.
    b.send(&with(gm("from bob"), "time", json!(5)));
    let want = global_in("from bob", None, &email("bob"), 5);
    for (who, conn) in [("alice 1", &mut a1), ("alice 2", &mut a2), ("carol", &mut c)] {
        assert_eq!(conn.recv(), want, "bob's global at {who}");
    }
    b.expect_silence(300);
    a1.expect_silence(50);
    a2.expect_silence(50);
    c.expect_silence(50);

    // An anonymous connection gets none of them, and is still usable.
    anon.expect_silence(50);
    anon.ping();

    // Globals are not stored: eve logs in afterwards and gets nothing; they are not contacts.
    let mut e = s.connect();
    let v = login_on(&mut e, "eve", false);
    assert_eq!(friends_of(&v), json!([]), "eve's friends after only global traffic: {v}");
    e.expect_silence(300);
    let mut a3 = s.connect();
    let v = login_on(&mut a3, "alice", false);
    assert_eq!(friends_of(&v), json!([]), "global messages do not make friends: {v}");
    a3.expect_silence(200);
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn personal_message_errors_and_limits() {
    let s = start(&["alice", "bob"]);
    let (alice, bob) = (email("alice"), email("bob"));
    let mut a = online(&s, "alice");
    let mut b = online(&s, "bob");
    let timed = |to: &str, text: &str| with(pm(to, text), "time", json!(1));

    // Unknown recipient.
    assert_failed(&a.request(&timed("nobody@example.com", "hi")), "message");

    // The recipient's email is compared case-insensitively.
    let id = send_ok(&mut a, &timed("BOB@Example.COM", "case"));
    assert_eq!(b.recv(), incoming(&id, "case", None, &alice, 1), "message to BOB@Example.COM");

    // 4,096 characters are fine, 4,097 are not; characters, not bytes (é is 2 bytes).
    let e4096 = "\u{e9}".repeat(4096);
    let id = send_ok(&mut a, &timed(&bob, &e4096));
    assert_eq!(b.recv(), incoming(&id, &e4096, None, &alice, 1), "4096 x é must be accepted and delivered");
    let a4096 = "a".repeat(4096);
    let id = send_ok(&mut a, &timed(&bob, &a4096));
    assert_eq!(b.recv(), incoming(&id, &a4096, None, &alice, 1));
    assert_failed(&a.request(&timed(&bob, &"\u{e9}".repeat(4097))), "message");
    assert_failed(&a.request(&timed(&bob, &"a".repeat(4097))), "message");

    // media: http(s) only, at most 2,048 characters.
    for bad in ["ftp://example.com/x", "url-to-firestore", "javascript:alert(1)", "file:///etc/passwd", "https:/x", ""]
    {
        let v = a.request(&with(timed(&bob, "bad media"), "media", json!(bad)));
        assert_failed(&v, "message");
    }
    let base = "https://example.com/";
    let m2048 = format!("{base}{}", "m".repeat(2048 - base.len()));
    let m2049 = format!("{base}{}", "m".repeat(2049 - base.len()));
    let id = send_ok(&mut a, &with(timed(&bob, "long media"), "media", json!(m2048)));
    assert_eq!(b.recv(), incoming(&id, "long media", Some(&m2048), &alice, 1), "2048-character media");
    assert_failed(&a.request(&with(timed(&bob, "too long media"), "media", json!(m2049))), "message");

    // client_id: at most 64 bytes.
    let id = send_ok(&mut a, &with(timed(&bob, "cid64"), "client_id", json!("\u{e9}".repeat(32))));
    assert_eq!(b.recv(), incoming(&id, "cid64", None, &alice, 1), "a 64-byte client_id is fine");
    assert_failed(&a.request(&with(timed(&bob, "cid66"), "client_id", json!("\u{e9}".repeat(33)))), "message");
    assert_failed(&a.request(&with(timed(&bob, "cid65"), "client_id", json!("a".repeat(65)))), "message");

    // Missing, null or wrongly typed fields: invalid.
    let invalid = [
        json!({"event":"personal","type":"message","details":{"message":"no to"}}),
        json!({"event":"personal","type":"message","details":{"to":bob}}),
        json!({"event":"personal","type":"message","details":{"to":null,"message":"x"}}),
        json!({"event":"personal","type":"message","details":{"to":bob,"message":null}}),
        json!({"event":"personal","type":"message","details":{"to":42,"message":"x"}}),
        json!({"event":"personal","type":"message","details":{"to":[bob],"message":"x"}}),
        json!({"event":"personal","type":"message","details":{"to":bob,"message":42}}),
        json!({"event":"personal","type":"message","details":{"to":bob,"message":{"text":"x"}}}),
        json!({"event":"personal","type":"message","details":{"to":bob,"message":"x","time":"1234567890"}}),
        json!({"event":"personal","type":"message","details":{"to":bob,"message":"x","media":42}}),
        json!({"event":"personal","type":"message","details":{"to":bob,"message":"x","client_id":7}}),
        json!({"event":"personal","type":"message"}),
        json!({"event":"personal","type":"message","details":"x"}),
    ];
    for req in &invalid {
        let v = a.request(req);
        assert_eq!(v["event"], json!("invalid"), "request {req} answered {v}");
        assert_invalid(&v, "message");
    }

    // Global messages follow the same field rules.
    assert_invalid(&a.request(&json!({"event":"global","type":"message","details":{}})), "message");
    assert_invalid(&a.request(&json!({"event":"global","type":"message","details":{"message":5}})), "message");
    assert_failed(&a.request(&gm(&"a".repeat(4097))), "message");
    assert_failed(&a.request(&with(gm("bad media"), "media", json!("ftp://x/y"))), "message");

    // None of the refused requests reached bob, and alice's connection is still open.
    b.expect_silence(300);
    a.ping();

    // History holds exactly the accepted messages.
    let h = history(&mut a, &bob, None, None);
    let texts: Vec<&str> = h.iter().map(|i| i["message"].as_str().unwrap_or("?")).collect();
    assert_eq!(texts, ["cid64", "long media", a4096.as_str(), e4096.as_str(), "case"], "stored messages, newest first");

    // An anonymous connection may not send.
    let mut anon = s.connect();
    let m = assert_invalid(&anon.request(&pm(&bob, "anonymous")), "message");
    assert_eq!(m, "log in or register first");
    b.expect_silence(100);
}

#[test]
fn forged_from_is_ignored() {
    let s = start(&["alice", "bob", "carol"]);
    let (alice, bob, carol) = (email("alice"), email("bob"), email("carol"));
    let mut a1 = online(&s, "alice");
    let mut a2 = online(&s, "alice");
    let mut b = online(&s, "bob");
    let mut c = online(&s, "carol");

    let req = with(with(pm(&bob, "who am i"), "from", json!(carol)), "time", json!(11));
    let id = send_ok(&mut a1, &req);
    let want = incoming(&id, "who am i", None, &alice, 11);
    assert_eq!(b.recv(), want, "from must be the session's email");
    assert_eq!(a2.recv(), with_to(want, &bob), "the sender's other device");
    c.expect_silence(300);

    // Stored with the real sender: carol has no conversation with bob, and no friends.
    assert_eq!(history(&mut c, &bob, None, None), Vec::<Value>::new(), "carol's history with bob");
    assert_eq!(history(&mut b, &alice, None, None), vec![history_item(&id, &alice, &bob, "who am i", None, 11)]);
    let mut b2 = s.connect();
    assert_eq!(friends_of(&login_on(&mut b2, "bob", false)), friend_list(&["alice"]));
    let mut c2 = s.connect();
    assert_eq!(friends_of(&login_on(&mut c2, "carol", false)), json!([]));
}

// ---------------------------------------------------------------------------------------------
// Offline delivery and several devices
// ---------------------------------------------------------------------------------------------

#[test]
fn offline_messages_arrive_in_order_once() {
    let s = start(&["alice", "bob"]);
    let (alice, bob) = (email("alice"), email("bob"));
    let mut b = online(&s, "bob");
    assert_eq!(b.request(&json!({"type":"logout"})), json!({"event":"success","type":"logout"}));
    let mut a = online(&s, "alice");

    let mut expected = Vec::new();
    let mut ids = Vec::new();
    let mut server_time_range = (0, 0);
    for i in 0..6 {
        let text = format!("offline {i}");
        let mut req = pm(&bob, &text);
        let media = if i == 2 { Some("https://example.com/pic.jpg") } else { None };
        if let Some(m) = media {
            req = with(req, "media", json!(m));
        }
        let t = if i == 4 {
            server_time_range.0 = now_secs();
            None
        } else {
            req = with(req, "time", json!(1000 + i));
            Some(1000 + i)
        };
        let id = send_ok(&mut a, &req);
        if i == 4 {
            server_time_range.1 = now_secs();
        }
        expected.push((id.clone(), text, media, t));
        ids.push(num(&id));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // bob's connection is anonymous now: nothing reaches it.
    b.expect_silence(300);

    // At login: the success answer, then every message in order.
    let v = login_on(&mut b, "bob", false);
    assert_eq!(friends_of(&v), friend_list(&["alice"]));
    for (id, text, media, t) in &expected {
        let got = recv_within(&mut b, READ_TIMEOUT, &format!("backlog message {id}"));
        match t {
            Some(t) => assert_eq!(got, incoming(id, text, *media, &alice, *t), "backlog in id order"),
            None => assert_server_time(
                &got,
                incoming(id, text, *media, &alice, 0),
                server_time_range.0,
                server_time_range.1,
            ),
        }
    }
    b.expect_silence(400);

    // Live delivery still works on the same connection, once.
    let id = send_ok(&mut a, &with(pm(&bob, "live"), "time", json!(3)));
    assert_eq!(b.recv(), incoming(&id, "live", None, &alice, 3));
    b.expect_silence(200);

    // Not again: neither after logout/login on the same connection nor on a new one.
    assert_eq!(b.request(&json!({"type":"logout"})), json!({"event":"success","type":"logout"}));
    login_on(&mut b, "bob", false);
    b.expect_silence(400);
    b.close();
    let mut b2 = s.connect();
    login_on(&mut b2, "bob", false);
    b2.expect_silence(400);
}

#[test]
fn several_devices_get_every_copy() {
    let s = start(&["alice", "bob", "carol"]);
    let (alice, bob) = (email("alice"), email("bob"));
    let mut a1 = online(&s, "alice");
    let mut a2 = online(&s, "alice");
    let mut b1 = online(&s, "bob");
    let mut b2 = online(&s, "bob");
    let mut c = online(&s, "carol");

    // alice (device 1) -> bob: both of bob's devices, and alice's device 2 with `to`.
    let id = send_ok(&mut a1, &with(pm(&bob, "to both devices"), "time", json!(77)));
    let want = incoming(&id, "to both devices", None, &alice, 77);
    assert_eq!(b1.recv(), want, "bob device 1");
    assert_eq!(b2.recv(), want, "bob device 2");
    assert_eq!(a2.recv(), with_to(want, &bob), "alice device 2 gets the copy with `to`");

    // bob (device 2) -> alice with media.
    let req = with(with(pm(&alice, "reply"), "media", json!("https://example.com/r.png")), "time", json!(78));
    let id = send_ok(&mut b2, &req);
    let want = incoming(&id, "reply", Some("https://example.com/r.png"), &bob, 78);
    assert_eq!(a1.recv(), want, "alice device 1");
    assert_eq!(a2.recv(), want, "alice device 2");
    assert_eq!(b1.recv(), with_to(want, &alice), "bob device 1 gets the copy with `to`");

    // Each copy exactly once; carol sees nothing.
    for (who, conn) in [("a1", &mut a1), ("a2", &mut a2), ("b1", &mut b1), ("b2", &mut b2), ("carol", &mut c)] {
        match conn.read_line(Duration::from_millis(150)) {
            ReadOutcome::Timeout => {}
            other => panic!("{who} should get nothing more, got {other:?}"),
        }
    }

    // One of bob's devices logs out: only the other one gets the next message.
    assert_eq!(b1.request(&json!({"type":"logout"})), json!({"event":"success","type":"logout"}));
    let id = send_ok(&mut a1, &with(pm(&bob, "one device left"), "time", json!(79)));
    let want = incoming(&id, "one device left", None, &alice, 79);
    assert_eq!(b2.recv(), want);
    assert_eq!(a2.recv(), with_to(want, &bob));
    b1.expect_silence(200);

    // To oneself: the other device gets it once, with `to`; the sending device gets `sent` only.
    let id = send_ok(&mut a1, &with(pm(&alice, "note to self"), "time", json!(80)));
    assert_eq!(a2.recv(), with_to(incoming(&id, "note to self", None, &alice, 80), &alice));
    a1.expect_silence(200);
    a2.expect_silence(100);
    b2.expect_silence(50);

    // To oneself with no other connection: it waits for the next login.
    a2.close();
    let id = send_ok(&mut a1, &with(pm(&alice, "later, self"), "time", json!(81)));
    a1.expect_silence(200);
    let mut a3 = s.connect();
    login_on(&mut a3, "alice", false);
    let got = recv_within(&mut a3, READ_TIMEOUT, "a message to oneself at the next login");
    let want = incoming(&id, "later, self", None, &alice, 81);
    // PROTOCOL.md 12 does not say whether this copy carries `to`; accept both, nothing else.
    if got["details"].get("to").is_some() {
        assert_eq!(got, with_to(want, &alice));
    } else {
        assert_eq!(got, want);
    }
    a3.expect_silence(300);
    a1.expect_silence(50);
}

// ---------------------------------------------------------------------------------------------
// Friends
// ---------------------------------------------------------------------------------------------

#[test]
fn friends_by_most_recent_contact_both_directions() {
    let s = start(&["alice", "bob", "carol", "dave", "eve"]);
    let (alice, bob, carol, dave) = (email("alice"), email("bob"), email("carol"), email("dave"));
    let mut a = online(&s, "alice");
    let mut a2 = online(&s, "alice");
    let mut b = online(&s, "bob");
    let mut c = online(&s, "carol");
    let mut d = online(&s, "dave");

    let fresh_friends = |name: &str| -> Value {
        let mut conn = s.connect();
        let v = login_on(&mut conn, name, false);
        conn.expect_silence(50);
        friends_of(&v)
    };

    send_ok(&mut a, &pm(&bob, "1"));
    b.recv();
    a2.recv();
    send_ok(&mut c, &pm(&alice, "2"));
    a.recv();
    a2.recv();
    send_ok(&mut a, &pm(&dave, "3"));
    d.recv();
    a2.recv();
    send_ok(&mut b, &pm(&alice, "4"));
    a.recv();
    a2.recv();
    send_ok(&mut a, &pm(&bob, "5"));
    b.recv();
    a2.recv();
    // To oneself: never a friend.
    send_ok(&mut a, &pm(&alice, "self"));
    a2.recv();

    assert_eq!(fresh_friends("alice"), friend_list(&["bob", "dave", "carol"]), "alice: most recent first, once each");
    assert_eq!(fresh_friends("bob"), friend_list(&["alice"]));
    assert_eq!(fresh_friends("carol"), friend_list(&["alice"]), "the sender is the recipient's friend too");
    assert_eq!(fresh_friends("dave"), friend_list(&["alice"]));
    assert_eq!(fresh_friends("eve"), json!([]));

    // A new contact with carol moves her to the front.
    send_ok(&mut a, &pm(&carol, "6"));
    c.recv();
    a2.recv();
    assert_eq!(fresh_friends("alice"), friend_list(&["carol", "bob", "dave"]));
    // dave writing to alice moves dave to the front, from the recipient's side.
    send_ok(&mut d, &pm(&alice, "7"));
    a.recv();
    a2.recv();
    assert_eq!(fresh_friends("alice"), friend_list(&["dave", "carol", "bob"]));
    // bob <-> carol makes them friends of each other, in front of alice.
    send_ok(&mut b, &pm(&carol, "8"));
    c.recv();
    assert_eq!(fresh_friends("carol"), friend_list(&["bob", "alice"]));
    assert_eq!(fresh_friends("bob"), friend_list(&["carol", "alice"]));
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

#[test]
fn history_pages_newest_first() {
    let s = start(&["alice", "bob", "carol"]);
    let (alice, bob, carol) = (email("alice"), email("bob"), email("carol"));
    let mut a = online(&s, "alice");
    let mut b = online(&s, "bob");

    let mut items = Vec::new(); // oldest first
    for i in 0..8i64 {
        let (from, to, sender, receiver) =
            if i % 2 == 0 { (&alice, &bob, &mut a, &mut b) } else { (&bob, &alice, &mut b, &mut a) };
        let text = format!("conversation {i}");
        let media = if i % 3 == 0 { Some(format!("https://example.com/{i}.png")) } else { None };
        let mut req = with(pm(to, &text), "time", json!(5000 + i));
        if let Some(m) = &media {
            req = with(req, "media", json!(m));
        }
        let id = send_ok(sender, &req);
        receiver.recv();
        items.push(history_item(&id, from, to, &text, media.as_deref(), 5000 + i));
        if i == 3 {
            // Another conversation in between must not show up.
            send_ok(&mut a, &pm(&carol, "not in this conversation"));
        }
    }
    let newest_first: Vec<Value> = items.iter().rev().cloned().collect();

    // Pages of 3: 3, 3, 2, then empty.
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..6 {
        let page = history(&mut a, &bob, before.as_deref(), Some(3));
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3, "a page of limit 3 had {} items", page.len());
        before = Some(page.last().unwrap()["id"].as_str().expect("id is a string").to_string());
        pages.push(page);
    }
    let sizes: Vec<usize> = pages.iter().map(|p| p.len()).collect();
    assert_eq!(sizes, [3, 3, 2], "page sizes");
    let all: Vec<Value> = pages.concat();
    assert_eq!(all, newest_first, "pages concatenated = the whole conversation, newest first, exact items");

    // Default limit, from the other side: the same items.
    assert_eq!(history(&mut b, &alice, None, None), newest_first, "bob's view");
    // `before` an id in the middle.
    let mid = items[4]["id"].as_str().unwrap().to_string();
    assert_eq!(history(&mut b, &alice, Some(&mid), Some(50)), newest_first[4..].to_vec(), "before the 5th message");
    // The other conversation is separate.
    let hc = history(&mut a, &carol, None, None);
    assert_eq!(hc.len(), 1, "alice-carol: {hc:?}");
    assert_eq!(hc[0]["message"], json!("not in this conversation"));
}

#[test]
fn history_limits() {
    let s = start(&["alice", "bob"]);
    let bob = email("bob");
    let mut a = online(&s, "alice");

    // 205 messages, pipelined.
    let n = 205;
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(&personal_line(&bob, &format!("h{i}")));
    }
    a.send_raw(&batch);
    let ids: Vec<String> = (0..n).map(|_| sent_id(&a.recv())).collect();
    assert!(ids.windows(2).all(|w| num(&w[0]) < num(&w[1])), "ids increase");
    let ids_of =
        |h: &[Value]| -> Vec<String> { h.iter().map(|i| i["id"].as_str().unwrap_or("?").to_string()).collect() };
    let newest = |k: usize| -> Vec<String> { ids.iter().rev().take(k).cloned().collect() };

    assert_eq!(ids_of(&history(&mut a, &bob, None, None)), newest(50), "default limit 50");
    assert_eq!(ids_of(&history(&mut a, &bob, None, Some(500))), newest(200), "limit above 200 is 200");
    assert_eq!(ids_of(&history(&mut a, &bob, None, Some(200))), newest(200));
    assert_eq!(ids_of(&history(&mut a, &bob, None, Some(1))), newest(1));
    let page2 = history(&mut a, &bob, Some(&ids[5]), Some(200));
    assert_eq!(ids_of(&page2), ids[..5].iter().rev().cloned().collect::<Vec<_>>(), "the last page");
    assert_eq!(page2[4]["message"], json!("h0"));

    for bad in [json!(0), json!(-3), json!("10"), Value::Bool(true)] {
        let v = a.request(&json!({"type":"history","details":{"with":bob,"limit":bad}}));
        assert_eq!(v["event"], json!("invalid"), "limit {bad}: {v}");
        assert_invalid(&v, "history");
    }
    assert_invalid(&a.request(&json!({"type":"history","details":{}})), "history");
    assert_invalid(&a.request(&json!({"type":"history","details":{"with":7}})), "history");
    a.ping();
}

// ---------------------------------------------------------------------------------------------
// client_id and ack
// ---------------------------------------------------------------------------------------------

#[test]
fn client_id_is_stored_and_delivered_once() {
    let s = start(&["alice", "bob", "carol"]);
    let (alice, bob, carol) = (email("alice"), email("bob"), email("carol"));
    let mut a = online(&s, "alice");
    let mut b = online(&s, "bob");

    let req = with(with(pm(&bob, "exactly once"), "client_id", json!("c-1")), "time", json!(5));
    let id1 = send_ok(&mut a, &req);
    assert_eq!(b.recv(), incoming(&id1, "exactly once", None, &alice, 5));
    // The same again on the same connection.
    let id2 = send_ok(&mut a, &req);
    assert_eq!(id2, id1, "a repeated client_id answers the first id");
    b.expect_silence(300);
    // The same again after a reconnect.
    drop(a);
    let mut a = online(&s, "alice");
    let id3 = send_ok(&mut a, &req);
    assert_eq!(id3, id1, "a repeated client_id after a reconnect answers the first id");
    b.expect_silence(300);

    // A different client_id is a new message.
    let id4 = send_ok(&mut a, &with(with(pm(&bob, "second"), "client_id", json!("c-2")), "time", json!(6)));
    assert!(num(&id4) > num(&id1));
    assert_eq!(b.recv(), incoming(&id4, "second", None, &alice, 6));
    // The same client_id from another sender is that sender's own message.
    let mut c = online(&s, "carol");
    let id5 = send_ok(&mut c, &with(with(pm(&bob, "carol's"), "client_id", json!("c-1")), "time", json!(7)));
    assert!(id5 != id1 && id5 != id4, "carol's message got id {id5}");
    assert_eq!(b.recv(), incoming(&id5, "carol's", None, &carol, 7));

    // The first try's answer is lost with the connection: the retry gets the same id and bob
    // gets the message once.
    let req6 = with(with(pm(&bob, "retry after drop"), "client_id", json!("c-3")), "time", json!(8));
    a.send(&req6);
    drop(a);
    // The first try was stored: bob has it (only its `sent` died with the connection).
    let first = b.recv();
    let first_id = first["details"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(first, incoming(&first_id, "retry after drop", None, &alice, 8));
    let mut a = online(&s, "alice");
    let id6 = send_ok(&mut a, &req6);
    assert_eq!(id6, first_id, "the retry answers the first try's id");
    b.expect_silence(300);

    // Offline recipient: sent twice, delivered once at login.
    assert_eq!(b.request(&json!({"type":"logout"})), json!({"event":"success","type":"logout"}));
    let req7 = with(with(pm(&bob, "while away"), "client_id", json!("c-4")), "time", json!(9));
    let id7 = send_ok(&mut a, &req7);
    assert_eq!(send_ok(&mut a, &req7), id7);
    login_on(&mut b, "bob", false);
    assert_eq!(b.recv(), incoming(&id7, "while away", None, &alice, 9));
    b.expect_silence(400);

    // Stored once each.
    let h: Vec<Value> = history(&mut a, &bob, None, None);
    let got: Vec<(&str, &str)> =
        h.iter().map(|i| (i["id"].as_str().unwrap_or("?"), i["message"].as_str().unwrap_or("?"))).collect();
    assert_eq!(
        got,
        [
            (id7.as_str(), "while away"),
            (id6.as_str(), "retry after drop"),
            (id4.as_str(), "second"),
            (id1.as_str(), "exactly once")
        ],
        "alice-bob history"
    );
}

#[test]
fn ack_aware_recipient_gets_unacknowledged_messages_again() {
    let s = start(&["alice", "bob"]);
    let (alice, bob) = (email("alice"), email("bob"));
    let mut a = online(&s, "alice");
    let mut b = online_acks(&s, "bob");

    let mut want = Vec::new();
    for i in 1..=3 {
        let text = format!("m{i}");
        let id = send_ok(&mut a, &with(pm(&bob, &text), "time", json!(i)));
        want.push(incoming(&id, &text, None, &alice, i));
    }
    for w in &want {
        assert_eq!(b.recv(), *w, "live delivery to the ack-aware connection");
    }
    let id_of = |v: &Value| v["details"]["id"].as_str().unwrap().to_string();

    // Acknowledge m1 only: no answer.
    b.send(&ack(&id_of(&want[0])));
    b.expect_silence(300);
    b.ping();
    b.close();

    // m2 and m3 again, in order; m1 never.
    let mut b = online_acks(&s, "bob");
    assert_eq!(b.recv(), want[1], "unacknowledged m2 again");
    assert_eq!(b.recv(), want[2], "unacknowledged m3 again");
    b.expect_silence(400);

    // Acknowledging m3 covers m2 as well.
    b.send(&ack(&id_of(&want[2])));
    b.ping();
    b.close();
    let mut b = online_acks(&s, "bob");
    b.expect_silence(500);

    // A message that reaches an ack-aware connection after login and is not acked comes back.
    let id = send_ok(&mut a, &with(pm(&bob, "m4"), "time", json!(4)));
    let m4 = incoming(&id, "m4", None, &alice, 4);
    assert_eq!(b.recv(), m4);
    b.close();
    let mut b = online_acks(&s, "bob");
    assert_eq!(b.recv(), m4, "unacknowledged m4 again");
    b.expect_silence(300);

    b.send(&ack(&id));
    b.ping();

    // A connection that did not log in with acks may not ack.
    let mut plain_b = online(&s, "bob");
    plain_b.expect_silence(300);
    assert_invalid(&plain_b.request(&ack(&id)), "ack");
}

#[test]
fn ack_id_must_be_a_string() {
    // PROTOCOL.md 12: "`ack` IDs are strings, like every id"; section 3: a field of the wrong
    // JSON type is `invalid`.
    let s = start(&["alice", "bob"]);
    let mut a = online(&s, "alice");
    let mut b = online_acks(&s, "bob");
    let id = send_ok(&mut a, &with(pm(&email("bob"), "m"), "time", json!(1)));
    b.recv();
    b.send(&json!({"type":"ack","details":{"id":num(&id)}}));
    let v = recv_within(&mut b, READ_TIMEOUT, "the answer to an ack whose id is a JSON number");
    assert_invalid(&v, "ack");
    for bad in [json!({"type":"ack","details":{}}), json!({"type":"ack","details":{"id":null}}), json!({"type":"ack"})]
    {
        let v = recv_within_after(&mut b, &bad);
        assert_invalid(&v, "ack");
    }
}

fn recv_within_after(c: &mut Client, req: &Value) -> Value {
    c.send(req);
    recv_within(c, READ_TIMEOUT, &format!("the answer to {req}"))
}

#[test]
fn backlog_larger_than_a_few_megabytes_arrives_completely() {
    // A backlog of 2,100 messages (about 2 MB, below the default 8 MiB cap) reaches a plain
    // and an ack-aware connection completely, in id order, without the client acking anything
    // (PROTOCOL.md 5, 11, 12: delivery at login is paced by the socket, not by acks).
    const N: usize = 2100;
    let s = start(&["alice", "bob", "carol"]);
    for (name, acks) in [("bob", false), ("carol", true)] {
        let texts: Vec<String> = (0..N).map(|i| padded(&format!("{name}-{i}"), 1000)).collect();
        let ids = start_flood(s.addr, "alice", &email(name), texts.clone())
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("flood: {e}\n{}", s.tail()));
        let mut c = s.connect();
        login_on(&mut c, name, acks);
        let what = format!("{name}'s backlog (acks: {acks})");
        let got = drain_ctx(&mut c, Duration::from_secs(2), N + 10, &what);
        let got_ids: Vec<&str> = got.iter().map(|m| m["details"]["id"].as_str().unwrap_or("?")).collect();
        let want_ids: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            got_ids.len(),
            N,
            "{what}: number of messages (the first {} arrived in order: {})",
            got_ids.len(),
            want_ids.starts_with(&got_ids)
        );
        assert!(got_ids == want_ids, "{what}: ids differ from the sent ids");
        for (k, m) in got.iter().enumerate() {
            assert_eq!(m["details"]["message"], json!(texts[k]), "{what}: text of message #{k}");
        }
    }
}

#[test]
fn large_backlog_does_not_trip_the_default_output_cap() {
    // PROTOCOL.md 12: "Delivery from the database is paced by the socket: a large backlog never
    // trips the output cap." Default cap (8 MiB); 1,100 messages of 4,096 'é' are ~9 MB.
    const N: usize = 1100;
    let s = start(&["alice", "bob"]);
    let texts: Vec<String> = (0..N).map(|i| format!("{i:04}{}", "\u{e9}".repeat(4092))).collect();
    let ids = start_flood(s.addr, "alice", &email("bob"), texts.clone())
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("flood: {e}\n{}", s.tail()));
    let mut b = online(&s, "bob");
    let got = drain_ctx(&mut b, Duration::from_secs(2), N + 10, "bob's 9 MB backlog with the default output cap");
    let got_ids: Vec<&str> = got.iter().map(|m| m["details"]["id"].as_str().unwrap_or("?")).collect();
    let want_ids: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
    assert_eq!(got_ids.len(), N, "backlog size");
    assert!(got_ids == want_ids, "backlog ids differ from the sent ids");
    for (k, m) in got.iter().enumerate() {
        assert_eq!(m["details"]["message"], json!(texts[k]), "text of message #{k}");
    }
}

// ---------------------------------------------------------------------------------------------
// Failures: commit, crash, slow consumer
// ---------------------------------------------------------------------------------------------

#[test]
fn slow_consumer_is_cut_off_while_others_keep_flowing() {
    const N: usize = 2500;
    let s = Server::start_with(&["--max-output", "65536"]);
    add_users(&s, &["flood", "slow", "p", "q"]);
    let (slow, p, q) = (email("slow"), email("p"), email("q"));
    // Logged in, then never reads while the flood arrives.
    let mut sc = online(&s, "slow");
    let mut pc = online(&s, "p");
    let mut qc = online(&s, "q");

    let texts: Vec<String> = (0..N).map(|i| padded(&format!("slow-{i}"), 4000)).collect();
    let flood = start_flood(s.addr, "flood", &slow, texts.clone());

    // Meanwhile another pair's messages keep flowing promptly.
    let mut rounds: i64 = 0;
    let mut worst = Duration::ZERO;
    while (!flood.is_finished() || rounds < 5) && rounds < 2000 {
        let t0 = Instant::now();
        let text = format!("prompt {rounds}");
        pc.send(&with(pm(&q, &text), "time", json!(rounds)));
        let v = recv_within(&mut pc, Duration::from_secs(2), "p's sent answer during the flood");
        let id = sent_id(&v);
        let m = recv_within(&mut qc, Duration::from_secs(2), "q's message during the flood");
        assert_eq!(m, incoming(&id, &text, None, &p, rounds));
        worst = worst.max(t0.elapsed());
        rounds += 1;
        // Kept: the pair's pace during the flood.
        thread::sleep(Duration::from_millis(10));
    }
    let ids = flood.join().unwrap().unwrap_or_else(|e| panic!("flood: {e}\n{}", s.tail()));
    assert_eq!(ids.len(), N);
    eprintln!("slow consumer: {rounds} p->q round trips during the flood, worst {worst:?}");
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();

    // The slow connection was closed: read what its socket buffer still holds, then EOF.
    let mut old: Vec<String> = Vec::new();
    let closed_how = loop {
        match sc.read_line(READ_TIMEOUT) {
            ReadOutcome::Line(l) => {
                let v = sc.parse(&l);
                let id = v["details"]["id"].as_str().unwrap_or_else(|| panic!("unexpected {v}")).to_string();
                let k = *index.get(id.as_str()).unwrap_or_else(|| panic!("unknown id {id}"));
                assert_eq!(
                    v,
                    incoming(&id, &texts[k], None, &email("flood"), v["details"]["time"].as_i64().unwrap_or(-1))
                );
                old.push(id);
                assert!(old.len() <= N);
            }
            ReadOutcome::Closed(why) => break why,
            ReadOutcome::Timeout => panic!(
                "the slow consumer was not disconnected ({} of {N} messages read, then nothing for 5 s)\n{}",
                old.len(),
                s.tail()
            ),
        }
    };
    assert!(old.len() < N, "the slow consumer got everything");
    assert!(old.windows(2).all(|w| num(&w[0]) < num(&w[1])), "live delivery in id order");

    // At its next login it gets the rest.
    let mut sc2 = s.connect();
    let v = login_on(&mut sc2, "slow", false);
    assert_eq!(friends_of(&v), friend_list(&["flood"]));
    let backlog = drain_ctx(&mut sc2, Duration::from_secs(2), N + 10, "the slow consumer's backlog at its next login");
    let mut back_ids = Vec::new();
    for m in &backlog {
        let id = m["details"]["id"].as_str().unwrap_or_else(|| panic!("unexpected {m}")).to_string();
        let k = *index.get(id.as_str()).unwrap_or_else(|| panic!("unknown id {id} in the backlog"));
        assert_eq!(m["details"]["message"], json!(texts[k]), "backlog text of {id}");
        assert_eq!(m["details"]["from"], json!(email("flood")));
        back_ids.push(id);
    }
    assert!(back_ids.windows(2).all(|w| num(&w[0]) < num(&w[1])), "backlog in id order, no duplicates");
    let old_set: HashSet<&String> = old.iter().collect();
    let dup: Vec<&String> = back_ids.iter().filter(|id| old_set.contains(id)).collect();
    assert!(
        dup.is_empty(),
        "{} messages written completely to the old socket came again: {:?}",
        dup.len(),
        &dup[..dup.len().min(5)]
    );
    let have: HashSet<&String> = old.iter().chain(back_ids.iter()).collect();
    let missing: Vec<usize> = (0..N).filter(|k| !have.contains(&ids[*k])).collect();
    eprintln!(
        "slow consumer: {} read before the cut ({closed_how}), {} at the next login, {} missing",
        old.len(),
        back_ids.len(),
        missing.len()
    );
    if closed_how.starts_with("EOF") {
        assert!(
            missing.is_empty(),
            "{} messages lost (first: #{:?}); the old socket closed cleanly",
            missing.len(),
            missing.first()
        );
    } else {
        // A reset may discard what the kernel had accepted: only those may be missing, a run
        // right after the last message the client read.
        let after = old.len();
        assert!(
            missing.iter().enumerate().all(|(j, k)| *k == after + j),
            "messages lost beyond the kernel buffers: {:?}",
            &missing[..missing.len().min(10)]
        );
    }
    assert!(!back_ids.is_empty(), "nothing was left for the next login");

    // And the others still talk.
    let id = send_ok(&mut pc, &with(pm(&q, "after"), "time", json!(1)));
    assert_eq!(qc.recv(), incoming(&id, "after", None, &p, 1));
}
