//! The workloads and what they share: logging clients in, the message payload that carries
//! its stream, sequence number and send time, and the report.

pub mod fanout;
pub mod groups;
pub mod handshakes;
pub mod idle;
pub mod latency;
pub mod logins;
pub mod offline;
pub mod pairs;
pub mod presence;
pub mod reads;
pub mod relay;
pub mod restart;
pub mod storm;

use crate::answer::Answer;
use crate::net::Clients;
use crate::server::{email, PASSWORD};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A workload's figures and the errors it found.
#[derive(Debug, Default)]
pub struct Report {
    pub name: String,
    /// (name, value, unit), in print order.
    pub metrics: Vec<(String, f64, &'static str)>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(name: &str) -> Report {
        Report { name: name.to_owned(), ..Report::default() }
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &'static str) {
        self.metrics.push((name.to_owned(), value, unit));
    }
}

/// The server under test and the clock every timestamp is measured on.
pub struct Env {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub base: Instant,
    /// Upper bound on any one phase of a workload.
    pub limit: Duration,
    /// How clients connect (`--transport`).
    pub dial: crate::net::Dial,
    /// Logins subscribe to presence, typing and read (`--subscribe`).
    pub subscribe: bool,
}

impl Env {
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The server's CPU seconds so far, when its pid is known.
    pub fn server_cpu(&self) -> Option<f64> {
        self.pid.and_then(crate::stats::cpu_seconds)
    }
}

/// The bench process's own CPU seconds.
pub fn own_cpu() -> f64 {
    crate::stats::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Connects one client per user and logs each in; waits for every answer.
pub fn login_all(cl: &mut Clients, env: &Env, users: &[usize], acks: bool) -> Result<Vec<usize>, String> {
    let subscribe = if env.subscribe { ",\"subscribe\":[\"presence\",\"typing\",\"read\"]" } else { "" };
    login_all_with(cl, env, users, &format!("\"acks\":{acks}{subscribe}"))
}

/// [`login_all`] in batches of 500, so that the listen backlog and the hash workers keep up
/// with thousands of clients.
pub fn login_all_batched(cl: &mut Clients, env: &Env, users: &[usize], acks: bool) -> Result<Vec<usize>, String> {
    let mut ids = Vec::with_capacity(users.len());
    for chunk in users.chunks(500) {
        ids.extend(login_all(cl, env, chunk, acks)?);
    }
    Ok(ids)
}

/// A login request for bench user `user`, with `extra` (JSON members, or nothing) in
/// `details`.
pub fn login_frame(user: usize, extra: &str) -> String {
    let md5 = natter::password::md5_hex(PASSWORD);
    let comma = if extra.is_empty() { "" } else { "," };
    format!(
        "{{\"type\":\"login\",\"details\":{{\"email\":\"{}\",\"password\":\"{md5}\"{comma}{extra}}}}}\n",
        email(user)
    )
}

/// [`login_all`] with `extra` (JSON members, e.g. `"subscribe":["presence"]`) in `details`.
pub fn login_all_with(cl: &mut Clients, env: &Env, users: &[usize], extra: &str) -> Result<Vec<usize>, String> {
    let mut ids = Vec::with_capacity(users.len());
    for &u in users {
        let i = cl.connect(env.addr).map_err(|e| format!("connect: {e}"))?;
        cl.send(i, login_frame(u, extra).as_bytes());
        ids.push(i);
    }
    let mut pending: std::collections::HashSet<usize> = ids.iter().copied().collect();
    let mut failed = None;
    let ok = cl
        .until(env.limit, |_, i, line| {
            match Answer::parse(line) {
                Some(a) if a.is("success", "login") => {
                    pending.remove(&i);
                }
                Some(a) if a.is("failed", "login") => failed = Some(String::from_utf8_lossy(line).into_owned()),
                _ => {}
            }
            pending.is_empty() || failed.is_some()
        })
        .map_err(|e| e.to_string())?;
    if let Some(f) = failed {
        return Err(format!("login failed: {f}"));
    }
    if !ok {
        return Err(format!("{} logins unanswered", pending.len()));
    }
    Ok(ids)
}

/// A personal message frame whose text is `stream seq t_ns` padded with `x` to `size` bytes.
pub fn personal_frame(out: &mut Vec<u8>, to: usize, stream: usize, seq: u64, t_ns: u64, size: usize) {
    let start = out.len();
    let _ = write!(
        out,
        "{{\"event\":\"personal\",\"type\":\"message\",\"details\":{{\"to\":\"{}\",\"message\":\"",
        email(to)
    );
    let text_start = out.len();
    let _ = write!(out, "{stream} {seq} {t_ns} ");
    while out.len() - text_start < size {
        out.push(b'x');
    }
    out.extend_from_slice(b"\"}}\n");
    debug_assert!(out.len() > start);
}

/// A global message frame with the same payload.
pub fn global_frame(out: &mut Vec<u8>, stream: usize, seq: u64, t_ns: u64, size: usize) {
    out.extend_from_slice(b"{\"event\":\"global\",\"type\":\"message\",\"details\":{\"message\":\"");
    let text_start = out.len();
    let _ = write!(out, "{stream} {seq} {t_ns} ");
    while out.len() - text_start < size {
        out.push(b'x');
    }
    out.extend_from_slice(b"\"}}\n");
}

/// Parses a payload; `None` when it is corrupted (wrong shape, length or padding).
pub fn payload(text: &[u8], size: usize) -> Option<(usize, u64, u64)> {
    if text.len() != size {
        return None;
    }
    let mut parts = text.splitn(4, |&b| b == b' ');
    let num = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse::<u64>().ok();
    let stream = num(parts.next())? as usize;
    let seq = num(parts.next())?;
    let t = num(parts.next())?;
    parts.next()?.iter().all(|&b| b == b'x').then_some((stream, seq, t))
}

/// The payload of a delivered message; `None` when it is missing or corrupted.
pub fn delivered(a: &Answer, size: usize) -> Option<(usize, u64, u64)> {
    a.message().and_then(|t| payload(t, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_corruption_is_seen() {
        let mut f = Vec::new();
        personal_frame(&mut f, 3, 7, 42, 123456, 100);
        // The request has the shape of its delivery: event, type and details.message.
        let a = Answer::parse(&f).unwrap();
        assert_eq!(delivered(&a, 100), Some((7, 42, 123456)));
        let text = a.message().unwrap();
        let mut bad = text.to_vec();
        bad[90] = b'y';
        assert_eq!(payload(&bad, 100), None);
        assert_eq!(payload(&text[..99], 100), None);
    }
}
