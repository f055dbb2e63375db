//! Repeated errors of one source, told once and then summarised: a topic
//! full of records in the wrong format, or a partition the consumer cannot
//! read, would otherwise write a log line per record (thousands a second)
//! or nothing at all.
//!
//! Each error is counted in `telemine_source_errors_total{source,kind}`.
//! The first of a spell (a source and kind that had none for a while) is
//! logged at once, with its partition, offset and reason; the ones after
//! it are summarised in one line per [`SUMMARY_EVERY`] (how many, on which
//! partitions, the latest reason); a spell with nothing new for that long
//! ends with a line saying so. The state is bounded: at most
//! [`MAX_SPELLS`] sources × kinds and [`MAX_PARTITIONS`] partitions named
//! per spell.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use telemine_observe::metrics::Metrics;

/// How often a spell of errors is summarised in the log.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Spells tracked at once; beyond it errors are still counted, not logged.
const MAX_SPELLS: usize = 1024;
/// Partitions a summary names.
const MAX_PARTITIONS: usize = 32;
/// Longest reason a line quotes.
const MAX_REASON: usize = 300;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// A record that could not be decoded (it went to the dead-letter
    /// topic).
    Decode,
    /// The Kafka consumer reported an error reading the source's topic.
    Consumer,
}

impl Kind {
    /// The metric's `kind` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Decode => "decode",
            Kind::Consumer => "consumer",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Decode => "records not decoded (sent to the dead-letter topic)",
            Kind::Consumer => "Kafka consumer errors",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Kind::Decode => {
                "check the source's format, columns and timestamp_unit against what the producer writes (`telemine dry-run` on a sample shows each reason)"
            }
            Kind::Consumer => {
                "check the topic, the broker's logs and the client's [kafka.properties]"
            }
        }
    }
}

/// Where one error happened, and why.
pub(crate) struct SourceError<'a> {
    pub source: &'a str,
    pub kind: Kind,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub reason: &'a str,
}

/// One source and kind's ongoing errors.
struct Spell {
    /// When the last line about it was written.
    logged: Instant,
    /// Errors since that line.
    since: u64,
    /// Errors in the whole spell.
    total: u64,
    /// Partitions of the errors since the last line.
    partitions: BTreeSet<i32>,
    /// The latest error since the last line: where and why.
    latest: String,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct SourceErrors {
    spells: BTreeMap<(String, Kind), Spell>,
}

impl SourceErrors {
    /// Counts `e`; logs it when it starts a spell.
    pub(crate) fn record(&mut self, metrics: &Metrics, e: &SourceError<'_>, now: Instant) {
        self.record_many(metrics, e, 1, now);
    }

    /// Counts `n` errors like `e` (the latest of them); logs `e` when it
    /// starts a spell.
    pub(crate) fn record_many(
        &mut self,
        metrics: &Metrics,
        e: &SourceError<'_>,
        n: u64,
        now: Instant,
    ) {
        if n == 0 {
            return;
        }
        Metrics::add_to(&metrics.source_errors_total, &[e.source, e.kind.label()], n);
        let key = (e.source.to_string(), e.kind);
        if let Some(spell) = self.spells.get_mut(&key) {
            spell.since += n;
            spell.total += n;
            if spell.partitions.len() < MAX_PARTITIONS
                && let Some(p) = e.partition
            {
                spell.partitions.insert(p);
            }
            spell.latest = describe(e);
            return;
        }
        if self.spells.len() >= MAX_SPELLS {
            return;
        }
        tracing::warn!(
            source = e.source,
            kind = e.kind.label(),
            partition = e.partition,
            offset = e.offset,
            "source `{}`: {} — {}{}; {}. Repeats are counted in telemine_source_errors_total{{source=\"{}\",kind=\"{}\"}} and summarised here once every {} s",
            e.source,
            e.kind.what(),
            describe(e),
            if n > 1 {
                format!(" (and {} more like it)", n - 1)
            } else {
                String::new()
            },
            e.kind.advice(),
            e.source,
            e.kind.label(),
            SUMMARY_EVERY.as_secs(),
        );
        self.spells.insert(
            key,
            Spell {
                logged: now,
                since: n - 1,
                total: n,
                partitions: BTreeSet::new(),
                latest: String::new(),
            },
        );
    }

