//! RFC 6455 framing, server side (PROTOCOL.md section 13, the WebSocket bullet).
//!
//! Owns one connection's frame decoder: client frames in, the text payload out into the
//! connection's input (where the frame scanner reads it exactly as a TCP stream), and the
//! control answers (pong, close) out as ready frames. Pure: no sockets, no chat state.
//! Never buffers more than one frame of at most `max_message` bytes, and never passes a
//! binary payload on.

use std::fmt;

// The frame bits and opcodes (RFC 6455 section 5.2); `ws_client.rs` uses them too.
pub(crate) const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
pub(crate) const MASKED: u8 = 0x80;

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// Control frames carry at most this many payload bytes (RFC 6455 section 5.5).
const MAX_CONTROL: usize = 125;

/// Close status codes sent.
pub const NORMAL: u16 = 1000;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED: u16 = 1003;
pub const TOO_BIG: u16 = 1009;

/// Why a client's frames end the connection; each maps to the close code sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A client frame without a mask (clients must mask).
    Unmasked,
    /// Reserved bits set (no extension was negotiated).
    Reserved,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame over 125 bytes or fragmented.
    BadControl,
    /// A continuation with no message started, or a new message inside a fragmented one.
    BadFragment,
    /// A binary message (natter speaks text).
    Binary,
    /// A message longer than `--max-frame` (a 64-bit length with its top bit set included).
    TooBig,
}

impl WsError {
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Binary => UNSUPPORTED,
            WsError::TooBig => TOO_BIG,
            _ => PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Unmasked => f.write_str("unmasked client frame"),
            WsError::Reserved => f.write_str("reserved bits set"),
            WsError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            WsError::BadControl => f.write_str("control frame fragmented or over 125 bytes"),
            WsError::BadFragment => f.write_str("continuation out of place"),
            WsError::Binary => f.write_str("binary message"),
            WsError::TooBig => f.write_str("message longer than --max-frame"),
        }
    }
}

/// What the decoder saw besides text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The client sent close: the answer is queued; the connection ends once it is written.
    pub closed: bool,
}

/// One connection's framing state: the decoder's, and where the answers framed stopped.
#[derive(Debug)]
pub struct WsReader {
    /// Bytes of a frame not complete yet (released when empty).
    partial: Vec<u8>,
    /// Inside a fragmented text message: its bytes so far.
    message: Option<usize>,
    max_message: usize,
    closed: bool,
    /// The answer bytes framed so far ended inside a line (a long answer written a slice
    /// at a time): the next bytes continue that message.
    answer_open: bool,
}

impl WsReader {
    pub fn new(max_message: usize) -> WsReader {
        WsReader { partial: Vec::new(), message: None, max_message, closed: false, answer_open: false }
    }

