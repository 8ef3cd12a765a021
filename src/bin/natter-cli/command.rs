//! The friendly commands: parsing what the user typed and the request each one sends.
//!
//! Pure. The request shapes are FORMAT.md's, so what natter-cli sends is exactly what a
//! client author would send by hand (`--raw` shows it).

use natter::password::md5_hex;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Register {
        email: String,
        username: String,
    },
    Login {
        name: String,
    },
    Send {
        to: String,
        text: String,
    },
    Global {
        text: String,
    },
    Users,
    History {
        with: String,
        limit: Option<u32>,
    },
    /// A group change: `create NAME [EMAIL...]`, `add|remove GROUP EMAIL...`,
    /// `rename GROUP NAME`, `leave GROUP`.
    Group {
        request: Value,
    },
    Groups,
    GroupSend {
        group: String,
        text: String,
    },
    GroupHistory {
        group: String,
        limit: Option<u32>,
    },
    Block {
        email: String,
        block: bool,
    },
    Blocked,
    Presence,
    Unread,
    /// Change the password (asks the old one and the new one).
    Passwd,
    /// Reset a forgotten password by mail (asks the code and the new password).
    Reset {
        email: String,
    },
    /// Delete the account (asks for confirmation and the password).
    DeleteAccount,
    Call {
        email: String,
    },
    Accept {
        email: Option<String>,
    },
    Reject {
        email: Option<String>,
    },
    Hangup,
    Logout,
    Ping,
    /// Print what arrives; with a count, stop after that many messages.
    Listen {
        count: Option<u64>,
    },
    /// A JSON line sent as typed.
    Raw(String),
    Help,
    Quit,
}

pub const HELP: &str = "\
commands (USER is an email or a username):
  register EMAIL USERNAME   create an account (asks for the password, then the mailed OTP)
  login USER                log in (asks for the password)
  send USER TEXT            personal message
  global TEXT               message to everyone online
  users                     every account
  history USER [LIMIT]      the conversation with USER, oldest first
  group create NAME [EMAIL...]   a group with you and these members
  group add|remove GROUP EMAIL...  change its members (its owner only)
  group rename GROUP NAME   rename it (its owner only)
  group leave GROUP         leave it
  groups                    your groups (GROUP is the id they show)
  gsend GROUP TEXT          message to a group
  ghistory GROUP [LIMIT]    a group's messages, oldest first
  block USER, unblock USER  refuse (or accept again) USER's messages and calls
  blocked                   whom you block
  friends                   your contacts, online ones marked ● (also `presence`)
  unread                    conversations with unread messages
  passwd                    change your password (asks the old and the new one)
  reset EMAIL               forgotten password: a code by mail, then a new password
  delete-account            delete your account (asks to confirm, and the password)
  call USER                 ring USER
  accept [USER]             answer the ringing call
  reject [USER]             refuse the ringing call
  hangup                    end the call
  logout                    log out (the connection stays)
  ping                      round trip to the server, in milliseconds
  listen [COUNT]            wait for messages (one-shot use)
  {...}                     a JSON object, sent as it is (a line that is not one is refused)
  help, quit";

