//! The web client in a real browser (PROTOCOL.md section 18): headless chromium over
//! WebDriver against the real server. Two people register with the mailed code, talk,
//! see each other online, type, read, form a group, reload, and survive a server restart
//! with a message sent while it was down arriving once.

mod common;

use common::*;
use std::net::TcpListener;

/// The `conversation` entry, message list item, and so on are found by their text.
fn click_text(b: &Browser, css: &str, text: &str) {
    let (css, text) = (serde_json::to_string(css).unwrap(), serde_json::to_string(text).unwrap());
    b.wait(
        &format!("{text} in {css}"),
        &format!("return [...document.querySelectorAll({css})].some(e => e.innerText.includes({text}));"),
    );
    b.js(&format!("[...document.querySelectorAll({css})].find(e => e.innerText.includes({text})).click();"));
}

/// How many messages in the open conversation say `text`.
fn count_messages(b: &Browser, text: &str) -> u64 {
    let text = serde_json::to_string(text).unwrap();
    b.js(&format!(
        "return [...document.querySelectorAll('#messages li .body')].filter(e => e.innerText === {text}).length;"
    ))
    .as_u64()
    .unwrap_or(0)
}

fn wait_message(b: &Browser, text: &str) {
    let text = serde_json::to_string(text).unwrap();
    b.wait(
        &format!("the message {text}"),
        &format!("return [...document.querySelectorAll('#messages li .body')].some(e => e.innerText === {text});"),
    );
}

fn logged_in_page(b: &Browser) {
    b.wait("the chat view", "return !document.getElementById('chat').hidden && window.natter.state.me !== null;");
}

fn log_in(b: &Browser, name: &str, password: &str) {
    b.wait("the login form", "return !document.getElementById('auth').hidden;");
    b.type_into("#login-form input[name=name]", name);
    b.type_into("#login-form input[name=password]", password);
    b.click("#login-form button");
    logged_in_page(b);
}

fn register(s: &Server, b: &Browser, email: &str, username: &str, password: &str) {
    b.wait("the register form", "return !document.getElementById('auth').hidden;");
    b.type_into("#register-form input[name=email]", email);
    b.type_into("#register-form input[name=username]", username);
    b.type_into("#register-form input[name=password]", password);
    b.click("#register-form button");
    b.wait("the code form", "return !document.getElementById('otp-form').hidden;");
    let otp = s.wait_otp(email);
    b.type_into("#otp-form input[name=otp]", &otp);
    b.click("#otp-form button");
    b.wait("registered", "return document.getElementById('auth-msg').innerText.startsWith('Registered');");
}

fn send(b: &Browser, text: &str) {
    b.type_into("#text", text);
    b.click("#send-form button");
}

#[test]
fn two_people_register_talk_type_read_group_reload_and_survive_a_restart() {
    // A fixed port: the page's origin must survive the restart.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let listen = format!("127.0.0.1:{port}");
    let mut s = Server::start_with(&["--listen", &listen]);
    let url = format!("http://{listen}/");
    let driver = Driver::start();
    let (ann, bob) = (driver.browser(), driver.browser());

    ann.goto(&url);
    // First load, everything the page fetched: the limit is 100 KB.
    ann.wait("the page loaded", "return document.readyState === 'complete';");
    let bytes = ann
        .js("return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
             .reduce((n, e) => n + e.transferSize, 0);")
        .as_f64()
        .unwrap_or(0.0);
    eprintln!("first load: {bytes} bytes transferred");
    assert!(bytes > 10_000.0 && bytes < 100_000.0, "first load {bytes} bytes");
    bob.goto(&url);
    register(&s, &ann, "ann@example.org", "ann", "ann-pw");
    register(&s, &bob, "bob@example.org", "bob", "bob-pw");
    log_in(&ann, "ann", "ann-pw");
    log_in(&bob, "bob@example.org", "bob-pw");

    // ann finds bob in the user list and writes; bob sees it and reads it; ann sees that.
    ann.click("#load-users");
    click_text(&ann, "#users button", "bob");
    send(&ann, "hello bob");
    ann.wait("sent", "return document.querySelector('#messages li.own[data-id]') !== null;");
    click_text(&bob, "#convs button", "ann");
    wait_message(&bob, "hello bob");
    ann.wait("bob's read mark", "return document.querySelector('#messages li.own .state.read') !== null;");

    // Reload: the history is there after logging in again, and now that they are
    // contacts each sees the other online.
    ann.reload();
    log_in(&ann, "ann", "ann-pw");
    bob.reload();
    log_in(&bob, "bob", "bob-pw");
    click_text(&ann, "#convs button", "bob");
    wait_message(&ann, "hello bob");
    ann.wait("bob online", "return document.querySelector('#convs .dot.online') !== null;");
    bob.wait("ann online", "return document.querySelector('#convs .dot.online') !== null;");

    // Typing shows on ann's side while bob types; his message ends it.
    click_text(&bob, "#convs button", "ann");
    bob.type_into("#text", "on my way");
    ann.wait("bob typing", "return document.getElementById('typing').innerText.includes('bob is typing');");
    bob.click("#send-form button");
    wait_message(&ann, "on my way");
    ann.wait("typing over", "return document.getElementById('typing').innerText === '';");
    // What the README shows: a conversation, a read mark, someone online and typing.
    bob.type_into("#text", "see you");
    ann.wait("bob typing again", "return document.getElementById('typing').innerText.includes('bob is typing');");
    let picture = ann.screenshot();
    assert!(picture.starts_with(b"\x89PNG"), "a PNG");
    let _ = std::fs::write(concat!(env!("CARGO_TARGET_TMPDIR"), "/web-client.png"), &picture);

    // A group: created with two prompts, talked in.
    ann.click("#new-group");
    ann.answer_prompt("team");
    ann.answer_prompt("bob@example.org");
    ann.wait("the group open", "return document.getElementById('conv-title').innerText === 'team';");
    send(&ann, "hi team");
    click_text(&bob, "#groups button", "team");
    wait_message(&bob, "hi team");

    // The server goes away; ann writes meanwhile; it comes back on the same port.
    click_text(&ann, "#convs button", "bob");
    click_text(&bob, "#convs button", "ann");
    let status = s.stop();
    assert!(status.success(), "{status:?}");
    ann.wait("offline shown", "return document.getElementById('status').innerText.startsWith('offline');");
    send(&ann, "sent while you were away");
    ann.wait(
        "pending",
        "return [...document.querySelectorAll('#messages li.own .state')].some(e => e.innerText === 'sending…');",
    );
    s.restart_after_stop();
    // Both reconnect by themselves and log in again; the message arrives once, and ann's
    // copy gets its id.
    wait_message(&bob, "sent while you were away");
    ann.wait(
        "the resent message stored",
        "return [...document.querySelectorAll('#messages li.own')].every(li => li.dataset.id);",
    );
    // Anything doubled would have arrived by now with the catch-up or the resend.
    ann.wait("connected again", "return document.getElementById('status').innerText === 'connected';");
    assert_eq!(count_messages(&bob, "sent while you were away"), 1, "not doubled for bob");
    assert_eq!(count_messages(&ann, "sent while you were away"), 1, "not doubled for ann");
    let mut check = s.connect();
    login(&mut check, "bob@example.org", "bob-pw");
    let h = check.request(&serde_json::json!({"type":"history","details":{"with":"ann@example.org","limit":10}}));
    let stored =
        h["details"].as_array().map_or(0, |a| a.iter().filter(|m| m["message"] == "sent while you were away").count());
    assert_eq!(stored, 1, "stored once: {h}");
}
