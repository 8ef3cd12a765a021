//! Finds the boundaries of JSON objects in a client's byte stream.
//!
//! Clients send JSON objects back to back: separated by whitespace, concatenated, split over
//! many TCP segments or packed many to a segment (PROTOCOL.md section 1). [`FrameScanner`]
//! keeps its position and its lexical state (nesting depth, inside a string, after a
//! backslash) between calls, so every byte is looked at once however the stream is cut.
//!
//! The scanner only finds boundaries; it does not validate JSON. A frame with a valid
//! boundary but invalid content (`{"a":}`) is handed on and rejected by the decoder, and the
//! stream stays usable. What cannot be resynchronised is reported as [`FrameError`]: a
//! frame that does not start with `{`, or one that grows past the size limit.
//!
//! This module owns no buffer and does no I/O: the caller owns the bytes and tells the
//! scanner when it drops a consumed prefix ([`FrameScanner::consumed`]).

use crate::bytescan;

/// Why a stream cannot go on. Both end the connection after an `invalid` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A byte outside any object that is neither whitespace nor `{`.
    NotAnObject,
    /// The frame in progress is longer than the limit.
    TooLarge,
}

/// Resumable scanner over a buffer that only grows at the end and shrinks at the front.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    max_frame: usize,
    /// Offset of the next byte to scan.
    pos: usize,
    /// Offset of the `{` that opened the frame in progress (meaningful while `depth > 0`).
    start: usize,
    depth: u32,
    /// The deepest nesting of the frame in progress, then of the frame last returned.
    deepest: u32,
    in_string: bool,
    escape: bool,
}

