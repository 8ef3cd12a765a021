//! Encoding every server message: the only place that knows response shapes.
//!
//! Each function appends one compact JSON object and a `\n` to a byte buffer, in the field
//! order FORMAT.md shows, with exactly the fields PROTOCOL.md lists and no others. Writing
//! straight into the caller's buffer means no intermediate value and no allocation.

/// `invalid` (not understood or not allowed now) or `failed` (understood, not carried out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Invalid,
    Failed,
}

/// A personal message as delivered to a connection.
#[derive(Debug, Clone, Copy)]
pub struct PersonalOut<'a> {
    pub id: i64,
    pub message: &'a str,
    pub media: Option<&'a str>,
    pub from: &'a str,
    pub time: i64,
    /// Set on the copy for the sender's other connections.
    pub to: Option<&'a str>,
}

/// A stored message as listed by `history`: of a conversation with a user (`to`) or of a
/// group (`group`).
#[derive(Debug, Clone, Copy)]
pub struct HistoryItem<'a> {
    pub id: i64,
    pub from: &'a str,
    pub to: Option<&'a str>,
    pub group: Option<i64>,
    pub message: &'a str,
    pub media: Option<&'a str>,
    pub time: i64,
}

pub fn error(buf: &mut Vec<u8>, kind: ErrorKind, ty: &str, message: &str) {
    buf.extend_from_slice(match kind {
        ErrorKind::Invalid => b"{\"event\":\"invalid\",\"type\":",
        ErrorKind::Failed => b"{\"event\":\"failed\",\"type\":",
    });
    string(buf, ty);
    buf.extend_from_slice(b",\"message\":");
    string(buf, message);
    buf.extend_from_slice(b"}\n");
}

pub fn otp_sent(buf: &mut Vec<u8>, email: &str) {
    buf.extend_from_slice(b"{\"event\":\"sent\",\"type\":\"otp\",\"message\":");
    string(buf, &format!("OTP sent to {email}"));
    buf.extend_from_slice(b"}\n");
}

pub fn verify_ok(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"event\":\"success\",\"type\":\"verify\"}\n");
}

/// `friends` as (email, username) pairs, most recent contact first.
pub fn login_ok<'a>(buf: &mut Vec<u8>, username: &str, email: &str, friends: impl Iterator<Item = (&'a str, &'a str)>) {
    buf.extend_from_slice(b"{\"event\":\"success\",\"type\":\"login\",\"details\":{\"username\":");
    string(buf, username);
    buf.extend_from_slice(b",\"email\":");
    string(buf, email);
    buf.extend_from_slice(b",\"friends\":[");
    for (i, (f_email, f_username)) in friends.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"email\":");
        string(buf, f_email);
        buf.extend_from_slice(b",\"username\":");
        string(buf, f_username);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}}\n");
}

pub fn logout_ok(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"event\":\"success\",\"type\":\"logout\"}\n");
}

/// The server logged this connection out (PROTOCOL.md section 17).
pub fn logged_out(buf: &mut Vec<u8>, reason: &str) {
    buf.extend_from_slice(b"{\"event\":\"logout\",\"type\":\"logout\",\"details\":{\"reason\":");
    string(buf, reason);
    buf.extend_from_slice(b"}}\n");
}

/// One account of a `users` answer, after a comma when `comma`: the answer is written a
/// slice at a time between [`list_open`] and [`list_close`].
pub fn user_item(buf: &mut Vec<u8>, comma: bool, username: &str, email: &str) {
    if comma {
        buf.push(b',');
    }
    buf.extend_from_slice(b"{\"username\":");
    string(buf, username);
    buf.extend_from_slice(b",\"email\":");
    string(buf, email);
    buf.push(b'}');
}

/// The start of `{"event":"success","type":TYPE,"details":[...]}`.
pub fn list_open(buf: &mut Vec<u8>, ty: &[u8]) {
    buf.extend_from_slice(b"{\"event\":\"success\",\"type\":\"");
    buf.extend_from_slice(ty);
    buf.extend_from_slice(b"\",\"details\":[");
}

/// The end of a list answer.
pub fn list_close(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"]}\n");
}

/// `{"event":"success","type":TYPE,"details":[...]}`, each item written by `item`. Stops
/// and returns false once the answer passes `max` bytes (what is written then is garbage
/// for the caller to cut).
fn success_list<T>(
    buf: &mut Vec<u8>,
    max: usize,
    ty: &[u8],
    items: impl Iterator<Item = T>,
    mut item: impl FnMut(&mut Vec<u8>, T),
) -> bool {
    let start = buf.len();
    list_open(buf, ty);
    for (i, x) in items.enumerate() {
        if buf.len() - start > max {
            return false;
        }
        if i > 0 {
            buf.push(b',');
        }
        item(buf, x);
    }
    list_close(buf);
    buf.len() - start <= max
}

