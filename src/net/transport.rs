//! What a connection speaks, told apart by its first bytes (PROTOCOL.md section 13), and
//! how its socket bytes become frame bytes and back.
//!
//! One port serves every transport. Each state owns what it needs: detection only looks,
//! a PROXY header is read and dropped (its addresses go to the connection), TLS owns its
//! rustls session, and what the layer carries (JSON, HTTP, WebSocket) is carried.rs's. The chat core and the frame scanner never learn which one a connection
//! speaks. Detection looks at no more bytes than it needs:
//!
//! | first bytes | transport |
//! | --- | --- |
//! | `{` or JSON whitespace | the plain stream (refused from a non-loopback client under `--require-tls`) |
//! | a prefix of the PROXY v2 signature (it starts with CR LF, also whitespace) | wait for more |
//! | `PROXY ` or the v2 signature | from a `--proxy-from` peer: the header, then detection again; else closed without an answer |
//! | `0x16`, a TLS handshake record | TLS with `--tls-cert`; inside it, the same choice of what it carries. Without a certificate: closed at once |
//! | a prefix of an HTTP method | wait for more |
//! | anything else, HTTP included | the plain stream (inside which conn.rs tells HTTP from JSON) |
//!
//! HTTP and WebSocket travel inside either layer, plain or TLS, so they are told apart
//! (carried.rs) once the layer is known, on the bytes it yields.

use super::carried::{Carried, Context, Outcome};
use super::proxy::{self, Header};
use super::tls::{Received, TlsError, TlsLink};
use rustls::ServerConfig;
use std::net::IpAddr;
use std::sync::Arc;

/// The content type of a TLS handshake record, the first byte of every ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the first bytes of a connection say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Not enough bytes to tell yet.
    NeedMore,
    /// The plain JSON stream of sections 1-12.
    Plain,
    /// A PROXY protocol header, v1 or v2.
    Proxy,
    /// A TLS ClientHello.
    Tls,
}

/// Tells the transport from the bytes received so far (at least one). Pure.
pub fn detect(first: &[u8]) -> Detected {
    if first.is_empty() {
        return Detected::NeedMore;
    }
    for signature in [&proxy::V2_SIGNATURE[..], proxy::V1_PREFIX] {
        let n = first.len().min(signature.len());
        if first[..n] == signature[..n] {
            return if n < signature.len() { Detected::NeedMore } else { Detected::Proxy };
        }
    }
    if first[0] == TLS_HANDSHAKE {
        return Detected::Tls;
    }
    if super::http::looks_like_http(first).is_none() {
        // A prefix of an HTTP method: the plain stream carries HTTP too, but under
        // --require-tls it must be refused as HTTP (a 426), so wait for the method.
        return Detected::NeedMore;
    }
    Detected::Plain
}

/// What the listening port offers a new connection, from the configuration.
#[derive(Clone, Default)]
pub struct Offer {
    /// The TLS configuration, when `--tls-cert` is set.
    pub tls: Option<Arc<ServerConfig>>,
    /// `--require-tls`: the plain stream only from loopback clients.
    pub require_tls: bool,
    /// What HTTP and WebSocket allow (`--ws-origins`).
    pub web: Arc<super::http::WebConfig>,
}

/// Why a connection is refused while its transport is being told.
#[derive(Debug)]
pub enum Refusal {
    /// Closed without a word (a transport not offered, a malformed PROXY header).
    Silent(&'static str),
    /// The plain stream from a non-loopback client under `--require-tls`: answered, then
    /// closed.
    TlsRequired,
    /// The same for plain HTTP: a 426, then closed.
    HttpTlsRequired,
    /// The TLS session failed (not TLS after all, a protocol error or an alert).
    Tls(TlsError),
}

/// What one step of detection found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The transport is known (or was already): frames can be read.
    Decided,
    /// Not enough bytes yet.
    Wait,
    /// A PROXY header was read and taken out of the input; detection goes on.
    Proxied(Header),
    /// A TLS session began; its first records were taken.
    TlsStarted(Received),
}

/// The layer on the socket, as far as its bytes so far tell.
enum Layer {
    /// Nothing read yet, or too little to tell: its bytes wait. `proxy`: the peer is in
    /// `--proxy-from` and no header has been read yet.
    Detecting { proxy: bool },
    /// Socket bytes are what it carries.
    Plain,
    /// TLS; what it carries is inside.
    Tls(Box<TlsLink>),
}

