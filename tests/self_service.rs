//! Account self-service over real sockets (PROTOCOL.md section 17): changing the password
//! and deleting the account, each confirmed by the current password.

mod common;

use common::*;
use serde_json::json;

fn server() -> Server {
    let s = Server::start();
    for n in ["ann", "bob"] {
        s.user_add(&format!("{n}@x.org"), n, "pw");
    }
    s
}

fn logout_event(reason: &str) -> serde_json::Value {
    json!({"event":"logout","type":"logout","details":{"reason":reason}})
}

#[test]
fn a_password_change_needs_the_old_one_and_logs_out_the_other_connections() {
    let s = server();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let mut ann2 = logged_in(&s, "ann@x.org", "pw");
    let wrong = ann.request(&json!({"type":"password","details":{"old":md5_hex("nope"),"new":md5_hex("pw2")}}));
    assert!(assert_failed(&wrong, "password").contains("wrong password"), "{wrong}");
    ann2.expect_silence(100);
    assert_failed(&ann.request(&json!({"type":"password","details":{"old":md5_hex("pw"),"new":"short"}})), "password");
    assert_invalid(&ann.request(&json!({"type":"password","details":{"old":md5_hex("pw")}})), "password");
    let ok = ann.request(&json!({"type":"password","details":{"old":md5_hex("pw"),"new":md5_hex("pw2")}}));
    assert_eq!(ok, json!({"event":"success","type":"password"}));
    assert_eq!(ann2.recv(), logout_event("password changed"));
    assert_invalid(&ann2.request(&json!({"type":"users"})), "users");
    ann.ping();
    let mut c = s.connect();
    assert_eq!(c.request(&login_req(None, Some("ann@x.org"), &md5_hex("pw")))["event"], "failed");
    assert_eq!(c.request(&login_req(None, Some("ann@x.org"), &md5_hex("pw2")))["event"], "success");
}

#[test]
fn wrong_old_passwords_count_as_failed_logins() {
    let s = server();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let mut last = serde_json::Value::Null;
    for _ in 0..6 {
        last = ann.request(&json!({"type":"password","details":{"old":md5_hex("guess"),"new":md5_hex("x")}}));
    }
    assert!(assert_failed(&last, "password").contains("too many attempts"), "{last}");
}

#[test]
fn deleting_the_account_leaves_no_row_of_it_and_frees_its_names() {
    let s = server();
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    let mut ann2 = logged_in(&s, "ann@x.org", "pw");
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    // Rows in every table: messages both ways, a contact, a group and its message, a block, a call.
    ann.request(&json!({"type":"message","event":"personal","details":{"to":"bob@x.org","message":"hi"}}));
    bob.recv();
    ann2.recv();
    bob.request(&json!({"type":"message","event":"personal","details":{"to":"ann@x.org","message":"yo"}}));
    ann.recv();
    ann2.recv();
    let g = ann.request(&json!({"type":"group","event":"create","details":{"name":"g","members":["bob@x.org"]}}));
    let id = g["details"]["group"].as_str().unwrap().to_owned();
    bob.recv();
    ann2.recv();
    ann.request(&json!({"event":"group","type":"message","details":{"group":id,"message":"in g"}}));
    bob.recv();
    ann2.recv();
    ann.request(&json!({"type":"block","details":{"email":"bob@x.org"}}));
    bob.send(&json!({"type":"voice","event":"call","details":{"email":"ann@x.org"}}));
    bob.recv();
    let wrong = ann.request(&json!({"type":"delete","details":{"password":md5_hex("nope")}}));
    assert_failed(&wrong, "delete");
    let ok = ann.request(&json!({"type":"delete","details":{"password":md5_hex("pw")}}));
    assert_eq!(ok, json!({"event":"success","type":"delete"}));
    assert_eq!(ann2.recv(), logout_event("account deleted"));
    assert_invalid(&ann.request(&json!({"type":"users"})), "users");
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    let ann_id: i64 = 1;
    for (table, column) in [
        ("users", "id"),
        ("messages", "sender_id"),
        ("messages", "recipient_id"),
        ("contacts", "user_id"),
        ("contacts", "peer_id"),
        ("group_members", "user_id"),
        ("group_messages", "sender_id"),
        ("groups", "owner_id"),
        ("blocks", "user_id"),
        ("blocks", "blocked_id"),
        ("calls", "caller_id"),
        ("calls", "callee_id"),
    ] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table} WHERE {column} = ?1"), [ann_id], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table}.{column} still names the deleted account");
    }
    // bob's group goes on with bob as owner; the email and the name are free again.
    assert_eq!(bob.request(&json!({"type":"groups"}))["details"][0]["owner"], "bob@x.org");
    let mut c = s.connect();
    let v = c.request(&registration("ann@x.org", &md5_hex("new"), "ann"));
    assert_eq!(v, sent_otp("ann@x.org"));
}

