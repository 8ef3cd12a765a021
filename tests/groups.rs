//! Groups over real sockets (PROTOCOL.md section 14): every rule, the limits, and who
//! receives what live, at catch-up and in history.

mod common;

use common::*;
use serde_json::{json, Value};

fn group_req(event: &str, details: Value) -> Value {
    json!({"type":"group","event":event,"details":details})
}

fn g(id: &str, name: &str, owner: &str, members: &[&str]) -> Value {
    json!({"group":id,"name":name,"owner":owner,"members":members})
}

fn success(details: Value) -> Value {
    json!({"event":"success","type":"group","details":details})
}

fn update(details: Value) -> Value {
    json!({"event":"update","type":"group","details":details})
}

fn gsend(group: &str, text: &str) -> Value {
    json!({"event":"group","type":"message","details":{"group":group,"message":text}})
}

/// A server with users ann, bob, cat and dan (password "pw").
fn server_with_users(extra: &[&str]) -> Server {
    let s = Server::start_with(extra);
    for n in ["ann", "bob", "cat", "dan"] {
        s.user_add(&format!("{n}@x.org"), n, "pw");
    }
    s
}

fn on(s: &Server, name: &str) -> Client {
    logged_in(s, &format!("{name}@x.org"), "pw")
}

/// ann creates "team" with `members`; returns the group id.
fn create(ann: &mut Client, members: &[&str]) -> String {
    let v = ann.request(&group_req("create", json!({"name":"team","members":members})));
    assert_eq!(v["event"], "success", "{v}");
    v["details"]["group"].as_str().expect("the group id is a string").to_owned()
}

/// The next message `c` receives is a group message with `text` from `from`; returns its id.
fn expect_group_message(c: &mut Client, group: &str, text: &str, from: &str) -> String {
    let v = c.recv();
    assert_eq!((v["event"].as_str(), v["type"].as_str()), (Some("group"), Some("message")), "{v}");
    let d = &v["details"];
    assert_eq!((d["group"].as_str(), d["message"].as_str(), d["from"].as_str()), (Some(group), Some(text), Some(from)));
    assert!(d["time"].is_i64(), "{v}");
    d["id"].as_str().expect("id is a string").to_owned()
}

#[test]
fn every_change_answers_the_requester_and_updates_every_member_connection() {
    let s = server_with_users(&[]);
    let (mut ann, mut ann2, mut bob, mut cat) = (on(&s, "ann"), on(&s, "ann"), on(&s, "bob"), on(&s, "cat"));
    // create: the creator is added first, unknown duplicates are one member.
    let v = ann.request(&group_req("create", json!({"name":"team","members":["bob@x.org","BOB@x.org"]})));
    let id = v["details"]["group"].as_str().unwrap().to_owned();
    let two = g(&id, "team", "ann@x.org", &["ann@x.org", "bob@x.org"]);
    assert_eq!(v, success(two.clone()));
    assert_eq!(ann2.recv(), update(two.clone()), "the requester's other connection");
    assert_eq!(bob.recv(), update(two.clone()));
    cat.expect_silence(100);
    // add
    let three = g(&id, "team", "ann@x.org", &["ann@x.org", "bob@x.org", "cat@x.org"]);
    assert_eq!(ann.request(&group_req("add", json!({"group":id,"members":["cat@x.org"]}))), success(three.clone()));
    for c in [&mut ann2, &mut bob, &mut cat] {
        assert_eq!(c.recv(), update(three.clone()));
    }
    // rename
    let renamed = g(&id, "crew", "ann@x.org", &["ann@x.org", "bob@x.org", "cat@x.org"]);
    assert_eq!(ann.request(&group_req("rename", json!({"group":id,"name":"crew"}))), success(renamed.clone()));
    for c in [&mut ann2, &mut bob, &mut cat] {
        assert_eq!(c.recv(), update(renamed.clone()));
    }
    // remove: the removed member gets one last update without itself.
    let without_cat = g(&id, "crew", "ann@x.org", &["ann@x.org", "bob@x.org"]);
    assert_eq!(
        ann.request(&group_req("remove", json!({"group":id,"members":["cat@x.org"]}))),
        success(without_cat.clone())
    );
    for c in [&mut ann2, &mut bob, &mut cat] {
        assert_eq!(c.recv(), update(without_cat.clone()));
    }
    // groups: the caller's groups.
    let v = bob.request(&json!({"type":"groups"}));
    assert_eq!(v, json!({"event":"success","type":"groups","details":[without_cat]}));
    assert_eq!(cat.request(&json!({"type":"groups"})), json!({"event":"success","type":"groups","details":[]}));
}