/// `{"event":"success","type":TYPE}`: an answer with nothing more to say.
pub fn success(buf: &mut Vec<u8>, ty: &str) {
    buf.extend_from_slice(b"{\"event\":\"success\",\"type\":");
    string(buf, ty);
    buf.extend_from_slice(b"}\n");
}

/// `{"event":"success","type":"blocked","details":[EMAIL,...]}`; false past `max` bytes.
pub fn blocked<'a>(buf: &mut Vec<u8>, max: usize, emails: impl Iterator<Item = &'a String>) -> bool {
    success_list(buf, max, b"blocked", emails, |buf, e| {
        string(buf, e);
    })
}

/// `{"event":"presence","type":"presence","details":{"email":E,"online":B}}`.
pub fn presence(buf: &mut Vec<u8>, email: &str, online: bool) {
    buf.extend_from_slice(b"{\"event\":\"presence\",\"type\":\"presence\",\"details\":{\"email\":");
    string(buf, email);
    buf.extend_from_slice(if online { b",\"online\":true}}\n" } else { b",\"online\":false}}\n" });
}

/// `{"event":"success","type":"presence","details":[{"email":E,"online":B},...]}`.
pub fn presence_list<'a>(buf: &mut Vec<u8>, max: usize, list: impl Iterator<Item = (&'a str, bool)>) -> bool {
    success_list(buf, max, b"presence", list, |buf, (email, online)| {
        buf.extend_from_slice(b"{\"email\":");
        string(buf, email);
        buf.extend_from_slice(if online { b",\"online\":true}" } else { b",\"online\":false}" });
    })
}

/// `{"event":"typing","type":"typing","details":{"from":E,"typing":B}}` (plus `group`).
pub fn typing(buf: &mut Vec<u8>, from: &str, group: Option<i64>, typing: bool) {
    buf.extend_from_slice(b"{\"event\":\"typing\",\"type\":\"typing\",\"details\":{\"from\":");
    string(buf, from);
    if let Some(g) = group {
        buf.extend_from_slice(b",\"group\":\"");
        integer(buf, g);
        buf.push(b'"');
    }
    buf.extend_from_slice(if typing { b",\"typing\":true}}\n" } else { b",\"typing\":false}}\n" });
}

/// `{"event":"read","type":"read","details":{"reader":R,"with":E,"upto":ID}}` (or `group`).
pub fn read(buf: &mut Vec<u8>, reader: &str, with: Option<&str>, group: Option<i64>, upto: i64) {
    buf.extend_from_slice(b"{\"event\":\"read\",\"type\":\"read\",\"details\":{\"reader\":");
    string(buf, reader);
    if let Some(with) = with {
        buf.extend_from_slice(b",\"with\":");
        string(buf, with);
    }
    if let Some(g) = group {
        buf.extend_from_slice(b",\"group\":\"");
        integer(buf, g);
        buf.push(b'"');
    }
    buf.extend_from_slice(b",\"upto\":\"");
    integer(buf, upto);
    buf.extend_from_slice(b"\"}}\n");
}

/// `{"event":"success","type":"unread","details":[{"with":E,"count":N,"last":ID},...]}`.
pub fn unread<'a>(buf: &mut Vec<u8>, max: usize, list: impl Iterator<Item = &'a crate::store::reads::Unread>) -> bool {
    success_list(buf, max, b"unread", list, |buf, u| {
        match (&u.with, u.group) {
            (Some(with), _) => {
                buf.extend_from_slice(b"{\"with\":");
                string(buf, with);
            }
            (None, g) => {
                buf.extend_from_slice(b"{\"group\":\"");
                integer(buf, g.unwrap_or(0));
                buf.push(b'"');
            }
        }
        buf.extend_from_slice(b",\"count\":");
        integer(buf, u.count);
        buf.extend_from_slice(b",\"last\":\"");
        integer(buf, u.last);
        buf.extend_from_slice(b"\"}");
    })
}

pub fn pong(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"event\":\"success\",\"type\":\"pong\"}\n");
}

pub fn message_sent(buf: &mut Vec<u8>, id: i64) {
    buf.extend_from_slice(b"{\"event\":\"sent\",\"type\":\"message\",\"id\":\"");
    integer(buf, id);
    buf.extend_from_slice(b"\"}\n");
}

