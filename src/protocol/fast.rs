//! The hot path of decoding: personal and global messages in their plain form, read by
//! hand in one pass over the frame.
//!
//! It accepts a strict subset of what `request::general` accepts, and returns exactly what
//! that would return: only the keys of a message (each once), strings without escapes or
//! control characters, integer times. Anything else is `None`, and the general decoder,
//! which also words every error, takes the frame. A proptest in this file holds the two
//! to agreeing. It never fails a frame and never allocates.

use super::request::{Message, Request};
use super::text::Text;
use std::borrow::Cow;

/// What the hand parser made of a frame.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict<'a> {
    /// A plain personal or global message, read.
    Message(Request<'a>),
    /// A message request this parser cannot read (an escape, a duplicate or unknown key, a
    /// float time...): the general decoder reads it or words its error.
    CannotTake,
    /// Not a message request, as far as the parser read before it stopped.
    NotAMessage,
}

/// Reads `text` if it is a plain personal or global message.
pub(super) fn verdict(text: &str) -> Verdict<'_> {
    let mut ty = None;
    match read(text, &mut ty) {
        Some(req) => Verdict::Message(req),
        None if ty == Some("message") => Verdict::CannotTake,
        None => Verdict::NotAMessage,
    }
}

/// `Some` when `text` is a plain personal or global message.
#[cfg(test)]
fn message(text: &str) -> Option<Request<'_>> {
    match verdict(text) {
        Verdict::Message(req) => Some(req),
        Verdict::CannotTake | Verdict::NotAMessage => None,
    }
}

/// The message in `text`, leaving in `ty` the type it read, if it got that far.
fn read<'a>(text: &'a str, ty: &mut Option<&'a str>) -> Option<Request<'a>> {
    let mut p = Parser { s: text.as_bytes(), text, at: 0 };
    let (mut event, mut details) = (None, None);
    p.object(|p, key| {
        match key {
            "type" if ty.is_none() => *ty = Some(p.string()?),
            "event" if event.is_none() => event = Some(p.string()?),
            "details" if details.is_none() => details = Some(p.details()?),
            _ => return None,
        }
        Some(())
    })?;
    p.ws();
    if p.at != p.s.len() || (*ty)? != "message" {
        return None;
    }
    let global = match event? {
        "personal" => false,
        "global" => true,
        _ => return None,
    };
    let d = details?;
    let to = if global { None } else { Some(borrowed(d.to??)) };
    let message = Message {
        to,
        message: borrowed(d.message??),
        media: d.media.flatten().map(borrowed),
        time: d.time.flatten(),
        client_id: d.client_id.flatten().map(borrowed),
    };
    Some(message.into_request(global))
}

fn borrowed(s: &str) -> Text<'_> {
    Text(Cow::Borrowed(s))
}

