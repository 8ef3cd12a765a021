//! One TCP client: its socket, its transport (plain or TLS, carrying JSON, HTTP or
//! WebSocket; see transport.rs), its input buffer and frame scanner, its output buffer,
//! and the readiness it has seen.
//!
//! Input: bytes are appended to `input`; the scanner finds frames in place; the consumed
//! prefix is dropped after each batch. Output: answers are appended to `output` during the
//! iteration and written once per iteration, as much as the socket takes, resuming on the
//! next writable event (edge-triggered: we must write until `WouldBlock` before waiting).
//! Idle connections keep no buffer capacity: both buffers are released when empty.

use super::carried::Outcome;
use super::http;
use super::proxy::Header;
use super::transport::{Offer, Refusal, Step, Transport};
use crate::chat::{CloseReason, ConnId};
use crate::framing::{FrameError, FrameScanner};
use crate::token_bucket::TokenBucket;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;

/// Plaintext encrypted per step of a TLS flush: four full records.
const TLS_CHUNK: usize = 64 * 1024;

/// Capacity of an output buffer when it is first written after being released: one page,
/// which is what the first write touches anyway.
const OUTPUT_START: usize = 4 * 1024;

/// An output buffer at least this big is shrunk when its unsent tail takes less than half.
const SHRINK_FROM: usize = 256 * 1024;

/// Why a connection was closed, logged once when it is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhy {
    PeerClosed,
    ReadError,
    WriteError,
    FrameTooLarge,
    NotAnObject,
    SlowConsumer,
    OutputTotal,
    AuthTimeout,
    ServerFull,
    AddressFull,
    /// A transport this server does not offer, or a malformed PROXY header (PROTOCOL.md
    /// section 13).
    Refused(&'static str),
    /// The plain stream from a non-loopback client under `--require-tls`.
    TlsRequired,
    /// The TLS session failed: not TLS, a protocol error, an alert from the peer.
    Tls,
    /// An HTTP answer that ends the connection, or a WebSocket close, was written.
    Answered(&'static str),
}

impl CloseWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseWhy::PeerClosed => "closed by peer",
            CloseWhy::ReadError => "read error",
            CloseWhy::WriteError => "write error",
            CloseWhy::FrameTooLarge => "frame too large",
            CloseWhy::NotAnObject => "stream not resynchronisable",
            CloseWhy::SlowConsumer => "slow consumer: output cap reached",
            CloseWhy::OutputTotal => {
                "slow consumer: the most unsent output when all connections together passed --max-output-total"
            }
            CloseWhy::AuthTimeout => "anonymous idle timeout",
            CloseWhy::ServerFull => "too many connections",
            CloseWhy::AddressFull => "too many connections from this address",
            CloseWhy::Refused(why) => why,
            CloseWhy::TlsRequired => "plain stream refused: --require-tls",
            CloseWhy::Tls => "TLS error",
            CloseWhy::Answered(why) => why,
        }
    }
}

impl From<CloseReason> for CloseWhy {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::AuthTimeout => CloseWhy::AuthTimeout,
            CloseReason::SlowConsumer => CloseWhy::SlowConsumer,
            CloseReason::Broken => CloseWhy::WriteError,
        }
    }
}

impl From<FrameError> for CloseWhy {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge => CloseWhy::FrameTooLarge,
            FrameError::NotAnObject => CloseWhy::NotAnObject,
        }
    }
}

/// What one read from the socket gave.
pub enum ReadOutcome {
    /// Bytes were appended to the input buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
    Error(io::Error),
}

/// What the transport learnt while reading, for the loop to act on (the loop owns the
/// core and the counters; the connection owns neither).
#[derive(Debug, Default)]
pub struct TransportNews {
    /// A PROXY header was read.
    pub proxied: Option<Header>,
    /// A TLS handshake finished (`Some(true)`) or failed (`Some(false)`).
    pub handshake: Option<bool>,
}

pub struct Conn {
    pub stream: TcpStream,
    pub id: ConnId,
    /// The client's address: the socket's peer, or the address a PROXY header gave.
    pub peer: SocketAddr,
    /// The address the client connected to (likewise).
    pub local: SocketAddr,
    pub news: TransportNews,
    input: Vec<u8>,
    scanner: FrameScanner,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    /// Bytes ever queued and ever written: stream offsets for the delivery marks.
    queued_total: u64,
    written_total: u64,
    /// (stream offset where a personal message ends, its id), oldest first.
    marks: VecDeque<(u64, i64)>,
    /// Readable edge seen and not yet drained (to `WouldBlock` or a short read).
    pub readable: bool,
    /// An event said the peer closed its side (or the socket failed): a short read no longer
    /// means drained, because no further edge will come for the end of the stream.
    pub hung_up: bool,
    /// Queued in the iteration's flush list.
    pub dirty: bool,
    /// Queued in the iteration's work list.
    pub queued: bool,
    /// Set once; the reap phase closes the connection.
    pub closing: Option<CloseWhy>,
    /// Frames allowed under `--msg-rate`.
    pub bucket: Option<TokenBucket>,
    /// What it speaks, told by its first bytes.
    transport: Transport,
    /// Close once the output is written (an HTTP answer that ends it, a WebSocket close).
    pub linger: bool,
    /// Bytes the transport queued on its own (HTTP answers, WebSocket control frames) that
    /// the loop has not yet counted in its output budget.
    transport_bytes: usize,
    /// Its unsent output passed the pause mark: its frames are neither read nor handled
    /// until the flush takes it back below (PROTOCOL.md section 10).
    pub paused: bool,
}

