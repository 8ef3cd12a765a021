//! `fanout`: one sender, S logged-in receivers, M global messages. Measures deliveries per
//! second (first send to last receipt) and delivery latency.

use super::{delivered, global_frame, login_all, own_cpu, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::stats::{Ledger, Samples};

pub struct Params {
    pub receivers: usize,
    pub messages: u64,
    pub size: usize,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let users: Vec<usize> = (0..=p.receivers).collect();
    let ids = login_all(&mut cl, env, &users, false)?;
    let sender = ids[0];
    let mut receiver_of = vec![usize::MAX; cl.clients.len()];
    for (r, &ci) in ids[1..].iter().enumerate() {
        receiver_of[ci] = r;
    }
    let (cpu0, own0) = (env.server_cpu(), own_cpu());
    let total = p.receivers as u64 * p.messages;
    let mut ledger = Ledger::new(p.receivers, total);
    let mut lat = Samples::default();
    let mut other = 0u64;
    let first = env.now_ns();
    let mut frame = Vec::new();
    for seq in 0..p.messages {
        frame.clear();
        global_frame(&mut frame, 0, seq, env.now_ns(), p.size);
        cl.send(sender, &frame);
    }
    let mut last = first;
    let done = cl
        .until(env.limit, |_, ci, line| {
            let r = receiver_of[ci];
            match Answer::parse(line) {
                Some(a) if r != usize::MAX && a.event == "global" => {
                    let now = env.now_ns();
                    match delivered(&a, p.size) {
                        Some((_, seq, t)) => {
                            ledger.record(r, seq);
                            lat.push(now.saturating_sub(t));
                        }
                        None => ledger.corrupted += 1,
                    }
                    last = now;
                }
                _ => other += 1,
            }
            ledger.received + ledger.duplicated >= total || other > 0
        })
        .map_err(|e| e.to_string())?;
    let secs = (last - first) as f64 / 1e9;
    let mut r = Report::new("fanout");
    r.metric("deliveries", ledger.received as f64 / secs, "msg/s");
    r.metric("latency p50", lat.quantile_us(0.5), "us");
    r.metric("latency p99", lat.quantile_us(0.99), "us");
    if let (Some(a), Some(b)) = (cpu0, env.server_cpu()) {
        r.metric("server cpu", (b - a) * 1e6 / ledger.received.max(1) as f64, "us/delivery");
    }
    r.metric("bench cpu total", own_cpu() - own0, "s");
    if let Some(e) = ledger.errors() {
        r.errors.push(e);
    }
    if other > 0 {
        r.errors.push(format!("{other} unexpected lines"));
    }
    if !done {
        r.errors.push("timed out".into());
    }
    Ok(r)
}
