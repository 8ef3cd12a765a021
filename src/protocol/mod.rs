//! The wire format: decoding client frames into [`Request`]s and encoding every server
//! message. The only module that uses serde; it knows shapes, not rules.

mod fast;
pub mod request;
pub mod response;
pub mod text;

pub use request::{decode, decode_frame, DecodeError, Login, Message, Request, VoiceEvent};
pub use response::ErrorKind;
pub use text::Text;
