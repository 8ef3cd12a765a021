//! Shared harness for the black-box tests: start the real `natter` binary on 127.0.0.1 port 0
//! with a temporary database and mail outbox, talk to it over real TCP, read OTPs from the
//! outbox, and run the admin subcommands.
//!
//! Every helper is bounded in time (5 s reads, 10 s start and stop) and panics with the tail
//! of the server's stderr, so a failing test shows what the server logged.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The server binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_natter");

/// How long a client waits for one answer before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits for the server to print its listening line, or to exit.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an OTP mail to appear.
const MAIL_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines the server wrote to stderr, shared with the thread that drains the pipe.
pub type Log = Arc<Mutex<Vec<String>>>;

/// The last lines of a server log, for panic messages.
pub fn log_tail(log: &Log) -> String {
    let lines = log.lock().unwrap();
    let start = lines.len().saturating_sub(40);
    let mut out = String::from("---- server stderr (tail) ----\n");
    for l in &lines[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("---- end of server stderr ----");
    out
}

/// Lowercase hex md5 of `s`: the protocol `password` for the plaintext `s`.
pub fn md5_hex(s: &str) -> String {
    let digest = Md5::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// One running `natter` server with its own temporary directory. Killed on drop.
pub struct Server {
    child: Option<Child>,
    /// The bound TCP address, parsed from the `listening on tcp=... udp=...` log line.
    pub addr: SocketAddr,
    /// The bound UDP address from the same line, when it could be parsed.
    pub udp_addr: Option<SocketAddr>,
    dir: TempDir,
    extra: Vec<String>,
    log: Log,
    /// Outbox files already handed out by `wait_otp`.
    seen_mail: Mutex<HashSet<PathBuf>>,
}

impl Server {
    /// Starts a server with the standard test flags.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with the standard test flags plus `extra`.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        // The outbox is created here so that every mail test does not depend on the server
        // creating it; `outbox_dir_is_created_by_server` checks that separately.
        std::fs::create_dir_all(dir.path().join("outbox")).unwrap();
        Server::start_in(dir, extra.iter().map(|s| s.to_string()).collect())
    }

    /// Starts a server in an existing directory without creating the outbox first.
    pub fn start_without_outbox(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("create temp dir");
        Server::start_in(dir, extra.iter().map(|s| s.to_string()).collect())
    }

    fn start_in(dir: TempDir, extra: Vec<String>) -> Server {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr, udp_addr) = spawn(dir.path(), &extra, &log);
        Server { child: Some(child), addr, udp_addr, dir, extra, log, seen_mail: Mutex::new(HashSet::new()) }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("natter.db")
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
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

    /// Sends SIGTERM and waits (at most 10 s) for the process to exit; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(st.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match child.try_wait().expect("try_wait") {
                Some(status) => {
                    // Give the stderr thread a moment to collect the last lines.
                    thread::sleep(Duration::from_millis(50));
                    return status;
                }
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("server did not exit within 10 s of SIGTERM\n{}", self.tail());
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Stops the server (asserting exit status 0) and starts it again on the same directory,
    /// database and flags.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "server exited with {status:?} after SIGTERM, expected 0\n{}", self.tail());
        self.restart_after_stop();
    }

    /// Starts the server again on the same directory and flags after `stop`.
    pub fn restart_after_stop(&mut self) {
        assert!(self.child.is_none(), "restart_after_stop: the server is still running");
        self.log.lock().unwrap().push("==== restart ====".to_string());
        let (child, addr, udp) = spawn(self.dir.path(), &self.extra, &self.log);
        self.child = Some(child);
        self.addr = addr;
        self.udp_addr = udp;
    }

    /// Runs `natter <args> --db DB` (an admin subcommand) to completion (at most 30 s).
    pub fn admin(&self, args: &[&str]) -> Output {
        let db = self.db_path();
        let mut all = args.to_vec();
        all.extend(["--db", db.to_str().expect("a UTF-8 temp path")]);
        natter_in(self.dir(), &all)
    }

    /// `natter user add`, asserting success.
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

    /// Outbox mails addressed to `email` (case-insensitive), oldest first.
    pub fn mails_for(&self, email: &str) -> Vec<Mail> {
        let mut mails: Vec<Mail> = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.outbox()) else {
            return mails;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mail = Mail::parse(&bytes);
            if mail.is_to(email) {
                let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                mails.push(Mail { path: Some(path), modified: Some(modified), ..mail });
            }
        }
        mails.sort_by_key(|m| m.modified);
        mails
    }

    /// Number of outbox mails addressed to `email`.
    pub fn mail_count(&self, email: &str) -> usize {
        self.mails_for(email).len()
    }

    /// Waits (at most 5 s) for an outbox mail to `email` that no earlier call returned, and
    /// returns the OTP in it. When several new mails exist, the newest one wins (a replaced
    /// OTP makes a second file); all of them count as seen afterwards.
    pub fn wait_otp(&self, email: &str) -> String {
        let deadline = Instant::now() + MAIL_TIMEOUT;
        loop {
            let mails = self.mails_for(email);
            let mut seen = self.seen_mail.lock().unwrap();
            let fresh: Vec<&Mail> = mails.iter().filter(|m| !seen.contains(m.path.as_ref().unwrap())).collect();
            if let Some(newest) = fresh.last() {
                let otp = newest.otp().unwrap_or_else(|e| {
                    panic!("mail {:?} to {email}: {e}\n---- mail ----\n{}\n{}", newest.path, newest.raw, self.tail())
                });
                for m in &fresh {
                    seen.insert(m.path.clone().unwrap());
                }
                return otp;
            }
            drop(seen);
            if Instant::now() > deadline {
                panic!("no new OTP mail to {email} in {} within 5 s\n{}", self.outbox().display(), self.tail());
            }
            thread::sleep(Duration::from_millis(25));
        }
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

/// Every flag can also come from a `NATTER_*` variable: keep the caller's environment out.
pub fn clear_natter_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NATTER_") {
            cmd.env_remove(&k);
        }
    }
}

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

