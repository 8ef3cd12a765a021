//! One `natter` server per test: the real binary on 127.0.0.1 port 0 with its own database
//! and mail outbox, stopped with SIGTERM or SIGKILL and started again on the same files.
//!
//! Every wait is bounded (10 s to start or stop) and panics with the tail of the server's
//! stderr, so a failing test shows what the server logged.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tempfile::TempDir;

use super::client::Client;
use super::commands::{clear_natter_env, natter_in, user_add_cheap, BIN};
use super::log::{log_tail, Log};
use super::wait::{poll_until, wait_until};

/// How long a test waits for the server to print its listening line, or to exit.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Every test client connects from 127.0.0.1, where a real deployment's clients come from
/// many addresses: the per-address caps are lifted for the test servers. `tests/attacks.rs`
/// tests them at their defaults, which a test's own flags restore (the last value wins).
pub const PER_ADDRESS_OFF: [&str; 8] = [
    "--max-connections-per-ip",
    "1000000",
    "--max-anonymous-per-ip",
    "1000000",
    "--otp-mails-per-ip",
    "1000000",
    "--call-attempts",
    "1000000",
];

/// Cheap argon2 parameters for servers and `natter user add` in tests.
pub const ARGON: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// The flags every test server starts with: port 0 on 127.0.0.1, the database `db`, mail to
/// `outbox` (none when the test names an SMTP server), info logs, cheap hashing and the
/// per-address caps lifted. A test's own flags come after them, and win.
pub fn server_args(db: &Path, outbox: Option<&Path>) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into(), "--db".into(), db.into()];
    if let Some(outbox) = outbox {
        v.extend(["--mail-outbox".into(), outbox.into()]);
    }
    v.extend(["--log-level", "info"].map(OsString::from));
    v.extend(ARGON.map(OsString::from));
    v.extend(PER_ADDRESS_OFF.map(OsString::from));
    v
}

/// One `natter` server process and its directory. Killed on drop; a temporary directory of
/// its own is removed after that.
pub struct Server {
    child: Option<Child>,
    /// The thread that reads the server's stderr into `log`; it ends when the process does.
    drain: Option<JoinHandle<()>>,
    /// The bound TCP address, parsed from the `listening on tcp=... udp=...` log line.
    pub addr: SocketAddr,
    /// The bound UDP address from the same line, when it could be parsed.
    pub udp_addr: Option<SocketAddr>,
    dir: PathBuf,
    /// The temporary directory `dir` is, when the server made it.
    _temp: Option<TempDir>,
    extra: Vec<String>,
    /// RLIMIT_NOFILE for the process, when the test lowers it.
    nofile: Option<u64>,
    log: Log,
    /// Outbox files already handed out by `wait_otp`.
    pub(super) seen_mail: Mutex<HashSet<PathBuf>>,
}

impl Server {
    /// Starts a server with the standard test flags.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with the standard test flags plus `extra`.
    pub fn start_with(extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("create temp dir");
        // The outbox is created here so that every mail test does not depend on the server
        // creating it; `outbox_dir_is_created_by_server` checks that separately.
        std::fs::create_dir_all(temp.path().join("outbox")).unwrap();
        Server::launch(temp.path().to_path_buf(), Some(temp), extra, None)
    }

    /// Starts a server in a temporary directory without creating the outbox first.
    pub fn start_without_outbox(extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("create temp dir");
        Server::launch(temp.path().to_path_buf(), Some(temp), extra, None)
    }

