//! `offline`: N personal messages stored for a user who is not connected; then it logs in.
//! Measures the time from its login answer to the last message.

use super::{delivered, login_all, login_frame, personal_frame, Env, Report};
use crate::answer::Answer;
use crate::net::Clients;
use crate::stats::Ledger;

pub struct Params {
    pub messages: u64,
    pub size: usize,
}

pub fn run(env: &Env, p: &Params) -> Result<Report, String> {
    let mut cl = Clients::new(env.dial.clone()).map_err(|e| e.to_string())?;
    let sender = login_all(&mut cl, env, &[0], false)?[0];
    let window = 256u64;
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut frame = Vec::new();
    while sent < window.min(p.messages) {
        frame.clear();
        personal_frame(&mut frame, 1, 0, sent, 0, p.size);
        cl.send(sender, &frame);
        sent += 1;
    }
    let stored = cl
        .until(env.limit, |cl, _, line| {
            if Answer::parse(line).is_some_and(|a| a.is("sent", "message")) {
                answered += 1;
                if sent < p.messages {
                    let mut f = Vec::with_capacity(p.size + 100);
                    personal_frame(&mut f, 1, 0, sent, 0, p.size);
                    cl.send(sender, &f);
                    sent += 1;
                }
            }
            answered >= p.messages
        })
        .map_err(|e| e.to_string())?;
    if !stored {
        return Err(format!("only {answered} of {} messages stored", p.messages));
    }
    let me = cl.connect(env.addr).map_err(|e| e.to_string())?;
    cl.send(me, login_frame(1, "").as_bytes());
    let mut ledger = Ledger::new(1, p.messages);
    let (mut t_login, mut t_last) = (0u64, 0u64);
    let done = cl
        .until(env.limit, |_, ci, line| {
            if ci != me {
                return false;
            }
            match Answer::parse(line) {
                Some(a) if a.is("success", "login") => t_login = env.now_ns(),
                Some(a) if a.event == "personal" => {
                    match delivered(&a, p.size) {
                        Some((_, seq, _)) => ledger.record(0, seq),
                        None => ledger.corrupted += 1,
                    }
                    t_last = env.now_ns();
                }
                _ => {}
            }
            ledger.received + ledger.duplicated >= p.messages
        })
        .map_err(|e| e.to_string())?;
    let mut r = Report::new("offline");
    let secs = t_last.saturating_sub(t_login) as f64 / 1e9;
    r.metric("backlog", p.messages as f64, "msgs");
    r.metric("login answer to last message", secs * 1000.0, "ms");
    r.metric("backlog rate", p.messages as f64 / secs.max(1e-9), "msg/s");
    if let Some(e) = ledger.errors() {
        r.errors.push(e);
    }
    if !done {
        r.errors.push("timed out".into());
    }
    Ok(r)
}
