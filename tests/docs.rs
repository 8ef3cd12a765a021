//! The README's flags table and `natter --help` name the same flags, so the docs cannot
//! drift from the binary.

use std::collections::BTreeSet;
use std::process::Command;

fn long_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let name: String =
            text[i + 2..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-').collect();
        if name.len() > 1 {
            out.insert(name);
        }
    }
    out
}

#[test]
fn readme_flags_table_matches_help() {
    let help = Command::new(env!("CARGO_BIN_EXE_natter")).arg("--help").output().expect("natter --help");
    assert!(help.status.success());
    let mut from_help = long_flags(&String::from_utf8_lossy(&help.stdout));
    for not_server_flags in ["help", "version"] {
        from_help.remove(not_server_flags);
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table_start = readme.find("| flag (env `NATTER_<FLAG>`)").expect("the flags table");
    let table: String = readme[table_start..].lines().take_while(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n");
    // Only the first column names flags; later columns may mention others in passing.
    let first_column: String = table.lines().map(|l| l.split('|').nth(1).unwrap_or("")).collect::<Vec<_>>().join(" ");
    let from_readme = long_flags(&first_column);
    assert_eq!(from_readme, from_help, "README flags table vs natter --help");
}
