//! natter-bench: a load generator that drives a natter server over the wire protocol.
//!
//! `--spawn` starts a fresh `natter` (the binary beside this one) on a temp database for
//! each workload; `--addr` drives a running server (then `--db` names its database file for
//! provisioning users and `--server-pid` lets it read the server's CPU and memory). Every
//! workload counts what it expected and what arrived: anything lost, duplicated or
//! corrupted is an error, reported and turned into a non-zero exit status.

mod answer;
mod fill;
mod net;
mod rng;
mod server;
mod stats;
mod workloads;

use clap::{Parser, ValueEnum};
use natter::password::HashParams;
use server::Target;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use workloads::{Env, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    All,
    Pairs,
    Fanout,
    Latency,
    Offline,
    Logins,
    Idle,
    Relay,
    Handshakes,
    Groups,
    Presence,
    Storm,
    /// A user's reads at the database's size: logins, history pages, unread, users.
    Reads,
    /// Logged-in clients coming back after the server's SIGTERM and restart.
    Restart,
    /// Not a workload: writes a database of `--fill-*` size into `--db` (no server).
    Fill,
}

/// How the clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// Lines over plain TCP.
    Tcp,
    /// Lines over TLS.
    Tls,
    /// WebSocket on `/ws`, one text message per write.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

#[derive(Debug, Parser)]
#[command(name = "natter-bench", about = "Drive a natter server and measure it", max_term_width = 100)]
struct Cli {
    /// Workloads to run.
    #[arg(value_enum, default_value = "all")]
    workloads: Vec<Workload>,
    /// Start a fresh natter on a temp database for each workload.
    #[arg(long, conflicts_with = "addr")]
    spawn: bool,
    /// Drive the natter server at this address.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// With --addr: the server's database file, to create the bench users in. With --spawn:
    /// run the server on this database (kept, and changed by the run) instead of a fresh one.
    /// With fill: the database to write.
    #[arg(long)]
    db: Option<PathBuf>,
    /// With --addr: the server's pid, to read its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Tiny sizes for every workload: a smoke test that takes seconds.
    #[arg(long)]
    quick: bool,
    /// With --spawn: the server's --durability.
    #[arg(long, default_value = "normal")]
    durability: String,
    /// With --spawn: extra flags for the server, e.g. "--relay-rate 1000".
    #[arg(long, allow_hyphen_values = true)]
    server_args: Option<String>,
    /// argon2id memory (KiB) for the users of `logins` and for a spawned server.
    #[arg(long, default_value_t = 8192)]
    argon2_memory_kib: u32,
    /// argon2id iterations for the users of `logins` and for a spawned server.
    #[arg(long, default_value_t = 1)]
    argon2_iterations: u32,
    /// How clients connect. TLS (tls, wss) with --spawn gives the server a fresh self-signed
    /// ECDSA P-256 certificate, made with openssl.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Clients speak TLS: `--transport tls`, or wss with `--transport ws`.
    #[arg(long)]
    tls: bool,
    /// With --tls and --addr: the CA (or self-signed certificate) to verify the server
    /// against [default: the system's roots].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// presence: contacts of the user that logs in and out, all online and subscribed.
    #[arg(long, default_value_t = 5000)]
    contacts: usize,
    /// presence: seconds of churn, and of typing.
    #[arg(long, default_value_t = 5.0)]
    presence_seconds: f64,
    /// storm: users logged in and subscribed to presence.
    #[arg(long, default_value_t = 10_000)]
    storm_users: usize,
    /// storm: contacts of each user (about).
    #[arg(long, default_value_t = 50)]
    storm_contacts: usize,
    /// storm: users that log out and in again at once.
    #[arg(long, default_value_t = 1_000)]
    storm_churners: usize,
    /// Every workload's logins subscribe to presence, typing and read (what that costs the
    /// message path).
    #[arg(long)]
    subscribe: bool,
    /// groups: members of the fan-out group, all online.
    #[arg(long, default_value_t = 1000)]
    group_members: usize,
    /// groups: messages to the fan-out group.
    #[arg(long, default_value_t = 200)]
    group_messages: u64,
    /// groups: groups the offline member is in.
    #[arg(long, default_value_t = 20)]
    member_groups: usize,
    /// groups: more groups every member of the fan-out group is in (idle ones).
    #[arg(long, default_value_t = 0)]
    extra_groups: usize,
    /// groups: messages sent to them while it is offline.
    #[arg(long, default_value_t = 10_000)]
    group_backlog: u64,
    /// handshakes: threads opening TLS connections.
    #[arg(long, default_value_t = 2)]
    handshake_threads: usize,
    /// handshakes: seconds.
    #[arg(long, default_value_t = 5.0)]
    handshake_seconds: f64,
    /// fill (and reads on a fresh database): users.
    #[arg(long, default_value_t = 100_000)]
    fill_users: usize,
    /// fill (and reads on a fresh database): personal messages.
    #[arg(long, default_value_t = 1_000_000)]
    fill_messages: u64,
    /// fill: conversations per user.
    #[arg(long, default_value_t = 10)]
    fill_partners: usize,
    /// reads: requests of each kind.
    #[arg(long, default_value_t = 200)]
    reads: usize,
    /// restart: logged-in clients.
    #[arg(long, default_value_t = 5_000)]
    restart_clients: usize,
    /// Upper bound in seconds on any phase of a workload.
    #[arg(long, default_value_t = 300)]
    timeout: u64,

