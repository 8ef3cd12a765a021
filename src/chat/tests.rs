//! The core driven without sockets or sleeping: frames in, time injected, outbox read back.
//! The harness plays the event loop: it runs worker jobs inline, commits, and, like the
//! loop, feeds backlogs and reports written deliveries.

use super::*;
use crate::password::{self, HashParams};
use crate::store::Durability;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

const CHEAP: HashParams = HashParams { memory_kib: 64, iterations: 1 };
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Harness {
    core: Core,
    dir: tempfile::TempDir,
    now: Now,
    next_slot: u32,
    /// The last OTP the "mail worker" was asked to send.
    otp: Option<String>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_limits(Limits { call_timeout_ms: 1000, ..Limits::default() })
    }

    fn with_limits(limits: Limits) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Durability::Normal, Duration::from_millis(20)).unwrap();
        let now = Now { ms: 0, unix: 1_700_000_000 };
        let dummy = password::hash(CHEAP, "0").unwrap();
        let voice = VoiceConfig { public_ip: None, relay_port: 5050, relay_rate: 200 };
        Harness { core: Core::new(store, limits, voice, dummy, now), dir, now, next_slot: 0, otp: None }
    }

    fn user(&mut self, email: &str, name: &str) {
        let hash = password::hash(CHEAP, &password::md5_hex("pw")).unwrap();
        self.core.store().insert_user(email, name, &hash, 0).unwrap();
        self.core.store().commit().unwrap();
    }

    fn open(&mut self) -> ConnId {
        self.next_slot += 1;
        let id = ConnId { slot: self.next_slot, generation: 1 };
        self.core.on_open(id, LOCAL, LOCAL, self.now);
        id
    }

    fn login(&mut self, email: &str, acks: bool) -> ConnId {
        let c = self.open();
        let pw = password::md5_hex("pw");
        let out = self.send(c, json!({"type":"login","details":{"email":email,"password":pw,"acks":acks}}));
        assert_eq!(out[0].1["event"], "success", "{out:?}");
        c
    }

    fn advance(&mut self, ms: u64) -> Vec<(ConnId, Value)> {
        self.now.ms += ms;
        self.now.unix += (ms / 1000) as i64;
        self.core.on_timers(self.now);
        self.step()
    }

    /// Handles one frame and everything it causes; returns what was sent, in order.
    fn send(&mut self, conn: ConnId, v: Value) -> Vec<(ConnId, Value)> {
        self.core.on_frame(conn, v.to_string().as_bytes(), 2, self.now);
        self.step()
    }

    fn step(&mut self) -> Vec<(ConnId, Value)> {
        let mut seen = Vec::new();
        loop {
            let out = self.core.commit();
            let jobs = std::mem::take(&mut out.jobs);
            let mut written = Vec::new();
            for s in out.sends.drain(..) {
                let v: Value = serde_json::from_slice(&out.bytes[s.range]).unwrap();
                if let Some(id) = s.delivers {
                    written.push((s.to, id));
                }
                seen.push((s.to, v));
            }
            out.clear();
            for (c, id) in written {
                self.core.on_written(c, id, 1, self.now);
            }
            let mut backlog = Vec::new();
            self.core.catching_up(&mut backlog);
            for c in backlog {
                while self.core.catch_up(c, 2, 1 << 20) {}
            }
            if jobs.is_empty() && !self.core.has_output() {
                return seen;
            }
            for job in jobs {
                let done = match job {
                    Job::HashPassword { conn, md5 } => JobDone::Hashed { conn, hash: password::hash(CHEAP, &md5).ok() },
                    Job::VerifyPassword { conn, hash, md5 } => {
                        JobDone::Verified { conn, ok: password::verify(&hash, &md5) }
                    }
                    Job::SendOtp { conn, otp, reset, .. } => {
                        self.otp = Some(otp);
                        JobDone::OtpSent { conn, result: Ok(()), reset }
                    }
                };
                self.core.on_job_done(done, self.now);
            }
        }
    }
}

fn personal(to: &str, text: &str) -> Value {
    json!({"event":"personal","type":"message","details":{"to":to,"message":text,"time":7}})
}

fn to(out: &[(ConnId, Value)], c: ConnId) -> Vec<Value> {
    out.iter().filter(|(x, _)| *x == c).map(|(_, v)| v.clone()).collect()
}

