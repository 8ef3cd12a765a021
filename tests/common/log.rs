//! The server's stderr as the tests keep it, and its tail for panic messages.

use std::sync::{Arc, Mutex};

/// Lines the server wrote to stderr, shared with the thread that drains the pipe.
pub type Log = Arc<Mutex<Vec<String>>>;

/// The last lines of a server log, for panic messages.
pub fn log_tail(log: &Log) -> String {
    let lines = log.lock().unwrap();
    let start = lines.len().saturating_sub(40);
    let mut out = String::from("---- server stderr (tail) ----\n");
    for l in &lines[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("---- end of server stderr ----");
    out
}
