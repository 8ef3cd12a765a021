//! The protocol as the tests speak it: request builders, exact answer shapes, the named
//! test accounts, and the registration and login flows.

use std::time::Duration;

use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::client::{Client, ReadOutcome};
use super::server::Server;

/// Lowercase hex md5 of `s`: the protocol `password` for the plaintext `s`.
pub fn md5_hex(s: &str) -> String {
    let digest = Md5::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts `v` is exactly `{"event":event,"type":ty,"message":M}` with a short non-empty M,
/// and returns M.
pub fn assert_error(v: &Value, event: &str, ty: &str) -> String {
    let obj = v.as_object().unwrap_or_else(|| panic!("expected an object, got {v}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["event", "message", "type"], "an error must have exactly event/type/message: {v}");
    assert_eq!(v["event"], json!(event), "event of {v}");
    assert_eq!(v["type"], json!(ty), "type of {v}");
    let m = v["message"].as_str().unwrap_or_else(|| panic!("message is not a string: {v}"));
    assert!(!m.trim().is_empty(), "empty message: {v}");
    assert!(!m.contains('\n'), "message must be one short sentence: {v}");
    assert!(m.len() <= 200, "message must be short: {v}");
    m.to_string()
}

pub fn assert_failed(v: &Value, ty: &str) -> String {
    assert_error(v, "failed", ty)
}

pub fn assert_invalid(v: &Value, ty: &str) -> String {
    assert_error(v, "invalid", ty)
}

/// Asserts an `invalid` error without checking its type; returns (type, message).
pub fn assert_invalid_any_type(v: &Value) -> (String, String) {
    let t = v["type"].as_str().unwrap_or_else(|| panic!("type is not a string: {v}")).to_string();
    let m = assert_error(v, "invalid", &t);
    (t, m)
}

pub fn registration(email: &str, password: &str, username: &str) -> Value {
    json!({"type":"registration","details":{"email":email,"password":password,"username":username}})
}

pub fn verify(otp: &str) -> Value {
    json!({"type":"verify","otp":otp})
}

pub fn login_req(username: Option<&str>, email: Option<&str>, password: &str) -> Value {
    json!({"type":"login","details":{"username":username,"email":email,"password":password}})
}

pub fn sent_otp(email: &str) -> Value {
    json!({"event":"sent","type":"otp","message":format!("OTP sent to {email}")})
}

pub fn login_success(username: &str, email: &str) -> Value {
    json!({"event":"success","type":"login","details":{"username":username,"email":email,"friends":[]}})
}

/// A six-digit code different from `otp`.
pub fn wrong_otp(otp: &str) -> String {
    if otp == "000000" {
        "111111".to_string()
    } else {
        "000000".to_string()
    }
}

/// Registers on `c` (asserting the exact `sent` answer) and returns the mailed OTP.
pub fn register(server: &Server, c: &mut Client, email: &str, username: &str, plain: &str) -> String {
    let v = c.request(&registration(email, &md5_hex(plain), username));
    assert_eq!(v, sent_otp(email), "registration answer\n{}", server.tail());
    server.wait_otp(email)
}

/// Registers and verifies on `c`; the connection stays anonymous.
pub fn register_and_verify_on(server: &Server, c: &mut Client, email: &str, username: &str, plain: &str) {
    let otp = register(server, c, email, username, plain);
    let v = c.request(&verify(&otp));
    assert_eq!(v, json!({"event":"success","type":"verify"}), "verify answer\n{}", server.tail());
}

/// Registers and verifies an account on a fresh connection, then closes it.
pub fn register_and_verify(server: &Server, email: &str, username: &str, plain: &str) {
    let mut c = server.connect();
    register_and_verify_on(server, &mut c, email, username, plain);
}

/// Logs in by email with the plaintext password and returns the full answer, asserting
/// `event` success and type login.
pub fn login(c: &mut Client, email: &str, plain: &str) -> Value {
    let v = c.request(&login_req(None, Some(email), &md5_hex(plain)));
    assert_eq!(v["event"], json!("success"), "login answer {v}\n{}", c.tail());
    assert_eq!(v["type"], json!("login"), "login answer {v}");
    v
}

/// A fresh connection logged in as `email`.
pub fn logged_in(server: &Server, email: &str, plain: &str) -> Client {
    let mut c = server.connect();
    login(&mut c, email, plain);
    c
}

/// The test account `name`'s email.
pub fn email(name: &str) -> String {
    format!("{name}@example.com")
}

/// The test account `name`'s plain password.
pub fn plain(name: &str) -> String {
    format!("pw-{name}")
}

/// A message text of exactly `len` bytes that starts with `tag`.
pub fn padded(tag: &str, len: usize) -> String {
    let mut s = format!("{tag}:");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// The number in a message id.
pub fn num(id: &str) -> u64 {
    id.parse().unwrap_or_else(|_| panic!("id {id:?} is not decimal"))
}

/// The id of a `sent` answer that has exactly FORMAT.md's shape, or what is wrong with it.
pub fn check_sent(v: &Value) -> Result<String, String> {
    let obj = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    if keys != ["event", "id", "type"] || v["event"] != json!("sent") || v["type"] != json!("message") {
        return Err(format!("expected exactly {{\"event\":\"sent\",\"type\":\"message\",\"id\":ID}}, got {v}"));
    }
    let id = v["id"].as_str().ok_or_else(|| format!("the id is not a JSON string: {v}"))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.parse::<u64>().is_err() {
        return Err(format!("the id is not a decimal string: {v}"));
    }
    Ok(id.to_string())
}

/// Reads one message within `limit`, panicking with `what` otherwise.
pub fn recv_within(c: &mut Client, limit: Duration, what: &str) -> Value {
    match c.read_line(limit) {
        ReadOutcome::Line(l) => c.parse(&l),
        ReadOutcome::Closed(why) => panic!("{what}: the connection closed ({why})\n{}", c.tail()),
        ReadOutcome::Timeout => panic!("{what}: nothing within {limit:?}\n{}", c.tail()),
    }
}

/// Reads messages until nothing arrives for `quiet`; at most `max` of them.
pub fn drain(c: &mut Client, quiet: Duration, max: usize) -> Vec<Value> {
    drain_ctx(c, quiet, max, "draining")
}

/// [`drain`], naming what is drained when the connection closes.
pub fn drain_ctx(c: &mut Client, quiet: Duration, max: usize, what: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match c.read_line(quiet) {
            ReadOutcome::Line(l) => {
                out.push(c.parse(&l));
                assert!(out.len() <= max, "more than {max} messages arrived\n{}", c.tail());
            }
            ReadOutcome::Timeout => return out,
            ReadOutcome::Closed(why) => {
                let why: String = why.chars().take(160).collect();
                panic!("{what}: the connection closed ({why}) after {} messages\n{}", out.len(), c.tail())
            }
        }
    }
}
