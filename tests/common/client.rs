//! Test clients over real TCP: `Client`, which checks every line the server sends, and
//! `Pipe`, whose reading and writing halves can live in different threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::log::{log_tail, Log};

/// How long a client waits for one answer before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A blocking TCP connection to `addr` (IPv4) from the local address `src`, port chosen by
/// the kernel.
pub fn tcp_from(addr: SocketAddr, src: std::net::Ipv4Addr) -> std::io::Result<TcpStream> {
    let s = natter::line_client::connect_from(addr, src)?;
    s.set_nonblocking(false)?;
    s.set_nodelay(false)?;
    Ok(s)
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
