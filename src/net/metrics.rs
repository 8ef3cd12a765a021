//! `/metrics` in the Prometheus text format, served from the same poll loop.
//!
//! A scrape is a tiny HTTP/1.x exchange: read the request head (at most 8 KiB), answer
//! `GET /metrics` with the counters or anything else with 404, close. Scrapers are few,
//! so each connection lives in a small slab of its own with tokens from `BASE` up, and the
//! whole answer is rendered at once. The loop's own figures (bytes, latencies) are kept
//! here; the chat core's are read from it at scrape time.

use super::checkpointer::PendingCount;
use crate::chat::metrics::CALL_OUTCOMES;
use crate::chat::relay::DropReason;
use crate::chat::Core;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::time::Duration;

/// Tokens of scrape connections start here (chat connections use small slab keys).
pub const BASE: usize = usize::MAX / 2;
const MAX_REQUEST: usize = 8 * 1024;
/// Open scrape connections at most, apart from the chat connections' caps. When a new one
/// arrives at the cap, the oldest is closed to make room: idle connections can then delay
/// a scrape by nothing, where refusing the newcomer let 16 of them block every scrape.
const MAX_SCRAPERS: usize = 16;
/// A scrape connection is closed this long after it opened, answered or not.
const SCRAPE_DEADLINE_MS: u64 = 5_000;

/// Latency buckets in seconds (Prometheus `le` bounds).
const BUCKETS: [f64; 12] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0];

/// A cumulative latency histogram.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

/// The transports of [`NetCounters::by_transport`], in order.
pub const TRANSPORTS: [&str; 7] = ["detecting", "plain", "tls", "http", "https", "ws", "wss"];

/// What the loop counts itself.
#[derive(Debug, Default, Clone)]
pub struct NetCounters {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub slow_consumers: u64,
    pub frames_too_large: u64,
    pub frames_not_object: u64,
    pub refused_full: u64,
    /// Connections refused by the per-address caps.
    pub refused_address: u64,
    pub relay_send_dropped: u64,
    /// Times a connection's reading paused because its unsent output passed the mark.
    pub reads_paused: u64,
    /// Unsent output of all connections, as of the scrape.
    pub unsent_bytes: u64,
    /// Open connections by transport (in the order of [`TRANSPORTS`]), as of the scrape.
    pub by_transport: [u64; TRANSPORTS.len()],
    pub handshakes_ok: u64,
    pub handshakes_failed: u64,
    /// PROXY headers read from `--proxy-from` peers.
    pub proxy_headers: u64,
    /// Connections closed without an answer for what their first bytes were (a PROXY
    /// header from an untrusted peer or a malformed one, TLS without a certificate).
    pub transports_refused: u64,
    pub commit: Histogram,
    pub iteration: Histogram,
}

struct Scrape {
    stream: TcpStream,
    /// When it must be gone (ms on the loop's clock).
    deadline_ms: u64,
    request: Vec<u8>,
    response: Vec<u8>,
    written: usize,
}

/// The metrics listener and its scrape connections.
pub struct MetricsServer {
    listener: TcpListener,
    scrapes: Slab<Scrape>,
    pending: PendingCount,
}

impl MetricsServer {
    pub fn new(listener: TcpListener, pending: PendingCount) -> MetricsServer {
        MetricsServer { listener, scrapes: Slab::new(), pending }
    }

