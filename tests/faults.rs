//! Faults against the real binary (issue 6, "Faults"; PROTOCOL.md sections 3, 4 and 7):
//!
//! - startup errors (a db locked by another process, a file that is not a natter db, a newer
//!   schema, an unwritable outbox): exit status 1 and exactly one `natter: error: ...` line,
//!   never a panic; bad flags: clap's usage error, exit status 2;
//! - an unreachable SMTP server: registration answers `failed` type `otp`, the server keeps
//!   serving;
//! - SIGTERM under load: exit 0 and every message answered `sent` is delivered after a restart;
//! - SIGKILL under load with `--durability full`: nothing answered `sent` is lost;
//! - a store write failure (another process holds SQLite's write lock): senders get `failed`,
//!   nothing is delivered, reads are served, sending works again once the lock is gone;
//! - a full disk (a small tmpfs): the same, recovering once space returns.
//!
//! Every test has its own server and temporary directory on 127.0.0.1 port 0, and every wait
//! is bounded.

mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `natter user add` of the test account `name` on the db at `db`, asserting success.
fn user_add(db: &Path, name: &str) {
    user_add_cheap(db, &email(name), name, &plain(name));
}

/// Runs natter with `args` and waits (at most `limit`) for it to exit on its own. Fails at
/// once if the server starts listening instead.
fn run_to_exit(args: &[OsString], limit: Duration) -> (Output, Duration) {
    let mut cmd = Command::new(BIN);
    clear_natter_env(&mut cmd);
    let t0 = Instant::now();
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn natter");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let err2 = err.clone();
    let t2 = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = se.read(&mut buf) {
            if n == 0 {
                break;
            }
            err2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let stderr_now = || String::from_utf8_lossy(&err.lock().unwrap()).to_string();
    let mut exit = None;
    poll_until(limit, || {
        exit = child.try_wait().unwrap();
        exit.is_some() || stderr_now().contains("listening on")
    });
    let Some(status) = exit else {
        let listening = stderr_now().contains("listening on");
        let _ = child.kill();
        let _ = child.wait();
        let _ = t2.join();
        let why = if listening {
            format!("started listening after {:?}", t0.elapsed())
        } else {
            format!("was still running after {limit:?}")
        };
        panic!("natter {args:?} {why}; expected it to refuse to start\nstderr:\n{}", stderr_now());
    };
    let elapsed = t0.elapsed();
    t2.join().unwrap();
    let stderr = err.lock().unwrap().clone();
    (Output { status, stdout: t1.join().unwrap(), stderr }, elapsed)
}

/// Exit status 1, exactly one `natter: error:` line naming one of `reasons`, no panic, and the
/// server never said it was listening.
fn assert_startup_error(out: &Output, reasons: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status (expected 1)\nstderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "the server panicked instead of reporting an error:\n{stderr}");
    assert!(!stderr.contains("listening on"), "the server started listening despite the error:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("natter: error:")).collect();
    assert_eq!(lines.len(), 1, "expected exactly one `natter: error:` line, got {lines:?}\nstderr:\n{stderr}");
    let line = lines[0].to_lowercase();
    assert!(
        reasons.iter().any(|r| line.contains(r)),
        "the error line should mention one of {reasons:?}: {:?}\nstderr:\n{stderr}",
        lines[0]
    );
    eprintln!("startup error: {:?} (exit {:?})", lines[0], out.status.code());
    lines[0].to_string()
}

// ---------------------------------------------------------------------------------------------
// Protocol helpers
// ---------------------------------------------------------------------------------------------

fn login_req_for(name: &str) -> Value {
    json!({"type":"login","details":{"email":email(name),"password":md5_hex(&plain(name))}})
}

fn online(addr: SocketAddr, log: Log, name: &str) -> Client {
    let mut c = Client::connect(addr, log);
    let v = c.request(&login_req_for(name));
    assert_eq!(v["event"], json!("success"), "login of {name}: {v}\n{}", c.tail());
    c
}

fn pm(to: &str, message: &str) -> Value {
    json!({"event":"personal","type":"message","details":{"to":to,"message":message,"time":1}})
}

/// `{"type":"history"}` with `with`, limit 200: (id, message) pairs, newest first.
fn history(c: &mut Client, with: &str) -> Vec<(String, String)> {
    let v = c.request(&json!({"type":"history","details":{"with":with,"limit":200}}));
    assert_eq!(v["event"], json!("success"), "history answer {v}\n{}", c.tail());
    assert_eq!(v["type"], json!("history"), "history answer {v}");
    v["details"]
        .as_array()
        .unwrap_or_else(|| panic!("history details is not an array: {v}"))
        .iter()
        .map(|m| (m["id"].as_str().unwrap_or("?").to_string(), m["message"].as_str().unwrap_or("?").to_string()))
        .collect()
}

/// `users` answers success with exactly these usernames.
fn assert_users(c: &mut Client, names: &[&str]) {
    let v = c.request(&json!({"type":"users"}));
    assert_eq!(v["event"], json!("success"), "users answer {v}\n{}", c.tail());
    let got: Vec<&str> =
        v["details"].as_array().map(|a| a.iter().filter_map(|u| u["username"].as_str()).collect()).unwrap_or_default();
    assert_eq!(got, names, "users answer {v}");
}

// ---------------------------------------------------------------------------------------------
// Startup errors
// ---------------------------------------------------------------------------------------------

#[test]
fn startup_fails_cleanly_when_another_process_holds_the_db() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("natter.db");
    user_add(&db, "alice");
    let args = server_args(&db, Some(&dir.path().join("outbox")));

    let lock = rusqlite::Connection::open(&db).expect("open the db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
    let (out, took) = run_to_exit(&args, Duration::from_secs(12));
    let line = assert_startup_error(&out, &["locked"]);
    eprintln!("locked db: {line:?} after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "the server should wait its 2 s busy timeout first, gave up after {took:?}"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // Once the lock is gone the same db starts fine: the error was the lock, nothing else.
    let mut p = Server::start_in(dir.path(), &[]);
    let mut c = online(p.addr, p.log(), "alice");
    c.ping();
    p.sigterm();
    assert!(p.wait_exit().success());
}

#[test]
fn startup_fails_cleanly_on_a_sqlite_file_that_is_not_natters() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("natter.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE recipes (name TEXT, minutes INTEGER); INSERT INTO recipes VALUES ('soup', 20);")
            .unwrap();
    }
    let (out, _) = run_to_exit(&server_args(&db, Some(&dir.path().join("outbox"))), Duration::from_secs(15));
    assert_startup_error(&out, &["not a natter database"]);
    // The foreign database is left alone.
    let c = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = c.query_row("SELECT count(*) FROM recipes", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "the foreign table must be untouched");
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(tables, vec!["recipes".to_string()], "natter must not add tables to a foreign db");
}

