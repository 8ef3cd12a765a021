//! `idle`: N logged-in connections that do nothing. Measures the server's resident memory
//! growth per connection (from /proc, so the server's pid must be known).

use super::{login_all_batched, Env, Report};
use crate::net::Clients;
use crate::stats::rss_bytes;
use std::time::Duration;

pub struct Params {
    pub connections: usize,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let pid = env.pid.ok_or("idle needs the server's pid (--spawn or --server-pid)")?;
    let before = rss_bytes(pid).ok_or("cannot read the server's RSS")?;
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let users: Vec<usize> = (0..p.connections).collect();
    login_all_batched(&mut cl, env, &users, false)?;
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes(pid).ok_or("cannot read the server's RSS")?;
    let open = cl.clients.iter().filter(|c| c.open).count();
    let mut r = Report::new("idle");
    r.metric("connections", open as f64, "");
    r.metric("rss before", before as f64 / 1024.0, "KiB");
    r.metric("rss after", after as f64 / 1024.0, "KiB");
    r.metric("per connection", after.saturating_sub(before) as f64 / p.connections.max(1) as f64, "B");
    if open < p.connections {
        r.errors.push(format!("only {open} of {} connections stayed open", p.connections));
    }
    Ok(r)
}