    /// pairs: sender/receiver pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// pairs: messages per sender.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// pairs: messages in flight per sender without a `sent` answer.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// fanout: receivers.
    #[arg(long, default_value_t = 200)]
    receivers: usize,
    /// fanout: global messages.
    #[arg(long, default_value_t = 2_000)]
    fanout_messages: u64,
    /// latency: rates in messages per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rates: Vec<u64>,
    /// latency: seconds per rate.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// latency: idle logged-in connections open meanwhile.
    #[arg(long, default_value_t = 0)]
    background: usize,
    /// offline: stored messages.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// logins: clients logging in at once.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// idle: logged-in idle connections.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// relay: simultaneous calls.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// relay: datagrams per second per party.
    #[arg(long, default_value_t = 50)]
    dps: u64,
    /// relay: seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    relay_seconds: f64,
    /// relay: datagram size in bytes.
    #[arg(long, default_value_t = 160)]
    datagram: usize,
}

impl Cli {
    fn shrink(&mut self) {
        (self.pairs, self.messages, self.receivers, self.fanout_messages) = (2, 300, 5, 50);
        (self.rates, self.seconds, self.backlog, self.clients) = (vec![200], 0.5, 500, 10);
        (self.idle, self.calls, self.dps, self.relay_seconds) = (50, 3, 20, 0.5);
        (self.handshake_threads, self.handshake_seconds) = (1, 0.5);
        (self.group_members, self.group_messages, self.member_groups, self.group_backlog) = (5, 20, 3, 60);
        (self.contacts, self.presence_seconds) = (10, 0.5);
        (self.storm_users, self.storm_contacts, self.storm_churners) = (60, 5, 10);
        (self.fill_users, self.fill_messages, self.reads, self.restart_clients) = (50, 500, 10, 20);
    }

    fn fill(&self) -> fill::Params {
        fill::Params {
            users: self.fill_users,
            messages: self.fill_messages,
            partners: self.fill_partners,
            size: self.size,
        }
    }

    /// How many bench users a workload needs.
    fn users(&self, w: Workload) -> usize {
        match w {
            Workload::Pairs => 2 * self.pairs,
            Workload::Fanout => self.receivers + 1,
            Workload::Latency => 2 + self.background,
            Workload::Offline | Workload::Handshakes => 2,
            Workload::Groups => self.group_members.max(2),
            Workload::Presence => workloads::presence::users(self.contacts),
            Workload::Storm => workloads::storm::users(&self.storm()),
            Workload::Logins => 2,
            Workload::Idle => self.idle,
            Workload::Relay => 2 * self.calls,
            Workload::Restart => self.restart_clients,
            // Its users are the fill's.
            Workload::Reads | Workload::Fill | Workload::All => 0,
        }
    }

    fn storm(&self) -> workloads::storm::Params {
        let users = self.storm_users.max(self.storm_churners + 2);
        workloads::storm::Params {
            users,
            contacts: self.storm_contacts.max(1),
            churners: self.storm_churners.max(1),
            seconds: self.presence_seconds.max(2.5),
            size: self.size,
        }
    }

