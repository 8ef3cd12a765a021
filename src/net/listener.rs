//! The listening socket: accepting, and pausing accepts when the process is out of
//! descriptors instead of spinning on the error.
//!
//! Hands out accepted sockets only; deciding whether to keep one (the connection caps) and
//! registering it is the loop's.

use super::resume::Resume;
use mio::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;

/// How long accepting pauses after an error such as EMFILE.
const ACCEPT_PAUSE_MS: u64 = 100;
/// At most one warning about failing accepts per this long.
const WARN_EVERY_MS: u64 = 10_000;

pub(super) struct Listener {
    /// None once shutdown has begun.
    pub socket: Option<TcpListener>,
    last_warning_ms: Option<u64>,
}

impl Listener {
    pub fn new(socket: TcpListener) -> Listener {
        Listener { socket: Some(socket), last_warning_ms: None }
    }

    /// The next waiting connection; `None` when there is none, accepting is paused or has
    /// just been paused by an error (`resume` brings the loop back to it).
    pub fn next(&mut self, now_ms: u64, resume: &mut Resume) -> Option<(TcpStream, SocketAddr)> {
        if resume.accepting_paused() {
            return None;
        }
        let socket = self.socket.as_ref()?;
        loop {
            match socket.accept() {
                Ok(s) => return Some(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    if self.last_warning_ms.is_none_or(|t| now_ms >= t + WARN_EVERY_MS) {
                        log::warn!("accept failed ({e}); pausing accepts for {ACCEPT_PAUSE_MS} ms");
                        self.last_warning_ms = Some(now_ms);
                    }
                    resume.pause_accepting_until(now_ms + ACCEPT_PAUSE_MS);
                    return None;
                }
            }
        }
    }
}
