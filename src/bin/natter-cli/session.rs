//! The conversation with the server: runs commands, asks for passwords and OTPs, shows what
//! arrives, and knows when a one-shot run is finished.
//!
//! I/O-free: lines from the user and the server in, `Action`s out. The loop in main.rs does
//! the reading and writing; the unit tests below play both sides.

use crate::command::{self, Cmd, HELP};
use crate::render::{self, Known, Paint};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// A line for the server (without its newline).
    Send(String),
    /// Something for the user (stdout).
    Print(String),
    /// A local problem (stderr).
    Warn(String),
    /// The next line the user types answers this; hidden input is not echoed.
    Ask {
        prompt: String,
        hidden: bool,
    },
    /// The prompt shown while idle changed (after a login or logout).
    Idle(String),
    Exit(i32),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One readable line per event.
    Human,
    /// The server's JSON, indented when `pretty`.
    Json { pretty: bool },
}

pub struct Options {
    pub paint: Paint,
    pub output: Output,
    /// Run the queued commands, then exit with their outcome.
    pub one_shot: bool,
    /// From NATTER_PASSWORD: used instead of asking.
    pub password: Option<String>,
    /// Unix seconds, for the `time` of messages sent and for showing dates.
    pub clock: fn() -> i64,
    /// Milliseconds on a monotonic clock, for the round trip of `ping`.
    pub clock_ms: fn() -> f64,
    /// A person types at a terminal: `quit` leaves at once. Piped input instead finishes
    /// what it sent (every answer printed) before leaving.
    pub interactive: bool,
}

/// What the next typed line answers.
enum Ask {
    LoginPassword(String),
    RegisterPassword { email: String, username: String },
    Otp,
    OldPassword,
    NewPassword { old: String },
    ResetCode { email: String },
    ResetPassword { email: String, otp: String },
    ConfirmDelete,
    DeletePassword,
}

