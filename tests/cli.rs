//! natter-cli against a real server: one-shot use from a script (register with the OTP read
//! from the outbox, log in, send, receive, failures and exit codes, raw JSON through a pipe),
//! and the interactive prompt through a pseudo-terminal (hidden password, a message arriving
//! while a line is half typed, history editing).

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_natter-cli");

fn cli(server: &Server, args: &[&str]) -> Command {
    let mut cmd = Command::new(CLI);
    clear_natter_env(&mut cmd);
    cmd.arg("--addr").arg(server.addr.to_string()).args(args).env_remove("NO_COLOR");
    cmd
}

/// How long a one-shot natter-cli may run.
const CLI_LIMIT: Duration = Duration::from_secs(20);

/// Runs a one-shot command with `stdin` as its input; gives up after 20 s.
fn run(mut cmd: Command, stdin: &str) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn natter-cli");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    wait_output(child, CLI_LIMIT, "natter-cli")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_shot_register_login_send_and_receive() {
    let server = Server::start();

    // register: the password from stdin, then the OTP the server mailed to the outbox.
    let mut cmd = cli(&server, &["register", "ann@example.org", "ann"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"secret\n").unwrap();
    let otp = server.wait_otp("ann@example.org");
    input.write_all(format!("{otp}\n").as_bytes()).unwrap();
    let out = wait_output(child, CLI_LIMIT, "natter-cli register");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("OTP sent to ann@example.org"), "{}", text(&out));
    assert!(stdout(&out).contains("registered"), "{}", text(&out));

    // The account works with the md5 of what was typed: the protocol's own login says so.
    let mut ann = logged_in(&server, "ann@example.org", "secret");
    server.user_add("bob@example.org", "bob", "hunter2");

    // send, with the password from NATTER_PASSWORD and the login by username.
    let mut cmd = cli(&server, &["--login", "ann", "send", "bob@example.org", "hello  bob"]);
    cmd.env("NATTER_PASSWORD", "secret");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = stdout(&out);
    let id = said.trim().strip_prefix("sent, id ").unwrap_or_else(|| panic!("{}", text(&out))).to_owned();
    assert!(id.parse::<u64>().is_ok(), "{said}");
    // ann's other connection sees her own message, as every device does.
    let copy = ann.recv();
    assert_eq!(copy["details"]["message"], json!("hello  bob"), "{copy}");
    assert_eq!(copy["details"]["id"], json!(id));

    // listen: bob receives it at login (password typed on stdin), then the run ends.
    let out = run(cli(&server, &["--login", "bob@example.org", "listen", "1"]), "hunter2\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = stdout(&out);
    assert!(line.contains(&format!("ann@example.org: hello  bob #{id}")), "{}", text(&out));

    // --json prints natter's own lines, one compact JSON object each (stdout is a pipe).
    let mut cmd = cli(&server, &["--json", "--login", "bob", "history", "ann@example.org"]);
    cmd.env("NATTER_PASSWORD", "hunter2");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 1, "the preamble login is not printed: {lines:?}");
    assert_eq!(lines[0]["type"], json!("history"));
    assert_eq!(lines[0]["details"][0]["id"], json!(id));
    assert_eq!(lines[0]["details"][0]["from"], json!("ann@example.org"));

    // global: no answer from natter when it works; exit 0 once natter has read it.
    let mut cmd = cli(&server, &["--login", "bob", "global", "hi", "all"]);
    cmd.env("NATTER_PASSWORD", "hunter2");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let g = ann.recv();
    assert_eq!(g["event"], json!("global"), "{g}");
    assert_eq!(g["details"]["message"], json!("hi all"));
    assert_eq!(g["details"]["from"], json!("bob@example.org"));
}

