//! What a connection speaks, told apart by its first bytes (PROTOCOL.md section 13), and
//! how its socket bytes become frame bytes.
//!
//! One port serves every transport. Today only the plain JSON stream is spoken; this is
//! where TLS, PROXY headers and WebSocket come in as further variants, each turning socket
//! bytes into the frame bytes the scanner reads (and back), so that neither the chat core
//! nor the scanner learns about them. Detection looks at no more bytes than it needs:
//!
//! | first bytes | today |
//! | --- | --- |
//! | `{` or JSON whitespace | the plain stream |
//! | a prefix of the PROXY v2 signature (it starts with CR LF, also whitespace) | wait for more |
//! | `PROXY ` or the v2 signature | closed without an answer (no `--proxy-from` yet) |
//! | `0x16`, a TLS handshake record | closed at once (no certificate configured yet) |
//! | anything else, HTTP included | the plain stream, whose scanner answers `invalid` and closes (section 1) |
//!
//! Pure: bytes in, a verdict out. Never touches sockets.

/// The 12-byte signature that starts a PROXY protocol v2 header.
const PROXY_V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const PROXY_V1: &[u8] = b"PROXY ";
/// The content type of a TLS handshake record, the first byte of every ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the first bytes of a connection say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Not enough bytes to tell yet.
    NeedMore,
    /// The plain JSON stream of sections 1-12.
    Plain,
    /// A transport this server does not offer: close without a word.
    Refuse(&'static str),
}

/// Tells the transport from the bytes received so far (at least one).
pub fn detect(first: &[u8]) -> Detected {
    if first.is_empty() {
        return Detected::NeedMore;
    }
    for signature in [&PROXY_V2[..], PROXY_V1] {
        let n = first.len().min(signature.len());
        if first[..n] == signature[..n] {
            return if n < signature.len() {
                Detected::NeedMore
            } else {
                Detected::Refuse("PROXY header from a peer not in --proxy-from")
            };
        }
    }
    if first[0] == TLS_HANDSHAKE {
        return Detected::Refuse("TLS handshake, but no certificate is configured");
    }
    Detected::Plain
}

/// What a connection speaks, as far as its bytes so far tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Nothing read yet, or too little to tell: its bytes wait.
    Detecting,
    /// The plain JSON stream: socket bytes are frame bytes.
    Plain,
}

impl Transport {
    /// Looks at the input received so far while the transport is not known; `Err` with
    /// the reason when the connection must be closed without an answer.
    pub fn observe(&mut self, input: &[u8]) -> Result<(), &'static str> {
        if *self == Transport::Detecting {
            match detect(input) {
                Detected::NeedMore => {}
                Detected::Plain => *self = Transport::Plain,
                Detected::Refuse(why) => return Err(why),
            }
        }
        Ok(())
    }

    /// True once frames can be read from the input.
    pub fn ready(self) -> bool {
        self != Transport::Detecting
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
        assert!(matches!(detect(b"\r\n\r\n\0\r\nQUIT\n\x21"), Detected::Refuse(_)));
        assert_eq!(detect(b"PRO"), Detected::NeedMore);
        assert!(matches!(detect(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Detected::Refuse(_)));
        assert!(matches!(detect(b"\x16\x03\x01\x02\x00"), Detected::Refuse(_)));
        // HTTP and anything else: the plain stream, which refuses it as section 1 says.
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Plain);
        assert_eq!(detect(b"PRX"), Detected::Plain);
        assert_eq!(detect(b"\x00"), Detected::Plain);
    }

    #[test]
    fn a_transport_is_ready_once_its_bytes_tell_it() {
        let mut t = Transport::Detecting;
        assert_eq!(t.observe(b"\r\n"), Ok(()));
        assert!(!t.ready());
        assert_eq!(t.observe(b"\r\n{"), Ok(()));
        assert!(t.ready());
        // Decided once: later bytes are frames, not first bytes.
        assert_eq!(t.observe(b"\x16"), Ok(()));
        assert!(Transport::Detecting.observe(b"\x16").is_err());
    }
}
