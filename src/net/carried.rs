//! What a transport carries (PROTOCOL.md section 13): the JSON stream, HTTP, or WebSocket,
//! told by the first bytes the transport yields, plain or decrypted alike.
//!
//! Owns the layer between the transport's bytes and the frame scanner's input: HTTP
//! requests are answered here (http.rs says what), WebSocket frames become frame bytes and
//! answer lines become text messages (websocket.rs). Reached only through [`Transport`]
//! (transport.rs), the one interface a connection has to what it speaks. Pure: buffers in
//! and out, no socket, no chat state.
//!
//! [`Transport`]: super::transport::Transport

use super::http::{self, WebConfig};
use super::websocket::{self, WsError, WsReader};

pub(super) enum Carried {
    /// Nothing yet, or a prefix of an HTTP method.
    Undecided,
    /// The JSON stream: transport bytes are frame bytes.
    Json,
    /// HTTP requests; the bytes of the next request head so far.
    Http(Vec<u8>),
    /// WebSocket: text payload becomes frame bytes, each answer line one text message.
    Ws(Box<WsReader>),
    /// Answered and closing: whatever else arrives is dropped.
    Done,
}

/// What one step of carrying asks of the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Going,
    /// Close once the output is written (an HTTP answer that ends it, a WebSocket close).
    Linger,
    /// The client's WebSocket frames broke RFC 6455; the close frame is queued.
    Refused(WsError),
}

/// What a carrying step needs from the port and the transport under it.
pub(super) struct Context<'a> {
    pub web: &'a WebConfig,
    /// The transport under it is TLS (`https://`, `wss://`).
    pub secure: bool,
    pub max_frame: usize,
}

impl Carried {
    /// Passes the bytes the transport just added to `input` (from `before` on) through:
    /// the JSON stream leaves them; HTTP answers them into `out`; WebSocket turns them into
    /// frame bytes and its control answers into `out`.
    pub fn carry(&mut self, before: usize, input: &mut Vec<u8>, out: &mut Vec<u8>, cx: &Context) -> Outcome {
        match self {
            Carried::Json => Outcome::Going,
            Carried::Undecided => match http::looks_like_http(input) {
                None => Outcome::Going,
                Some(false) => {
                    *self = Carried::Json;
                    Outcome::Going
                }
                Some(true) => {
                    let raw = std::mem::take(input);
                    *self = Carried::Http(Vec::new());
                    self.http(&raw, input, out, cx)
                }
            },
            Carried::Http(_) => {
                let fresh = input.split_off(before.min(input.len()));
                self.http(&fresh, input, out, cx)
            }
            Carried::Ws(_) => {
                let fresh = input.split_off(before.min(input.len()));
                self.ws(&fresh, input, out)
            }
            Carried::Done => {
                input.truncate(before);
                Outcome::Going
            }
        }
    }

    /// Answers the complete requests among the HTTP bytes so far.
    fn http(&mut self, fresh: &[u8], input: &mut Vec<u8>, out: &mut Vec<u8>, cx: &Context) -> Outcome {
        let Carried::Http(mut buf) = std::mem::replace(self, Carried::Done) else { return Outcome::Going };
        buf.extend_from_slice(fresh);
        loop {
            match http::answer(&buf, cx.web, cx.secure) {
                http::Answer::NeedMore => break,
                http::Answer::Respond { bytes, used, close } => {
                    out.extend_from_slice(&bytes);
                    if close {
                        return Outcome::Linger;
                    }
                    buf.drain(..used);
                    if buf.is_empty() {
                        buf = Vec::new();
                        break;
                    }
                }
                http::Answer::Upgrade { bytes, used } => {
                    out.extend_from_slice(&bytes);
                    *self = Carried::Ws(Box::new(WsReader::new(cx.max_frame)));
                    return self.ws(&buf[used..], input, out);
                }
            }
        }
        *self = Carried::Http(buf);
        Outcome::Going
    }

