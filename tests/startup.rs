//! Start-up without a reachable broker (no broker needed): `run` never
//! alerts without its silences and saved alerting state. It waits for
//! them, saying why, and ends with an error after
//! `alerting.startup_timeout` — classified as retryable, which the binary
//! reports with exit code 75, never as a bug; a stop while it waits ends
//! it at once.

mod support;

use std::time::Duration;

use support::*;
use telemine::config::Config;
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_sql::SqlSet;
use telemine_types::error::ErrorClass;

/// A config whose brokers are a port where nothing listens.
async fn unreachable(startup_timeout: &str) -> (Config, SqlSet) {
    let text = config_text("127.0.0.1:9", "g", "t", &repo().join("sql")).replace(
        "[alerting]\n",
        &format!("[alerting]\nstartup_timeout = \"{startup_timeout}\"\n"),
    );
    load_config(&text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_silences_and_state_run_ends_with_an_error_not_a_silent_start() {
    let (config, sql) = unreachable("1s").await;
    let ended = tokio::time::timeout(
        Duration::from_secs(300),
        run_pipeline(
            &config,
            sql,
            RunOptions::default(),
            std::future::pending::<Stop>(),
        ),
    )
    .await
    .expect("it ends");
    let err = ended.expect_err("no start without the silences");
    assert_eq!(
        err.class(),
        ErrorClass::Retryable,
        "an unreachable broker may come back: {err}"
    );
    let why = err.to_string();
    assert!(why.contains("cannot read the silences"), "{why}");
    assert!(why.contains("127.0.0.1:9"), "names the brokers: {why}");
    assert!(
        why.contains("startup_timeout"),
        "says what to change: {why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_it_waits_for_the_brokers_ends_the_run() {
    let (config, sql) = unreachable("1h").await;
    let stop = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Stop::Now
    };
    let ended = tokio::time::timeout(
        Duration::from_secs(300),
        run_pipeline(&config, sql, RunOptions::default(), stop),
    )
    .await
    .expect("the stop is honoured while it waits");
    let summary = ended.expect("a clean stop");
    assert_eq!(summary.records, 0);
}

#[test]
fn the_binary_exits_75_when_the_brokers_stay_unreachable_and_never_blames_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("telemine.toml");
    let text = config_text("127.0.0.1:9", "g", "t", &repo().join("sql"))
        .replace("[alerting]\n", "[alerting]\nstartup_timeout = \"1s\"\n");
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_telemine"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run telemine");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("running again later may succeed"),
        "{stderr}"
    );
    assert!(!stderr.contains("a bug in telemine"), "{stderr}");
}
