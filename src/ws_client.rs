//! The client side of WebSocket (RFC 6455), for natter-bench: the upgrade asked for and its
//! answer checked before the caller's loop starts, then a stream that carries natter's lines
//! as masked text messages and gives back the server's messages as lines, so that
//! [`LineClient`] works over it unchanged.
//!
//! Never serves (the server's side is `net/websocket.rs`), never names mio, and blocks only
//! inside [`upgrade`], within its timeout. What it holds is bounded as `tls_client`'s
//! stream is: new bytes are taken only when the last frame is written out.
//!
//! [`LineClient`]: crate::line_client::LineClient

use crate::net::accept_key;
use crate::net::websocket::{header_with, CLOSE, CONTINUATION, FIN, MASKED, PING, PONG, TEXT};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The most one client frame carries: a larger write is split over several calls.
const MAX_FRAME: usize = 64 * 1024;
/// The longest server answer head read during the upgrade.
const MAX_HEAD: usize = 8 * 1024;

/// Asks `stream` (plain or TLS, blocking or not) to upgrade to WebSocket on `/ws`, with
/// `host` as the `Host`, and checks the `101` and its `Sec-WebSocket-Accept`. Returns the
/// stream ready for lines. No `Origin` is sent: this is not a browser.
pub fn upgrade<S: Read + Write>(mut stream: S, host: &str, timeout: Duration) -> io::Result<WsStream<S>> {
    let deadline = Instant::now() + timeout;
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no randomness for the key: {e}")))?;
    let key = accept_key::base64(&nonce);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut sent = 0;
    while sent < request.len() {
        match stream.write(&request.as_bytes()[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) => wait_or_fail(e, deadline)?,
        }
    }
    loop {
        match stream.flush() {
            Ok(()) => break,
            Err(e) => wait_or_fail(e, deadline)?,
        }
    }
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(invalid("the upgrade answer's head is too long"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(invalid("the server closed the connection instead of upgrading")),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) => wait_or_fail(e, deadline)?,
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let status = text.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(invalid(&format!("the server refused the upgrade: {status}")));
    }
    let expected = accept_key::accept(key.as_bytes());
    let accepted = text.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(name, value)| name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected)
    });
    if !accepted {
        return Err(invalid("the upgrade answer's Sec-WebSocket-Accept does not match the key"));
    }
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(format!("no randomness for masks: {e}")))?;
    Ok(WsStream {
        inner: stream,
        mask_state: u64::from_le_bytes(seed) | 1,
        out: Vec::new(),
        written: 0,
        input: head.split_off(end),
        lines: Vec::new(),
        handed: 0,
        closed: false,
    })
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// Waits a moment on `WouldBlock` (the upgrade runs before the caller's poll exists), and
/// fails on anything else or once `deadline` passes.
fn wait_or_fail(e: io::Error, deadline: Instant) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted if Instant::now() < deadline => {
            std::thread::sleep(Duration::from_micros(200));
            Ok(())
        }
        io::ErrorKind::WouldBlock => Err(io::Error::new(io::ErrorKind::TimedOut, "the upgrade timed out")),
        _ => Err(e),
    }
}

/// A WebSocket connection seen as a byte stream of lines: what is written goes out as text
/// messages (masked, as a client must), and each text message received reads as its bytes
/// and a `\n`.
pub struct WsStream<S> {
    inner: S,
    /// xorshift state for the masking keys (seeded from the system's randomness).
    mask_state: u64,
    /// Framed bytes not written yet, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Bytes read and not yet decoded into frames.
    input: Vec<u8>,
    /// Decoded message text waiting to be read, from `handed` on.
    lines: Vec<u8>,
    handed: usize,
    /// The server sent close (or the stream ended): reads give the end of the stream.
    closed: bool,
}

