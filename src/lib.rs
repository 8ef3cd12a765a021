//! natter: a single-threaded event-loop chat server for small single-host deployments.
//!
//! # Codemap
//!
//! Data flows one way: socket, framing, decoding, dispatch, handler, store and session
//! registry, outbox, encoding, output buffer, socket.
//!
//! - [`net`]: the only code that touches mio, sockets, threads, signals or the clock. The
//!   event loop (`net/event_loop.rs`) and its own deadlines (`net/resume.rs`), one TCP
//!   client (`net/conn.rs`) and what it speaks (`net/transport.rs`: plain, TLS in
//!   `net/tls.rs`, PROXY headers in `net/proxy.rs`), the UDP relay socket, the worker
//!   threads for password hashing and mail, the signal pipe.
//! - [`framing`]: the resumable JSON-object boundary scanner.
//! - [`bytescan`]: finding quotes, backslashes and control bytes eight at a time, for the
//!   scanner and the encoder.
//! - [`protocol`]: decode a frame into a `Request`, encode every answer. The only serde user.
//! - [`chat`]: the pure core in owned parts: sessions, accounts, messages and delivery,
//!   groups, calls, guards (throttles), the account directory, contacts, blocks, presence,
//!   typing, read marks, self-service. Takes `Now` as an argument, answers through an
//!   `Outbox`.
//! - [`timer_wheel`]: every deadline.
//! - [`store`]: SQLite: schema and migrations, the group commit, queries.
//! - [`config`], [`cli`], [`config_file`]: settings, the command line and `--config`;
//!   [`admin`]: `natter user ...` and `natter backup`.
//! - [`password`], [`secret`], [`mailer`]: argon2id, OTPs and tokens, lettre.
//! - [`line_client`], [`tls_client`], [`ws_client`]: not the server's: the clients' side
//!   (natter-cli, natter-bench): lines over a non-blocking socket (connect, queue, flush,
//!   bounded line splitting), plain, TLS or WebSocket. [`cidr`]: address ranges.
//!
//! # Invariants
//!
//! - No answer that depends on a database write is written to a socket before the write is
//!   committed (the flush phase runs after the commit phase).
//! - The core never blocks: hashing and mail run on worker threads.
//! - Nothing a client sends can panic the server; bad input is answered `invalid` or
//!   `failed`.
//! - Nothing a client sends can grow the server's memory without bound: requests pause
//!   while answers wait, answers are held to the output cap as they are built, and all
//!   unsent output is bounded (`tests/attacks.rs`).

pub mod admin;
pub mod bytescan;
pub mod chat;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod framing;
pub mod line_client;
pub mod mailer;
pub mod net;
pub mod password;
pub mod protocol;
pub mod secret;
pub mod store;
pub mod timer_wheel;
pub mod tls_client;
pub mod token_bucket;
pub mod ws_client;
