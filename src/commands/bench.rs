//! `telemine bench`: the engine's throughput as a share of the ceiling.
//!
//! On a real broker: produce `records` generated JSON telemetry records to a
//! fresh topic and drain it once to warm it (not measured: a first read
//! comes from disk, later ones from the page cache). Then `pairs` rounds on
//! the same warm topic, each run in a new group: (a) a bare rdkafka
//! consumer that only counts messages — the physical limit of draining
//! that topic here — and the whole engine (decode, windows, the default
//! views and rules, alert production, commits), (b) with the config's
//! models and (c) without. The order alternates from round to round, so
//! neither side always reads second. Rates run from the first record
//! received to the last, so group-join time counts for none. Reported:
//! each round, and the median ratio to the ceiling with its spread;
//! `--json` writes the figures and `--compare` reads a run written so
//! before and says which medians moved past that run's spread.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_connectors::generator::{Generator, GeneratorConfig, Stream};
use telemine_connectors::kafka::{KafkaClientConfig, create_topics};

pub struct BenchOptions {
    pub brokers: String,
    pub records: u64,
    pub partitions: i32,
    pub config: PathBuf,
    /// Rounds of (a), (b) and (c) on the warm topic.
    pub pairs: usize,
    /// Where to write the figures as JSON.
    pub json: Option<PathBuf>,
    /// A run's JSON to compare with.
    pub compare: Option<PathBuf>,
}

/// One round's rates, records per second.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Round {
    bare: f64,
    models: f64,
    no_models: f64,
}

/// A median and the least and greatest of its values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// What `--json` writes and `--compare` reads.
#[derive(Debug, Serialize, Deserialize)]
struct Figures {
    version: String,
    records: u64,
    partitions: i32,
    payload_bytes: u64,
    models: Vec<String>,
    rounds: Vec<Round>,
    bare: Spread,
    with_models: Spread,
    without_models: Spread,
    /// Per round, (b)/(a) and (c)/(a).
    ratio_with_models: Spread,
    ratio_without_models: Spread,
}

/// Which run of a round.
#[derive(Debug, Clone, Copy)]
enum Run {
    Bare,
    Models,
    NoModels,
}

pub async fn bench(o: BenchOptions) -> anyhow::Result<ExitCode> {
    let Some((mut cfg, _)) = super::load(&o.config, None).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let previous = match &o.compare {
        Some(path) => Some(read_figures(path)?),
        None => None,
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
    let bare = |group: String| {
        let (brokers, t) = (o.brokers.clone(), topic.clone());
        async move {
            let secs =
                tokio::task::spawn_blocking(move || drain_bare(&brokers, &t, &group, records))
                    .await??;
            Ok::<_, anyhow::Error>(records as f64 / secs)
        }
    };
    let warm = bare(format!("telemine-bench-warm-{run_id}")).await?;
    telemine_observe::note!(
        "bench: warm-up drain (not measured as the ceiling): {warm:.0} records/s"
    );

    cfg.kafka = client.clone();
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
    let engine = |group: String, without_models: bool| {
        let mut cfg = cfg.clone();
        cfg.kafka.group_id = group;
        let config = o.config.clone();
        async move {
            let Some((_, sql)) = super::load(&config, None).await? else {
                anyhow::bail!("{}: the config no longer loads", config.display());
            };
            let options = RunOptions {
                stop_at_end: true,
                without_models,
                ..Default::default()
            };
            let summary = run_pipeline(&cfg, sql, options, std::future::pending::<Stop>()).await?;
            if summary.records != records {
                anyhow::bail!(
                    "the engine decoded {} of the {records} records",
                    summary.records
                );
            }
            Ok::<_, anyhow::Error>(summary.records as f64 / summary.busy.as_secs_f64().max(1e-9))
        }
    };

    telemine_observe::note!(
        "bench: {} rounds on the warm topic, each run in a new group: (a) bare consumer, (b) the engine with the config's views, rules and models ({}), (c) the same without the models; the order alternates",
        o.pairs,
        models.join(", ")
    );
    let mut rounds = Vec::with_capacity(o.pairs);
    for k in 0..o.pairs {
        let order = if k % 2 == 0 {
            [Run::Bare, Run::Models, Run::NoModels]
        } else {
            [Run::NoModels, Run::Models, Run::Bare]
        };
        let mut round = Round {
            bare: 0.0,
            models: 0.0,
            no_models: 0.0,
        };
        for run in order {
            let group = format!("telemine-bench-{run:?}-{k}-{run_id}").to_lowercase();
            match run {
                Run::Bare => round.bare = bare(group).await?,
                Run::Models => round.models = engine(group, false).await?,
                Run::NoModels => round.no_models = engine(group, true).await?,
            }
        }
        telemine_observe::note!(
            "bench: round {}: (a) {:.0}, (b) {:.0}, (c) {:.0} records/s; (b)/(a) {:.2}, (c)/(a) {:.2}",
            k + 1,
            round.bare,
            round.models,
            round.no_models,
            round.models / round.bare,
            round.no_models / round.bare
        );
        rounds.push(round);
    }
    let figures = Figures {
        version: env!("CARGO_PKG_VERSION").to_string(),
        records,
        partitions: o.partitions,
        payload_bytes: bytes,
        models,
        bare: Spread::of(rounds.iter().map(|r| r.bare)),
        with_models: Spread::of(rounds.iter().map(|r| r.models)),
        without_models: Spread::of(rounds.iter().map(|r| r.no_models)),
        ratio_with_models: Spread::of(rounds.iter().map(|r| r.models / r.bare)),
        ratio_without_models: Spread::of(rounds.iter().map(|r| r.no_models / r.bare)),
        rounds,
    };
    report(&figures, previous.as_ref());
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&figures)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the figures to {}", path.display()))?;
        telemine_observe::note!("bench: figures written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn read_figures(path: &Path) -> anyhow::Result<Figures> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--compare {}: cannot read it", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "--compare {}: not the figures `telemine bench --json` writes",
            path.display()
        )
    })
}