fn reset(email: &str) -> serde_json::Value {
    json!({"type":"reset","details":{"email":email}})
}

fn reset_with(email: &str, otp: &str, plain: &str) -> serde_json::Value {
    json!({"type":"reset","details":{"email":email,"otp":otp,"password":md5_hex(plain)}})
}

#[test]
fn a_forgotten_password_is_reset_with_the_mailed_code() {
    let s = server();
    let mut other = logged_in(&s, "ann@x.org", "pw");
    let mut c = s.connect();
    assert_eq!(c.request(&reset("ann@x.org")), sent_otp("ann@x.org"));
    let otp = s.wait_otp("ann@x.org");
    let v = c.request(&reset_with("ann@x.org", &wrong_otp(&otp), "new"));
    assert!(assert_failed(&v, "reset").contains("4 tries left"), "{v}");
    assert_eq!(c.request(&reset_with("ann@x.org", &otp, "new")), json!({"event":"success","type":"reset"}));
    assert_eq!(other.recv(), logout_event("password reset"), "every connection of the user is logged out");
    // The used code is gone from the connection that used it.
    assert_failed(&c.request(&reset_with("ann@x.org", &otp, "again")), "reset");
    assert_eq!(c.request(&login_req(None, Some("ann@x.org"), &md5_hex("pw")))["event"], "failed");
    assert_eq!(c.request(&login_req(None, Some("ann@x.org"), &md5_hex("new")))["event"], "success");
    // Logged in, a reset is refused.
    assert_failed(&c.request(&reset("ann@x.org")), "reset");
}

#[test]
fn a_reset_reveals_nothing_about_which_emails_have_accounts() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.request(&reset("nobody@x.org")), sent_otp("nobody@x.org"), "the same answer as for an account");
    let v = c.request(&reset_with("nobody@x.org", "123456", "x"));
    assert!(assert_failed(&v, "reset").contains("wrong code; 4 tries left"), "{v}");
    // The mail limit counts requests for any address.
    for _ in 0..4 {
        assert_eq!(c.request(&reset("nobody@x.org")), sent_otp("nobody@x.org"));
    }
    assert_failed(&c.request(&reset("nobody@x.org")), "otp");
    assert_eq!(s.mail_count("nobody@x.org"), 0, "no mail to an address without an account");
    assert_invalid(&c.request(&json!({"type":"reset","details":{"email":"a@x.org","otp":"123456"}})), "reset");
}

/// natter-cli as a script runs it: `args`, with `stdin` piped, NATTER_PASSWORD for the login.
fn cli(s: &Server, args: &[&str], stdin: &str) -> (bool, String) {
    let input_file = s.dir().join("cli-input");
    std::fs::write(&input_file, stdin).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_natter-cli"))
        .args(["--addr", &s.addr.to_string(), "--color", "never"])
        .args(args)
        .env("NATTER_PASSWORD", "pw")
        .env_remove("NATTER_ADDR")
        .stdin(std::fs::File::open(&input_file).unwrap())
        .output()
        .expect("natter-cli runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn natter_cli_blocks_changes_the_password_and_deletes_the_account() {
    let s = server();
    let (ok, out) = cli(&s, &["--login", "ann@x.org", "block", "bob"], "");
    assert!(ok && out.contains("blocked"), "{out}");
    let (ok, out) = cli(&s, &["--login", "ann@x.org", "blocked"], "");
    assert!(ok && out.contains("you block: bob@x.org"), "{out}");
    let (ok, out) = cli(&s, &["--login", "ann@x.org", "passwd"], "pw\npw2\n");
    assert!(ok && out.contains("password changed"), "{out}");
    let mut c = s.connect();
    assert_eq!(c.request(&login_req(None, Some("ann@x.org"), &md5_hex("pw2")))["event"], "success");
    let (ok, out) = cli(&s, &["--login", "bob@x.org", "delete-account"], "no\n");
    assert!(!ok && out.contains("not deleted"), "{out}");
    let (ok, out) = cli(&s, &["--login", "bob@x.org", "delete-account"], "yes\npw\n");
    assert!(ok && out.contains("account deleted"), "{out}");
    let mut d = s.connect();
    assert_eq!(d.request(&login_req(None, Some("bob@x.org"), &md5_hex("pw")))["event"], "failed");
}
