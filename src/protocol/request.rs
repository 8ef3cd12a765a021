//! Decoding one frame into a [`Request`]: the only place that knows request shapes.
//!
//! Decoding is two steps. The envelope (`type`, `event`, `details`, `otp`) is read with
//! every field kept as raw JSON, so a wrongly typed field still lets us name the request
//! type in the error. Then `details` is decoded into the typed struct of that request.
//! Strings borrow from the frame where they have no escapes.
//!
//! Decoding only checks shape (present, non-null, right JSON type): PROTOCOL.md section 3
//! makes that `invalid`. Value rules (lengths, email syntax) are the core's, answered
//! `failed`. Unknown fields are ignored everywhere.

use super::text::{Text, WireId};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A decoded client request, borrowing from the frame.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Registration {
        email: Text<'a>,
        password: Text<'a>,
        username: Text<'a>,
    },
    Verify {
        otp: Text<'a>,
    },
    Login(Login<'a>),
    Logout,
    Users,
    Ping,
    Personal(Message<'a>),
    Global(Message<'a>),
    Voice {
        event: VoiceEvent,
        email: Text<'a>,
    },
    History {
        of: Conversation<'a>,
        before: Option<i64>,
        limit: Option<i64>,
    },
    Ack {
        id: i64,
    },
    /// A change to a group (PROTOCOL.md section 14).
    Group(GroupRequest<'a>),
    /// The caller's groups.
    Groups,
    /// A message to a group.
    GroupMessage {
        group: Text<'a>,
        message: Message<'a>,
    },
    /// `block` (true) or `unblock` (false) a user (PROTOCOL.md section 16).
    Block {
        block: bool,
        email: Text<'a>,
    },
    /// The users the caller blocks.
    Blocked,
    /// Who of the caller's contacts is online.
    Presence,
    /// The caller is (or stopped) typing to a user or in a group.
    Typing {
        of: Conversation<'a>,
        typing: bool,
    },
    /// Change the password: the old and the new md5 digests (PROTOCOL.md section 17).
    Password {
        old: Text<'a>,
        new: Text<'a>,
    },
    /// Delete the caller's account, confirmed by its password's md5 digest.
    Delete {
        password: Text<'a>,
    },
    /// Ask for a password reset code (`otp` and `password` absent), or use it.
    Reset {
        email: Text<'a>,
        code: Option<(Text<'a>, Text<'a>)>,
    },
    /// Mark a conversation read up to a message id.
    Read {
        of: Conversation<'a>,
        upto: i64,
    },
    /// The conversations with unread messages.
    Unread,
}

/// Whose messages `history` pages.
#[derive(Debug, PartialEq)]
pub enum Conversation<'a> {
    /// With one user (`with`).
    With(Text<'a>),
    /// Of a group (`group`).
    Group(Text<'a>),
}

/// The group requests (`{"type":"group","event":E,...}`).
#[derive(Debug, PartialEq)]
pub enum GroupRequest<'a> {
    Create { name: Text<'a>, members: Vec<Text<'a>> },
    Add { group: Text<'a>, members: Vec<Text<'a>> },
    Remove { group: Text<'a>, members: Vec<Text<'a>> },
    Rename { group: Text<'a>, name: Text<'a> },
    Leave { group: Text<'a> },
}

impl Request<'_> {
    /// The request's `type`, as echoed in answers and errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::Registration { .. } => "registration",
            Request::Verify { .. } => "verify",
            Request::Login(_) => "login",
            Request::Logout => "logout",
            Request::Users => "users",
            Request::Ping => "ping",
            Request::Personal(_) | Request::Global(_) | Request::GroupMessage { .. } => "message",
            Request::Group(_) => "group",
            Request::Groups => "groups",
            Request::Block { block: true, .. } => "block",
            Request::Block { block: false, .. } => "unblock",
            Request::Blocked => "blocked",
            Request::Presence => "presence",
            Request::Typing { .. } => "typing",
            Request::Password { .. } => "password",
            Request::Delete { .. } => "delete",
            Request::Reset { .. } => "reset",
            Request::Read { .. } => "read",
            Request::Unread => "unread",
            Request::Voice { .. } => "voice",
            Request::History { .. } => "history",
            Request::Ack { .. } => "ack",
        }
    }
}

/// `login` details: one of username and email may be absent, not both.
#[derive(Debug, PartialEq)]
pub struct Login<'a> {
    pub username: Option<Text<'a>>,
    pub email: Option<Text<'a>>,
    pub password: Text<'a>,
    /// Extension: the connection acknowledges personal messages (PROTOCOL.md section 11).
    pub acks: bool,
    /// The events the connection opts in to (PROTOCOL.md section 15).
    pub subscribe: Subscriptions,
}