#[test]
fn only_the_owner_changes_a_group_and_strangers_learn_nothing() {
    let s = server_with_users(&[]);
    let (mut ann, mut bob, mut cat) = (on(&s, "ann"), on(&s, "bob"), on(&s, "cat"));
    let id = create(&mut ann, &["bob@x.org"]);
    bob.recv();
    for (event, details) in [
        ("add", json!({"group":id,"members":["cat@x.org"]})),
        ("remove", json!({"group":id,"members":["ann@x.org"]})),
        ("rename", json!({"group":id,"name":"mine"})),
    ] {
        let v = bob.request(&group_req(event, details));
        assert!(assert_failed(&v, "group").contains("owner"), "{event}: {v}");
    }
    // A group that does not exist and one the caller is not in read alike.
    let not_in = cat.request(&group_req("leave", json!({"group":id})));
    let missing = cat.request(&group_req("leave", json!({"group":"999999"})));
    assert_eq!(not_in, missing);
    assert_failed(&not_in, "group");
    assert_eq!(cat.request(&gsend(&id, "hi")), missing_message_failed(&mut cat, "999999"));
    let h = cat.request(&json!({"type":"history","details":{"group":id}}));
    assert_failed(&h, "history");
    // Nothing changed.
    assert_eq!(
        ann.request(&json!({"type":"groups"}))["details"][0],
        g(&id, "team", "ann@x.org", &["ann@x.org", "bob@x.org"])
    );
}

fn missing_message_failed(c: &mut Client, group: &str) -> Value {
    let v = c.request(&gsend(group, "hi"));
    assert_failed(&v, "message");
    v
}

#[test]
fn bad_requests_are_invalid_or_failed_and_change_nothing() {
    let s = server_with_users(&[]);
    let mut ann = on(&s, "ann");
    let v = ann.request(&group_req("create", json!({"name":"team","members":["bob@x.org","nobody@x.org"]})));
    assert!(assert_failed(&v, "group").contains("nobody@x.org"), "{v}");
    assert_eq!(ann.request(&json!({"type":"groups"}))["details"], json!([]), "nothing was created");
    for name in ["", "   ", &"x".repeat(65)] {
        assert_failed(&ann.request(&group_req("create", json!({"name":name,"members":[]}))), "group");
    }
    assert_invalid(&ann.request(&group_req("create", json!({"name":"team"}))), "group");
    assert_invalid(&ann.request(&group_req("create", json!({"members":[]}))), "group");
    assert_invalid(&ann.request(&group_req("create", json!({"name":5}))), "group");
    assert_invalid(&ann.request(&group_req("add", json!({"group":"1"}))), "group");
    assert_invalid(&ann.request(&group_req("explode", json!({"group":"1"}))), "group");
    assert_invalid(&ann.request(&json!({"event":"group","type":"message","details":{"message":"x"}})), "message");
    let one = ann.request(&group_req("create", json!({"name":"solo","members":[]})));
    assert_eq!(one["details"]["members"], json!(["ann@x.org"]), "a group of one: {one}");
}