/// Prints the table; with `previous`, each median beside that run's,
/// marked where it falls outside that run's spread.
fn report(f: &Figures, previous: Option<&Figures>) {
    telemine_observe::out!(
        "| measure | median (least–greatest over {} rounds) |",
        f.rounds.len()
    );
    telemine_observe::out!("|---|---|");
    telemine_observe::out!(
        "| records | {} ({:.0} B/record, {} partitions) |",
        f.records,
        f.payload_bytes as f64 / f.records.max(1) as f64,
        f.partitions
    );
    type Pick = fn(&Figures) -> Spread;
    let rows: [(&str, Pick, bool); 5] = [
        ("(a) bare rdkafka consumer, records/s", |f| f.bare, false),
        (
            "(b) engine with models, records/s",
            |f| f.with_models,
            false,
        ),
        (
            "(c) engine without models, records/s",
            |f| f.without_models,
            false,
        ),
        ("ratio (b)/(a)", |f| f.ratio_with_models, true),
        ("ratio (c)/(a)", |f| f.ratio_without_models, true),
    ];
    for (name, pick, ratio) in rows {
        let now = pick(f);
        let text = |s: Spread| {
            if ratio {
                format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
            } else {
                format!(
                    "{:.0} k ({:.0}–{:.0} k)",
                    s.median / 1e3,
                    s.min / 1e3,
                    s.max / 1e3
                )
            }
        };
        let mut line = format!("| {name} | {}", text(now));
        if let Some(p) = previous {
            let then = pick(p);
            let change = 100.0 * (now.median / then.median - 1.0);
            let verdict = verdict(now, then);
            line.push_str(&format!(
                "; recorded {}: {change:+.0}%, {verdict}",
                text(then)
            ));
        }
        telemine_observe::out!("{line} |");
    }
    telemine_observe::out!(
        "| model stage cost, 1 − (b)/(c) of the medians | {:.1}% |",
        100.0 * (1.0 - f.with_models.median / f.without_models.median)
    );
}

/// Where `now`'s median falls against the rounds of a recorded run: past
/// every one of them is a change beyond that run's noise.
fn verdict(now: Spread, then: Spread) -> &'static str {
    if now.median < then.min {
        "**lower than every recorded round**"
    } else if now.median > then.max {
        "**higher than every recorded round**"
    } else {
        "within the recorded spread"
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_median_and_the_extremes_of_the_finite_values() {
        let s = Spread::of([3.0, 1.0, f64::NAN, 2.0].into_iter());
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of([4.0, 1.0, 2.0, 3.0].into_iter());
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(std::iter::empty()).median.is_nan());
    }

    #[test]
    fn a_median_past_every_recorded_round_is_flagged() {
        let then = Spread::of([0.30, 0.35, 0.40].into_iter());
        let at = |m: f64| Spread {
            median: m,
            min: m,
            max: m,
        };
        assert_eq!(verdict(at(0.32), then), "within the recorded spread");
        assert!(verdict(at(0.29), then).contains("lower"));
        assert!(verdict(at(0.41), then).contains("higher"));
    }

    #[test]
    fn the_figures_read_back_as_written() {
        let round = Round {
            bare: 2.0e6,
            models: 1.0e6,
            no_models: 1.2e6,
        };
        let s = Spread::of([0.5].into_iter());
        let f = Figures {
            version: "0".into(),
            records: 10,
            partitions: 6,
            payload_bytes: 2120,
            models: vec!["m (pca on v)".into()],
            rounds: vec![round],
            bare: s,
            with_models: s,
            without_models: s,
            ratio_with_models: s,
            ratio_without_models: s,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.json");
        std::fs::write(&path, serde_json::to_string(&f).unwrap()).unwrap();
        let back = read_figures(&path).unwrap();
        assert_eq!(back.rounds.len(), 1);
        assert_eq!(back.ratio_with_models.median, 0.5);
        std::fs::write(&path, "{}").unwrap();
        let e = read_figures(&path).unwrap_err().to_string();
        assert!(e.contains("not the figures"), "{e}");
    }
}
