//! Shared harness for the black-box tests: start the real `natter` binary on 127.0.0.1 port 0
//! with a temporary database and mail outbox, talk to it over real TCP, read OTPs from the
//! outbox, run the admin subcommands, and read the server's figures from /proc.
//!
//! Every helper is bounded in time and panics with the tail of the server's stderr, so a
//! failing test shows what the server logged. The rooms:
//!
//! - `server.rs`: `Server`, one process per test: start, SIGTERM, SIGKILL, restart; its flags;
//! - `commands.rs`: the binary run to completion (admin commands), bounded child waits;
//! - `client.rs`: `Client` (every line checked) and `Pipe` (halves in two threads);
//! - `protocol.rs`: request builders, exact answer shapes, named accounts, login flows;
//! - `mail.rs`: mail parsing, the OTP in it, a server's outbox;
//! - `log.rs`: the server's stderr lines and their tail;
//! - `metrics.rs`: the metrics URL and a scrape;
//! - `procfs.rs`: memory, descriptors, CPU time and niceness from /proc;
//! - `wait.rs`: waiting for an observable event with a deadline;
//! - `webdriver.rs`: headless chromium over WebDriver, for the web client.

// Every tests/*.rs compiles this harness as a module of its own and uses a part of it: what
// one test binary leaves unused, another uses (every item is used by some test file). Hence
// these allowances, on the modules and re-exports that some test binary leaves unused; `log`
// is used whole by the harness itself, and every test file uses `server`.
#[allow(dead_code)]
mod client;
#[allow(dead_code)]
mod commands;
mod log;
#[allow(dead_code)]
mod mail;
#[allow(dead_code)]
mod metrics;
#[allow(dead_code)]
mod procfs;
#[allow(dead_code)]
mod protocol;
#[allow(dead_code)]
mod server;
#[allow(dead_code)]
mod wait;
#[allow(dead_code)]
mod webdriver;

#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use commands::*;
#[allow(unused_imports)]
pub use log::*;
#[allow(unused_imports)]
pub use mail::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use procfs::*;
#[allow(unused_imports)]
pub use protocol::*;
pub use server::*;
#[allow(unused_imports)]
pub use wait::*;
#[allow(unused_imports)]
pub use webdriver::*;