impl FrameScanner {
    /// A scanner that rejects frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameScanner { max_frame, pos: 0, start: 0, depth: 0, deepest: 0, in_string: false, escape: false }
    }

    /// Scans `buf` from where the last call stopped and returns the range of the next
    /// complete frame, `Ok(None)` when more bytes are needed.
    ///
    /// `buf` must be the same stream as before: the bytes already scanned unchanged at the
    /// same offsets (less what [`consumed`](Self::consumed) removed), new bytes appended.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<std::ops::Range<usize>>, FrameError> {
        loop {
            if self.depth == 0 {
                let Some(&byte) = buf.get(self.pos) else { return Ok(None) };
                self.pos += 1;
                match byte {
                    b' ' | b'\t' | b'\n' | b'\r' => continue,
                    b'{' => {
                        self.start = self.pos - 1;
                        self.depth = 1;
                        self.deepest = 1;
                    }
                    _ => return Err(FrameError::NotAnObject),
                }
            }
            // Inside a frame nothing past its size limit is looked at.
            let limit = buf.len().min(self.start.saturating_add(self.max_frame));
            return match self.scan_object(&buf[..limit]) {
                Some(end) => Ok(Some(self.start..end)),
                None if limit < buf.len() => Err(FrameError::TooLarge),
                None => Ok(None),
            };
        }
    }

    /// Scans inside the frame in progress up to the end of `buf`; returns the offset just
    /// past its closing brace if it is there. The state lives in locals while scanning
    /// (this is the loop every received byte goes through), and the text of strings, most
    /// of a chat frame, is skipped eight bytes at a time.
    fn scan_object(&mut self, buf: &[u8]) -> Option<usize> {
        let (mut pos, mut depth, mut deepest) = (self.pos, self.depth, self.deepest);
        let (mut in_string, mut escape) = (self.in_string, self.escape);
        let found = loop {
            if in_string {
                if escape {
                    if pos >= buf.len() {
                        break None;
                    }
                    pos += 1;
                    escape = false;
                    continue;
                }
                match bytescan::quote_or_backslash(&buf[pos..]) {
                    Some(i) => {
                        pos += i;
                        if buf[pos] == b'\\' {
                            escape = true;
                        } else {
                            in_string = false;
                        }
                        pos += 1;
                    }
                    None => {
                        pos = buf.len();
                        break None;
                    }
                }
            } else {
                let Some(&byte) = buf.get(pos) else { break None };
                pos += 1;
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => {
                        depth += 1;
                        deepest = deepest.max(depth);
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            break Some(pos);
                        }
                    }
                    _ => {}
                }
            }
        };
        (self.pos, self.depth, self.deepest, self.in_string, self.escape) = (pos, depth, deepest, in_string, escape);
        found
    }

    /// The deepest nesting of objects and arrays in the frame last returned (1 for `{}`).
    /// The decoder refuses deep frames with it without scanning them again.
    pub fn deepest(&self) -> u32 {
        self.deepest
    }

    /// Tells the scanner that the caller removed the first `n` bytes of its buffer.
    /// `n` must not reach into the frame in progress.
    pub fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.pos && (self.depth == 0 || n <= self.start));
        self.pos -= n;
        self.start = self.start.saturating_sub(n);
    }

    /// Where the unfinished part of the buffer begins: everything before it was either a
    /// complete frame or whitespace and may be dropped with [`consumed`](Self::consumed).
    pub fn keep_from(&self) -> usize {
        if self.depth > 0 {
            self.start
        } else {
            self.pos
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(stream: &[u8], max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut s = FrameScanner::new(max);
        let mut out = Vec::new();
        while let Some(r) = s.next_frame(stream)? {
            out.push(stream[r].to_vec());
        }
        Ok(out)
    }

    /// Feeds `stream` in the given chunk sizes through a buffer that is compacted the way
    /// the connection does it; returns the frames found, and the error that ended the
    /// stream, if one did.
    fn scan_split(stream: &[u8], cuts: &[usize], max: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut s = FrameScanner::new(max);
        let (mut buf, mut out, mut rest) = (Vec::new(), Vec::new(), stream);
        let mut cuts = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match s.next_frame(&buf) {
                    Ok(Some(r)) => out.push(buf[r].to_vec()),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
            let keep = s.keep_from();
            buf.drain(..keep);
            s.consumed(keep);
        }
        (out, None)
    }

    /// The frames of `stream` fed in chunks, or the error that ended it.
    fn frames_split(stream: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        match scan_split(stream, cuts, max) {
            (frames, None) => Ok(frames),
            (_, Some(e)) => Err(e),
        }
    }

    /// The frames of `stream` fed in chunks, up to an error if one ends it.
    fn frames_until_error(stream: &[u8], cuts: &[usize], max: usize) -> Vec<Vec<u8>> {
        scan_split(stream, cuts, max).0
    }

    #[test]
    fn concatenated_and_whitespace_separated_objects_are_found() {
        let got = frames(b"{\"a\":1}{\"b\":2}\n \t{}\r\n", 100).unwrap();
        assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec(), b"{}".to_vec()]);
    }

    #[test]
    fn braces_and_quotes_inside_strings_do_not_count() {
        let s = br#"{"m":"}{ \" \\\" [ ] \\","n":{"x":["}"]}}{"z":0}"#;
        let got = frames(s, 1000).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], br#"{"m":"}{ \" \\\" [ ] \\","n":{"x":["}"]}}"#.to_vec());
    }

    #[test]
    fn a_backslash_at_a_chunk_end_is_remembered() {
        let s = br#"{"m":"a\"}b"}"#;
        for cut in 1..s.len() {
            let got = frames_split(s, &[cut, s.len()], 100).unwrap();
            assert_eq!(got, vec![s.to_vec()], "cut at {cut}");
        }
    }

    #[test]
    fn incomplete_frame_is_none_not_error() {
        let mut s = FrameScanner::new(100);
        assert_eq!(s.next_frame(b"  {\"a\":[1,"), Ok(None));
        assert_eq!(s.next_frame(b"  {\"a\":[1,2]}"), Ok(Some(2..13)));
    }

    #[test]
    fn stray_bytes_outside_an_object_cannot_be_resynchronised() {
        assert_eq!(frames(b"[1]", 100), Err(FrameError::NotAnObject));
        assert_eq!(frames(b"{}x{}", 100), Err(FrameError::NotAnObject));
        assert_eq!(frames(b"\"str\"", 100), Err(FrameError::NotAnObject));
    }

    #[test]
    fn frame_exactly_at_the_limit_passes_one_byte_over_fails() {
        let at = format!("{{\"a\":\"{}\"}}", "x".repeat(10 - 8));
        assert_eq!(at.len(), 10);
        assert_eq!(frames(at.as_bytes(), 10).unwrap().len(), 1);
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(3));
        assert_eq!(frames(over.as_bytes(), 10), Err(FrameError::TooLarge));
    }

    #[test]
    fn an_unfinished_oversize_frame_fails_before_it_ends() {
        let mut s = FrameScanner::new(16);
        let long = format!("{{\"a\":\"{}", "y".repeat(100));
        assert_eq!(s.next_frame(long.as_bytes()), Err(FrameError::TooLarge));
    }

    #[test]
    fn deep_nesting_is_only_counted_and_reported() {
        let deep = format!("{}{}", "{\"a\":".repeat(10_000), "1".to_string() + &"}".repeat(10_000));
        let mut s = FrameScanner::new(1 << 20);
        assert!(s.next_frame(deep.as_bytes()).unwrap().is_some());
        assert_eq!(s.deepest(), 10_000);
        assert!(s.next_frame(br#"{"a":[{"b":"[[{{"}]}"#).is_ok());
        let mut s = FrameScanner::new(100);
        s.next_frame(br#"{"a":[{"b":"[[{{"}]}"#).unwrap();
        assert_eq!(s.deepest(), 3);
    }

    fn object() -> impl Strategy<Value = String> {
        let text = prop::string::string_regex(r#"([a-z{}\[\]" ]|\\"|\\\\){0,12}"#).unwrap();
        let leaf = prop_oneof![
            text.prop_map(|t| serde_json::Value::String(t.replace('\\', ""))),
            any::<i32>().prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\"{}]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[a-z]{1,3}", value, 0..4)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string())
    }

    /// The byte-at-a-time scanner this one replaced, kept as the model the fast one must
    /// agree with (frames, errors, depth) on any input cut anywhere.
    struct Model {
        max: usize,
        pos: usize,
        start: usize,
        depth: u32,
        deepest: u32,
        in_string: bool,
        escape: bool,
    }

    impl Model {
        fn next(&mut self, buf: &[u8]) -> Result<Option<std::ops::Range<usize>>, FrameError> {
            while self.pos < buf.len() {
                let byte = buf[self.pos];
                self.pos += 1;
                if self.depth > 0 && self.pos - self.start > self.max {
                    return Err(FrameError::TooLarge);
                }
                if self.depth == 0 {
                    match byte {
                        b' ' | b'\t' | b'\n' | b'\r' => continue,
                        b'{' => {
                            self.start = self.pos - 1;
                            self.depth = 1;
                            self.deepest = 1;
                        }
                        _ => return Err(FrameError::NotAnObject),
                    }
                } else if self.in_string {
                    if self.escape {
                        self.escape = false;
                    } else if byte == b'\\' {
                        self.escape = true;
                    } else if byte == b'"' {
                        self.in_string = false;
                    }
                } else {
                    match byte {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => {
                            self.depth += 1;
                            self.deepest = self.deepest.max(self.depth);
                        }
                        b'}' | b']' => {
                            self.depth -= 1;
                            if self.depth == 0 {
                                return Ok(Some(self.start..self.pos));
                            }
                        }
                        _ => {}
                    }
                }
            }
            Ok(None)
        }
    }

    type Scanned = Result<Vec<(std::ops::Range<usize>, u32)>, FrameError>;

    /// Frames (with their depth) or the first error, feeding `stream` in `cuts`-sized
    /// chunks into one growing buffer, through either scanner.
    fn run_both(stream: &[u8], cuts: &[usize], max: usize) -> [Scanned; 2] {
        let mut fast = FrameScanner::new(max);
        let mut model = Model { max, pos: 0, start: 0, depth: 0, deepest: 0, in_string: false, escape: false };
        let (mut a, mut b) = (Ok(Vec::new()), Ok(Vec::new()));
        let mut end = 0;
        let mut cuts = cuts.iter().cycle();
        while end < stream.len() {
            end = (end + (*cuts.next().unwrap_or(&1)).max(1)).min(stream.len());
            let buf = &stream[..end];
            if let Ok(v) = a.as_mut() {
                loop {
                    match fast.next_frame(buf) {
                        Ok(Some(r)) => v.push((r, fast.deepest())),
                        Ok(None) => break,
                        Err(e) => {
                            a = Err(e);
                            break;
                        }
                    }
                }
            }
            if let Ok(v) = b.as_mut() {
                loop {
                    match model.next(buf) {
                        Ok(Some(r)) => v.push((r, model.deepest)),
                        Ok(None) => break,
                        Err(e) => {
                            b = Err(e);
                            break;
                        }
                    }
                }
            }
        }
        [a, b]
    }

    proptest! {
        #[test]
        fn the_fast_scanner_agrees_with_the_byte_at_a_time_model(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b'\\'), Just(b' '), Just(b'a'), any::<u8>()],
                0..400,
            ),
            cuts in prop::collection::vec(1usize..40, 1..6),
            max in 1usize..200,
        ) {
            let [fast, model] = run_both(&bytes, &cuts, max);
            prop_assert_eq!(fast, model);
        }

        #[test]
        fn any_split_of_a_valid_stream_yields_the_same_frames(
            objs in prop::collection::vec(object(), 1..8),
            seps in prop::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n"), Just("\r\n\t")], 8),
            cuts in prop::collection::vec(1usize..20, 1..10),
        ) {
            let mut stream = String::new();
            for (i, o) in objs.iter().enumerate() {
                stream.push_str(o);
                stream.push_str(seps[i % seps.len()]);
            }
            let whole = frames(stream.as_bytes(), 1 << 16).unwrap();
            let split = frames_split(stream.as_bytes(), &cuts, 1 << 16).unwrap();
            prop_assert_eq!(&whole, &split);
            let expected: Vec<Vec<u8>> = objs.iter().map(|o| o.as_bytes().to_vec()).collect();
            prop_assert_eq!(whole, expected);
        }

        /// Valid frames, then garbage, then more: every frame found before the stream
        /// breaks starts with `{`, ends with a closing bracket and is within the limit, and
        /// those before the garbage are all found, in order (up to the first one over the
        /// limit, which breaks the stream).
        #[test]
        fn frames_before_garbage_are_found_whole_and_in_bounds(
            objs in prop::collection::vec(object(), 1..5),
            noise in prop::collection::vec(any::<u8>(), 1..64),
            tail in prop::collection::vec(object(), 0..3),
            cuts in prop::collection::vec(1usize..64, 1..6),
            max in 8usize..256,
        ) {
            let mut stream = objs.join("\n").into_bytes();
            stream.push(b'\n');
            stream.extend_from_slice(&noise);
            for t in &tail {
                stream.extend_from_slice(t.as_bytes());
            }
            let got = frames_until_error(&stream, &cuts, max);
            // Whole as far as the scanner can tell: it counts brackets, so garbage such as
            // `{]` is a frame too, which the decoder then answers `invalid`.
            for f in &got {
                prop_assert!(f.len() <= max, "{} bytes over {max}", f.len());
                prop_assert_eq!(f[0], b'{');
                prop_assert!(matches!(f[f.len() - 1], b'}' | b']'), "{:?}", String::from_utf8_lossy(f));
            }
            let expected: Vec<Vec<u8>> =
                objs.iter().take_while(|o| o.len() <= max).map(|o| o.as_bytes().to_vec()).collect();
            prop_assert!(got.len() >= expected.len(), "{} of {} frames found", got.len(), expected.len());
            prop_assert_eq!(&got[..expected.len()], &expected[..]);
        }
    }
}