/// The optional events of section 15 a connection asked for at login.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Subscriptions {
    pub presence: bool,
    pub typing: bool,
    pub read: bool,
}

/// The body of a personal or global message as sent by a client.
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    /// Recipient email; always `None` for global messages.
    pub to: Option<Text<'a>>,
    pub message: Text<'a>,
    pub media: Option<Text<'a>>,
    pub time: Option<i64>,
    pub client_id: Option<Text<'a>>,
}

impl<'a> Message<'a> {
    /// The request a message is, whichever parser read it (the one place both decoders
    /// build it): a global message never carries a recipient.
    pub(super) fn into_request(self, global: bool) -> Request<'a> {
        if global {
            Request::Global(Message { to: None, ..self })
        } else {
            Request::Personal(self)
        }
    }
}

/// The voice requests a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceEvent {
    Call,
    Accept,
    Reject,
    End,
}

/// Why a frame is not a request: answered `{"event":"invalid","type":ty,"message":message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request's `type` when it had a string one, else `"unknown"`.
    pub ty: String,
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(ty: &str, message: impl Into<String>) -> Self {
        DecodeError { ty: ty.to_owned(), message: message.into() }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    details: Option<&'a RawValue>,
    #[serde(borrow, default)]
    otp: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RegistrationDetails<'a> {
    #[serde(borrow, default)]
    email: Option<Text<'a>>,
    #[serde(borrow, default)]
    password: Option<Text<'a>>,
    #[serde(borrow, default)]
    username: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct LoginDetails<'a> {
    #[serde(borrow, default)]
    username: Option<Text<'a>>,
    #[serde(borrow, default)]
    email: Option<Text<'a>>,
    #[serde(borrow, default)]
    password: Option<Text<'a>>,
    #[serde(default)]
    acks: Option<bool>,
    #[serde(borrow, default)]
    subscribe: Option<Vec<Text<'a>>>,
}

#[derive(Deserialize)]
struct MessageDetails<'a> {
    #[serde(borrow, default)]
    to: Option<Text<'a>>,
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(borrow, default)]
    message: Option<Text<'a>>,
    #[serde(borrow, default)]
    media: Option<Text<'a>>,
    #[serde(default)]
    time: Option<i64>,
    #[serde(borrow, default)]
    client_id: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct EmailDetails<'a> {
    #[serde(borrow, default)]
    email: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ReadDetails<'a> {
    #[serde(borrow, default)]
    with: Option<Text<'a>>,
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(default)]
    upto: Option<WireId>,
}

#[derive(Deserialize)]
struct ResetDetails<'a> {
    #[serde(borrow, default)]
    email: Option<Text<'a>>,
    #[serde(borrow, default)]
    otp: Option<Text<'a>>,
    #[serde(borrow, default)]
    password: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct PasswordDetails<'a> {
    #[serde(borrow, default)]
    old: Option<Text<'a>>,
    #[serde(borrow, default)]
    new: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct TypingDetails<'a> {
    #[serde(borrow, default)]
    to: Option<Text<'a>>,
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(default)]
    typing: Option<bool>,
}

#[derive(Deserialize)]
struct GroupDetails<'a> {
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    members: Option<Vec<Text<'a>>>,
}

#[derive(Deserialize)]
struct HistoryDetails<'a> {
    #[serde(borrow, default)]
    with: Option<Text<'a>>,
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(default)]
    before: Option<WireId>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct AckDetails {
    #[serde(default)]
    id: Option<WireId>,
}

