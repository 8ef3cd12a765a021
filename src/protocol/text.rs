//! `Text`: a JSON string borrowed from the frame when it has no escapes, owned otherwise.
//!
//! serde's `#[serde(borrow)]` does not reach inside `Option<Cow<str>>`, so a plain
//! `Option<Cow<str>>` field always allocates. This newtype asks the deserializer for a
//! borrowed string itself, which works at any depth (inside `Option` too).

use serde::de::{Deserialize, Deserializer, Error, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A string field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// A message id sent by a client: ids are strings of decimal digits on the wire
/// (PROTOCOL.md section 12), so a JSON number is the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireId(pub i64);

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = WireId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message id (a string of digits)")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<WireId, E> {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom("an id must be a string of digits"));
                }
                v.parse::<i64>().map(WireId).map_err(|_| E::custom("id out of range"))
            }
        }
        d.deserialize_str(IdVisitor)
    }
}