    /// Appends answer bytes (server JSON lines, each ending in `\n`) as text messages, one
    /// per line without its `\n`. Bytes that stop inside a line go out as a fragment (no
    /// FIN), and the next call continues that message: a line given a slice at a time is
    /// still one message to the client.
    pub fn frame_answer(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (piece, ends) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            rest = &rest[(piece.len() + usize::from(ends)).min(rest.len())..];
            if piece.is_empty() && !self.answer_open {
                continue;
            }
            let opcode = if self.answer_open { CONTINUATION } else { TEXT };
            header(out, if ends { FIN | opcode } else { opcode }, piece.len());
            out.extend_from_slice(piece);
            self.answer_open = !ends;
        }
    }

    /// Bytes held for a frame not complete yet.
    pub fn held(&self) -> usize {
        self.partial.capacity()
    }

    /// Decodes `bytes`: text payload goes to `text`, control answers (framed) to `replies`.
    /// After an error nothing more is decoded; the caller sends [`close_frame`] with its code.
    pub fn receive(&mut self, bytes: &[u8], text: &mut Vec<u8>, replies: &mut Vec<u8>) -> Result<Seen, WsError> {
        let mut seen = Seen::default();
        if self.closed {
            return Ok(seen);
        }
        let owned;
        let mut data: &[u8] = if self.partial.is_empty() {
            bytes
        } else {
            self.partial.extend_from_slice(bytes);
            owned = std::mem::take(&mut self.partial);
            &owned
        };
        while let Some((used, closed)) = self.frame(data, text, replies)? {
            data = &data[used..];
            if closed {
                self.closed = true;
                seen.closed = true;
                return Ok(seen);
            }
        }
        if !data.is_empty() {
            self.partial = data.to_vec();
        }
        Ok(seen)
    }

    /// One frame from the front of `data`: `None` when incomplete, else the bytes it took
    /// and whether it was a close.
    fn frame(
        &mut self,
        data: &[u8],
        text: &mut Vec<u8>,
        replies: &mut Vec<u8>,
    ) -> Result<Option<(usize, bool)>, WsError> {
        if data.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (data[0], data[1]);
        if b0 & RSV != 0 {
            return Err(WsError::Reserved);
        }
        if b1 & MASKED == 0 {
            return Err(WsError::Unmasked);
        }
        let fin = b0 & FIN != 0;
        let opcode = b0 & 0x0F;
        let control = opcode & 0x8 != 0;
        let (len, mut at) = match b1 & 0x7F {
            126 if data.len() < 4 => return Ok(None),
            126 => (u64::from(u16::from_be_bytes([data[2], data[3]])), 4),
            127 if data.len() < 10 => return Ok(None),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if control && (!fin || len > MAX_CONTROL as u64) {
            return Err(WsError::BadControl);
        }
        // Checked before waiting for the payload: a 2^63 length is refused at its header
        // (saturating: a length near 2^64 must not wrap past the check).
        let so_far = self.message.unwrap_or(0) as u64;
        if !control && so_far.saturating_add(len) > self.max_message as u64 {
            return Err(match opcode {
                BINARY => WsError::Binary,
                _ => WsError::TooBig,
            });
        }
        let len = len as usize;
        if data.len() < at + 4 + len {
            return Ok(None);
        }
        let mask = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        at += 4;
        let payload = &data[at..at + len];
        let used = at + len;
        match opcode {
            TEXT | CONTINUATION => {
                match (opcode, self.message) {
                    (TEXT, Some(_)) | (CONTINUATION, None) => return Err(WsError::BadFragment),
                    _ => {}
                }
                let start = text.len();
                text.extend_from_slice(payload);
                unmask(&mut text[start..], mask);
                self.message = if fin { None } else { Some(so_far as usize + len) };
                Ok(Some((used, false)))
            }
            BINARY => Err(WsError::Binary),
            PING => {
                let mut body = payload.to_vec();
                unmask(&mut body, mask);
                control_frame(replies, PONG, &body);
                Ok(Some((used, false)))
            }
            PONG => Ok(Some((used, false))),
            CLOSE => {
                // Echo the client's status code (RFC 6455 section 5.5.1), or say normal.
                let mut body = payload.to_vec();
                unmask(&mut body, mask);
                let code = if body.len() >= 2 { u16::from_be_bytes([body[0], body[1]]) } else { NORMAL };
                close_frame(replies, code);
                Ok(Some((used, true)))
            }
            op => Err(WsError::UnknownOpcode(op)),
        }
    }
}

fn unmask(bytes: &mut [u8], mask: [u8; 4]) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn header(out: &mut Vec<u8>, first: u8, len: usize) {
    header_with(out, first, 0, len);
}

