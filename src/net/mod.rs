//! Everything that touches mio, sockets, threads, signals or the clock. The rest of the
//! crate is driven from here.

pub mod accept_key;
mod carried;
mod checkpointer;
mod conn;
mod connections;
mod egress;
mod event_loop;
pub mod http;
mod ingress;
mod listener;
mod lockfile;
mod memory;
mod metrics;
mod output;
mod priority;
pub mod proxy;
mod relay_socket;
mod resume;
mod signals;
mod sockopt;
mod tls;
pub mod transport;
mod udp_batch;
mod web_assets;
pub mod websocket;
mod worker;

use crate::chat::{Core, Now, VoiceConfig};
use crate::config::Config;
use crate::mailer::Mailer;
use crate::password;
use crate::store::Store;
use event_loop::{EventLoop, LISTENER, METRICS, SIGNAL, UDP, WAKER};
use mio::net::{TcpListener, UdpSocket};
use mio::{Interest, Poll, Waker};
use relay_socket::RelaySocket;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// WAL size (in pages) at which a commit on the loop checkpoints; bounds the WAL file.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;

/// How long start-up waits on another process's database lock before giving up.
const STARTUP_BUSY_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long a write of the running loop waits on another process's lock (an admin
/// command holds it for milliseconds) before the iteration's writers get `failed`. Short,
/// because the whole loop waits with it.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Why the server could not start (or stopped on an I/O error).
#[derive(Debug)]
pub enum ServeError {
    Store(crate::store::StoreError),
    Mail(String),
    Bind(&'static str, SocketAddr, std::io::Error),
    Io(std::io::Error),
    Hash(password::HashError),
    /// Another natter server runs on the same database.
    AlreadyRunning(std::path::PathBuf),
    Tls(tls::LoadError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Store(e) => write!(f, "{e}"),
            ServeError::Mail(e) => write!(f, "{e}"),
            ServeError::Bind(what, addr, e) => {
                write!(f, "cannot bind the {what} socket to {addr}: {e}")
            }
            ServeError::Io(e) => write!(f, "{e}"),
            ServeError::Hash(e) => write!(f, "{e}"),
            ServeError::Tls(e) => write!(f, "{e}"),
            ServeError::AlreadyRunning(lock) => {
                write!(f, "another natter server is running on this database (it holds {})", lock.display())
            }
        }
    }
}

impl From<std::io::Error> for ServeError {
    fn from(e: std::io::Error) -> Self {
        ServeError::Io(e)
    }
}

/// Opens the store, binds the sockets, starts the workers and runs the loop until a signal.
pub fn serve(config: Config) -> Result<(), ServeError> {
    let start = Instant::now();
    let _lock = lockfile::acquire(&config.db)?;
    let store = Store::open(&config.db, config.durability, STARTUP_BUSY_TIMEOUT).map_err(ServeError::Store)?;
    store.probe_write().map_err(ServeError::Store)?;
    store.set_busy_timeout(BUSY_TIMEOUT).map_err(ServeError::Store)?;
    store.set_memory(config.db_cache_mib, config.db_mmap_mib).map_err(ServeError::Store)?;
    // The loop's own checkpoints bound the WAL; the thread copies most pages before one is
    // due, so the loop's checkpoint finds little left to copy.
    store.set_autocheckpoint(WAL_AUTOCHECKPOINT_PAGES).map_err(ServeError::Store)?;
    let checkpointer = checkpointer::start(config.db.clone())?;
    let mailer = Mailer::new(&config.mail, &config.mail_from).map_err(ServeError::Mail)?;

    let tls = match &config.tls {
        Some(files) => Some(tls::TlsFiles::load(&files.cert, &files.key).map_err(ServeError::Tls)?),
        None => None,
    };
    let mut listener = TcpListener::bind(config.listen).map_err(|e| ServeError::Bind("TCP", config.listen, e))?;
    let tcp_addr = listener.local_addr()?;
    if let Err(e) = sockopt::listen_backlog_max(&listener) {
        log::warn!("cannot raise the listen backlog above 128: {e}");
    }
    let udp_addr = config.udp.unwrap_or(tcp_addr);
    let mut udp = UdpSocket::bind(udp_addr).map_err(|e| ServeError::Bind("UDP", udp_addr, e))?;
    if let Err(e) = sockopt::recv_buffer(&udp, 4 << 20) {
        log::warn!("cannot enlarge the relay's receive buffer: {e}");
    }
    let udp_addr = udp.local_addr()?;

    let poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry().register(&mut udp, UDP, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut signals = signals::Signals::install()?;
    poll.registry().register(&mut signals.receiver, SIGNAL, Interest::READABLE)?;

    let t = Instant::now();
    let dummy_hash = password::hash(config.hash, &password::md5_hex("natter")).map_err(ServeError::Hash)?;
    log::info!(
        "argon2id m={} KiB t={}: {} ms per hash on this machine",
        config.hash.memory_kib,
        config.hash.iterations,
        t.elapsed().as_millis()
    );
    let otp_minutes = config.limits.otp_lifetime_ms.div_ceil(60_000);
    let workers = worker::Workers::start(config.hash_threads, config.hash, mailer, otp_minutes, waker)?;

    let now = Now { ms: start.elapsed().as_millis() as u64, unix: 0 };
    let voice = VoiceConfig { public_ip: config.public_ip, relay_port: udp_addr.port(), relay_rate: config.relay_rate };
    let core = Core::new(store, config.limits.clone(), voice, dummy_hash, now);
    // Bound before the listening line: that line means everything is ready.
    let metrics = match config.metrics {
        Some(addr) => {
            let mut l = TcpListener::bind(addr).map_err(|e| ServeError::Bind("metrics", addr, e))?;
            poll.registry().register(&mut l, METRICS, Interest::READABLE)?;
            log::info!("metrics on http://{}/metrics", l.local_addr()?);
            Some(metrics::MetricsServer::new(l, checkpointer.pending.clone()))
        }
        None => None,
    };
    log::info!("transports on {tcp_addr}: {}", transports(&config));
    log::info!("natter listening on tcp={tcp_addr} udp={udp_addr} db={}", config.db.display());
    let relay = RelaySocket::new(udp);
    let listener = listener::Listener::new(
        listener,
        tls,
        config.require_tls,
        config.proxy_from.clone(),
        http::WebConfig { origins: config.ws_origins.clone() },
    );
    EventLoop::new(poll, listener, relay, core, workers, signals, config.net.clone(), metrics, start).run()?;
    Ok(())
}

/// The start-up line's list of what the port speaks.
fn transports(config: &Config) -> String {
    let mut on = Vec::new();
    match (&config.tls, config.require_tls) {
        (Some(files), true) => {
            on.push(format!("TLS ({}); plain JSON from loopback only (--require-tls)", files.cert.display()))
        }
        (Some(files), false) => on.push(format!("TLS ({}), plain JSON", files.cert.display())),
        (None, true) => on.push("plain JSON from loopback only (--require-tls without a certificate)".to_owned()),
        (None, false) => on.push("plain JSON (no TLS: --tls-cert is not set)".to_owned()),
    }
    if !config.proxy_from.is_empty() {
        let from: Vec<String> = config.proxy_from.iter().map(ToString::to_string).collect();
        on.push(format!("PROXY headers from {}", from.join(",")));
    }
    on.join("; ")
}