/// Parses one command line; the error is a message for the user.
pub fn parse(line: &str) -> Result<Cmd, String> {
    let line = line.trim();
    if line.starts_with('{') {
        return Ok(Cmd::Raw(line.to_owned()));
    }
    let (word, rest) = split_word(line);
    let (arg, tail) = split_word(rest);
    let need = |what: &str, v: &str| {
        if v.is_empty() {
            Err(format!("usage: {word} {what}"))
        } else {
            Ok(v.to_owned())
        }
    };
    let none_after = |cmd: Cmd| if rest.is_empty() { Ok(cmd) } else { Err(format!("{word} takes no arguments")) };
    let optional = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    match word.to_ascii_lowercase().as_str() {
        "register" => {
            let email = need("EMAIL USERNAME", arg)?;
            let username = need("EMAIL USERNAME", tail)?;
            Ok(Cmd::Register { email, username })
        }
        "login" => Ok(Cmd::Login { name: need("USER", rest)? }),
        "send" | "msg" => {
            let to = need("USER TEXT", arg)?;
            Ok(Cmd::Send { to, text: need("USER TEXT", tail)? })
        }
        "global" => Ok(Cmd::Global { text: need("TEXT", rest)? }),
        "users" => none_after(Cmd::Users),
        "history" => {
            let with = need("USER [LIMIT]", arg)?;
            let limit = match tail {
                "" => None,
                n => Some(n.parse().map_err(|_| format!("history: LIMIT must be a number, not {n:?}"))?),
            };
            Ok(Cmd::History { with, limit })
        }
        "group" => group(arg, tail),
        "groups" => none_after(Cmd::Groups),
        "gsend" => {
            let group = need("GROUP TEXT", arg)?;
            Ok(Cmd::GroupSend { group, text: need("GROUP TEXT", tail)? })
        }
        "ghistory" => {
            let group = need("GROUP [LIMIT]", arg)?;
            let limit = match tail {
                "" => None,
                n => Some(n.parse().map_err(|_| format!("ghistory: LIMIT must be a number, not {n:?}"))?),
            };
            Ok(Cmd::GroupHistory { group, limit })
        }
        "block" => Ok(Cmd::Block { email: need("USER", rest)?, block: true }),
        "unblock" => Ok(Cmd::Block { email: need("USER", rest)?, block: false }),
        "blocked" => none_after(Cmd::Blocked),
        "presence" | "friends" => none_after(Cmd::Presence),
        "unread" => none_after(Cmd::Unread),
        "passwd" | "password" => none_after(Cmd::Passwd),
        "reset" => Ok(Cmd::Reset { email: need("EMAIL", rest)? }),
        "delete-account" => none_after(Cmd::DeleteAccount),
        "call" => Ok(Cmd::Call { email: need("USER", rest)? }),
        "accept" => Ok(Cmd::Accept { email: optional(rest) }),
        "reject" => Ok(Cmd::Reject { email: optional(rest) }),
        "hangup" | "end" => none_after(Cmd::Hangup),
        "logout" => none_after(Cmd::Logout),
        "ping" => none_after(Cmd::Ping),
        "listen" => {
            let count = match rest {
                "" => None,
                n => Some(n.parse().map_err(|_| format!("listen: COUNT must be a number, not {n:?}"))?),
            };
            Ok(Cmd::Listen { count })
        }
        "help" | "?" => Ok(Cmd::Help),
        "quit" | "exit" => Ok(Cmd::Quit),
        "" => Err(String::new()),
        other => Err(format!("unknown command {other:?}; type `help`")),
    }
}

/// `group EVENT ...`: the request it sends.
fn group(event: &str, rest: &str) -> Result<Cmd, String> {
    let (first, tail) = split_word(rest);
    let words = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
    let usage = |u: &str| Err(format!("usage: group {u}"));
    let request = match event {
        "create" if !first.is_empty() => {
            json!({"type":"group","event":"create","details":{"name":first,"members":words(tail)}})
        }
        "create" => return usage("create NAME [EMAIL...]"),
        "add" | "remove" if !first.is_empty() && !tail.is_empty() => {
            json!({"type":"group","event":event,"details":{"group":first,"members":words(tail)}})
        }
        "add" | "remove" => return usage(&format!("{event} GROUP EMAIL...")),
        "rename" if !first.is_empty() && !tail.is_empty() => {
            json!({"type":"group","event":"rename","details":{"group":first,"name":tail}})
        }
        "rename" => return usage("rename GROUP NAME"),
        "leave" if !first.is_empty() && tail.is_empty() => {
            json!({"type":"group","event":"leave","details":{"group":first}})
        }
        "leave" => return usage("leave GROUP"),
        _ => return usage("create|add|remove|rename|leave ..."),
    };
    Ok(Cmd::Group { request })
}

pub fn group_message(group: &str, text: &str, now: i64) -> Value {
    json!({"event":"group","type":"message","details":{"group":group,"message":text,"time":now}})
}