/// The answer a queued command waits for before the next one runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// An answer of this `type`.
    Answer(&'static str),
    /// The pong of a ping sent behind a request natter does not answer when it succeeds;
    /// a `failed` of this type before it is the request's failure.
    Quiet(&'static str),
    /// A call was answered: a one-shot `call` lasts until it ends.
    CallEnd,
    /// The pong after input ended: every earlier answer has been printed.
    Drain,
    /// `listen`: this many more messages (`None`: until the user quits).
    Messages(Option<u64>),
    /// The user list, to find the email of a username given where a user is named.
    Directory,
}

pub struct Session {
    opts: Options,
    queue: VecDeque<Cmd>,
    waiting: Option<Wait>,
    asking: Option<Ask>,
    me: Option<String>,
    ringing_from: Option<String>,
    calling: Option<String>,
    in_call_with: Option<String>,
    /// Pings sent and pongs received: the pong that drains is the last one owed.
    pings: u64,
    pongs: u64,
    /// A one-shot `--login` before the command: its success is not worth a line.
    quiet_login: bool,
    /// Interactively, the commands given on the command line (`--login`) run first, and
    /// their failure ends the run as in one-shot use.
    preamble: bool,
    /// natter answered `failed` or `invalid` (or a command was wrong): piped input then
    /// ends with status 1.
    refused: bool,
    /// Lines typed (or piped) while an answer is awaited: run in order once it came, so
    /// that a script's lines never overtake the answers they depend on (a login, say).
    typed: VecDeque<String>,
    /// Input ended (or piped input said `quit`): leave once everything sent is answered.
    input_ended: bool,
    /// Emails by lowercased username, from the user list and the friends list.
    directory: HashMap<String, String>,
    /// Group names, who is online, how far contacts have read: what makes lines readable.
    known: Known,
    /// Who is typing to us now (from typing events), shown on the prompt line.
    typists: Vec<String>,
    /// The user list was read for the command about to run: a name it lacks is unknown.
    directory_fresh: bool,
    /// When (ms) each ping in flight was sent, oldest first: pongs come back in order.
    ping_starts: VecDeque<f64>,
}

impl Session {
    pub fn new(opts: Options, queue: Vec<Cmd>) -> Session {
        let quiet_login = opts.one_shot && queue.len() > 1 && matches!(queue.first(), Some(Cmd::Login { .. }));
        let preamble = !opts.one_shot && !queue.is_empty();
        Session {
            preamble,
            refused: false,
            pings: 0,
            pongs: 0,
            quiet_login,
            opts,
            queue: queue.into(),
            waiting: None,
            asking: None,
            me: None,
            ringing_from: None,
            calling: None,
            in_call_with: None,
            typed: VecDeque::new(),
            input_ended: false,
            directory: HashMap::new(),
            known: Known::default(),
            typists: Vec::new(),
            directory_fresh: false,
            ping_starts: VecDeque::new(),
        }
    }

    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.next(&mut out);
        out
    }

    fn idle_prompt(&self) -> String {
        let me = self.me.as_deref().unwrap_or("natter");
        match self.typists.as_slice() {
            [] => format!("{me}> "),
            [one] => format!("({one} is typing) {me}> "),
            many => format!("({} are typing) {me}> ", many.join(", ")),
        }
    }

    /// A person at the prompt sees presence, typing and read marks; a script or a one-shot
    /// command gets only what it asked for.
    fn subscribes(&self) -> bool {
        self.opts.interactive && !self.opts.one_shot
    }

    /// Typing goes on the prompt line while it lasts, where there is one.
    fn typing_on_prompt(&self) -> bool {
        self.opts.interactive && self.opts.output == Output::Human
    }

    /// Redraws the idle prompt after the typists changed, unless a question (a hidden
    /// password, say) holds the prompt: the next idle prompt shows them.
    fn typists_changed(&self, out: &mut Vec<Action>) {
        if self.typing_on_prompt() && self.asking.is_none() {
            out.push(Action::Idle(self.idle_prompt()));
        }
    }

    /// Runs queued commands, then lines typed meanwhile, until one has to wait for an
    /// answer or for the user; once input has ended and nothing is left, starts the drain.
    fn next(&mut self, out: &mut Vec<Action>) {
        loop {
            if self.asking.is_some() {
                // A question asked after its answer was typed (piped lines come early):
                // the next typed line answers it.
                match self.typed.pop_front() {
                    Some(line) => {
                        self.line(&line, out);
                        continue;
                    }
                    None => return,
                }
            }
            if self.waiting.is_some() {
                return;
            }
            if let Some(cmd) = self.queue.pop_front() {
                self.run(cmd, out);
                continue;
            }
            self.preamble = false;
            if self.opts.one_shot {
                out.push(Action::Exit(0));
                return;
            }
            if let Some(line) = self.typed.pop_front() {
                self.line(&line, out);
                continue;
            }
            if self.input_ended {
                // A ping behind everything sent: its pong says every answer is printed.
                self.send(out, command::simple("ping").to_string());
                self.waiting = Some(Wait::Drain);
            }
            return;
        }
    }

    /// Whether a typed line has to wait for the answer awaited now. Not while listening or
    /// in a call (the user may hang up), nor when it answers a question asked.
    fn holds_input(&self) -> bool {
        self.asking.is_none() && matches!(self.waiting, Some(Wait::Answer(_) | Wait::Quiet(_) | Wait::Directory))
    }

    /// The email of the user named `name`: as given when it has an `@`, else looked up by
    /// username in the directory. `None`: not known (yet).
    fn resolve(&self, name: &str) -> Option<String> {
        if name.contains('@') {
            return Some(name.to_owned());
        }
        self.directory.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Resolves the user a command names. `Err(cmd)` when the user list must be read first
    /// (it was asked for; the command runs again once it came); `Ok(None)` when the
    /// command was refused.
    fn with_emails(&mut self, cmd: Cmd, out: &mut Vec<Action>) -> Result<Option<Cmd>, Cmd> {
        let name = match &cmd {
            Cmd::Send { to, .. } => Some(to),
            Cmd::History { with, .. } => Some(with),
            Cmd::Call { email } => Some(email),
            Cmd::Block { email, .. } => Some(email),
            Cmd::Accept { email: Some(e) } | Cmd::Reject { email: Some(e) } => Some(e),
            _ => None,
        };
        let Some(name) = name.cloned() else { return Ok(Some(cmd)) };
        let Some(email) = self.resolve(&name) else {
            if self.directory_fresh {
                // The list was read since the name was typed, and does not have it.
                self.local_error(&format!("no user named {name}; give an email or a username from `users`"), out);
                return Ok(None);
            }
            return Err(cmd);
        };
        Ok(Some(match cmd {
            Cmd::Send { text, .. } => Cmd::Send { to: email, text },
            Cmd::History { limit, .. } => Cmd::History { with: email, limit },
            Cmd::Call { .. } => Cmd::Call { email },
            Cmd::Block { block, .. } => Cmd::Block { email, block },
            Cmd::Accept { .. } => Cmd::Accept { email: Some(email) },
            Cmd::Reject { .. } => Cmd::Reject { email: Some(email) },
            other => other,
        }))
    }

    fn run(&mut self, cmd: Cmd, out: &mut Vec<Action>) {
        let now = (self.opts.clock)();
        let resolved = self.with_emails(cmd, out);
        self.directory_fresh = false;
        let cmd = match resolved {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return,
            Err(cmd) => {
                // Read the user list first, quietly, then run the command again.
                self.queue.push_front(cmd);
                self.send(out, command::simple("users").to_string());
                self.waiting = Some(Wait::Directory);
                return;
            }
        };
        let (request, wait) = match cmd {
            Cmd::Register { email, username } => match self.opts.password.clone() {
                Some(p) => (command::registration(&email, &username, &p), Wait::Answer("registration")),
                None => {
                    return self.ask(Ask::RegisterPassword { email, username }, out);
                }
            },
            Cmd::Login { name } => match self.opts.password.clone() {
                Some(p) => (command::login(&name, &p, self.subscribes()), Wait::Answer("login")),
                None => return self.ask(Ask::LoginPassword(name), out),
            },
            Cmd::Send { to, text } => (command::personal(&to, &text, now), Wait::Answer("message")),
            Cmd::Global { text } => {
                self.note("sent to everyone online", out);
                (command::global(&text, now), Wait::Quiet("message"))
            }
            Cmd::Users => (command::simple("users"), Wait::Answer("users")),
            Cmd::History { with, limit } => (command::history(&with, limit), Wait::Answer("history")),
            Cmd::Group { request } => (request, Wait::Answer("group")),
            Cmd::Block { email, block } => {
                (command::block(&email, block), Wait::Answer(if block { "block" } else { "unblock" }))
            }
            Cmd::Blocked => (command::simple("blocked"), Wait::Answer("blocked")),
            Cmd::Presence => (command::simple("presence"), Wait::Answer("presence")),
            Cmd::Unread => (command::simple("unread"), Wait::Answer("unread")),
            Cmd::Passwd => return self.ask(Ask::OldPassword, out),
            Cmd::Reset { email } => {
                self.send(out, command::reset_request(&email).to_string());
                return self.ask(Ask::ResetCode { email }, out);
            }
            Cmd::DeleteAccount => return self.ask(Ask::ConfirmDelete, out),
            Cmd::Groups => (command::simple("groups"), Wait::Answer("groups")),
            Cmd::GroupSend { group, text } => (command::group_message(&group, &text, now), Wait::Answer("message")),
            Cmd::GroupHistory { group, limit } => (command::group_history(&group, limit), Wait::Answer("history")),
            Cmd::Call { email } => {
                self.note(&format!("calling {email}..."), out);
                self.calling = Some(email.clone());
                (command::voice("call", &email), Wait::Answer("voice"))
            }
            Cmd::Accept { email } => {
                let Some(email) = email.or_else(|| self.ringing_from.clone()) else {
                    return self.local_error("no call is ringing; name the caller", out);
                };
                (command::voice("accept", &email), Wait::Answer("voice"))
            }
            Cmd::Reject { email } => {
                let Some(email) = email.or_else(|| self.ringing_from.take()) else {
                    return self.local_error("no call is ringing; name the caller", out);
                };
                self.note(&format!("rejected the call from {email}"), out);
                (command::voice("reject", &email), Wait::Quiet("voice"))
            }
            Cmd::Hangup => {
                let peer =
                    self.in_call_with.clone().or_else(|| self.calling.clone()).or_else(|| self.ringing_from.clone());
                let Some(peer) = peer else {
                    return self.local_error("no call to hang up", out);
                };
                self.note(&format!("hung up on {peer}"), out);
                self.in_call_with = None;
                self.calling = None;
                self.ringing_from = None;
                (command::voice("end", &peer), Wait::Quiet("voice"))
            }
            Cmd::Logout => (command::simple("logout"), Wait::Answer("logout")),
            Cmd::Ping => (command::simple("ping"), Wait::Answer("pong")),
            Cmd::Listen { count } => {
                if count != Some(0) {
                    self.waiting = Some(Wait::Messages(count));
                }
                return;
            }
            Cmd::Raw(line) => {
                // Only a whole JSON object goes out: anything else would leave natter
                // waiting for the rest of an object, and every later request behind it.
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => self.send(out, line),
                    Ok(_) => self.local_error("not a JSON object; not sent", out),
                    Err(e) => self.local_error(&format!("not valid JSON: {e}; not sent"), out),
                }
                return;
            }
            Cmd::Help => {
                out.push(Action::Print(HELP.to_owned()));
                return;
            }
            Cmd::Quit if self.opts.interactive => {
                out.push(Action::Exit(0));
                return;
            }
            Cmd::Quit => {
                // Piped: what was sent before is still answered and printed first.
                self.input_ended = true;
                self.typed.clear();
                return;
            }
        };
        self.send(out, request.to_string());
        // Interactively nothing waits: answers are shown as they come.
        if self.scripted() {
            if let Wait::Quiet(_) = wait {
                // natter answers nothing when these succeed; the pong says they were read.
                self.send(out, command::simple("ping").to_string());
            }
            self.waiting = Some(wait);
        }
    }

    fn send(&mut self, out: &mut Vec<Action>, line: String) {
        if serde_json::from_str::<Value>(&line).is_ok_and(|v| v["type"] == "ping") {
            self.pings += 1;
            self.ping_starts.push_back((self.opts.clock_ms)());
        }
        out.push(Action::Send(line));
    }

    fn ask(&mut self, ask: Ask, out: &mut Vec<Action>) {
        let (prompt, hidden) = match ask {
            Ask::Otp | Ask::ResetCode { .. } => ("OTP: ", false),
            Ask::OldPassword => ("current password: ", true),
            Ask::NewPassword { .. } | Ask::ResetPassword { .. } => ("new password: ", true),
            Ask::ConfirmDelete => ("delete your account and everything in it? type yes: ", false),
            _ => ("password: ", true),
        };
        self.asking = Some(ask);
        out.push(Action::Ask { prompt: prompt.to_owned(), hidden });
    }

    fn local_error(&mut self, text: &str, out: &mut Vec<Action>) {
        self.refused = true;
        out.push(Action::Warn(self.opts.paint.error(text)));
        if self.opts.one_shot {
            out.push(Action::Exit(1));
        }
    }

    /// A line the user typed (or the next line of piped input).
    pub fn on_input(&mut self, line: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.input_ended {
            return out;
        }
        if self.holds_input() {
            self.typed.push_back(line.to_owned());
            return out;
        }
        self.line(line, &mut out);
        self.next(&mut out);
        out
    }

    /// Runs one line of input: the answer to a question asked, or a command.
    fn line(&mut self, line: &str, out: &mut Vec<Action>) {
        match self.asking.take() {
            Some(Ask::LoginPassword(name)) => {
                self.send(out, command::login(&name, line, self.subscribes()).to_string());
                self.wait_if_scripted(Wait::Answer("login"));
            }
            Some(Ask::RegisterPassword { email, username }) => {
                self.send(out, command::registration(&email, &username, line).to_string());
                self.wait_if_scripted(Wait::Answer("registration"));
            }
            Some(Ask::Otp) => {
                self.send(out, command::verify(line).to_string());
                self.wait_if_scripted(Wait::Answer("verify"));
            }
            Some(Ask::OldPassword) => self.ask(Ask::NewPassword { old: line.to_owned() }, out),
            Some(Ask::NewPassword { old }) => {
                self.send(out, command::password_change(&old, line).to_string());
                self.wait_if_scripted(Wait::Answer("password"));
            }
            Some(Ask::ResetCode { email }) => self.ask(Ask::ResetPassword { email, otp: line.to_owned() }, out),
            Some(Ask::ResetPassword { email, otp }) => {
                self.send(out, command::reset_with(&email, &otp, line).to_string());
                self.wait_if_scripted(Wait::Answer("reset"));
            }
            Some(Ask::ConfirmDelete) => {
                if line.trim().eq_ignore_ascii_case("yes") {
                    self.ask(Ask::DeletePassword, out);
                } else {
                    self.local_error("not deleted", out);
                }
            }
            Some(Ask::DeletePassword) => {
                self.send(out, command::delete_account(line).to_string());
                self.wait_if_scripted(Wait::Answer("delete"));
            }
            None => match command::parse(line) {
                Ok(cmd) => self.run(cmd, out),
                Err(e) if e.is_empty() => {}
                Err(e) => self.local_error(&e, out),
            },
        }
        if self.asking.is_none() {
            out.push(Action::Idle(self.idle_prompt()));
        }
    }

    fn scripted(&self) -> bool {
        self.opts.one_shot || self.preamble
    }

    /// A line about what natter-cli itself did (readable output only).
    fn note(&self, text: &str, out: &mut Vec<Action>) {
        if self.opts.output == Output::Human {
            out.push(Action::Print(self.opts.paint.info(text)));
        }
    }

    fn wait_if_scripted(&mut self, wait: Wait) {
        if self.scripted() {
            self.waiting = Some(wait);
        }
    }

    /// Input ended: finish what was typed, then leave once the server has answered it
    /// (one-shot use leaves when its command is done, as always).
    pub fn on_input_end(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.asking.is_some() {
            out.push(Action::Warn(self.opts.paint.error("input ended before the answer was typed")));
            out.push(Action::Exit(1));
        } else if !self.opts.one_shot {
            self.input_ended = true;
            self.next(&mut out);
        }
        out
    }

    /// Input has ended and the last answers are awaited.
    pub fn draining(&self) -> bool {
        self.waiting == Some(Wait::Drain)
    }

    pub fn on_server_line(&mut self, line: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            out.push(Action::Warn(self.opts.paint.error(&format!("not JSON from the server: {line}"))));
            return out;
        };
        let event = v["event"].as_str().unwrap_or("");
        let ty = v["type"].as_str().unwrap_or("");
        let mut round_trip = None;
        if ty == "pong" {
            self.pongs += 1;
            round_trip = self.ping_starts.pop_front().map(|start| (self.opts.clock_ms)() - start);
            if self.waiting == Some(Wait::Drain) && self.pongs >= self.pings {
                out.push(Action::Exit(i32::from(self.refused)));
                return out;
            }
        }
        if self.waiting == Some(Wait::Directory) && ty == "users" {
            // Asked for by natter-cli itself: learnt, not shown.
            if event == "success" {
                self.learn_users(&v);
            }
            self.directory_fresh = true;
            self.waiting = None;
            if event != "success" {
                self.queue.pop_front();
                self.refused = true;
                out.push(Action::Warn(self.show(line, &v)));
                if self.scripted() {
                    out.push(Action::Exit(1));
                    return out;
                }
            }
            self.next(&mut out);
            return out;
        }
        self.track(event, ty, &v, &mut out);
        let our_pong = matches!(self.waiting, Some(Wait::Quiet(_))) && ty == "pong";
        let preamble = std::mem::take(&mut self.quiet_login) && event == "success" && ty == "login";
        if matches!(event, "failed" | "invalid") {
            self.refused = true;
            out.push(Action::Warn(self.show(line, &v)));
        } else if (event, ty) == ("typing", "typing") && self.typing_on_prompt() {
            // Shown on the prompt line (track() changed it).
        } else if !our_pong && !preamble {
            let mut shown = self.show(line, &v);
            if let (Some(ms), Output::Human) = (round_trip, self.opts.output) {
                shown = format!("pong ({ms:.1} ms)");
            }
            out.push(Action::Print(shown));
        }
        self.settle(event, ty, &mut out);
        out
    }

    fn show(&self, line: &str, v: &Value) -> String {
        match self.opts.output {
            Output::Human => render::human(v, self.opts.paint, (self.opts.clock)(), &self.known),
            Output::Json { pretty: true } => render::pretty_json(line, self.opts.paint),
            Output::Json { pretty: false } => line.to_owned(),
        }
    }

    /// Moves a one-shot run on when the line answers what it waits for.
    fn settle(&mut self, event: &str, ty: &str, out: &mut Vec<Action>) {
        if let Some(wait) = self.waiting {
            match answer(wait, event, ty) {
                Some(true) if wait == Wait::Answer("voice") && event == "accept" && self.opts.one_shot => {
                    self.waiting = Some(Wait::CallEnd);
                }
                Some(true) => self.waiting = None,
                Some(false) => {
                    self.waiting = None;
                    out.push(Action::Exit(1));
                    return;
                }
                None => {}
            }
        }
        if let (Some(Wait::Messages(Some(left))), "personal" | "global" | "group", "message") =
            (self.waiting, event, ty)
        {
            self.waiting = (left > 1).then_some(Wait::Messages(Some(left - 1)));
        }
        self.next(out);
    }

    /// Follows the state the server reports: who is logged in, which call is ringing.
    fn track(&mut self, event: &str, ty: &str, v: &Value, out: &mut Vec<Action>) {
        let d = &v["details"];
        let email = d["email"].as_str().map(str::to_owned);
        match (event, ty) {
            ("success", "login") => {
                self.me = d["username"].as_str().map(str::to_owned);
                for f in d["friends"].as_array().into_iter().flatten() {
                    self.learn(f);
                }
                out.push(Action::Idle(self.idle_prompt()));
            }
            ("success", "users") => self.learn_users(v),
            ("success" | "update", "group") => self.learn_group(d),
            ("success", "groups") => {
                for g in d.as_array().into_iter().flatten() {
                    self.learn_group(g);
                }
            }
            ("success", "presence") => {
                self.known.online.clear();
                for c in d.as_array().into_iter().flatten() {
                    if let (Some(e), Some(true)) = (c["email"].as_str(), c["online"].as_bool()) {
                        self.known.online.insert(e.to_ascii_lowercase());
                    }
                }
            }
            ("presence", "presence") => {
                if let (Some(e), Some(on)) = (d["email"].as_str(), d["online"].as_bool()) {
                    if on {
                        self.known.online.insert(e.to_ascii_lowercase());
                    } else {
                        self.known.online.remove(&e.to_ascii_lowercase());
                    }
                }
            }
            ("typing", "typing") => {
                let who = match d["group"].as_str() {
                    Some(g) => format!("{} in {}", render::s(d, "from"), self.known.group_label(g)),
                    None => render::s(d, "from").to_owned(),
                };
                self.typists.retain(|t| *t != who);
                if d["typing"].as_bool() == Some(true) {
                    self.typists.push(who);
                }
                self.typists_changed(out);
            }
            ("personal" | "group", "message") if !self.typists.is_empty() => {
                // A message ends its sender's typing (the server's `false` may follow).
                let from = render::s(d, "from");
                let n = self.typists.len();
                self.typists.retain(|t| t != from && !t.starts_with(&format!("{from} in ")));
                if n != self.typists.len() {
                    self.typists_changed(out);
                }
            }
            ("read", "read") => {
                // How far a contact read what we sent (our own devices' marks name us).
                let reader = render::s(d, "reader").to_ascii_lowercase();
                let upto = render::s(d, "upto").parse::<i64>().ok();
                if let (Some(upto), false) = (upto, d.get("group").is_some()) {
                    let mark = self.known.read_by.entry(reader).or_insert(0);
                    *mark = (*mark).max(upto);
                }
            }
            ("success", "logout") | ("success", "delete") | ("logout", "logout") => {
                self.me = None;
                self.typists.clear();
                self.known.online.clear();
                self.known.read_by.clear();
                out.push(Action::Idle(self.idle_prompt()));
            }
            ("sent", "otp") if self.asking.is_none() => {
                self.waiting = None;
                self.ask(Ask::Otp, out);
            }
            ("request", "voice") => self.ringing_from = email,
            ("accept", "voice") => {
                self.in_call_with = self.calling.take().or_else(|| self.ringing_from.take());
            }
            ("end" | "reject" | "time" | "offline" | "busy", "voice") => {
                self.in_call_with = None;
                self.calling = None;
                self.ringing_from = None;
            }
            _ => {}
        }
    }

    fn learn_group(&mut self, g: &Value) {
        if let (Some(id), Some(name)) = (g["group"].as_str(), g["name"].as_str()) {
            self.known.groups.insert(id.to_owned(), name.to_owned());
        }
    }

    /// Remembers the emails of a `users` answer by username.
    fn learn_users(&mut self, v: &Value) {
        for u in v["details"].as_array().into_iter().flatten() {
            self.learn(u);
        }
    }

    fn learn(&mut self, user: &Value) {
        if let (Some(name), Some(email)) = (user["username"].as_str(), user["email"].as_str()) {
            self.directory.insert(name.to_ascii_lowercase(), email.to_owned());
        }
    }

    pub fn on_closed(&mut self) -> Vec<Action> {
        let clean = !self.opts.one_shot && self.waiting.is_none();
        vec![
            Action::Warn(self.opts.paint.error("the server closed the connection")),
            Action::Exit(if clean { 0 } else { 1 }),
        ]
    }
}

