//! Blocking over real sockets (PROTOCOL.md section 16): the requests, and what a block
//! stops (personal messages and calls from the blocked user) and does not (the blocker's
//! own messages, groups, what was stored before).

mod common;

use common::*;
use serde_json::{json, Value};

fn server() -> Server {
    let s = Server::start();
    for n in ["ann", "bob"] {
        s.user_add(&format!("{n}@x.org"), n, "pw");
    }
    s
}

fn personal(to: &str, text: &str) -> Value {
    json!({"type":"message","event":"personal","details":{"to":to,"message":text}})
}

fn rows_from(s: &Server, sender_email: &str) -> i64 {
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    conn.query_row(
        "SELECT count(*) FROM messages m JOIN users u ON u.id = m.sender_id WHERE u.email = ?1",
        [sender_email],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn block_unblock_and_blocked_answer_as_section_16_says() {
    let s = server();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let ok = |ty: &str| json!({"event":"success","type":ty});
    assert_eq!(ann.request(&json!({"type":"block","details":{"email":"bob@x.org"}})), ok("block"));
    assert_eq!(ann.request(&json!({"type":"block","details":{"email":"BOB@x.org"}})), ok("block"), "twice is fine");
    assert_eq!(
        ann.request(&json!({"type":"blocked"})),
        json!({"event":"success","type":"blocked","details":["bob@x.org"]})
    );
    assert_eq!(ann.request(&json!({"type":"unblock","details":{"email":"bob@x.org"}})), ok("unblock"));
    assert_eq!(ann.request(&json!({"type":"blocked"}))["details"], json!([]));
    assert_failed(&ann.request(&json!({"type":"block","details":{"email":"nobody@x.org"}})), "block");
    assert_failed(&ann.request(&json!({"type":"block","details":{"email":"ann@x.org"}})), "block");
    assert_invalid(&ann.request(&json!({"type":"block","details":{}})), "block");
    assert_invalid(&ann.request(&json!({"type":"unblock","details":{"email":5}})), "unblock");
    let mut anon = s.connect();
    assert_invalid(&anon.request(&json!({"type":"blocked"})), "blocked");
}

#[test]
fn a_block_stops_the_blocked_users_messages_and_calls_and_nothing_else() {
    let s = server();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    // Before the block: stored, and it stays.
    assert_eq!(bob.request(&personal("ann@x.org", "before"))["event"], "sent");
    assert_eq!(ann.recv()["details"]["message"], "before");
    ann.request(&json!({"type":"block","details":{"email":"bob@x.org"}}));
    let v = bob.request(&personal("ann@x.org", "let me talk"));
    assert!(assert_failed(&v, "message").contains("not accepted"), "{v}");
    ann.expect_silence(150);
    assert_eq!(rows_from(&s, "bob@x.org"), 1, "the refused message is stored nowhere");
    let v = bob.request(&json!({"type":"voice","event":"call","details":{"email":"ann@x.org"}}));
    assert!(assert_failed(&v, "voice").contains("not accepted"), "{v}");
    ann.expect_silence(100);
    // The blocker may still write to the blocked user, and groups are unaffected.
    assert_eq!(ann.request(&personal("bob@x.org", "one way"))["event"], "sent");
    assert_eq!(bob.recv()["details"]["message"], "one way");
    let g = bob.request(&json!({"type":"group","event":"create","details":{"name":"g","members":["ann@x.org"]}}));
    let id = g["details"]["group"].as_str().unwrap().to_owned();
    assert_eq!(ann.recv()["event"], "update");
    assert_eq!(
        bob.request(&json!({"event":"group","type":"message","details":{"group":id,"message":"in the group"}}))
            ["event"],
        "sent"
    );
    assert_eq!(ann.recv()["details"]["message"], "in the group");
    // What was stored before the block stays readable.
    let h = ann.request(&json!({"type":"history","details":{"with":"bob@x.org"}}));
    let texts: Vec<&str> = h["details"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["one way", "before"]);
}

#[test]
fn a_block_is_stored_and_lifted_by_unblock() {
    let mut s = server();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    ann.request(&json!({"type":"block","details":{"email":"bob@x.org"}}));
    ann.close();
    s.restart();
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    assert_failed(&bob.request(&personal("ann@x.org", "after a restart")), "message");
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    assert_eq!(ann.request(&json!({"type":"blocked"}))["details"], json!(["bob@x.org"]));
    ann.request(&json!({"type":"unblock","details":{"email":"bob@x.org"}}));
    assert_eq!(bob.request(&personal("ann@x.org", "thanks"))["event"], "sent");
    assert_eq!(ann.recv()["details"]["message"], "thanks");
}
