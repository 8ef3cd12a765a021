//! TLS and PROXY on the one port (PROTOCOL.md section 13), with clients nobody here wrote:
//! `openssl s_client` and Python's `ssl` module (tests/tls_pipe.py), each running a
//! FORMAT.md session beside a plain TCP client on the same port. Certificates are made at
//! run time with openssl; no key is committed.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// A self-signed pair for `localhost` and 127.0.0.1, of key type `kind` (ec, rsa, ed25519).
fn make_pair(dir: &Path, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let newkey: &[&str] = match kind {
        "ec" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        "rsa" => &["-newkey", "rsa:2048"],
        _ => &["-newkey", "ed25519"],
    };
    let out = Command::new("openssl")
        .args(["req", "-x509"])
        .args(newkey)
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA: webpki (natter-cli's verifier) insists.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// A server with TLS from a fresh pair; returns it with the pair's files.
fn tls_server(kind: &str, extra: &[&str]) -> (Server, tempfile::TempDir, PathBuf, PathBuf) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(certs.path(), "server", kind);
    let mut args = vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Server::start_with(&args), certs, cert, key)
}

/// One TLS client process whose stdin and stdout carry the session's plaintext.
struct TlsPipe {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    what: String,
}

impl TlsPipe {
    fn spawn(mut cmd: Command, what: &str) -> TlsPipe {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        TlsPipe { child, stdin, lines, what: what.to_owned() }
    }

    /// `openssl s_client` verifying the server against `ca`.
    fn openssl(addr: std::net::SocketAddr, ca: &Path, extra: &[&str]) -> TlsPipe {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-verify_return_error", "-connect", &addr.to_string(), "-CAfile"])
            .arg(ca)
            .args(["-servername", "localhost"])
            .args(extra);
        TlsPipe::spawn(cmd, &format!("openssl s_client {extra:?}"))
    }

    /// Python's ssl module; waits for its CONNECTED line and returns it with the pipe.
    fn python(addr: std::net::SocketAddr, ca: &Path, extra: &[&str]) -> (TlsPipe, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_pipe.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).args(["127.0.0.1", &addr.port().to_string()]).arg(ca).arg("localhost").args(extra);
        let mut pipe = TlsPipe::spawn(cmd, &format!("python ssl {extra:?}"));
        let first = pipe.line(Duration::from_secs(10)).unwrap_or_else(|| panic!("{}: no first line", pipe.what));
        (pipe, first)
    }

    fn line(&mut self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    fn send_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap_or_else(|e| panic!("{}: {e}", self.what));
        self.stdin.flush().unwrap();
    }
}

impl Drop for TlsPipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Something that sends a request and reads the next server message.
trait Talk {
    fn send(&mut self, v: &Value);
    fn recv(&mut self) -> Value;
    fn request(&mut self, v: &Value) -> Value {
        self.send(v);
        self.recv()
    }
}

impl Talk for TlsPipe {
    fn send(&mut self, v: &Value) {
        self.send_line(&v.to_string());
    }

    fn recv(&mut self) -> Value {
        let line = self.line(READ_TIMEOUT).unwrap_or_else(|| panic!("{}: no answer in time", self.what));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.what))
    }
}

impl Talk for Client {
    fn send(&mut self, v: &Value) {
        Client::send(self, v);
    }

    fn recv(&mut self) -> Value {
        Client::recv(self)
    }
}

/// Registration with the mailed OTP, then login, exactly as FORMAT.md shows them.
fn register_and_login(server: &Server, c: &mut dyn Talk, email: &str, name: &str) {
    let answer = c.request(&registration(email, &md5_hex("pw"), name));
    assert_eq!(answer, sent_otp(email));
    let otp = server.wait_otp(email);
    assert_eq!(c.request(&verify(&otp)), json!({"event":"success","type":"verify"}));
    assert_eq!(c.request(&login_req(None, Some(email), &md5_hex("pw"))), login_success(name, email));
}

fn personal(to: &str, text: &str) -> Value {
    json!({"type":"message","event":"personal","details":{"to":to,"message":text}})
}