    /// The contact pairs a workload starts with (user indexes).
    fn contact_pairs(&self, w: Workload) -> Vec<(usize, usize)> {
        match w {
            Workload::Presence => (1..self.contacts + 1).map(|i| (0, i)).collect(),
            Workload::Storm => workloads::storm::contact_pairs(&self.storm()),
            _ => Vec::new(),
        }
    }

    fn real_hash(&self) -> HashParams {
        HashParams { memory_kib: self.argon2_memory_kib, iterations: self.argon2_iterations }
    }
}

/// Users other than those of `logins` get a cheap hash: their login is set-up, not the
/// thing measured.
const CHEAP: HashParams = HashParams { memory_kib: 64, iterations: 1 };

/// natter's `--max-connections` default.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Whether a workload's clients speak TLS.
fn uses_tls(cli: &Cli, w: Workload) -> bool {
    cli.tls || matches!(cli.transport, Transport::Tls | Transport::Wss) || w == Workload::Handshakes
}

fn target(cli: &Cli, w: Workload) -> Result<(Target, Option<PathBuf>), String> {
    let n = cli.users(w);
    let logins = if w == Workload::Logins { cli.clients } else { 0 };
    let contacts = cli.contact_pairs(w);
    let provision = |db: &std::path::Path| {
        if w == Workload::Reads && cli.db.is_none() {
            fill::run(db, &cli.fill(), CHEAP)?;
        }
        server::provision(db, n, CHEAP)?;
        server::make_contacts(db, &contacts)?;
        if w == Workload::Groups {
            server::make_groups(db, 0..cli.group_members.max(2), cli.extra_groups)?;
        }
        if logins > 0 {
            server::provision_range(db, 2..2 + logins, cli.real_hash())?;
        }
        Ok(())
    };
    if let Some(addr) = cli.addr {
        let db = cli.db.as_ref().ok_or("--addr needs --db (the server's database) to create bench users")?;
        provision(db)?;
        return Ok((Target::attach(addr, cli.server_pid), cli.ca.clone()));
    }
    let mut extra = vec![
        "--durability".to_owned(),
        cli.durability.clone(),
        "--argon2-memory-kib".into(),
        cli.argon2_memory_kib.to_string(),
        "--argon2-iterations".into(),
        cli.argon2_iterations.to_string(),
    ];
    if n + logins + 100 > DEFAULT_MAX_CONNECTIONS {
        // Room for every bench connection (one per user, and a few more) past the default.
        extra.extend(["--max-connections".to_owned(), (n + logins + 1000).to_string()]);
    }
    if let Some(more) = &cli.server_args {
        extra.extend(more.split_whitespace().map(str::to_owned));
    }
    let pair = if uses_tls(cli, w) { Some(server::make_certificate()?) } else { None };
    if let Some((cert, key)) = &pair {
        extra.extend(["--tls-cert".to_owned(), cert.display().to_string()]);
        extra.extend(["--tls-key".to_owned(), key.display().to_string()]);
    }
    Ok((Target::spawn(&extra, cli.db.as_deref(), provision)?, pair.map(|(cert, _)| cert)))
}