impl Conn {
    /// `proxy_trusted`: the peer is in `--proxy-from`, so a PROXY header may come first.
    pub fn new(stream: TcpStream, id: ConnId, peer: SocketAddr, max_frame: usize, proxy_trusted: bool) -> Conn {
        let local = stream.local_addr().unwrap_or(peer);
        Conn {
            stream,
            id,
            peer,
            local,
            news: TransportNews::default(),
            input: Vec::new(),
            scanner: FrameScanner::new(max_frame),
            output: Vec::new(),
            written: 0,
            queued_total: 0,
            written_total: 0,
            marks: VecDeque::new(),
            readable: false,
            hung_up: false,
            dirty: false,
            queued: false,
            closing: None,
            bucket: None,
            paused: false,
            transport: Transport::new(proxy_trusted, max_frame),
            linger: false,
            transport_bytes: 0,
        }
    }

    /// One `read` through `scratch` into the input buffer, through the transport (which
    /// `offer` lets it become while it is being told).
    pub fn read_some(&mut self, scratch: &mut [u8], offer: &Offer) -> ReadOutcome {
        let n = match self.stream.read(scratch) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return ReadOutcome::Data(0),
            Err(e) => return ReadOutcome::Error(e),
        };
        let handshaking = self.transport.tls().is_some_and(|t| t.is_handshaking());
        let before = self.input.len();
        match self.transport.receive(&scratch[..n], &mut self.input) {
            Ok(r) => {
                if r.handshake_done {
                    self.news.handshake = Some(true);
                }
                if r.closed {
                    // close_notify: what came before it is handled, then the close.
                    return ReadOutcome::Eof;
                }
            }
            Err(e) => {
                self.tls_failed(handshaking, &e);
                return ReadOutcome::Data(n);
            }
        }
        if !self.transport.ready() {
            self.detect(offer);
        }
        if self.transport.ready() && self.closing.is_none() {
            let start = self.output.len();
            let outcome = self.transport.carry(before, &mut self.input, &mut self.output, offer);
            self.transport_wrote(start);
            match outcome {
                Outcome::Going => {}
                Outcome::Linger => self.linger = true,
                Outcome::Refused(e) => {
                    log::debug!("WebSocket from {}: {e}", self.peer);
                    self.linger = true;
                }
            }
        }
        ReadOutcome::Data(n)
    }

    /// Tells the transport from the input so far, taking a PROXY header out of it and
    /// starting TLS as the bytes say.
    fn detect(&mut self, offer: &Offer) {
        loop {
            match self.transport.step(&mut self.input, self.peer.ip(), offer) {
                Ok(Step::Decided | Step::Wait) => return,
                Ok(Step::Proxied(header)) => {
                    if let Header::Proxied { source, destination } = header {
                        self.peer = source;
                        self.local = destination;
                    }
                    self.news.proxied = Some(header);
                }
                Ok(Step::TlsStarted(r)) => {
                    if r.handshake_done {
                        self.news.handshake = Some(true);
                    }
                    return;
                }
                Err(Refusal::Silent(why)) => {
                    self.closing = Some(CloseWhy::Refused(why));
                    return;
                }
                Err(Refusal::HttpTlsRequired) => {
                    let start = self.output.len();
                    self.output.extend_from_slice(&http::tls_required());
                    self.transport_wrote(start);
                    self.closing = Some(CloseWhy::Answered("plain HTTP refused: --require-tls"));
                    return;
                }
                Err(Refusal::TlsRequired) => {
                    // The loop has the core answer it (the answer goes out like any other).
                    self.closing = Some(CloseWhy::TlsRequired);
                    return;
                }
                Err(Refusal::Tls(e)) => {
                    self.tls_failed(true, &e);
                    return;
                }
            }
        }
    }

    fn tls_failed(&mut self, handshaking: bool, e: &super::tls::TlsError) {
        log::debug!("TLS with {}: {e}", self.peer);
        if handshaking {
            self.news.handshake = Some(false);
        }
        self.closing = Some(CloseWhy::Tls);
    }

    /// What the connection speaks, for logs and metrics.
    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// True when the transport has something to write that the core did not queue: TLS
    /// records (the handshake's, an alert).
    pub fn transport_wants_write(&mut self) -> bool {
        self.transport.tls().is_some_and(|t| t.has_records())
    }

    /// Queues TLS's `close_notify` before a close (no-op for the plain stream), once all
    /// output is written: a client drops whatever comes after it.
    pub fn say_goodbye(&mut self) {
        if self.pending_output() > 0 {
            return;
        }
        if let Some(tls) = self.transport.tls() {
            tls.close();
        }
    }

    /// The next complete frame in the input buffer, as a range of [`input`](Self::input);
    /// none while the transport is not known yet.
    pub fn next_frame(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        if !self.transport.frames_ready() {
            return Ok(None);
        }
        self.scanner.next_frame(&self.input)
    }

    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// The nesting depth of the frame last returned by [`next_frame`](Self::next_frame).
    pub fn frame_depth(&self) -> u32 {
        self.scanner.deepest()
    }

    /// Drops the frames already handed out from the input buffer.
    pub fn compact(&mut self) {
        let keep = self.scanner.keep_from();
        if keep == self.input.len() {
            // Empty buffers are released: idle connections hold no buffer memory.
            self.input = Vec::new();
        } else {
            self.input.drain(..keep);
        }
        self.scanner.consumed(keep);
    }

    /// Appends answer lines to send, as the transport frames them; `delivers` is the
    /// personal message they carry, if any. Returns the bytes appended (framing included,
    /// for the output budget), or `None` when the unsent output would pass `cap`.
    pub fn queue(&mut self, bytes: &[u8], cap: usize, delivers: Option<i64>) -> Option<usize> {
        if self.output.len() - self.written + bytes.len() > cap {
            return None;
        }
        if self.output.capacity() == 0 {
            // The buffer was released when it emptied; start it at a size that holds a
            // burst (a fan-out queues hundreds of messages at once) instead of doubling up
            // from the first message's size, copying at every step.
            self.output.reserve(bytes.len().max(OUTPUT_START));
        }
        let start = self.output.len();
        self.transport.encode(bytes, &mut self.output);
        let added = self.output.len() - start;
        self.queued_total += added as u64;
        if let Some(id) = delivers {
            self.marks.push_back((self.queued_total, id));
        }
        Some(added)
    }

    /// The transport answered on its own (HTTP, WebSocket control) from output offset
    /// `start` on: those bytes count as queued, so that the delivery marks stay offsets of
    /// the stream written. They are outside the output cap: each is bounded by the request
    /// that caused it.
    fn transport_wrote(&mut self, start: usize) {
        let added = self.output.len() - start;
        self.queued_total += added as u64;
        self.transport_bytes += added;
    }

    /// The bytes the transport queued on its own since the last call, for the loop's
    /// output budget (which counts every byte a connection holds, whoever queued it).
    pub fn take_transport_bytes(&mut self) -> usize {
        std::mem::take(&mut self.transport_bytes)
    }

    /// The id of the last personal message whose bytes have all been written since the
    /// last call, and how many messages that covers.
    pub fn take_delivered(&mut self) -> Option<(i64, u64)> {
        let mut last = None;
        let mut count = 0;
        while let Some(&(end, id)) = self.marks.front() {
            if end > self.written_total {
                break;
            }
            last = Some(id);
            count += 1;
            self.marks.pop_front();
        }
        last.map(|id| (id, count))
    }

    /// Bytes written to the socket since the connection opened.
    pub fn bytes_written(&self) -> u64 {
        self.written_total
    }

    /// Bytes the output buffer holds allocated.
    pub fn output_capacity(&self) -> usize {
        self.output.capacity()
    }

    /// Unsent bytes.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// Writes as much as the socket takes. `Ok(true)` when everything was written.
    pub fn flush(&mut self) -> io::Result<bool> {
        if let Some(tls) = self.transport.tls() {
            // Bytes count as written once their records are: rustls holds at most one chunk
            // of ours, so the output cap sees (nearly) all that waits.
            loop {
                let mut delivered = 0;
                let drained = tls.write_records(&mut self.stream, &mut delivered)?;
                self.written += delivered;
                self.written_total += delivered as u64;
                if !drained || self.written == self.output.len() {
                    break;
                }
                let end = (self.written + TLS_CHUNK).min(self.output.len());
                if tls.encrypt(&self.output[self.written..end])? == 0 {
                    break;
                }
            }
        } else {
            while self.written < self.output.len() {
                match self.stream.write(&self.output[self.written..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.written += n;
                        self.written_total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if self.written == self.output.len() {
            self.written = 0;
            self.marks.shrink_to_fit();
            self.output = Vec::new();
            return Ok(!self.transport.tls().is_some_and(|t| t.has_records()));
        }
        // Keep the unsent tail at the front once it is the smaller part.
        if self.written > self.output.len() / 2 {
            self.output.drain(..self.written);
            self.written = 0;
            // And do not keep the room of a big answer for a small tail: a reader that
            // stopped would hold it all (40 of them held 80 MB for 16 MB of output).
            let len = self.output.len();
            if self.output.capacity() >= SHRINK_FROM && self.output.capacity() > 2 * len {
                self.output.shrink_to(len + len / 2);
            }
        }
        Ok(false)
    }
}
