//! TLS inside the loop: the certificate pair (loaded at start, reloaded on SIGHUP) and one
//! connection's rustls session, driven by the same readiness as a plain socket.
//!
//! rustls does no I/O of its own here: the connection reads socket bytes, hands them to
//! [`TlsLink::receive`], which appends the plaintext to the connection's input for the same
//! frame scanner; output goes the other way through [`TlsLink::encrypt`] and
//! [`TlsLink::write_records`]. No thread per connection, no second runtime. The crypto
//! provider is `ring`, which needs only a C compiler to build (README, Dependencies).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
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
    Io(io::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Protocol(e) => write!(f, "{e}"),
            TlsError::Io(e) => write!(f, "{e}"),
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

/// One connection's TLS session. Boxed by the connection: most of its size is rustls's
/// own state, which a plain connection does not pay for.
pub struct TlsLink {
    session: ServerConnection,
    /// Plaintext handed to rustls whose records are not all written yet.
    in_flight: usize,
}

impl TlsLink {
    pub fn new(config: &Arc<ServerConfig>) -> Result<TlsLink, TlsError> {
        let session = ServerConnection::new(Arc::clone(config)).map_err(TlsError::Protocol)?;
        Ok(TlsLink { session, in_flight: 0 })
    }

    /// Decrypts socket bytes, appending the plaintext to `plain`. On `Err`, rustls may
    /// have queued an alert: write the records before closing.
    pub fn receive(&mut self, mut bytes: &[u8], plain: &mut Vec<u8>) -> Result<Received, TlsError> {
        let was_handshaking = self.session.is_handshaking();
        let mut closed = false;
        while !bytes.is_empty() {
            match self.session.read_tls(&mut bytes) {
                // After close_notify rustls takes nothing more; what follows is ignored.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
            let state = self.session.process_new_packets().map_err(TlsError::Protocol)?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                self.session.reader().read_exact(&mut plain[start..]).map_err(TlsError::Io)?;
            }
            closed |= state.peer_has_closed();
        }
        Ok(Received { closed, handshake_done: was_handshaking && !self.session.is_handshaking() })
    }

    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// True when records (handshake, data or an alert) wait to be written.
    pub fn has_records(&self) -> bool {
        self.session.wants_write()
    }

    /// Plaintext handed over and not yet written to the socket in full.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Writes waiting records until the socket would block. `Ok(true)` when none is left,
    /// and then the plaintext in flight is delivered: returns it as `delivered`.
    pub fn write_records(&mut self, socket: &mut impl Write, delivered: &mut usize) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        *delivered = std::mem::take(&mut self.in_flight);
        Ok(true)
    }

    /// Encrypts a chunk of plaintext into records, once the handshake is done and no
    /// records wait (so rustls never holds more than one chunk of ours); returns how many
    /// bytes it took.
    pub fn encrypt(&mut self, plain: &[u8]) -> io::Result<usize> {
        if self.session.is_handshaking() || self.session.wants_write() || plain.is_empty() {
            return Ok(0);
        }
        let n = self.session.writer().write(plain)?;
        self.in_flight += n;
        Ok(n)
    }

    /// Queues `close_notify` (written by the last flush before the close).
    pub fn close(&mut self) {
        self.session.send_close_notify();
    }

    /// The application protocol agreed in the handshake, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }
}
