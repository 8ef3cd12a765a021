//! `storm`: a presence storm (issue 14). U users with about K contacts each are logged in
//! and subscribed to presence; C of them log out and in again at once, beside a bystander
//! pair chatting at 1,000 msg/s.
//!
//! The C churners are users 0..C, each a contact of K watchers (the other users, who also
//! form a ring of contacts among themselves); no churner is another's contact. All C log
//! out at once; 100 ms after the last logout answer all C log in again at once. Every
//! watcher must hear each of its churners exactly twice: offline at once, then online a
//! second after that (a user is announced at most once a second; a user back within the
//! timer's tick would be announced once, as where it ended). Anything else is an error: a
//! lost event, a duplicate, or the wrong order.

use super::presence::beside_pair;
use super::{login_all, login_all_with, login_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::server::email;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub struct Params {
    pub users: usize,
    pub contacts: usize,
    pub churners: usize,
    pub seconds: f64,
    pub size: usize,
}

/// The bench users: the storm's, then the pair.
pub fn users(p: &Params) -> usize {
    p.users + 2
}

/// The contact pairs to create (user indexes).
pub fn contact_pairs(p: &Params) -> Vec<(usize, usize)> {
    let (c, w) = (p.churners, p.users - p.churners);
    let mut pairs = Vec::new();
    for churner in 0..c {
        for k in 0..p.contacts.min(w) {
            pairs.push((churner, c + (churner * p.contacts + k) % w));
        }
    }
    // The watchers' own ring: the rest of their contacts (each about K / 2 on each side,
    // less what the churners gave it).
    let per_watcher_from_churners = (c * p.contacts).div_ceil(w.max(1));
    let side = p.contacts.saturating_sub(per_watcher_from_churners) / 2;
    for j in 0..w {
        for d in 1..=side.min(w / 2) {
            pairs.push((c + j, c + (j + d) % w));
        }
    }
    pairs
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let everyone: Vec<usize> = (0..p.users).collect();
    let mut conns = Vec::with_capacity(p.users);
    for chunk in everyone.chunks(500) {
        conns.extend(login_all_with(&mut cl, env, chunk, "\"subscribe\":[\"presence\"]")?);
    }
    let pair_users = [p.users, p.users + 1];
    let pair = login_all(&mut cl, env, &pair_users, false)?;
    // The quiet second: the churners' own logins are announced and a second has passed, so
    // that their logouts are announced at once.
    cl.until(Duration::from_millis(1200), |_, _, _| false).map_err(|e| e.to_string())?;

    let churners = &conns[..p.churners];
    let is_churner: HashSet<usize> = churners.iter().copied().collect();
    let emails: HashMap<String, usize> = (0..p.churners).map(|u| (email(u), u)).collect();
    let login = |u: usize| login_frame(u, "\"subscribe\":[\"presence\"]");
    // (watcher connection, churner) -> the states heard, in order.
    let mut heard: HashMap<(usize, usize), Vec<bool>> = HashMap::new();
    let (mut back, mut out, mut started, mut stray) = (0usize, 0usize, false, 0u64);
    // Set by the line handler, read by the tick: both closures hold it.
    let all_out_at: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    let mut relogged = false;
    let (mut last_offline, mut first_online, mut last_online) = (0u64, u64::MAX, 0u64);
    let cpu0 = env.server_cpu();
    let t0 = env.now_ns();
    let (lat, expected) = beside_pair(
        &mut cl,
        env,
        &pair,
        pair_users[1],
        p.seconds,
        p.size,
        |_, ci, line| {
            let Some(a) = Answer::parse(line) else { return };
            if is_churner.contains(&ci) {
                if a.is("success", "logout") {
                    out += 1;
                    if out == churners.len() {
                        all_out_at.set(Some(Instant::now()));
                    }
                } else if a.is("success", "login") {
                    back += 1;
                }
                return;
            }
            if !a.is("presence", "presence") {
                return;
            }
            let v: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(_) => return,
            };
            let (Some(who), Some(online)) = (v["details"]["email"].as_str(), v["details"]["online"].as_bool()) else {
                return;
            };
            let Some(&u) = emails.get(who) else {
                stray += 1;
                return;
            };
            let now = env.now_ns() - t0;
            if online {
                first_online = first_online.min(now);
                last_online = last_online.max(now);
            } else {
                last_offline = last_offline.max(now);
            }
            heard.entry((ci, u)).or_default().push(online);
        },
        |cl| {
            if !started {
                started = true;
                for &ci in churners {
                    cl.send(ci, b"{\"type\":\"logout\"}\n");
                }
            }
            if !relogged && all_out_at.get().is_some_and(|t| t.elapsed() >= Duration::from_millis(100)) {
                relogged = true;
                for (u, &ci) in churners.iter().enumerate() {
                    cl.send(ci, login(u).as_bytes());
                }
            }
        },
    )?;
    let cpu = cpu0.zip(env.server_cpu()).map(|(a, b)| b - a);
    // Every (watcher, churner) contact pair must have heard [offline, online].
    let expected_pairs = p.churners * p.contacts.min(p.users - p.churners);
    let (mut right, mut wrong) = (0usize, Vec::new());
    for (k, states) in &heard {
        if states.as_slice() == [false, true] {
            right += 1;
        } else if wrong.len() < 3 {
            wrong.push(format!("watcher conn {} heard user {} as {:?}", k.0, k.1, states));
        }
    }
    let events: usize = heard.values().map(Vec::len).sum();
    let mut lat = lat;
    let mut r = Report::new("presence storm");
    r.metric("users online and subscribed", p.users as f64, "");
    r.metric("churners (out and in at once)", p.churners as f64, "");
    r.metric("churners back", back as f64, "");
    r.metric("presence events delivered", events as f64, "");
    r.metric("offline wave: last event after", last_offline as f64 / 1e6, "ms");
    r.metric("online wave: first to last event", last_online.saturating_sub(first_online) as f64 / 1e6, "ms");
    let busy_ms = last_offline as f64 / 1e6 + last_online.saturating_sub(first_online) as f64 / 1e6;
    r.metric("events per second while delivering", events as f64 / (busy_ms / 1e3).max(1e-3), "events/s");
    if let Some(cpu) = cpu {
        r.metric("server CPU per event", cpu * 1e6 / events.max(1) as f64, "us");
    }
    r.metric("pair latency p50", lat.quantile_us(0.5), "us");
    r.metric("pair latency p99", lat.quantile_us(0.99), "us");
    if right != expected_pairs || heard.len() != expected_pairs {
        r.errors.push(format!(
            "{right} of {expected_pairs} contact pairs heard exactly offline then online ({} heard anything); {}",
            heard.len(),
            wrong.join("; ")
        ));
    }
    if back != p.churners {
        r.errors.push(format!("{back} of {} churners logged in again", p.churners));
    }
    if stray > 0 {
        r.errors.push(format!("{stray} presence events about users that did not change"));
    }
    if (lat.len() as u64) + 50 < expected {
        r.errors.push(format!("the pair received {} of {expected} messages", lat.len()));
    }
    Ok(r)
}
