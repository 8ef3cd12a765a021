//! `restart`: N logged-in clients, the server stopped with SIGTERM and started again on
//! the same address and database, and every client coming back as a real one would: it
//! sees its connection end, waits a random 0 to 250 ms, connects and logs in, and doubles
//! its wait (up to 4 s) after each refused or failed try. Measures the time from SIGTERM
//! until all N are logged in again. Needs a spawned server (`--spawn`).

use super::{login_all_batched, login_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::rng::Rng;
use crate::server::Target;
use std::time::{Duration, Instant};

pub struct Params {
    pub clients: usize,
}

pub fn run(env: &Env, target: &mut Target, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let users: Vec<usize> = (0..p.clients).collect();
    login_all_batched(&mut cl, env, &users, false)?;
    let t0 = Instant::now();
    let listening = target.restart()?;
    let addr = target.addr;

    let mut rng = Rng::new(0x853c_49e6_748f_ea9b);
    // Per client: when it tries next, its current wait, and whether a login is in flight.
    let now = Instant::now();
    let mut next: Vec<Option<Instant>> =
        (0..p.clients).map(|_| Some(now + Duration::from_millis(rng.below(250)))).collect();
    let mut wait = vec![Duration::from_millis(250); p.clients];
    let mut pending = vec![false; p.clients];
    // After a failed try: twice the wait (at most 4 s), half of it fixed and half random.
    let mut back_off = |wait: &mut Duration| {
        *wait = (*wait * 2).min(Duration::from_secs(4));
        let half = *wait / 2;
        Some(Instant::now() + half + Duration::from_millis(rng.below(half.as_millis() as u64)))
    };
    let (mut done, mut tries, mut refused) = (0usize, 0u64, 0u64);
    let (mut last_connect, mut half) = (Duration::ZERO, Duration::ZERO);
    let end = Instant::now() + env.limit;
    while done < p.clients && Instant::now() < end {
        let now = Instant::now();
        for i in 0..p.clients {
            if next[i].is_some_and(|t| now >= t) {
                next[i] = None;
                tries += 1;
                match cl.reconnect(i, addr) {
                    Ok(()) => {
                        last_connect = t0.elapsed();
                        cl.send(i, login_frame(i, "").as_bytes());
                        pending[i] = true;
                    }
                    Err(_) => {
                        refused += 1;
                        next[i] = back_off(&mut wait[i]);
                    }
                }
            }
        }
        cl.round(Duration::from_millis(2)).map_err(|e| e.to_string())?;
        for (i, range) in std::mem::take(&mut cl.lines) {
            match Answer::parse(&cl.arena[range]) {
                Some(a) if a.is("success", "login") && pending[i] => {
                    pending[i] = false;
                    done += 1;
                    if done == p.clients / 2 {
                        half = t0.elapsed();
                    }
                }
                Some(a) if a.is("failed", "login") && pending[i] => {
                    pending[i] = false;
                    next[i] = back_off(&mut wait[i]);
                }
                _ => {}
            }
        }
        // A try whose connection ended before its answer waits and tries again.
        for i in 0..p.clients {
            if pending[i] && !cl.clients[i].open {
                pending[i] = false;
                refused += 1;
                next[i] = back_off(&mut wait[i]);
            }
        }
    }
    let mut r = Report::new("restart");
    r.metric("clients", p.clients as f64, "");
    r.metric("SIGTERM to listening again", listening.as_secs_f64() * 1000.0, "ms");
    r.metric("SIGTERM to the last connection made", last_connect.as_secs_f64() * 1000.0, "ms");
    r.metric("SIGTERM to half logged in", half.as_secs_f64() * 1000.0, "ms");
    r.metric("SIGTERM to all logged in", t0.elapsed().as_secs_f64() * 1000.0, "ms");
    r.metric("connection tries", tries as f64, "");
    r.metric("tries refused or cut", refused as f64, "");
    if done < p.clients {
        r.errors.push(format!("only {done} of {} clients logged in again", p.clients));
    }
    Ok(r)
}
