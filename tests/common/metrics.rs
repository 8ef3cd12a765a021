//! The server's Prometheus endpoint (`--metrics`): where it listens and what a scrape says.

use super::server::Server;
use std::collections::HashMap;

impl Server {
    /// The metrics URL from the `metrics on http://...` log line.
    pub fn metrics_url(&self) -> String {
        self.log_lines()
            .iter()
            .find_map(|l| l.split("metrics on ").nth(1).map(|u| u.trim().to_owned()))
            .unwrap_or_else(|| panic!("no metrics address in the log\n{}", self.tail()))
    }
}

/// The text of one scrape (with curl, the client an operator would use).
pub fn scrape_text(url: &str) -> String {
    let out =
        std::process::Command::new("curl").args(["-sS", "--max-time", "5", url]).output().expect("curl is installed");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One scrape as series name (with labels) to value; a value that is not a number fails.
pub fn scrape(url: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for line in scrape_text(url).lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        m.insert(name.to_owned(), value.parse().unwrap_or_else(|_| panic!("number in {line}")));
    }
    m
}
