//! `pairs`: P senders each stream M personal messages to their partner, at most W without
//! a `sent` answer. Measures delivered messages per second (first send to last receipt),
//! latency from the send time carried in each message, and server CPU per message.

use super::{delivered, login_all, own_cpu, personal_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::stats::{Ledger, Samples};

pub struct Params {
    pub pairs: usize,
    pub messages: u64,
    pub window: u64,
    pub size: usize,
}

#[derive(Clone, Copy)]
enum Role {
    Sender(usize),
    Receiver,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let users: Vec<usize> = (0..p.pairs * 2).collect();
    let ids = login_all(&mut cl, env, &users, false)?;
    let mut role = vec![Role::Receiver; cl.clients.len()];
    for i in 0..p.pairs {
        role[ids[2 * i]] = Role::Sender(i);
    }
    let (cpu0, own0) = (env.server_cpu(), own_cpu());
    let mut sent = vec![0u64; p.pairs];
    let mut answered = 0u64;
    let mut failed = 0u64;
    let mut ledger = Ledger::new(p.pairs, p.pairs as u64 * p.messages);
    let mut lat = Samples::default();
    let mut frame = Vec::with_capacity(4096);
    let first = env.now_ns();
    let mut last = first;
    let send_next = |cl: &mut Clients, i: usize, sent: &mut [u64], frame: &mut Vec<u8>| {
        frame.clear();
        personal_frame(frame, 2 * i + 1, i, sent[i], env.now_ns(), p.size);
        cl.send(ids[2 * i], frame);
        sent[i] += 1;
    };
    for i in 0..p.pairs {
        for _ in 0..p.window.min(p.messages) {
            send_next(&mut cl, i, &mut sent, &mut frame);
        }
    }
    let total = p.pairs as u64 * p.messages;
    let done = cl
        .until(env.limit, |cl, ci, line| {
            match (role[ci], Answer::parse(line)) {
                (Role::Sender(i), Some(a)) if a.is("sent", "message") => {
                    answered += 1;
                    if sent[i] < p.messages {
                        send_next(cl, i, &mut sent, &mut frame);
                    }
                }
                (Role::Sender(_), _) => failed += 1,
                (Role::Receiver, Some(a)) if a.event == "personal" => {
                    let now = env.now_ns();
                    match delivered(&a, p.size) {
                        Some((stream, seq, t)) => {
                            ledger.record(stream, seq);
                            lat.push(now.saturating_sub(t));
                        }
                        None => ledger.corrupted += 1,
                    }
                    last = now;
                }
                (Role::Receiver, _) => failed += 1,
            }
            (ledger.received >= total && answered >= total) || failed > 0
        })
        .map_err(|e| e.to_string())?;
    let secs = (last - first) as f64 / 1e9;
    let mut r = Report::new("pairs");
    r.metric("delivered", ledger.received as f64 / secs, "msg/s");
    r.metric("latency p50", lat.quantile_us(0.5), "us");
    r.metric("latency p99", lat.quantile_us(0.99), "us");
    r.metric("latency p99.9", lat.quantile_us(0.999), "us");
    r.metric("latency max", lat.quantile_us(1.0), "us");
    if let (Some(a), Some(b)) = (cpu0, env.server_cpu()) {
        r.metric("server cpu", (b - a) * 1e6 / ledger.received.max(1) as f64, "us/msg");
        r.metric("server cpu total", b - a, "s");
    }
    r.metric("bench cpu total", own_cpu() - own0, "s");
    if let Some(e) = ledger.errors() {
        r.errors.push(e);
    }
    if failed > 0 {
        r.errors.push(format!("{failed} unexpected answers (failed or invalid)"));
    }
    if !done {
        r.errors.push(format!("timed out: {answered} of {total} sends answered"));
    }
    Ok(r)
}
