//! natter-cli: a client to poke a natter server with, interactively or from scripts.
//!
//! `natter-cli` alone opens a prompt with friendly commands (`help` lists them) where any
//! line starting with `{` is sent as raw JSON; `--raw` shows the server's JSON instead of
//! readable lines. `natter-cli [--login NAME] COMMAND ARGS...` runs one command, prints the
//! answer and exits 0, or 1 when natter refused it.
//!
//! One thread polls the socket with mio and owns the screen; a second one only reads
//! stdin (a terminal, a pipe or a file alike, which epoll cannot all watch) and wakes it.

mod command;
mod editor;
mod render;
mod session;
mod term;

use clap::{Parser, ValueEnum};
use editor::Editor;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use natter::line_client::{self, LineClient, LineError};
use natter::tls_client::{self, Link};
use render::Paint;
use session::{Action, Options, Output, Session};
use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "natter-cli",
    version,
    about = "Talk to a natter server: a prompt with friendly commands, raw JSON, or one command from a script",
    after_help = "Examples:\n  natter-cli                                   prompt; type `help`\n  \
                  natter-cli --raw                             type JSON lines, see JSON lines\n  \
                  natter-cli --login ann@example.org send bob@example.org \"hi\"\n  \
                  echo '{\"type\":\"ping\"}' | natter-cli --raw\n\n\
                  The password is asked without echo (or read as one line when stdin is not a\n\
                  terminal); NATTER_PASSWORD, when set, is used instead.",
    max_term_width = 100
)]
struct Args {
    /// The server's address.
    #[arg(long, env = "NATTER_ADDR", default_value = "127.0.0.1:5050")]
    addr: String,
    /// Speak TLS, verifying the server's certificate against the system's CA roots and the
    /// host of --addr.
    #[arg(long)]
    tls: bool,
    /// Verify the server's certificate against this PEM file instead (a private CA or a
    /// self-signed certificate); implies --tls.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Log in as this email or username first.
    #[arg(long, value_name = "EMAIL|USERNAME")]
    login: Option<String>,
    /// Type JSON lines and see the server's JSON (indented and coloured on a terminal).
    #[arg(long)]
    raw: bool,
    /// Show the server's JSON instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Colour the output: auto means when stdout is a terminal and NO_COLOR is unset.
    #[arg(long, value_enum, default_value = "auto")]
    color: Colour,
    /// One command to run instead of the prompt (e.g. `send bob@example.org hello`).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Colour {
    Auto,
    Always,
    Never,
}

const SOCKET: Token = Token(0);
const STDIN: Token = Token(1);
const DRAIN_WAIT: Duration = Duration::from_secs(10);
const CONNECT_WAIT: Duration = Duration::from_secs(5);

