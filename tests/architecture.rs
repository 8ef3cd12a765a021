//! Invariants of the code's layout, checked on the source text (as rust-analyzer does).
//! They keep the core pure and serde in one place; see ARCHITECTURE.md.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may do what code may not).
fn code(p: &Path) -> String {
    if p.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = fs::read_to_string(p).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn src(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(rel)
}

#[test]
fn the_pure_modules_never_touch_io_threads_or_the_clock() {
    let mut pure = rust_files(&src("chat"));
    pure.extend(["framing.rs", "bytescan.rs", "timer_wheel.rs"].map(src));
    pure.extend(rust_files(&src("protocol")));
    // natter-cli's conversation, commands, editor and rendering: the loop in its main.rs
    // and term.rs do all its I/O.
    pure.extend(["command.rs", "editor.rs", "render.rs", "session.rs"].map(|f| src("bin/natter-cli").join(f)));
    let forbidden = ["mio::", "std::net::Tcp", "std::net::Udp", "std::thread", "Instant::now", "SystemTime::now"];
    for f in pure {
        let c = code(&f);
        for word in forbidden {
            assert!(!c.contains(word), "{} names {word}", f.display());
        }
    }
}

#[test]
fn only_the_protocol_module_uses_serde() {
    for f in rust_files(&src("")) {
        // The load generator is a client, not the server.
        if f.starts_with(src("protocol")) || f.starts_with(src("bin")) {
            continue;
        }
        let c = code(&f);
        for word in ["serde::", "serde_json::", "use serde"] {
            assert!(!c.contains(word), "{} uses serde outside src/protocol", f.display());
        }
    }
}

#[test]
fn only_the_net_module_uses_mio() {
    for f in rust_files(&src("")) {
        if f.starts_with(src("net")) || f.starts_with(src("bin")) {
            continue;
        }
        assert!(!code(&f).contains("mio::"), "{} uses mio outside src/net", f.display());
    }
}

/// Every "PROTOCOL.md section N" (or "sections N, M and K", or "§N") in the code and the
/// tests names a section that the repository's PROTOCOL.md has, so a citation always finds
/// its place; and the sections are numbered in order.
#[test]
fn every_cited_protocol_section_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protocol = fs::read_to_string(root.join("PROTOCOL.md")).unwrap();
    let headers: Vec<u32> = protocol
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert!(headers.len() >= 12, "PROTOCOL.md has numbered sections: {headers:?}");
    assert!(headers.windows(2).all(|w| w[0] < w[1]), "sections out of order: {headers:?}");
    let mut files = rust_files(&root.join("src"));
    files.extend(rust_files(&root.join("tests")));
    files.extend(rust_files(&root.join("benches")));
    let mut cited = 0;
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for (at, _) in text.match_indices("PROTOCOL.md") {
            let rest = text[at + "PROTOCOL.md".len()..].trim_start();
            let numbers = if let Some(r) = rest.strip_prefix("sections ").or_else(|| rest.strip_prefix("section ")) {
                r
            } else if let Some(r) = rest.strip_prefix('§') {
                r
            } else {
                continue;
            };
            // "2, 4 and 10", "9 and 12,", "1": numbers joined by commas and "and".
            let list: String = numbers.chars().take_while(|c| c.is_ascii_digit() || " ,and".contains(*c)).collect();
            for n in list.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()) {
                let n: u32 = n.parse().unwrap();
                cited += 1;
                assert!(headers.contains(&n), "{} cites PROTOCOL.md section {n}, which it does not have", f.display());
            }
        }
    }
    assert!(cited > 20, "only {cited} citations found: the scan is broken");
}

/// Every document a comment cites by name (`PROTOCOL.md`, `FORMAT.md`, `BENCHMARKS.md`...)
/// is in the repository, so no citation sends a reader to a file they do not have.
#[test]
fn every_cited_document_is_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = rust_files(&root.join("src"));
    files.extend(rust_files(&root.join("tests")));
    files.extend(rust_files(&root.join("benches")));
    let mut cited = std::collections::BTreeSet::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for (at, _) in text.match_indices(".md") {
            let name: String = text[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.len() >= 3 {
                cited.insert((format!("{name}.md"), f.clone()));
            }
        }
    }
    assert!(cited.iter().any(|(n, _)| n == "FORMAT.md"), "the scan is broken: {cited:?}");
    for (name, f) in &cited {
        assert!(root.join(name).is_file(), "{} cites {name}, which the repository does not have", f.display());
    }
}

/// The count of messages pending delivery reads one index range per account (a second for
/// a million): only the checkpoint thread, on its own connection, may run it; a metrics
/// scrape on the loop once did, and stalled every client for as long.
#[test]
fn only_the_background_thread_counts_pending_messages_over_every_account() {
    for f in rust_files(&src("")) {
        let c = code(&f);
        let allowed = f.ends_with("net/checkpointer.rs") || f.ends_with("store/mod.rs");
        for word in ["pending_offline(", "PENDING_OFFLINE_SQL"] {
            assert!(allowed || !c.contains(word), "{} runs {word} (on the loop?)", f.display());
        }
    }
}
