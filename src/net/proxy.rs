//! PROXY protocol headers, v1 (text) and v2 (binary), as HAProxy sends them
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>): the client's address
//! as the load balancer saw it, sent before anything else on the connection.
//!
//! Pure: bytes in, a header or a reason out. Only peers in `--proxy-from` get here; the
//! transport decides that. Never trusts a length it has not bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts a v2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 line is at most 107 bytes with its CR LF (the specification's bound).
const V1_MAX: usize = 107;
/// The address block of a v2 header is at most this long here: the addresses (36 bytes
/// for TCP over IPv6) and room for the TLVs HAProxy adds (a unique id, SSL details).
const V2_MAX_BLOCK: usize = 512;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection: the client's address and the address it connected to.
    Proxied { source: SocketAddr, destination: SocketAddr },
    /// The proxy speaking for itself (v2 LOCAL, a health check; v1 `UNKNOWN`): the
    /// connection keeps the proxy's own address.
    Local,
}

/// Why a header was refused; the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    Malformed(&'static str),
    TooLong,
}

impl ProxyError {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyError::Malformed(why) => why,
            ProxyError::TooLong => "PROXY header too long",
        }
    }
}

/// Reads a header at the start of `input`: `Ok(None)` while it is incomplete, else the
/// header and how many bytes it took.
pub fn parse(input: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    if input.starts_with(V2_SIGNATURE) {
        v2(input)
    } else if input.starts_with(V1_PREFIX) {
        v1(input)
    } else {
        Err(ProxyError::Malformed("not a PROXY header"))
    }
}

fn v1(input: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(end) = input.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if input.len() >= V1_MAX { Err(ProxyError::TooLong) } else { Ok(None) };
    };
    let line = &input[..end];
    let line = line.strip_suffix(b"\r").ok_or(ProxyError::Malformed("PROXY v1 line without CR LF"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("PROXY v1 line is not text"))?;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let header = match words.next() {
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let bad = ProxyError::Malformed("PROXY v1 addresses");
            let mut next = || words.next().ok_or(bad);
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if words.next().is_some() {
                return Err(bad);
            }
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s.parse().map_err(|_| bad)?;
                if ip.is_ipv4() == (family == "TCP4") {
                    Ok(ip)
                } else {
                    Err(bad)
                }
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                if s.is_empty()
                    || s.len() > 5
                    || !s.bytes().all(|b| b.is_ascii_digit())
                    || (s.len() > 1 && s.starts_with('0'))
                {
                    return Err(bad);
                }
                s.parse().map_err(|_| bad)
            };
            Header::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => return Err(ProxyError::Malformed("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some((header, end + 1)))
}

fn v2(input: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    if input.len() < 16 {
        return Ok(None);
    }
    let (version_command, family) = (input[12], input[13]);
    let len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("PROXY v2 version is not 2"));
    }
    if len > V2_MAX_BLOCK {
        return Err(ProxyError::TooLong);
    }
    if input.len() < 16 + len {
        return Ok(None);
    }
    let block = &input[16..16 + len];
    let header = match version_command & 0x0f {
        0x0 => Header::Local,
        0x1 => match family {
            // AF_UNSPEC: the proxy does not know; the connection keeps its own address.
            0x00 => Header::Local,
            // TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes.
            0x11 if block.len() >= 12 => {
                let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]));
                let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            // TCP over IPv6: 16 + 16 address bytes, 2 + 2 port bytes.
            0x21 if block.len() >= 36 => {
                let ip = |at: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&block[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            0x11 | 0x21 => return Err(ProxyError::Malformed("PROXY v2 address block too short")),
            _ => return Err(ProxyError::Malformed("PROXY v2 family is not TCP over IPv4 or IPv6")),
        },
        _ => return Err(ProxyError::Malformed("PROXY v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Some((header, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    #[test]
    fn v1_lines_give_the_client_address() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 5050\r\n{\"type\":\"ping\"}";
        let (h, n) = parse(line).unwrap().unwrap();
        assert_eq!(n, line.len() - 15);
        assert_eq!(
            h,
            Header::Proxied {
                source: "203.0.113.7:56324".parse().unwrap(),
                destination: "192.0.2.1:5050".parse().unwrap()
            }
        );
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap().unwrap();
        assert!(matches!(h, Header::Proxied { source, .. } if source.ip().is_ipv6()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0, Header::Local);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2").unwrap(), None, "waits for the line's end");
    }

    #[test]
    fn bad_v1_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&[b'P'; 200][..]).unwrap_err(), ProxyError::Malformed("not a PROXY header"));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend_from_slice(&[b'1'; 120]);
        assert_eq!(parse(&long).unwrap_err(), ProxyError::TooLong);
    }

    #[test]
    fn v2_headers_give_the_client_address_or_mean_the_proxy_itself() {
        let block = [203, 0, 113, 7, 192, 0, 2, 1, 0xdc, 0x04, 0x13, 0xba];
        let mut h = v2_header(1, 0x11, &block);
        h.extend_from_slice(b"{}");
        let (header, n) = parse(&h).unwrap().unwrap();
        assert_eq!(n, 28);
        assert_eq!(
            header,
            Header::Proxied {
                source: "203.0.113.7:56324".parse().unwrap(),
                destination: "192.0.2.1:5050".parse().unwrap()
            }
        );
        let mut six = [0u8; 36];
        six[15] = 1;
        six[31] = 2;
        let (header, _) = parse(&v2_header(1, 0x21, &six)).unwrap().unwrap();
        assert_eq!(
            header,
            Header::Proxied { source: "[::1]:0".parse().unwrap(), destination: "[::2]:0".parse().unwrap() }
        );
        // LOCAL: the proxy's health check; TLVs after the addresses are skipped.
        assert_eq!(parse(&v2_header(0, 0x00, &[])).unwrap().unwrap().0, Header::Local);
        let mut tlv = block.to_vec();
        tlv.extend_from_slice(&[0x05, 0x00, 0x02, b'i', b'd']);
        assert_eq!(parse(&v2_header(1, 0x11, &tlv)).unwrap().unwrap().1, 16 + 17);
        // Incomplete: waits.
        assert_eq!(parse(&h[..20]).unwrap(), None);
        assert_eq!(parse(&h[..14]).unwrap(), None);
    }

    #[test]
    fn bad_v2_headers_are_refused() {
        let mut wrong_version = v2_header(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x31;
        assert!(parse(&wrong_version).is_err());
        assert!(parse(&v2_header(2, 0x11, &[0; 12])).is_err(), "command 2");
        assert!(parse(&v2_header(1, 0x11, &[0; 8])).is_err(), "short IPv4 block");
        assert!(parse(&v2_header(1, 0x21, &[0; 20])).is_err(), "short IPv6 block");
        assert!(parse(&v2_header(1, 0x31, &[0; 216])).is_err(), "AF_UNIX");
        assert!(parse(&v2_header(1, 0x12, &[0; 12])).is_err(), "UDP");
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge).unwrap_err(), ProxyError::TooLong, "refused before 64 KiB arrive");
    }
}