/// Spawns the server in `dir` and waits for its listening line.
fn spawn(dir: &Path, extra: &[String], log: &Log) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--listen").arg("127.0.0.1:0").arg("--db").arg(dir.join("natter.db"));
    if !extra.iter().any(|a| a == "--smtp-url") {
        cmd.arg("--mail-outbox").arg(dir.join("outbox"));
    }
    cmd.args(["--log-level", "info", "--argon2-memory-kib", "64", "--argon2-iterations", "1"])
        .args(PER_ADDRESS_OFF)
        .args(extra)
        .current_dir(dir);
    spawn_command(cmd, log, &format!("{extra:?}"))
}

/// Runs a server command (its arguments already set) with no `NATTER_*` variables, keeps
/// every stderr line in `log`, and returns once it logged its listening line: the child
/// and its TCP and UDP addresses. Panics with the log's tail when it does not start.
pub fn spawn_command(mut cmd: Command, log: &Log, what: &str) -> (Child, SocketAddr, Option<SocketAddr>) {
    clear_natter_env(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn natter server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<(SocketAddr, Option<SocketAddr>)>();
    let log2 = log.clone();
    thread::spawn(move || drain_stderr(stderr, log2, tx));
    match rx.recv_timeout(START_TIMEOUT) {
        Ok((tcp, udp)) => (child, tcp, udp),
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            thread::sleep(Duration::from_millis(50));
            panic!(
                "server did not print `listening on tcp=...` ({e:?}); status {status:?}; args {what}\n{}",
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

/// Waits for `child` (stdout and stderr piped) at most `limit`, killing it and failing the
/// test past that; returns what it printed.
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
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: t1.join().unwrap(), stderr: t2.join().unwrap() }
}

// ---------------------------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------------------------

/// One RFC 5322 message, as the outbox or an SMTP server holds it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    /// Unfolded header lines.
    pub headers: Vec<(String, String)>,
    /// The body after transfer decoding (7bit, quoted-printable or base64).
    pub body: String,
    pub path: Option<PathBuf>,
    pub modified: Option<std::time::SystemTime>,
}

impl Mail {
    pub fn parse(bytes: &[u8]) -> Mail {
        let raw = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
        let (head, body) = match raw.find("\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (&raw[..], ""),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let cte = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Transfer-Encoding"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        let body = if cte.contains("base64") {
            String::from_utf8_lossy(&base64_decode(body)).to_string()
        } else if cte.contains("quoted-printable") {
            qp_decode(body)
        } else {
            body.to_string()
        };
        Mail { raw: raw.clone(), headers, body, path: None, modified: None }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the `To:` header names `email` (case-insensitive).
    pub fn is_to(&self, email: &str) -> bool {
        self.header("To").map(|v| v.to_lowercase().contains(&email.to_lowercase())).unwrap_or(false)
    }

    /// The code from `Your natter verification code is NNNNNN.`; it must be exactly 6 digits.
    pub fn otp(&self) -> Result<String, String> {
        let key = "Your natter verification code is ";
        let text = self.body.replace(['\r', '\n'], " ");
        let text = collapse_spaces(&text);
        let i = text.find(key).ok_or_else(|| format!("body lacks `{key}NNNNNN.`"))?;
        let rest = &text[i + key.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.len() != 6 {
            return Err(format!("expected exactly 6 digits, found {digits:?}"));
        }
        if !rest[6..].starts_with('.') {
            return Err(format!("the code is not followed by '.': {:?}", &rest[..rest.len().min(12)]));
        }
        Ok(digits)
    }
}

fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_space = false;
    for c in s.chars() {
        if c == ' ' {
            if !prev_space {
                out.push(c);
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
    out
}

fn qp_decode(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() && s.is_char_boundary(i + 3) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s.as_bytes() {
        if let Some(v) = val(c) {
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// What a bounded read saw.
#[derive(Debug)]
pub enum ReadOutcome {
    Line(String),
    /// EOF or connection reset.
    Closed(String),
    Timeout,
}

/// One raw TCP connection to the server.
pub struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
    log: Log,
    pub peer: SocketAddr,
}

impl Client {
    pub fn connect(addr: SocketAddr, log: Log) -> Client {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}\n{}", log_tail(&log)));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Client { stream, pending: Vec::new(), log, peer: addr }
    }

    /// Connects from the loopback address `src` (any of 127.0.0.0/8), so that a test can
    /// play clients at several addresses.
    pub fn connect_from(addr: SocketAddr, src: std::net::Ipv4Addr, log: Log) -> Client {
        let stream =
            tcp_from(addr, src).unwrap_or_else(|e| panic!("connect to {addr} from {src}: {e}\n{}", log_tail(&log)));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Client { stream, pending: Vec::new(), log, peer: addr }
    }

    pub fn tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Sends one compact JSON object followed by a newline.
    pub fn send(&mut self, v: &Value) {
        let mut bytes = serde_json::to_vec(v).unwrap();
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Writes raw bytes in one `write_all`.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes) {
            panic!("write to server failed: {e}\n{}", self.tail());
        }
    }

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends `v` and returns the next message.
    pub fn request(&mut self, v: &Value) -> Value {
        self.send(v);
        self.recv()
    }

    /// Reads one line within `timeout`.
    pub fn read_line(&mut self, timeout: Duration) -> ReadOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                return ReadOutcome::Line(String::from_utf8_lossy(&line).to_string());
            }
            let now = Instant::now();
            if now >= deadline {
                return ReadOutcome::Timeout;
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    if self.pending.is_empty() {
                        return ReadOutcome::Closed("EOF".into());
                    }
                    let rest = String::from_utf8_lossy(&self.pending).to_string();
                    self.pending.clear();
                    return ReadOutcome::Closed(format!("EOF after partial line {rest:?}"));
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    // loop checks the deadline
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return ReadOutcome::Closed(format!("{e}")),
            }
        }
    }

    /// Reads one message: a compact JSON object followed by `\n`. Panics on timeout (5 s),
    /// close, or a line that is not one compact JSON object.
    pub fn recv(&mut self) -> Value {
        match self.read_line(READ_TIMEOUT) {
            ReadOutcome::Line(line) => parse_server_line(&line, &self.log),
            ReadOutcome::Closed(why) => {
                panic!("expected a message, but the connection closed ({why})\n{}", self.tail())
            }
            ReadOutcome::Timeout => {
                panic!("expected a message, got nothing within 5 s\n{}", self.tail())
            }
        }
    }

    /// A line this connection read, checked as every server line is (compact JSON object).
    pub fn parse(&self, line: &str) -> Value {
        parse_server_line(line, &self.log)
    }

    /// Asserts that the server closes the connection within 5 s without sending anything more.
    pub fn expect_closed(&mut self) {
        self.expect_closed_within(READ_TIMEOUT);
    }

    pub fn expect_closed_within(&mut self, limit: Duration) {
        match self.read_line(limit) {
            ReadOutcome::Closed(_) => {}
            ReadOutcome::Line(l) => {
                panic!("expected the connection to close, got {l:?}\n{}", self.tail())
            }
            ReadOutcome::Timeout => {
                panic!("expected the connection to close within {limit:?}, it stayed open\n{}", self.tail())
            }
        }
    }

    /// Asserts that nothing arrives (and the connection is not closed) for `ms` milliseconds.
    pub fn expect_silence(&mut self, ms: u64) {
        match self.read_line(Duration::from_millis(ms)) {
            ReadOutcome::Timeout => {}
            ReadOutcome::Line(l) => {
                panic!("expected silence for {ms} ms, got {l:?}\n{}", self.tail())
            }
            ReadOutcome::Closed(why) => {
                panic!("expected silence for {ms} ms, the connection closed ({why})\n{}", self.tail())
            }
        }
    }

    /// Sends a ping and asserts the exact pong.
    pub fn ping(&mut self) {
        let v = self.request(&json!({"type":"ping"}));
        assert_eq!(v, json!({"event":"success","type":"pong"}), "ping answer\n{}", self.tail());
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Closes the connection and returns once the server has closed its side too, which
    /// it does only after it has handled the close (its `on_close` runs before the socket
    /// is dropped): what follows then sees the connection gone, with no sleep to guess how
    /// long that takes. Whatever the server still sent is discarded.
    pub fn close(mut self) {
        self.shutdown_write();
        loop {
            match self.read_line(READ_TIMEOUT) {
                ReadOutcome::Line(_) => {}
                ReadOutcome::Closed(_) => return,
                ReadOutcome::Timeout => panic!("the server did not close its side within 5 s\n{}", self.tail()),
            }
        }
    }
}

/// A TCP connection to `addr` (IPv4) from the local address `src`, port chosen by the
/// kernel: std cannot bind before connecting, so this goes through libc.
pub fn tcp_from(addr: SocketAddr, src: std::net::Ipv4Addr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = addr else { return Err(std::io::Error::other("IPv4 only")) };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the addresses are
    // valid sockaddr_in values that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(src, 0);
        if libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sa = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Checks that a line from the server is one compact JSON object followed by `\n`.
fn parse_server_line(line: &str, log: &Log) -> Value {
    assert!(line.ends_with('\n'), "server line lacks the final newline: {line:?}");
    let body = &line[..line.len() - 1];
    assert!(is_compact(body), "server message is not compact JSON (whitespace outside strings): {body:?}");
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("server sent invalid JSON {body:?}: {e}\n{}", log_tail(log)));
    assert!(v.is_object(), "server message is not an object: {body:?}");
    v
}

/// True when `s` has no whitespace outside JSON strings.
fn is_compact(s: &str) -> bool {
    let mut in_str = false;
    let mut esc = false;
    for c in s.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c.is_whitespace() {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Shapes and flows
// ---------------------------------------------------------------------------------------------

/// Asserts `v` is exactly `{"event":event,"type":ty,"message":M}` with a short non-empty M,
/// and returns M.
pub fn assert_error(v: &Value, event: &str, ty: &str) -> String {
    let obj = v.as_object().unwrap_or_else(|| panic!("expected an object, got {v}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["event", "message", "type"], "an error must have exactly event/type/message: {v}");
    assert_eq!(v["event"], json!(event), "event of {v}");
    assert_eq!(v["type"], json!(ty), "type of {v}");
    let m = v["message"].as_str().unwrap_or_else(|| panic!("message is not a string: {v}"));
    assert!(!m.trim().is_empty(), "empty message: {v}");
    assert!(!m.contains('\n'), "message must be one short sentence: {v}");
    assert!(m.len() <= 200, "message must be short: {v}");
    m.to_string()
}

pub fn assert_failed(v: &Value, ty: &str) -> String {
    assert_error(v, "failed", ty)
}

pub fn assert_invalid(v: &Value, ty: &str) -> String {
    assert_error(v, "invalid", ty)
}

/// Asserts an `invalid` error without checking its type; returns (type, message).
pub fn assert_invalid_any_type(v: &Value) -> (String, String) {
    let t = v["type"].as_str().unwrap_or_else(|| panic!("type is not a string: {v}")).to_string();
    let m = assert_error(v, "invalid", &t);
    (t, m)
}

pub fn registration(email: &str, password: &str, username: &str) -> Value {
    json!({"type":"registration","details":{"email":email,"password":password,"username":username}})
}

pub fn verify(otp: &str) -> Value {
    json!({"type":"verify","otp":otp})
}

pub fn login_req(username: Option<&str>, email: Option<&str>, password: &str) -> Value {
    json!({"type":"login","details":{"username":username,"email":email,"password":password}})
}

pub fn sent_otp(email: &str) -> Value {
    json!({"event":"sent","type":"otp","message":format!("OTP sent to {email}")})
}

pub fn login_success(username: &str, email: &str) -> Value {
    json!({"event":"success","type":"login","details":{"username":username,"email":email,"friends":[]}})
}

/// A six-digit code different from `otp`.
pub fn wrong_otp(otp: &str) -> String {
    if otp == "000000" {
        "111111".to_string()
    } else {
        "000000".to_string()
    }
}

/// Registers on `c` (asserting the exact `sent` answer) and returns the mailed OTP.
pub fn register(server: &Server, c: &mut Client, email: &str, username: &str, plain: &str) -> String {
    let v = c.request(&registration(email, &md5_hex(plain), username));
    assert_eq!(v, sent_otp(email), "registration answer\n{}", server.tail());
    server.wait_otp(email)
}

/// Registers and verifies on `c`; the connection stays anonymous.
pub fn register_and_verify_on(server: &Server, c: &mut Client, email: &str, username: &str, plain: &str) {
    let otp = register(server, c, email, username, plain);
    let v = c.request(&verify(&otp));
    assert_eq!(v, json!({"event":"success","type":"verify"}), "verify answer\n{}", server.tail());
}

/// Registers and verifies an account on a fresh connection, then closes it.
pub fn register_and_verify(server: &Server, email: &str, username: &str, plain: &str) {
    let mut c = server.connect();
    register_and_verify_on(server, &mut c, email, username, plain);
}

/// Logs in by email with the plaintext password and returns the full answer, asserting
/// `event` success and type login.
pub fn login(c: &mut Client, email: &str, plain: &str) -> Value {
    let v = c.request(&login_req(None, Some(email), &md5_hex(plain)));
    assert_eq!(v["event"], json!("success"), "login answer {v}\n{}", c.tail());
    assert_eq!(v["type"], json!("login"), "login answer {v}");
    v
}

/// A fresh connection logged in as `email`.
pub fn logged_in(server: &Server, email: &str, plain: &str) -> Client {
    let mut c = server.connect();
    login(&mut c, email, plain);
    c
}

// ---------------------------------------------------------------------------------------------
// A raw connection whose reading and writing sides can live in different threads
// ---------------------------------------------------------------------------------------------

/// What [`Pipe::next`] read.
#[derive(Debug)]
pub enum Got {
    Msg(Value),
    Closed(String),
    Timeout,
}

/// A raw logged-in connection for floods: `writer` can be cloned into another thread while
/// this one reads the answers.
pub struct Pipe {
    pub reader: std::io::BufReader<TcpStream>,
    pub writer: TcpStream,
    buf: Vec<u8>,
}

impl Pipe {
    /// Connects and sends `login` (a whole login request); panics unless it succeeds.
    pub fn login(addr: SocketAddr, login: &Value) -> Pipe {
        let s = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
        let writer = s.try_clone().unwrap();
        writer.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut p = Pipe { reader: std::io::BufReader::with_capacity(1 << 16, s), writer, buf: Vec::new() };
        let mut req = serde_json::to_vec(login).unwrap();
        req.push(b'\n');
        p.writer.write_all(&req).unwrap();
        match p.next(READ_TIMEOUT) {
            Got::Msg(v) if v["event"] == json!("success") && v["type"] == json!("login") => {}
            Got::Msg(v) => panic!("login {login}: {v}"),
            Got::Closed(w) => panic!("login {login}: closed ({w})"),
            Got::Timeout => panic!("login {login}: no answer"),
        }
        p
    }

    /// The next line as JSON, or why there is none within `limit`.
    pub fn next(&mut self, limit: Duration) -> Got {
        use std::io::BufRead;
        let deadline = Instant::now() + limit;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Got::Timeout;
            }
            self.reader.get_ref().set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).unwrap();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    let why = if self.buf.is_empty() {
                        "EOF".to_string()
                    } else {
                        format!("EOF after a partial line {:?}", String::from_utf8_lossy(&self.buf))
                    };
                    return Got::Closed(why);
                }
                Ok(_) => {
                    if self.buf.last() == Some(&b'\n') {
                        let v: Value = serde_json::from_slice(&self.buf).unwrap_or_else(|e| {
                            panic!("invalid JSON from server {:?}: {e}", String::from_utf8_lossy(&self.buf))
                        });
                        self.buf.clear();
                        return Got::Msg(v);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => {
                    let partial = if self.buf.is_empty() { "" } else { " after a partial line" };
                    return Got::Closed(format!("{e}{partial}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts named after people, and message helpers shared by the message and fault tests
// ---------------------------------------------------------------------------------------------

/// Cheap argon2 parameters for servers and `natter user add` in tests.
pub const ARGON: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// The test account `name`'s email.
pub fn email(name: &str) -> String {
    format!("{name}@example.com")
}

/// The test account `name`'s plain password.
pub fn plain(name: &str) -> String {
    format!("pw-{name}")
}

/// A message text of exactly `len` bytes that starts with `tag`.
pub fn padded(tag: &str, len: usize) -> String {
    let mut s = format!("{tag}:");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// The number in a message id.
pub fn num(id: &str) -> u64 {
    id.parse().unwrap_or_else(|_| panic!("id {id:?} is not decimal"))
}

/// The id of a `sent` answer that has exactly FORMAT.md's shape, or what is wrong with it.
pub fn check_sent(v: &Value) -> Result<String, String> {
    let obj = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    if keys != ["event", "id", "type"] || v["event"] != json!("sent") || v["type"] != json!("message") {
        return Err(format!("expected exactly {{\"event\":\"sent\",\"type\":\"message\",\"id\":ID}}, got {v}"));
    }
    let id = v["id"].as_str().ok_or_else(|| format!("the id is not a JSON string: {v}"))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.parse::<u64>().is_err() {
        return Err(format!("the id is not a decimal string: {v}"));
    }
    Ok(id.to_string())
}

/// Reads one message within `limit`, panicking with `what` otherwise.
pub fn recv_within(c: &mut Client, limit: Duration, what: &str) -> Value {
    match c.read_line(limit) {
        ReadOutcome::Line(l) => c.parse(&l),
        ReadOutcome::Closed(why) => panic!("{what}: the connection closed ({why})\n{}", c.tail()),
        ReadOutcome::Timeout => panic!("{what}: nothing within {limit:?}\n{}", c.tail()),
    }
}

/// Reads messages until nothing arrives for `quiet`; at most `max` of them.
pub fn drain(c: &mut Client, quiet: Duration, max: usize) -> Vec<Value> {
    drain_ctx(c, quiet, max, "draining")
}

/// [`drain`], naming what is drained when the connection closes.
pub fn drain_ctx(c: &mut Client, quiet: Duration, max: usize, what: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match c.read_line(quiet) {
            ReadOutcome::Line(l) => {
                out.push(c.parse(&l));
                assert!(out.len() <= max, "more than {max} messages arrived\n{}", c.tail());
            }
            ReadOutcome::Timeout => return out,
            ReadOutcome::Closed(why) => {
                let why: String = why.chars().take(160).collect();
                panic!("{what}: the connection closed ({why}) after {} messages\n{}", out.len(), c.tail())
            }
        }
    }
}