#[test]
fn registration_verify_and_login_through_the_workers() {
    let mut h = Harness::new();
    let c = h.open();
    let md5 = password::md5_hex("secret");
    let out = h.send(c, json!({"type":"registration","details":{"email":"a@x.org","password":md5,"username":"ann"}}));
    assert_eq!(out, vec![(c, json!({"event":"sent","type":"otp","message":"OTP sent to a@x.org"}))]);
    let otp = h.otp.clone().unwrap();
    assert_eq!(h.send(c, json!({"type":"verify","otp":otp}))[0].1, json!({"event":"success","type":"verify"}));
    let out = h.send(c, json!({"type":"login","details":{"username":"ANN","password":md5}}));
    assert_eq!(
        out[0].1,
        json!({"event":"success","type":"login","details":{"username":"ann","email":"a@x.org","friends":[]}})
    );
}

#[test]
fn an_otp_expires_with_its_lifetime() {
    let mut h = Harness::new();
    let c = h.open();
    let md5 = password::md5_hex("secret");
    h.send(c, json!({"type":"registration","details":{"email":"a@x.org","password":md5,"username":"ann"}}));
    let otp = h.otp.clone().unwrap();
    h.advance(600_000);
    let out = h.send(c, json!({"type":"verify","otp":otp}));
    assert_eq!(out[0].1["event"], "failed");
    assert_eq!(out[0].1["type"], "verify");
}

/// The deadline counts from the connection's start: a ping is answered but extends
/// nothing (PROTOCOL.md section 2).
#[test]
fn anonymous_connections_close_after_the_auth_timeout_from_their_start() {
    let mut h = Harness::new();
    let c = h.open();
    h.now.ms += 59_000;
    h.core.on_timers(h.now);
    assert!(h.core.out.closes.is_empty(), "closed before its time");
    h.core.on_frame(c, br#"{"type":"ping"}"#, 1, h.now);
    assert_eq!(h.core.out.sends.len(), 1, "the ping is answered");
    h.now.ms += 1_100;
    h.core.on_timers(h.now);
    assert_eq!(h.core.out.closes, vec![(c, CloseReason::AuthTimeout)]);
}

#[test]
fn backlog_arrives_in_order_after_login_once() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    for i in 0..5 {
        let out = h.send(a, personal("b@x.org", &i.to_string()));
        assert_eq!(out[0].1["event"], "sent");
    }
    let b = h.open();
    let pw = password::md5_hex("pw");
    let out = h.send(b, json!({"type":"login","details":{"email":"b@x.org","password":pw}}));
    let texts: Vec<Value> = to(&out, b).iter().skip(1).map(|v| v["details"]["message"].clone()).collect();
    assert_eq!(texts, vec![json!("0"), json!("1"), json!("2"), json!("3"), json!("4")]);
    assert_eq!(to(&out, b)[0]["details"]["friends"], json!([{"email":"a@x.org","username":"a"}]));
    // A second login of b gets the login answer and nothing else: what was delivered to
    // the first connection is not sent again (the first one is still open).
    let again = h.open();
    let out = h.send(again, json!({"type":"login","details":{"email":"b@x.org","password":pw}}));
    let got = to(&out, again);
    assert_eq!(got.len(), 1, "delivered messages are not sent again: {got:?}");
    assert_eq!(got[0]["type"], "login");
    assert!(h.step().is_empty());
}

#[test]
fn a_failed_commit_answers_failed_and_delivers_nothing() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let b = h.login("b@x.org", false);
    let lock = rusqlite::Connection::open(h.dir.path().join("t.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = h.send(a, personal("b@x.org", "lost?"));
    assert_eq!(to(&out, a)[0]["event"], "failed", "{out:?}");
    assert!(to(&out, b).is_empty(), "{out:?}");
    lock.execute_batch("ROLLBACK").unwrap();
    let out = h.send(a, personal("b@x.org", "stored"));
    assert_eq!(to(&out, a)[0]["event"], "sent");
    assert_eq!(to(&out, b)[0]["details"]["message"], "stored");
}

#[test]
fn a_message_to_oneself_waits_for_the_next_login_without_another_device() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let b = h.login("b@x.org", false);
    assert_eq!(to(&h.send(a, personal("a@x.org", "note")), a).len(), 1, "only `sent`");
    // A later delivery to the same connection must not count for the note.
    h.send(b, personal("a@x.org", "hi"));
    h.core.on_close(a, h.now);
    let c = h.open();
    let pw = password::md5_hex("pw");
    let out = h.send(c, json!({"type":"login","details":{"email":"a@x.org","password":pw}}));
    let texts: Vec<Value> = to(&out, c).iter().skip(1).map(|v| v["details"]["message"].clone()).collect();
    assert_eq!(texts, vec![json!("note"), json!("hi")]);
    assert_eq!(to(&out, c)[1]["details"]["to"], "a@x.org");
}

