//! `handshakes`: threads open TLS connections as fast as they can (handshake, one ping,
//! close) while one pair streams messages at a fixed rate over TLS. Measures completed
//! handshakes per second and the pair's latency meanwhile. Always TLS; the certificate is
//! the spawned server's (ECDSA P-256) or `--ca`'s.

use super::{delivered, login_all, personal_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::stats::Samples;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Params {
    /// Threads opening connections.
    pub threads: usize,
    pub seconds: f64,
    /// The pair's rate meanwhile.
    pub rate: u64,
    pub size: usize,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let config = env.dial.tls.clone().ok_or("handshakes needs TLS (--tls, or --spawn which makes a certificate)")?;
    let mut cl = Clients::new(crate::net::Dial { tls: Some(Arc::clone(&config)), websocket: false })
        .map_err(|e| e.to_string())?;
    let pair = login_all(&mut cl, env, &[0, 1], false)?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let addr = env.addr.to_string();
    let workers: Vec<_> = (0..p.threads)
        .map(|_| {
            let (stop, done, failed, config, addr) =
                (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failed), Arc::clone(&config), addr.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match handshake_and_ping(&addr, &config) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let interval = Duration::from_secs_f64(1.0 / p.rate.max(1) as f64);
    let mut lat = Samples::default();
    let mut frame = Vec::new();
    let mut next = 0u64;
    let cpu0 = env.server_cpu();
    let start = Instant::now();
    let length = Duration::from_secs_f64(p.seconds);
    while start.elapsed() < length {
        while start.elapsed() >= interval * next as u32 {
            frame.clear();
            personal_frame(&mut frame, 1, 0, next, env.now_ns(), p.size);
            cl.send(pair[0], &frame);
            next += 1;
        }
        cl.round(Duration::from_millis(1)).map_err(|e| e.to_string())?;
        let now = env.now_ns();
        for (ci, range) in &cl.lines {
            if let Some(a) = Answer::parse(&cl.arena[range.clone()]) {
                if *ci == pair[1] && a.event == "personal" {
                    if let Some((_, _, t)) = delivered(&a, p.size) {
                        lat.push(now.saturating_sub(t));
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    for w in workers {
        let _ = w.join();
    }
    let cpu = cpu0.zip(env.server_cpu()).map(|(a, b)| b - a);
    let (ok, bad) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let mut r = Report::new("handshakes");
    r.metric("handshakes", ok as f64 / secs, "handshakes/s");
    if let Some(cpu) = cpu {
        r.metric("server CPU per handshake", cpu * 1e6 / ok.max(1) as f64, "us");
    }
    r.metric("pair latency p50", lat.quantile_us(0.5), "us");
    r.metric("pair latency p99", lat.quantile_us(0.99), "us");
    if bad > 0 {
        r.errors.push(format!("{bad} of {} handshakes failed", ok + bad));
    }
    if lat.len() as u64 + 50 < next {
        r.errors.push(format!("the pair received {} of {next} messages", lat.len()));
    }
    Ok(r)
}

/// One connection: TLS handshake, a ping answered, a close.
fn handshake_and_ping(addr: &str, config: &Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let mut s = natter::tls_client::connect(addr, Duration::from_secs(10), config)?;
    s.socket().set_nonblocking(false)?;
    s.write_all(b"{\"type\":\"ping\"}\n")?;
    s.flush()?;
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = got.split(|&b| b == b'\n').next().unwrap_or_default();
    if Answer::parse(line).is_some_and(|a| a.is("success", "pong")) {
        Ok(())
    } else {
        Err(std::io::Error::other("not a pong"))
    }
}