/// Decodes a frame with serde, without the hand-read fast path: what `protocol::decode`
/// answers for every frame the fast path turns down, and what the fast path's tests hold
/// it to (comparing with `decode` itself would compare the fast path with itself).
pub(crate) fn general(text: &str) -> Result<Request<'_>, DecodeError> {
    // serde_json does not decode the escapes of strings it skips, so a lone surrogate in an
    // ignored field would pass. Frames with `\u` escapes get one full decoding pass.
    if text.contains("\\u") {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
            return Err(DecodeError::new("unknown", format!("not a valid request: {}", json_error(&e))));
        }
    }
    let env: Envelope = serde_json::from_str(text)
        .map_err(|e| DecodeError::new("unknown", format!("not a valid request: {}", json_error(&e))))?;
    let ty = match env.ty {
        None => return Err(DecodeError::new("unknown", "missing field `type`")),
        Some(raw) => match serde_json::from_str::<Text>(raw.get()) {
            Ok(t) => t,
            Err(_) => return Err(DecodeError::new("unknown", "`type` must be a string")),
        },
    };
    let ty: &str = &ty;
    match ty {
        "registration" => {
            let d: RegistrationDetails = details(ty, env.details)?;
            Ok(Request::Registration {
                email: required(ty, "email", d.email)?,
                password: required(ty, "password", d.password)?,
                username: required(ty, "username", d.username)?,
            })
        }
        "verify" => {
            let otp = match env.otp {
                Some(raw) => serde_json::from_str::<Option<Text>>(raw.get())
                    .map_err(|_| DecodeError::new(ty, "`otp` must be a string"))?,
                None => None,
            };
            Ok(Request::Verify { otp: required(ty, "otp", otp)? })
        }
        "login" => {
            let d: LoginDetails = details(ty, env.details)?;
            if d.username.is_none() && d.email.is_none() {
                return Err(DecodeError::new(ty, "`details` needs `email` or `username`"));
            }
            let mut subscribe = Subscriptions::default();
            for name in d.subscribe.iter().flatten() {
                match &**name {
                    "presence" => subscribe.presence = true,
                    "typing" => subscribe.typing = true,
                    "read" => subscribe.read = true,
                    other => return Err(DecodeError::new(ty, format!("unknown subscription `{}`", clip(other)))),
                }
            }
            Ok(Request::Login(Login {
                username: d.username,
                email: d.email,
                password: required(ty, "password", d.password)?,
                acks: d.acks.unwrap_or(false),
                subscribe,
            }))
        }
        "logout" => Ok(Request::Logout),
        "presence" => Ok(Request::Presence),
        "password" => {
            let d: PasswordDetails = details(ty, env.details)?;
            Ok(Request::Password { old: required(ty, "old", d.old)?, new: required(ty, "new", d.new)? })
        }
        "read" => {
            let d: ReadDetails = details(ty, env.details)?;
            let of = conversation(ty, "with", d.with, d.group)?;
            Ok(Request::Read { of, upto: required(ty, "upto", d.upto)?.0 })
        }
        "unread" => Ok(Request::Unread),
        "reset" => {
            let d: ResetDetails = details(ty, env.details)?;
            let email = required(ty, "email", d.email)?;
            let code = match (d.otp, d.password) {
                (None, None) => None,
                (Some(otp), Some(password)) => Some((otp, password)),
                (Some(_), None) => return Err(DecodeError::new(ty, "missing field `password`")),
                (None, Some(_)) => return Err(DecodeError::new(ty, "missing field `otp`")),
            };
            Ok(Request::Reset { email, code })
        }
        "delete" => {
            let d: LoginDetails = details(ty, env.details)?;
            Ok(Request::Delete { password: required(ty, "password", d.password)? })
        }
        "typing" => {
            let d: TypingDetails = details(ty, env.details)?;
            let of = conversation(ty, "to", d.to, d.group)?;
            Ok(Request::Typing { of, typing: required(ty, "typing", d.typing)? })
        }
        "users" => Ok(Request::Users),
        "ping" => Ok(Request::Ping),
        "message" => decode_message(ty, env.event, env.details),
        "voice" => {
            let event = match event_name(ty, env.event)?.as_str() {
                "call" => VoiceEvent::Call,
                "accept" => VoiceEvent::Accept,
                "reject" => VoiceEvent::Reject,
                "end" => VoiceEvent::End,
                other => return Err(DecodeError::new(ty, format!("unknown voice event `{other}`"))),
            };
            let d: EmailDetails = details(ty, env.details)?;
            Ok(Request::Voice { event, email: required(ty, "email", d.email)? })
        }
        "history" => {
            let d: HistoryDetails = details(ty, env.details)?;
            let of = conversation(ty, "with", d.with, d.group)?;
            Ok(Request::History { of, before: d.before.map(|b| b.0), limit: d.limit })
        }
        "group" => {
            let event = event_name(ty, env.event)?;
            let d: GroupDetails = details(ty, env.details)?;
            Ok(Request::Group(match event.as_str() {
                "create" => GroupRequest::Create {
                    name: required(ty, "name", d.name)?,
                    members: required(ty, "members", d.members)?,
                },
                "add" => GroupRequest::Add {
                    group: required(ty, "group", d.group)?,
                    members: required(ty, "members", d.members)?,
                },
                "remove" => GroupRequest::Remove {
                    group: required(ty, "group", d.group)?,
                    members: required(ty, "members", d.members)?,
                },
                "rename" => {
                    GroupRequest::Rename { group: required(ty, "group", d.group)?, name: required(ty, "name", d.name)? }
                }
                "leave" => GroupRequest::Leave { group: required(ty, "group", d.group)? },
                other => return Err(DecodeError::new(ty, format!("unknown group event `{}`", clip(other)))),
            }))
        }
        "groups" => Ok(Request::Groups),
        "block" | "unblock" => {
            let d: EmailDetails = details(ty, env.details)?;
            Ok(Request::Block { block: ty == "block", email: required(ty, "email", d.email)? })
        }
        "blocked" => Ok(Request::Blocked),
        "ack" => {
            let d: AckDetails = details(ty, env.details)?;
            Ok(Request::Ack { id: required(ty, "id", d.id)?.0 })
        }
        // An empty type is still "a string one", so it is echoed as sent (PROTOCOL.md §3);
        // the message must not read "unknown request type ``".
        "" => Err(DecodeError::new("", "`type` must not be empty")),
        other => Err(DecodeError::new(other, format!("unknown request type `{}`", clip(other)))),
    }
}

