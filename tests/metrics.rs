//! `/metrics` read with a real HTTP client (curl) after a known sequence of actions: each
//! counter has the value the actions imply.

mod common;

use common::*;
use serde_json::json;

#[test]
fn counters_match_a_known_sequence_of_actions() {
    let s = Server::start_with(&["--metrics", "127.0.0.1:0"]);
    let url = s.metrics_url();
    for n in ["ann", "bob", "cat"] {
        s.user_add(&format!("{n}@x.org"), n, "pw");
    }
    let login = |email: &str, pw: &str| json!({"type":"login","details":{"email":email,"password":md5_hex(pw)}});
    let mut ann = s.connect();
    assert_eq!(ann.request(&login("ann@x.org", "pw"))["event"], "success");
    let mut bob = s.connect();
    assert_eq!(bob.request(&login("bob@x.org", "pw"))["event"], "success");
    let mut anon = s.connect();
    assert_eq!(anon.request(&login("cat@x.org", "wrong"))["event"], "failed");
    assert_eq!(anon.request(&json!({"type":"users"}))["event"], "invalid");
    for i in 0..3 {
        let m = json!({"event":"personal","type":"message","details":{"to":"bob@x.org","message":format!("m{i}")}});
        assert_eq!(ann.request(&m)["event"], "sent");
        assert_eq!(bob.recv()["details"]["message"], format!("m{i}"));
    }
    let offline = json!({"event":"personal","type":"message","details":{"to":"cat@x.org","message":"later"}});
    assert_eq!(ann.request(&offline)["event"], "sent");
    ann.send(&json!({"event":"global","type":"message","details":{"message":"all"}}));
    assert_eq!(bob.recv()["event"], "global");
    ann.send_raw(b"{\"type\":}\n");
    assert_eq!(ann.recv()["event"], "invalid");

    // Deliveries count as such in the store once the watermark is written, within 200 ms:
    // scrape until they do (at most 5 s).
    let mut m = scrape(&url);
    let stored = poll_until(std::time::Duration::from_secs(5), || {
        m = scrape(&url);
        m.get("natter_messages_pending_offline") == Some(&1.0)
    });
    assert!(stored, "pending offline stays {m:?}");
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(get("natter_connections{state=\"logged_in\"}"), 2.0);
    assert_eq!(get("natter_connections{state=\"anonymous\"}"), 1.0);
    assert_eq!(get("natter_users_online"), 2.0);
    assert_eq!(get("natter_logins_total{result=\"ok\"}"), 2.0);
    assert_eq!(get("natter_logins_total{result=\"failed\"}"), 1.0);
    assert_eq!(get("natter_messages_stored_total"), 4.0);
    assert_eq!(get("natter_messages_delivered_total"), 3.0);
    assert_eq!(get("natter_messages_pending_offline"), 1.0);
    assert_eq!(get("natter_global_deliveries_total"), 1.0);
    assert_eq!(get("natter_frames_rejected_total{reason=\"undecodable\"}"), 1.0);
    assert_eq!(get("natter_frames_rejected_total{reason=\"not_logged_in\"}"), 1.0);
    assert_eq!(get("natter_relay_forwarded_total"), 0.0);
    assert!(get("natter_store_commits_total") >= 1.0);
    assert!(get("natter_store_commit_seconds_count") >= 1.0);
    assert!(get("natter_bytes_received_total") > 0.0);
    assert!(get("natter_bytes_sent_total") > 0.0);
    assert!(get("natter_loop_iteration_seconds_count") > 0.0);

    // Anything but GET /metrics is a 404.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url.replace("/metrics", "/other")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn requests_are_counted_by_type() {
    let s = Server::start_with(&["--metrics", "127.0.0.1:0"]);
    let url = s.metrics_url();
    s.user_add("ann@x.org", "ann", "pw");
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    for _ in 0..3 {
        ann.ping();
    }
    ann.request(&json!({"type":"groups"}));
    ann.request(&json!({"type":"unread"}));
    ann.request(&json!({"type":"blocked"}));
    ann.request(&json!({"type":"frobnicate"}));
    let m = scrape(&url);
    let n = |ty: &str| m.get(&format!("natter_requests_total{{type=\"{ty}\"}}")).copied().unwrap_or(-1.0);
    assert_eq!((n("login"), n("ping"), n("groups"), n("unread"), n("blocked")), (1.0, 3.0, 1.0, 1.0, 1.0), "{m:?}");
    assert_eq!(n("typing"), 0.0);
}
