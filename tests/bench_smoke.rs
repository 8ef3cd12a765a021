//! The load generator must not rot: a tiny `--spawn` pass of every workload against the
//! real server, which fails on any lost, duplicated or corrupted message (no speed check).

use std::process::Command;

#[test]
fn every_workload_runs_and_loses_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args([
            "--spawn",
            "--quick",
            "--json",
            "--timeout",
            "60",
            "--argon2-memory-kib",
            "256",
            "--argon2-iterations",
            "1",
        ])
        .output()
        .expect("run natter-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "natter-bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let names: Vec<&str> = doc.as_array().unwrap().iter().filter_map(|r| r["workload"].as_str()).collect();
    for w in ["pairs", "fanout", "offline", "logins", "idle", "relay"] {
        assert!(names.contains(&w), "{w} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("latency@")), "{names:?}");
    for r in doc.as_array().unwrap() {
        assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    }
    let pairs = doc.as_array().unwrap().iter().find(|r| r["workload"] == "pairs").unwrap();
    assert!(pairs["metrics"]["delivered"]["value"].as_f64().unwrap() > 0.0);
}

/// The same over WebSocket on TLS (`wss`): the bench's own WebSocket client against the
/// real server's, every workload.
#[test]
fn every_workload_runs_over_wss_and_loses_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args(["--spawn", "--quick", "--json", "--timeout", "60", "--transport", "wss"])
        .args(["--argon2-memory-kib", "256", "--argon2-iterations", "1"])
        .output()
        .expect("run natter-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "natter-bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let reports = doc.as_array().expect("a list of reports");
    assert!(reports.len() >= 10, "{doc}");
    for r in reports {
        assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    }
}
