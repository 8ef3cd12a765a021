//! The client side of a line-oriented TCP connection: what natter-cli and natter-bench
//! (and a test harness, later) share to talk to a server that answers one JSON object per
//! line.
//!
//! It owns three things: opening a non-blocking connection ([`connect`]), splitting the
//! bytes read into `\n`-terminated lines under a length limit ([`LineBuffer`], pure, no
//! I/O), and one connection's queued output and unfinished input ([`LineClient`]), drained
//! until the socket would block.
//!
//! What it must never do: serve. The server's connections live in `net/` and read frames,
//! not lines. Nor does it name mio (readiness belongs to the caller, who registers
//! [`LineClient::stream_mut`] with its own poll), block on a non-blocking stream, parse
//! JSON (a line is bytes; what it means is the caller's business), or hold more than
//! its limit of unfinished input.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The longest line a client accepts by default: 16 MiB, twice the server's default
/// `--max-output` (8 MiB), which no single answer can pass. A longer line ends the
/// connection with [`LineError::TooLong`].
pub const MAX_LINE: usize = 16 << 20;

/// Why a connection's input cannot go on. Lines complete before the error were handed out.
#[derive(Debug)]
pub enum LineError {
    /// More than `limit` bytes arrived without a `\n`.
    TooLong { limit: usize },
    /// The peer closed the connection; `unterminated` bytes of a last line had no `\n`.
    Closed { unterminated: usize },
    /// Reading failed (a reset, say); the connection is unusable.
    Io(io::Error),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong { limit } => write!(f, "a line from the server is longer than {limit} bytes"),
            LineError::Closed { unterminated: 0 } => write!(f, "the server closed the connection"),
            LineError::Closed { unterminated } => {
                write!(f, "the server closed the connection inside a line ({unterminated} bytes without a newline)")
            }
            LineError::Io(e) => write!(f, "reading from the server: {e}"),
        }
    }
}

impl std::error::Error for LineError {}

/// Opens a TCP connection to the first address of `addr` that accepts one, then makes it
/// non-blocking with Nagle off (lines are sent as soon as they are written). `timeout`
/// bounds each attempt; `None` waits as long as the system does.
pub fn connect<A: ToSocketAddrs + fmt::Display>(addr: A, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs().map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))? {
        let attempt = match timeout {
            Some(t) => TcpStream::connect_timeout(&a, t),
            None => TcpStream::connect(a),
        };
        match attempt {
            Ok(s) => {
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = io::Error::new(e.kind(), format!("cannot connect to {a}: {e}")),
        }
    }
    Err(last)
}

/// [`connect`] from the local IPv4 address `src` (port chosen by the kernel) to the IPv4
/// `addr`. A load generator spreads its clients over 127.0.0.0/8 with it: each source
/// address has its own 28,000 ephemeral ports, and past about 20,000 connections from one
/// the kernel's search for a free port made every connect slower. std cannot bind before
/// connecting, so this goes through libc.
pub fn connect_from(addr: std::net::SocketAddr, src: std::net::Ipv4Addr) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = addr else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "connect_from: IPv4 only"));
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns (closed by the
    // TcpStream on every return); the addresses are valid sockaddr_in values that outlive
    // the calls.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(src, 0);
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        stream
    };
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Splits a byte stream into lines. Resumable: bytes already searched for `\n` are not
/// searched again when more arrive.
///
/// Ceiling: an unfinished line longer than `max_line` bytes is [`LineError::TooLong`]; the
/// caller then drops the connection. A caller that takes every line before pushing more
/// (as [`LineClient`] does) never holds more than `max_line` plus one push.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// The first byte not yet handed out as part of a line.
    start: usize,
    /// Bytes from `start` on known to hold no `\n`.
    scanned: usize,
    max_line: usize,
}

impl LineBuffer {
    pub fn new(max_line: usize) -> LineBuffer {
        LineBuffer { buf: Vec::new(), start: 0, scanned: 0, max_line }
    }

