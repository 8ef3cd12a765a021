//! The wire format: decoding client frames into [`Request`]s and encoding every server
//! message. The only module that uses serde; it knows shapes, not rules.
//!
//! One decoder with one entry, [`decode`]: the hand parser of `fast.rs` takes the frames it
//! can read in one pass (plain personal and global messages) and tells a message it cannot
//! take from a frame that is no message; `request.rs`'s serde decoder reads every other
//! frame, wording every error. One builder (`Message::into_request`) makes a message
//! whichever of them read it. The two agree on every frame the fast
//! path accepts (its tests hold it to `request::general`); neither calls the other.

mod fast;
pub mod request;
pub mod response;
pub mod text;

pub use request::{Conversation, DecodeError, GroupRequest, Login, Message, Request, Subscriptions, VoiceEvent};
pub use response::ErrorKind;
pub use text::Text;

/// The deepest nesting a request may have. The deepest request shape has 2 levels; the
/// slack is for clients' unknown extra fields. Deeper frames are `invalid`, also when the
/// depth is in a field we would ignore, so no parser recursion is ever at stake.
pub const MAX_DEPTH: u32 = 32;

/// Decodes one complete frame whose nesting depth the scanner measured.
pub fn decode_frame(frame: &[u8], depth: u32) -> Result<Request<'_>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new("unknown", format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    decode(frame)
}

/// Decodes one complete frame (as delimited by the frame scanner).
pub fn decode(frame: &[u8]) -> Result<Request<'_>, DecodeError> {
    // Checked up front because serde_json does not validate strings it skips.
    let text = std::str::from_utf8(frame).map_err(|_| DecodeError::new("unknown", "the frame is not valid UTF-8"))?;
    // Most frames are plain messages: read by hand in one pass.
    match fast::verdict(text) {
        fast::Verdict::Message(req) => Ok(req),
        fast::Verdict::CannotTake | fast::Verdict::NotAMessage => request::general(text),
    }
}
