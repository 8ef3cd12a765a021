//! The command line: `natter` runs the server, `natter user ...` administers accounts.
//!
//! Flag names are a contract (scripts and tests outside the repo use them). Every server
//! flag can also come from the environment as `NATTER_<FLAG>`; a flag given on the command
//! line wins over the environment.

use crate::config::{Config, Limits, MailTarget, NetLimits, TlsFilesConfig};
use crate::password::HashParams;
use crate::store::Durability;
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "natter", version, about = "A single-threaded chat server for one host", max_term_width = 100)]
// A flag given twice takes its last value, so wrappers can append overrides.
#[command(args_override_self = true)]
pub struct Cli {
    /// A TOML file with the same keys as the flags (e.g. `listen = "0.0.0.0:5050"`);
    /// flags, then NATTER_* variables, win over it.
    #[arg(long, env = "NATTER_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// SQLite database file (created when missing).
    #[arg(long, env = "NATTER_DB", default_value = "./natter.db", global = true)]
    pub db: PathBuf,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage accounts directly in the database (works while a server runs on it).
    #[command(subcommand)]
    User(UserCommand),
    /// Write a consistent copy of the database to FILE (safe while a server runs on it).
    Backup {
        /// Where to write the copy: never the database or one of its -wal, -shm, -journal
        /// or .lock files; an existing file only with --force.
        #[arg(long)]
        to: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a verified account.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
        /// The plain password; it is stored as argon2id over its md5, as the protocol does.
        /// Better left out: it is then NATTER_PASSWORD, or asked without echo on a terminal,
        /// or the first line of stdin (a flag lands in the shell history and in `ps`).
        #[arg(long)]
        password: Option<String>,
    },
    /// List every account.
    List,
    /// Delete an account and its data.
    Del {
        /// The account's email.
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TCP address to listen on (port 0: any free port; the log says which).
    #[arg(long, env = "NATTER_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,

    /// UDP address of the voice relay [default: the --listen address and bound port].
    #[arg(long, env = "NATTER_UDP")]
    pub udp: Option<SocketAddr>,

    /// Folder that receives every OTP mail as an .eml file [default: ./outbox without --smtp-url].
    #[arg(long, env = "NATTER_MAIL_OUTBOX")]
    pub mail_outbox: Option<PathBuf>,

    /// Send OTP mails through this SMTP server (smtp://host:port, smtps://user:pass@host).
    #[arg(long, env = "NATTER_SMTP_URL", conflicts_with = "mail_outbox")]
    pub smtp_url: Option<String>,

    /// Sender address of OTP mails.
    #[arg(long, env = "NATTER_MAIL_FROM", default_value = "natter <natter@localhost>")]
    pub mail_from: String,

    /// normal: survives a crash of the process; full: also a crash of the machine.
    #[arg(long, env = "NATTER_DURABILITY", value_enum, default_value = "normal")]
    pub durability: Durability,

    /// SQLite's page cache in MiB: what of the database stays in the server's memory.
    #[arg(long, env = "NATTER_DB_CACHE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub db_cache_mib: u32,

    /// MiB of the database file SQLite reads through a memory map (0: off).
    #[arg(long, env = "NATTER_DB_MMAP_MIB", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1048576))]
    pub db_mmap_mib: u32,

    /// Address given to callees in `accept` [default: the local address of their connection].
    #[arg(long, env = "NATTER_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,

    /// Seconds a call rings before it times out.
    #[arg(long, env = "NATTER_CALL_TIMEOUT", default_value_t = 30)]
    pub call_timeout: u64,

    /// Largest frame in bytes; bigger ones are refused and the connection closed.
    #[arg(long, env = "NATTER_MAX_FRAME", default_value_t = 65536)]
    pub max_frame: usize,

    /// Open connections at most; more are accepted and closed at once.
    #[arg(long, env = "NATTER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Unsent bytes one connection may hold before it is closed as a slow consumer.
    #[arg(long, env = "NATTER_MAX_OUTPUT", default_value_t = 8 << 20)]
    pub max_output: usize,

    /// Connections from one client address (IPv6: one /64); more are accepted and closed.
    #[arg(long, env = "NATTER_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: u32,

    /// Anonymous connections from one client address; more are accepted and closed.
    #[arg(long, env = "NATTER_MAX_ANONYMOUS_PER_IP", default_value_t = 32)]
    pub max_anonymous_per_ip: u32,

    /// OTP mails per email address per hour.
    #[arg(long, env = "NATTER_OTP_MAILS_PER_ADDRESS", default_value_t = 5)]
    pub otp_mails_per_address: u32,

    /// OTP mails per client address per hour.
    #[arg(long, env = "NATTER_OTP_MAILS_PER_IP", default_value_t = 20)]
    pub otp_mails_per_ip: u32,

    /// Calls one user may place per minute.
    #[arg(long, env = "NATTER_CALL_ATTEMPTS", default_value_t = 10)]
    pub call_attempts: u32,

    /// Members of one group, its owner included.
    #[arg(long, env = "NATTER_MAX_GROUP_MEMBERS", default_value_t = 1000)]
    pub max_group_members: usize,

    /// Groups one user may be in.
    #[arg(long, env = "NATTER_MAX_GROUPS_PER_USER", default_value_t = 500)]
    pub max_groups_per_user: usize,

    /// Unsent bytes all connections together may hold; past it the connections holding the
    /// most are closed as slow consumers.
    #[arg(long, env = "NATTER_MAX_OUTPUT_TOTAL", default_value_t = 128 << 20)]
    pub max_output_total: usize,

    /// Seconds an anonymous connection may stay open without logging in (from its start).
    #[arg(long, env = "NATTER_AUTH_TIMEOUT", default_value_t = 60)]
    pub auth_timeout: u64,

    /// Seconds a mailed OTP stays valid.
    #[arg(long, env = "NATTER_OTP_LIFETIME", default_value_t = 600)]
    pub otp_lifetime: u64,

    /// Frames per second per connection (burst twice that) [default: no limit].
    #[arg(long, env = "NATTER_MSG_RATE")]
    pub msg_rate: Option<u32>,

    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(long, env = "NATTER_METRICS")]
    pub metrics: Option<SocketAddr>,

