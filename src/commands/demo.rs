//! `telemine demo`: the whole pipeline on an embedded Kafka, with no set-up.
//!
//! librdkafka's mock cluster runs in-process. A generator thread produces
//! telemetry and market data to it faster than real time, while the engine
//! consumes through the same Kafka source code `run` uses. When the
//! generator is done the engine drains the topics and closes every window;
//! a reader consumes the alerts topic and prints each notification (an
//! Alertmanager webhook payload) as one JSON
//! line. The mock cluster keeps only the newest part of each partition,
//! which is why the engine consumes while the generator produces.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use telemine::matching::{episodes, score};
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_alerting::payload::Payload;
use telemine_connectors::generator::{Generator, GeneratorConfig, Stream};
use telemine_connectors::kafka::KafkaClientConfig;
use telemine_observe::metrics::Metrics;

pub struct DemoOptions {
    pub seconds: u64,
    pub speed: u64,
    pub config: PathBuf,
    pub sql: Option<PathBuf>,
    pub seed: u64,
    pub device: Option<String>,
}

const ALERT_PARTITIONS: i32 = 3;
const TELEMETRY_PARTITIONS: i32 = 6;
const MARKET_PARTITIONS: i32 = 2;
/// How long the generator waits for the engine to be assigned its
/// partitions (a consumer joining the mock cluster's group took ~9 s).
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(60);