/// What a connection speaks: the layer on the socket (plain or TLS, after any PROXY
/// header) and what that layer carries (JSON, HTTP or WebSocket; carried.rs).
pub struct Transport {
    layer: Layer,
    carried: Carried,
    /// `--max-frame`, which also bounds a WebSocket message.
    max_frame: usize,
}

impl Transport {
    pub fn new(proxy_trusted: bool, max_frame: usize) -> Transport {
        Transport { layer: Layer::Detecting { proxy: proxy_trusted }, carried: Carried::Undecided, max_frame }
    }

    /// Takes bytes read from the socket into `input`: as they are, or decrypted.
    pub fn receive(&mut self, bytes: &[u8], input: &mut Vec<u8>) -> Result<Received, TlsError> {
        match &mut self.layer {
            Layer::Tls(link) => link.receive(bytes, input),
            Layer::Detecting { .. } | Layer::Plain => {
                input.extend_from_slice(bytes);
                Ok(Received { closed: false, handshake_done: false })
            }
        }
    }

    /// One step of telling the transport from `input`, for a client at `peer` (its address
    /// after any PROXY header). Call until it says [`Step::Decided`] or [`Step::Wait`].
    pub fn step(&mut self, input: &mut Vec<u8>, peer: IpAddr, offer: &Offer) -> Result<Step, Refusal> {
        let Layer::Detecting { proxy } = self.layer else { return Ok(Step::Decided) };
        match detect(input) {
            Detected::NeedMore => Ok(Step::Wait),
            Detected::Proxy if !proxy => Err(Refusal::Silent("PROXY header from a peer not in --proxy-from")),
            Detected::Proxy => match proxy::parse(input) {
                Ok(None) => Ok(Step::Wait),
                Ok(Some((header, len))) => {
                    input.drain(..len);
                    self.layer = Layer::Detecting { proxy: false };
                    Ok(Step::Proxied(header))
                }
                Err(e) => Err(Refusal::Silent(e.as_str())),
            },
            Detected::Tls => {
                let Some(config) = offer.tls.as_ref() else {
                    return Err(Refusal::Silent("TLS handshake, but no certificate is configured"));
                };
                let mut link = Box::new(TlsLink::new(config).map_err(Refusal::Tls)?);
                let raw = std::mem::take(input);
                let received = link.receive(&raw, input);
                self.layer = Layer::Tls(link);
                received.map(Step::TlsStarted).map_err(Refusal::Tls)
            }
            Detected::Plain if offer.require_tls && !peer.is_loopback() => {
                if super::http::looks_like_http(input) == Some(true) {
                    Err(Refusal::HttpTlsRequired)
                } else {
                    Err(Refusal::TlsRequired)
                }
            }
            Detected::Plain => {
                self.layer = Layer::Plain;
                Ok(Step::Decided)
            }
        }
    }

    /// True once the layer on the socket is known.
    pub fn ready(&self) -> bool {
        !matches!(self.layer, Layer::Detecting { .. })
    }

    /// Passes what the layer just added to `input` (from `before` on) through what it
    /// carries; answers of the layer itself (HTTP, WebSocket control) go to `out`.
    pub fn carry(&mut self, before: usize, input: &mut Vec<u8>, out: &mut Vec<u8>, offer: &Offer) -> Outcome {
        let cx = Context { web: &offer.web, secure: matches!(self.layer, Layer::Tls(_)), max_frame: self.max_frame };
        self.carried.carry(before, input, out, &cx)
    }

    /// True when the input holds frame bytes for the scanner.
    pub fn frames_ready(&self) -> bool {
        self.ready() && self.carried.frames()
    }

    /// Appends answer bytes to `out` as the client reads them: whole lines, or a slice of a
    /// long one (then the next bytes continue it).
    pub fn encode(&mut self, lines: &[u8], out: &mut Vec<u8>) {
        self.carried.encode(lines, out);
    }