pub fn personal(buf: &mut Vec<u8>, m: &PersonalOut) {
    buf.extend_from_slice(b"{\"event\":\"personal\",\"type\":\"message\",\"details\":{\"id\":\"");
    integer(buf, m.id);
    buf.extend_from_slice(b"\",\"message\":");
    string(buf, m.message);
    if let Some(media) = m.media {
        buf.extend_from_slice(b",\"media\":");
        string(buf, media);
    }
    buf.extend_from_slice(b",\"from\":");
    string(buf, m.from);
    buf.extend_from_slice(b",\"time\":");
    integer(buf, m.time);
    if let Some(to) = m.to {
        buf.extend_from_slice(b",\"to\":");
        string(buf, to);
    }
    buf.extend_from_slice(b"}}\n");
}

pub fn global(buf: &mut Vec<u8>, message: &str, media: Option<&str>, from: &str, time: i64) {
    buf.extend_from_slice(b"{\"event\":\"global\",\"type\":\"message\",\"details\":{\"message\":");
    string(buf, message);
    if let Some(media) = media {
        buf.extend_from_slice(b",\"media\":");
        string(buf, media);
    }
    buf.extend_from_slice(b",\"from\":");
    string(buf, from);
    buf.extend_from_slice(b",\"time\":");
    integer(buf, time);
    buf.extend_from_slice(b"}}\n");
}

/// `history` items in the order given. Stops and returns false once the answer passes
/// `max` bytes, as [`users`] does.
pub fn history<'a>(buf: &mut Vec<u8>, max: usize, items: impl Iterator<Item = HistoryItem<'a>>) -> bool {
    success_list(buf, max, b"history", items, |buf, m| {
        buf.extend_from_slice(b"{\"id\":\"");
        integer(buf, m.id);
        buf.extend_from_slice(b"\",\"from\":");
        string(buf, m.from);
        if let Some(to) = m.to {
            buf.extend_from_slice(b",\"to\":");
            string(buf, to);
        }
        if let Some(group) = m.group {
            buf.extend_from_slice(b",\"group\":\"");
            integer(buf, group);
            buf.push(b'"');
        }
        buf.extend_from_slice(b",\"message\":");
        string(buf, m.message);
        if let Some(media) = m.media {
            buf.extend_from_slice(b",\"media\":");
            string(buf, media);
        }
        buf.extend_from_slice(b",\"time\":");
        integer(buf, m.time);
        buf.push(b'}');
    })
}

/// A group as answers and updates carry it (G of PROTOCOL.md section 14).
#[derive(Debug, Clone, Copy)]
pub struct GroupOut<'a, M> {
    pub id: i64,
    pub name: &'a str,
    pub owner: &'a str,
    /// Member emails in joining order.
    pub members: M,
}

fn group_object<'a, M: Iterator<Item = &'a str>>(buf: &mut Vec<u8>, g: GroupOut<'_, M>) {
    buf.extend_from_slice(b"{\"group\":\"");
    integer(buf, g.id);
    buf.extend_from_slice(b"\",\"name\":");
    string(buf, g.name);
    buf.extend_from_slice(b",\"owner\":");
    string(buf, g.owner);
    buf.extend_from_slice(b",\"members\":[");
    for (i, m) in g.members.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        string(buf, m);
    }
    buf.extend_from_slice(b"]}");
}

/// `{"event":EVENT,"type":"group","details":G}`: `success` to the requester, `update` to
/// the members.
pub fn group<'a, M: Iterator<Item = &'a str>>(buf: &mut Vec<u8>, event: &str, g: GroupOut<'_, M>) {
    buf.extend_from_slice(b"{\"event\":");
    string(buf, event);
    buf.extend_from_slice(b",\"type\":\"group\",\"details\":");
    group_object(buf, g);
    buf.extend_from_slice(b"}\n");
}

/// `{"event":"success","type":"groups","details":[G,...]}`. Stops and returns false once
/// the answer passes `max` bytes.
pub fn groups<'a, M: Iterator<Item = &'a str>>(
    buf: &mut Vec<u8>,
    max: usize,
    groups: impl Iterator<Item = GroupOut<'a, M>>,
) -> bool {
    success_list(buf, max, b"groups", groups, |buf, g| {
        group_object(buf, g);
    })
}

/// A group message as delivered to its members' connections.
#[derive(Debug, Clone, Copy)]
pub struct GroupMessageOut<'a> {
    pub id: i64,
    pub group: i64,
    pub message: &'a str,
    pub media: Option<&'a str>,
    pub from: &'a str,
    pub time: i64,
}