/// A frame header: `first` (FIN and opcode), then the length with `mask` (0, or
/// [`MASKED`] for a client's frame, whose 4-byte key the caller appends).
pub(crate) fn header_with(out: &mut Vec<u8>, first: u8, mask: u8, len: usize) {
    out.push(first);
    if len < 126 {
        out.push(mask | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends one server text message (unmasked, unfragmented).
pub fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    header(out, FIN | TEXT, payload.len());
    out.extend_from_slice(payload);
}

fn control_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    header(out, FIN | opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code`.
pub fn close_frame(out: &mut Vec<u8>, code: u16) {
    control_frame(out, CLOSE, &code.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = Vec::new();
        out.push(first);
        let len = payload.len();
        if len < 126 {
            out.push(MASKED | len as u8);
        } else if len <= 65535 {
            out.push(MASKED | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(MASKED | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[start..], mask);
        out
    }

    fn run(r: &mut WsReader, bytes: &[u8]) -> (Result<Seen, WsError>, Vec<u8>, Vec<u8>) {
        let (mut text, mut replies) = (Vec::new(), Vec::new());
        let res = r.receive(bytes, &mut text, &mut replies);
        (res, text, replies)
    }

    #[test]
    fn text_in_pieces_and_fragments_joins_into_one_stream() {
        let mut r = WsReader::new(1000);
        let mut bytes = client(FIN | TEXT, b"{\"type\":");
        bytes.extend(client(TEXT, b"\"pi"));
        bytes.extend(client(FIN | CONTINUATION, b"ng\"}"));
        let mut all = Vec::new();
        // Byte by byte: every split point of every frame.
        for b in &bytes {
            let (res, text, replies) = run(&mut r, std::slice::from_ref(b));
            assert_eq!(res, Ok(Seen::default()));
            assert!(replies.is_empty());
            all.extend(text);
        }
        assert_eq!(all, b"{\"type\":\"ping\"}");
        assert_eq!(r.held(), 0, "nothing held between frames");
    }

    #[test]
    fn ping_is_answered_and_close_echoed() {
        let mut r = WsReader::new(1000);
        let (res, text, replies) = run(&mut r, &client(FIN | PING, b"hi"));
        assert_eq!((res, text), (Ok(Seen::default()), vec![]));
        assert_eq!(replies, [FIN | PONG, 2, b'h', b'i']);
        let (res, _, replies) = run(&mut r, &client(FIN | CLOSE, &1001u16.to_be_bytes()));
        assert_eq!(res, Ok(Seen { closed: true }));
        assert_eq!(replies, [FIN | CLOSE, 2, 0x03, 0xe9]);
    }

    #[test]
    fn hostile_frames_are_refused_with_their_codes() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![FIN | TEXT, 2, b'h', b'i'], WsError::Unmasked),
            (client(FIN | BINARY, b"x"), WsError::Binary),
            (client(FIN | TEXT, &[b'a'; 101]), WsError::TooBig),
            (client(FIN | PING, &[0; 126]), WsError::BadControl),
            (client(PING, b""), WsError::BadControl),
            (client(FIN | CONTINUATION, b"x"), WsError::BadFragment),
            (client(FIN | TEXT | 0x40, b"x"), WsError::Reserved),
            (client(FIN | 0x3, b"x"), WsError::UnknownOpcode(3)),
            // A 2^63 length: refused at its header, before any payload.
            (vec![FIN | TEXT, MASKED | 127, 0x80, 0, 0, 0, 0, 0, 0, 0], WsError::TooBig),
        ];
        // A length of 2^64 - 1 after a fragment: the sum must not wrap past the limit
        // (found by tests/fuzz.rs; it overflowed).
        let mut r = WsReader::new(100);
        assert!(run(&mut r, &client(TEXT, b"abcd")).0.is_ok());
        let huge = [CONTINUATION, MASKED | 127, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0];
        assert_eq!(run(&mut r, &huge).0, Err(WsError::TooBig));
        for (bytes, want) in cases {
            let mut r = WsReader::new(100);
            assert_eq!(run(&mut r, &bytes).0, Err(want), "{bytes:?}");
        }
        assert_eq!(WsError::Binary.close_code(), 1003);
        assert_eq!(WsError::TooBig.close_code(), 1009);
        // A fragmented message counts its fragments together.
        let mut r = WsReader::new(100);
        assert!(run(&mut r, &client(TEXT, &[b'a'; 60])).0.is_ok());
        assert_eq!(run(&mut r, &client(FIN | CONTINUATION, &[b'a'; 60])).0, Err(WsError::TooBig));
    }

    #[test]
    fn server_lines_become_one_message_each() {
        let mut out = Vec::new();
        WsReader::new(100).frame_answer(&mut out, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(out, b"\x81\x07{\"a\":1}\x81\x07{\"b\":2}");
        let mut big = Vec::new();
        text_frame(&mut big, &[b'x'; 70_000]);
        assert_eq!(&big[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn a_line_given_in_slices_is_one_fragmented_message() {
        let mut ws = WsReader::new(100);
        let mut out = Vec::new();
        for slice in [&b"{\"a\""[..], b"", b":1", b"}\n{\"b\":2}\n"] {
            ws.frame_answer(&mut out, slice);
        }
        // TEXT without FIN, a CONTINUATION, the final CONTINUATION, then a whole message.
        let want: &[u8] = b"\x01\x04{\"a\"\x00\x02:1\x80\x01}\x81\x07{\"b\":2}";
        assert_eq!(out, want);
        // A slice ending exactly at a line's end closes the message with an empty FIN frame
        // only when the message was open.
        let mut out = Vec::new();
        ws.frame_answer(&mut out, b"{\"c\"");
        ws.frame_answer(&mut out, b"\n");
        assert_eq!(out, b"\x01\x04{\"c\"\x80\x00");
    }
}
