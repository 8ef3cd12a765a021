//! Running the `natter` binary to completion: its environment, admin commands, and a bounded
//! wait for any child that prints to pipes.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use super::server::ARGON;
use super::wait::poll_until;

/// The server binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_natter");

/// Every flag can also come from a `NATTER_*` variable: keep the caller's environment out.
pub fn clear_natter_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NATTER_") {
            cmd.env_remove(&k);
        }
    }
}

/// Runs the `natter` binary with `args` in `dir` (no `NATTER_*` variables, no stdin), at
/// most 30 s, and returns what it printed.
pub fn natter_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    clear_natter_env(&mut cmd);
    let child = cmd
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn natter");
    wait_output(child, Duration::from_secs(30), &format!("natter {args:?}"))
}

/// `natter user add` on the database `db` with the cheap test hash parameters ([`ARGON`]),
/// asserting success: for accounts that log in often. (`Server::user_add` keeps natter's
/// default parameters, so the suites also verify hashes made with other parameters than
/// the server's own.)
pub fn user_add_cheap(db: &Path, email: &str, username: &str, plain: &str) {
    let db_arg = db.to_str().expect("a UTF-8 temp path");
    let mut args = vec!["user", "add", "--email", email, "--username", username, "--password", plain, "--db", db_arg];
    args.extend(ARGON);
    let out = natter_in(db.parent().expect("the database is in a directory"), &args);
    assert!(
        out.status.success(),
        "natter user add {email} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for `child` (stdout and stderr piped) at most `limit` and returns what it printed;
/// past that, kills it and fails the test with what it had printed so far.
pub fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    // Drain stdout and stderr in threads so a chatty command cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let exited = poll_until(limit, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the child");
    let out = Output { status, stdout: t1.join().unwrap(), stderr: t2.join().unwrap() };
    assert!(
        exited,
        "{what} did not finish within {limit:?}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
