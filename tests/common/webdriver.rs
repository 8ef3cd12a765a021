//! A real browser for the web client's tests: Debian's `chromium` driven by its
//! `chromedriver` over the W3C WebDriver protocol (plain HTTP with JSON, so a blocking
//! client of 100 lines does it, without an async runtime in the test build).
//!
//! The driver is started on a free port and killed on drop; each `Browser` is one headless
//! session, deleted on drop. A missing `chromedriver` fails the test: CI installs it.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian: apt-get install chromium chromium-driver; .ci/run installs it)");
        let d = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.call("GET", "/status", None).map(|v| v["ready"] != true).unwrap_or(true) {
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// One WebDriver call; `Err` carries the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open: the body ends at its Content-Length.
        let (mut raw, mut buf) = (Vec::new(), [0u8; 16384]);
        let body = loop {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("chromedriver closed the connection".into());
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
            let len = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .ok_or("no Content-Length")?;
            if body.len() >= len {
                break body.to_owned();
            }
        };
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match v["value"].get("error") {
            Some(err) => Err(format!("{err}: {}", v["value"]["message"])),
            None => Ok(v["value"].clone()),
        }
    }

    /// A new headless browser window.
    pub fn browser(&self) -> Browser<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,800"]},
            // Prompts stay open until the test answers them.
            "unhandledPromptBehavior": "ignore"
        }}});
        let v = self.call("POST", "/session", Some(&caps)).expect("a browser session");
        let id = v["sessionId"].as_str().expect("session id").to_owned();
        Browser { driver: self, session: format!("/session/{id}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Browser<'_> {
    pub fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let body = (method == "POST").then_some(&body);
        self.driver.call(method, &format!("{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url})).expect("navigate");
    }

    pub fn reload(&self) {
        self.call("POST", "/refresh", json!({})).expect("reload");
    }

    fn element(&self, css: &str) -> String {
        let v = self
            .call("POST", "/element", json!({"using": "css selector", "value": css}))
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("{css}: {v}")).to_owned()
    }

    /// Types `text` into the element (as keystrokes: input events fire).
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/value"), json!({"text": text}))
            .unwrap_or_else(|e| panic!("{css}: {e}"));
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), json!({})).unwrap_or_else(|e| panic!("{css}: {e}"));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": script, "args": []}))
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Answers the open `prompt()` with `text`.
    pub fn answer_prompt(&self, text: &str) {
        wait_for(Duration::from_secs(10), "a prompt", || self.call("GET", "/alert/text", json!(null)).is_ok());
        self.call("POST", "/alert/text", json!({"text": text})).expect("prompt text");
        self.call("POST", "/alert/accept", json!({})).expect("prompt accept");
    }

    /// Waits until `script` returns true.
    pub fn wait(&self, what: &str, script: &str) {
        wait_for(Duration::from_secs(20), what, || self.js(script) == Value::Bool(true));
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        let css = serde_json::to_string(css).unwrap_or_default();
        self.js(&format!("const e = document.querySelector({css}); return e ? e.innerText : '';"))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", json!(null)).expect("screenshot");
        decode_base64(v.as_str().expect("base64"))
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.driver.call("DELETE", &self.session, None);
    }
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(val).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &s)| n | (u32::from(s) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