impl<S> WsStream<S> {
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_le_bytes()
    }

    /// Appends one masked frame.
    fn frame(&mut self, first: u8, payload: &[u8]) {
        header_with(&mut self.out, first, MASKED, payload.len());
        let mask = self.next_mask();
        self.out.extend_from_slice(&mask);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        for (i, b) in self.out[start..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }

    /// Decodes every complete frame in `input`: text into `lines`, a ping answered, close
    /// noted. The server's frames are unmasked; anything else it could send is an error.
    fn decode(&mut self) -> io::Result<()> {
        let mut at = 0;
        loop {
            let rest = &self.input[at..];
            if rest.len() < 2 {
                break;
            }
            let (first, second) = (rest[0], rest[1]);
            if second & MASKED != 0 {
                return Err(invalid("the server sent a masked frame"));
            }
            let (len, header) = match second & 0x7f {
                126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                127 if rest.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[2..10]);
                    let len = usize::try_from(u64::from_be_bytes(b))
                        .map_err(|_| invalid("a server frame longer than memory"))?;
                    (len, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if rest.len() - header < len {
                break;
            }
            let payload = &rest[header..header + len];
            match first & 0x0f {
                TEXT | CONTINUATION => {
                    self.lines.extend_from_slice(payload);
                    if first & FIN != 0 {
                        self.lines.push(b'\n');
                    }
                }
                PING => {
                    let payload = payload.to_vec();
                    self.frame(FIN | PONG, &payload);
                }
                PONG => {}
                CLOSE => {
                    let code = payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    self.frame(FIN | CLOSE, &code.to_be_bytes());
                    self.closed = true;
                    at += header + len;
                    break;
                }
                op => return Err(invalid(&format!("the server sent opcode {op:#x}"))),
            }
            at += header + len;
        }
        self.input.drain(..at);
        Ok(())
    }
}

impl<S: Write> WsStream<S> {
    /// Writes framed bytes until none are left; `WouldBlock` when the stream is full.
    fn write_out(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.inner.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }
}

impl<S: Read + Write> Read for WsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.handed < self.lines.len() {
                let n = buf.len().min(self.lines.len() - self.handed);
                buf[..n].copy_from_slice(&self.lines[self.handed..self.handed + n]);
                self.handed += n;
                if self.handed == self.lines.len() {
                    self.lines.clear();
                    self.handed = 0;
                }
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.input.extend_from_slice(&chunk[..n]);
            self.decode()?;
            // A pong or the close answer goes out now if the stream takes it.
            match self.write_out() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl<S: Write> Write for WsStream<S> {
    /// Takes bytes only when the last frame is written, so that what is held stays bounded
    /// and a full socket shows as `WouldBlock`, as on a plain socket. Frame boundaries need
    /// not match lines: natter reads the text of its messages as one stream.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_out()?;
        let n = buf.len().min(MAX_FRAME);
        self.frame(FIN | TEXT, &buf[..n]);
        match self.write_out() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::websocket::{text_frame, WsReader};

    fn stream(input: Vec<u8>) -> WsStream<io::Cursor<Vec<u8>>> {
        WsStream {
            inner: io::Cursor::new(input),
            mask_state: 0x9e37_79b9_7f4a_7c15,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            lines: Vec::new(),
            handed: 0,
            closed: false,
        }
    }

    #[test]
    fn what_is_written_decodes_on_the_server_as_the_same_text() {
        let mut s = stream(Vec::new());
        let text = "{\"command\":\"ping\"}\n".repeat(5000);
        let mut left = text.as_bytes();
        while !left.is_empty() {
            let n = s.write(left).unwrap();
            left = &left[n..];
        }
        let wire = s.inner.get_ref()[..].to_vec();
        let (mut decoded, mut replies) = (Vec::new(), Vec::new());
        WsReader::new(1 << 20).receive(&wire, &mut decoded, &mut replies).unwrap();
        assert_eq!(decoded, text.as_bytes());
        assert!(replies.is_empty());
    }

    #[test]
    fn server_messages_read_as_lines_in_any_pieces() {
        let mut wire = Vec::new();
        text_frame(&mut wire, b"{\"a\":1}");
        text_frame(&mut wire, &vec![b'x'; 70_000]);
        text_frame(&mut wire, b"{\"b\":2}");
        let mut s = stream(wire);
        let mut got = Vec::new();
        let mut buf = [0u8; 999];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let lines: Vec<&[u8]> = got.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 4, "three lines and the empty tail");
        assert_eq!(lines[0], b"{\"a\":1}");
        assert_eq!(lines[1].len(), 70_000);
        assert_eq!(lines[2], b"{\"b\":2}");
    }

    #[test]
    fn a_close_from_the_server_ends_the_stream_and_is_answered() {
        let mut wire = Vec::new();
        crate::net::websocket::close_frame(&mut wire, 1009);
        let mut s = stream(wire);
        assert_eq!(s.read(&mut [0u8; 64]).unwrap(), 0);
        let answered = &s.inner.get_ref()[4..]; // after the server's close: 2 header bytes, 2 of code
        assert_eq!(answered[0], FIN | CLOSE);
        assert_eq!(answered[1], MASKED | 2);
    }
}
