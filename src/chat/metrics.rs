//! Counters the core keeps for `/metrics`: plain numbers, incremented where things happen.

/// How calls end, in the order of [`CALL_OUTCOMES`].
pub const CALL_OUTCOMES: [&str; 5] = ["rejected", "timeout", "ended", "disconnected", "silence"];

/// The request types counted in [`Counters::requests`], in order.
pub const REQUEST_TYPES: [&str; 23] = [
    "registration",
    "verify",
    "login",
    "logout",
    "users",
    "ping",
    "message",
    "voice",
    "history",
    "ack",
    "group",
    "groups",
    "block",
    "unblock",
    "blocked",
    "presence",
    "typing",
    "read",
    "unread",
    "password",
    "delete",
    "reset",
    "other",
];

/// Everything counted since the server started.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub otp_sent: u64,
    pub otp_failed: u64,
    /// Personal messages written completely to a recipient's socket (each device counts).
    pub messages_delivered: u64,
    /// Global messages handed to receivers (one per receiving connection).
    pub global_deliveries: u64,
    /// Frames answered `invalid` because they could not be decoded.
    pub frames_undecodable: u64,
    /// Requests answered `invalid` because the connection was not logged in.
    pub frames_not_logged_in: u64,
    pub calls: [u64; 5],
    pub groups_created: u64,
    /// Group messages stored.
    pub group_messages: u64,
    /// Group messages handed to members' connections (one per receiving connection).
    pub group_deliveries: u64,
    /// Requests decoded, by type (in the order of [`REQUEST_TYPES`]).
    pub requests: [u64; 23],
}

impl Counters {
    pub fn request(&mut self, ty: &str) {
        let i = REQUEST_TYPES.iter().position(|t| *t == ty).unwrap_or(REQUEST_TYPES.len() - 1);
        self.requests[i] += 1;
    }

    pub fn call_ended(&mut self, outcome: &str) {
        if let Some(i) = CALL_OUTCOMES.iter().position(|o| *o == outcome) {
            self.calls[i] += 1;
        }
    }
}
