//! How server lines look to a person: one readable line per event, or the JSON itself,
//! indented and coloured.
//!
//! Pure: strings in, strings out. The JSON printer walks the server's text rather than a
//! parsed value so keys keep natter's order and numbers keep their digits.

use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// What the session has learnt that makes a line readable.
#[derive(Default)]
pub struct Known {
    /// Group names by id, from every group answer and update seen.
    pub groups: HashMap<String, String>,
    /// Lowercased emails of the contacts online now (presence answers and events).
    pub online: HashSet<String>,
    /// How far each contact has read what we sent it: lowercased email to message id, from
    /// its read events (the protocol has no query for another's mark, so only this session's).
    pub read_by: HashMap<String, i64>,
}

impl Known {
    /// `NAME (ID)` when the group's name is known, `group ID` otherwise.
    pub fn group_label(&self, id: &str) -> String {
        self.groups.get(id).map_or_else(|| format!("group {id}"), |name| format!("{name} ({id})"))
    }

    /// Whether `to` has read message `id` we sent it, as far as we heard.
    fn read(&self, to: &str, id: &str) -> bool {
        let (Some(mark), Ok(id)) = (self.read_by.get(&to.to_ascii_lowercase()), id.parse::<i64>()) else {
            return false;
        };
        id <= *mark
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Plain,
    Colour,
}

const RESET: &str = "\x1b[0m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BLUE: &str = "\x1b[34m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";

impl Paint {
    pub fn wrap(self, colour: &str, text: &str) -> String {
        match self {
            Paint::Plain => text.to_owned(),
            Paint::Colour => format!("{colour}{text}{RESET}"),
        }
    }
    pub fn error(self, text: &str) -> String {
        self.wrap(RED, text)
    }
    pub fn info(self, text: &str) -> String {
        self.wrap(DIM, text)
    }
    pub fn good(self, text: &str) -> String {
        self.wrap(GREEN, text)
    }
}

/// `text` (one compact JSON value) spread over indented lines, coloured when asked.
pub fn pretty_json(text: &str, paint: Paint) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let bytes = text.trim().as_bytes();
    let mut i = 0;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                let next = bytes[i + 1..].iter().position(|b| !b.is_ascii_whitespace()).map(|p| bytes[i + 1 + p]);
                if next == Some(close) {
                    out.push(c as char);
                    out.push(close as char);
                    i += 1 + bytes[i + 1..].iter().position(|&b| b == close).unwrap_or(0) + 1;
                    continue;
                }
                out.push(c as char);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c as char);
            }
            b',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            b':' => out.push_str(": "),
            b'"' => {
                let end = string_end(bytes, i);
                let s = String::from_utf8_lossy(&bytes[i..end]);
                let is_key = bytes[end..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':');
                out.push_str(&paint.wrap(if is_key { BLUE } else { GREEN }, &s));
                i = end;
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b':') || b.is_ascii_whitespace())
                    .map_or(bytes.len(), |p| i + p);
                let s = String::from_utf8_lossy(&bytes[i..end]);
                let colour = if c == b'-' || c.is_ascii_digit() { CYAN } else { MAGENTA };
                out.push_str(&paint.wrap(colour, &s));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The index just past the string that starts with the quote at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One readable line (or a few) for a server event; `None` when the event says nothing a