    /// Decodes WebSocket frames into frame bytes; answers pings and closes.
    fn ws(&mut self, fresh: &[u8], input: &mut Vec<u8>, out: &mut Vec<u8>) -> Outcome {
        let Carried::Ws(reader) = self else { return Outcome::Going };
        match reader.receive(fresh, input, out) {
            Ok(seen) if seen.closed => Outcome::Linger,
            Ok(_) => Outcome::Going,
            Err(e) => {
                websocket::close_frame(out, e.close_code());
                *self = Carried::Done;
                Outcome::Refused(e)
            }
        }
    }

    /// True when the input holds frame bytes (JSON, or WebSocket text).
    pub fn frames(&self) -> bool {
        matches!(self, Carried::Json | Carried::Ws(_))
    }

    /// Appends answer bytes to `out` as this layer sends them (whole lines, or a slice of a
    /// long one).
    pub fn encode(&mut self, lines: &[u8], out: &mut Vec<u8>) {
        match self {
            // Each answer line is one text message, without its newline.
            Carried::Ws(ws) => ws.frame_answer(out, lines),
            _ => out.extend_from_slice(lines),
        }
    }

    /// The name for logs and metrics, when it changes the transport's.
    pub fn name(&self, secure: bool) -> Option<&'static str> {
        match (self, secure) {
            (Carried::Ws(_), true) => Some("wss"),
            (Carried::Ws(_), false) => Some("ws"),
            (Carried::Http(_), true) => Some("https"),
            (Carried::Http(_), false) => Some("http"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(web: &WebConfig) -> Context<'_> {
        Context { web, secure: false, max_frame: 1024 }
    }

    /// An HTTP request arriving in pieces, a keep-alive second request, then an upgrade
    /// whose first WebSocket frame came in the same read: each lands where it belongs.
    #[test]
    fn http_then_websocket_in_one_stream() {
        let web = WebConfig::default();
        let (mut c, mut input, mut out) = (Carried::Undecided, Vec::new(), Vec::new());
        input.extend_from_slice(b"GE");
        assert_eq!(c.carry(0, &mut input, &mut out, &cx(&web)), Outcome::Going);
        assert!(out.is_empty() && !c.frames());
        input.extend_from_slice(b"T / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.carry(0, &mut input, &mut out, &cx(&web)), Outcome::Going);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n") && input.is_empty());
        assert_eq!(c.name(false), Some("http"));
        out.clear();
        let mut upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        // A masked text frame "{}" (mask 0: the payload as it is).
        upgrade.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'{', b'}']);
        input.extend_from_slice(&upgrade);
        assert_eq!(c.carry(0, &mut input, &mut out, &cx(&web)), Outcome::Going);
        assert!(out.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&out));
        assert_eq!(input, b"{}");
        assert!(c.frames() && c.name(true) == Some("wss"));
        out.clear();
        c.encode(b"{\"a\":1}\n", &mut out);
        assert_eq!(out, b"\x81\x07{\"a\":1}");
        // A binary frame: refused, closed with 1003, and later bytes dropped.
        let before = input.len();
        input.extend_from_slice(&[0x82, 0x81, 0, 0, 0, 0, 7]);
        out.clear();
        assert_eq!(c.carry(before, &mut input, &mut out, &cx(&web)), Outcome::Refused(WsError::Binary));
        assert_eq!(out, [0x88, 2, 0x03, 0xeb]);
        input.extend_from_slice(b"more");
        c.carry(before, &mut input, &mut out, &cx(&web));
        assert_eq!(input, b"{}");
    }

    #[test]
    fn json_is_left_alone() {
        let web = WebConfig::default();
        let (mut c, mut input, mut out) = (Carried::Undecided, b"{\"type\":\"ping\"}".to_vec(), Vec::new());
        assert_eq!(c.carry(0, &mut input, &mut out, &cx(&web)), Outcome::Going);
        assert!(c.frames() && out.is_empty() && input == b"{\"type\":\"ping\"}" && c.name(false).is_none());
        c.encode(b"{}\n", &mut out);
        assert_eq!(out, b"{}\n");
    }
}