#[test]
fn the_earliest_member_takes_over_and_the_last_one_out_deletes_the_group() {
    let s = server_with_users(&[]);
    let (mut ann, mut bob, mut cat) = (on(&s, "ann"), on(&s, "bob"), on(&s, "cat"));
    let id = create(&mut ann, &["bob@x.org", "cat@x.org"]);
    bob.recv();
    cat.recv();
    let after = g(&id, "team", "bob@x.org", &["bob@x.org", "cat@x.org"]);
    assert_eq!(ann.request(&group_req("leave", json!({"group":id}))), success(after.clone()));
    assert_eq!(bob.recv(), update(after.clone()));
    assert_eq!(cat.recv(), update(after));
    let v = bob.request(&group_req("leave", json!({"group":id})));
    assert_eq!(v, success(g(&id, "team", "cat@x.org", &["cat@x.org"])));
    cat.recv();
    // The last member: the answer has no members and names the last owner.
    assert_eq!(cat.request(&group_req("leave", json!({"group":id}))), success(g(&id, "team", "cat@x.org", &[])));
    assert_eq!(cat.request(&json!({"type":"groups"}))["details"], json!([]));
    assert_failed(&ann.request(&gsend(&id, "anyone?")), "message");
    let rows: i64 = sqlite(&s, "SELECT count(*) FROM groups");
    assert_eq!(rows, 0, "the group is gone from the store");
}

