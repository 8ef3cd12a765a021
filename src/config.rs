//! The server's settings, already checked: what the command line resolves to.
//!
//! Every limit says what happens when it is exceeded (its overflow policy), because a limit
//! without a policy is a bug waiting for a flood.

use crate::password::HashParams;
use crate::store::Durability;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Limits the chat core enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// An anonymous connection is closed this long after it opened (or logged out) unless
    /// it logs in; requests do not extend it; not before its pending OTP expires.
    pub auth_timeout_ms: u64,
    /// A mailed OTP is valid this long; `verify` after it is `failed`.
    pub otp_lifetime_ms: u64,
    /// Wrong OTPs allowed before the pending registration is dropped.
    pub otp_tries: u32,
    /// OTP mails per email address per hour, counted when a request is accepted; more are
    /// `failed` type `otp`.
    pub otp_mails_per_hour: u32,
    /// OTP mails per client address per hour, counted the same way; more are `failed`.
    pub otp_mails_per_ip: u32,
    /// Failed logins per name and client address per minute; more are `failed` "too many
    /// attempts" (only from that address: nobody can lock a user out from another).
    pub login_fails_per_name: u32,
    /// Failed logins per client address per minute; more are `failed` "too many attempts".
    pub login_fails_per_ip: u32,
    /// Failed logins per name per hour from all addresses together (distributed guessing);
    /// more are `failed` "too many attempts".
    pub login_fails_per_name_hourly: u32,
    /// A call rings this long before both parties get `time`.
    pub call_timeout_ms: u64,
    /// Calls one user may place per minute; more are `failed` type `voice`.
    pub call_attempts_per_minute: u32,
    /// Connections from one client address; more are accepted and closed at once.
    pub max_connections_per_ip: u32,
    /// Anonymous connections from one client address; more are accepted and closed at once.
    pub max_anonymous_per_ip: u32,
    /// Members of one group, its owner included; more are `failed`.
    pub max_group_members: usize,
    /// Groups one user may be in; joining one more is `failed`.
    pub max_groups_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_timeout_ms: 60_000,
            otp_lifetime_ms: 600_000,
            otp_tries: 5,
            otp_mails_per_hour: 5,
            otp_mails_per_ip: 20,
            login_fails_per_name: 5,
            login_fails_per_ip: 20,
            login_fails_per_name_hourly: 100,
            call_timeout_ms: 30_000,
            call_attempts_per_minute: 10,
            max_connections_per_ip: 256,
            max_anonymous_per_ip: 32,
            max_group_members: 1000,
            max_groups_per_user: 500,
        }
    }
}

/// Limits the event loop enforces on each connection.
#[derive(Debug, Clone)]
pub struct NetLimits {
    /// Largest frame; a bigger one is answered `invalid` and the connection closed.
    pub max_frame: usize,
    /// Unsent output one connection may hold; past it the connection is closed as a slow
    /// consumer (its undelivered personal messages stay stored).
    pub max_output: usize,
    /// Open connections; further ones are accepted and closed at once.
    pub max_connections: usize,
    /// Unsent output of all connections together; past it, after a flush, the connections
    /// holding the most are closed as slow consumers until the total is back under it
    /// (their undelivered personal messages stay stored).
    pub max_output_total: usize,
    /// Frames per second per connection (token bucket, burst twice that); when the bucket
    /// is empty the loop stops reading that connection until tokens return. `None`: no limit.
    pub msg_rate: Option<u32>,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_frame: 64 * 1024,
            max_output: 8 << 20,
            max_connections: 10_000,
            max_output_total: 128 << 20,
            msg_rate: None,
        }
    }
}

/// Where OTP mails go.
#[derive(Debug, Clone)]
pub enum MailTarget {
    /// One `.eml` file per mail in this folder.
    Outbox(PathBuf),
    /// An SMTP server, as a lettre URL (`smtp://`, `smtps://`, with credentials).
    Smtp(String),
}

/// `--tls-cert` and `--tls-key`: PEM files.
#[derive(Debug, Clone)]
pub struct TlsFilesConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The relay's UDP address; `None`: the TCP listener's address and port.
    pub udp: Option<SocketAddr>,
    pub db: PathBuf,
    pub durability: Durability,
    /// SQLite's page cache, MiB (`--db-cache-mib`).
    pub db_cache_mib: u32,
    /// SQLite's memory-mapped reads, MiB of the file (`--db-mmap-mib`; 0: off).
    pub db_mmap_mib: u32,
    pub mail: MailTarget,
    pub mail_from: String,
    /// The address put in `accept`; `None`: the callee connection's local address.
    pub public_ip: Option<IpAddr>,
    pub limits: Limits,
    pub net: NetLimits,
    pub hash: HashParams,
    /// Where `/metrics` is served; `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// The certificate pair for TLS on the listening port; `None`: no TLS.
    pub tls: Option<TlsFilesConfig>,
    /// Refuse the plain stream from non-loopback clients.
    pub require_tls: bool,
    /// Peers whose PROXY headers are believed.
    pub proxy_from: Vec<crate::cidr::Cidr>,
    /// Origins besides the server's own allowed to open a WebSocket.
    pub ws_origins: Vec<String>,
    /// Voice datagrams per second per party; more are dropped.
    pub relay_rate: u32,
    /// Threads hashing and checking passwords (mail has its own thread).
    pub hash_threads: usize,
}