/// `from` sends `text` to `to`: `from` gets `sent` with an id, `to` gets the message.
fn one_message(from: &mut dyn Talk, from_email: &str, to: &mut dyn Talk, to_email: &str, text: &str) {
    let sent = from.request(&personal(to_email, text));
    assert_eq!((sent["event"].as_str(), sent["type"].as_str()), (Some("sent"), Some("message")), "{sent}");
    let got = to.recv();
    assert_eq!(got["event"], "personal", "{got}");
    assert_eq!(got["details"]["message"], text, "{got}");
    assert_eq!(got["details"]["from"], from_email, "{got}");
}

#[test]
fn openssl_and_python_run_a_format_session_beside_plain_tcp_on_the_same_port() {
    let (s, _certs, cert, _key) = tls_server("ec", &[]);
    let mut plain = s.connect();
    register_and_login(&s, &mut plain, "plain@x.org", "plain");
    let cases: [(&str, &[&str]); 4] = [
        ("o13", &["-tls1_3"]),
        ("o12", &["-tls1_2"]),
        ("o13alpn", &["-tls1_3", "-alpn", "natter"]),
        ("o12alpn", &["-tls1_2", "-alpn", "http/1.1"]),
    ];
    for (name, flags) in cases {
        let email = format!("{name}@x.org");
        let mut tls = TlsPipe::openssl(s.addr, &cert, flags);
        register_and_login(&s, &mut tls, &email, name);
        one_message(&mut tls, &email, &mut plain, "plain@x.org", &format!("from {name}"));
        one_message(&mut plain, "plain@x.org", &mut tls, &email, &format!("to {name}"));
    }
    let python: [(&str, &[&str], &str); 3] = [
        ("p13", &[], "CONNECTED TLSv1.3 -"),
        ("p12", &["--tls12"], "CONNECTED TLSv1.2 -"),
        ("palpn", &["--alpn", "natter"], "CONNECTED TLSv1.3 natter"),
    ];
    for (name, flags, expect) in python {
        let email = format!("{name}@x.org");
        let (mut tls, first) = TlsPipe::python(s.addr, &cert, flags);
        assert!(first.starts_with(expect), "the handshake as Python saw it: {first}");
        register_and_login(&s, &mut tls, &email, name);
        one_message(&mut tls, &email, &mut plain, "plain@x.org", &format!("from {name}"));
        one_message(&mut plain, "plain@x.org", &mut tls, &email, &format!("to {name}"));
    }
}

#[test]
fn rsa_and_ed25519_keys_serve_too() {
    for kind in ["rsa", "ed25519"] {
        let (s, _certs, cert, _key) = tls_server(kind, &[]);
        let (mut tls, first) = TlsPipe::python(s.addr, &cert, &[]);
        if kind == "ed25519" && first.starts_with("FAILED") {
            // Python's OpenSSL may not offer Ed25519 signatures; openssl s_client does.
            let mut o = TlsPipe::openssl(s.addr, &cert, &[]);
            assert_eq!(o.request(&json!({"type":"ping"})), json!({"event":"success","type":"pong"}));
            continue;
        }
        assert!(first.starts_with("CONNECTED"), "{kind}: {first}");
        assert_eq!(tls.request(&json!({"type":"ping"})), json!({"event":"success","type":"pong"}), "{kind}");
    }
}

#[test]
fn a_user_on_tls_and_plain_at_once_gets_everything_on_both() {
    let (s, _certs, cert, _key) = tls_server("ec", &[]);
    s.user_add("ann@x.org", "ann", "pw");
    s.user_add("bob@x.org", "bob", "pw");
    let (mut ann_tls, _) = TlsPipe::python(s.addr, &cert, &[]);
    assert_eq!(ann_tls.request(&login_req(None, Some("ann@x.org"), &md5_hex("pw")))["event"], "success");
    let mut ann_plain = logged_in(&s, "ann@x.org", "pw");
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    let sent = bob.request(&personal("ann@x.org", "both"));
    assert_eq!(sent["event"], "sent");
    assert_eq!(ann_tls.recv()["details"]["message"], "both");
    assert_eq!(ann_plain.recv()["details"]["message"], "both");
}