    /// PEM certificate chain for TLS on the listening port (with --tls-key) [default: no TLS].
    #[arg(long, env = "NATTER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (RSA, ECDSA or Ed25519) of --tls-cert.
    #[arg(long, env = "NATTER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Refuse the plain (non-TLS) stream from clients that are not on loopback.
    #[arg(long, env = "NATTER_REQUIRE_TLS", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub require_tls: bool,

    /// Peers whose PROXY protocol headers (v1, v2) are believed: CIDR[,CIDR...] [default: none].
    #[arg(long, env = "NATTER_PROXY_FROM")]
    pub proxy_from: Option<crate::cidr::CidrList>,

    /// Origins (e.g. https://chat.example.org) whose pages may open a WebSocket besides the
    /// server's own [default: the same host only].
    #[arg(long, env = "NATTER_WS_ORIGINS", value_delimiter = ',')]
    pub ws_origins: Vec<String>,

    /// Voice datagrams per second per party on the relay (burst: one second's worth).
    #[arg(long, env = "NATTER_RELAY_RATE", default_value_t = 200)]
    pub relay_rate: u32,

    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, env = "NATTER_LOG_LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// argon2id memory cost in KiB (OWASP's baseline is 19456 with 2 iterations; see README).
    #[arg(long, env = "NATTER_ARGON2_MEMORY_KIB", default_value_t = 8192, global = true)]
    pub argon2_memory_kib: u32,

    /// argon2id iterations.
    #[arg(long, env = "NATTER_ARGON2_ITERATIONS", default_value_t = 1, global = true)]
    pub argon2_iterations: u32,

    /// Threads that hash and check passwords.
    #[arg(long, env = "NATTER_HASH_THREADS", default_value_t = 1)]
    pub hash_threads: usize,
}

impl ServerArgs {
    /// The argon2id parameters these flags ask for.
    pub fn hash_params(&self) -> HashParams {
        HashParams { memory_kib: self.argon2_memory_kib, iterations: self.argon2_iterations }
    }

    /// Resolves defaults that depend on other flags.
    pub fn into_config(self, db: PathBuf) -> Config {
        let hash = self.hash_params();
        let mail = match self.smtp_url {
            Some(url) => MailTarget::Smtp(url),
            None => MailTarget::Outbox(self.mail_outbox.unwrap_or_else(|| PathBuf::from("./outbox"))),
        };
        Config {
            listen: self.listen,
            udp: self.udp,
            db,
            durability: self.durability,
            db_cache_mib: self.db_cache_mib,
            db_mmap_mib: self.db_mmap_mib,
            mail,
            mail_from: self.mail_from.clone(),
            public_ip: self.public_ip,
            limits: Limits {
                auth_timeout_ms: self.auth_timeout.saturating_mul(1000),
                otp_lifetime_ms: self.otp_lifetime.saturating_mul(1000),
                call_timeout_ms: self.call_timeout.saturating_mul(1000),
                otp_mails_per_hour: self.otp_mails_per_address,
                otp_mails_per_ip: self.otp_mails_per_ip,
                call_attempts_per_minute: self.call_attempts,
                max_connections_per_ip: self.max_connections_per_ip,
                max_anonymous_per_ip: self.max_anonymous_per_ip,
                max_group_members: self.max_group_members.max(1),
                max_groups_per_user: self.max_groups_per_user.max(1),
                ..Limits::default()
            },
            net: NetLimits {
                max_frame: self.max_frame.max(2),
                // Below this one message of the largest size could not be queued at all.
                max_output: self.max_output.max(64 * 1024),
                max_connections: self.max_connections,
                max_output_total: self.max_output_total.max(self.max_output.max(64 * 1024)),
                msg_rate: self.msg_rate.filter(|&r| r > 0),
            },
            hash,
            relay_rate: self.relay_rate.max(1),
            metrics: self.metrics,
            tls: self.tls_cert.zip(self.tls_key).map(|(cert, key)| TlsFilesConfig { cert, key }),
            require_tls: self.require_tls,
            proxy_from: self.proxy_from.unwrap_or_default().0,
            ws_origins: self.ws_origins.into_iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect(),
            hash_threads: self.hash_threads.max(1),
        }
    }
}