fn decode_message<'a>(
    ty: &str,
    event: Option<&'a RawValue>,
    raw: Option<&'a RawValue>,
) -> Result<Request<'a>, DecodeError> {
    let global = match event_name(ty, event)?.as_str() {
        "personal" => false,
        "global" => true,
        "group" => {
            let d: MessageDetails = details(ty, raw)?;
            let group = required(ty, "group", d.group)?;
            let message = Message {
                to: None,
                message: required(ty, "message", d.message)?,
                media: d.media,
                time: d.time,
                client_id: d.client_id,
            };
            return Ok(Request::GroupMessage { group, message });
        }
        other => return Err(DecodeError::new(ty, format!("unknown message event `{}`", clip(other)))),
    };
    let d: MessageDetails = details(ty, raw)?;
    let message = Message {
        to: if global { None } else { Some(required(ty, "to", d.to)?) },
        message: required(ty, "message", d.message)?,
        media: d.media,
        time: d.time,
        client_id: d.client_id,
    };
    Ok(message.into_request(global))
}

fn event_name(ty: &str, event: Option<&RawValue>) -> Result<String, DecodeError> {
    let raw = event.ok_or_else(|| DecodeError::new(ty, "missing field `event`"))?;
    match serde_json::from_str::<Option<Text>>(raw.get()) {
        Ok(Some(t)) => Ok(t.0.into_owned()),
        _ => Err(DecodeError::new(ty, "`event` must be a string")),
    }
}

fn details<'a, T: Deserialize<'a>>(ty: &str, raw: Option<&'a RawValue>) -> Result<T, DecodeError> {
    let raw = raw.ok_or_else(|| DecodeError::new(ty, "missing field `details`"))?;
    if !raw.get().starts_with('{') {
        return Err(DecodeError::new(ty, "`details` must be an object"));
    }
    serde_json::from_str(raw.get()).map_err(|e| DecodeError::new(ty, format!("details: {}", json_error(&e))))
}

/// A conversation named by `user_key` (`with` or `to`: a user's email) or by `group`:
/// exactly one of the two.
fn conversation<'a>(
    ty: &str,
    user_key: &str,
    user: Option<Text<'a>>,
    group: Option<Text<'a>>,
) -> Result<Conversation<'a>, DecodeError> {
    match (user, group) {
        (Some(user), None) => Ok(Conversation::With(user)),
        (None, Some(group)) => Ok(Conversation::Group(group)),
        (Some(_), Some(_)) => Err(DecodeError::new(ty, format!("give `{user_key}` or `group`, not both"))),
        (None, None) => Err(DecodeError::new(ty, format!("missing field `{user_key}`"))),
    }
}

fn required<T>(ty: &str, field: &str, value: Option<T>) -> Result<T, DecodeError> {
    value.ok_or_else(|| DecodeError::new(ty, format!("`{field}` is required and must not be null")))
}

