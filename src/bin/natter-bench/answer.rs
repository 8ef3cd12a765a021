//! What a line from the server says, so that a workload depends on the fields it reads and
//! not on their order (PROTOCOL.md section 1 promises compact objects with the fields it
//! shows, not in which order).
//!
//! Lines are read as JSON by serde into a struct declaring only the fields some workload
//! reads, with strings borrowed from the line. The hot lines of every message (`sent`,
//! `personal`, `global`) first go through a one-pass check of their `"key":"value"`
//! tokens, order-independent and exact on compact JSON; what it does not recognise goes to
//! serde. Why not serde alone: it cost 370 ns per message (a delivery and its `sent`),
//! against 40 ns for the byte-prefix matching this replaced, and put the bench's own CPU
//! on `pairs` up by 40% (0.8 s to 1.1 s per million messages) on a machine where the bench
//! and the server share two cores. The token check costs 125 ns per message (0.84 s).

use natter::bytescan;
use serde::Deserialize;
use std::borrow::Cow;

/// The fields of a server line that some workload reads.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Answer<'a> {
    #[serde(borrow)]
    pub event: &'a str,
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(default, borrow)]
    pub details: Details<'a>,
}

/// The fields of `details` that some workload reads: the text of a delivered message, the
/// relay address and token of an accepted call.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Details<'a> {
    #[serde(borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub ip: Option<&'a str>,
    #[serde(borrow)]
    pub port: Option<&'a str>,
    #[serde(borrow)]
    pub token: Option<&'a str>,
    /// A group's id (group answers and updates).
    #[serde(borrow)]
    pub group: Option<&'a str>,
}

impl<'a> Answer<'a> {
    /// `None` when the line is not a JSON object with string `event` and `type` (and, when
    /// present, an object `details`): an unexpected line to every workload.
    pub fn parse(line: &'a [u8]) -> Option<Answer<'a>> {
        Answer::message_line(line).or_else(|| serde_json::from_slice(line).ok())
    }

    /// The hot lines (`sent`, `personal`, `global` and `group` of type `message`) read in one pass
    /// without a parser; `None` leaves the line to serde. Order-independent and exact on
    /// compact JSON (PROTOCOL.md section 1): a quote inside a string is escaped, so outside
    /// an escape `"event":"` can only start that field. A line with an escape, with spaces
    /// around its colons, or of another kind misses this path. The rest of the line is not
    /// validated, as the byte-prefix checks this replaced did not validate it either.
    fn message_line(line: &'a [u8]) -> Option<Answer<'a>> {
        let (mut event, mut kind, mut message) = (None, None, None);
        let mut at = 0;
        // Hops between quotes are short: a plain loop beats a call per hop.
        while let Some(q) = line[at..].iter().position(|&b| b == b'"' || b == b'\\') {
            let rest = &line[at + q..];
            if rest[0] == b'\\' {
                return None;
            }
            at += q + 1;
            let (slot, key) = match rest.get(1) {
                Some(b'e') => (&mut event, &br#""event":""#[..]),
                Some(b't') => (&mut kind, &br#""type":""#[..]),
                Some(b'm') => (&mut message, &br#""message":""#[..]),
                _ => continue,
            };
            if rest.starts_with(key) {
                let value = &rest[key.len()..];
                let end = bytescan::quote_or_backslash(value).filter(|&e| value[e] == b'"')?;
                *slot = Some(std::str::from_utf8(&value[..end]).ok()?);
                at += key.len() + end;
            }
        }
        match (event?, kind?) {
            ("sent", "message") => Some(Answer { event: "sent", kind: "message", details: Details::default() }),
            (event @ ("personal" | "global" | "group"), "message") => {
                let details = Details { message: Some(Cow::Borrowed(message?)), ..Details::default() };
                Some(Answer { event, kind: "message", details })
            }
            _ => None,
        }
    }

    pub fn is(&self, event: &str, kind: &str) -> bool {
        self.event == event && self.kind == kind
    }

    /// The text of a delivered message.
    pub fn message(&self) -> Option<&[u8]> {
        self.details.message.as_deref().map(str::as_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_any_order_and_unknown_ones_are_skipped() {
        let a = Answer::parse(br#"{"details":{"time":1,"message":"0 1 2 x","from":"a@b.org","id":"7"},"type":"message","event":"personal"}"#)
            .unwrap();
        assert!(a.is("personal", "message"));
        assert_eq!(a.message(), Some(&b"0 1 2 x"[..]));
        let a =
            Answer::parse(br#"{"type":"voice","event":"accept","details":{"token":"t","port":"9","ip":"127.0.0.1"}}"#)
                .unwrap();
        assert_eq!((a.details.ip, a.details.port, a.details.token), (Some("127.0.0.1"), Some("9"), Some("t")));
        let a = Answer::parse(br#"{ "id" : "3", "type" : "message", "event" : "sent" }"#).unwrap();
        assert!(a.is("sent", "message") && a.message().is_none());
        let a = Answer::parse(
            br#"{"event":"success","type":"login","details":{"username":"u","friends":[{"email":"e"}]}}"#,
        );
        assert!(a.unwrap().is("success", "login"));
    }

    #[test]
    fn a_line_that_is_not_an_answer_is_none() {
        assert!(Answer::parse(b"{\"event\":\"personal\",\"type\":\"mess").is_none());
        assert!(Answer::parse(b"{\"event\":\"sent\"}").is_none());
        assert!(Answer::parse(b"not json").is_none());
    }

    #[test]
    fn the_token_check_reads_what_serde_reads_or_leaves_the_line_to_it() {
        let lines: [&[u8]; 9] = [
            br#"{"event":"personal","type":"message","details":{"id":"7","message":"0 1 2 x","from":"a@b.org","time":1}}"#,
            br#"{"event":"personal","type":"message","details":{"id":"7","message":"hi","media":"m","from":"a@b.org","time":1,"to":"c@d.org"}}"#,
            br#"{"details":{"from":"a@b.org","message":"hi","time":1},"type":"message","event":"global"}"#,
            br#"{"id":"12","type":"message","event":"sent"}"#,
            br#"{"event":"failed","type":"message","message":"unknown recipient"}"#,
            br#"{"event":"personal","type":"message","details":{"message":"say \"hi\"","time":1}}"#,
            br#"{"event":"personal","type":"message","details":{"message":"\u00e9t\u00e9","time":1}}"#,
            br#"{"event": "sent", "type": "message", "id": "12"}"#,
            br#"{"event":"success","type":"login","details":{"username":"u","email":"e","friends":[]}}"#,
        ];
        let mut fast = 0;
        for line in lines {
            let parsed: Option<Answer> = serde_json::from_slice(line).ok();
            assert!(parsed.is_some(), "{}", String::from_utf8_lossy(line));
            if let Some(a) = Answer::message_line(line) {
                assert_eq!(Some(a), parsed, "{}", String::from_utf8_lossy(line));
                fast += 1;
            }
        }
        assert_eq!(fast, 4, "the three hot kinds, compact and without escapes, take the fast path");
    }
}
