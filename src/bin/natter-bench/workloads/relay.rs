//! `relay`: C calls set up over the protocol, each party sending D datagrams per second of
//! a fixed size for T seconds through the UDP relay. Measures forwarded datagrams per
//! second, loss, and one-way latency through the relay. The kernel's UDP receive-buffer
//! drop counter (system-wide, /proc/net/snmp) is reported beside the loss.

use super::{login_all, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::server::email;
use crate::stats::{Ledger, Samples};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Params {
    pub calls: usize,
    pub per_second: u64,
    pub seconds: f64,
    pub size: usize,
}

/// Sets up the calls; returns each party's (token, relay address), caller then callee.
fn set_up(cl: &mut Clients, env: &Env, ids: &[usize], calls: usize) -> Result<Vec<(String, SocketAddr)>, String> {
    for i in 0..calls {
        let frame =
            format!("{{\"type\":\"voice\",\"event\":\"call\",\"details\":{{\"email\":\"{}\"}}}}\n", email(2 * i + 1));
        cl.send(ids[2 * i], frame.as_bytes());
    }
    let mut party_of = std::collections::HashMap::new();
    for (k, &ci) in ids.iter().enumerate() {
        party_of.insert(ci, k);
    }
    let mut accepted: Vec<Option<(String, SocketAddr)>> = vec![None; 2 * calls];
    let mut left = 2 * calls;
    let mut error = None;
    let ok = cl
        .until(env.limit, |cl, ci, line| {
            let k = party_of[&ci];
            match Answer::parse(line) {
                Some(a) if a.is("request", "voice") => {
                    let frame = format!(
                        "{{\"type\":\"voice\",\"event\":\"accept\",\"details\":{{\"email\":\"{}\"}}}}\n",
                        email(k - 1)
                    );
                    cl.send(ci, frame.as_bytes());
                }
                Some(a) if a.is("accept", "voice") => {
                    let d = &a.details;
                    let addr =
                        d.ip.zip(d.port).and_then(|(ip, port)| format!("{ip}:{port}").parse::<SocketAddr>().ok());
                    match (d.token, addr) {
                        (Some(t), Some(addr)) if accepted[k].is_none() => {
                            accepted[k] = Some((t.to_owned(), addr));
                            left -= 1;
                        }
                        _ => error = Some(String::from_utf8_lossy(line).into_owned()),
                    }
                }
                _ => error = Some(String::from_utf8_lossy(line).into_owned()),
            }
            left == 0 || error.is_some()
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = error {
        return Err(format!("call set-up: unexpected answer {e}"));
    }
    if !ok {
        return Err(format!("call set-up timed out with {left} parties unanswered"));
    }
    Ok(accepted.into_iter().flatten().collect())
}

/// One-way latency of the same traffic sent directly between two sockets of this process
/// (no relay): the baseline that the relay's "added" latency is measured against.
fn direct_baseline(env: &Env, count: usize, per_second: u64, size: usize) -> Result<Samples, String> {
    let any: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let tx = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    let mut rx = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry().register(&mut rx, Token(0), Interest::READABLE).map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(64);
    let mut lat = Samples::default();
    let interval = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
    let mut buf = vec![0u8; 2048];
    for _ in 0..count {
        let mut d = vec![b'v'; size.max(16)];
        d[8..16].copy_from_slice(&env.now_ns().to_le_bytes());
        tx.send_to(&d, to).map_err(|e| e.to_string())?;
        let until = std::time::Instant::now() + interval;
        while std::time::Instant::now() < until {
            poll.poll(&mut events, Some(until.saturating_duration_since(std::time::Instant::now())))
                .map_err(|e| e.to_string())?;
            while let Ok((n, _)) = rx.recv_from(&mut buf) {
                if n >= 16 {
                    let t = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
                    lat.push(env.now_ns().saturating_sub(t));
                }
            }
        }
    }
    Ok(lat)
}

fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    // The same pacing as one party, without the relay, for the baseline.
    let mut base = direct_baseline(
        env,
        500.min((p.per_second as f64 * p.seconds) as usize).max(50),
        p.per_second.max(200),
        p.size,
    )?;
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let users: Vec<usize> = (0..2 * p.calls).collect();
    let ids = login_all(&mut cl, env, &users, false)?;
    let parties = set_up(&mut cl, env, &ids, p.calls)?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut socks = Vec::with_capacity(parties.len());
    for (k, (token, relay)) in parties.iter().enumerate() {
        let mut s = UdpSocket::bind("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?).map_err(|e| e.to_string())?;
        poll.registry().register(&mut s, Token(k), Interest::READABLE).map_err(|e| e.to_string())?;
        s.send_to(token.as_bytes(), *relay).map_err(|e| e.to_string())?;
        socks.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let per_party = (p.per_second as f64 * p.seconds) as u64;
    let total = per_party * parties.len() as u64;
    let mut ledger = Ledger::new(parties.len(), total);
    let mut lat = Samples::default();
    let mut next = vec![0u64; parties.len()];
    let interval = Duration::from_secs_f64(1.0 / p.per_second.max(1) as f64);
    // Spread the parties' first sends over one interval.
    let offset: Vec<Duration> = (0..parties.len()).map(|k| interval * k as u32 / parties.len() as u32).collect();
    let mut buf = vec![0u8; 2048];
    let mut events = Events::with_capacity(1024);
    let drops0 = udp_rcvbuf_errors();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.seconds) + Duration::from_secs(2);
    let mut send_errors = 0u64;
    while ledger.received < total && Instant::now() < deadline {
        let now = start.elapsed();
        let mut soonest = Duration::from_millis(1);
        for k in 0..parties.len() {
            while next[k] < per_party && now >= offset[k] + interval * next[k] as u32 {
                let mut d = vec![b'v'; p.size.max(21)];
                d[0..8].copy_from_slice(&next[k].to_le_bytes());
                d[8..16].copy_from_slice(&env.now_ns().to_le_bytes());
                d[16..20].copy_from_slice(&((k ^ 1) as u32).to_le_bytes());
                d[20] = k as u8;
                if socks[k].send_to(&d, parties[k].1).is_err() {
                    send_errors += 1;
                }
                next[k] += 1;
            }
            if next[k] < per_party {
                soonest = soonest.min((offset[k] + interval * next[k] as u32).saturating_sub(now));
            }
        }
        poll.poll(&mut events, Some(soonest)).map_err(|e| e.to_string())?;
        for e in events.iter() {
            let k = e.token().0;
            while let Ok((n, _)) = socks[k].recv_from(&mut buf) {
                let now = env.now_ns();
                if n != p.size.max(21) || u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize != k {
                    ledger.corrupted += 1;
                    continue;
                }
                let seq = u64::from_le_bytes(buf[0..8].try_into().unwrap_or([0; 8]));
                let t = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
                // The stream is the sending party: the receiver's partner.
                ledger.record(k ^ 1, seq);
                lat.push(now.saturating_sub(t));
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64().min(p.seconds.max(1e-3));
    let mut r = Report::new("relay");
    r.metric("calls", p.calls as f64, "");
    r.metric("forwarded", ledger.received as f64 / elapsed, "datagrams/s");
    r.metric("loss", (total - ledger.received.min(total)) as f64 * 100.0 / total.max(1) as f64, "%");
    r.metric("one-way latency p50", lat.quantile_us(0.5), "us");
    r.metric("one-way latency p99", lat.quantile_us(0.99), "us");
    r.metric("direct loopback p50", base.quantile_us(0.5), "us");
    r.metric("direct loopback p99", base.quantile_us(0.99), "us");
    r.metric("added by the relay p50", lat.quantile_us(0.5) - base.quantile_us(0.5), "us");
    r.metric("added by the relay p99", lat.quantile_us(0.99) - base.quantile_us(0.99), "us");
    if let (Some(a), Some(b)) = (drops0, udp_rcvbuf_errors()) {
        r.metric("kernel UDP receive-buffer drops", (b - a) as f64, "");
    }
    if let Some(e) = ledger.errors() {
        r.errors.push(e);
    }
    if send_errors > 0 {
        r.errors.push(format!("{send_errors} datagrams could not be sent"));
    }
    Ok(r)
}