/// serde_json's message without its " at line L column C" suffix.
fn json_error(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Keeps error messages short when a client sends a huge type or event name.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode;
    use std::borrow::Cow;

    fn err(frame: &str) -> (String, String) {
        let e = decode(frame.as_bytes()).unwrap_err();
        (e.ty, e.message)
    }

    #[test]
    fn format_md_registration_decodes_borrowed() {
        let r =
            decode(br#"{"type":"registration","details":{"email":"a@b.org","password":"x","username":"u"}}"#).unwrap();
        match r {
            Request::Registration { email, .. } => {
                assert_eq!(&*email, "a@b.org");
                assert!(matches!(email.0, Cow::Borrowed(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escaped_strings_are_owned_and_unescaped() {
        let r = decode(br#"{"type":"verify","otp":"12\u00334"}"#).unwrap();
        assert_eq!(r, Request::Verify { otp: Text(Cow::Owned("1234".into())) });
    }

    #[test]
    fn login_accepts_either_name_and_rejects_neither() {
        let r = decode(br#"{"type":"login","details":{"username":null,"email":"a@b.org","password":"p"}}"#);
        assert!(matches!(r, Ok(Request::Login(Login { username: None, email: Some(_), .. }))));
        let (ty, m) = err(r#"{"type":"login","details":{"username":null,"email":null,"password":"p"}}"#);
        assert_eq!(ty, "login");
        assert!(m.contains("email"), "{m}");
    }

    #[test]
    fn messages_are_told_apart_by_event() {
        let p = decode(br#"{"event":"personal","type":"message","details":{"to":"b@c.org","message":"hi","time":5}}"#);
        assert!(matches!(p, Ok(Request::Personal(Message { time: Some(5), .. }))));
        let g = decode(br#"{"event":"global","type":"message","details":{"message":"hi","media":null}}"#);
        assert!(matches!(g, Ok(Request::Global(Message { media: None, time: None, .. }))));
        assert_eq!(err(r#"{"event":"personal","type":"message","details":{"message":"hi"}}"#).0, "message");
    }

    #[test]
    fn shape_errors_name_the_type_when_it_is_a_string() {
        assert_eq!(err(r#"{"type":"registration"}"#).0, "registration");
        assert_eq!(err(r#"{"type":"registration","details":[1]}"#).0, "registration");
        assert_eq!(
            err(r#"{"type":"registration","details":{"email":5,"password":"p","username":"u"}}"#).0,
            "registration"
        );
        assert_eq!(
            err(r#"{"type":"registration","details":{"email":null,"password":"p","username":"u"}}"#).0,
            "registration"
        );
        assert_eq!(err(r#"{"type":"frobnicate"}"#).0, "frobnicate");
        // Found by the CI fuzz run: an empty type is a string one, echoed, with a reason.
        assert_eq!(err(r#"{"type":""}"#), ("".to_owned(), "`type` must not be empty".to_owned()));
        assert_eq!(err(r#"{"type":5}"#).0, "unknown");
        assert_eq!(err(r#"{"type":null}"#).0, "unknown");
        assert_eq!(err(r#"{"nothing":1}"#).0, "unknown");
        assert_eq!(err(r#"{"type":}"#).0, "unknown");
        assert_eq!(err(r#"{"type":"ping","type":"ping"}"#).0, "unknown");
    }

    #[test]
    fn error_messages_carry_no_parser_positions() {
        let (_, m) = err(r#"{"type":"login","details":{"email":"a","password":7}}"#);
        assert!(!m.contains("line"), "{m}");
    }

    #[test]
    fn ids_are_strings_of_digits() {
        assert_eq!(decode(br#"{"type":"ack","details":{"id":"42"}}"#), Ok(Request::Ack { id: 42 }));
        assert_eq!(err(r#"{"type":"ack","details":{"id":42}}"#).0, "ack");
        assert_eq!(err(r#"{"type":"ack","details":{"id":"4x"}}"#).0, "ack");
        assert_eq!(err(r#"{"type":"ack","details":{"id":"-1"}}"#).0, "ack");
        assert_eq!(err(r#"{"type":"history","details":{"with":"a@b.org","before":7}}"#).0, "history");
    }

    #[test]
    fn lone_surrogates_are_invalid_even_in_ignored_fields() {
        assert_eq!(err(r#"{"type":"ping","x":"\ud800"}"#).0, "unknown");
        assert_eq!(err(r#"{"type":"ping","x":"\udc00\ud800"}"#).0, "unknown");
        assert_eq!(decode(br#"{"type":"ping","x":"\ud83d\ude00 \u00e9"}"#), Ok(Request::Ping));
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let e = decode(b"{\"type\":\"ping\",\"x\":\"\xff\"}").unwrap_err();
        assert_eq!(e.ty, "unknown");
    }
}