/// The details keys as read: outer `None` absent, inner `None` JSON `null`.
#[derive(Default)]
struct Details<'a> {
    to: Option<Option<&'a str>>,
    message: Option<Option<&'a str>>,
    media: Option<Option<&'a str>>,
    time: Option<Option<i64>>,
    client_id: Option<Option<&'a str>>,
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// `{ "key": value, ... }`, calling `field` for each key with the parser at its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.s.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            match self.s.get(self.at)? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = crate::bytescan::json_escape(&self.s[start..])?;
        let end = start + len;
        if self.s[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Quotes are ASCII, so both ends are character boundaries of the valid text.
        self.text.get(start..end)
    }

    fn null(&mut self) -> bool {
        if self.s[self.at..].starts_with(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }

    fn string_or_null(&mut self) -> Option<Option<&'a str>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// An integer as JSON writes it (no leading zeros, no fraction or exponent), in i64.
    /// Not `-0`, which serde reads as the float -0.0 (and so as no integer at all): the
    /// general decoder answers it, as it does every frame this turns down.
    fn integer_or_null(&mut self) -> Option<Option<i64>> {
        if self.null() {
            return Some(None);
        }
        let start = self.at;
        if self.s.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let digits = self.at;
        while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let n = self.at - digits;
        let negative_zero = digits > start && n == 1 && self.s[digits] == b'0';
        if n == 0
            || negative_zero
            || (n > 1 && self.s[digits] == b'0')
            || matches!(self.s.get(self.at), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.text.get(start..self.at)?.parse().ok().map(Some)
    }

    fn details(&mut self) -> Option<Details<'a>> {
        let mut d = Details::default();
        self.object(|p, key| {
            match key {
                "to" if d.to.is_none() => d.to = Some(p.string_or_null()?),
                "message" if d.message.is_none() => d.message = Some(p.string_or_null()?),
                "media" if d.media.is_none() => d.media = Some(p.string_or_null()?),
                "time" if d.time.is_none() => d.time = Some(p.integer_or_null()?),
                "client_id" if d.client_id.is_none() => d.client_id = Some(p.string_or_null()?),
                _ => return None,
            }
            Some(())
        })?;
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::general;
    use proptest::prelude::*;

    #[test]
    fn a_message_it_cannot_take_is_told_from_no_message() {
        let plain = r#"{"type":"message","event":"global","details":{"message":"hi"}}"#;
        assert!(matches!(verdict(plain), Verdict::Message(Request::Global(_))));
        let escaped = r#"{"type":"message","event":"global","details":{"message":"a\nb"}}"#;
        assert_eq!(verdict(escaped), Verdict::CannotTake);
        let login = r#"{"type":"login","details":{"email":"a@x.org","password":"p"}}"#;
        assert_eq!(verdict(login), Verdict::NotAMessage);
        assert_eq!(verdict("{}"), Verdict::NotAMessage);
    }

    #[test]
    fn plain_messages_take_the_fast_path() {
        let f = r#"{"event":"personal","type":"message","details":{"to":"b@x.org","message":"hi","time":5}}"#;
        assert!(matches!(message(f), Some(Request::Personal(Message { time: Some(5), .. }))));
        let g = r#" { "type" : "message" , "event" : "global", "details": {"message":"héllo","media":null} } "#;
        assert_eq!(message(g), general(g).ok());
        assert!(message(g).is_some());
        // Not for the fast path: escapes, duplicates, unknown keys, floats, leading zeros.
        for f in [
            r#"{"event":"global","type":"message","details":{"message":"a\"b"}}"#,
            r#"{"event":"global","type":"message","type":"message","details":{"message":"a"}}"#,
            r#"{"event":"global","type":"message","details":{"message":"a","x":1}}"#,
            r#"{"event":"global","type":"message","details":{"message":"a","time":1.0}}"#,
            r#"{"event":"global","type":"message","details":{"message":"a","time":01}}"#,
            r#"{"event":"personal","type":"message","details":{"message":"no to"}}"#,
        ] {
            assert_eq!(message(f), None, "{f}");
        }
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("5".to_owned()),
            Just("-0".to_owned()),
            Just("00".to_owned()),
            Just("1e3".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("true".to_owned()),
            Just("{}".to_owned()),
            Just("[1]".to_owned()),
            "[a-z@. é\\\\\"\u{1}]{0,6}".prop_map(|s| format!("\"{s}\"")),
            prop_oneof![Just("message"), Just("personal"), Just("global"), Just("b@x.org")]
                .prop_map(|s| format!("\"{s}\"")),
        ]
    }

    fn object(keys: &'static [&'static str], inner: BoxedStrategy<String>) -> impl Strategy<Value = String> {
        prop::collection::vec((prop::sample::select(keys), inner, prop_oneof![Just(""), Just(" "), Just("\n")]), 0..7)
            .prop_map(|fields| {
                let body: Vec<String> = fields.iter().map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}")).collect();
                format!("{{{}}}", body.join(","))
            })
    }

    /// Message frames built from the keys and values a real client sends, in any order and
    /// spacing, with edge values (times at the ends of i64, past them, negative zero) and,
    /// in about a third of them, one change the fast path must turn down or get right
    /// (an escape, a duplicate or unknown key, a float, a null, a wrong type).
    fn message_frames() -> impl Strategy<Value = String> {
        let time = prop_oneof![
            Just("0".to_owned()),
            Just("-0".to_owned()),
            Just("-1".to_owned()),
            Just(i64::MAX.to_string()),
            Just(i64::MIN.to_string()),
            Just("9223372036854775808".to_owned()),
            Just("null".to_owned()),
            any::<i64>().prop_map(|t| t.to_string()),
        ];
        let optional = (
            prop::option::of("[a-z/]{0,12}".prop_map(|s| format!("\"media\":\"https://x.org/{s}\""))),
            prop::option::of(time.prop_map(|t| format!("\"time\":{t}"))),
            prop::option::of("[a-zA-Z0-9-]{1,12}".prop_map(|s| format!("\"client_id\":\"{s}\""))),
        );
        let change = prop_oneof![
            16 => Just(None),
            1 => Just(Some("\"x\":1")),
            1 => Just(Some("\"message\":\"again\"")),
            1 => Just(Some("\"time\":1.5")),
            1 => Just(Some("\"time\":1e3")),
            1 => Just(Some("\"time\":007")),
            1 => Just(Some("\"media\":null")),
            1 => Just(Some("\"client_id\":5")),
            1 => Just(Some("\"to\":null")),
        ];
        // Mostly plain text; sometimes backslashes and quotes, which make valid escapes,
        // invalid ones, or a string that ends early.
        let text = prop_oneof![5 => "[a-zé 0-9]{0,12}", 1 => "[a-z\\\\\"]{1,6}"];
        (any::<bool>(), text, optional, change, prop_oneof![Just(""), Just(" "), Just("\n\t")])
            .prop_flat_map(|(global, text, (media, time, client_id), change, ws)| {
                let mut fields = vec![format!("\"message\":{ws}\"{text}\"")];
                if !global {
                    fields.push("\"to\":\"b@x.org\"".to_owned());
                }
                fields.extend([media, time, client_id].into_iter().flatten());
                fields.extend(change.map(str::to_owned));
                let event = if global { "global" } else { "personal" };
                (Just(fields).prop_shuffle(), Just(event), Just(ws), any::<bool>())
            })
            .prop_map(|(fields, event, ws, details_first)| {
                let details = format!("\"details\":{{{}}}", fields.join(&format!(",{ws}")));
                let head = format!("\"type\":\"message\",{ws}\"event\":\"{event}\"");
                if details_first {
                    format!("{{{details},{head}}}")
                } else {
                    format!("{{{ws}{head},{details}{ws}}}")
                }
            })
    }

    /// The fast path and the general decoder agree on every generated message frame, and
    /// the frames do reach the fast path: most take it (plain ones), a fair share does
    /// not (escapes and the changes above), so both sides of the agreement are exercised.
    #[test]
    fn the_fast_path_agrees_with_the_general_decoder_on_message_frames() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config { cases: 4000, ..Config::default() });
        let strategy = message_frames();
        let (mut fast_taken, mut total) = (0, 0);
        for _ in 0..4000 {
            let frame = strategy.new_tree(&mut runner).expect("a frame").current();
            total += 1;
            let slow = general(&frame).ok();
            if let Some(fast) = message(&frame) {
                fast_taken += 1;
                assert_eq!(Some(fast), slow, "{frame}");
            }
        }
        assert!(fast_taken * 100 > total * 35, "only {fast_taken} of {total} frames took the fast path");
        assert!(fast_taken * 10 < total * 9, "{fast_taken} of {total} frames took the fast path: no rejects tested");
    }

    proptest! {
        /// Whatever the fast path accepts of arbitrary objects, the general decoder decodes
        /// to the same request (this generator mostly checks that odd frames are turned down).
        #[test]
        fn the_fast_path_agrees_with_the_general_decoder(
            frame in object(
                &["type", "event", "details", "other"],
                prop_oneof![
                    3 => value(),
                    2 => object(&["to", "message", "media", "time", "client_id", "x"], value().boxed()),
                ].boxed(),
            ),
        ) {
            if let Some(fast) = message(&frame) {
                prop_assert_eq!(Some(fast), general(&frame).ok(), "{}", frame);
            }
        }

        /// Plain messages in any key order and spacing, with any of the optional fields,
        /// do take the fast path, with the same result.
        #[test]
        fn plain_messages_in_any_order_take_the_fast_path(
            global in any::<bool>(),
            optional in prop::collection::vec(
                prop_oneof![
                    "[a-z ]{0,8}".prop_map(|s| format!("\"media\":\"https://x.org/{s}\"")),
                    (-5i64..i64::MAX).prop_map(|t| format!("\"time\":{t}")),
                    Just("\"time\":null".to_owned()),
                    "[a-z0-9]{1,8}".prop_map(|s| format!("\"client_id\":\"{s}\"")),
                ],
                0..3,
            ),
            text in "[^\"\\\\\u{0}-\u{1f}]{1,40}",
            ws in prop_oneof![Just(""), Just(" "), Just("\r\n\t")],
            reverse in any::<bool>(),
        ) {
            let mut fields = vec![format!("\"message\":{ws}\"{text}\"")];
            if !global {
                fields.push("\"to\":\"b@x.org\"".to_owned());
            }
            let mut seen = std::collections::HashSet::new();
            fields.extend(optional.into_iter().filter(|f| seen.insert(f.split(':').next().unwrap_or("").to_owned())));
            if reverse {
                fields.reverse();
            }
            let event = if global { "global" } else { "personal" };
            let frame = format!(
                "{{{ws}\"type\":\"message\",\"details\":{{{}}},{ws}\"event\"{ws}:\"{event}\"}}",
                fields.join(&format!(",{ws}"))
            );
            let fast = message(&frame);
            prop_assert!(fast.is_some(), "{}", frame);
            prop_assert_eq!(fast, general(&frame).ok(), "{}", frame);
        }
    }
}
