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
    /// An anonymous connection idle this long (no request answered other than `invalid`)
    /// is closed; not before its pending OTP expires.
    pub auth_timeout_ms: u64,
    /// A mailed OTP is valid this long; `verify` after it is `failed`.
    pub otp_lifetime_ms: u64,
    /// Wrong OTPs allowed before the pending registration is dropped.
    pub otp_tries: u32,
    /// OTP mails per address per hour; more are `failed` type `otp`.
    pub otp_mails_per_hour: u32,
    /// Failed logins per name per minute; more are `failed` "too many attempts".
    pub login_fails_per_name: u32,
    /// Failed logins per IP address per minute; more are `failed` "too many attempts".
    pub login_fails_per_ip: u32,
    /// A call rings this long before both parties get `time`.
    pub call_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_timeout_ms: 60_000,
            otp_lifetime_ms: 600_000,
            otp_tries: 5,
            otp_mails_per_hour: 5,
            login_fails_per_name: 5,
            login_fails_per_ip: 20,
            call_timeout_ms: 30_000,
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
    /// Frames per second per connection (token bucket, burst twice that); when the bucket
    /// is empty the loop stops reading that connection until tokens return. `None`: no limit.
    pub msg_rate: Option<u32>,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits { max_frame: 64 * 1024, max_output: 8 << 20, max_connections: 10_000, msg_rate: None }
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

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The relay's UDP address; `None`: the TCP listener's address and port.
    pub udp: Option<SocketAddr>,
    pub db: PathBuf,
    pub durability: Durability,
    pub mail: MailTarget,
    pub mail_from: String,
    /// The address put in `accept`; `None`: the callee connection's local address.
    pub public_ip: Option<IpAddr>,
    pub limits: Limits,
    pub net: NetLimits,
    pub hash: HashParams,
    /// Where `/metrics` is served; `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// Voice datagrams per second per party; more are dropped.
    pub relay_rate: u32,
    /// Threads hashing and checking passwords (mail has its own thread).
    pub hash_threads: usize,
}
