//! `latency`: one pair at a fixed rate for a fixed time: the latency distribution when the
//! server is not saturated; with `background`, among that many other logged-in idle
//! connections (what the number of connections costs a message).

use super::{delivered, login_all, login_all_batched, personal_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::stats::{Ledger, Samples};
use std::time::{Duration, Instant};

pub struct Params {
    /// Idle logged-in connections (users 2 and up) open while the pair talks.
    pub background: usize,
    pub rate: u64,
    pub seconds: f64,
    pub size: usize,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut idle = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let others: Vec<usize> = (2..2 + p.background).collect();
    login_all_batched(&mut idle, env, &others, false)?;
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let ids = login_all(&mut cl, env, &[0, 1], false)?;
    let total = (p.rate as f64 * p.seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / p.rate.max(1) as f64);
    let mut ledger = Ledger::new(1, total);
    let mut lat = Samples::default();
    let (mut next, mut answered, mut other) = (0u64, 0u64, 0u64);
    let mut frame = Vec::new();
    let start = Instant::now();
    let end = start + env.limit;
    while (ledger.received < total || answered < total) && Instant::now() < end && other == 0 {
        let now = Instant::now();
        while next < total && now >= start + interval * next as u32 {
            frame.clear();
            personal_frame(&mut frame, 1, 0, next, env.now_ns(), p.size);
            cl.send(ids[0], &frame);
            next += 1;
        }
        let wait = (start + interval * next as u32).saturating_duration_since(Instant::now());
        cl.round(wait.min(Duration::from_millis(1))).map_err(|e| e.to_string())?;
        let now_ns = env.now_ns();
        for (ci, range) in &cl.lines {
            match Answer::parse(&cl.arena[range.clone()]) {
                Some(a) if *ci == ids[0] && a.is("sent", "message") => answered += 1,
                Some(a) if *ci == ids[1] && a.event == "personal" => match delivered(&a, p.size) {
                    Some((_, seq, t)) => {
                        ledger.record(0, seq);
                        lat.push(now_ns.saturating_sub(t));
                    }
                    None => ledger.corrupted += 1,
                },
                _ => other += 1,
            }
        }
    }
    let name = match p.background {
        0 => format!("latency@{}/s", p.rate),
        n => format!("latency@{}/s among {n}", p.rate),
    };
    let mut r = Report::new(&name);
    r.metric("messages", ledger.received as f64, "");
    if p.background > 0 {
        let open = idle.clients.iter().filter(|c| c.open).count();
        r.metric("idle connections open", open as f64, "");
        if let Some(rss) = env.pid.and_then(crate::stats::rss_bytes) {
            r.metric("server rss", rss as f64 / 1024.0, "KiB");
        }
    }
    r.metric("latency p50", lat.quantile_us(0.5), "us");
    r.metric("latency p99", lat.quantile_us(0.99), "us");
    r.metric("latency p99.9", lat.quantile_us(0.999), "us");
    r.metric("latency max", lat.quantile_us(1.0), "us");
    if let Some(e) = ledger.errors() {
        r.errors.push(e);
    }
    if other > 0 {
        r.errors.push(format!("{other} unexpected lines"));
    }
    Ok(r)
}
