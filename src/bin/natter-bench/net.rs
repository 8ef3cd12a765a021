//! The load generator's sockets: many non-blocking TCP clients on one mio poll.
//!
//! Lines the server sends are collected into one arena per poll round and handed to the
//! workload; what the workload sends is appended to each client's output and written in one
//! go per round (as the server does), so the generator costs few system calls per message.
//! Each client's buffers and line splitting are natter's shared [`LineClient`], over plain
//! TCP, TLS, WebSocket or both ([`Dial`]).

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use natter::line_client::{self, LineClient};
use natter::tls_client::{self, Link};
use natter::ws_client::{self, WsStream};
use rustls::ClientConfig;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How every client of a workload connects (`--transport`).
#[derive(Clone)]
pub struct Dial {
    /// Over TLS with this configuration.
    pub tls: Option<Arc<ClientConfig>>,
    /// Lines carried in WebSocket text messages (after an upgrade on `/ws`).
    pub websocket: bool,
}

/// What one client's lines travel over.
enum Wire {
    Lines(Link<TcpStream>),
    Ws(Box<WsStream<Link<TcpStream>>>),
}

impl Wire {
    fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Wire::Lines(l) => l.socket_mut(),
            Wire::Ws(w) => w.get_mut().socket_mut(),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Lines(l) => l.read(buf),
            Wire::Ws(w) => w.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Lines(l) => l.write(buf),
            Wire::Ws(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Lines(l) => l.flush(),
            Wire::Ws(w) => w.flush(),
        }
    }
}

pub struct Client {
    conn: LineClient<Wire>,
    pub open: bool,
    /// On the `dirty` list (a flag, so that no event searches the list).
    dirty: bool,
}

/// All clients of a workload.
pub struct Clients {
    dial: Dial,
    /// The longest line a client accepts (from `connect` on).
    pub max_line: usize,
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
    pub fn new(dial: Dial) -> io::Result<Clients> {
        Ok(Clients {
            dial,
            max_line: line_client::MAX_LINE,
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            clients: Vec::new(),
            dirty: Vec::new(),
            scratch: vec![0; 256 * 1024],
            lines: Vec::new(),
            arena: Vec::new(),
        })
    }

    /// Opens a client (its TLS handshake and WebSocket upgrade done, as dialled); returns its
    /// index.
    pub fn connect(&mut self, addr: SocketAddr) -> io::Result<usize> {
        let i = self.clients.len();
        let mut conn = self.dial(addr, i)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(conn.stream_mut().socket_mut(), Token(i), interest)?;
        self.clients.push(Client { conn, open: true, dirty: false });
        Ok(i)
    }

    /// Opens client `i` again under the same index (its old connection is dropped).
    pub fn reconnect(&mut self, i: usize, addr: SocketAddr) -> io::Result<()> {
        let _ = self.poll.registry().deregister(self.clients[i].conn.stream_mut().socket_mut());
        self.clients[i].open = false;
        let mut conn = self.dial(addr, i)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(conn.stream_mut().socket_mut(), Token(i), interest)?;
        // An entry of the old connection left in `dirty` flushes the new one: harmless (a
        // `retain` here cost O(n) per reconnect, O(n^2) for a storm of them).
        self.clients[i] = Client { conn, open: true, dirty: false };
        Ok(())
    }

    /// Connects client `i`: to a loopback server from its own address in 127.0.0.0/8
    /// ([`source`]), so that tens of thousands of clients do not exhaust one address's ports.
    fn dial(&self, addr: SocketAddr, i: usize) -> io::Result<LineClient<Wire>> {
        let timeout = Duration::from_secs(10);
        let link = match (&self.dial.tls, addr.ip()) {
            (Some(config), _) => {
                let session = tls_client::connect(&addr.to_string(), timeout, config)?;
                Link::Tls(Box::new(session.map_socket(TcpStream::from_std)))
            }
            (None, IpAddr::V4(ip)) if ip.is_loopback() => {
                Link::Plain(TcpStream::from_std(line_client::connect_from(addr, source(i))?))
            }
            (None, _) => Link::Plain(TcpStream::from_std(line_client::connect(addr, None)?)),
        };
        let wire = if self.dial.websocket {
            Wire::Ws(Box::new(ws_client::upgrade(link, &addr.to_string(), timeout)?))
        } else {
            Wire::Lines(link)
        };
        Ok(LineClient::with_max_line(wire, self.max_line))
    }

    /// Bytes queued for client `i` and not yet written.
    pub fn unsent(&self, i: usize) -> usize {
        self.clients[i].conn.unsent()
    }

    /// Queues bytes for client `i`; they go out at the next [`flush`](Self::flush).
    pub fn send(&mut self, i: usize, bytes: &[u8]) {
        let c = &mut self.clients[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
        c.conn.queue(bytes);
    }

    /// Writes every client's queued bytes as far as the sockets take them.
    pub fn flush(&mut self) {
        for i in std::mem::take(&mut self.dirty) {
            let c = &mut self.clients[i];
            c.dirty = false;
            match c.conn.flush() {
                Ok(true) => {}
                Ok(false) => {
                    c.dirty = true;
                    self.dirty.push(i);
                }
                // The queue is dropped with the connection; nothing is left to retry.
                Err(_) => c.open = false,
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
            if writable && !self.clients[i].dirty && self.clients[i].conn.unsent() > 0 {
                self.clients[i].dirty = true;
                self.dirty.push(i);
            }
            if readable {
                self.read_client(i);
            }
        }
        Ok(())
    }

    /// Reads client `i` until it would block, appending its complete lines to the arena. A
    /// closed, broken or overflowing connection is marked closed; the workload counts what
    /// it then misses.
    fn read_client(&mut self, i: usize) {
        let (arena, lines) = (&mut self.arena, &mut self.lines);
        let c = &mut self.clients[i];
        let read = c.conn.read_lines(&mut self.scratch, |line| {
            let a = arena.len();
            arena.extend_from_slice(line);
            lines.push((i, a..arena.len()));
        });
        if read.is_err() {
            c.open = false;
        }
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

/// Client `i`'s source address, one per client from 127.1.0.1 on (62,500 per second octet;
/// a spawned server's per-address limits are lifted, an attached one's apply).
fn source(i: usize) -> Ipv4Addr {
    let a = i / 250;
    Ipv4Addr::new(127, 1 + (a / 250 % 250) as u8, (a % 250) as u8, 1 + (i % 250) as u8)
}
