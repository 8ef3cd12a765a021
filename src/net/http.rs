//! HTTP/1.1 on the chat port (PROTOCOL.md sections 13 and 18): the web client's files and
//! the WebSocket upgrade at `/ws`.
//!
//! Owns request parsing (httparse, with limits on the head's size and header count), the
//! routing, and the exact bytes of every answer. Pure: a request head in, an [`Answer`]
//! out; it never touches a socket or the chat core. A request never ends the head within
//! [`MAX_HEAD`] bytes is 431; one that never ends at all is the anonymous connection that
//! `--auth-timeout` closes.

use super::accept_key;
use super::web_assets::{self, Asset};

/// Bytes a request head may take.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers a request may have.
const MAX_HEADERS: usize = 32;

/// The page and its assets allow nothing from elsewhere (PROTOCOL.md section 19).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the web side of the port allows.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// `--ws-origins`: origins besides the request's own allowed to open a WebSocket.
    pub origins: Vec<String>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The head is not complete yet.
    NeedMore,
    /// Send `bytes`, drop the first `used` input bytes; `close` after it is written.
    Respond { bytes: Vec<u8>, used: usize, close: bool },
    /// Send `bytes` (the 101), drop `used`; the connection speaks WebSocket from here.
    Upgrade { bytes: Vec<u8>, used: usize },
}

/// Answers the request at the front of `input`. `secure`: it came over TLS.
pub fn answer(input: &[u8], config: &WebConfig, secure: bool) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_HEAD => return Answer::NeedMore,
        Ok(httparse::Status::Partial) => return error(431, "request head too large", &[]),
        Err(httparse::Error::TooManyHeaders) => return error(431, "too many headers", &[]),
        Err(_) => return error(400, "malformed request", &[]),
    };
    if used > MAX_HEAD {
        return error(431, "request head too large", &[]);
    }
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let header = |name: &str| -> Option<&str> {
        req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_body = header("content-length").is_some_and(|v| v.trim() != "0") || header("transfer-encoding").is_some();
    let head = method == "HEAD";
    if method != "GET" && !head {
        return error(405, "only GET and HEAD", &[("Allow", "GET, HEAD")]);
    }
    if has_body {
        return error(400, "a GET has no body", &[]);
    }
    if path == "/ws" {
        return upgrade(&header, used, config, secure);
    }
    let Some(asset) = web_assets::find(path) else {
        return error(404, "not found", &[]);
    };
    let close = header("connection").is_some_and(|v| has_token(v, "close"));
    let etag = asset.etag();
    if header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        let mut bytes = status_line(304);
        static_headers(&mut bytes, asset, &etag, None);
        return Answer::Respond { bytes, used, close };
    }
    let mut bytes = status_line(200);
    static_headers(&mut bytes, asset, &etag, Some(asset.body.len()));
    if !head {
        bytes.extend_from_slice(asset.body);
    }
    Answer::Respond { bytes, used, close }
}

fn upgrade<'a>(header: &impl Fn(&str) -> Option<&'a str>, used: usize, config: &WebConfig, secure: bool) -> Answer {
    let upgrade = header("upgrade").is_some_and(|v| has_token(v, "websocket"));
    let connection = header("connection").is_some_and(|v| has_token(v, "upgrade"));
    if !upgrade || !connection {
        return error(400, "GET /ws needs a WebSocket upgrade", &[]);
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return error(426, "WebSocket version 13 only", &[("Sec-WebSocket-Version", "13")]);
    }
    let Some(key) = header("sec-websocket-key").map(str::trim).filter(|k| accept_key::valid_key(k.as_bytes())) else {
        return error(400, "bad Sec-WebSocket-Key", &[]);
    };
    if let Some(origin) = header("origin") {
        if !origin_allowed(origin, header("host"), config, secure) {
            return error(403, "cross-origin WebSocket refused (see --ws-origins)", &[]);
        }
    }
    let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".to_vec();
    bytes.extend_from_slice(format!("Sec-WebSocket-Accept: {}\r\n\r\n", accept_key::accept(key.as_bytes())).as_bytes());
    Answer::Upgrade { bytes, used }
}

/// Same origin (the request's own `Host`, over the scheme it came by) or listed.
fn origin_allowed(origin: &str, host: Option<&str>, config: &WebConfig, secure: bool) -> bool {
    let origin = origin.trim();
    if config.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = host.map(str::trim) else { return false };
    let scheme = if secure { "https://" } else { "http://" };
    origin.len() == scheme.len() + host.len()
        && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
        && origin[scheme.len()..].eq_ignore_ascii_case(host)
}

fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn status_line(code: u16) -> Vec<u8> {
    format!("HTTP/1.1 {code} {}\r\n", reason(code)).into_bytes()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn static_headers(out: &mut Vec<u8>, asset: &Asset, etag: &str, length: Option<usize>) {
    let mut h = format!(
        "Content-Type: {}\r\nETag: {etag}\r\nCache-Control: no-cache\r\nContent-Security-Policy: {CSP}\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n",
        asset.content_type
    );
    if let Some(n) = length {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("\r\n");
    out.extend_from_slice(h.as_bytes());
}

/// An error answer (plain text), after which the connection closes.
pub fn error(code: u16, text: &str, extra: &[(&str, &str)]) -> Answer {
    Answer::Respond { bytes: error_bytes(code, text, extra), used: 0, close: true }
}

/// The bytes of an error answer.
fn error_bytes(code: u16, text: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{code} {}: {text}\n", reason(code));
    let mut out = status_line(code);
    for (k, v) in extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    out
}

/// The answer to plain HTTP from a non-loopback client under `--require-tls`.
pub fn tls_required() -> Vec<u8> {
    error_bytes(426, "TLS required", &[("Upgrade", "TLS/1.2, HTTP/1.1")])
}

/// Whether `bytes` (at least one) may be the start of an HTTP request: a method of section
/// 13's table and a space, or a prefix of one. `Some(true)`: it is; `Some(false)`: it is
/// not; `None`: too short to tell.
pub fn looks_like_http(bytes: &[u8]) -> Option<bool> {
    const METHODS: [&[u8]; 7] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH "];
    let mut prefix = false;
    for m in METHODS {
        let n = bytes.len().min(m.len());
        if bytes[..n] == m[..n] {
            if n == m.len() {
                return Some(true);
            }
            prefix = true;
        }
    }
    if prefix {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: &Answer) -> String {
        match a {
            Answer::Respond { bytes, .. } | Answer::Upgrade { bytes, .. } => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            Answer::NeedMore => String::new(),
        }
    }

    const UPGRADE: &str =
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:5050\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    #[test]
    fn the_page_is_served_with_its_headers_and_revalidated_by_etag() {
        let c = WebConfig::default();
        let a = answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &c, false);
        let t = text(&a);
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        for h in ["Content-Security-Policy: default-src 'none'", "X-Content-Type-Options: nosniff", "ETag: \""] {
            assert!(t.contains(h), "{h}: {t}");
        }
        assert!(t.contains("<!doctype html>"), "{t}");
        let etag = t.lines().find_map(|l| l.strip_prefix("ETag: ")).unwrap().to_owned();
        let again = format!("GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
        let a = answer(again.as_bytes(), &c, false);
        assert!(text(&a).starts_with("HTTP/1.1 304 "), "{}", text(&a));
        assert!(matches!(a, Answer::Respond { close: false, used, .. } if used == again.len()));
        let head = text(&answer(b"HEAD /app.js HTTP/1.1\r\nHost: x\r\n\r\n", &c, false));
        assert!(head.contains("Content-Type: text/javascript") && head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn wrong_paths_methods_and_upgrades_get_their_status() {
        let c = WebConfig::default();
        let status = |req: &str| text(&answer(req.as_bytes(), &c, false)).lines().next().unwrap_or("").to_owned();
        assert_eq!(status("GET /nope HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 400 Bad Request");
        let v8 = UPGRADE.replace("Version: 13", "Version: 8") + "\r\n";
        assert_eq!(status(&v8), "HTTP/1.1 426 Upgrade Required");
        let bad_key = UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short") + "\r\n";
        assert_eq!(status(&bad_key), "HTTP/1.1 400 Bad Request");
        let foreign = format!("{UPGRADE}Origin: http://evil.example\r\n\r\n");
        assert_eq!(status(&foreign), "HTTP/1.1 403 Forbidden");
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), "HTTP/1.1 431 Request Header Fields Too Large");
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(status(&endless), "HTTP/1.1 431 Request Header Fields Too Large");
        assert_eq!(answer(b"GET / HTTP/1.1\r\nHost: x\r\n", &c, false), Answer::NeedMore);
    }

    #[test]
    fn an_upgrade_from_the_same_origin_or_a_listed_one_is_accepted() {
        let same = format!("{UPGRADE}Origin: http://127.0.0.1:5050\r\n\r\n");
        let a = answer(same.as_bytes(), &WebConfig::default(), false);
        assert!(matches!(a, Answer::Upgrade { used, .. } if used == same.len()), "{}", text(&a));
        assert!(text(&a).contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        // Over TLS the page's origin is https.
        assert!(matches!(answer(same.as_bytes(), &WebConfig::default(), true), Answer::Respond { .. }));
        let https = format!("{UPGRADE}Origin: https://127.0.0.1:5050\r\n\r\n");
        assert!(matches!(answer(https.as_bytes(), &WebConfig::default(), true), Answer::Upgrade { .. }));
        let listed = format!("{UPGRADE}Origin: https://chat.example.org\r\n\r\n");
        let c = WebConfig { origins: vec!["https://chat.example.org".into()] };
        assert!(matches!(answer(listed.as_bytes(), &c, false), Answer::Upgrade { .. }));
        // No Origin: not a browser; accepted.
        let none = format!("{UPGRADE}\r\n");
        assert!(matches!(answer(none.as_bytes(), &WebConfig::default(), false), Answer::Upgrade { .. }));
    }

    #[test]
    fn http_is_told_from_its_first_bytes() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1"), Some(true));
        assert_eq!(looks_like_http(b"GE"), None);
        assert_eq!(looks_like_http(b"OPTIONS "), Some(true));
        assert_eq!(looks_like_http(b"{\"type\""), Some(false));
        assert_eq!(looks_like_http(b"GETX"), Some(false));
    }
}
