//! The load generator's sockets: many non-blocking TCP clients on one mio poll.
//!
//! Lines the server sends are collected into one arena per poll round and handed to the
//! workload; what the workload sends is appended to each client's output and written in one
//! go per round (as the server does), so the generator costs few system calls per message.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

pub struct Client {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    pub open: bool,
}

/// All clients of a workload.
pub struct Clients {
    poll: Poll,
    events: Events,
    pub clients: Vec<Client>,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    /// Lines received in the last round: (client, range in `arena`).
    pub lines: Vec<(usize, Range<usize>)>,
    pub arena: Vec<u8>,
}

impl Clients {
    pub fn new() -> io::Result<Clients> {
        Ok(Clients {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            clients: Vec::new(),
            dirty: Vec::new(),
            scratch: vec![0; 256 * 1024],
            lines: Vec::new(),
            arena: Vec::new(),
        })
    }

    /// Opens a client; returns its index.
    pub fn connect(&mut self, addr: SocketAddr) -> io::Result<usize> {
        let std = std::net::TcpStream::connect(addr)?;
        std.set_nonblocking(true)?;
        std.set_nodelay(true)?;
        let mut stream = TcpStream::from_std(std);
        let i = self.clients.len();
        self.poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        self.clients.push(Client { stream, input: Vec::new(), output: Vec::new(), written: 0, open: true });
        Ok(i)
    }

    /// Queues bytes for client `i`; they go out at the next [`flush`](Self::flush).
    pub fn send(&mut self, i: usize, bytes: &[u8]) {
        let c = &mut self.clients[i];
        if c.output.len() == c.written {
            self.dirty.push(i);
        }
        c.output.extend_from_slice(bytes);
    }

    /// Writes every client's queued bytes as far as the sockets take them.
    pub fn flush(&mut self) {
        for i in std::mem::take(&mut self.dirty) {
            let c = &mut self.clients[i];
            while c.written < c.output.len() {
                match c.stream.write(&c.output[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.open = false;
                        break;
                    }
                }
            }
            if c.written == c.output.len() {
                c.output.clear();
                c.written = 0;
            } else {
                self.dirty.push(i);
            }
        }
    }

    /// Flushes, waits up to `timeout` for readiness, and collects complete lines into
    /// `lines` / `arena` (cleared first).
    pub fn round(&mut self, timeout: Duration) -> io::Result<()> {
        self.flush();
        self.lines.clear();
        self.arena.clear();
        let timeout = if self.dirty.is_empty() { timeout } else { timeout.min(Duration::from_millis(1)) };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(usize, bool, bool)> =
            self.events.iter().map(|e| (e.token().0, e.is_readable() || e.is_read_closed(), e.is_writable())).collect();
        for (i, readable, writable) in ready {
            if writable && !self.dirty.contains(&i) && self.clients[i].written < self.clients[i].output.len() {
                self.dirty.push(i);
            }
            if readable {
                self.read_client(i);
            }
        }
        Ok(())
    }

    fn read_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        loop {
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    c.open = false;
                    break;
                }
                Ok(n) => c.input.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.open = false;
                    break;
                }
            }
        }
        let mut start = 0;
        while let Some(nl) = c.input[start..].iter().position(|&b| b == b'\n') {
            let a = self.arena.len();
            self.arena.extend_from_slice(&c.input[start..start + nl]);
            self.lines.push((i, a..self.arena.len()));
            start += nl + 1;
        }
        c.input.drain(..start);
    }

    /// Runs rounds, handing every line to `on_line`, until it returns true or `limit`
    /// passes (then `Ok(false)`).
    pub fn until(
        &mut self,
        limit: Duration,
        mut on_line: impl FnMut(&mut Clients, usize, &[u8]) -> bool,
    ) -> io::Result<bool> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.round(left.min(Duration::from_millis(50)))?;
            let lines = std::mem::take(&mut self.lines);
            let arena = std::mem::take(&mut self.arena);
            let mut done = false;
            for (i, r) in &lines {
                done |= on_line(self, *i, &arena[r.clone()]);
            }
            self.lines = lines;
            self.arena = arena;
            if done {
                return Ok(true);
            }
        }
    }
}
