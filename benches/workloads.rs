//! A short `--spawn` run of every natter-bench workload against a fresh release server, so
//! `cargo bench` shows end-to-end figures next to the micro-benchmarks. The full-size runs
//! and their recorded figures are in BENCHMARKS.md.

use std::process::Command;

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !args.is_empty() && !args.iter().any(|a| "workloads".contains(a.as_str())) {
        return;
    }
    let status = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args([
            "--spawn",
            "--pairs",
            "10",
            "--messages",
            "5000",
            "--receivers",
            "50",
            "--fanout-messages",
            "500",
            "--rates",
            "1000",
            "--seconds",
            "2",
            "--backlog",
            "20000",
            "--clients",
            "100",
            "--idle",
            "1000",
            "--calls",
            "20",
            "--relay-seconds",
            "2",
        ])
        .status()
        .expect("run natter-bench");
    assert!(status.success(), "natter-bench reported errors");
}
