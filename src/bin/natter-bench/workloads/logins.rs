//! `logins`: C clients connect and log in at once while one pair streams messages at a
//! fixed rate. Measures logins per second and the pair's latency during the storm.

use super::{delivered, login_all, login_frame, personal_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::stats::Samples;
use std::time::{Duration, Instant};

pub struct Params {
    pub clients: usize,
    /// The pair's rate during the storm.
    pub rate: u64,
    pub size: usize,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let pair = login_all(&mut cl, env, &[0, 1], false)?;
    let t0 = env.now_ns();
    let mut stormers = Vec::with_capacity(p.clients);
    for u in 2..2 + p.clients {
        let i = cl.connect(env.addr).map_err(|e| format!("connect: {e}"))?;
        cl.send(i, login_frame(u, "").as_bytes());
        stormers.push(i);
    }
    let interval = Duration::from_secs_f64(1.0 / p.rate.max(1) as f64);
    let (mut logged_in, mut failed, mut next) = (0usize, 0usize, 0u64);
    let mut lat = Samples::default();
    let mut t_last_login = t0;
    let mut frame = Vec::new();
    let start = Instant::now();
    while logged_in + failed < p.clients && start.elapsed() < env.limit {
        while start.elapsed() >= interval * next as u32 {
            frame.clear();
            personal_frame(&mut frame, 1, 0, next, env.now_ns(), p.size);
            cl.send(pair[0], &frame);
            next += 1;
        }
        cl.round(Duration::from_millis(1)).map_err(|e| e.to_string())?;
        let now = env.now_ns();
        for (ci, range) in &cl.lines {
            match Answer::parse(&cl.arena[range.clone()]) {
                Some(a) if *ci == pair[1] && a.event == "personal" => {
                    if let Some((_, _, t)) = delivered(&a, p.size) {
                        lat.push(now.saturating_sub(t));
                    }
                }
                _ if *ci < stormers[0] => {}
                Some(a) if a.is("success", "login") => {
                    logged_in += 1;
                    t_last_login = now;
                }
                _ => failed += 1,
            }
        }
        // A connection the server closed will not answer: count it now, not at the timeout.
        if start.elapsed() > Duration::from_secs(1) && logged_in + failed < p.clients {
            let closed = stormers.iter().filter(|&&i| !cl.clients[i].open).count();
            if closed > 0 && logged_in + failed + closed >= p.clients {
                failed += closed;
            }
        }
    }
    let secs = (t_last_login - t0) as f64 / 1e9;
    let mut r = Report::new("logins");
    r.metric("logins", logged_in as f64 / secs.max(1e-9), "logins/s");
    r.metric("storm duration", secs * 1000.0, "ms");
    r.metric("pair latency p50", lat.quantile_us(0.5), "us");
    r.metric("pair latency p99", lat.quantile_us(0.99), "us");
    if logged_in < p.clients {
        r.errors.push(format!("{logged_in} of {} logins succeeded ({failed} failed)", p.clients));
    }
    Ok(r)
}