#[test]
fn an_ack_aware_connection_gets_unacked_messages_again() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let b = h.login("b@x.org", true);
    let first = h.send(a, personal("b@x.org", "1"));
    let id = to(&first, a)[0]["id"].as_str().unwrap().to_owned();
    h.send(a, personal("b@x.org", "2"));
    h.send(b, json!({"type":"ack","details":{"id":id}}));
    h.core.on_close(b, h.now);
    h.step();
    let b2 = h.open();
    let pw = password::md5_hex("pw");
    let out = h.send(b2, json!({"type":"login","details":{"email":"b@x.org","password":pw,"acks":true}}));
    let texts: Vec<Value> = to(&out, b2).iter().skip(1).map(|v| v["details"]["message"].clone()).collect();
    assert_eq!(texts, vec![json!("2")]);
}

#[test]
fn a_ringing_call_times_out_for_both_and_frees_them() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let b = h.login("b@x.org", false);
    let out = h.send(a, json!({"type":"voice","event":"call","details":{"email":"b@x.org"}}));
    assert_eq!(out, vec![(b, json!({"type":"voice","event":"request","details":{"email":"a@x.org"}}))]);
    assert!(h.advance(900).is_empty());
    let out = h.advance(200);
    assert!(out.contains(&(a, json!({"type":"voice","event":"time","details":{"email":"b@x.org"}}))));
    assert!(out.contains(&(b, json!({"type":"voice","event":"time","details":{"email":"a@x.org"}}))));
    let out = h.send(a, json!({"type":"voice","event":"call","details":{"email":"b@x.org"}}));
    assert_eq!(out[0].1["event"], "request", "not busy any more");
}

#[test]
fn a_talking_call_ends_after_relay_silence() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let b = h.login("b@x.org", false);
    h.send(a, json!({"type":"voice","event":"call","details":{"email":"b@x.org"}}));
    let out = h.send(b, json!({"type":"voice","event":"accept","details":{"email":"a@x.org"}}));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].1["details"]["port"], "5050");
    assert_ne!(out[0].1["details"]["token"], out[1].1["details"]["token"]);
    assert!(h.advance(59_000).is_empty());
    let out = h.advance(1_100);
    assert!(out.contains(&(a, json!({"type":"voice","event":"end","details":{"email":"b@x.org"}}))), "{out:?}");
    assert!(out.contains(&(b, json!({"type":"voice","event":"end","details":{"email":"a@x.org"}}))), "{out:?}");
}

#[test]
fn an_account_deleted_by_another_process_is_no_longer_a_recipient() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    assert_eq!(h.send(a, personal("b@x.org", "1"))[0].1["event"], "sent", "b is cached now");
    let mut admin = Store::open(&h.dir.path().join("t.db"), Durability::Normal, Duration::from_secs(1)).unwrap();
    assert!(admin.delete_user("b@x.org").unwrap());
    admin.commit().unwrap();
    // The very next message sees it, though the periodic look is not due: a write begins
    // by catching up with other processes' commits, under the write lock.
    let out = h.send(a, personal("b@x.org", "2"));
    assert_eq!(out[0].1, json!({"event":"failed","type":"message","message":"unknown recipient"}));
}

#[test]
fn a_connected_user_deleted_by_another_process_is_logged_out_with_the_event() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let b = h.login("b@x.org", false);
    let mut admin = Store::open(&h.dir.path().join("t.db"), Durability::Normal, Duration::from_secs(1)).unwrap();
    assert!(admin.delete_user("b@x.org").unwrap());
    admin.commit().unwrap();
    // Nobody sends anything: the periodic check finds it within a second.
    let out = h.advance(super::EXTERNAL_CHECK_EVERY_MS);
    let logout = json!({"event":"logout","type":"logout","details":{"reason":"account deleted"}});
    assert_eq!(out, vec![(b, logout)]);
    let out = h.send(b, personal("a@x.org", "still here?"));
    assert_eq!(out[0].1["event"], "invalid", "{out:?}");
    assert!(to(&out, a).is_empty());
}

