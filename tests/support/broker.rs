//! A real Kafka broker for integration tests, named by
//! `TELEMINE_TEST_BROKERS` (set by `scripts/test.sh`, which starts one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker to test against, or `None` (with a message) to skip. With
/// `TELEMINE_REQUIRE_BROKER=1` a missing broker fails the test instead.
pub fn brokers() -> Option<String> {
    match std::env::var("TELEMINE_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("TELEMINE_REQUIRE_BROKER").is_ok_and(|v| v == "1") => {
            panic!(
                "TELEMINE_REQUIRE_BROKER=1 but TELEMINE_TEST_BROKERS is not set: run scripts/test.sh"
            )
        }
        _ => {
            eprintln!(
                "skipped: no Kafka broker (run scripts/test.sh, which starts one, or set TELEMINE_TEST_BROKERS)"
            );
            None
        }
    }
}

/// Produces keyed records in order; returns each one's (partition, offset).
pub async fn produce(brokers: &str, topic: &str, records: &[(String, String)]) -> Vec<(i32, i64)> {
    produce_with(brokers, topic, records, &[]).await
}

/// [`produce`] with producer properties of the test's own (compression,
/// for example).
pub async fn produce_with(
    brokers: &str,
    topic: &str,
    records: &[(String, String)],
    properties: &[(&str, &str)],
) -> Vec<(i32, i64)> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().expect("test producer");
    let mut futures = Vec::with_capacity(records.len());
    for (k, v) in records {
        let f = producer
            .send_result(FutureRecord::to(topic).key(k).payload(v))
            .map_err(|(e, _)| e)
            .expect("enqueue test record");
        futures.push(f);
    }
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        let delivery = f
            .await
            .expect("delivery not cancelled")
            .expect("test record delivered");
        out.push((delivery.partition, delivery.offset));
    }
    out
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
}

/// Reads `topic` (`partitions` partitions) from the beginning until at
/// least `min` messages arrived and then `quiet` passed without another, or
/// `timeout` passed.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    min: usize,
    quiet: Duration,
    timeout: Duration,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("test reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < timeout && !(out.len() >= min && last.elapsed() >= quiet) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
                partition: m.partition(),
            });
            last = Instant::now();
        }
    }
    out
}

/// The group's committed (offset, metadata) per partition of `topic`.
pub fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(i32, Option<i64>, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    // A group the broker has just met may answer "not coordinator" for a
    // moment: ask again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let list = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(list) => break list,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("committed offsets: {e}; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets: {e}"),
        }
    };
    list.elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), o, e.metadata().to_string())
        })
        .collect()
}

/// High watermark of each partition.
pub fn ends(brokers: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("client");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}
