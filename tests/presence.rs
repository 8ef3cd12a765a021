//! Presence over real sockets (PROTOCOL.md section 15): opt-in at login, events on a
//! user's first login and last logout or close only, the burst after a subscribed login,
//! the `presence` query, and a block hiding the blocker.

mod common;

use common::*;
use serde_json::{json, Value};

fn server_with_contacts() -> Server {
    let s = Server::start();
    for n in ["ann", "bob", "cat"] {
        s.user_add(&format!("{n}@x.org"), n, "pw");
    }
    // ann and bob become contacts by a message; cat is nobody's contact.
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let sent = ann.request(&json!({"type":"message","event":"personal","details":{"to":"bob@x.org","message":"hi"}}));
    assert_eq!(sent["event"], "sent");
    ann.close();
    // ann's presence is announced at most once a second: let that second pass, so that the
    // tests start from a server that has told everything it had to tell.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    s
}

/// Logs in with `subscribe`; returns the connection after the login answer and the backlog.
fn subscribed(s: &Server, name: &str, subscribe: &[&str]) -> Client {
    let mut c = s.connect();
    let v = c.request(&json!({"type":"login","details":{"email":format!("{name}@x.org"),"password":md5_hex("pw"),"subscribe":subscribe}}));
    assert_eq!(v["event"], "success", "{v}");
    c
}

fn presence(email: &str, online: bool) -> Value {
    json!({"event":"presence","type":"presence","details":{"email":email,"online":online}})
}

/// Skips personal messages (a backlog) and returns the next other message.
fn next_not_personal(c: &mut Client) -> Value {
    loop {
        let v = c.recv();
        if v["event"] != "personal" {
            return v;
        }
    }
}

#[test]
fn subscribed_contacts_see_the_first_login_and_the_last_logout_only() {
    let s = server_with_contacts();
    let mut bob = subscribed(&s, "bob", &["presence"]);
    next_not_personal_or_silence(&mut bob);
    let mut ann1 = logged_in(&s, "ann@x.org", "pw");
    assert_eq!(bob.recv(), presence("ann@x.org", true));
    let ann2 = logged_in(&s, "ann@x.org", "pw");
    bob.expect_silence(150);
    ann2.close();
    bob.expect_silence(150);
    ann1.request(&json!({"type":"logout"}));
    assert_eq!(bob.recv(), presence("ann@x.org", false));
    // A close counts as a logout.
    let ann3 = logged_in(&s, "ann@x.org", "pw");
    assert_eq!(bob.recv(), presence("ann@x.org", true));
    ann3.close();
    assert_eq!(bob.recv(), presence("ann@x.org", false));
    // cat is no contact: it never shows.
    let _cat = logged_in(&s, "cat@x.org", "pw");
    bob.expect_silence(150);
}

fn next_not_personal_or_silence(c: &mut Client) {
    // bob's backlog: ann's "hi".
    let v = c.recv();
    assert_eq!(v["event"], "personal", "{v}");
    c.expect_silence(100);
}

#[test]
fn without_subscribe_nothing_new_arrives() {
    let s = server_with_contacts();
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    bob.recv();
    let ann = logged_in(&s, "ann@x.org", "pw");
    ann.close();
    bob.expect_silence(200);
    let mut c = s.connect();
    let v = c.request(
        &json!({"type":"login","details":{"email":"bob@x.org","password":md5_hex("pw"),"subscribe":["gossip"]}}),
    );
    assert_invalid(&v, "login");
}

