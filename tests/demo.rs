//! The README's first command, `telemine demo`, end to end on the embedded
//! mock cluster: every generated record is processed (the mock cluster
//! drops the oldest records of a partition, so the generator must not run
//! ahead of the engine's assignment), and the injected anomaly is found.

use std::process::Command;

/// The number after `word` in `line` ("produced 310800 records").
fn number_after(line: &str, word: &str) -> Option<u64> {
    let rest = &line[line.find(word)? + word.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_demo_processes_every_record_it_generates_and_finds_the_anomaly() {
    let out = Command::new(env!("CARGO_BIN_EXE_telemine"))
        .args(["demo", "--seconds", "10"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("telemine demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("demo: produced"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let produced = number_after(line, "produced").expect("produced count");
    let processed = number_after(line, "processed").expect("processed count");
    assert!(produced > 0, "{line}");
    assert_eq!(processed, produced, "every record is processed: {line}");
    assert!(
        stderr.contains("recall 1.00"),
        "the injected anomaly is detected:\n{stderr}"
    );
}