    /// Accepts until `WouldBlock`; at the cap the oldest scrape connection makes room.
    pub fn accept(&mut self, registry: &Registry, now_ms: u64) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("metrics accept: {e}");
                    return;
                }
            };
            if self.scrapes.len() >= MAX_SCRAPERS {
                if let Some(oldest) = self.scrapes.iter().min_by_key(|(_, s)| s.deadline_ms).map(|(k, _)| k) {
                    self.close(oldest, registry);
                }
            }
            let entry = self.scrapes.vacant_entry();
            if registry
                .register(&mut stream, Token(BASE + entry.key()), Interest::READABLE | Interest::WRITABLE)
                .is_ok()
            {
                let deadline_ms = now_ms + SCRAPE_DEADLINE_MS;
                entry.insert(Scrape { stream, deadline_ms, request: Vec::new(), response: Vec::new(), written: 0 });
            }
        }
    }

    fn close(&mut self, key: usize, registry: &Registry) {
        if self.scrapes.contains(key) {
            let mut s = self.scrapes.remove(key);
            let _ = registry.deregister(&mut s.stream);
        }
    }

    /// Closes the scrape connections whose deadline has passed.
    pub fn expire(&mut self, now_ms: u64, registry: &Registry) {
        let due: Vec<usize> = self.scrapes.iter().filter(|(_, s)| s.deadline_ms <= now_ms).map(|(k, _)| k).collect();
        for key in due {
            self.close(key, registry);
        }
    }

    /// The earliest deadline of an open scrape connection, for the poll timeout.
    pub fn next_deadline(&self) -> Option<u64> {
        self.scrapes.iter().map(|(_, s)| s.deadline_ms).min()
    }

    /// Reads, answers and writes one scrape connection; closes it when done or broken.
    /// `by_transport` counts the open connections (one pass over them): it is called once
    /// per answer, not on every event of the scrape.
    pub fn on_ready(
        &mut self,
        token: Token,
        registry: &Registry,
        core: &mut Core,
        net: &mut NetCounters,
        by_transport: impl FnOnce() -> [u64; TRANSPORTS.len()],
    ) {
        let key = token.0 - BASE;
        let Some(s) = self.scrapes.get_mut(key) else { return };
        let mut done = false;
        if s.response.is_empty() {
            let mut buf = [0u8; 2048];
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => s.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
                if s.request.len() > MAX_REQUEST {
                    break;
                }
            }
            let complete = s.request.windows(4).any(|w| w == b"\r\n\r\n") || s.request.windows(2).any(|w| w == b"\n\n");
            if complete || s.request.len() > MAX_REQUEST {
                net.by_transport = by_transport();
                s.response = respond(&s.request, core, net, &self.pending);
                done = false;
            }
        }
        if !s.response.is_empty() {
            while s.written < s.response.len() {
                match s.stream.write(&s.response[s.written..]) {
                    Ok(n) => s.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            done |= s.written == s.response.len();
        }
        if done {
            self.close(key, registry);
        }
    }
}

