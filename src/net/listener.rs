//! The listening socket and what it offers: accepting, pausing accepts when the process
//! is out of descriptors instead of spinning on the error, the TLS certificate pair
//! (reloaded on SIGHUP), `--require-tls` and the `--proxy-from` peers.
//!
//! Hands out accepted sockets only; deciding whether to keep one (the connection caps) and
//! registering it is the loop's.

use super::resume::Resume;
use super::tls::TlsFiles;
use super::transport::Offer;
use crate::cidr::Cidr;
use mio::net::{TcpListener, TcpStream};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// How long accepting pauses after an error such as EMFILE.
const ACCEPT_PAUSE_MS: u64 = 100;
/// At most one warning about failing accepts per this long.
const WARN_EVERY_MS: u64 = 10_000;

pub(super) struct Listener {
    /// None once shutdown has begun.
    pub socket: Option<TcpListener>,
    last_warning_ms: Option<u64>,
    /// What a new connection may become.
    pub offer: Offer,
    tls: Option<TlsFiles>,
    proxy_from: Vec<Cidr>,
}

impl Listener {
    pub fn new(
        socket: TcpListener,
        tls: Option<TlsFiles>,
        require_tls: bool,
        proxy_from: Vec<Cidr>,
        web: super::http::WebConfig,
    ) -> Listener {
        let offer = Offer { tls: tls.as_ref().map(|t| t.config().clone()), require_tls, web: std::sync::Arc::new(web) };
        Listener { socket: Some(socket), last_warning_ms: None, offer, tls, proxy_from }
    }

    /// True when `peer` may send a PROXY header (it is in `--proxy-from`).
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.proxy_from.iter().any(|c| c.contains(peer))
    }

    /// SIGHUP: loads the certificate pair again for new handshakes; a pair that does not
    /// load leaves the old one in use and logs one error.
    pub fn reload_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            log::info!("SIGHUP: no TLS certificate configured, nothing to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => {
                self.offer.tls = Some(tls.config().clone());
                log::info!("SIGHUP: TLS certificate reloaded");
            }
            Err(e) => log::error!("SIGHUP: TLS certificate not reloaded, the old one stays: {e}"),
        }
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
