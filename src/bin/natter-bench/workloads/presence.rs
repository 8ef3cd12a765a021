//! `presence`: what presence and typing cost when abused (issue 14).
//!
//! - churn: a user with C contacts, all online and subscribed to presence, logs in and out
//!   as fast as it can for S seconds while a bystander pair chats at 1,000 msg/s. Each cycle
//!   tells every contact twice. Measures cycles per second, server CPU per cycle and per
//!   event, and the pair's latency.
//! - typing: a client sends `typing` to a subscribed contact as fast as the socket takes it
//!   for S seconds, beside the same pair. Measures the events the server took and passed
//!   on (at most 2 per second), server CPU per event, and the pair's latency.

use super::{delivered, login_all, login_all_with, login_frame, personal_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::server::email;
use crate::stats::Samples;
use std::time::{Duration, Instant};

pub struct Params {
    pub contacts: usize,
    pub seconds: f64,
    pub size: usize,
}

/// The users: 0 churns (or types), 1..=contacts are its contacts, then the pair.
pub fn users(contacts: usize) -> usize {
    contacts + 3
}

pub fn run(env: &Env, p: &Params) -> Result<Vec<Report>, String> {
    Ok(vec![churn(env, p)?, typing(env, p)?])
}

/// Runs the bystander pair at 1,000/s while `work` is called every round; returns the
/// pair's latency samples and how many messages it expected.
#[allow(clippy::too_many_arguments)]
pub(super) fn beside_pair(
    cl: &mut Clients,
    env: &Env,
    pair: &[usize],
    pair_to: usize,
    seconds: f64,
    size: usize,
    mut work: impl FnMut(&mut Clients, usize, &[u8]),
    mut tick: impl FnMut(&mut Clients),
) -> Result<(Samples, u64), String> {
    let interval = Duration::from_millis(1);
    let mut lat = Samples::default();
    let (mut next, mut frame) = (0u64, Vec::new());
    let start = Instant::now();
    let length = Duration::from_secs_f64(seconds);
    while start.elapsed() < length {
        while start.elapsed() >= interval * next as u32 {
            frame.clear();
            personal_frame(&mut frame, pair_to, 0, next, env.now_ns(), size);
            cl.send(pair[0], &frame);
            next += 1;
        }
        tick(cl);
        cl.round(Duration::from_millis(1)).map_err(|e| e.to_string())?;
        let now = env.now_ns();
        let lines = std::mem::take(&mut cl.lines);
        let arena = std::mem::take(&mut cl.arena);
        for (ci, range) in &lines {
            let line = &arena[range.clone()];
            if *ci == pair[1] {
                if let Some(a) = Answer::parse(line).filter(|a| a.event == "personal") {
                    if let Some((_, _, t)) = delivered(&a, size) {
                        lat.push(now.saturating_sub(t));
                    }
                }
            } else {
                work(cl, *ci, line);
            }
        }
        cl.lines = lines;
        cl.arena = arena;
    }
    Ok((lat, next))
}

fn churn(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let contacts: Vec<usize> = (1..=p.contacts).collect();
    let mut watchers = Vec::with_capacity(p.contacts);
    for chunk in contacts.chunks(500) {
        watchers.extend(login_all_with(&mut cl, env, chunk, "\"subscribe\":[\"presence\"]")?);
    }
    let pair_users = [p.contacts + 1, p.contacts + 2];
    let pair = login_all(&mut cl, env, &pair_users, false)?;
    let churner = cl.connect(env.addr).map_err(|e| e.to_string())?;
    let login = login_frame(0, "");
    cl.send(churner, login.as_bytes());
    let (mut cycles, mut events, mut logged_in) = (0u64, 0u64, false);
    let cpu0 = env.server_cpu();
    let (lat, expected) = beside_pair(
        &mut cl,
        env,
        &pair,
        pair_users[1],
        p.seconds,
        p.size,
        |cl, ci, line| {
            let Some(a) = Answer::parse(line) else { return };
            if ci == churner {
                if a.is("success", "login") {
                    logged_in = true;
                    cl.send(churner, b"{\"type\":\"logout\"}\n");
                } else if a.is("success", "logout") && logged_in {
                    logged_in = false;
                    cycles += 1;
                    cl.send(churner, login.as_bytes());
                }
            } else if a.is("presence", "presence") {
                events += 1;
            }
        },
        |_| {},
    )?;
    let cpu = cpu0.zip(env.server_cpu()).map(|(a, b)| b - a);
    let mut lat = lat;
    let mut r = Report::new("presence churn");
    r.metric("contacts online", p.contacts as f64, "");
    r.metric("login+logout cycles", cycles as f64 / p.seconds, "cycles/s");
    r.metric("presence events delivered", events as f64 / p.seconds, "events/s");
    if let Some(cpu) = cpu {
        r.metric("server CPU share", cpu / p.seconds * 100.0, "%");
        r.metric("server CPU per login+logout cycle", cpu * 1e6 / cycles.max(1) as f64, "us");
    }
    r.metric("pair latency p50", lat.quantile_us(0.5), "us");
    r.metric("pair latency p99", lat.quantile_us(0.99), "us");
    if (lat.len() as u64) + 50 < expected {
        r.errors.push(format!("the pair received {} of {expected} messages", lat.len()));
    }
    if watchers.len() < p.contacts {
        r.errors.push(format!("only {} of {} contacts logged in", watchers.len(), p.contacts));
    }
    Ok(r)
}

fn typing(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let watcher = login_all_with(&mut cl, env, &[1], "\"subscribe\":[\"typing\"]")?[0];
    let typist = login_all(&mut cl, env, &[0], false)?[0];
    let pair_users = [p.contacts + 1, p.contacts + 2];
    let pair = login_all(&mut cl, env, &pair_users, false)?;
    let frame = format!("{{\"type\":\"typing\",\"details\":{{\"to\":\"{}\",\"typing\":true}}}}\n", email(1)).repeat(64);
    let (mut sent, mut passed) = (0u64, 0u64);
    let cpu0 = env.server_cpu();
    let (lat, expected) = beside_pair(
        &mut cl,
        env,
        &pair,
        pair_users[1],
        p.seconds,
        p.size,
        |_, ci, line| {
            if ci == watcher && Answer::parse(line).is_some_and(|a| a.is("typing", "typing")) {
                passed += 1;
            }
        },
        |cl| {
            // As fast as the socket takes it: a batch whenever the last one went out.
            if cl.unsent(typist) == 0 {
                cl.send(typist, frame.as_bytes());
                sent += 64;
            }
        },
    )?;
    let cpu = cpu0.zip(env.server_cpu()).map(|(a, b)| b - a);
    let mut lat = lat;
    let mut r = Report::new("typing flood");
    r.metric("typing events sent", sent as f64 / p.seconds, "events/s");
    r.metric("typing events passed on", passed as f64 / p.seconds, "events/s");
    if let Some(cpu) = cpu {
        r.metric("server CPU per typing event", cpu * 1e6 / sent.max(1) as f64, "us");
    }
    r.metric("pair latency p50", lat.quantile_us(0.5), "us");
    r.metric("pair latency p99", lat.quantile_us(0.99), "us");
    if passed as f64 > 2.0 * p.seconds.ceil() + 2.0 {
        r.errors.push(format!("{passed} typing events passed on in {} s: more than 2 per second", p.seconds));
    }
    if (lat.len() as u64) + 50 < expected {
        r.errors.push(format!("the pair received {} of {expected} messages", lat.len()));
    }
    Ok(r)
}