#[test]
fn an_answer_is_held_to_the_room_its_connection_has_left() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    let a = h.login("a@x.org", false);
    for i in 0..5 {
        h.send(a, personal("a@x.org", &format!("note {i}")));
    }
    let history = json!({"type":"history","details":{"with":"a@x.org"}});
    h.core.out.watch(a, 300);
    let out = h.send(a, history.clone());
    let failed = json!({"event":"failed","type":"history","message":super::outbox::TOO_BIG});
    assert_eq!(out, vec![(a, failed)]);
    h.core.out.watch(a, 10_000);
    let out = h.send(a, history);
    assert_eq!(out[0].1["details"].as_array().map(Vec::len), Some(5), "{out:?}");
}

#[test]
fn one_address_gets_a_bounded_number_of_connections() {
    let limits = Limits { max_connections_per_ip: 3, max_anonymous_per_ip: 2, ..Limits::default() };
    let mut h = Harness::with_limits(limits);
    h.user("a@x.org", "a");
    let other: IpAddr = "127.0.0.9".parse().unwrap();
    assert_eq!(h.core.admit(LOCAL), Ok(()));
    let first = h.login("a@x.org", false);
    h.open();
    assert_eq!(h.core.admit(LOCAL), Ok(()), "one anonymous and one logged in");
    let third = h.open();
    assert_eq!(h.core.admit(LOCAL), Err(AddressFull), "two anonymous");
    assert_eq!(h.core.admit(other), Ok(()), "another address is not affected");
    h.core.on_close(third, h.now);
    assert_eq!(h.core.admit(LOCAL), Ok(()));
    h.open();
    assert_eq!(h.core.admit(LOCAL), Err(AddressFull), "three in all");
    // A logout makes a connection anonymous again; a close frees its place.
    h.send(first, json!({"type":"logout"}));
    h.core.on_close(first, h.now);
    assert_eq!(h.core.admit(LOCAL), Err(AddressFull), "still two anonymous");
}

/// Failed logins are counted per name and address: five from one address throttle that
/// address for the name, not the name everywhere, and the window passes with time.
#[test]
fn login_throttles_release_with_time_and_never_lock_out_another_address() {
    let mut h = Harness::new();
    h.user("c@x.org", "c");
    let attacker: IpAddr = "192.0.2.7".parse().unwrap();
    let open_from = |h: &mut Harness, ip: IpAddr| {
        h.next_slot += 1;
        let id = ConnId { slot: h.next_slot, generation: 1 };
        h.core.on_open(id, ip, LOCAL, h.now);
        id
    };
    let login = |pw: &str| json!({"type":"login","details":{"email":"c@x.org","password":password::md5_hex(pw)}});
    let bad = open_from(&mut h, attacker);
    for _ in 0..5 {
        assert_eq!(h.send(bad, login("wrong"))[0].1["message"], "invalid credentials");
    }
    let out = h.send(bad, login("pw"));
    assert!(out[0].1["message"].as_str().unwrap().starts_with("too many attempts, retry in "), "{out:?}");
    let good = h.open();
    assert_eq!(h.send(good, login("pw"))[0].1["event"], "success", "another address is not locked out");
    h.advance(60_000);
    assert_eq!(h.send(bad, login("pw"))[0].1["event"], "success", "the window passed");
}

/// Ten calls a minute per caller; the eleventh is refused until the minute has passed.
#[test]
fn call_attempts_are_capped_per_minute() {
    let mut h = Harness::new();
    h.user("a@x.org", "a");
    h.user("b@x.org", "b");
    let a = h.login("a@x.org", false);
    let _b = h.login("b@x.org", false);
    let call = json!({"type":"voice","event":"call","details":{"email":"b@x.org"}});
    let end = json!({"type":"voice","event":"end","details":{"email":"b@x.org"}});
    for i in 0..10 {
        let out = h.send(a, call.clone());
        assert!(out.iter().any(|(_, v)| v["event"] == "request"), "call {i}: {out:?}");
        h.send(a, end.clone());
    }
    let out = h.send(a, call.clone());
    assert_eq!(out[0].1["event"], "failed", "{out:?}");
    assert!(out[0].1["message"].as_str().unwrap().starts_with("too many call attempts"));
    h.advance(60_000);
    let out = h.send(a, call);
    assert!(out.iter().any(|(_, v)| v["event"] == "request"), "{out:?}");
}