fn respond(request: &[u8], core: &mut Core, net: &NetCounters, pending: &PendingCount) -> Vec<u8> {
    let (status, body) = if request.starts_with(b"GET /metrics ") || request.starts_with(b"GET /metrics?") {
        ("200 OK", render(core, net, pending.latest_and_ask()))
    } else {
        ("404 Not Found", "not found; try GET /metrics\n".to_owned())
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// The whole exposition, rendered at scrape time.
fn render(core: &mut Core, net: &NetCounters, pending: Option<i64>) -> String {
    let mut o = String::with_capacity(8 * 1024);
    let (anonymous, logged_in, users, calls) = core.population();
    let _ = writeln!(o, "# HELP natter_connections Open TCP connections by state.\n# TYPE natter_connections gauge");
    let _ = writeln!(o, "natter_connections{{state=\"anonymous\"}} {anonymous}");
    let _ = writeln!(o, "natter_connections{{state=\"logged_in\"}} {logged_in}");
    metric(&mut o, "natter_users_online", "gauge", "Users with at least one logged-in connection.", users);
    metric(&mut o, "natter_calls_active", "gauge", "Calls ringing or talking.", calls);
    let c = core.counters.clone();
    let store = core.store();
    metric(&mut o, "natter_messages_stored_total", "counter", "Personal messages committed.", store.messages_committed);
    metric(&mut o, "natter_store_commits_total", "counter", "Store transactions committed.", store.commits);
    if let Some(n) = pending {
        let help = "Personal messages not yet delivered (counted off the loop when the previous scrape came).";
        metric(&mut o, "natter_messages_pending_offline", "gauge", help, n);
    }
    metric(
        &mut o,
        "natter_messages_delivered_total",
        "counter",
        "Personal messages written completely to a recipient connection.",
        c.messages_delivered,
    );
    metric(
        &mut o,
        "natter_global_deliveries_total",
        "counter",
        "Global messages handed to receiving connections.",
        c.global_deliveries,
    );
    metric(&mut o, "natter_groups_created_total", "counter", "Groups created.", c.groups_created);
    metric(&mut o, "natter_group_messages_total", "counter", "Group messages stored (one row each).", c.group_messages);
    metric(
        &mut o,
        "natter_group_deliveries_total",
        "counter",
        "Group messages handed to members' live connections (one per connection).",
        c.group_deliveries,
    );
    metric(&mut o, "natter_bytes_received_total", "counter", "Bytes read from TCP clients.", net.bytes_in);
    metric(&mut o, "natter_bytes_sent_total", "counter", "Bytes written to TCP clients.", net.bytes_out);
    let _ = writeln!(o, "# HELP natter_frames_rejected_total Frames answered invalid, by reason.\n# TYPE natter_frames_rejected_total counter");
    for (reason, n) in [
        ("undecodable", c.frames_undecodable),
        ("not_logged_in", c.frames_not_logged_in),
        ("too_large", net.frames_too_large),
        ("not_an_object", net.frames_not_object),
    ] {
        let _ = writeln!(o, "natter_frames_rejected_total{{reason=\"{reason}\"}} {n}");
    }
    metric(
        &mut o,
        "natter_slow_consumers_total",
        "counter",
        "Connections closed for passing the output cap.",
        net.slow_consumers,
    );
    metric(
        &mut o,
        "natter_output_unsent_bytes",
        "gauge",
        "Bytes queued for all connections and not yet written (bounded by --max-output-total).",
        net.unsent_bytes,
    );
    metric(
        &mut o,
        "natter_reads_paused_total",
        "counter",
        "Times a connection's requests paused until its unsent output drained.",
        net.reads_paused,
    );
    let _ = writeln!(o, "# HELP natter_connections_refused_total Connections closed at once, by reason.\n# TYPE natter_connections_refused_total counter");
    for (reason, n) in [("server_full", net.refused_full), ("address_full", net.refused_address)] {
        let _ = writeln!(o, "natter_connections_refused_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP natter_connections_open Open connections by transport.\n# TYPE natter_connections_open gauge"
    );
    for (transport, n) in TRANSPORTS.iter().zip(net.by_transport) {
        let _ = writeln!(o, "natter_connections_open{{transport=\"{transport}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP natter_tls_handshakes_total TLS handshakes by result.\n# TYPE natter_tls_handshakes_total counter"
    );
    let _ = writeln!(
        o,
        "natter_tls_handshakes_total{{result=\"ok\"}} {}\nnatter_tls_handshakes_total{{result=\"failed\"}} {}",
        net.handshakes_ok, net.handshakes_failed
    );
    metric(
        &mut o,
        "natter_proxy_headers_total",
        "counter",
        "PROXY headers accepted from --proxy-from peers.",
        net.proxy_headers,
    );
    metric(
        &mut o,
        "natter_transports_refused_total",
        "counter",
        "Connections closed unanswered for their first bytes: PROXY from an untrusted peer or malformed, TLS without a certificate.",
        net.transports_refused,
    );
    let _ =
        writeln!(o, "# HELP natter_requests_total Requests decoded, by type.\n# TYPE natter_requests_total counter");
    for (ty, n) in crate::chat::metrics::REQUEST_TYPES.iter().zip(c.requests) {
        let _ = writeln!(o, "natter_requests_total{{type=\"{ty}\"}} {n}");
    }
    let _ = writeln!(o, "# HELP natter_logins_total Login attempts by result.\n# TYPE natter_logins_total counter");
    let _ = writeln!(
        o,
        "natter_logins_total{{result=\"ok\"}} {}\nnatter_logins_total{{result=\"failed\"}} {}",
        c.logins_ok, c.logins_failed
    );
    let _ = writeln!(o, "# HELP natter_otp_mails_total OTP mails by result.\n# TYPE natter_otp_mails_total counter");
    let _ = writeln!(
        o,
        "natter_otp_mails_total{{result=\"sent\"}} {}\nnatter_otp_mails_total{{result=\"failed\"}} {}",
        c.otp_sent, c.otp_failed
    );
    let _ = writeln!(o, "# HELP natter_calls_total Calls ended, by outcome.\n# TYPE natter_calls_total counter");
    for (i, outcome) in CALL_OUTCOMES.iter().enumerate() {
        let _ = writeln!(o, "natter_calls_total{{outcome=\"{outcome}\"}} {}", c.calls[i]);
    }
    let relay = core.relay_stats();
    metric(&mut o, "natter_relay_forwarded_total", "counter", "Voice datagrams forwarded.", relay.forwarded);
    let _ = writeln!(o, "# HELP natter_relay_dropped_total Voice datagrams dropped, by reason.\n# TYPE natter_relay_dropped_total counter");
    for r in DropReason::ALL {
        let _ = writeln!(o, "natter_relay_dropped_total{{reason=\"{}\"}} {}", r.as_str(), relay.dropped[r as usize]);
    }
    let _ = writeln!(o, "natter_relay_dropped_total{{reason=\"send_buffer_full\"}} {}", net.relay_send_dropped);
    net.commit.render(&mut o, "natter_store_commit_seconds", "Time to commit one loop iteration's writes.");
    net.iteration.render(
        &mut o,
        "natter_loop_iteration_seconds",
        "Time of one loop iteration, not counting the wait in poll.",
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(80));
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 0"));
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1"));
        assert!(out.contains("x_bucket{le=\"0.005\"} 2"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(out.contains("x_count 2"));
    }
}
