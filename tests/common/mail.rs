//! Mail as the outbox or an SMTP server holds it: parsing (headers, transfer decoding), the
//! OTP in it, and the outbox of a test server.

use std::path::PathBuf;
use std::time::Duration;

use super::server::Server;
use super::wait::poll_until;

/// How long to wait for an OTP mail to appear.
const MAIL_TIMEOUT: Duration = Duration::from_secs(5);

/// One RFC 5322 message, as the outbox or an SMTP server holds it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    /// Unfolded header lines.
    pub headers: Vec<(String, String)>,
    /// The body after transfer decoding (7bit, quoted-printable or base64).
    pub body: String,
    pub path: Option<PathBuf>,
    pub modified: Option<std::time::SystemTime>,
}

impl Mail {
    pub fn parse(bytes: &[u8]) -> Mail {
        let raw = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
        let (head, body) = match raw.find("\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (&raw[..], ""),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let cte = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Transfer-Encoding"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        let body = if cte.contains("base64") {
            String::from_utf8_lossy(&base64_decode(body)).to_string()
        } else if cte.contains("quoted-printable") {
            qp_decode(body)
        } else {
            body.to_string()
        };
        Mail { raw: raw.clone(), headers, body, path: None, modified: None }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the `To:` header names `email` (case-insensitive).
    pub fn is_to(&self, email: &str) -> bool {
        self.header("To").map(|v| v.to_lowercase().contains(&email.to_lowercase())).unwrap_or(false)
    }

    /// The code from `Your natter verification code is NNNNNN.` (or `password reset code`);
    /// it must be exactly 6 digits.
    pub fn otp(&self) -> Result<String, String> {
        let text = self.body.replace(['\r', '\n'], " ");
        let text = collapse_spaces(&text);
        let keys = ["Your natter verification code is ", "Your natter password reset code is "];
        let (i, key) = keys
            .iter()
            .find_map(|k| text.find(k).map(|i| (i, *k)))
            .ok_or_else(|| format!("body lacks `{}NNNNNN.`", keys[0]))?;
        let rest = &text[i + key.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.len() != 6 {
            return Err(format!("expected exactly 6 digits, found {digits:?}"));
        }
        if !rest[6..].starts_with('.') {
            return Err(format!("the code is not followed by '.': {:?}", &rest[..rest.len().min(12)]));
        }
        Ok(digits)
    }
}

fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_space = false;
    for c in s.chars() {
        if c == ' ' {
            if !prev_space {
                out.push(c);
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
    out
}

fn qp_decode(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() && s.is_char_boundary(i + 3) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s.as_bytes() {
        if let Some(v) = val(c) {
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
    }
    out
}

/// The outbox of a test server (`--mail-outbox DIR/outbox`).
impl Server {
    /// Outbox mails addressed to `email` (case-insensitive), oldest first.
    pub fn mails_for(&self, email: &str) -> Vec<Mail> {
        let mut mails: Vec<Mail> = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.outbox()) else {
            return mails;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mail = Mail::parse(&bytes);
            if mail.is_to(email) {
                let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                mails.push(Mail { path: Some(path), modified: Some(modified), ..mail });
            }
        }
        mails.sort_by_key(|m| m.modified);
        mails
    }

    /// Number of outbox mails addressed to `email`.
    pub fn mail_count(&self, email: &str) -> usize {
        self.mails_for(email).len()
    }

    /// Waits (at most 5 s) for an outbox mail to `email` that no earlier call returned, and
    /// returns the OTP in it. When several new mails exist, the newest one wins (a replaced
    /// OTP makes a second file); all of them count as seen afterwards.
    pub fn wait_otp(&self, email: &str) -> String {
        let mut otp = None;
        let arrived = poll_until(MAIL_TIMEOUT, || {
            let mails = self.mails_for(email);
            let mut seen = self.seen_mail.lock().unwrap();
            let fresh: Vec<&Mail> = mails.iter().filter(|m| !seen.contains(m.path.as_ref().unwrap())).collect();
            let Some(newest) = fresh.last() else { return false };
            otp = Some(newest.otp().unwrap_or_else(|e| {
                panic!("mail {:?} to {email}: {e}\n---- mail ----\n{}\n{}", newest.path, newest.raw, self.tail())
            }));
            for m in &fresh {
                seen.insert(m.path.clone().unwrap());
            }
            true
        });
        assert!(arrived, "no new OTP mail to {email} in {} within 5 s\n{}", self.outbox().display(), self.tail());
        otp.expect("an OTP with the mail")
    }
}