/// Logs `email` in with the `subscribe` list.
fn login_subscribed(h: &mut Harness, email: &str, subscribe: &[&str]) -> ConnId {
    let c = h.open();
    let pw = password::md5_hex("pw");
    let out = h.send(c, json!({"type":"login","details":{"email":email,"password":pw,"subscribe":subscribe}}));
    assert_eq!(out[0].1["event"], "success", "{out:?}");
    c
}

fn typing_to(to: &str, typing: bool) -> Value {
    json!({"type":"typing","details":{"to":to,"typing":typing}})
}

fn typing_event(from: &str, typing: bool) -> Value {
    json!({"event":"typing","type":"typing","details":{"from":from,"typing":typing}})
}

/// ann and bob are contacts (one message), both online; bob subscribed to typing.
fn typing_pair() -> (Harness, ConnId, ConnId) {
    let mut h = Harness::new();
    h.user("ann@x.org", "ann");
    h.user("bob@x.org", "bob");
    let a0 = h.login("ann@x.org", false);
    h.send(a0, personal("bob@x.org", "hi"));
    h.core.on_close(a0, h.now);
    let bob = login_subscribed(&mut h, "bob@x.org", &["typing"]);
    let ann = h.login("ann@x.org", false);
    (h, ann, bob)
}

#[test]
fn typing_lapses_ten_seconds_after_the_last_true() {
    let (mut h, ann, bob) = typing_pair();
    let out = h.send(ann, typing_to("bob@x.org", true));
    assert_eq!(to(&out, bob), [typing_event("ann@x.org", true)]);
    assert!(to(&out, ann).is_empty(), "no answer to the typist");
    assert!(to(&h.advance(9_000), bob).is_empty());
    // A renewed `true` moves the lapse: without it, it would come at 10,000.
    h.send(ann, typing_to("bob@x.org", true));
    assert!(to(&h.advance(9_999), bob).is_empty());
    assert_eq!(to(&h.advance(1), bob), [typing_event("ann@x.org", false)]);
    assert!(to(&h.advance(20_000), bob).is_empty(), "once");
}

#[test]
fn typing_ends_with_the_typists_connection_and_is_rate_capped() {
    let (mut h, ann, bob) = typing_pair();
    let mut passed = 0;
    for _ in 0..10 {
        passed += to(&h.send(ann, typing_to("bob@x.org", true)), bob).len();
    }
    assert_eq!(passed, 2, "two per second per sender and target");
    h.advance(1_000);
    assert_eq!(to(&h.send(ann, typing_to("bob@x.org", true)), bob).len(), 1, "a new second");
    h.core.on_close(ann, h.now);
    let out = h.step();
    assert_eq!(to(&out, bob), [typing_event("ann@x.org", false)], "the close ends it");
    assert!(to(&h.advance(11_000), bob).is_empty(), "and its lapse is gone");
}

#[test]
fn typing_to_a_stranger_or_across_a_block_goes_nowhere() {
    let (mut h, ann, bob) = typing_pair();
    h.user("cat@x.org", "cat");
    let cat = login_subscribed(&mut h, "cat@x.org", &["typing"]);
    let out = h.send(ann, typing_to("cat@x.org", true));
    assert!(out.is_empty(), "no contact, no event, no answer: {out:?}");
    let out = h.send(ann, typing_to("nobody@x.org", true));
    assert!(out.is_empty(), "{out:?}");
    h.send(bob, json!({"type":"block","details":{"email":"ann@x.org"}}));
    h.advance(1_000);
    let out = h.send(ann, typing_to("bob@x.org", true));
    assert!(to(&out, bob).is_empty() && to(&out, cat).is_empty(), "{out:?}");
}