/// person needs (a `sent` in the middle of a conversation, say, is shown compactly).
/// `now` (unix seconds) decides whether message times show their date.
/// `known` names groups and says who is online and how far contacts read.
pub fn human(v: &Value, paint: Paint, now: i64, known: &Known) -> String {
    let event = s(v, "event");
    let ty = s(v, "type");
    let d = &v["details"];
    match (event, ty) {
        ("invalid" | "failed", _) => paint.error(&format!("{event} {ty}: {}", s(v, "message"))),
        ("personal", "message") => {
            let who = match d.get("to").and_then(Value::as_str) {
                Some(to) => format!("you -> {to}"),
                None => s(d, "from").to_owned(),
            };
            message_line(d, &who, paint, now)
        }
        ("global", "message") => message_line(d, &format!("{} (everyone)", s(d, "from")), paint, now),
        ("group", "message") => {
            let group = known.group_label(s(d, "group"));
            message_line(d, &format!("{} @ {group}", s(d, "from")), paint, now)
        }
        ("success" | "update", "group") => {
            let what = if event == "update" { "group changed" } else { "group" };
            group_line(d, what, paint)
        }
        ("success", "groups") => {
            let list = d.as_array().map(Vec::as_slice).unwrap_or_default();
            let mut lines = vec![paint.info(&format!("{} groups", list.len()))];
            lines.extend(list.iter().map(|g| group_line(g, " ", paint)));
            lines.join("\n")
        }
        ("sent", "otp") => paint.info(&format!("{}; type the code", s(v, "message"))),
        ("sent", "message") => paint.info(&format!("sent, id {}", s(v, "id"))),
        ("success", "verify") => paint.good("registered; now log in"),
        ("success", "login") => {
            let friends: Vec<String> = d["friends"]
                .as_array()
                .map(|a| a.iter().map(|f| format!("{} <{}>", s(f, "username"), s(f, "email"))).collect())
                .unwrap_or_default();
            let mut line = paint.good(&format!("logged in as {} <{}>", s(d, "username"), s(d, "email")));
            if !friends.is_empty() {
                line.push_str(&format!("; friends: {}", friends.join(", ")));
            }
            line
        }
        ("success", "logout") => paint.good("logged out"),
        ("logout", "logout") => paint.error(&format!("logged out by the server: {}", s(d, "reason"))),
        ("success", "block") => paint.good("blocked"),
        ("success", "unblock") => paint.good("unblocked"),
        ("success", "blocked") => {
            let list: Vec<&str> = d.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if list.is_empty() {
                paint.info("you block nobody")
            } else {
                format!("you block: {}", list.join(", "))
            }
        }
        ("success", "presence") => {
            let list = d.as_array().map(Vec::as_slice).unwrap_or_default();
            if list.is_empty() {
                return paint.info("no contacts yet");
            }
            let lines: Vec<String> = list
                .iter()
                .map(|c| {
                    let on = c["online"].as_bool().unwrap_or(false);
                    format!("  {} {}", if on { paint.good("●") } else { paint.info("○") }, s(c, "email"))
                })
                .collect();
            lines.join("\n")
        }
        ("presence", "presence") => {
            let on = d["online"].as_bool().unwrap_or(false);
            paint.info(&format!("{} is {}", s(d, "email"), if on { "online" } else { "offline" }))
        }
        ("typing", "typing") => {
            let on = d["typing"].as_bool().unwrap_or(false);
            paint.info(&format!("{} {}", s(d, "from"), if on { "is typing..." } else { "stopped typing" }))
        }
        ("read", "read") => paint.info(&format!("{} read up to #{}", s(d, "reader"), s(d, "upto"))),
        ("success", "unread") => {
            let list = d.as_array().map(Vec::as_slice).unwrap_or_default();
            if list.is_empty() {
                return paint.info("nothing unread");
            }
            let lines: Vec<String> = list
                .iter()
                .map(|u| {
                    let with = match u.get("with").and_then(Value::as_str) {
                        Some(w) => w.to_owned(),
                        None => known.group_label(s(u, "group")),
                    };
                    format!("  {with}: {} unread, last #{}", u["count"], s(u, "last"))
                })
                .collect();
            lines.join("\n")
        }
        ("success", "password") => paint.good("password changed; your other connections were logged out"),
        ("success", "reset") => paint.good("password reset; now log in with the new one"),
        ("success", "delete") => paint.good("account deleted"),
        ("success", "pong") => "pong".to_owned(),
        ("success", "users") => {
            let users = d.as_array().map(Vec::as_slice).unwrap_or_default();
            let mut lines = vec![paint.info(&format!("{} users", users.len()))];
            lines.extend(users.iter().map(|u| format!("  {} <{}>", s(u, "username"), s(u, "email"))));
            lines.join("\n")
        }
        ("success", "history") => {
            // natter answers newest first; a conversation reads oldest first.
            let items = d.as_array().map(Vec::as_slice).unwrap_or_default();
            if items.is_empty() {
                return paint.info("no messages");
            }
            let lines: Vec<String> = items
                .iter()
                .rev()
                .map(|m| {
                    let to = match m.get("group").and_then(Value::as_str) {
                        Some(g) => known.group_label(g),
                        None => s(m, "to").to_owned(),
                    };
                    let mut line = message_line(m, &format!("{} -> {to}", s(m, "from")), paint, now);
                    if m.get("group").is_none() && known.read(s(m, "to"), s(m, "id")) {
                        line.push_str(&paint.good(" ✓ read"));
                    }
                    line
                })
                .collect();
            lines.join("\n")
        }
        (_, "voice") => voice(event, d, paint),
        _ => paint.info(&v.to_string()),
    }
}