#[test]
fn one_shot_failures_exit_non_zero_with_natters_reason() {
    let server = Server::start();
    server.user_add("ann@example.org", "ann", "secret");

    let out = run(cli(&server, &["--login", "ann", "users"]), "wrong\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid credentials"), "{}", text(&out));
    assert_eq!(stdout(&out), "", "failures go to stderr");

    let mut cmd = cli(&server, &["--login", "ann", "send", "nobody@example.org", "hi"]);
    cmd.env("NATTER_PASSWORD", "secret");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown recipient"), "{}", text(&out));

    // Input ends before the password: an error, not a hang.
    let out = run(cli(&server, &["--login", "ann", "users"]), "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = run(cli(&server, &["frobnicate"]), "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"), "{}", text(&out));

    let out = run(cli(&server, &["send", "bob@example.org"]), "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: send USER TEXT"), "{}", text(&out));

    let mut cmd = Command::new(CLI);
    clear_natter_env(&mut cmd);
    cmd.args(["--addr", "127.0.0.1:1", "ping"]);
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"), "{}", text(&out));
}

#[test]
fn raw_json_through_a_pipe_prints_every_answer_then_exits() {
    let server = Server::start();
    let out = run(cli(&server, &["--raw"]), "{\"type\":\"ping\"}\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "{\"event\":\"success\",\"type\":\"pong\"}\n");

    // `{not json` once went out and jammed the connection: nothing after it was answered.
    let input = "{\"type\":\"ping\"}\n{\"type\":\"users\"}\n{not json\n{\"type\":\"ping\"}\n";
    let out = run(cli(&server, &["--raw"]), input);
    // natter refused one line and natter-cli another: the status says so, as a one-shot's would.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    // Answers on stdout; the pong natter-cli adds itself is not shown.
    assert_eq!(lines, vec![json!({"event":"success","type":"pong"}); 2], "{}", text(&out));
    // Refusals on stderr: natter's, and natter-cli's own for the line that is not JSON,
    // which never went out (it would have held every later request back).
    let err = String::from_utf8_lossy(&out.stderr);
    let errs: Vec<&str> = err.lines().collect();
    assert_eq!(errs.len(), 2, "{err}");
    assert!(errs[0].starts_with("not valid JSON: ") && errs[0].ends_with("; not sent"), "{err}");
    let refusal: Value = serde_json::from_str(errs[1]).unwrap();
    assert_eq!(refusal, json!({"event":"invalid","type":"users","message":"log in or register first"}));
}

/// Piped commands after `--login`, in every combination: the password from NATTER_PASSWORD
/// or the first line, with `quit` as the last line or not, readable or `--raw`. Each prints
/// every answer and exits 0 (once hung for good after `pong`, or printed nothing with quit).
#[test]
fn piped_commands_after_a_login_print_every_answer_and_exit() {
    let server = Server::start();
    server.user_add("ann@example.org", "ann", "secret");
    server.user_add("bob@example.org", "bob", "pw");
    for from_env in [true, false] {
        for quit in [false, true] {
            for raw in [false, true] {
                let mut args = vec!["--login", "ann@example.org"];
                if raw {
                    args.push("--raw");
                }
                let mut cmd = cli(&server, &args);
                let mut input = String::new();
                if from_env {
                    cmd.env("NATTER_PASSWORD", "secret");
                } else {
                    input.push_str("secret\n");
                }
                input.push_str(if raw { "{\"type\":\"ping\"}\n{\"type\":\"users\"}\n" } else { "ping\nusers\n" });
                if quit {
                    input.push_str("quit\n");
                }
                let case = format!("env {from_env}, quit {quit}, raw {raw}");
                let started = Instant::now();
                let out = run(cmd, &input);
                assert_eq!(out.status.code(), Some(0), "{case}: {}", text(&out));
                assert!(started.elapsed() < Duration::from_secs(10), "{case}: took {:?}", started.elapsed());
                let printed = stdout(&out);
                if raw {
                    assert!(printed.contains("\"type\":\"pong\""), "{case}: {}", text(&out));
                    assert!(printed.contains("\"bob@example.org\""), "{case}: {}", text(&out));
                } else {
                    assert!(printed.contains("pong ("), "{case}: {}", text(&out));
                    assert!(printed.contains("bob <bob@example.org>"), "{case}: {}", text(&out));
                }
                assert!(printed.find("pong").unwrap() < printed.find("bob@example.org").unwrap(), "{case}: order");
            }
        }
    }
    // A refusal after the login: every answer still printed, status 1.
    let out = run(cli(&server, &["--login", "ann"]), "secret\nhistory nobody@example.org\nping\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("pong ("), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown user"), "{}", text(&out));
}

/// Where natter-cli names a user, a username works as well as an email.
#[test]
fn a_username_works_where_an_email_does() {
    let server = Server::start();
    server.user_add("ann@example.org", "ann", "secret");
    server.user_add("bob@example.org", "Bob", "pw");
    let mut bob = logged_in(&server, "bob@example.org", "pw");
    let mut cmd = cli(&server, &["--login", "ann", "send", "bob", "hi", "there"]);
    cmd.env("NATTER_PASSWORD", "secret");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("sent, id"), "{}", text(&out));
    let v = bob.recv();
    assert_eq!(v["details"]["message"], "hi there");
    assert_eq!(v["details"]["from"], "ann@example.org");
    let mut cmd = cli(&server, &["--login", "ann", "send", "nobody", "hi"]);
    cmd.env("NATTER_PASSWORD", "secret");
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named nobody"), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// The interactive prompt, through a pseudo-terminal
// ---------------------------------------------------------------------------------------------

/// natter-cli with a pseudo-terminal as stdin, stdout and stderr; everything it draws is
/// collected from the terminal's other end.
struct Tty {
    child: Child,
    master: std::fs::File,
    /// Our own handle on the terminal's slave side, to read its settings.
    slave: OwnedFd,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Tty {
    fn spawn(server: &Server, args: &[&str]) -> Tty {
        let (mut master_fd, mut slave_fd) = (-1, -1);
        // SAFETY: openpty writes two descriptors we then own.
        let rc = unsafe {
            libc::openpty(&mut master_fd, &mut slave_fd, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are fresh and owned here.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master_fd), OwnedFd::from_raw_fd(slave_fd)) };
        let mut cmd = cli(server, args);
        cmd.env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        let child = cmd.spawn().expect("spawn natter-cli on a pty");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child has exited and the last slave is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Tty { child, master, slave, screen }
    }

    /// Whether the terminal echoes what is typed (off in natter-cli's raw mode).
    fn echoes(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: termios is plain data; tcgetattr fills it from a descriptor we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) }, 0);
        t.c_lflag & libc::ECHO != 0
    }

    /// Waits (at most 10 s) for natter-cli to exit after `what`; returns its status.
    fn wait_exit(&mut self, what: &str) -> std::process::ExitStatus {
        let mut status = None;
        poll_until(Duration::from_secs(10), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("natter-cli did not exit on {what}: {:?}", self.screen()))
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    fn keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits (at most 10 s) until `what` is on screen after byte `from`; returns where it ends.
    fn wait_for(&self, what: &str, from: usize) -> usize {
        let mut end = None;
        poll_until(Duration::from_secs(10), || {
            end = self.screen().get(from..).and_then(|s| s.find(what)).map(|at| from + at + what.len());
            end.is_some()
        });
        end.unwrap_or_else(|| panic!("{what:?} never appeared; screen:\n{:?}", self.screen()))
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn interactive_prompt_shows_messages_while_typing() {
    let server = Server::start();
    server.user_add("ann@example.org", "ann", "secret");
    server.user_add("bob@example.org", "bob", "hunter2");
    let mut tty = Tty::spawn(&server, &[]);

    tty.wait_for("natter> ", 0);
    tty.keys("login ann@example.org\r");
    let at = tty.wait_for("password: ", 0);
    tty.keys("secret\r");
    let at = tty.wait_for("logged in as ann <ann@example.org>", at);
    assert!(!tty.screen().contains("secret"), "the password was echoed: {:?}", tty.screen());
    let at = tty.wait_for("ann> ", at);

    // Half a line typed, then bob's message arrives: it is printed above the prompt and the
    // half line is drawn again below it, untouched.
    tty.keys("send bob@example.org hel");
    let at = tty.wait_for("ann> send bob@example.org hel", at);
    let mut bob = logged_in(&server, "bob@example.org", "hunter2");
    bob.send(&json!({"event":"personal","type":"message","details":{"to":"ann@example.org","message":"ping from bob","time":1}}));
    assert_eq!(bob.recv()["event"], json!("sent"));
    let at = tty.wait_for("bob@example.org\x1b[0m: ping from bob", at);
    let at = tty.wait_for("ann> send bob@example.org hel", at);
    tty.keys("lo\r");
    let m = bob.recv();
    assert_eq!(m["details"]["message"], json!("hello"), "{m}");
    assert_eq!(m["details"]["from"], json!("ann@example.org"));
    let at = tty.wait_for("sent, id ", at);

    // Up arrow brings the line back; two lefts and an insert edit it in the middle.
    tty.keys("\x1b[A\x1b[D\x1b[D!\r");
    let m = bob.recv();
    assert_eq!(m["details"]["message"], json!("hel!lo"), "{m}");
    tty.wait_for("sent, id ", at);

    // A line longer than the terminal (80 columns) scrolls sideways on one row: the screen
    // never holds a wrapped copy of the prompt.
    let long = "x".repeat(150);
    tty.keys("send bob@example.org ");
    let mut at = at;
    for _ in 0..3 {
        tty.keys(&"x".repeat(50));
        at = tty.wait_for("x\r\x1b[", at);
    }
    tty.keys("\r");
    let m = bob.recv();
    assert_eq!(m["details"]["message"], json!(long), "{m}");
    let at = tty.wait_for("sent, id ", at);
    let drawn = tty.screen();
    let mut redraws = 0;
    for redraw in drawn.split("\r\x1b[2K").filter(|r| r.starts_with("ann> send")) {
        // The line as entered is printed whole (and wraps) once Enter is pressed; every
        // redraw of the line being typed ends with a cursor move instead.
        // (The terminal turns "\n" into "\r\n".)
        let end = redraw.find(['\r', '\n']).unwrap_or(redraw.len());
        if redraw[end..].starts_with('\r') && !redraw[end..].starts_with("\r\n") {
            redraws += 1;
            let shown = &redraw[..end];
            assert!(shown.chars().count() < 80, "a redraw wider than the terminal: {shown:?}");
        }
    }
    assert!(redraws >= 3, "the long line was drawn {redraws} times");

    // A line that is not JSON is refused at the prompt, and the connection stays usable
    // (it once went out and left the server waiting for the object's end).
    tty.keys("{not json\r");
    let at = tty.wait_for("not valid JSON: ", at);
    let at = tty.wait_for("; not sent", at);
    tty.keys("ping\r");
    let _ = tty.wait_for("pong (", at);

    // Ctrl-C on an empty line leaves, with status 0.
    tty.keys("\x03");
    let status = tty.wait_exit("Ctrl-C");
    assert_eq!(status.code(), Some(0), "{:?}", tty.screen());
}

#[test]
fn a_prompt_killed_with_sigterm_gives_the_terminal_back() {
    use std::os::unix::process::ExitStatusExt;
    let server = Server::start();
    let mut tty = Tty::spawn(&server, &[]);
    tty.wait_for("natter> ", 0);
    assert!(!tty.echoes(), "the prompt runs the terminal without echo");
    let pid = tty.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tty.wait_exit("SIGTERM");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "it still dies of the signal: {status:?}");
    assert!(tty.echoes(), "echo is back on after SIGTERM");
}