#[test]
fn presence_is_announced_at_once_and_at_most_once_a_second() {
    let mut h = Harness::new();
    h.user("ann@x.org", "ann");
    h.user("bob@x.org", "bob");
    let a0 = h.login("ann@x.org", false);
    h.send(a0, personal("bob@x.org", "hi"));
    h.core.on_close(a0, h.now);
    h.advance(2_000);
    let bob = login_subscribed(&mut h, "bob@x.org", &["presence"]);
    h.advance(2_000);
    let online = json!({"event":"presence","type":"presence","details":{"email":"ann@x.org","online":true}});
    let offline = json!({"event":"presence","type":"presence","details":{"email":"ann@x.org","online":false}});
    let login_out = {
        let c = h.open();
        let pw = password::md5_hex("pw");
        let mut out = h.send(c, json!({"type":"login","details":{"email":"ann@x.org","password":pw}}));
        out.extend(h.advance(10));
        (c, out)
    };
    assert_eq!(to(&login_out.1, bob), std::slice::from_ref(&online), "at once");
    // Flapping: out and back within the second is one announcement of where it ended, a
    // second after the last (it repeats a state: someone may have subscribed in between).
    h.send(login_out.0, json!({"type":"logout"}));
    let pw = password::md5_hex("pw");
    h.send(login_out.0, json!({"type":"login","details":{"email":"ann@x.org","password":pw}}));
    for _ in 0..5 {
        h.send(login_out.0, json!({"type":"logout"}));
        h.send(login_out.0, json!({"type":"login","details":{"email":"ann@x.org","password":pw}}));
    }
    assert_eq!(to(&h.advance(1_500), bob), std::slice::from_ref(&online), "once, not per flap");
    h.send(login_out.0, json!({"type":"logout"}));
    let out = h.advance(1_100);
    assert_eq!(to(&out, bob), [offline], "a second after the last announcement");
}

/// Drains a committed outbox the way the loop does (`sendable`), appending each
/// connection's bytes to its stream.
fn drain_sendable(core: &mut Core, streams: &mut std::collections::HashMap<ConnId, Vec<u8>>) {
    let out = core.sendable();
    for s in out.sends.drain(..) {
        streams.entry(s.to).or_default().extend_from_slice(&out.bytes[s.range]);
    }
    out.clear();
}

#[test]
fn users_over_many_accounts_is_one_line_written_in_slices_and_nothing_lands_inside_it() {
    let mut h = Harness::new();
    let hash = password::hash(CHEAP, &password::md5_hex("pw")).unwrap();
    for i in 0..3000 {
        h.core.store().insert_user(&format!("user{i:04}@x.org"), &format!("User{i:04}"), &hash, 0).unwrap();
    }
    h.core.store().commit().unwrap();
    let ann = h.login("user0000@x.org", false);
    let bob = h.login("user0001@x.org", false);
    let mut streams = std::collections::HashMap::new();

    h.core.on_frame(ann, br#"{"type":"users"}"#, 2, h.now);
    h.core.commit();
    drain_sendable(&mut h.core, &mut streams);
    assert!(h.core.is_busy(ann), "3,000 accounts do not fit the first slice: ann's requests wait");
    let first = streams.get(&ann).map_or(0, Vec::len);
    assert!(first > 0 && !streams[&ann].contains(&b'\n'), "a first slice, not the whole line");

    // A message to ann while her line is unfinished waits for its end.
    let pm = json!({"event":"personal","type":"message","details":{"to":"user0000@x.org","message":"hi"}});
    h.core.on_frame(bob, pm.to_string().as_bytes(), 2, h.now);
    h.core.commit();
    drain_sendable(&mut h.core, &mut streams);
    assert_eq!(streams[&ann].len(), first, "nothing was added inside the line");
    assert!(streams[&bob].starts_with(br#"{"event":"sent""#), "{:?}", String::from_utf8_lossy(&streams[&bob]));

    let mut slices = 1;
    let mut backlog = Vec::new();
    h.core.catching_up(&mut backlog);
    assert_eq!(backlog, vec![ann]);
    while h.core.catch_up(ann, 2, 4096) {
        drain_sendable(&mut h.core, &mut streams);
        slices += 1;
        assert!(slices < 1000, "the listing ends");
    }
    drain_sendable(&mut h.core, &mut streams);
    assert!(slices > 5, "the rest written in slices of about 4 KiB: {slices}");
    assert!(!h.core.is_busy(ann));

    let text = String::from_utf8(streams.remove(&ann).unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "the users line, then the message that waited");
    let users: Value = serde_json::from_str(lines[0]).unwrap();
    let list = users["details"].as_array().unwrap();
    assert_eq!(list.len(), 3000);
    let names: Vec<&str> = list.iter().map(|u| u["username"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_lowercase());
    sorted.dedup();
    assert_eq!(names, sorted, "every account once, by username");
    let msg: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!((msg["event"].as_str(), msg["details"]["message"].as_str()), (Some("personal"), Some("hi")));
}