enum Input {
    Bytes(Vec<u8>),
    Line(String),
    End,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut queue = Vec::new();
    if let Some(name) = &args.login {
        queue.push(command::Cmd::Login { name: name.clone() });
    }
    let one_shot = !args.command.is_empty();
    if one_shot {
        match command::parse(&args.command.join(" ")) {
            Ok(cmd) => queue.push(cmd),
            Err(e) => {
                eprintln!("natter-cli: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let stdout_tty = term::is_tty(1);
    let paint = match args.color {
        Colour::Always => Paint::Colour,
        Colour::Auto if stdout_tty && std::env::var_os("NO_COLOR").is_none() => Paint::Colour,
        _ => Paint::Plain,
    };
    let output = if args.raw || args.json { Output::Json { pretty: stdout_tty } } else { Output::Human };
    let password = std::env::var("NATTER_PASSWORD").ok();
    // The line editor only when a person sits at a terminal on both ends.
    let interactive = term::is_tty(0) && stdout_tty;
    let opts = Options { paint, output, one_shot, password, clock: now_unix, clock_ms: monotonic_ms, interactive };
    let session = Session::new(opts, queue);
    match run(&args, session, one_shot) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("natter-cli: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args, mut session: Session, one_shot: bool) -> io::Result<u8> {
    let link = if args.tls || args.ca.is_some() {
        let config = tls_client::config(args.ca.as_deref()).map_err(io::Error::other)?;
        let session = tls_client::connect(&args.addr, CONNECT_WAIT, &config)?;
        Link::Tls(Box::new(session.map_socket(TcpStream::from_std)))
    } else {
        Link::Plain(TcpStream::from_std(line_client::connect(args.addr.as_str(), Some(CONNECT_WAIT))?))
    };
    let mut conn = LineClient::new(link);
    let mut poll = Poll::new()?;
    poll.registry().register(conn.stream_mut().socket_mut(), SOCKET, Interest::READABLE | Interest::WRITABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), STDIN)?);

    let tty = term::is_tty(0) && term::is_tty(1);
    let _raw = if tty { Some(term::RawMode::enter()?) } else { None };
    let mut screen = Screen { editor: tty.then(|| Editor::new("natter> ")), prompt_shown: !one_shot };
    let (tx, rx) = mpsc::channel();
    // The loop keeps its own handle: the waker's eventfd must outlive a stdin thread that
    // reads a short pipe and ends before the loop first polls.
    let thread_waker = Arc::clone(&waker);
    std::thread::spawn(move || read_stdin(tty, &tx, &thread_waker));

    screen.redraw();
    let mut pending = session.start();
    let mut events = Events::with_capacity(16);
    let mut drain_deadline = None;
    loop {
        for action in pending.drain(..) {
            match action {
                Action::Send(line) => conn.queue_line(line.as_bytes()),
                Action::Print(text) => screen.print(&text, false),
                Action::Warn(text) => screen.print(&text, true),
                Action::Ask { prompt, hidden } => screen.ask(&prompt, hidden),
                Action::Idle(prompt) => screen.idle(&prompt, !one_shot),
                Action::Exit(code) => {
                    flush(&mut conn);
                    screen.finish();
                    return Ok(code as u8);
                }
            }
        }
        flush(&mut conn);
        // Piped input has ended: its answers get a while to arrive (an unfinished JSON
        // frame would otherwise keep the ping behind it, and us, waiting forever).
        if session.draining() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN_WAIT);
        }
        let timeout = drain_deadline.map(|d| d.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, timeout)?;
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            screen.print("no answer from the server after the input ended (an unfinished JSON frame?)", true);
            return Ok(1);
        }
        for event in events.iter() {
            match event.token() {
                SOCKET => {
                    let mut lines = Vec::new();
                    let read = conn.read_lines(&mut [0u8; 16 * 1024], |line| {
                        let text = String::from_utf8_lossy(line);
                        let text = text.trim();
                        if !text.is_empty() {
                            lines.push(text.to_owned());
                        }
                    });
                    for line in lines {
                        pending.extend(session.on_server_line(&line));
                    }
                    match read {
                        Ok(()) => {}
                        Err(e @ LineError::TooLong { .. }) => {
                            screen.print(&format!("natter-cli: {e}"), true);
                            pending.extend(session.on_closed());
                        }
                        Err(_) => pending.extend(session.on_closed()),
                    }
                }
                _ => {
                    for input in rx.try_iter() {
                        pending.extend(match input {
                            Input::Line(l) => session.on_input(&l),
                            Input::End => session.on_input_end(),
                            Input::Bytes(b) => screen.keys(&b, &mut session, one_shot),
                        });
                    }
                }
            }
        }
    }
}