pub fn group_message(buf: &mut Vec<u8>, m: &GroupMessageOut) {
    buf.extend_from_slice(b"{\"event\":\"group\",\"type\":\"message\",\"details\":{\"id\":\"");
    integer(buf, m.id);
    buf.extend_from_slice(b"\",\"group\":\"");
    integer(buf, m.group);
    buf.extend_from_slice(b"\",\"message\":");
    string(buf, m.message);
    if let Some(media) = m.media {
        buf.extend_from_slice(b",\"media\":");
        string(buf, media);
    }
    buf.extend_from_slice(b",\"from\":");
    string(buf, m.from);
    buf.extend_from_slice(b",\"time\":");
    integer(buf, m.time);
    buf.extend_from_slice(b"}}\n");
}

/// `{"type":"voice","event":EVENT,"details":{"email":EMAIL}}`: request, reject, time,
/// offline, busy, end.
pub fn voice(buf: &mut Vec<u8>, event: &str, email: &str) {
    buf.extend_from_slice(b"{\"type\":\"voice\",\"event\":");
    string(buf, event);
    buf.extend_from_slice(b",\"details\":{\"email\":");
    string(buf, email);
    buf.extend_from_slice(b"}}\n");
}

/// The `accept` sent to both parties: where the relay is and this party's token.
pub fn voice_accept(buf: &mut Vec<u8>, ip: &str, port: u16, token: &str) {
    buf.extend_from_slice(b"{\"type\":\"voice\",\"event\":\"accept\",\"details\":{\"ip\":");
    string(buf, ip);
    buf.extend_from_slice(b",\"port\":\"");
    integer(buf, i64::from(port));
    buf.extend_from_slice(b"\",\"token\":");
    string(buf, token);
    buf.extend_from_slice(b"}}\n");
}

fn integer(buf: &mut Vec<u8>, v: i64) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{v}");
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let mut rest = s.as_bytes();
    // Runs without anything to escape (nearly all text) are copied whole.
    while let Some(i) = crate::bytescan::json_escape(rest) {
        buf.extend_from_slice(&rest[..i]);
        let b = rest[i];
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(buf: &[u8]) -> Value {
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(buf).unwrap()
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        let nasty = "q\"b\\s/\n\r\t\u{0}\u{1f}é✓😀";
        let mut b = Vec::new();
        error(&mut b, ErrorKind::Failed, nasty, nasty);
        assert_eq!(parse(&b), json!({"event":"failed","type":nasty,"message":nasty}));
    }

    #[test]
    fn login_and_users_have_format_md_shapes() {
        let mut b = Vec::new();
        login_ok(&mut b, "xyz", "x@y.org", [("a@b.org", "abc")].into_iter());
        assert_eq!(
            parse(&b),
            json!({"event":"success","type":"login","details":{"username":"xyz","email":"x@y.org","friends":[{"email":"a@b.org","username":"abc"}]}})
        );
        // `users` as its slices write it.
        let mut b = Vec::new();
        list_open(&mut b, b"users");
        user_item(&mut b, false, "xyz", "x@y.org");
        user_item(&mut b, true, "z", "z@y.org");
        list_close(&mut b);
        assert_eq!(
            parse(&b),
            json!({"event":"success","type":"users","details":[{"username":"xyz","email":"x@y.org"},{"username":"z","email":"z@y.org"}]})
        );
        let mut empty = Vec::new();
        list_open(&mut empty, b"users");
        list_close(&mut empty);
        assert_eq!(parse(&empty), json!({"event":"success","type":"users","details":[]}));
    }

    #[test]
    fn personal_media_and_to_appear_only_when_set() {
        let mut b = Vec::new();
        let m = PersonalOut { id: 7, message: "hi", media: None, from: "a@b.org", time: 12, to: None };
        personal(&mut b, &m);
        assert_eq!(
            parse(&b),
            json!({"event":"personal","type":"message","details":{"id":"7","message":"hi","from":"a@b.org","time":12}})
        );
        let mut b = Vec::new();
        personal(&mut b, &PersonalOut { media: Some("https://x/"), to: Some("c@d.org"), ..m });
        assert_eq!(
            parse(&b),
            json!({"event":"personal","type":"message","details":{"id":"7","message":"hi","media":"https://x/","from":"a@b.org","time":12,"to":"c@d.org"}})
        );
    }

    #[test]
    fn accept_carries_port_as_a_string() {
        let mut b = Vec::new();
        voice_accept(&mut b, "127.0.0.1", 5050, "tok");
        assert_eq!(
            parse(&b),
            json!({"type":"voice","event":"accept","details":{"ip":"127.0.0.1","port":"5050","token":"tok"}})
        );
    }
}
