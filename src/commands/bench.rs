//! `telemine bench`: the engine's throughput as a share of the ceiling.
//!
//! On a real broker: produce `records` generated JSON telemetry records to a
//! fresh topic, then measure in one run (a) a bare rdkafka consumer that
//! only counts messages — the physical limit of draining that topic here —
//! and (b) the whole engine (decode, windows, the default views and rules,
//! alert production, commits) over the same topic. Both rates are taken
//! from the first record received to the last, so group-join time counts
//! for neither.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_connectors::generator::{Generator, GeneratorConfig, Stream};
use telemine_connectors::kafka::{KafkaClientConfig, create_topics};

pub struct BenchOptions {
    pub brokers: String,
    pub records: u64,
    pub partitions: i32,
    pub config: PathBuf,
}

pub async fn bench(o: BenchOptions) -> anyhow::Result<ExitCode> {
    let Some((mut cfg, sql)) = super::load(&o.config, None).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let run_id = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let topic = format!("telemine.bench.{run_id}.telemetry");
    let client = KafkaClientConfig::new(o.brokers.clone());
    for s in &mut cfg.sources {
        s.topic = format!("telemine.bench.{run_id}.{}", s.name.get_ref());
    }
    cfg.sinks.alerts_topic = format!("telemine.bench.{run_id}.alerts");
    cfg.sinks.dead_letter_topic = format!("telemine.bench.{run_id}.dead-letter");
    cfg.sinks.late_topic = format!("telemine.bench.{run_id}.late");
    let mut topics: Vec<(String, i32)> = cfg
        .sources
        .iter()
        .map(|s| {
            (
                s.topic.clone(),
                if s.topic == topic { o.partitions } else { 1 },
            )
        })
        .collect();
    topics.push((cfg.sinks.alerts_topic.clone(), 3));
    topics.push((cfg.sinks.dead_letter_topic.clone(), 1));
    topics.push((cfg.sinks.late_topic.clone(), 1));
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    create_topics(&client, &refs).await?;

    telemine_observe::note!(
        "bench: producing {} JSON telemetry records to {topic} ({} partitions)",
        o.records,
        o.partitions
    );
    let (brokers, records, t) = (o.brokers.clone(), o.records, topic.clone());
    let (bytes, produce_secs) =
        tokio::task::spawn_blocking(move || produce(&brokers, &t, records)).await??;
    telemine_observe::note!(
        "bench: produced {:.0} MB in {produce_secs:.1} s",
        bytes as f64 / 1e6
    );

    telemine_observe::note!("bench: (a) bare consumer draining the topic");
    let (brokers, t, group) = (
        o.brokers.clone(),
        topic.clone(),
        format!("telemine-bench-bare-{run_id}"),
    );
    let bare_secs =
        tokio::task::spawn_blocking(move || drain_bare(&brokers, &t, &group, records)).await??;
    let bare_rate = records as f64 / bare_secs;
    telemine_observe::note!("bench: bare consumer: {bare_rate:.0} records/s ({bare_secs:.2} s)");

    cfg.kafka = client.clone();
    let engine = |label: &str, sql: telemine_sql::SqlSet, without_models: bool| {
        let mut cfg = cfg.clone();
        cfg.kafka.group_id = format!("telemine-bench-engine-{label}-{run_id}");
        async move {
            let options = RunOptions {
                stop_at_end: true,
                without_models,
                ..Default::default()
            };
            let summary = run_pipeline(&cfg, sql, options, std::future::pending::<Stop>()).await?;
            let secs = summary.busy.as_secs_f64().max(1e-9);
            Ok::<_, anyhow::Error>((summary.records as f64 / secs, secs, summary))
        }
    };
    let models: Vec<String> = cfg
        .models
        .iter()
        .map(|m| {
            format!(
                "{} ({} on {})",
                m.name.get_ref(),
                m.kind.get_ref(),
                m.view.get_ref()
            )
        })
        .collect();
    telemine_observe::note!(
        "bench: (b) the engine end to end, the config's views, rules and models ({})",
        models.join(", ")
    );
    let (with_rate, with_secs, with) = engine("models", sql, false).await?;
    telemine_observe::note!(
        "bench: engine with models: {with_rate:.0} records/s ({with_secs:.2} s, {} alerts)",
        with.alerts
    );
    telemine_observe::note!("bench: (c) the same engine without the models (scores NULL)");
    let Some((_, sql)) = super::load(&o.config, None).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let (bare_engine_rate, bare_engine_secs, without) = engine("no-models", sql, true).await?;
    telemine_observe::note!(
        "bench: engine without models: {bare_engine_rate:.0} records/s ({bare_engine_secs:.2} s, {} alerts)",
        without.alerts
    );

    telemine_observe::out!("| measure | value |");
    telemine_observe::out!("|---|---|");
    telemine_observe::out!("| records | {records} |");
    telemine_observe::out!(
        "| payload bytes | {bytes} ({:.0} B/record) |",
        bytes as f64 / records as f64
    );
    telemine_observe::out!("| partitions | {} |", o.partitions);
    telemine_observe::out!(
        "| (a) bare rdkafka consumer | {bare_rate:.0} records/s ({bare_secs:.2} s) |"
    );
    telemine_observe::out!(
        "| (b) telemine engine end to end, with models ({}) | {with_rate:.0} records/s ({with_secs:.2} s) |",
        models.join(", ")
    );
    telemine_observe::out!(
        "| (c) telemine engine end to end, without models | {bare_engine_rate:.0} records/s ({bare_engine_secs:.2} s) |"
    );
    telemine_observe::out!("| ratio (b)/(a) | {:.2} |", with_rate / bare_rate);
    telemine_observe::out!("| ratio (c)/(a) | {:.2} |", bare_engine_rate / bare_rate);
    telemine_observe::out!(
        "| model stage cost, 1 − (b)/(c) | {:.1}% |",
        100.0 * (1.0 - with_rate / bare_engine_rate)
    );
    telemine_observe::out!(
        "| engine records decoded / alerts (b), (c) | {} / {}, {} / {} |",
        with.records,
        with.alerts,
        without.records,
        without.alerts
    );
    Ok(ExitCode::SUCCESS)
}

fn produce(brokers: &str, topic: &str, records: u64) -> anyhow::Result<(u64, f64)> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the benchmark producer")?;
    let mut generator = Generator::new(GeneratorConfig {
        late_fraction: 0.0,
        anomalies: true,
        duration_ms: (records as i64 / 512 + 1) * 1000,
        ..Default::default()
    });
    let (mut n, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while n < records {
        generator.emit_second(&mut |stream, key, payload| {
            if stream != Stream::Telemetry || n >= records {
                return;
            }
            let mut record = BaseRecord::to(topic).key(key).payload(payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            n += 1;
            bytes += payload.len() as u64;
        });
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the benchmark records")?;
    Ok((bytes, start.elapsed().as_secs_f64()))
}

fn drain_bare(brokers: &str, topic: &str, group: &str, records: u64) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the bare consumer")?;
    consumer
        .subscribe(&[topic])
        .context("subscribing the bare consumer")?;
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < records {
        if Instant::now() > deadline {
            anyhow::bail!("the bare consumer read only {n} of {records} records in 10 minutes");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                // Touch the payload as any consumer would.
                std::hint::black_box(m.payload().map(<[u8]>::len));
                n += 1;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "bare consumer error"),
            None => {}
        }
    }
    Ok(first
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-9))
}
