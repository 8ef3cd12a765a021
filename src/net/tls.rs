//! TLS inside the loop: the certificate pair (loaded at start, reloaded on SIGHUP) and one
//! connection's rustls session, driven by the same readiness as a plain socket.
//!
//! rustls does no I/O of its own here: the connection reads socket bytes, hands them to
//! [`TlsLink::receive`], which appends the plaintext to the connection's input for the same
//! frame scanner; output goes the other way through [`TlsLink::encrypt`] and
//! [`TlsLink::write_records`]. No thread per connection, no second runtime. The crypto
//! provider is `ring`, which needs only a C compiler to build (README, Dependencies).
//! Never touches the socket except to write records it is handed.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The application protocols offered when a client asks (PROTOCOL.md section 13).
const ALPN: [&[u8]; 2] = [b"natter", b"http/1.1"];

/// Why a certificate pair did not load.
#[derive(Debug)]
pub struct LoadError(String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The certificate chain and key files, and the server configuration made from them.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ServerConfig>,
}

impl TlsFiles {
    /// Loads the PEM chain and key (RSA, ECDSA or Ed25519) and checks they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, LoadError> {
        let config = server_config(cert, key)?;
        Ok(TlsFiles { cert: cert.to_owned(), key: key.to_owned(), config })
    }

    /// Loads the files again; on error the pair in use stays. Connections already open
    /// keep the configuration they started with.
    pub fn reload(&mut self) -> Result<(), LoadError> {
        self.config = server_config(&self.cert, &self.key)?;
        Ok(())
    }

    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, LoadError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| LoadError(format!("--tls-cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(LoadError(format!("--tls-cert {}: no certificate in the file", cert.display())));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| LoadError(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| LoadError(format!("--tls-cert and --tls-key do not make a pair: {e}")))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // No session tickets or resumption cache to keep per server: a chat connection lives
    // long, and a full handshake costs less than the state would.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Why a TLS session ended abnormally.
#[derive(Debug)]
pub enum TlsError {
    /// Not TLS, a protocol violation, or an alert from the peer.
    Protocol(rustls::Error),
    /// A record could not be encrypted (rustls refused it).
    Encrypt(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Protocol(e) => write!(f, "{e}"),
            TlsError::Encrypt(e) => write!(f, "{e}"),
        }
    }
}

/// What [`TlsLink::receive`] found besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The peer sent `close_notify`: it will send nothing more.
    pub closed: bool,
    /// The handshake finished with these bytes.
    pub handshake_done: bool,
}

/// One connection's TLS session, on rustls's unbuffered API: the buffers are ours, so an
/// idle session holds none (the buffered API keeps a 4 KiB read buffer per connection),
/// and records are read from and written to them without further copies.
pub struct TlsLink {
    session: UnbufferedServerConnection,
    /// Records received and not yet processed (a partial one, usually nothing).
    incoming: Vec<u8>,
    /// Records to write to the socket, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext encrypted into `outgoing` whose records are not all written yet.
    in_flight: usize,
    /// Application data may be sent: the handshake is done.
    established: bool,
    /// rustls reported an error: the session is over, and is never processed again (it
    /// would report the same bad bytes a second time).
    failed: bool,
}

/// Unprocessed TLS input a session may hold: the largest handshake message rustls accepts
/// (64 KiB) and one full record.
const MAX_INCOMING: usize = 0x10000 + 18_437;
/// Bytes a record adds to its plaintext at most (header, tag, content type, with room).
const RECORD_OVERHEAD: usize = 64;
/// The largest plaintext of one record.
const RECORD_PLAINTEXT: usize = 16 * 1024;

impl TlsLink {
    pub fn new(config: &Arc<ServerConfig>) -> Result<TlsLink, TlsError> {
        let session = UnbufferedServerConnection::new(Arc::clone(config)).map_err(TlsError::Protocol)?;
        Ok(TlsLink {
            session,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            in_flight: 0,
            established: false,
            failed: false,
        })
    }

    /// Decrypts socket bytes, appending the plaintext to `plain`. After an `Err` the session
    /// is over.
    pub fn receive(&mut self, bytes: &[u8], plain: &mut Vec<u8>) -> Result<Received, TlsError> {
        let was_established = self.established;
        self.incoming.extend_from_slice(bytes);
        if self.incoming.len() > MAX_INCOMING {
            // rustls holds back a handshake message until it is whole (up to 64 KiB, in
            // records as small as one byte): more than that waiting is an attack.
            self.failed = true;
            return Err(TlsError::Encrypt("TLS input waiting past 64 KiB plus a record".to_owned()));
        }
        let result = self.process(Some(plain));
        if self.incoming.is_empty() {
            // Nothing of it is held by rustls (an empty buffer has no partial record).
            self.incoming = Vec::new();
        }
        let closed = result?;
        Ok(Received { closed, handshake_done: !was_established && self.established })
    }