#[test]
fn startup_fails_cleanly_on_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("natter.db");
    let junk: Vec<u8> = b"this is a text file, not a database\n".repeat(200);
    std::fs::write(&db, &junk).unwrap();
    let (out, _) = run_to_exit(&server_args(&db, Some(&dir.path().join("outbox"))), Duration::from_secs(15));
    assert_startup_error(&out, &["not a natter database"]);
    assert_eq!(std::fs::read(&db).unwrap(), junk, "the file must be left as it was");
}

#[test]
fn startup_fails_cleanly_on_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Server::start_in(dir.path(), &[]);
    p.sigterm();
    assert!(p.wait_exit().success(), "first start and stop\n{}", p.tail());
    let db = p.db_path();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert!((1..99).contains(&v), "a fresh natter db has a schema version, found {v}");
        c.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let (out, _) = run_to_exit(&server_args(&db, Some(&dir.path().join("outbox"))), Duration::from_secs(15));
    assert_startup_error(&out, &["newer"]);
    let c = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 99, "the newer db must not be downgraded");
}

#[test]
fn startup_fails_cleanly_on_an_unwritable_outbox() {
    let dir = tempfile::tempdir().unwrap();
    // Tests run as root, which chmod does not stop: a path under a regular file cannot be
    // created by anybody.
    std::fs::write(dir.path().join("file"), b"not a directory").unwrap();
    let outbox = dir.path().join("file").join("outbox");
    let (out, _) = run_to_exit(&server_args(&dir.path().join("natter.db"), Some(&outbox)), Duration::from_secs(15));
    assert_startup_error(&out, &["not writable", "cannot create"]);

    // An outbox that is a regular file is not usable either.
    let (out, _) = run_to_exit(
        &server_args(&dir.path().join("natter.db"), Some(&dir.path().join("file"))),
        Duration::from_secs(15),
    );
    assert_startup_error(&out, &["not writable", "cannot create", "not a directory"]);
}

