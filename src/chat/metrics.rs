//! Counters the core keeps for `/metrics`: plain numbers, incremented where things happen.

/// How calls end, in the order of [`CALL_OUTCOMES`].
pub const CALL_OUTCOMES: [&str; 5] = ["rejected", "timeout", "ended", "disconnected", "silence"];

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
}

impl Counters {
    pub fn call_ended(&mut self, outcome: &str) {
        if let Some(i) = CALL_OUTCOMES.iter().position(|o| *o == outcome) {
            self.calls[i] += 1;
        }
    }
}