/// Whether a server line answers what we wait for: `Some(ok)` if it does.
fn answer(wait: Wait, event: &str, ty: &str) -> Option<bool> {
    let failed = matches!(event, "failed" | "invalid");
    match wait {
        Wait::Messages(_) | Wait::Drain | Wait::Directory => None,
        // natter could not tell what the request was: it was ours, and it failed.
        _ if failed && ty == "unknown" => Some(false),
        Wait::CallEnd => (ty == "voice" && matches!(event, "end" | "time")).then_some(true),
        Wait::Quiet(t) => {
            if ty == "pong" {
                Some(true)
            } else {
                (failed && ty == t).then_some(false)
            }
        }
        // The callee's `request` is not an answer; `accept` is the only good one.
        Wait::Answer("voice") => (ty == "voice" && event != "request").then_some(event == "accept"),
        // Registration succeeds with `sent otp` (handled by `track`, which asks for the code).
        Wait::Answer("registration") => (failed && matches!(ty, "otp" | "registration")).then_some(false),
        Wait::Answer("message") => {
            (ty == "message" && !matches!(event, "personal" | "global" | "group")).then_some(!failed)
        }
        // Another member's change is an `update`, not the answer to ours.
        Wait::Answer("group") => (ty == "group" && event != "update").then_some(!failed),
        Wait::Answer(t) => (ty == t).then_some(!failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(one_shot: bool, password: Option<&str>, queue: Vec<Cmd>) -> Session {
        let opts = Options {
            paint: Paint::Plain,
            output: Output::Human,
            one_shot,
            password: password.map(str::to_owned),
            clock: || 1_700_000_000,
            clock_ms: || 1000.0,
            interactive: false,
        };
        Session::new(opts, queue)
    }

    fn sent(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(l) => Some(serde_json::from_str(l).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn exit(actions: &[Action]) -> Option<i32> {
        actions.iter().find_map(|a| match a {
            Action::Exit(c) => Some(*c),
            _ => None,
        })
    }

    #[test]
    fn one_shot_registration_asks_password_then_otp() {
        let cmd = Cmd::Register { email: "a@x.org".into(), username: "ann".into() };
        let mut s = session(true, None, vec![cmd]);
        let a = s.start();
        assert_eq!(a, vec![Action::Ask { prompt: "password: ".into(), hidden: true }]);
        let a = s.on_input("secret");
        let req = sent(&a);
        assert_eq!(req[0]["details"]["password"], "5ebe2294ecd0e0f08eab7690d2a6ee69");
        assert_eq!(exit(&a), None);
        let a = s.on_server_line(r#"{"event":"sent","type":"otp","message":"OTP sent to a@x.org"}"#);
        assert!(a.contains(&Action::Ask { prompt: "OTP: ".into(), hidden: false }), "{a:?}");
        let a = s.on_input(" 123456 ");
        assert_eq!(sent(&a), vec![serde_json::json!({"type":"verify","otp":"123456"})]);
        let a = s.on_server_line(r#"{"event":"success","type":"verify"}"#);
        assert_eq!(exit(&a), Some(0), "{a:?}");
    }

    #[test]
    fn one_shot_stops_at_the_first_refusal() {
        let queue = vec![Cmd::Login { name: "ann".into() }, Cmd::Users];
        let mut s = session(true, Some("pw"), queue);
        let a = s.start();
        assert_eq!(sent(&a).len(), 1, "the second command waits for the login: {a:?}");
        let a = s.on_server_line(r#"{"event":"failed","type":"login","message":"invalid credentials"}"#);
        assert!(matches!(&a[0], Action::Warn(w) if w.contains("invalid credentials")), "{a:?}");
        assert_eq!(exit(&a), Some(1));
        assert!(sent(&a).is_empty());
    }

    #[test]
    fn an_incoming_message_is_not_the_answer_to_a_send() {
        let queue = vec![Cmd::Send { to: "b@x.org".into(), text: "hi".into() }];
        let mut s = session(true, None, queue);
        let a = s.start();
        assert_eq!(sent(&a)[0]["details"]["time"], 1_700_000_000);
        let a = s.on_server_line(
            r#"{"event":"personal","type":"message","details":{"id":"1","message":"yo","from":"b@x.org","time":1}}"#,
        );
        assert_eq!(exit(&a), None);
        let a = s.on_server_line(r#"{"event":"sent","type":"message","id":"2"}"#);
        assert_eq!(exit(&a), Some(0));
    }

    #[test]
    fn a_one_shot_call_lasts_until_it_ends() {
        let mut s = session(true, None, vec![Cmd::Call { email: "b@x.org".into() }]);
        s.start();
        let a = s.on_server_line(
            r#"{"type":"voice","event":"accept","details":{"ip":"127.0.0.1","port":"5050","token":"t"}}"#,
        );
        assert_eq!(exit(&a), None);
        let a = s.on_input("hangup");
        assert_eq!(sent(&a)[0], serde_json::json!({"type":"voice","event":"end","details":{"email":"b@x.org"}}));
        assert_eq!(sent(&a)[1], serde_json::json!({"type":"ping"}));
        let a = s.on_server_line(r#"{"event":"success","type":"pong"}"#);
        assert_eq!(exit(&a), Some(0));

        // Or the other side hangs up.
        let mut s = session(true, None, vec![Cmd::Call { email: "b@x.org".into() }]);
        s.start();
        s.on_server_line(r#"{"type":"voice","event":"accept","details":{"ip":"127.0.0.1","port":"5050","token":"t"}}"#);
        let a = s.on_server_line(r#"{"type":"voice","event":"end","details":{"email":"b@x.org"}}"#);
        assert_eq!(exit(&a), Some(0));
    }

    #[test]
    fn an_interactive_login_given_on_the_command_line_that_fails_ends_the_run() {
        let mut s = session(false, Some("pw"), vec![Cmd::Login { name: "ann".into() }]);
        s.start();
        let a = s.on_server_line(r#"{"event":"failed","type":"login","message":"invalid credentials"}"#);
        assert_eq!(exit(&a), Some(1), "{a:?}");
        // A good one leaves the prompt open.
        let mut s = session(false, Some("pw"), vec![Cmd::Login { name: "ann".into() }]);
        s.start();
        let a = s.on_server_line(
            r#"{"event":"success","type":"login","details":{"username":"ann","email":"a@x.org","friends":[]}}"#,
        );
        assert_eq!(exit(&a), None, "{a:?}");
        assert!(a.contains(&Action::Idle("ann> ".into())), "{a:?}");
        let a = s.on_input("global hi");
        assert_eq!(sent(&a).len(), 1, "no ping behind it interactively: {a:?}");
    }

    #[test]
    fn piped_input_with_a_refusal_ends_with_status_1() {
        let mut s = session(false, None, vec![]);
        s.on_input(r#"{"type":"users"}"#);
        s.on_input_end();
        s.on_server_line(r#"{"event":"invalid","type":"users","message":"log in or register first"}"#);
        let a = s.on_server_line(r#"{"event":"success","type":"pong"}"#);
        assert_eq!(a, vec![Action::Exit(1)]);
    }

    #[test]
    fn listen_ends_after_its_count_of_messages_and_answers_do_not_count() {
        let mut s = session(true, None, vec![Cmd::Listen { count: Some(2) }]);
        assert_eq!(exit(&s.start()), None);
        let m = r#"{"event":"personal","type":"message","details":{"id":"1","message":"a","from":"b@x.org","time":1}}"#;
        assert_eq!(exit(&s.on_server_line(r#"{"event":"success","type":"pong"}"#)), None);
        assert_eq!(exit(&s.on_server_line(m)), None);
        assert_eq!(exit(&s.on_server_line(m)), Some(0));
    }

    #[test]
    fn piped_input_ends_after_the_last_pong() {
        let mut s = session(false, None, vec![]);
        s.on_input(r#"{"type":"ping"}"#);
        let a = s.on_input_end();
        assert_eq!(sent(&a), vec![serde_json::json!({"type":"ping"})]);
        let a = s.on_server_line(r#"{"event":"success","type":"pong"}"#);
        assert_eq!(a, vec![Action::Print("pong (0.0 ms)".into())], "the user's pong is shown, with its round trip");
        let a = s.on_server_line(r#"{"event":"success","type":"users","details":[]}"#);
        assert_eq!(exit(&a), None);
        let a = s.on_server_line(r#"{"event":"success","type":"pong"}"#);
        assert_eq!(a, vec![Action::Exit(0)]);
    }

    const LOGGED_IN: &str =
        r#"{"event":"success","type":"login","details":{"username":"ann","email":"a@x.org","friends":[]}}"#;
    const PONG: &str = r#"{"event":"success","type":"pong"}"#;

    /// `printf 'ping\n' | natter-cli --login ann` once printed `pong` and never exited: the
    /// piped line replaced the wait for the login, and the end of input was dropped.
    #[test]
    fn piped_lines_after_a_login_wait_for_it_and_the_end_of_input_drains() {
        for password in [Some("pw"), None] {
            let mut s = session(false, password, vec![Cmd::Login { name: "ann".into() }]);
            let mut a = s.start();
            if password.is_none() {
                assert_eq!(a, vec![Action::Ask { prompt: "password: ".into(), hidden: true }]);
                a = s.on_input("pw");
            }
            assert_eq!(sent(&a)[0]["type"], "login");
            assert!(sent(&s.on_input("ping")).is_empty(), "held until the login is answered");
            assert!(s.on_input_end().is_empty());
            let a = s.on_server_line(LOGGED_IN);
            let ping = serde_json::json!({"type":"ping"});
            assert_eq!(sent(&a), vec![ping.clone(), ping], "the held line runs, then the drain's ping: {a:?}");
            assert_eq!(s.on_server_line(PONG), vec![Action::Print("pong (0.0 ms)".into())]);
            assert_eq!(s.on_server_line(PONG), vec![Action::Exit(0)]);
        }
    }

    /// With `quit` as the last piped line, natter-cli once left before any answer came.
    #[test]
    fn piped_quit_prints_every_answer_first() {
        let mut s = session(false, None, vec![]);
        assert_eq!(sent(&s.on_input("ping")).len(), 1);
        let a = s.on_input("quit");
        assert_eq!(sent(&a), vec![serde_json::json!({"type":"ping"})], "the drain's ping: {a:?}");
        assert!(s.on_input("users").is_empty(), "nothing after quit runs");
        assert_eq!(s.on_server_line(PONG), vec![Action::Print("pong (0.0 ms)".into())]);
        assert_eq!(s.on_server_line(PONG), vec![Action::Exit(0)]);
        // At a terminal, quit leaves at once.
        let mut s = Session::new(Options { interactive: true, ..session(false, None, vec![]).opts }, vec![]);
        assert_eq!(exit(&s.on_input("quit")), Some(0));
    }

    /// `{not json` once went out and left natter waiting for the object's end, so that no
    /// later request was ever answered.
    #[test]
    fn a_raw_line_that_is_not_one_json_object_is_refused_and_not_sent() {
        let mut s = session(false, None, vec![]);
        for bad in ["{not json", "{\"type\":\"ping\"", "{\"type\":\"ping\"}{\"type\":\"ping\"}"] {
            let a = s.on_input(bad);
            assert!(sent(&a).is_empty(), "{bad}: {a:?}");
            assert!(
                a.iter().any(
                    |x| matches!(x, Action::Warn(w) if w.starts_with("not valid JSON: ") && w.ends_with("; not sent"))
                ),
                "{bad}: {a:?}"
            );
        }
        assert_eq!(sent(&s.on_input("ping")), vec![serde_json::json!({"type":"ping"})]);
        assert_eq!(sent(&s.on_input(r#" {"type":"users"} "#)), vec![serde_json::json!({"type":"users"})]);
    }

    #[test]
    fn a_username_is_taken_wherever_a_user_is_named() {
        let mut s = session(false, Some("pw"), vec![Cmd::Login { name: "ann".into() }]);
        s.start();
        s.on_server_line(LOGGED_IN);
        let a = s.on_input("send Bob hi");
        assert_eq!(sent(&a), vec![serde_json::json!({"type":"users"})], "the list is read first: {a:?}");
        assert!(s.on_input("call bob").is_empty(), "typed lines wait for it");
        let a = s
            .on_server_line(r#"{"event":"success","type":"users","details":[{"username":"bob","email":"bob@x.org"}]}"#);
        assert!(!a.iter().any(|x| matches!(x, Action::Print(p) if p.contains("users"))), "not shown: {a:?}");
        let req = sent(&a);
        assert_eq!(req[0]["details"]["to"], "bob@x.org", "{a:?}");
        assert_eq!(req[1]["details"]["email"], "bob@x.org", "known now, no second lookup: {a:?}");
        let a = s.on_input("history zed");
        assert_eq!(sent(&a), vec![serde_json::json!({"type":"users"})]);
        let a = s.on_server_line(r#"{"event":"success","type":"users","details":[]}"#);
        assert!(sent(&a).is_empty());
        assert!(a.iter().any(|x| matches!(x, Action::Warn(w) if w.contains("no user named zed"))), "{a:?}");
    }

    /// A person at the prompt subscribes to section 15's events; typing shows on the prompt
    /// line while it lasts (not as lines), and a contact's read mark shows on history.
    #[test]
    fn at_the_prompt_typing_is_on_the_prompt_line_and_read_marks_on_history() {
        let opts = Options { interactive: true, ..session(false, Some("pw"), vec![]).opts };
        let mut s = Session::new(opts, vec![Cmd::Login { name: "ann".into() }]);
        let req = sent(&s.start());
        assert_eq!(req[0]["details"]["subscribe"], serde_json::json!(["presence", "typing", "read"]));
        s.on_server_line(LOGGED_IN);
        let a = s.on_server_line(r#"{"event":"typing","type":"typing","details":{"from":"bob@x.org","typing":true}}"#);
        assert_eq!(a, vec![Action::Idle("(bob@x.org is typing) ann> ".into())]);
        let a = s.on_server_line(
            r#"{"event":"personal","type":"message","details":{"id":"5","from":"bob@x.org","message":"hi","time":0}}"#,
        );
        assert!(a.contains(&Action::Idle("ann> ".into())), "the message ends the typing: {a:?}");
        let a = s.on_server_line(
            r#"{"event":"read","type":"read","details":{"reader":"bob@x.org","with":"ann@x.org","upto":"4"}}"#,
        );
        assert!(matches!(&a[..], [Action::Print(p)] if p.contains("read up to #4")), "{a:?}");
        let a = s.on_server_line(
            r#"{"event":"success","type":"history","details":[{"id":"6","from":"ann@x.org","to":"bob@x.org","message":"unseen","time":0},{"id":"4","from":"ann@x.org","to":"bob@x.org","message":"seen","time":0}]}"#,
        );
        let Some(Action::Print(text)) = a.first() else { panic!("{a:?}") };
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("seen #4 ✓ read") && lines[1].ends_with("unseen #6"), "{lines:?}");
    }

    /// A script logs in without subscribing: nothing of section 15 arrives to confuse it.
    #[test]
    fn a_script_does_not_subscribe() {
        let mut s = session(true, Some("pw"), vec![Cmd::Login { name: "ann".into() }]);
        let req = sent(&s.start());
        assert!(req[0]["details"].get("subscribe").is_none(), "{req:?}");
    }
}