/// `group NAME (ID), owner X: a, b, c`.
fn group_line(g: &Value, what: &str, paint: Paint) -> String {
    let members: Vec<&str> = g["members"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let members = if members.is_empty() { "no members left".to_owned() } else { members.join(", ") };
    format!("{what} {} ({}), owner {}: {members}", paint.wrap(BOLD, s(g, "name")), s(g, "group"), s(g, "owner"))
}

fn message_line(d: &Value, who: &str, paint: Paint, now: i64) -> String {
    let time = d.get("time").and_then(Value::as_i64).map(|t| crate::term::local_stamp(t, now)).unwrap_or_default();
    let mut line = format!("{} {}: {}", paint.info(&format!("[{time}]")), paint.wrap(BOLD, who), s(d, "message"));
    if let Some(media) = d.get("media").and_then(Value::as_str) {
        line.push_str(&paint.info(&format!(" [media {media}]")));
    }
    if let Some(id) = d.get("id").and_then(Value::as_str) {
        line.push_str(&paint.info(&format!(" #{id}")));
    }
    line
}

fn voice(event: &str, d: &Value, paint: Paint) -> String {
    let email = s(d, "email");
    let text = match event {
        "request" => format!("{email} is calling: `accept {email}` or `reject {email}`"),
        "accept" => format!(
            "call connected; media relay {}:{}, token {} (send the token in a UDP datagram first)",
            s(d, "ip"),
            s(d, "port"),
            s(d, "token")
        ),
        "reject" => format!("{email} rejected the call"),
        "time" => format!("no answer: the call with {email} timed out"),
        "offline" => format!("{email} is not online"),
        "busy" => format!("{email} is busy"),
        "end" => format!("the call with {email} ended"),
        _ => format!("voice {event}: {d}"),
    };
    paint.wrap(YELLOW, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn pretty_keeps_order_and_text() {
        let text = r#"{"event":"success","type":"login","details":{"username":"ann","friends":[],"n":-1.5e3,"ok":true,"s":"a\"b,c:{"}}"#;
        let out = pretty_json(text, Paint::Plain);
        assert_eq!(
            out,
            "{\n  \"event\": \"success\",\n  \"type\": \"login\",\n  \"details\": {\n    \"username\": \"ann\",\n    \
             \"friends\": [],\n    \"n\": -1.5e3,\n    \"ok\": true,\n    \"s\": \"a\\\"b,c:{\"\n  }\n}"
        );
        // Removing the layout gives back the original text.
        let compact: String = out.split('\n').map(str::trim_start).collect::<String>().replace(": ", ":");
        assert_eq!(compact, text);
        let coloured = pretty_json(text, Paint::Colour);
        assert!(coloured.contains("\x1b[34m\"event\"\x1b[0m: \x1b[32m\"success\"\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[36m-1.5e3\x1b[0m"));
    }

    #[test]
    fn human_lines() {
        let p = Paint::Plain;
        let m =
            json!({"event":"personal","type":"message","details":{"id":"7","message":"hi","from":"a@x.org","time":0}});
        let line = human(&m, p, 0, &Known::default());
        assert!(line.ends_with("a@x.org: hi #7"), "{line}");
        let f = json!({"event":"failed","type":"login","message":"invalid credentials"});
        assert_eq!(human(&f, p, 0, &Known::default()), "failed login: invalid credentials");
        let h = json!({"event":"success","type":"history","details":[
            {"id":"2","from":"b@x.org","to":"a@x.org","message":"second","time":0},
            {"id":"1","from":"a@x.org","to":"b@x.org","message":"first","time":0}]});
        let lines: Vec<String> = human(&h, p, 0, &Known::default()).lines().map(String::from).collect();
        assert!(lines[0].contains("first") && lines[1].contains("second"), "{lines:?}");
        assert!(!lines[0].contains("read"), "{lines:?}");
        // b read up to #1: the message we sent it shows the mark; its own message does not.
        let known = Known { read_by: HashMap::from([("b@x.org".to_owned(), 1)]), ..Known::default() };
        let lines: Vec<String> = human(&h, p, 0, &known).lines().map(String::from).collect();
        assert!(lines[0].ends_with("#1 ✓ read") && !lines[1].contains("read"), "{lines:?}");
        let call = json!({"type":"voice","event":"request","details":{"email":"a@x.org"}});
        assert_eq!(human(&call, p, 0, &Known::default()), "a@x.org is calling: `accept a@x.org` or `reject a@x.org`");
        let names = Known { groups: HashMap::from([("7".to_owned(), "team".to_owned())]), ..Known::default() };
        let gm = json!({"event":"group","type":"message","details":{"id":"9","group":"7","message":"hi","from":"a@x.org","time":0}});
        assert!(human(&gm, p, 0, &names).contains("a@x.org @ team (7): hi"), "{}", human(&gm, p, 0, &names));
        let upd = json!({"event":"update","type":"group","details":{"group":"7","name":"team","owner":"a@x.org","members":["a@x.org","b@x.org"]}});
        assert_eq!(human(&upd, p, 0, &names), "group changed team (7), owner a@x.org: a@x.org, b@x.org");
    }

    /// A message of another day shows its date, so that a history of several days reads in
    /// order; one of today shows the time only.
    #[test]
    fn message_times_show_the_date_when_not_today() {
        let p = Paint::Plain;
        let at = |t: i64| json!({"event":"personal","type":"message","details":{"id":"7","message":"hi","from":"a@x.org","time":t}});
        let now = 1_800_000_000;
        let today = human(&at(now - 1), p, now, &Known::default());
        assert!(today.starts_with('[') && today.as_bytes()[9] == b']', "{today}");
        let old = human(&at(now - 3 * 86_400), p, now, &Known::default());
        let stamp = &old[1..old.find(']').unwrap()];
        assert_eq!(stamp.len(), "2027-01-12 08:00:00".len(), "{old}");
        assert!(stamp.starts_with("2027-01-1"), "{old}");
    }
}