    /// The name used in logs and metrics.
    pub fn name(&self) -> &'static str {
        let secure = matches!(self.layer, Layer::Tls(_));
        self.carried.name(secure).unwrap_or(match self.layer {
            Layer::Detecting { .. } => "detecting",
            Layer::Plain => "plain",
            Layer::Tls(_) => "tls",
        })
    }

    pub fn tls(&mut self) -> Option<&mut TlsLink> {
        match &mut self.layer {
            Layer::Tls(link) => Some(link),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_the_transport() {
        assert_eq!(detect(b""), Detected::NeedMore);
        assert_eq!(detect(b"{\"type\":\"ping\"}"), Detected::Plain);
        assert_eq!(detect(b" \t{"), Detected::Plain);
        // CR LF could start a PROXY v2 header: wait until it cannot.
        assert_eq!(detect(b"\r"), Detected::NeedMore);
        assert_eq!(detect(b"\r\n\r\n\0\r\nQUI"), Detected::NeedMore);
        assert_eq!(detect(b"\r\n{"), Detected::Plain);
        assert_eq!(detect(b"\r\n\r\n\0\r\nQUIT\n\x21"), Detected::Proxy);
        assert_eq!(detect(b"PRO"), Detected::NeedMore);
        assert_eq!(detect(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Detected::Proxy);
        assert_eq!(detect(b"\x16\x03\x01\x02\x00"), Detected::Tls);
        // HTTP and anything else: the plain stream, which refuses it as section 1 says.
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Plain);
        assert_eq!(detect(b"PRX"), Detected::Plain);
        assert_eq!(detect(b"\x00"), Detected::Plain);
    }

    fn loopback() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn a_transport_is_ready_once_its_bytes_tell_it() {
        let offer = Offer::default();
        let mut t = Transport::new(false, 4096);
        let mut input = b"\r\n".to_vec();
        assert_eq!(t.step(&mut input, loopback(), &offer).unwrap(), Step::Wait);
        assert!(!t.ready());
        input.push(b'{');
        assert_eq!(t.step(&mut input, loopback(), &offer).unwrap(), Step::Decided);
        assert!(t.ready());
        // Decided once: later bytes are frames, not first bytes.
        let mut tls = vec![0x16];
        assert_eq!(t.step(&mut tls, loopback(), &offer).unwrap(), Step::Decided);
        assert!(matches!(Transport::new(false, 4096).step(&mut tls, loopback(), &offer), Err(Refusal::Silent(_))));
    }

    #[test]
    fn a_proxy_header_is_taken_from_trusted_peers_only_and_detection_goes_on() {
        let offer = Offer::default();
        let mut input = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 5050\r\n{\"type\"".to_vec();
        let mut untrusted = Transport::new(false, 4096);
        assert!(matches!(untrusted.step(&mut input.clone(), loopback(), &offer), Err(Refusal::Silent(_))));
        let mut t = Transport::new(true, 4096);
        let Ok(Step::Proxied(Header::Proxied { source, .. })) = t.step(&mut input, loopback(), &offer) else {
            panic!("a trusted header is read")
        };
        assert_eq!(source.ip(), IpAddr::from([203, 0, 113, 7]));
        assert_eq!(input, b"{\"type\"");
        assert_eq!(t.step(&mut input, source.ip(), &offer).unwrap(), Step::Decided);
        // One header only: a second one is refused like any untrusted one.
        let mut twice = b"PROXY UNKNOWN\r\nPROXY UNKNOWN\r\n".to_vec();
        let mut t = Transport::new(true, 4096);
        assert!(matches!(t.step(&mut twice, loopback(), &offer), Ok(Step::Proxied(Header::Local))));
        assert!(matches!(t.step(&mut twice, loopback(), &offer), Err(Refusal::Silent(_))));
    }

    #[test]
    fn require_tls_refuses_the_plain_stream_from_other_hosts_only() {
        let offer = Offer { tls: None, require_tls: true, ..Offer::default() };
        let mut input = b"{}".to_vec();
        assert!(matches!(
            Transport::new(false, 4096).step(&mut input, IpAddr::from([192, 0, 2, 1]), &offer),
            Err(Refusal::TlsRequired)
        ));
        assert_eq!(Transport::new(false, 4096).step(&mut input, loopback(), &offer).unwrap(), Step::Decided);
        assert_eq!(
            Transport::new(false, 4096).step(&mut input, "::1".parse().unwrap(), &offer).unwrap(),
            Step::Decided
        );
    }
}