#[test]
fn sighup_reloads_the_pair_for_new_handshakes_and_keeps_open_sessions() {
    let (s, certs, cert, key) = tls_server("ec", &[]);
    let old_ca = certs.path().join("old-ca.crt");
    std::fs::copy(&cert, &old_ca).unwrap();
    let (mut open, first) = TlsPipe::python(s.addr, &old_ca, &[]);
    assert!(first.starts_with("CONNECTED"), "{first}");
    // A new pair in the same files, then SIGHUP.
    let (new_cert, new_key) = make_pair(certs.path(), "next", "ec");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let hup = |s: &Server| {
        // SAFETY: kill(2) on the pid of the child this test started.
        assert_eq!(unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) }, 0);
    };
    hup(&s);
    wait_for_log(&s, "TLS certificate reloaded", 1);
    let (_, with_new) = TlsPipe::python(s.addr, &new_cert, &[]);
    assert!(with_new.starts_with("CONNECTED"), "a new handshake presents the new pair: {with_new}");
    let (_, with_old) = TlsPipe::python(s.addr, &old_ca, &[]);
    assert!(with_old.starts_with("FAILED"), "the old pair is gone for new handshakes: {with_old}");
    assert_eq!(open.request(&json!({"type":"ping"})), json!({"event":"success","type":"pong"}), "the open session");
    // A broken file: the pair in use stays, one error is logged.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup(&s);
    wait_for_log(&s, "TLS certificate not reloaded", 1);
    let (_, still) = TlsPipe::python(s.addr, &new_cert, &[]);
    assert!(still.starts_with("CONNECTED"), "the last good pair serves on: {still}");
    assert_eq!(open.request(&json!({"type":"ping"})), json!({"event":"success","type":"pong"}));
    let errors = s.log_lines().iter().filter(|l| l.contains("[ERROR]")).count();
    assert_eq!(errors, 1, "exactly one error for the broken file:\n{}", s.tail());
}

/// Waits until `count` log lines contain `needle`.
fn wait_for_log(s: &Server, needle: &str, count: usize) {
    let seen = || s.log_lines().iter().filter(|l| l.contains(needle)).count() >= count;
    wait_until(READ_TIMEOUT, &format!("log line {needle:?}\n{}", s.tail()), seen);
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key) = make_pair(dir.path(), "a", "ec");
    let (_, other_key) = make_pair(dir.path(), "b", "ec");
    let missing = dir.path().join("missing.pem");
    let cases: [(&Path, &Path, &str); 2] =
        [(&missing, &other_key, "--tls-cert"), (&cert, &other_key, "do not make a pair")];
    for (c, k, expect) in cases {
        let out = natter_in(
            dir.path(),
            &["--listen", "127.0.0.1:0", "--tls-cert", c.to_str().unwrap(), "--tls-key", k.to_str().unwrap()],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(expect), "{expect:?} in {err}");
    }
}

fn tls_required() -> Value {
    json!({"event":"invalid","type":"unknown","message":"TLS required"})
}

#[test]
fn require_tls_refuses_plain_json_from_other_hosts_and_keeps_loopback() {
    let (s, _certs, cert, _key) = tls_server("ec", &["--require-tls", "--proxy-from", "127.0.0.1/32"]);
    // A client elsewhere, as a trusted proxy names it: plain JSON is refused.
    let mut far = s.connect();
    far.send_raw(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 5050\r\n{\"type\":\"ping\"}\n");
    assert_eq!(far.recv(), tls_required());
    far.expect_closed();
    let mut far_v2 = s.connect();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 4, 127, 0, 0, 1, 0x9c, 0x40, 0x13, 0xba]);
    v2.extend_from_slice(b"{\"type\":\"ping\"}\n");
    far_v2.send_raw(&v2);
    assert_eq!(far_v2.recv(), tls_required());
    far_v2.expect_closed();
    // The same client over TLS is served.
    let (mut far_tls, first) = TlsPipe::python(s.addr, &cert, &["--proxy-v1", "203.0.113.7"]);
    assert!(first.starts_with("CONNECTED"), "{first}");
    assert_eq!(far_tls.request(&json!({"type":"ping"})), json!({"event":"success","type":"pong"}));
    // Loopback stays allowed, directly and through the proxy.
    let mut local = s.connect();
    local.ping();
    let mut proxied_local = s.connect();
    proxied_local.send_raw(b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 5050\r\n");
    proxied_local.ping();
}