#[test]
fn a_subscribed_login_gets_its_online_contacts_and_the_query_answers_for_all() {
    let s = server_with_contacts();
    let _ann = logged_in(&s, "ann@x.org", "pw");
    let mut bob = subscribed(&s, "bob", &["presence", "typing"]);
    // Right after the login answer, before the backlog. (An announcement of ann's own login
    // may follow within a second: the events are states, a repeat is harmless.)
    assert_eq!(bob.recv(), presence("ann@x.org", true));
    assert_eq!(next_not_presence(&mut bob)["event"], "personal", "then the backlog");
    bob.send(&json!({"type":"presence"}));
    let v = answer_of(&mut bob, "presence");
    assert_eq!(v, json!({"event":"success","type":"presence","details":[{"email":"ann@x.org","online":true}]}));
    let mut cat = logged_in(&s, "cat@x.org", "pw");
    assert_eq!(cat.request(&json!({"type":"presence"}))["details"], json!([]));
}

#[test]
fn a_block_hides_the_blocker_from_the_blocked_only() {
    let s = server_with_contacts();
    let mut ann = subscribed(&s, "ann", &["presence"]);
    ann.request(&json!({"type":"block","details":{"email":"bob@x.org"}}));
    let mut bob = subscribed(&s, "bob", &["presence"]);
    // ann sees bob come online; bob does not see ann.
    assert_eq!(ann.recv(), presence("bob@x.org", true));
    assert_eq!(next_not_personal_or_query(&mut bob), json!([{"email":"ann@x.org","online":false}]));
    ann.request(&json!({"type":"logout"}));
    bob.expect_silence(150);
}

/// bob's burst must be empty: after its backlog, the next line is the query's answer.
fn next_not_personal_or_query(c: &mut Client) -> Value {
    c.send(&json!({"type":"presence"}));
    let v = next_not_personal(c);
    assert_eq!((v["event"].as_str(), v["type"].as_str()), (Some("success"), Some("presence")), "{v}");
    v["details"].clone()
}

#[test]
fn typing_reaches_typing_subscribed_contacts_and_co_members_only() {
    let s = server_with_contacts();
    let mut bob = subscribed(&s, "bob", &["typing"]);
    assert_eq!(bob.recv()["event"], "personal");
    let mut bob_plain = logged_in(&s, "bob@x.org", "pw");
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    ann.send(&json!({"type":"typing","details":{"to":"bob@x.org","typing":true}}));
    assert_eq!(bob.recv(), json!({"event":"typing","type":"typing","details":{"from":"ann@x.org","typing":true}}));
    bob_plain.expect_silence(100);
    ann.send(&json!({"type":"typing","details":{"to":"bob@x.org","typing":false}}));
    assert_eq!(bob.recv()["details"]["typing"], false);
    // In a group: the other members, with the group's id.
    let g = ann
        .request(&json!({"type":"group","event":"create","details":{"name":"g","members":["bob@x.org","cat@x.org"]}}));
    let id = g["details"]["group"].as_str().unwrap().to_owned();
    assert_eq!(bob.recv()["event"], "update");
    ann.send(&json!({"type":"typing","details":{"group":id,"typing":true}}));
    assert_eq!(
        bob.recv(),
        json!({"event":"typing","type":"typing","details":{"from":"ann@x.org","group":id,"typing":true}})
    );
    // No answer to the typist, and a malformed one is invalid.
    ann.ping();
    assert_invalid(&ann.request(&json!({"type":"typing","details":{"to":"bob@x.org"}})), "typing");
}

fn send_to(c: &mut Client, to: &str, text: &str) -> String {
    let v = c.request(&json!({"type":"message","event":"personal","details":{"to":to,"message":text}}));
    v["id"].as_str().expect("sent id").to_owned()
}