#[test]
fn bad_flags_are_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = server_args(&dir.path().join("natter.db"), Some(&dir.path().join("outbox")));
    for bad in [vec!["--no-such-flag"], vec!["--durability", "sometimes"], vec!["--max-frame", "lots"]] {
        let mut args = base.clone();
        args.extend(bad.iter().map(OsString::from));
        let (out, _) = run_to_exit(&args, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: exit status (expected clap's 2)\n{stderr}");
        // clap's usage errors start `error:` and name the offending flag.
        assert!(stderr.starts_with("error:"), "{bad:?}: expected clap's usage error\n{stderr}");
        assert!(stderr.contains(bad[0]), "{bad:?}: the error should name {}\n{stderr}", bad[0]);
        assert!(!stderr.contains("panicked"), "{bad:?}: panic\n{stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Unreachable SMTP
// ---------------------------------------------------------------------------------------------

#[test]
fn unreachable_smtp_answers_failed_otp_and_keeps_serving() {
    let s = Server::start_with(&["--smtp-url", "smtp://127.0.0.1:1"]);
    let mut other = s.connect();
    other.ping();
    let mut c = s.connect();
    let reg = registration("carol@example.com", &md5_hex("pw-carol"), "carol");
    c.send(&reg);
    let v = recv_within(&mut c, Duration::from_secs(30), "the answer to a registration with SMTP down");
    assert_failed(&v, "otp");
    // The same connection and others keep working; nothing was registered.
    c.ping();
    other.ping();
    let v = c.request(&verify("123456"));
    assert_failed(&v, "verify");
    c.send(&reg);
    let v = recv_within(&mut c, Duration::from_secs(30), "a second registration with SMTP down");
    assert_failed(&v, "otp");
    let v = c.request(&login_req(None, Some("carol@example.com"), &md5_hex("pw-carol")));
    assert_eq!(v, json!({"event":"failed","type":"login","message":"invalid credentials"}), "no account was created");
    other.ping();
    assert!(!s.log_lines().iter().any(|l| l.contains("panicked")), "panic\n{}", s.tail());
}

// ---------------------------------------------------------------------------------------------
// Signals under load
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Interrupt {
    Term,
    Kill,
}

/// alice streams `n` pipelined personal messages to bob; after `at` answers the server gets
/// `how`. Returns the texts, the (index, id) of every `sent` answer, the indexes answered
/// `failed`, and how the connection ended.
fn stream_and_interrupt(
    p: &mut Server,
    n: usize,
    at: usize,
    how: Interrupt,
) -> (Vec<String>, Vec<(usize, String)>, Vec<usize>) {
    let bob = email("bob");
    let texts: Vec<String> = (0..n).map(|i| padded(&format!("{how:?}-{i}"), 600)).collect();
    let mut pipe = Pipe::login(p.addr, &login_req_for("alice"));
    let mut w = pipe.writer.try_clone().unwrap();
    let texts2 = texts.clone();
    let writer = thread::spawn(move || {
        for (i, t) in texts2.iter().enumerate() {
            let mut line = serde_json::to_vec(&pm(&bob, t)).unwrap();
            line.push(b'\n');
            if w.write_all(&line).is_err() {
                return i;
            }
        }
        n
    });
    let mut sent: Vec<(usize, String)> = Vec::new();
    let mut failed: Vec<usize> = Vec::new();
    let mut interrupted = false;
    let mut answers = 0;
    loop {
        match pipe.next(Duration::from_secs(20)) {
            Got::Msg(v) => {
                if v["event"] == json!("failed") {
                    assert_failed(&v, "message");
                    failed.push(answers);
                } else {
                    let id = check_sent(&v).unwrap_or_else(|e| panic!("answer #{answers}: {e}\n{}", p.tail()));
                    sent.push((answers, id));
                }
                answers += 1;
                if answers == at {
                    match how {
                        Interrupt::Term => p.sigterm(),
                        Interrupt::Kill => p.kill(),
                    }
                    interrupted = true;
                }
                if answers == n {
                    break;
                }
            }
            Got::Closed(why) => {
                assert!(interrupted, "the connection closed ({why}) before the signal\n{}", p.tail());
                // A clean disconnect never cuts a message in half.
                assert!(!why.contains("partial"), "the connection ended mid-message: {why}\n{}", p.tail());
                break;
            }
            Got::Timeout => panic!("no answer for 20 s after {answers} answers\n{}", p.tail()),
        }
    }
    assert!(interrupted, "the stream finished before {at} answers\n{}", p.tail());
    let written = writer.join().unwrap();
    assert!(sent.windows(2).all(|w| num(&w[0].1) < num(&w[1].1)), "sent ids increase");
    eprintln!("{how:?}: {written} messages written, {} answered sent, {} failed", sent.len(), failed.len());
    (texts, sent, failed)
}

/// After a restart, bob's backlog holds every message answered `sent`, with its text, once,
/// in id order, and none answered `failed`.
fn assert_backlog(p: &Server, texts: &[String], sent: &[(usize, String)], failed: &[usize]) {
    let mut b = p.connect();
    let v = b.request(&login_req_for("bob"));
    assert_eq!(v["event"], json!("success"), "bob's login after the restart: {v}\n{}", p.tail());
    let got = drain(&mut b, Duration::from_secs(2), texts.len() + 10);
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut prev = 0u64;
    for m in &got {
        let d = &m["details"];
        assert_eq!(m["event"], json!("personal"), "{m}");
        assert_eq!(d["from"], json!(email("alice")), "{m}");
        let id = d["id"].as_str().unwrap_or_else(|| panic!("id is not a string: {m}")).to_string();
        assert!(num(&id) > prev, "backlog not in id order, or duplicated, at {id}");
        prev = num(&id);
        seen.insert(id, d["message"].as_str().unwrap_or("?").to_string());
    }
    for (k, id) in sent {
        match seen.get(id) {
            Some(text) => assert_eq!(text, &texts[*k], "message {id} (answer #{k}) has the wrong text"),
            None => panic!(
                "message {id} (answer #{k}) was answered `sent` but is gone after the restart; {} of {} delivered\n{}",
                got.len(),
                sent.len(),
                p.tail()
            ),
        }
    }
    let delivered: HashSet<&String> = seen.values().collect();
    for k in failed {
        assert!(!delivered.contains(&texts[*k]), "message #{k} was answered `failed` but delivered");
    }
    let known: HashSet<&String> = texts.iter().collect();
    assert!(delivered.iter().all(|t| known.contains(t)), "a message nobody sent was delivered");
    eprintln!("after the restart bob got {} messages; {} had been answered sent", got.len(), sent.len());
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_message_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Server::start_in(dir.path(), &[]);
    user_add(&p.db_path(), "alice");
    user_add(&p.db_path(), "bob");
    let (texts, sent, failed) = stream_and_interrupt(&mut p, 3000, 200, Interrupt::Term);
    let status = p.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM (expected 0)\n{}", p.tail());
    assert!(sent.len() >= 200, "at least the answers before the signal were `sent`");
    assert!(!p.log_lines().iter().any(|l| l.contains("panicked")), "panic\n{}", p.tail());
    p.restart_after_stop();
    assert_backlog(&p, &texts, &sent, &failed);
}

/// A killed process loses nothing it acknowledged, in either durability (both survive a
/// process crash; what `full` adds is tested below).
#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    for durability in ["normal", "full"] {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Server::start_in(dir.path(), &["--durability", durability]);
        user_add(&p.db_path(), "alice");
        user_add(&p.db_path(), "bob");
        let (texts, sent, failed) = stream_and_interrupt(&mut p, 1000, 300, Interrupt::Kill);
        assert!(failed.is_empty(), "{durability}: no message should fail before the kill: {failed:?}\n{}", p.tail());
        p.restart_after_stop();
        assert_backlog(&p, &texts, &sent, &failed);
    }
}

/// What `--durability full` adds over `normal` is a sync of the WAL at every commit (a
/// machine crash then loses nothing acknowledged). Counted with strace on the loop thread
/// (its id is the process id): with `full`, at least one WAL sync per message sent one at a
/// time (each its own commit); with `normal`, not one per commit (the checkpoint thread
/// syncs; the loop may sync the WAL's header when it starts the WAL over after one of its
/// checkpoints, which a test run saw once in 30 commits).
#[test]
fn durability_full_syncs_the_wal_at_every_commit_and_normal_does_not() {
    const MESSAGES: usize = 30;
    for (durability, full) in [("full", true), ("normal", false)] {
        let dir = tempfile::tempdir().unwrap();
        let p = Server::start_in(dir.path(), &["--durability", durability]);
        user_add(&p.db_path(), "alice");
        user_add(&p.db_path(), "bob");
        let mut alice = online(p.addr, p.log(), "alice");
        let trace = dir.path().join("syncs.trace");
        let mut strace = std::process::Command::new("strace")
            .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(&trace)
            .arg("-p")
            .arg(p.pid().to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace is installed (.ci/run installs it)");
        // strace says once it is attached ("Process N attached with K threads").
        let mut err = std::io::BufReader::new(strace.stderr.take().unwrap());
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut err, &mut line);
        assert!(line.contains("attached"), "strace did not attach: {line}");
        for i in 0..MESSAGES {
            alice.send(&pm(&email("bob"), &format!("sync {i}")));
            check_sent(&recv_within(&mut alice, Duration::from_secs(10), "sent")).unwrap();
        }
        // SAFETY: a plain signal to the strace we started; it detaches and writes its file.
        unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
        let _ = strace.wait();
        let text = std::fs::read_to_string(&trace).unwrap();
        let loop_wal_syncs =
            text.lines().filter(|l| l.starts_with(&format!("{} ", p.pid())) && l.contains("-wal>")).count();
        eprintln!("{durability}: {loop_wal_syncs} WAL syncs by the loop thread for {MESSAGES} commits");
        if full {
            assert!(
                loop_wal_syncs >= MESSAGES,
                "{durability}: {loop_wal_syncs} WAL syncs for {MESSAGES} commits\n{text}"
            );
        } else {
            assert!(
                loop_wal_syncs < MESSAGES / 3,
                "{durability}: {loop_wal_syncs} WAL syncs for {MESSAGES} commits\n{text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store write failures
// ---------------------------------------------------------------------------------------------

#[test]
fn store_write_failure_answers_failed_serves_reads_and_recovers() {
    let s = Server::start();
    for n in ["alice", "bob", "carol"] {
        user_add(&s.db_path(), n);
    }
    let bob = email("bob");
    let mut a = online(s.addr, s.log(), "alice");
    let mut b = online(s.addr, s.log(), "bob");
    let mut r = online(s.addr, s.log(), "carol");
    a.send(&pm(&bob, "before"));
    let id0 = check_sent(&a.recv()).unwrap();
    assert_eq!(b.recv()["details"]["id"], json!(id0));

    // Another process holds SQLite's write lock for longer than the server's busy timeout.
    let lock = rusqlite::Connection::open(s.db_path()).expect("open the server's db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
    let t0 = Instant::now();
    for i in 0..3 {
        a.send(&pm(&bob, &format!("locked-{i}")));
    }
    for i in 0..3 {
        let v = recv_within(&mut a, Duration::from_secs(15), "the answer to a message whose commit fails");
        assert_eq!(v["event"], json!("failed"), "message {i} while the db is locked must fail, got {v}\n{}", s.tail());
        assert_failed(&v, "message");
    }
    eprintln!("three failed answers after {:?}", t0.elapsed());
    // Reads are served while the lock is still held.
    r.ping();
    assert_users(&mut r, &["alice", "bob", "carol"]);
    assert_eq!(history(&mut a, &bob), vec![(id0.clone(), "before".to_string())], "history while locked");
    b.expect_silence(300);
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // Reads after the lock, then sending works again and only the new message arrives.
    r.ping();
    assert_users(&mut r, &["alice", "bob", "carol"]);
    a.send(&pm(&bob, "after"));
    let v = recv_within(&mut a, Duration::from_secs(10), "the first message after the lock is released");
    let id1 = check_sent(&v).unwrap_or_else(|e| panic!("{e}\n{}", s.tail()));
    assert!(num(&id1) > num(&id0));
    let got = b.recv();
    assert_eq!((got["details"]["id"].clone(), got["details"]["message"].clone()), (json!(id1), json!("after")));
    b.expect_silence(300);
    assert_eq!(
        history(&mut a, &bob),
        vec![(id1.clone(), "after".to_string()), (id0, "before".to_string())],
        "the failed messages are not stored"
    );
    let mut b2 = online(s.addr, s.log(), "bob");
    b2.expect_silence(300);
}

#[test]
fn reads_are_answered_within_5_s_while_commits_fail() {
    let s = Server::start();
    for n in ["alice", "bob", "carol"] {
        user_add(&s.db_path(), n);
    }
    let bob = email("bob");
    let mut a = online(s.addr, s.log(), "alice");
    let mut r = online(s.addr, s.log(), "carol");
    let lock = rusqlite::Connection::open(s.db_path()).expect("open the server's db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
    // A few senders' worth of messages whose commits fail, then a read from somebody else:
    // the server keeps serving reads during the fault (issue 6), within the 5 s every other
    // answer gets.
    for i in 0..3 {
        a.send(&pm(&bob, &format!("locked-{i}")));
    }
    // Kept: nothing observable says the loop has read them and waits on the lock; 100 ms
    // lets it get there, so that the ping comes during the failing commit.
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    r.send(&json!({"type":"ping"}));
    let v = recv_within(&mut r, Duration::from_secs(20), "a ping while commits are failing");
    let took = t0.elapsed();
    assert_eq!(v, json!({"event":"success","type":"pong"}));
    eprintln!("a ping was answered after {took:?} while commits were failing");
    assert!(took < READ_TIMEOUT, "a ping took {took:?} while another client's commits were failing\n{}", s.tail());
    for _ in 0..3 {
        let v = recv_within(&mut a, Duration::from_secs(20), "a message whose commit fails");
        assert_failed(&v, "message");
    }
    lock.execute_batch("ROLLBACK").unwrap();
}

/// A tmpfs mounted for one test; the server is stopped before it is unmounted.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(st, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Fills the filesystem of `path` until writes fail with ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let mut total = 0u64;
    for chunk in [1 << 16, 4096, 512, 1] {
        let buf = vec![0x5au8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
            if total > 64 << 20 {
                panic!("wrote 64 MiB into a small tmpfs without ENOSPC");
            }
        }
    }
    let _ = f.sync_all();
    total
}

#[test]
fn disk_full_answers_failed_serves_reads_and_recovers() {
    let fs = Tmpfs::mount("8m").expect("mount a tmpfs (tests run as root)");
    let data = fs.path().join("data");
    let mut p = Server::start_in(&data, &[]);
    for n in ["alice", "bob"] {
        user_add(&p.db_path(), n);
    }
    let bob = email("bob");
    let mut a = online(p.addr, p.log(), "alice");
    let mut b = online(p.addr, p.log(), "bob");
    let mut r = p.connect();
    a.send(&pm(&bob, "before"));
    let id0 = check_sent(&a.recv()).unwrap();
    assert_eq!(b.recv()["details"]["id"], json!(id0));

    let filler = fs.path().join("filler");
    let filled = fill(&filler);
    eprintln!("disk full after {filled} bytes of filler");

    // Send 4 KiB messages until the store runs out of space. Every one answered `sent` must
    // arrive; the first `failed` one must not.
    let mut stored: Vec<(String, String)> = vec![(id0.clone(), "before".to_string())];
    let mut failed_text = None;
    for i in 0..200 {
        let text = padded(&format!("full-{i}"), 4000);
        a.send(&pm(&bob, &text));
        let v = recv_within(&mut a, Duration::from_secs(15), "the answer to a message on a full disk");
        if v["event"] == json!("failed") {
            assert_failed(&v, "message");
            failed_text = Some(text);
            break;
        }
        let id = check_sent(&v).unwrap_or_else(|e| panic!("{e}\n{}", p.tail()));
        let got = recv_within(&mut b, Duration::from_secs(5), "bob's copy of a message answered sent");
        assert_eq!(got["details"]["id"], json!(id), "{got}");
        stored.push((id, text));
    }
    let failed_text = failed_text.unwrap_or_else(|| panic!("200 messages of 4 KB fitted on a full disk\n{}", p.tail()));
    eprintln!("the store failed after {} messages were stored on the full disk", stored.len() - 1);
    b.expect_silence(300);

    // Reads keep working on the full disk.
    r.ping();
    a.ping();
    assert_users(&mut a, &["alice", "bob"]);
    let mut newest_first = stored.clone();
    newest_first.reverse();
    assert_eq!(history(&mut a, &bob), newest_first, "history on the full disk");

    // Space returns: sending works again, and only the new message arrives.
    std::fs::remove_file(&filler).unwrap();
    a.send(&pm(&bob, "after"));
    let v = recv_within(&mut a, Duration::from_secs(10), "the first message once space is back");
    let id1 = check_sent(&v).unwrap_or_else(|e| panic!("a message after space returned: {e}\n{}", p.tail()));
    let got = recv_within(&mut b, Duration::from_secs(5), "bob's copy after space returned");
    assert_eq!((got["details"]["id"].clone(), got["details"]["message"].clone()), (json!(id1), json!("after")));
    b.expect_silence(300);
    let h = history(&mut a, &bob);
    assert_eq!(h.first(), Some(&(id1.clone(), "after".to_string())));
    assert!(!h.iter().any(|(_, t)| *t == failed_text), "the failed message must not be stored");
    assert_eq!(h.len(), stored.len() + 1, "history after recovery: {h:?}");

    // And it all survives a restart.
    p.restart();
    let mut a2 = online(p.addr, p.log(), "alice");
    assert_eq!(history(&mut a2, &bob).len(), stored.len() + 1, "history after a restart");
    drop(p);
}

#[test]
fn a_second_server_on_the_same_db_is_refused() {
    // Two servers on one file would hand out the same message ids: the second must not
    // start, and the first keeps serving.
    let s = Server::start();
    let args = server_args(&s.db_path(), Some(&s.dir().join("outbox2")));
    let (out, _) = run_to_exit(&args, Duration::from_secs(10));
    let line = assert_startup_error(&out, &["another natter server"]);
    assert!(line.contains(".lock"), "{line}");
    let mut c = s.connect();
    c.ping();
}