    /// Appends bytes read. Refused (nothing appended) when more than `max_line` bytes
    /// already wait to be taken: a line too long, or a caller that does not take its lines.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), LineError> {
        if self.buf.len() - self.start > self.max_line {
            return Err(LineError::TooLong { limit: self.max_line });
        }
        // Drop what was handed out; only the unfinished tail moves.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete line, without its `\n` (a `\r` before it is kept). `Ok(None)`
    /// when no `\n` has arrived yet; `TooLong` when the unfinished line passed `max_line`.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        let from = self.start + self.scanned;
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let line = self.start..from + at;
                self.start = from + at + 1;
                self.scanned = 0;
                Ok(Some(&self.buf[line]))
            }
            None => {
                self.scanned = self.buf.len() - self.start;
                if self.scanned > self.max_line {
                    return Err(LineError::TooLong { limit: self.max_line });
                }
                Ok(None)
            }
        }
    }

    /// Bytes received and not yet handed out (once `next_line` said `None`: the
    /// unfinished line).
    pub fn unterminated(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// One line connection over any byte stream, normally a non-blocking TCP socket: output
/// queued and written as far as the stream takes it, input split into lines.
///
/// The output queue has no ceiling of its own: the caller bounds what it queues
/// (natter-cli one request per typed line, natter-bench a window of requests per
/// connection) and can watch [`unsent`](Self::unsent).
#[derive(Debug)]
pub struct LineClient<S> {
    stream: S,
    input: LineBuffer,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
}

impl<S: Read + Write> LineClient<S> {
    /// A connection accepting lines of up to [`MAX_LINE`] bytes.
    pub fn new(stream: S) -> LineClient<S> {
        LineClient::with_max_line(stream, MAX_LINE)
    }

    pub fn with_max_line(stream: S, max_line: usize) -> LineClient<S> {
        LineClient { stream, input: LineBuffer::new(max_line), output: Vec::new(), written: 0 }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// For registering the stream with the caller's poll.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Queues bytes as they are (whole lines, with their `\n`); [`flush`](Self::flush)
    /// writes them.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Queues one line and its `\n`.
    pub fn queue_line(&mut self, line: &[u8]) {
        self.output.extend_from_slice(line);
        self.output.push(b'\n');
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.output.len() - self.written
    }

    /// Writes queued bytes until the stream would block. `Ok(true)` when nothing is left.
    /// A write error drops the queue (the stream is broken; its read side will say so)
    /// and is returned.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(self.drop_output(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.drop_output(e)),
            }
        }
        self.output.clear();
        self.written = 0;
        // A stream with a buffer of its own (TLS records) writes it out here.
        match self.stream.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn drop_output(&mut self, e: io::Error) -> io::Error {
        self.output.clear();
        self.written = 0;
        e
    }

    /// Reads until the stream would block, handing each complete line (without its `\n`)
    /// to `on_line` as soon as it is complete. Reads land in `scratch` first; its length is
    /// the most one read takes. `Ok(())` means the connection is still open; an error ends
    /// it (the end of the stream is [`LineError::Closed`]).
    pub fn read_lines(&mut self, scratch: &mut [u8], mut on_line: impl FnMut(&[u8])) -> Result<(), LineError> {
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return Err(LineError::Closed { unterminated: self.input.unterminated() }),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineError::Io(e)),
            };
            self.input.push(&scratch[..n])?;
            while let Some(line) = self.input.next_line()? {
                on_line(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn lines(buf: &mut LineBuffer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = buf.next_line().unwrap() {
            out.push(String::from_utf8_lossy(l).into_owned());
        }
        out
    }

    #[test]
    fn lines_cut_anywhere_come_out_whole_and_in_order() {
        let text = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}\n";
        for cut in 0..text.len() {
            let mut buf = LineBuffer::new(64);
            buf.push(&text[..cut]).unwrap();
            let mut got = lines(&mut buf);
            buf.push(&text[cut..]).unwrap();
            got.extend(lines(&mut buf));
            assert_eq!(got, ["{\"a\":1}", "", "{\"b\":2}\r", "{\"c\":3}"], "cut at {cut}");
            assert_eq!(buf.unterminated(), 0);
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_and_one_at_the_limit_is_not() {
        let mut buf = LineBuffer::new(4);
        buf.push(b"abcd").unwrap();
        assert!(buf.next_line().unwrap().is_none());
        buf.push(b"\nabcde").unwrap();
        assert_eq!(buf.next_line().unwrap(), Some(&b"abcd"[..]));
        assert!(matches!(buf.next_line(), Err(LineError::TooLong { limit: 4 })));
        assert!(matches!(buf.push(b"\n"), Err(LineError::TooLong { limit: 4 })));
    }

    /// A stream that reads from a script of chunks (`None`: would block) and takes at most
    /// `take` bytes per write.
    struct Script {
        reads: VecDeque<Option<Vec<u8>>>,
        written: Vec<u8>,
        take: usize,
    }

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(Some(chunk)) => {
                    out[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                Some(None) => Err(io::ErrorKind::WouldBlock.into()),
                None => Ok(0),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.take == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.take);
            self.written.extend_from_slice(&b[..n]);
            self.take -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(reads: &[Option<&[u8]>]) -> Script {
        Script { reads: reads.iter().map(|r| r.map(<[u8]>::to_vec)).collect(), written: Vec::new(), take: 0 }
    }

    #[test]
    fn reads_stop_at_would_block_and_the_end_says_what_was_left_unfinished() {
        let mut c = LineClient::new(script(&[Some(b"one\ntw"), Some(b"o\n"), None, Some(b"thr")]));
        let mut scratch = [0u8; 16];
        let mut got = Vec::new();
        c.read_lines(&mut scratch, |l| got.push(l.to_vec())).unwrap();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        let end = c.read_lines(&mut scratch, |l| got.push(l.to_vec()));
        assert!(matches!(end, Err(LineError::Closed { unterminated: 3 })), "{end:?}");
    }

    #[test]
    fn queued_lines_go_out_as_far_as_the_stream_takes_them() {
        let mut c = LineClient::new(script(&[]));
        c.queue_line(b"hello");
        c.queue(b"world\n");
        c.stream_mut().take = 4;
        assert!(!c.flush().unwrap());
        assert_eq!(c.unsent(), 8);
        c.stream_mut().take = 100;
        assert!(c.flush().unwrap());
        assert_eq!(c.unsent(), 0);
        assert_eq!(c.stream().written, b"hello\nworld\n");
    }
}
