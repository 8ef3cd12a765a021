//! Work whose cost grows with the deployment (issue 17): answers over every account, written
//! as the connection takes them. The sizes here are small enough for a test; natter-bench's
//! `fill` and `reads` measure the large ones (BENCHMARKS.md "Scale").

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A database of `n` accounts `user{i}@x.org` / `User{i}` (password "pw"), written through
/// natter's own store, in `dir`.
fn accounts(dir: &std::path::Path, n: usize) {
    let path = dir.join("natter.db");
    let mut store =
        natter::store::Store::open(&path, natter::store::Durability::Normal, Duration::from_secs(5)).expect("open");
    let params = natter::password::HashParams { memory_kib: 64, iterations: 1 };
    let hash = natter::password::hash(params, &md5_hex("pw")).expect("hash");
    for i in 0..n {
        store.insert_user(&format!("user{i}@x.org"), &format!("User{i}"), &hash, 0).expect("insert");
    }
    store.commit().expect("commit");
}

#[test]
fn users_past_the_output_cap_is_one_exact_line_and_what_else_comes_waits_for_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40_000;
    accounts(dir.path(), n);
    // About 2 MB of answer against a 1 MiB cap: built whole, it would be refused.
    let s = Server::start_in(dir.path(), &["--max-output", "1048576"]);
    let mut ann = logged_in(&s, "user0@x.org", "pw");
    let mut bob = logged_in(&s, "user1@x.org", "pw");
    let mut bystander = logged_in(&s, "user2@x.org", "pw");

    ann.send(&json!({"type":"users"}));
    ann.send(&json!({"type":"ping"}));
    let pm = json!({"event":"personal","type":"message","details":{"to":"user0@x.org","message":"meanwhile"}});
    assert_eq!(bob.request(&pm)["event"], "sent");
    bystander.ping();

    let users = recv_within(&mut ann, Duration::from_secs(30), "users");
    assert_eq!((users["event"].as_str(), users["type"].as_str()), (Some("success"), Some("users")), "{users}");
    let list = users["details"].as_array().expect("a list");
    assert_eq!(list.len(), n, "every account");
    let names: Vec<String> = list.iter().map(|u| u["username"].as_str().unwrap().to_lowercase()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "once each, by username");
    assert_eq!(list[0], json!({"username":"User0","email":"user0@x.org"}));
    // Then what came meanwhile, whole: the message (held behind the line if it came while
    // the line was written, which the core's unit test shows in order) and the answer to
    // the ping sent after `users`, each once.
    let mut rest = vec![
        recv_within(&mut ann, Duration::from_secs(10), "next"),
        recv_within(&mut ann, Duration::from_secs(10), "next"),
    ];
    rest.sort_by_key(|v| v["event"].as_str().unwrap_or_default().to_owned());
    assert_eq!(rest[0]["details"]["message"], "meanwhile", "{rest:?}");
    assert_eq!(rest[1], json!({"event":"success","type":"pong"}));
    ann.expect_silence(200);
}

#[test]
fn users_over_websocket_is_one_text_message_however_many_slices_it_took() {
    use tungstenite::{client::IntoClientRequest, Message};
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    accounts(dir.path(), n);
    let s = Server::start_in(dir.path(), &["--max-output", "262144"]);
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
    let (mut ws, _) = tungstenite::client(req, stream).expect("upgrade");
    let login = json!({"type":"login","details":{"email":"user5@x.org","password":md5_hex("pw")}});
    ws.send(Message::text(login.to_string())).unwrap();
    ws.send(Message::text(r#"{"type":"users"}"#)).unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match ws.read().expect("read") {
            Message::Text(t) => texts.push(t.to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
    assert_eq!(serde_json::from_str::<Value>(&texts[0]).unwrap()["event"], "success");
    let users: Value = serde_json::from_str(&texts[1]).expect("one message, one whole JSON object");
    assert_eq!(users["details"].as_array().map(Vec::len), Some(n));
}