    /// Runs rustls over the incoming records until it needs more bytes or is ready to
    /// send application data; handshake records and alerts go to `outgoing`, plaintext to
    /// `plain`. True when the peer sent `close_notify`.
    fn process(&mut self, mut plain: Option<&mut Vec<u8>>) -> Result<bool, TlsError> {
        if self.failed {
            return Err(TlsError::Encrypt("the session already failed".to_owned()));
        }
        let mut closed = false;
        loop {
            let UnbufferedStatus { discard, state } = self.session.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    // rustls is not called again: it would deframe the same bad bytes a
                    // second time (and panic in a debug build sending a second alert), and
                    // its record of the buffer forbids dropping them. So no alert goes out:
                    // the peer sees the connection close.
                    self.failed = true;
                    return Err(TlsError::Protocol(e));
                }
            };
            let mut stop = false;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let Ok(record) = record else { continue };
                        if let Some(plain) = plain.as_deref_mut() {
                            plain.extend_from_slice(record.payload);
                        }
                    }
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    // Not offered (no 0-RTT); drop whatever claims to be it.
                    while early.next_record().is_some() {}
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let start = self.outgoing.len();
                    let mut room = 4096;
                    loop {
                        self.outgoing.resize(start + room, 0);
                        match encode.encode(&mut self.outgoing[start..]) {
                            Ok(n) => {
                                self.outgoing.truncate(start + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(e)) => room = e.required_size,
                            Err(e) => {
                                self.outgoing.truncate(start);
                                return Err(TlsError::Encrypt(e.to_string()));
                            }
                        }
                    }
                }
                // The encoded records wait in `outgoing`, in order, for the next flush.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => closed = true,
                ConnectionState::WriteTraffic(_) => {
                    self.established = true;
                    stop = true;
                }
                ConnectionState::BlockedHandshake | ConnectionState::Closed => stop = true,
                _ => stop = true,
            }
            self.incoming.drain(..discard);
            if stop {
                return Ok(closed);
            }
        }
    }

    pub fn is_handshaking(&self) -> bool {
        !self.established
    }

    /// True when records (handshake, data or an alert) wait to be written.
    pub fn has_records(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// Writes waiting records until the socket would block. `Ok(true)` when none is left;
    /// then the plaintext in flight is delivered, and is returned in `delivered`.
    pub fn write_records(&mut self, socket: &mut impl Write, delivered: &mut usize) -> io::Result<bool> {
        while self.sent < self.outgoing.len() {
            match socket.write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // All written: an idle session keeps no buffer.
        self.outgoing = Vec::new();
        self.sent = 0;
        *delivered = std::mem::take(&mut self.in_flight);
        Ok(true)
    }

    /// Encrypts a chunk of plaintext into records, once the handshake is done and no
    /// records wait (so that at most one chunk is held twice); returns how many bytes it
    /// took.
    pub fn encrypt(&mut self, plain: &[u8]) -> io::Result<usize> {
        if self.failed || !self.established || self.has_records() || plain.is_empty() {
            return Ok(0);
        }
        let UnbufferedStatus { discard, state } = self.session.process_tls_records(&mut self.incoming);
        let Ok(ConnectionState::WriteTraffic(mut write)) = state else {
            // Not ready to send after all (rustls has records of its own to emit first);
            // the next read or flush comes back here.
            return Ok(0);
        };
        let room = plain.len() + (plain.len() / RECORD_PLAINTEXT + 1) * RECORD_OVERHEAD;
        self.outgoing.clear();
        self.outgoing.resize(room, 0);
        let n = match write.encrypt(plain, &mut self.outgoing) {
            Ok(n) => n,
            Err(EncryptError::InsufficientSize(e)) => {
                self.outgoing.resize(e.required_size, 0);
                write.encrypt(plain, &mut self.outgoing).map_err(|e| io::Error::other(e.to_string()))?
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        self.outgoing.truncate(n);
        self.sent = 0;
        self.incoming.drain(..discard);
        self.in_flight = plain.len();
        Ok(plain.len())
    }

    /// Queues `close_notify` (written by the last flush before the close).
    pub fn close(&mut self) {
        if self.failed || !self.established {
            return;
        }
        let UnbufferedStatus { discard, state } = self.session.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::WriteTraffic(mut write)) = state {
            let start = self.outgoing.len();
            self.outgoing.resize(start + RECORD_OVERHEAD, 0);
            match write.queue_close_notify(&mut self.outgoing[start..]) {
                Ok(n) => self.outgoing.truncate(start + n),
                Err(_) => self.outgoing.truncate(start),
            }
        }
        self.incoming.drain(..discard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_session_is_small() {
        // The figure behind README's "idle TLS connection" memory: the session itself,
        // boxed, with no buffers while idle.
        assert!(std::mem::size_of::<TlsLink>() < 1400, "{}", std::mem::size_of::<TlsLink>());
    }
}
