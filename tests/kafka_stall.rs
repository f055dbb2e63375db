//! A broker that stalls, against the real broker: `scripts/kafka.sh pause`
//! freezes it (SIGSTOP) for longer than the group's session timeout, so the
//! engine loses its partitions and reads them again from the last commit.
//! It must not exit, and the records it had already processed are replays,
//! never late. A test binary of its own: freezing the broker would disturb
//! the tests of `kafka_broker.rs`, and cargo runs test binaries one at a
//! time.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::broker::*;
use support::setup::*;
use support::*;

/// How long the broker is frozen: well past the session timeout below.
const STALL_S: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stall_sends_nothing_already_processed_to_the_late_topic() {
    let Some(s) = Setup::new("stall").await else {
        return;
    };
    let Some(port) = s.brokers.rsplit(':').next().map(str::to_string) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // The broker's smallest session timeout, so that a short stall loses
    // the partitions as a long one does with the defaults.
    let config = s.config_file_edited(dir.path(), |text| {
        text.replacen(
            "\n[[sources]]",
            "\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n[[sources]]",
            1,
        )
    });

    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 210, SATURATED),
    )
    .await;
    let mut engine = Engine::start(&config);
    wait_committed(&s, 400);
    // The rest arrives just before the stall: the engine is reading,
    // closing windows and committing when the broker freezes.
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(210, 400, SATURATED),
    )
    .await;
    let paused = Command::new("bash")
        .arg(repo().join("scripts/kafka.sh"))
        .args(["pause", &STALL_S.to_string()])
        .env("TELEMINE_KAFKA_PORT", &port)
        .status()
        .expect("scripts/kafka.sh pause");
    if paused.code() == Some(3) {
        eprintln!(
            "skipped: the broker at {} was not started by scripts/kafka.sh, so it cannot be frozen",
            s.brokers
        );
        return;
    }
    assert!(paused.success(), "scripts/kafka.sh pause failed: {paused}");
    let resumed = Instant::now();
    wait_committed(&s, 1440);
    let caught_up = resumed.elapsed();
    assert!(
        engine.child.try_wait().expect("wait").is_none(),
        "telemine exited during the stall"
    );
    let status = engine.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");

    let late = read_topic(
        &s.brokers,
        &s.topic("late"),
        1,
        0,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    assert_eq!(
        late.len(),
        0,
        "records read again after the stall are replays, not late"
    );
    let alerts = s.alerts(2);
    let distinct = distinct(&alerts);
    assert_eq!(summary(&distinct), expected());
    println!(
        "broker frozen {STALL_S} s: every record committed {:.1} s after it went on; 0 late; {} repeated rule rows (at-least-once)",
        caught_up.as_secs_f64(),
        alerts.len() - distinct.len()
    );
}
