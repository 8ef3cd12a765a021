//! `natter backup` while the server is under load: the copy opens, is a natter database,
//! and holds every message acknowledged before the backup started.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn backup_under_load_holds_everything_acknowledged_before_it() {
    let s = Server::start();
    s.user_add("a@x.org", "a", "pw");
    s.user_add("b@x.org", "b", "pw");
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let login = json!({"type":"login","details":{"email":"a@x.org","password":md5_hex("pw")}});
    writeln!(sock, "{login}").unwrap();
    let mut lines = BufReader::new(sock.try_clone().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert!(first.contains("success"), "{first}");

    // A reader thread records the highest acknowledged id while the writer streams.
    let acked = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (acked, done) = (Arc::clone(&acked), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut line = String::new();
            while !done.load(Ordering::Relaxed) {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    // The 5 s read timeout after the writer stopped.
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(e) => panic!("reading the answers: {e} (the server stalled?)"),
                }
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["event"], "sent", "{v}");
                let id: i64 = v["id"].as_str().unwrap().parse().unwrap();
                acked.fetch_max(id, Ordering::Relaxed);
            }
        })
    };
    let writer = {
        let mut sock = sock.try_clone().unwrap();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0;
            while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) && n < 20_000 {
                let m =
                    json!({"event":"personal","type":"message","details":{"to":"b@x.org","message":format!("m{n}")}});
                if writeln!(sock, "{m}").is_err() {
                    break;
                }
                n += 1;
                if n % 50 == 0 {
                    // Kept: the writer's pace, so the load runs for the whole backup.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    let acked_500 = poll_until(Duration::from_secs(30), || acked.load(Ordering::Relaxed) >= 500);
    assert!(acked_500, "500 messages not acknowledged in 30 s\n{}", s.tail());
    let before = acked.load(Ordering::Relaxed);
    let copy = s.dir().join("copy.db");
    let out = s.admin(&["backup", "--to", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    reader.join().unwrap();

    let db = rusqlite::Connection::open(&copy).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let stored: i64 = db.query_row("SELECT count(*) FROM messages WHERE id <= ?1", [before], |r| r.get(0)).unwrap();
    assert_eq!(stored, before, "every message acknowledged before the backup is in the copy");
    // And the copy is a natter database that natter opens.
    let mut list = std::process::Command::new(env!("CARGO_BIN_EXE_natter"));
    clear_natter_env(&mut list);
    let child = list
        .args(["user", "list", "--db", copy.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let listed = wait_output(child, Duration::from_secs(30), "natter user list on the copy");
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("b@x.org"));
}
