//! `--config FILE`: flags win over the file, unknown keys are errors naming the key, and
//! the example file documents every flag.

mod common;

use common::*;

#[test]
fn the_file_sets_what_flags_leave_open_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("natter.toml");
    std::fs::write(&file, "max-frame = 1024\nauth-timeout = 60\n").unwrap();
    let frame = |len: usize| format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}\n", "x".repeat(len - 27));

    // From the file: a 1,500-byte frame is over the limit.
    let s = Server::start_with(&["--config", file.to_str().unwrap()]);
    let mut c = s.connect();
    c.send_raw(frame(1500).as_bytes());
    assert_eq!(c.recv()["event"], "invalid");
    c.expect_closed();

    // The flag wins over the file.
    let s = Server::start_with(&["--config", file.to_str().unwrap(), "--max-frame", "4096"]);
    let mut c = s.connect();
    c.send_raw(frame(1500).as_bytes());
    assert_eq!(c.recv(), serde_json::json!({"event":"success","type":"pong"}));
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("natter.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax-frames = 10\n").unwrap();
    // In the temp dir with its own --db: were the file accepted, the server would start
    // there (and the 30 s limit would end the test) rather than write ./natter.db.
    let db = dir.path().join("n.db");
    let args = ["--config", file.to_str().unwrap(), "--db", db.to_str().unwrap()];
    let out = natter_in(dir.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key `max-frames`"), "{err}");
    std::fs::write(&file, "listen = [1, 2]\n").unwrap();
    let out = natter_in(dir.path(), &args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`listen`"));
    assert!(!db.exists(), "a refused configuration created the database");
}

#[test]
fn the_example_file_documents_every_flag_and_parses() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/natter.toml")).unwrap();
    // Every commented setting, uncommented, is a valid configuration.
    let uncommented: String = example
        .lines()
        .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ")))
        .map(|l| format!("{l}\n"))
        .collect();
    let help = natter_in(std::env::temp_dir().as_path(), &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for line in help.lines().map(str::trim_start).filter(|l| l.starts_with("--")) {
        let flag = line[2..].split([' ', '=']).next().unwrap();
        if ["help", "version", "config"].contains(&flag) {
            continue;
        }
        assert!(uncommented.contains(&format!("{flag} = ")), "contrib/natter.toml does not document `{flag}`");
    }
    // smtp-url and mail-outbox exclude each other; the outbox is the default, so drop smtp-url.
    let runnable: String =
        uncommented.lines().filter(|l| !l.starts_with("smtp-url")).map(|l| format!("{l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, &runnable).unwrap();
    let db = dir.path().join("n.db");
    let out =
        natter_in(dir.path(), &["--config", file.to_str().unwrap(), "user", "list", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