    /// Writes the summaries that are due; ends the spells that had nothing
    /// new for [`SUMMARY_EVERY`].
    pub(crate) fn tick(&mut self, now: Instant) {
        self.spells.retain(|(source, kind), spell| {
            let waited = now.saturating_duration_since(spell.logged);
            if waited < SUMMARY_EVERY {
                return true;
            }
            if spell.since == 0 {
                tracing::info!(
                    source = source.as_str(),
                    kind = kind.label(),
                    total = spell.total,
                    "source `{source}`: no more {} for {} s ({} in all)",
                    kind.what(),
                    waited.as_secs(),
                    spell.total
                );
                return false;
            }
            let partitions: Vec<String> = spell.partitions.iter().map(i32::to_string).collect();
            tracing::warn!(
                source = source.as_str(),
                kind = kind.label(),
                count = spell.since,
                total = spell.total,
                "source `{source}`: {} more {} in the last {} s{} ({} in all); the latest: {}",
                spell.since,
                kind.what(),
                waited.as_secs(),
                if partitions.is_empty() {
                    String::new()
                } else {
                    format!(" on partition(s) {}", partitions.join(", "))
                },
                spell.total,
                spell.latest
            );
            spell.logged = now;
            spell.since = 0;
            spell.partitions.clear();
            true
        });
    }

    /// Spells going on (for tests).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.spells.len()
    }
}

/// `partition P, offset O: reason`, the reason cut to [`MAX_REASON`].
fn describe(e: &SourceError<'_>) -> String {
    let mut reason: String = e.reason.chars().take(MAX_REASON).collect();
    if reason.len() < e.reason.len() {
        reason.push('…');
    }
    match (e.partition, e.offset) {
        (Some(p), Some(o)) => format!("partition {p}, offset {o}: {reason}"),
        (Some(p), None) => format!("partition {p}: {reason}"),
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<'a>(partition: i32, offset: i64) -> SourceError<'a> {
        SourceError {
            source: "telemetry",
            kind: Kind::Decode,
            partition: Some(partition),
            offset: Some(offset),
            reason: "not JSON: expected value at line 1 column 1",
        }
    }

    fn count(m: &Metrics, source: &str, kind: &str) -> u64 {
        m.source_errors_total
            .with_label_values(&[source, kind])
            .get()
    }

    #[test]
    fn a_flood_is_counted_in_full_and_logged_once_then_summarised_then_ended() {
        let m = Metrics::default();
        let mut errors = SourceErrors::default();
        let t0 = Instant::now();
        for i in 0..10_000 {
            errors.record(
                &m,
                &decode(3, i),
                t0 + Duration::from_millis(i as u64 / 100),
            );
        }
        assert_eq!(count(&m, "telemetry", "decode"), 10_000);
        assert_eq!(errors.open(), 1);
        let spell = &errors.spells[&("telemetry".to_string(), Kind::Decode)];
        assert_eq!((spell.since, spell.total), (9_999, 10_000));
        assert_eq!(spell.partitions, BTreeSet::from([3]));
        assert!(
            spell
                .latest
                .starts_with("partition 3, offset 9999: not JSON")
        );
        // Not yet due: nothing changes.
        errors.tick(t0 + Duration::from_secs(30));
        assert_eq!(errors.spells.values().next().map(|s| s.since), Some(9_999));
        // Due: summarised, the count since starts again.
        errors.tick(t0 + SUMMARY_EVERY);
        assert_eq!(errors.spells.values().next().map(|s| s.since), Some(0));
        // A quiet interval ends the spell; the next error starts a new one.
        errors.tick(t0 + 2 * SUMMARY_EVERY);
        assert_eq!(errors.open(), 0);
        errors.record(&m, &decode(1, 7), t0 + 2 * SUMMARY_EVERY);
        assert_eq!(errors.open(), 1);
        assert_eq!(count(&m, "telemetry", "decode"), 10_001);
    }

    #[test]
    fn sources_and_kinds_are_apart_and_state_is_bounded() {
        let m = Metrics::default();
        let mut errors = SourceErrors::default();
        let now = Instant::now();
        let consumer = SourceError {
            source: "market",
            kind: Kind::Consumer,
            partition: None,
            offset: None,
            reason: "Local: Not implemented",
        };
        errors.record_many(&m, &consumer, 12, now);
        errors.record(&m, &decode(0, 1), now);
        assert_eq!(count(&m, "market", "consumer"), 12);
        assert_eq!(count(&m, "telemetry", "decode"), 1);
        assert_eq!(errors.open(), 2);
        let names: Vec<String> = (0..2 * MAX_SPELLS).map(|i| format!("s{i}")).collect();
        for name in &names {
            let e = SourceError {
                source: name,
                ..decode(0, 0)
            };
            errors.record(&m, &e, now);
        }
        assert_eq!(errors.open(), MAX_SPELLS);
        assert_eq!(
            count(&m, &names[2 * MAX_SPELLS - 1], "decode"),
            1,
            "still counted"
        );
        // Many partitions: a summary names a bounded number of them.
        for p in 0..1000 {
            errors.record(&m, &decode(p, 0), now);
        }
        let spell = &errors.spells[&("telemetry".to_string(), Kind::Decode)];
        assert_eq!(spell.partitions.len(), MAX_PARTITIONS);
    }

    #[test]
    fn a_long_reason_is_cut() {
        let long = "x".repeat(10_000);
        let e = SourceError {
            reason: &long,
            ..decode(0, 0)
        };
        assert!(describe(&e).chars().count() < MAX_REASON + 40);
    }
}
