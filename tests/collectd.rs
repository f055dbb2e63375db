//! A real collectd (Debian's `collectd-core`) writing to the real broker
//! with its `write_kafka` plugin (`Format JSON`), read back through a
//! `format = "collectd"` source: every (dsname, value) of the cpu, memory
//! and load plugins is a row, and nothing is a dead letter.
//!
//! Skips with a message when the broker (`TELEMINE_TEST_BROKERS`) or the
//! `collectd` binary is absent; `TELEMINE_REQUIRE_BROKER=1` /
//! `TELEMINE_REQUIRE_PEERS=1` make either absence a failure.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use support::broker::{brokers, ends};
use telemine::config::Config;
use telemine_codec::decode::decoder_for;
use telemine_connectors::kafka::{
    KafkaClientConfig, KafkaSource, KafkaSourceOptions, SourceEvent, SourceSpec, create_topics,
};

/// The collectd binary, or `None` (with a message) to skip.
fn collectd() -> Option<PathBuf> {
    let found = ["/usr/sbin/collectd", "/usr/bin/collectd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("TELEMINE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            panic!(
                "TELEMINE_REQUIRE_PEERS=1 but collectd is not installed: apt-get install collectd-core"
            );
        }
        eprintln!("skipped: collectd is not installed (apt-get install collectd-core)");
    }
    found
}

/// collectd's config: cpu, memory and load every second, written as JSON
/// to `topic` by write_kafka.
fn collectd_conf(dir: &Path, brokers: &str, topic: &str) -> PathBuf {
    let conf = format!(
        r#"Hostname "telemine-test"
FQDNLookup false
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval 1
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin write_kafka
<Plugin write_kafka>
  Property "metadata.broker.list" "{brokers}"
  <Topic "{topic}">
    Format JSON
  </Topic>
</Plugin>
"#,
        dir = dir.display()
    );
    let path = dir.join("collectd.conf");
    std::fs::write(&path, conf).expect("collectd.conf");
    path
}

/// Stops the collectd child when the test ends, however it ends.
struct Collectd(Child);

impl Drop for Collectd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_text(brokers: &str, topic: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{brokers}"
group_id = "{topic}.group"
instance_id = ""

[[sources]]
name = "collectd"
topic = "{topic}"
format = "collectd"
columns = ["time timestamp", "host string", "plugin string", "plugin_instance string",
           "type string", "type_instance string", "dsname string", "dstype string",
           "value double", "interval double"]
event_time = "time"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_collectd_over_write_kafka_decodes_with_no_dead_letter() {
    let Some(brokers) = brokers() else { return };
    let Some(collectd) = collectd() else { return };
    let topic = support::unique("collectd");
    let client = KafkaClientConfig::new(brokers.clone());
    create_topics(&client, &[(topic.as_str(), 1)])
        .await
        .expect("create the collectd topic");
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = collectd_conf(dir.path(), &brokers, &topic);
    let child = Command::new(&collectd)
        .arg("-f")
        .arg("-C")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start collectd");
    let mut collectd = Collectd(child);
    // cpu reports from its second reading on: wait for a few intervals'
    // worth of messages (bounded: collectd or the broker may be broken).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends(&brokers, &topic, 1)[0] < 40 {
        assert!(
            Instant::now() < deadline,
            "collectd wrote {} messages to {topic} in 60 s",
            ends(&brokers, &topic, 1)[0]
        );
        if let Ok(Some(status)) = collectd.0.try_wait() {
            panic!(
                "collectd exited early ({status}); config {}",
                conf.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(collectd);

    let config =
        Config::parse(Path::new("collectd.toml"), &config_text(&brokers, &topic)).expect("config");
    let def = config.source_defs().expect("sources").remove(0);
    let decoder =
        decoder_for(&def.format, &def.influx, &def.schema, 1024, &def.limits).expect("decoder");
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let source = KafkaSource::start(
        &config.kafka,
        KafkaSourceOptions {
            max_batch_records: 1024,
            linger: Duration::from_millis(20),
            stop_at_end: true,
            alone: None,
        },
        vec![SourceSpec {
            topic: topic.clone(),
            decoders: vec![decoder],
            fed_by_engine: false,
        }],
        tx,
    )
    .expect("start the source");
    let (mut batches, mut dead) = (Vec::new(), Vec::new());
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = rx.recv().await {
            match event {
                SourceEvent::Batch { batch, dead: d, .. } => {
                    batches.extend(batch);
                    dead.extend(d);
                }
                SourceEvent::End => return,
                SourceEvent::Failed(e) => panic!("source failed: {e}"),
                _ => {}
            }
        }
    })
    .await;
    source.stop();
    source.join();
    assert!(read.is_ok(), "the topic was not read to its end in 60 s");

    assert!(dead.is_empty(), "dead letters: {dead:?}");
    let all: RecordBatch = concat_batches(def.schema.batch_schema(), &batches).expect("one schema");
    assert!(all.num_rows() >= 40, "{} rows", all.num_rows());
    for column in [
        "time", "host", "plugin", "type", "dsname", "dstype", "interval",
    ] {
        let c = all.column_by_name(column).expect("declared");
        assert_eq!(c.null_count(), 0, "column {column} has NULLs");
    }
    let text = |name: &str, i: usize| {
        all.column_by_name(name)
            .expect("declared")
            .as_string::<i32>()
            .value(i)
            .to_string()
    };
    let mut seen = BTreeSet::new();
    for i in 0..all.num_rows() {
        seen.insert((text("plugin", i), text("dsname", i)));
        assert_eq!(text("host", i), "telemine-test");
    }
    eprintln!(
        "collectd: {} rows from {} messages, 0 dead letters; (plugin, dsname) seen: {seen:?}",
        all.num_rows(),
        ends(&brokers, &topic, 1)[0]
    );
    for want in [
        ("load", "shortterm"),
        ("load", "midterm"),
        ("load", "longterm"),
        ("memory", "value"),
        ("cpu", "value"),
    ] {
        assert!(
            seen.contains(&(want.0.to_string(), want.1.to_string())),
            "no {want:?} row in {seen:?}"
        );
    }
    // Memory and load readings are numbers (collectd writes no NaN for
    // them), and the event time is the reading's, not 1970.
    let value = all
        .column_by_name("value")
        .expect("value")
        .as_primitive::<arrow::datatypes::Float64Type>();
    let time = all
        .column_by_name("time")
        .expect("time")
        .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    for i in 0..all.num_rows() {
        if text("plugin", i) != "cpu" {
            assert!(value.is_valid(i), "row {i} has no value");
        }
        // After 2020-09-13 (1.6e12 ms): read as seconds, not milliseconds.
        assert!(
            time.value(i) > 1_600_000_000_000,
            "row {i} dated {}",
            time.value(i)
        );
    }
}