pub async fn demo(o: DemoOptions) -> anyhow::Result<ExitCode> {
    let Some((mut cfg, sql)) = super::load(&o.config, o.sql.as_deref()).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let topic_of = |name: &str| {
        cfg.sources
            .iter()
            .find(|s| s.name.get_ref() == name)
            .map(|s| s.topic.clone())
            .ok_or_else(|| {
                anyhow!(
                    "the demo needs a source named `{name}` in {}",
                    o.config.display()
                )
            })
    };
    let (telemetry, market) = (topic_of("telemetry")?, topic_of("market")?);

    let cluster = MockCluster::new(1).context("starting the embedded Kafka mock cluster")?;
    for (topic, partitions) in [
        (telemetry.as_str(), TELEMETRY_PARTITIONS),
        (market.as_str(), MARKET_PARTITIONS),
        (cfg.sinks.alerts_topic.as_str(), ALERT_PARTITIONS),
        (cfg.sinks.dead_letter_topic.as_str(), 1),
        (cfg.sinks.late_topic.as_str(), 1),
        (cfg.alerting.silences_topic.as_str(), 1),
        (cfg.alerting.state_topic.as_str(), 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    if let Some(device) = &o.device {
        device
            .parse::<telemine_model::DeviceChoice>()
            .map_err(|e| anyhow!("--device {device}: {e}"))?;
        for m in &mut cfg.models {
            m.device = device.clone();
        }
    }
    let bootstrap = cluster.bootstrap_servers();
    cfg.kafka = KafkaClientConfig::new(bootstrap.clone());
    cfg.kafka.group_id = "telemine-demo".into();
    let relay = telemine::runtime::relay_topic(&cfg);
    cluster
        .create_topic(&relay, 1, 1)
        .with_context(|| format!("creating topic {relay}"))?;

    let duration_ms = (o.seconds * o.speed * 1000) as i64;
    let generator = Generator::new(GeneratorConfig {
        duration_ms,
        seed: o.seed,
        ..Default::default()
    });
    let anomalies = generator.anomalies().to_vec();
    telemine_observe::note!(
        "demo: embedded Kafka at {bootstrap}; generating {} hosts + market ticks for {}s at {}x real time ({} min of event time, {} anomalies injected)",
        generator.hosts(),
        o.seconds,
        o.speed,
        duration_ms / 60_000,
        anomalies.len()
    );

    // The engine, exactly as `run` starts it, told to drain when the
    // generator is done.
    let metrics = Arc::new(Metrics::default());
    // The config's `[http] listen`, as `run` serves it: the live page and
    // /metrics while the demo runs. A port taken is no reason to stop it.
    let server = match telemine::http::HttpServer::start(&cfg, metrics.clone()).await {
        Ok(Some(server)) => {
            telemine_observe::note!(
                "demo: live page at http://{}/ (metrics at /metrics) while the demo runs",
                server.addr
            );
            Some(server)
        }
        Ok(None) => None,
        Err(e) => {
            telemine_observe::note!("demo: no HTTP server: {e}");
            None
        }
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions {
        stop_at_end: false,
        metrics: Some(metrics.clone()),
        ..RunOptions::default()
    };
    let engine_cfg = cfg.clone();
    let engine = tokio::spawn(async move {
        let stop = async move {
            let _ = done_rx.await;
            Stop::Drain
        };
        run_pipeline(&engine_cfg, sql, options, stop).await
    });

    // The reader: alerts read back from the alerts topic, printed as lines.
    let reader_stop = Arc::new(AtomicBool::new(false));
    let read_count = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, count, topic, bootstrap) = (
            reader_stop.clone(),
            read_count.clone(),
            cfg.sinks.alerts_topic.clone(),
            bootstrap.clone(),
        );
        std::thread::spawn(move || read_alerts(&bootstrap, &topic, &stop, &count))
    };

    // The mock cluster keeps only the newest part of each partition: the
    // generator starts once the engine reads, so that no record is gone
    // before it is read.
    let wanted = (TELEMETRY_PARTITIONS + MARKET_PARTITIONS) as u64;
    let deadline = Instant::now() + ASSIGNMENT_WAIT;
    while (metrics.partitions_assigned.get().max(0) as u64) < wanted {
        if engine.is_finished() {
            break;
        }
        if Instant::now() >= deadline {
            telemine_observe::note!(
                "demo: the engine was not assigned its partitions within {} s; generating anyway (the oldest records may be gone before they are read)",
                ASSIGNMENT_WAIT.as_secs()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The generator, paced to `speed` event seconds per wall second.
    let (t_topic, m_topic, gen_bootstrap) = (telemetry.clone(), market.clone(), bootstrap.clone());
    let (seconds, speed) = (o.seconds, o.speed);
    let produced = tokio::task::spawn_blocking(move || {
        produce(
            generator,
            &gen_bootstrap,
            &t_topic,
            &m_topic,
            seconds,
            speed,
        )
    })
    .await??;
    let _ = done_tx.send(());
    let summary = engine.await.context("the engine task failed")??;
    if let Some(server) = server {
        server.stop().await;
    }

    // Let the reader catch up with every alert the engine produced.
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_count.load(Ordering::SeqCst) < summary.notifications && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader_stop.store(true, Ordering::SeqCst);
    let payloads = reader
        .join()
        .map_err(|_| anyhow!("the alert reader panicked"))??;
    // The default views' windows are one minute long.
    let alerts = episodes(&payloads, 60_000);
    let s = score(&alerts, &anomalies);
    let secs = summary.busy.as_secs_f64().max(1e-9);
    telemine_observe::note!(
        "demo: produced {produced} records; engine processed {} events ({} dead letters, {} late) in {secs:.1} s: {:.0} events/s (paced by the generator; `telemine bench` measures capacity)",
        summary.records,
        summary.dead_letters,
        summary.late,
        summary.records as f64 / secs
    );
    telemine_observe::note!(
        "demo: {} rule rows raised {} alerts; {} notifications produced, {} read back from {}",
        summary.alerts,
        alerts.len(),
        summary.notifications,
        payloads.len(),
        cfg.sinks.alerts_topic
    );
    report_by_path(&alerts, &anomalies);
    telemine_observe::note!(
        "demo: precision {:.2} ({} of {} alerts match an injected anomaly), recall {:.2} ({} of {} anomalies detected)",
        s.precision,
        s.true_alerts,
        s.alerts,
        s.recall,
        s.detected,
        s.anomalies
    );
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

/// Which detection path raised an alert: the anomaly model's rules carry
/// `detector="model"` (`@label.detector: model`); the rest are SQL
/// threshold rules.
fn path_of(alert: &telemine_types::alert::Alert) -> &'static str {
    match alert.labels.get("detector").map(String::as_str) {
        Some("model") => "model",
        _ => "rules",
    }
}

/// Recall per anomaly kind and precision and recall per detection path.
fn report_by_path(
    alerts: &[telemine_types::alert::Alert],
    anomalies: &[telemine_connectors::generator::Anomaly],
) {
    let of = |path: &str| -> Vec<telemine_types::alert::Alert> {
        alerts
            .iter()
            .filter(|a| path_of(a) == path)
            .cloned()
            .collect()
    };
    let (rules, model, all) = (
        score(&of("rules"), anomalies),
        score(&of("model"), anomalies),
        score(alerts, anomalies),
    );
    telemine_observe::note!(
        "demo: {:<22} {:>8} {:>6} {:>6} {:>6}",
        "anomaly kind",
        "injected",
        "rules",
        "model",
        "any"
    );
    for (kind, (n, any)) in &all.by_kind {
        let found = |s: &telemine::matching::Score| s.by_kind.get(kind).map_or(0, |k| k.1);
        let relational = anomalies
            .iter()
            .any(|a| a.kind.name() == *kind && a.kind.relational());
        telemine_observe::note!(
            "demo: {:<22} {n:>8} {:>6} {:>6} {any:>6}{}",
            kind,
            found(&rules),
            found(&model),
            if relational { "  (relational)" } else { "" }
        );
    }
    for (path, s) in [("rules", &rules), ("model", &model)] {
        telemine_observe::note!(
            "demo: {path} path: precision {:.2} ({} of {} alerts match an injected anomaly), recall {:.2} ({} of {} anomalies)",
            s.precision,
            s.true_alerts,
            s.alerts,
            s.recall,
            s.detected,
            s.anomalies
        );
    }
}

/// Produces generated data for `seconds` of wall time; returns the count.
fn produce(
    mut generator: Generator,
    bootstrap: &str,
    telemetry: &str,
    market: &str,
    seconds: u64,
    speed: u64,
) -> anyhow::Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the generator's producer")?;
    let start = Instant::now();
    let total = seconds * speed;
    let mut count = 0u64;
    let mut send = |stream: Stream, key: &str, payload: &[u8]| {
        let topic = match stream {
            Stream::Telemetry => telemetry,
            Stream::Market => market,
        };
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
        count += 1;
    };
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / speed as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        generator.emit_second(&mut send);
    }
    generator.drain(&mut send);
    producer
        .flush(Duration::from_secs(30))
        .context("flushing generated records")?;
    Ok(count)
}

/// Reads the alerts topic from the beginning, printing each notification
/// (Alertmanager's webhook payload) as one JSON line on stdout, until told
/// to stop.
fn read_alerts(
    bootstrap: &str,
    topic: &str,
    stop: &AtomicBool,
    count: &AtomicU64,
) -> anyhow::Result<Vec<Payload>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "telemine-demo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the alert reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..ALERT_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .context("assigning the alerts topic")?;
    }
    consumer
        .assign(&tpl)
        .context("assigning the alerts topic")?;
    let mut alerts = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let payload = m.payload().unwrap_or_default();
            telemine_observe::out!("{}", String::from_utf8_lossy(payload));
            match Payload::from_json(payload) {
                Ok(a) => alerts.push(a),
                Err(e) => {
                    tracing::warn!(error = %e, "a message on the alerts topic is not a webhook payload")
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
    Ok(alerts)
}
