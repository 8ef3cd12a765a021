//! No secrets in the log: passwords, their md5 digests, OTPs and relay tokens never appear,
//! not even at debug level (SECURITY.md promises it at info and above; we check more).

mod common;

use common::*;
use serde_json::json;

#[test]
fn secrets_never_reach_the_log_even_at_debug_level() {
    let mut s = Server::start_with(&["--log-level", "debug"]);
    let pw = md5_hex("correct horse");
    let mut c = s.connect();
    assert_eq!(c.request(&registration("ann@example.org", &pw, "ann")), sent_otp("ann@example.org"));
    let otp = s.wait_otp("ann@example.org");
    assert_eq!(c.request(&json!({"type":"verify","otp":"000000"}))["event"], "failed");
    assert_eq!(c.request(&verify(&otp)), json!({"event":"success","type":"verify"}));
    let v = c.request(&login_req(None, Some("ann@example.org"), &pw));
    assert_eq!(v["event"], "success", "{v}");
    s.user_add("bob@example.org", "bob", "secret");
    let mut b = s.connect();
    assert_eq!(b.request(&login_req(Some("bob"), None, &md5_hex("secret")))["event"], "success");
    // A failed login with a wrong digest, and a call that hands out relay tokens.
    let mut x = s.connect();
    let wrong = md5_hex("guess");
    assert_eq!(x.request(&login_req(None, Some("bob@example.org"), &wrong))["event"], "failed");
    c.send(&json!({"type":"voice","event":"call","details":{"email":"bob@example.org"}}));
    assert_eq!(b.recv()["event"], "request");
    b.send(&json!({"type":"voice","event":"accept","details":{"email":"ann@example.org"}}));
    let mine = c.recv();
    let theirs = b.recv();
    let tokens = [
        mine["details"]["token"].as_str().unwrap().to_owned(),
        theirs["details"]["token"].as_str().unwrap().to_owned(),
    ];
    b.send(&json!({"type":"voice","event":"end","details":{"email":"ann@example.org"}}));
    assert_eq!(c.recv()["event"], "end");
    // Every line the server will write: stopping it reads its stderr to the end.
    s.stop();
    let log = s.log_lines().join("\n");
    assert!(log.contains("registered"), "the log is being read:\n{log}");
    for secret in [pw.as_str(), &otp, &md5_hex("secret"), &wrong, "correct horse", "secret", &tokens[0], &tokens[1]] {
        assert!(!log.contains(secret), "{secret:?} appears in the log:\n{log}");
    }
}