#[test]
fn read_marks_move_forward_reach_the_other_side_and_own_devices_and_unread_follows() {
    let s = server_with_contacts();
    let mut ann = subscribed(&s, "ann", &["read"]);
    let mut bob = subscribed(&s, "bob", &["read"]);
    assert_eq!(bob.recv()["event"], "personal", "the first hi");
    // The first device took it: the user's backlog is empty for the second.
    let mut bob2 = subscribed(&s, "bob", &["read"]);
    let ids: Vec<String> = (1..=3).map(|i| send_to(&mut ann, "bob@x.org", &format!("m{i}"))).collect();
    for c in [&mut bob, &mut bob2] {
        for _ in 0..3 {
            c.recv();
        }
    }
    let event = |upto: &str| json!({"event":"read","type":"read","details":{"reader":"bob@x.org","with":"ann@x.org","upto":upto}});
    bob.send(&json!({"type":"read","details":{"with":"ann@x.org","upto":ids[1]}}));
    assert_eq!(ann.recv(), event(&ids[1]));
    assert_eq!(bob2.recv(), event(&ids[1]), "the reader's other device");
    bob.expect_silence(100);
    // Backwards: the stored mark stays; past the newest message: the newest.
    bob.send(&json!({"type":"read","details":{"with":"ann@x.org","upto":ids[0]}}));
    assert_eq!(ann.recv(), event(&ids[1]));
    let v = bob.request(&json!({"type":"unread"}));
    assert_eq!(v, json!({"event":"success","type":"unread","details":[{"with":"ann@x.org","count":1,"last":ids[2]}]}));
    bob.send(&json!({"type":"read","details":{"with":"ann@x.org","upto":"999999"}}));
    assert_eq!(ann.recv(), event(&ids[2]));
    assert_eq!(bob.request(&json!({"type":"unread"}))["details"], json!([]));
    // A group: counted from the mark, its mark told to the reader's other devices only.
    let g = ann.request(&json!({"type":"group","event":"create","details":{"name":"g","members":["bob@x.org"]}}));
    let gid = g["details"]["group"].as_str().unwrap().to_owned();
    let mut last = String::new();
    for i in 0..2 {
        last = ann
            .request(&json!({"event":"group","type":"message","details":{"group":gid,"message":format!("g{i}")}}))
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    bob.send(&json!({"type":"unread"}));
    let v = answer_of(&mut bob, "unread");
    let entries = v["details"].as_array().unwrap().clone();
    assert!(entries.contains(&json!({"group":gid,"count":2,"last":last})), "{v}");
    bob.send(&json!({"type":"read","details":{"group":gid,"upto":last}}));
    ann.expect_silence(100);
    let mut seen = false;
    for _ in 0..10 {
        let v = bob2.recv();
        // Earlier personal marks come first (bob2 heard every one of them).
        if v["event"] == "read" && v["details"]["group"].is_string() {
            assert_eq!(
                v,
                json!({"event":"read","type":"read","details":{"reader":"bob@x.org","group":gid,"upto":last}})
            );
            seen = true;
            break;
        }
    }
    assert!(seen, "bob's other device got the group mark");
    bob.send(&json!({"type":"unread"}));
    assert_eq!(answer_of(&mut bob, "unread")["details"], json!([]));
}

#[test]
fn a_read_mark_for_a_stranger_is_dropped_and_unsubscribed_connections_see_nothing() {
    let s = server_with_contacts();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let mut cat = logged_in(&s, "cat@x.org", "pw");
    cat.send(&json!({"type":"read","details":{"with":"ann@x.org","upto":"1"}}));
    cat.ping();
    ann.expect_silence(100);
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    bob.recv();
    bob.send(&json!({"type":"read","details":{"with":"ann@x.org","upto":"1"}}));
    bob.ping();
    ann.expect_silence(100);
    assert_invalid(&bob.request(&json!({"type":"read","details":{"with":"ann@x.org"}})), "read");
}

/// Skips what arrives until the `success` answer of type `ty`.
fn answer_of(c: &mut Client, ty: &str) -> Value {
    for _ in 0..20 {
        let v = c.recv();
        if v["event"] == "success" && v["type"] == ty {
            return v;
        }
    }
    panic!("no {ty} answer among 20 messages");
}

/// The next message that is not a presence event.
fn next_not_presence(c: &mut Client) -> Value {
    loop {
        let v = c.recv();
        if v["event"] != "presence" {
            return v;
        }
    }
}