#[test]
fn proxy_headers_count_the_client_at_its_own_address() {
    let s =
        Server::start_with(&["--proxy-from", "127.0.0.1/32", "--max-connections-per-ip", "2", "--log-level", "debug"]);
    let via = |src: &str| {
        let mut c = s.connect();
        c.send_raw(format!("PROXY TCP4 {src} 127.0.0.1 40000 5050\r\n").as_bytes());
        c
    };
    let mut a1 = via("198.51.100.9");
    a1.ping();
    let mut a2 = via("198.51.100.9");
    a2.ping();
    let mut a3 = via("198.51.100.9");
    a3.send_raw(b"{\"type\":\"ping\"}\n");
    a3.expect_closed();
    // Another client behind the same proxy is not lumped in with the first.
    let mut b = via("198.51.100.10");
    b.ping();
    // Nor is the proxy itself held to one client's cap.
    let mut own: Vec<Client> = (0..3).map(|_| s.connect()).collect();
    for c in &mut own {
        c.ping();
    }
    assert!(
        s.log_lines().iter().any(|l| l.contains("198.51.100.9")),
        "the log names the client, not the proxy:\n{}",
        s.tail()
    );
}

#[test]
fn proxy_headers_from_untrusted_peers_or_malformed_close_only_their_connection() {
    let s = Server::start_with(&["--proxy-from", "127.0.0.1/32", "--log-level", "debug"]);
    let mut bystander = s.connect();
    bystander.ping();
    // From a peer not in --proxy-from: closed without an answer.
    let mut untrusted = s.connect_from(2);
    untrusted.send_raw(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 5050\r\n{\"type\":\"ping\"}\n");
    untrusted.expect_closed();
    let bad: [&[u8]; 6] = [
        b"PROXY TCP4 nope\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\x04abcd",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
        b"PROXY TCP4 111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111",
    ];
    for header in bad {
        let mut c = s.connect();
        c.send_raw(header);
        c.expect_closed();
        bystander.ping();
    }
    // Truncated, then the peer goes: closed, nothing else affected.
    let mut cut = s.connect();
    cut.send_raw(b"PROXY TCP4 1.2.3.4 5.6.");
    cut.shutdown_write();
    cut.expect_closed();
    // v2 LOCAL (the proxy's health check) keeps the proxy's address and works.
    let mut health = s.connect();
    health.send_raw(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    health.ping();
    // v2 over IPv6.
    let mut six = s.connect();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    h.extend_from_slice(&[0; 15]);
    h.push(1);
    h.extend_from_slice(&[0x9c, 0x40, 0x13, 0xba]);
    six.send_raw(&h);
    six.ping();
    bystander.ping();
}

#[test]
fn hostile_tls_closes_only_its_own_connection() {
    let (s, _certs, cert, _key) = tls_server("ec", &["--auth-timeout", "2"]);
    s.user_add("by@x.org", "by", "pw");
    // Logged in, so that --auth-timeout is not what could close it.
    let mut bystander = logged_in(&s, "by@x.org", "pw");
    bystander.ping();
    // A ClientHello cut short, then the peer goes.
    let mut cut = s.connect();
    cut.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    cut.shutdown_write();
    cut.expect_closed();
    bystander.ping();
    // Random bytes after 0x16.
    let mut noise = s.connect();
    let junk: Vec<u8> =
        std::iter::once(0x16u8).chain((0..300u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)).collect();
    noise.send_raw(&junk);
    noise.expect_closed();
    bystander.ping();
    // A record longer than TLS allows.
    let mut huge = s.connect();
    let mut record = b"\x16\x03\x01\xff\xff".to_vec();
    record.extend_from_slice(&[0u8; 4096]);
    let _ = huge.try_send_raw(&record);
    huge.expect_closed();
    bystander.ping();
    // An alert outside the session, after a finished handshake.
    let (mut alert, first) = TlsPipe::python(s.addr, &cert, &["--raw-alert"]);
    assert!(first.starts_with("CONNECTED"), "{first}");
    let closed = alert.line(READ_TIMEOUT).unwrap_or_default();
    assert!(closed.starts_with("CLOSED"), "the server closes on the alert: {closed}");
    bystander.ping();
    // A handshake dribbled a byte at a time is closed by --auth-timeout.
    let mut slow = s.connect();
    let started = Instant::now();
    slow.send_raw(b"\x16\x03\x01\x00\xc8");
    let mut closed_early = false;
    for _ in 0..40 {
        if slow.try_send_raw(&[1]).is_err() {
            closed_early = true;
            break;
        }
        if let ReadOutcome::Closed(_) = slow.read_line(Duration::from_millis(250)) {
            closed_early = true;
            break;
        }
    }
    assert!(closed_early, "a dribbled handshake outlived --auth-timeout 2");
    assert!(started.elapsed() < Duration::from_secs(8), "closed after {:?}", started.elapsed());
    bystander.ping();
    assert!(s.log_lines().iter().all(|l| !l.contains("panicked")), "no panic on hostile input:\n{}", s.tail());
}

#[test]
fn many_handshakes_started_at_once_leave_the_server_serving() {
    let (s, _certs, _cert, _key) = tls_server("ec", &[]);
    let mut bystander = s.connect();
    let mut starts = Vec::new();
    for _ in 0..500 {
        let mut c = s.connect();
        c.send_raw(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03");
        starts.push(c);
    }
    bystander.ping();
    drop(starts);
    bystander.ping();
}

#[test]
fn a_tls_client_that_never_reads_is_cut_off_like_a_plain_one() {
    let (s, _certs, cert, _key) = tls_server("ec", &["--max-output", "65536"]);
    s.user_add("ann@x.org", "ann", "pw");
    s.user_add("bob@x.org", "bob", "pw");
    let (mut ann, first) = TlsPipe::python(s.addr, &cert, &[]);
    let port = first.rsplit(' ').next().unwrap_or_default().to_owned();
    assert_eq!(ann.request(&login_req(None, Some("ann@x.org"), &md5_hex("pw")))["event"], "success");
    ann.send_line("#STOP");
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    let text = "x".repeat(4000);
    let mut cut = false;
    for _ in 0..2000 {
        // No answer to a global message: a ping paces the sender.
        bob.send(&json!({"type":"message","event":"global","details":{"message":text}}));
        bob.ping();
        if s.log_lines().iter().any(|l| l.contains("slow consumer")) {
            cut = true;
            break;
        }
    }
    assert!(cut, "the TLS reader that stopped was never cut off:\n{}", s.tail());
    let line = format!("127.0.0.1:{port}: slow consumer");
    assert!(s.log_lines().iter().any(|l| l.contains(&line)), "{line:?} in\n{}", s.tail());
    bob.ping();
}

#[test]
fn tls_without_a_certificate_is_closed_at_once() {
    let s = Server::start();
    let mut c = s.connect();
    c.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    c.expect_closed();
    let certs = tempfile::tempdir().unwrap();
    let (ca, _) = make_pair(certs.path(), "unused", "ec");
    let (_, first) = TlsPipe::python(s.addr, &ca, &[]);
    assert!(first.starts_with("FAILED"), "{first}");
}

#[test]
fn voice_accept_names_the_address_the_proxied_client_connected_to() {
    let s = Server::start_with(&["--proxy-from", "127.0.0.1/32"]);
    s.user_add("ann@x.org", "ann", "pw");
    s.user_add("bob@x.org", "bob", "pw");
    let mut ann = logged_in(&s, "ann@x.org", "pw");
    // bob reached the balancer's public address 192.0.2.44; the relay is there too.
    let mut bob = s.connect();
    bob.send_raw(b"PROXY TCP4 198.51.100.20 192.0.2.44 40000 5050\r\n");
    assert_eq!(bob.request(&login_req(None, Some("bob@x.org"), &md5_hex("pw")))["event"], "success");
    ann.send(&json!({"type":"voice","event":"call","details":{"email":"bob@x.org"}}));
    assert_eq!(bob.recv()["event"], "request");
    bob.send(&json!({"type":"voice","event":"accept","details":{"email":"ann@x.org"}}));
    let accept = bob.recv();
    assert_eq!(accept["event"], "accept", "{accept}");
    assert_eq!(accept["details"]["ip"], "192.0.2.44", "the callee's accept: {accept}");
}

#[test]
fn natter_cli_refuses_an_unknown_certificate_and_works_with_its_ca() {
    let (s, _certs, cert, _key) = tls_server("ec", &[]);
    s.user_add("ann@x.org", "ann", "pw");
    let cli = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-cli"));
        cmd.args(["--addr", &format!("localhost:{}", s.addr.port()), "--login", "ann@x.org"])
            .args(extra)
            .arg("users")
            .env("NATTER_PASSWORD", "pw")
            .env_remove("NATTER_ADDR")
            .stdin(Stdio::null());
        wait_output(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), READ_TIMEOUT, "natter-cli")
    };
    let refused = cli(&["--tls"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("not signed by a CA") && err.contains("--ca"), "{err}");
    let ok = cli(&["--ca", cert.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(out.contains("ann <ann@x.org>"), "{out}");
}

#[test]
fn metrics_count_transports_handshakes_and_proxy_headers() {
    let (s, _certs, cert, _key) = tls_server("ec", &["--metrics", "127.0.0.1:0", "--proxy-from", "127.0.0.1/32"]);
    let url = s.metrics_url();
    let (mut tls, first) = TlsPipe::python(s.addr, &cert, &[]);
    assert!(first.starts_with("CONNECTED"), "{first}");
    tls.request(&json!({"type":"ping"}));
    let mut plain = s.connect();
    plain.ping();
    let mut bad = s.connect();
    bad.send_raw(b"\x16\x03\x01\x00\x05junk!");
    bad.expect_closed();
    let mut proxied = s.connect();
    proxied.send_raw(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\n");
    proxied.ping();
    let mut untrusted = s.connect_from(3);
    untrusted.send_raw(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\n");
    untrusted.expect_closed();
    let m = scrape(&url);
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("{k} missing from {m:?}"));
    assert_eq!(get("natter_tls_handshakes_total{result=\"ok\"}"), 1.0);
    assert_eq!(get("natter_tls_handshakes_total{result=\"failed\"}"), 1.0);
    assert_eq!(get("natter_proxy_headers_total"), 1.0);
    assert_eq!(get("natter_transports_refused_total"), 1.0);
    assert_eq!(get("natter_connections_open{transport=\"tls\"}"), 1.0);
    assert_eq!(get("natter_connections_open{transport=\"plain\"}"), 2.0, "plain and proxied");
}

/// A browser's TLS client, as far as natter can tell: rustls verifying against `ca` and
/// offering `h2` and `http/1.1` by ALPN.
fn browser_tls(
    addr: std::net::SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn https_serves_the_page_and_wss_the_socket_on_the_one_port() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let (s, _certs, cert, _key) = tls_server("ec", &["--metrics", "127.0.0.1:0"]);
    s.user_add("ann@x.org", "ann", "pw");
    s.user_add("bob@x.org", "bob", "pw");

    // The page over https, fetched by curl against the pair's certificate.
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(&cert)
        .arg(format!("https://localhost:{}/", s.addr.port()))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", s.addr.port())])
        .output()
        .expect("curl is installed");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'"), "{page}");

    // The socket over wss, with the https page's origin; ALPN picks http/1.1 of a browser's
    // offer.
    let mut stream = browser_tls(s.addr, &cert);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).expect("handshake");
    }
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut req = format!("wss://localhost:{}/ws", s.addr.port()).into_client_request().expect("request");
    let origin = format!("https://localhost:{}", s.addr.port());
    req.headers_mut().insert("Origin", origin.parse().expect("origin"));
    let (mut ws, _) = tungstenite::client(req, stream).expect("wss upgrade");
    let read = |ws: &mut tungstenite::WebSocket<_>| loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str::<Value>(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    };
    let login = login_req(None, Some("ann@x.org"), &md5_hex("pw")).to_string();
    ws.send(Message::text(login)).expect("send");
    assert_eq!(read(&mut ws)["event"], "success");
    // A plain TCP user on the same port reaches the wss user and back.
    let mut bob = logged_in(&s, "bob@x.org", "pw");
    assert_eq!(bob.request(&personal("ann@x.org", "to the browser"))["event"], "sent");
    assert_eq!(read(&mut ws)["details"]["message"], "to the browser");
    ws.send(Message::text(personal("bob@x.org", "from the browser").to_string())).expect("send");
    assert_eq!(read(&mut ws)["event"], "sent");
    assert_eq!(bob.recv()["details"]["message"], "from the browser");
    let m = scrape(&s.metrics_url());
    assert_eq!(m.get("natter_connections_open{transport=\"wss\"}"), Some(&1.0), "{m:?}");
}
