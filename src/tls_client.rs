//! The client side of TLS, for natter-cli and natter-bench: a certificate check against the
//! system's roots or a given CA, a handshake finished before the caller's loop starts (so a
//! failed verification is one clear error), and then a TLS stream that behaves as a
//! non-blocking socket does (`WouldBlock` when it cannot go on), for [`LineClient`].
//!
//! Never serves (the server's TLS is `net/tls.rs`), never names mio, never blocks once
//! the handshake is done.
//!
//! [`LineClient`]: crate::line_client::LineClient

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The client configuration: verify against `ca` (a PEM file: a private CA or the server's
/// self-signed certificate) or, without one, the system's CA roots. Offers ALPN `natter`.
pub fn config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|c| c.collect())
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("--ca {}: no usable certificate in the file", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no CA certificates found on this system; give one with --ca FILE".to_owned());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"natter".to_vec()];
    Ok(Arc::new(config))
}

/// The name to verify the certificate against (and send as SNI): the host part of
/// `host:port`, `[v6]:port` or an address.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a name to verify a certificate for: {e}"))
}

/// A TLS session over a socket, non-blocking once [`connect`] has finished the handshake.
pub struct TlsStream<S> {
    tls: ClientConnection,
    socket: S,
}

impl<S> TlsStream<S> {
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// For registering the socket with the caller's poll.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// The same session over the socket turned into another type (a mio stream, say).
    pub fn map_socket<T>(self, f: impl FnOnce(S) -> T) -> TlsStream<T> {
        TlsStream { tls: self.tls, socket: f(self.socket) }
    }

    /// The application protocol the server chose, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }
}

/// Connects to `addr`, finishes the handshake within `timeout` and returns the session
/// over a non-blocking socket. A failed verification is an error naming the host.
pub fn connect(addr: &str, timeout: Duration, config: &Arc<ClientConfig>) -> io::Result<TlsStream<TcpStream>> {
    let name = server_name(addr).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    let mut socket = None;
    for a in addr.to_socket_addrs().map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                socket = Some(s);
                break;
            }
            Err(e) => last = io::Error::new(e.kind(), format!("cannot connect to {a}: {e}")),
        }
    }
    let mut socket = socket.ok_or(last)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    socket.set_nodelay(true)?;
    let mut tls = ClientConnection::new(Arc::clone(config), name.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut socket).map_err(|e| {
            let why = match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(tls_error) => explain(tls_error, &name.to_str()),
                None => e.to_string(),
            };
            io::Error::new(e.kind(), format!("TLS with {}: {why}", name.to_str()))
        })?;
    }
    socket.set_nonblocking(true)?;
    Ok(TlsStream { tls, socket })
}

/// A handshake error in words a user can act on.
fn explain(e: &rustls::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("the server's certificate is not valid for {host}")
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".to_owned()
        }
        rustls::Error::InvalidCertificate(_) => "the server's certificate is not signed by a CA this client trusts \
             (for a private CA or a self-signed certificate, give it with --ca FILE)"
            .to_owned(),
        other => other.to_string(),
    }
}

impl<S: Read + Write> TlsStream<S> {
    /// Writes the records rustls holds; `WouldBlock` when the socket cannot take them all.
    fn write_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.socket)?;
        }
        Ok(())
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed without close_notify: the end of the stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.tls.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            self.tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Records rustls answers with (a key update): out with the next write if the
            // socket is full now.
            match self.write_records() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    /// Takes plaintext only when no records wait, so that what rustls holds stays bounded
    /// and a full socket shows as `WouldBlock`, as on a plain socket.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_records()?;
        let n = self.tls.writer().write(buf)?;
        match self.write_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_records()
    }
}

/// A plain or a TLS connection, as one stream type for [`LineClient`].
///
/// [`LineClient`]: crate::line_client::LineClient
pub enum Link<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S> Link<S> {
    /// For registering the socket with the caller's poll.
    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Link::Plain(s) => s,
            Link::Tls(t) => t.socket_mut(),
        }
    }
}

impl<S: Read + Write> Read for Link<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(t) => t.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Link<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(t) => t.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_checked_is_the_host_of_the_address() {
        assert_eq!(server_name("chat.example.org:5050").unwrap().to_str(), "chat.example.org");
        assert_eq!(server_name("localhost").unwrap().to_str(), "localhost");
        assert_eq!(server_name("127.0.0.1:5050").unwrap().to_str(), "127.0.0.1");
        assert_eq!(server_name("[::1]:5050").unwrap().to_str(), "::1");
        assert!(server_name("bad name:1").is_err());
    }
}