    /// Starts a server in `dir`, which the test owns (a small tmpfs, a database prepared
    /// beforehand); `dir` and its outbox are created when missing.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(dir.join("outbox")).unwrap();
        Server::launch(dir.to_path_buf(), None, extra, None)
    }

    /// [`Server::start_with`], with the process limited to `nofile` open descriptors
    /// (RLIMIT_NOFILE, soft and hard, set before exec).
    pub fn start_with_nofile(extra: &[&str], nofile: u64) -> Server {
        let temp = tempfile::tempdir().expect("create temp dir");
        std::fs::create_dir_all(temp.path().join("outbox")).unwrap();
        Server::launch(temp.path().to_path_buf(), Some(temp), extra, Some(nofile))
    }

    fn launch(dir: PathBuf, temp: Option<TempDir>, extra: &[&str], nofile: Option<u64>) -> Server {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let run = spawn(&dir, &extra, nofile, &log);
        Server {
            child: Some(run.child),
            drain: Some(run.drain),
            addr: run.addr,
            udp_addr: run.udp_addr,
            dir,
            _temp: temp,
            extra,
            nofile,
            log,
            seen_mail: Mutex::new(HashSet::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("natter.db")
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.join("outbox")
    }

    /// All stderr lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn log(&self) -> Log {
        self.log.clone()
    }

    pub fn tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Opens a new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr, self.log.clone())
    }

    /// Opens a new client connection from the loopback address 127.0.0.`last`.
    pub fn connect_from(&self, last: u8) -> Client {
        Client::connect_from(self.addr, std::net::Ipv4Addr::new(127, 0, 0, last), self.log.clone())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Whether the process is still running (it has not exited on its own).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM without waiting; [`Server::wait_exit`] collects the exit.
    pub fn sigterm(&self) {
        // SAFETY: a plain signal to the child this Server started and has not reaped.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {}: {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Waits (at most 10 s) for the process to exit and for its last stderr lines; returns
    /// its status. Past 10 s the process is killed and the test fails.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let exited = poll_until(START_TIMEOUT, || child.try_wait().expect("try_wait").is_some());
        if !exited {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait for the server");
        self.join_drain();
        assert!(exited, "the server did not exit within {START_TIMEOUT:?}\n{}", self.tail());
        status
    }

    /// Sends SIGTERM and waits (at most 10 s) for the process to exit; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    /// SIGKILL: the process ends at once, as in a crash; returns once it is reaped and its
    /// stderr read to the end.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("SIGKILL the server");
        let _ = child.wait();
        self.join_drain();
    }

    /// Stops the server (asserting exit status 0) and starts it again on the same directory,
    /// database and flags.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "server exited with {status:?} after SIGTERM, expected 0\n{}", self.tail());
        self.restart_after_stop();
    }

    /// Starts the server again on the same directory and flags after `stop`, `wait_exit` or
    /// `kill`.
    pub fn restart_after_stop(&mut self) {
        assert!(self.child.is_none(), "restart_after_stop: the server is still running");
        self.log.lock().unwrap().push("==== restart ====".to_string());
        let run = spawn(&self.dir, &self.extra, self.nofile, &self.log);
        self.child = Some(run.child);
        self.drain = Some(run.drain);
        self.addr = run.addr;
        self.udp_addr = run.udp_addr;
    }

    /// Waits for the stderr thread to read the exited process's last lines.
    fn join_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            wait_until(START_TIMEOUT, "the server's stderr closing after its exit", || drain.is_finished());
            let _ = drain.join();
        }
    }

    /// Runs `natter <args> --db DB` (an admin subcommand) to completion (at most 30 s).
    pub fn admin(&self, args: &[&str]) -> Output {
        let db = self.db_path();
        let mut all = args.to_vec();
        all.extend(["--db", db.to_str().expect("a UTF-8 temp path")]);
        natter_in(self.dir(), &all)
    }

    /// `natter user add` with natter's default hash parameters, asserting success.
    pub fn user_add(&self, email: &str, username: &str, plain: &str) {
        let out = self.admin(&["user", "add", "--email", email, "--username", username, "--password", plain]);
        assert!(
            out.status.success(),
            "natter user add failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `natter user add` with the cheap test hash parameters: see [`user_add_cheap`].
    pub fn user_add_cheap(&self, email: &str, username: &str, plain: &str) {
        user_add_cheap(&self.db_path(), email, username, plain);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server process that printed its listening line.
struct Running {
    child: Child,
    addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    drain: JoinHandle<()>,
}

/// Spawns the server in `dir` (no `NATTER_*` variables), keeps every stderr line in `log`,
/// and returns once it logged its listening line. Panics with the log's tail when it does
/// not start.
fn spawn(dir: &Path, extra: &[String], nofile: Option<u64>, log: &Log) -> Running {
    let smtp = extra.iter().any(|a| a == "--smtp-url");
    let outbox = dir.join("outbox");
    let mut cmd = Command::new(BIN);
    cmd.args(server_args(&dir.join("natter.db"), (!smtp).then_some(outbox.as_path()))).args(extra).current_dir(dir);
    if let Some(n) = nofile {
        // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    clear_natter_env(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn natter server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<(SocketAddr, Option<SocketAddr>)>();
    let log2 = log.clone();
    let drain = thread::spawn(move || drain_stderr(stderr, log2, tx));
    match rx.recv_timeout(START_TIMEOUT) {
        Ok((addr, udp_addr)) => Running { child, addr, udp_addr, drain },
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            // The last lines may say why it did not start.
            poll_until(START_TIMEOUT, || drain.is_finished());
            panic!(
                "server did not print `listening on tcp=...` ({e:?}); status {status:?}; args {extra:?} nofile {nofile:?}\n{}",
                log_tail(log)
            );
        }
    }
}

/// Reads the server's stderr to the end, keeping every line and reporting the listening
/// address once. Never stops reading early, so the pipe never fills.
fn drain_stderr(mut stderr: std::process::ChildStderr, log: Log, tx: mpsc::Sender<(SocketAddr, Option<SocketAddr>)>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reported = false;
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if !reported {
                if let Some(addrs) = parse_listening(&line) {
                    reported = true;
                    let _ = tx.send(addrs);
                }
            }
            log.lock().unwrap().push(line);
        }
    }
    if !pending.is_empty() {
        log.lock().unwrap().push(String::from_utf8_lossy(&pending).to_string());
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let idx = line.find("listening on")?;
    let rest = &line[idx..];
    let field = |key: &str| -> Option<SocketAddr> {
        let start = rest.find(key)? + key.len();
        let tok: String =
            rest[start..].chars().take_while(|c| !c.is_whitespace() && *c != ',' && *c != ';' && *c != ')').collect();
        tok.parse().ok()
    };
    Some((field("tcp=")?, field("udp=")))
}
