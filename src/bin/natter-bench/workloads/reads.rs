//! `reads`: what a user's reading costs at the database's size (issue 17's scale steps, on a
//! database made by `natter-bench fill`). One request at a time, each timed from its send
//! to its answer: logins of users with their contacts, `history` (the newest page with a
//! random contact, then the page before it), `unread`, and one `users` while a bystander
//! pings: the answer's size and how long the bystander waited meanwhile (the loop's stall).

use super::{login_frame, Env, Report};
use crate::net::Clients;
use crate::rng::Rng;
use crate::stats::Samples;
use std::time::{Duration, Instant};

pub struct Params {
    /// Requests of each kind.
    pub requests: usize,
    /// Users in the database (logins pick among them).
    pub users: usize,
}

/// The two fields every answer has; `details` (an array for these answers) is skipped.
#[derive(serde::Deserialize)]
struct Head<'a> {
    event: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

fn head(line: &[u8]) -> Option<Head<'_>> {
    serde_json::from_slice(line).ok()
}

/// Sends `frame` on `c` and waits for the first line of `ty` that answers it; returns the
/// line and the time it took.
fn ask(cl: &mut Clients, env: &Env, c: usize, frame: &str, ty: &str) -> Result<(Vec<u8>, Duration), String> {
    let t0 = Instant::now();
    cl.send(c, frame.as_bytes());
    let mut got = None;
    cl.until(env.limit, |_, i, line| {
        if i == c && head(line).is_some_and(|h| h.kind == ty) {
            got = Some(line.to_vec());
        }
        got.is_some()
    })
    .map_err(|e| e.to_string())?;
    let line = got.ok_or(format!("no answer to {ty} in {:?}", env.limit))?;
    Ok((line, t0.elapsed()))
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut r = Report::new("reads");
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    // A million accounts' `users` is one line of tens of MB.
    cl.max_line = 1 << 30;
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);

    // Logins, each on a fresh connection; the last one stays for the reads.
    let mut logins = Samples::default();
    let mut friends: Vec<String> = Vec::new();
    let mut me = 0;
    for _ in 0..p.requests.min(100) {
        let c = cl.connect(env.addr).map_err(|e| e.to_string())?;
        let user = rng.below(p.users as u64) as usize;
        let (line, took) = ask(&mut cl, env, c, &login_frame(user, ""), "login")?;
        let v: serde_json::Value = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
        if v["event"] != "success" {
            return Err(format!("login failed: {v}"));
        }
        logins.push(took.as_nanos() as u64);
        friends = v["details"]["friends"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x["email"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        me = c;
    }
    r.metric("login p50", logins.quantile_us(0.5), "us");
    r.metric("login p99", logins.quantile_us(0.99), "us");
    r.metric("contacts of the reader", friends.len() as f64, "");

    let (mut first, mut deeper, mut rows) = (Samples::default(), Samples::default(), 0usize);
    for _ in 0..p.requests {
        let Some(with) = friends.get(rng.below(friends.len() as u64) as usize) else { break };
        let ask_page = format!("{{\"type\":\"history\",\"details\":{{\"with\":\"{with}\",\"limit\":50}}}}\n");
        let (line, took) = ask(&mut cl, env, me, &ask_page, "history")?;
        first.push(took.as_nanos() as u64);
        let v: serde_json::Value = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
        let page = v["details"].as_array().cloned().unwrap_or_default();
        rows += page.len();
        if let Some(oldest) = page.last().and_then(|m| m["id"].as_str()) {
            let before = format!(
                "{{\"type\":\"history\",\"details\":{{\"with\":\"{with}\",\"before\":\"{oldest}\",\"limit\":50}}}}\n"
            );
            let (_, took) = ask(&mut cl, env, me, &before, "history")?;
            deeper.push(took.as_nanos() as u64);
        }
    }
    r.metric("history p50", first.quantile_us(0.5), "us");
    r.metric("history p99", first.quantile_us(0.99), "us");
    r.metric("history rows per page", rows as f64 / first.len().max(1) as f64, "");
    r.metric("history before p50", deeper.quantile_us(0.5), "us");
    r.metric("history before p99", deeper.quantile_us(0.99), "us");

    let mut unread = Samples::default();
    for _ in 0..p.requests {
        let (_, took) = ask(&mut cl, env, me, "{\"type\":\"unread\"}\n", "unread")?;
        unread.push(took.as_nanos() as u64);
    }
    r.metric("unread p50", unread.quantile_us(0.5), "us");
    r.metric("unread p99", unread.quantile_us(0.99), "us");

    // `users` while a bystander pings back to back: the longest ping is the loop's stall.
    let bystander = cl.connect(env.addr).map_err(|e| e.to_string())?;
    let ping = b"{\"type\":\"ping\"}\n";
    cl.send(bystander, ping);
    cl.send(me, b"{\"type\":\"users\"}\n");
    let t0 = Instant::now();
    let mut sent_ping = Instant::now();
    let (mut worst, mut pings) = (Duration::ZERO, 0u64);
    let mut answer: Option<(usize, Duration, bool)> = None;
    cl.until(env.limit, |cl, i, line| {
        if i == bystander {
            worst = worst.max(sent_ping.elapsed());
            pings += 1;
            sent_ping = Instant::now();
            cl.send(bystander, ping);
        } else if i == me {
            if let Some(h) = head(line).filter(|h| h.kind == "users") {
                answer = Some((line.len(), t0.elapsed(), h.event == "success"));
            }
        }
        answer.is_some()
    })
    .map_err(|e| e.to_string())?;
    let (bytes, took, ok) = answer.ok_or("no answer to users")?;
    r.metric("users answer", bytes as f64 / 1024.0, "KiB");
    r.metric("users answer time", took.as_secs_f64() * 1000.0, "ms");
    r.metric("bystander pings meanwhile", pings as f64, "");
    r.metric("bystander longest ping", worst.as_secs_f64() * 1000.0, "ms");
    if !ok {
        r.errors.push(format!("users was not answered with success: {}", bytes));
    }
    Ok(r)
}