/// Milliseconds since the first call, on a monotonic clock.
fn monotonic_ms() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The stdin thread: keypresses from a terminal, lines from anything else, then `End`.
fn read_stdin(tty: bool, tx: &mpsc::Sender<Input>, waker: &Waker) {
    let stdin = io::stdin();
    let mut lock = stdin.lock();
    let mut buf = [0u8; 1024];
    loop {
        let input = if tty {
            match lock.read(&mut buf) {
                Ok(0) | Err(_) => Input::End,
                Ok(n) => Input::Bytes(buf[..n].to_vec()),
            }
        } else {
            let mut line = String::new();
            match lock.read_line(&mut line) {
                Ok(0) | Err(_) => Input::End,
                Ok(_) => Input::Line(line.trim_end_matches(['\n', '\r']).to_owned()),
            }
        };
        let end = matches!(input, Input::End);
        if tx.send(input).is_err() || waker.wake().is_err() || end {
            return;
        }
    }
}

/// Writes what the socket takes. A broken connection shows up as a close on the read side.
fn flush(conn: &mut LineClient<Link<TcpStream>>) {
    let _ = conn.flush();
}

/// What the user sees: printed lines above the prompt and the line being typed.
struct Screen {
    editor: Option<Editor>,
    /// Whether a prompt is on screen (always interactively; in one-shot use only to ask).
    prompt_shown: bool,
}

impl Screen {
    fn print(&mut self, text: &str, warn: bool) {
        let clear = if self.editor.is_some() && self.prompt_shown { "\r\x1b[2K" } else { "" };
        let line = format!("{clear}{text}\n");
        // A closed stdout (a pipe into `head`) is not worth failing over.
        if warn {
            let mut out = io::stdout().lock();
            let _ = out.write_all(clear.as_bytes()).and_then(|_| out.flush());
            let _ = io::stderr().write_all(format!("{text}\n").as_bytes());
        } else {
            let _ = io::stdout().write_all(line.as_bytes());
        }
        self.redraw();
    }

    fn redraw(&mut self) {
        if let (Some(ed), true) = (&mut self.editor, self.prompt_shown) {
            let mut out = io::stdout().lock();
            let _ = out.write_all(ed.render(term::width()).as_bytes()).and_then(|_| out.flush());
        } else {
            let _ = io::stdout().flush();
        }
    }

    fn ask(&mut self, prompt: &str, hidden: bool) {
        match &mut self.editor {
            Some(ed) => {
                ed.set_prompt(prompt, hidden);
                self.prompt_shown = true;
                self.redraw();
            }
            // No line editor: the answer is simply the next line. Ask on the terminal only
            // when a person types it there (not when it comes from a pipe or a file).
            None if term::is_tty(0) && term::is_tty(2) => eprint!("{prompt}"),
            None => {}
        }
    }

    fn idle(&mut self, prompt: &str, interactive: bool) {
        if let Some(ed) = &mut self.editor {
            ed.set_prompt(prompt, false);
        }
        if !interactive && self.prompt_shown {
            // One-shot: the question was answered; take the prompt off the screen.
            let _ = io::stdout().write_all(b"\r\x1b[2K");
        }
        self.prompt_shown = interactive;
        self.redraw();
    }

    fn keys(&mut self, bytes: &[u8], session: &mut Session, one_shot: bool) -> Vec<Action> {
        let Some(ed) = &mut self.editor else { return Vec::new() };
        let mut actions = Vec::new();
        for event in ed.feed(bytes) {
            match event {
                editor::Event::Line(line) => {
                    if self.prompt_shown {
                        // What was typed stays on screen above the answers.
                        let _ = io::stdout().write_all(ed.entered(&line).as_bytes());
                    }
                    actions.extend(session.on_input(&line));
                }
                editor::Event::Quit => actions.push(Action::Exit(if one_shot { 130 } else { 0 })),
                editor::Event::Clear => {
                    let _ = io::stdout().write_all(b"\x1b[H\x1b[2J");
                }
            }
        }
        self.redraw();
        actions
    }

    fn finish(&mut self) {
        if self.editor.is_some() && self.prompt_shown {
            let _ = io::stdout().write_all(b"\r\x1b[2K");
        }
        let _ = io::stdout().flush();
    }
}