fn run(cli: &Cli, w: Workload) -> Result<Vec<Report>, String> {
    if w == Workload::Fill {
        let db = cli.db.as_ref().ok_or("fill needs --db FILE (the database to write)")?;
        return Ok(vec![fill::run(db, &cli.fill(), CHEAP)?]);
    }
    let (mut t, ca) = target(cli, w)?;
    let tls = if uses_tls(cli, w) { Some(natter::tls_client::config(ca.as_deref())?) } else { None };
    let env = Env {
        addr: t.addr,
        pid: t.pid,
        base: Instant::now(),
        limit: Duration::from_secs(cli.timeout),
        dial: net::Dial { tls, websocket: matches!(cli.transport, Transport::Ws | Transport::Wss) },
        subscribe: cli.subscribe,
    };
    Ok(match w {
        Workload::Pairs => vec![workloads::pairs::run(
            &env,
            &workloads::pairs::Params { pairs: cli.pairs, messages: cli.messages, window: cli.window, size: cli.size },
        )?],
        Workload::Fanout => vec![workloads::fanout::run(
            &env,
            &workloads::fanout::Params { receivers: cli.receivers, messages: cli.fanout_messages, size: cli.size },
        )?],
        Workload::Latency => cli
            .rates
            .iter()
            .map(|&rate| {
                workloads::latency::run(
                    &env,
                    &workloads::latency::Params {
                        background: cli.background,
                        rate,
                        seconds: cli.seconds,
                        size: cli.size,
                    },
                )
            })
            .collect::<Result<_, _>>()?,
        Workload::Offline => {
            vec![workloads::offline::run(&env, &workloads::offline::Params { messages: cli.backlog, size: cli.size })?]
        }
        Workload::Logins => vec![workloads::logins::run(
            &env,
            &workloads::logins::Params { clients: cli.clients, rate: 1000, size: cli.size },
        )?],
        Workload::Idle => vec![workloads::idle::run(&env, &workloads::idle::Params { connections: cli.idle })?],
        Workload::Relay => vec![workloads::relay::run(
            &env,
            &workloads::relay::Params {
                calls: cli.calls,
                per_second: cli.dps,
                seconds: cli.relay_seconds,
                size: cli.datagram,
            },
        )?],
        Workload::Handshakes => vec![workloads::handshakes::run(
            &env,
            &workloads::handshakes::Params {
                threads: cli.handshake_threads,
                seconds: cli.handshake_seconds,
                rate: 1000,
                size: cli.size,
            },
        )?],
        Workload::Groups => workloads::groups::run(
            &env,
            &workloads::groups::Params {
                members: cli.group_members.max(2),
                messages: cli.group_messages,
                groups: cli.member_groups.max(1),
                backlog: cli.group_backlog,
                size: cli.size,
            },
        )?,
        Workload::Presence => workloads::presence::run(
            &env,
            &workloads::presence::Params {
                contacts: cli.contacts.max(1),
                seconds: cli.presence_seconds,
                size: cli.size,
            },
        )?,
        Workload::Storm => vec![workloads::storm::run(&env, &cli.storm())?],
        Workload::Restart => {
            vec![workloads::restart::run(&env, &mut t, &workloads::restart::Params { clients: cli.restart_clients })?]
        }
        Workload::Reads => vec![workloads::reads::run(
            &env,
            &workloads::reads::Params { requests: cli.reads.max(1), users: cli.fill_users },
        )?],
        Workload::Fill | Workload::All => Vec::new(),
    })
}

/// Lets this process (and a server it spawns) open as many sockets as the hard limit allows.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn print_table(reports: &[Report]) {
    for r in reports {
        println!("{}", r.name);
        for (name, value, unit) in &r.metrics {
            println!("  {name:<34} {value:>14.1} {unit}");
        }
        for e in &r.errors {
            println!("  ERROR {e}");
        }
    }
}

fn print_json(reports: &[Report]) {
    let doc: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let metrics: serde_json::Map<String, serde_json::Value> =
                r.metrics.iter().map(|(n, v, u)| (n.clone(), serde_json::json!({"value": v, "unit": u}))).collect();
            serde_json::json!({"workload": r.name, "metrics": metrics, "errors": r.errors})
        })
        .collect();
    println!("{}", serde_json::Value::Array(doc));
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if !cli.spawn && cli.addr.is_none() && cli.workloads != [Workload::Fill] {
        eprintln!("natter-bench: give --spawn or --addr HOST:PORT");
        return ExitCode::from(2);
    }
    if cli.quick {
        cli.shrink();
    }
    raise_fd_limit();
    let mut list = cli.workloads.clone();
    if list.contains(&Workload::All) {
        list = vec![
            Workload::Pairs,
            Workload::Fanout,
            Workload::Latency,
            Workload::Offline,
            Workload::Logins,
            Workload::Idle,
            Workload::Relay,
            Workload::Handshakes,
            Workload::Groups,
            Workload::Presence,
            Workload::Storm,
            Workload::Reads,
            Workload::Restart,
        ];
    }
    let mut reports = Vec::new();
    for w in list {
        match run(&cli, w) {
            Ok(rs) => reports.extend(rs),
            Err(e) => {
                let mut r = Report::new(&format!("{w:?}").to_lowercase());
                r.errors.push(e);
                reports.push(r);
            }
        }
    }
    if cli.json {
        print_json(&reports);
    } else {
        print_table(&reports);
    }
    if reports.iter().any(|r| !r.errors.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