fn sqlite(s: &Server, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(s.db_path()).expect("open the test database");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[test]
fn a_group_message_is_stored_once_and_reaches_every_member_connection() {
    let s = server_with_users(&[]);
    let (mut ann, mut ann2, mut bob, mut dan) = (on(&s, "ann"), on(&s, "ann"), on(&s, "bob"), on(&s, "dan"));
    let id = create(&mut ann, &["bob@x.org", "cat@x.org"]);
    ann2.recv();
    bob.recv();
    let v = ann.request(&json!({"event":"group","type":"message",
        "details":{"group":id,"message":"hello","media":"https://x.org/a.png","time":42,"client_id":"c1"}}));
    assert_eq!((v["event"].as_str(), v["type"].as_str()), (Some("sent"), Some("message")), "{v}");
    let mid = v["id"].as_str().unwrap().to_owned();
    let expected = json!({"event":"group","type":"message","details":{"id":mid,"group":id,"message":"hello",
        "media":"https://x.org/a.png","from":"ann@x.org","time":42}});
    assert_eq!(bob.recv(), expected);
    assert_eq!(ann2.recv(), expected, "the sender's other connection");
    ann.expect_silence(100);
    dan.expect_silence(1);
    // The same client_id again: the same id, nothing sent twice.
    let again = ann.request(&json!({"event":"group","type":"message",
        "details":{"group":id,"message":"hello","client_id":"c1"}}));
    assert_eq!(again["id"], json!(mid));
    bob.expect_silence(100);
    // A non-member may not send to it.
    assert_failed(&dan.request(&gsend(&id, "let me in")), "message");
    for i in 0..4 {
        ann.request(&gsend(&id, &format!("m{i}")));
    }
    assert_eq!(sqlite(&s, "SELECT count(*) FROM group_messages"), 5, "one row per message, 3 members");
    // Limits of personal messages apply.
    assert_failed(&ann.request(&gsend(&id, &"x".repeat(4097))), "message");
}

#[test]
fn catch_up_merges_group_and_personal_messages_in_id_order() {
    let s = server_with_users(&[]);
    let mut ann = on(&s, "ann");
    let mut bob = on(&s, "bob");
    let id = create(&mut ann, &["bob@x.org"]);
    bob.recv();
    bob.close();
    let mut sent = Vec::new();
    for i in 0..6 {
        let v = if i % 2 == 0 {
            ann.request(&gsend(&id, &format!("g{i}")))
        } else {
            ann.request(
                &json!({"type":"message","event":"personal","details":{"to":"bob@x.org","message":format!("p{i}")}}),
            )
        };
        sent.push(v["id"].as_str().unwrap().to_owned());
    }
    let mut bob = s.connect();
    let login = json!({"type":"login","details":{"email":"bob@x.org","password":md5_hex("pw"),"acks":true}});
    assert_eq!(bob.request(&login)["event"], "success");
    let mut got = Vec::new();
    for i in 0..6 {
        let v = bob.recv();
        let kind = if i % 2 == 0 { "group" } else { "personal" };
        assert_eq!(v["event"], kind, "message {i} in id order: {v}");
        assert_eq!(v["details"]["message"], format!("{}{i}", &kind[..1]));
        got.push(v["details"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, sent);
    // Not acked: they come again at the next login; acked: not.
    bob.close();
    let mut bob = s.connect();
    bob.request(&login);
    for _ in 0..6 {
        bob.recv();
    }
    bob.send(&json!({"type":"ack","details":{"id":sent[5]}}));
    bob.ping();
    bob.close();
    let mut bob = s.connect();
    bob.request(&login);
    bob.expect_silence(200);
}

#[test]
fn a_member_gets_only_what_was_sent_while_it_was_a_member() {
    let s = server_with_users(&[]);
    let (mut ann, mut bob, cat) = (on(&s, "ann"), on(&s, "bob"), on(&s, "cat"));
    let id = create(&mut ann, &["bob@x.org"]);
    bob.recv();
    ann.request(&gsend(&id, "before cat"));
    expect_group_message(&mut bob, &id, "before cat", "ann@x.org");
    // cat joins while offline: at its login it gets only what came after its joining.
    cat.close();
    ann.request(&group_req("add", json!({"group":id,"members":["cat@x.org"]})));
    bob.recv();
    ann.request(&gsend(&id, "with cat"));
    expect_group_message(&mut bob, &id, "with cat", "ann@x.org");
    let mut cat = on(&s, "cat");
    expect_group_message(&mut cat, &id, "with cat", "ann@x.org");
    cat.expect_silence(150);
    let h = cat.request(&json!({"type":"history","details":{"group":id}}));
    let texts: Vec<&str> = h["details"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["with cat"], "history from its joining on: {h}");
    assert_eq!(h["details"][0]["group"], json!(id));
    assert!(h["details"][0].get("to").is_none(), "group items carry `group`, not `to`");
    // bob removed: nothing after it, live or at catch-up, and no history.
    ann.request(&group_req("remove", json!({"group":id,"members":["bob@x.org"]})));
    bob.recv();
    cat.recv();
    ann.request(&gsend(&id, "after bob"));
    expect_group_message(&mut cat, &id, "after bob", "ann@x.org");
    bob.expect_silence(150);
    bob.close();
    ann.request(&gsend(&id, "after bob, offline"));
    let mut bob = on(&s, "bob");
    bob.expect_silence(150);
    assert_failed(&bob.request(&json!({"type":"history","details":{"group":id}})), "history");
}

#[test]
fn group_history_pages_newest_first() {
    let s = server_with_users(&[]);
    let mut ann = on(&s, "ann");
    let id = create(&mut ann, &[]);
    let ids: Vec<String> =
        (0..5).map(|i| ann.request(&gsend(&id, &format!("m{i}")))["id"].as_str().unwrap().to_owned()).collect();
    let page = ann.request(&json!({"type":"history","details":{"group":id,"limit":2}}));
    let got: Vec<&str> = page["details"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let next = ann.request(&json!({"type":"history","details":{"group":id,"before":ids[3],"limit":10}}));
    assert_eq!(next["details"].as_array().unwrap().len(), 3);
    assert_invalid(&ann.request(&json!({"type":"history","details":{"group":id,"with":"bob@x.org"}})), "history");
}

#[test]
fn member_and_group_caps_refuse_and_change_nothing() {
    let s = server_with_users(&["--max-group-members", "3", "--max-groups-per-user", "2"]);
    let mut ann = on(&s, "ann");
    let v = ann.request(&group_req("create", json!({"name":"big","members":["bob@x.org","cat@x.org","dan@x.org"]})));
    assert!(assert_failed(&v, "group").contains("at most 3"), "{v}");
    let id = create(&mut ann, &["bob@x.org", "cat@x.org"]);
    let v = ann.request(&group_req("add", json!({"group":id,"members":["dan@x.org"]})));
    assert_failed(&v, "group");
    assert_eq!(ann.request(&json!({"type":"groups"}))["details"][0]["members"].as_array().unwrap().len(), 3);
    create(&mut ann, &[]);
    let v = ann.request(&group_req("create", json!({"name":"third","members":[]})));
    assert!(assert_failed(&v, "group").contains("2 groups"), "{v}");
}

#[test]
fn deleting_an_account_takes_it_out_of_its_groups_as_leave_would() {
    let s = server_with_users(&[]);
    let mut ann = on(&s, "ann");
    let id = create(&mut ann, &["bob@x.org"]);
    let solo = create(&mut ann, &[]);
    ann.request(&gsend(&id, "from ann"));
    ann.close();
    let out = s.admin(&["user", "del", "ann@x.org"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bob = on(&s, "bob");
    // The server notices another process's commit within a second (PROTOCOL.md section 19).
    let expected = json!([g(&id, "team", "bob@x.org", &["bob@x.org"])]);
    let mut last = Value::Null;
    let seen = poll_until(std::time::Duration::from_secs(3), || {
        last = bob.request(&json!({"type":"groups"}))["details"].clone();
        last == expected
    });
    assert!(seen, "bob's groups after ann's deletion: {last}");
    assert_eq!(sqlite(&s, &format!("SELECT count(*) FROM groups WHERE id = {solo}")), 0, "its group of one is gone");
    assert_eq!(sqlite(&s, "SELECT count(*) FROM group_messages"), 0, "the messages it sent are gone");
}

#[test]
fn natter_cli_creates_a_group_sends_to_it_and_shows_it_by_name() {
    let s = server_with_users(&[]);
    let mut bob = on(&s, "bob");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_natter-cli"))
            .args(["--addr", &s.addr.to_string(), "--login", "ann@x.org", "--color", "never"])
            .args(args)
            .env("NATTER_PASSWORD", "pw")
            .env_remove("NATTER_ADDR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("natter-cli runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created = cli(&["group", "create", "team", "bob@x.org"]);
    assert!(created.contains("group team (1), owner ann@x.org: ann@x.org, bob@x.org"), "{created}");
    bob.recv();
    let sent = cli(&["gsend", "1", "hello", "team"]);
    assert!(sent.contains("sent, id"), "{sent}");
    expect_group_message(&mut bob, "1", "hello team", "ann@x.org");
    let listed = cli(&["groups"]);
    assert!(listed.contains("1 groups") && listed.contains("team (1)"), "{listed}");
    let history = cli(&["ghistory", "1"]);
    assert!(history.contains("ann@x.org -> group 1: hello team"), "{history}");
}

#[test]
fn a_member_removed_while_offline_still_gets_what_was_sent_while_it_was_one() {
    let s = server_with_users(&[]);
    let mut ann = on(&s, "ann");
    let bob = on(&s, "bob");
    let id = create(&mut ann, &["bob@x.org"]);
    bob.close();
    ann.request(&gsend(&id, "while a member"));
    ann.request(&group_req("remove", json!({"group":id,"members":["bob@x.org"]})));
    ann.request(&gsend(&id, "after the removal"));
    let mut bob = on(&s, "bob");
    expect_group_message(&mut bob, &id, "while a member", "ann@x.org");
    bob.expect_silence(150);
    assert_eq!(bob.request(&json!({"type":"groups"}))["details"], json!([]));
    // Added again: from the new joining on only.
    ann.request(&group_req("add", json!({"group":id,"members":["bob@x.org"]})));
    assert_eq!(bob.recv()["event"], "update");
    ann.request(&gsend(&id, "back again"));
    expect_group_message(&mut bob, &id, "back again", "ann@x.org");
    let h = bob.request(&json!({"type":"history","details":{"group":id}}));
    let texts: Vec<&str> = h["details"].as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["back again"]);
}