pub fn group_history(group: &str, limit: Option<u32>) -> Value {
    match limit {
        Some(l) => json!({"type":"history","details":{"group":group,"limit":l}}),
        None => json!({"type":"history","details":{"group":group}}),
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

pub fn registration(email: &str, username: &str, plain: &str) -> Value {
    json!({"type":"registration","details":{"email":email,"password":md5_hex(plain),"username":username}})
}

pub fn verify(otp: &str) -> Value {
    json!({"type":"verify","otp":otp.trim()})
}

/// A name with `@` is an email, anything else a username.
/// A login; `subscribe` asks for presence, typing and read events (PROTOCOL.md section 15),
/// which a person at the prompt sees and a script would have to skip.
pub fn login(name: &str, plain: &str, subscribe: bool) -> Value {
    let (email, username) = if name.contains('@') { (Some(name), None) } else { (None, Some(name)) };
    let mut v = json!({"type":"login","details":{"username":username,"email":email,"password":md5_hex(plain)}});
    if subscribe {
        v["details"]["subscribe"] = json!(["presence", "typing", "read"]);
    }
    v
}

pub fn personal(to: &str, text: &str, now: i64) -> Value {
    json!({"event":"personal","type":"message","details":{"to":to,"message":text,"time":now}})
}

pub fn global(text: &str, now: i64) -> Value {
    json!({"event":"global","type":"message","details":{"message":text,"time":now}})
}

pub fn history(with: &str, limit: Option<u32>) -> Value {
    match limit {
        Some(l) => json!({"type":"history","details":{"with":with,"limit":l}}),
        None => json!({"type":"history","details":{"with":with}}),
    }
}

pub fn block(email: &str, block: bool) -> Value {
    json!({"type": if block { "block" } else { "unblock" }, "details": {"email": email}})
}

pub fn password_change(old: &str, new: &str) -> Value {
    json!({"type":"password","details":{"old":md5_hex(old),"new":md5_hex(new)}})
}

pub fn reset_request(email: &str) -> Value {
    json!({"type":"reset","details":{"email":email}})
}

pub fn reset_with(email: &str, otp: &str, new: &str) -> Value {
    json!({"type":"reset","details":{"email":email,"otp":otp.trim(),"password":md5_hex(new)}})
}

pub fn delete_account(password: &str) -> Value {
    json!({"type":"delete","details":{"password":md5_hex(password)}})
}

pub fn voice(event: &str, email: &str) -> Value {
    json!({"type":"voice","event":event,"details":{"email":email}})
}

pub fn simple(ty: &str) -> Value {
    json!({ "type": ty })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_keeping_message_text() {
        assert_eq!(
            parse("send  bob@x.org   hello,  world ").unwrap(),
            Cmd::Send { to: "bob@x.org".into(), text: "hello,  world".into() }
        );
        assert_eq!(
            parse("register a@x.org ann").unwrap(),
            Cmd::Register { email: "a@x.org".into(), username: "ann".into() }
        );
        assert_eq!(parse("history b@x.org 5").unwrap(), Cmd::History { with: "b@x.org".into(), limit: Some(5) });
        assert_eq!(parse("accept").unwrap(), Cmd::Accept { email: None });
        assert_eq!(parse(r#" {"type":"ping"}"#).unwrap(), Cmd::Raw(r#"{"type":"ping"}"#.into()));
        assert_eq!(parse("send bob@x.org").unwrap_err(), "usage: send USER TEXT");
        assert!(parse("history b@x.org lots").unwrap_err().contains("LIMIT"));
        assert!(parse("users now").is_err());
        assert!(parse("frobnicate").unwrap_err().contains("help"));
        assert_eq!(
            parse("group create team a@x.org b@x.org").unwrap(),
            Cmd::Group {
                request: json!({"type":"group","event":"create","details":{"name":"team","members":["a@x.org","b@x.org"]}})
            }
        );
        assert_eq!(
            parse("group rename 7 the A team").unwrap(),
            Cmd::Group {
                request: json!({"type":"group","event":"rename","details":{"group":"7","name":"the A team"}})
            }
        );
        assert!(parse("group add 7").unwrap_err().contains("usage"));
        assert_eq!(parse("gsend 7 hi there").unwrap(), Cmd::GroupSend { group: "7".into(), text: "hi there".into() });
        assert_eq!(parse("ghistory 7 3").unwrap(), Cmd::GroupHistory { group: "7".into(), limit: Some(3) });
    }

    #[test]
    fn requests_have_the_format_md_shapes() {
        assert_eq!(md5_hex("secret"), "5ebe2294ecd0e0f08eab7690d2a6ee69");
        assert_eq!(login("ann", "secret", false)["details"]["email"], Value::Null);
        assert_eq!(login("a@x.org", "secret", true)["details"]["username"], Value::Null);
        assert_eq!(
            personal("b@x.org", "hi", 5),
            json!({"event":"personal","type":"message","details":{"to":"b@x.org","message":"hi","time":5}})
        );
    }
}
