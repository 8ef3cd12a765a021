//! `groups`: two measurements of PROTOCOL.md section 14's groups.
//!
//! - fan-out: one group of M members, all online; one member sends N messages at once;
//!   every other member must receive each exactly once. Deliveries per second from the
//!   first send to the last receipt.
//! - catch-up: a member of G groups is offline while B messages are sent to them (round
//!   robin); from its login answer to its last message, every message exactly once.

use super::{delivered, login_all, login_frame, own_cpu, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::server::email;
use crate::stats::{Ledger, Samples};
use std::io::Write;

pub struct Params {
    pub members: usize,
    pub messages: u64,
    /// catch-up: groups the offline member is in.
    pub groups: usize,
    /// catch-up: messages sent while it is offline.
    pub backlog: u64,
    pub size: usize,
}

/// A group message frame with the payload of `personal_frame`.
fn group_frame(out: &mut Vec<u8>, group: &str, stream: usize, seq: u64, t_ns: u64, size: usize) {
    let _ =
        write!(out, "{{\"event\":\"group\",\"type\":\"message\",\"details\":{{\"group\":\"{group}\",\"message\":\"");
    let text_start = out.len();
    let _ = write!(out, "{stream} {seq} {t_ns} ");
    while out.len() - text_start < size {
        out.push(b'x');
    }
    out.extend_from_slice(b"\"}}\n");
}

/// Creates a group of `members` (emails) from client `owner`; returns its id once the
/// owner's answer and every other online member's update have arrived.
fn create(cl: &mut Clients, env: &Env, owner: usize, members: &[usize], online: usize) -> Result<String, String> {
    let list: Vec<String> = members.iter().map(|&u| format!("\"{}\"", email(u))).collect();
    let frame = format!(
        "{{\"type\":\"group\",\"event\":\"create\",\"details\":{{\"name\":\"bench\",\"members\":[{}]}}}}\n",
        list.join(",")
    );
    cl.send(owner, frame.as_bytes());
    let (mut id, mut updates, mut bad) = (None, 0usize, None);
    let ok = cl
        .until(env.limit, |_, ci, line| {
            match Answer::parse(line) {
                Some(a) if ci == owner && a.is("success", "group") => id = a.details.group.map(str::to_owned),
                Some(a) if a.is("update", "group") => updates += 1,
                _ => bad = Some(String::from_utf8_lossy(line).into_owned()),
            }
            (id.is_some() && updates >= online) || bad.is_some()
        })
        .map_err(|e| e.to_string())?;
    if let Some(line) = bad {
        return Err(format!("creating a group: {line}"));
    }
    match (ok, id) {
        (true, Some(id)) => Ok(id),
        _ => Err(format!("creating a group: {updates} of {online} updates")),
    }
}

pub fn run(env: &Env, p: &Params) -> Result<Vec<Report>, String> {
    Ok(vec![fan_out(env, p)?, catch_up(env, p)?])
}

fn fan_out(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let users: Vec<usize> = (0..p.members).collect();
    let ids = login_all(&mut cl, env, &users, false)?;
    let sender = ids[0];
    let group = create(&mut cl, env, sender, &users[1..], p.members - 1)?;
    let mut receiver_of = vec![usize::MAX; cl.clients.len()];
    for (r, &ci) in ids[1..].iter().enumerate() {
        receiver_of[ci] = r;
    }
    let (cpu0, own0) = (env.server_cpu(), own_cpu());
    let total = (p.members as u64 - 1) * p.messages;
    let mut ledger = Ledger::new(p.members - 1, total);
    let mut lat = Samples::default();
    let (mut sent_answers, mut other) = (0u64, 0u64);
    let first = env.now_ns();
    let mut frame = Vec::new();
    for seq in 0..p.messages {
        frame.clear();
        group_frame(&mut frame, &group, 0, seq, env.now_ns(), p.size);
        cl.send(sender, &frame);
    }
    let mut last = first;
    let done = cl
        .until(env.limit, |_, ci, line| {
            let r = receiver_of[ci];
            match Answer::parse(line) {
                Some(a) if r != usize::MAX && a.is("group", "message") => {
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
                Some(a) if ci == sender && a.is("sent", "message") => sent_answers += 1,
                _ => other += 1,
            }
            ledger.received + ledger.duplicated >= total || other > 0
        })
        .map_err(|e| e.to_string())?;
    let secs = (last - first) as f64 / 1e9;
    let mut r = Report::new("groups fan-out");
    r.metric("members", p.members as f64, "");
    r.metric("deliveries", ledger.received as f64 / secs.max(1e-9), "msg/s");
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

fn catch_up(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let sender = login_all(&mut cl, env, &[0], false)?[0];
    let mut groups = Vec::with_capacity(p.groups);
    for _ in 0..p.groups {
        groups.push(create(&mut cl, env, sender, &[1], 0)?);
    }
    let window = 256u64;
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut frame = Vec::new();
    while sent < window.min(p.backlog) {
        frame.clear();
        group_frame(&mut frame, &groups[sent as usize % groups.len()], 0, sent, 0, p.size);
        cl.send(sender, &frame);
        sent += 1;
    }
    let stored = cl
        .until(env.limit, |cl, _, line| {
            if Answer::parse(line).is_some_and(|a| a.is("sent", "message")) {
                answered += 1;
                if sent < p.backlog {
                    let mut f = Vec::with_capacity(p.size + 100);
                    group_frame(&mut f, &groups[sent as usize % groups.len()], 0, sent, 0, p.size);
                    cl.send(sender, &f);
                    sent += 1;
                }
            }
            answered >= p.backlog
        })
        .map_err(|e| e.to_string())?;
    if !stored {
        return Err(format!("only {answered} of {} group messages stored", p.backlog));
    }
    let me = cl.connect(env.addr).map_err(|e| e.to_string())?;
    cl.send(me, login_frame(1, "").as_bytes());
    let mut ledger = Ledger::new(1, p.backlog);
    let (mut t_login, mut t_last) = (0u64, 0u64);
    let done = cl
        .until(env.limit, |_, ci, line| {
            if ci != me {
                return false;
            }
            match Answer::parse(line) {
                Some(a) if a.is("success", "login") => t_login = env.now_ns(),
                Some(a) if a.is("group", "message") => {
                    match delivered(&a, p.size) {
                        Some((_, seq, _)) => ledger.record(0, seq),
                        None => ledger.corrupted += 1,
                    }
                    t_last = env.now_ns();
                }
                _ => {}
            }
            ledger.received + ledger.duplicated >= p.backlog
        })
        .map_err(|e| e.to_string())?;
    let mut r = Report::new("groups catch-up");
    let secs = t_last.saturating_sub(t_login) as f64 / 1e9;
    r.metric("groups", p.groups as f64, "");
    r.metric("backlog", p.backlog as f64, "msgs");
    r.metric("login answer to last message", secs * 1000.0, "ms");
    if let Some(e) = ledger.errors() {
        r.errors.push(e);
    }
    if !done {
        r.errors.push("timed out".into());
    }
    Ok(r)
}
