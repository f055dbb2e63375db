//! The generated fleet (the demo's data) through an operator's config
//! (`telemine eval --fleet DURATION`): the records go through the engine's
//! local runner, every rule's rows through the alert lifecycle (`@for`,
//! `@keep_firing_for`; the `Lifecycle` the alerting stage runs), so what
//! comes out is the alert instances that would start firing — each at
//! least one notification; the routes' grouping and repeats are not
//! applied. Without anomalies it
//! measures false notifications per host-day and how the models' scores
//! are calibrated on normal data (the share of scored rows above `t`
//! against `1 − t`); with them, precision and recall per detection path
//! and anomaly kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use telemine_connectors::generator::{Anomaly, Generator, GeneratorConfig, Stream, Topology};

use crate::config::Config;
use telemine_alerting::lifecycle::{Lifecycle, Status};
use telemine_detector::{ScoreLog, ScoredRow};
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_stream::local::LocalRun;
use telemine_types::alert::Alert;

/// The score thresholds calibration is reported at.
pub const CALIBRATION_AT: [f64; 4] = [0.9, 0.99, 0.999, 0.9999];

/// Seconds of generated data pushed to the runner at a time.
const CHUNK_SECONDS: usize = 10;

/// What to generate.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub duration_ms: i64,
    pub seed: u64,
    /// Inject the demo's anomalies (one every three minutes).
    pub anomalies: bool,
    pub topology: Topology,
}

/// One rule's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleOutcome {
    /// The rule's `@label.NAME` labels (`detector = "model"` on the
    /// anomaly model's rules).
    pub labels: BTreeMap<String, String>,
    /// Rows its query returned (one per instance and window).
    pub rows: usize,
    /// Times an instance started firing: the notifications a receiver
    /// gets (each also resolves once, later).
    pub notifications: usize,
    /// Firing episodes, one per (instance, time it started firing),
    /// spanning the window that fired it to its resolution: what
    /// precision counts.
    pub episodes: Vec<Alert>,
}

/// A model's scores over the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreOutcome {
    /// Rows scored.
    pub scored: usize,
    /// Rows the model left NULL (warming up, no model yet).
    pub null: usize,
    /// Per threshold in [`CALIBRATION_AT`]: rows above it.
    pub above: Vec<usize>,
}

/// What a fleet run gave.
#[derive(Debug, Clone, Default)]
pub struct FleetOutcome {
    pub records: u64,
    pub hosts: usize,
    pub duration_ms: i64,
    pub anomalies: Vec<Anomaly>,
    pub rules: BTreeMap<String, RuleOutcome>,
    /// Per scored view.
    pub scores: BTreeMap<String, ScoreOutcome>,
}

impl FleetOutcome {
    /// Host-days the run covered.
    pub fn host_days(&self) -> f64 {
        self.hosts as f64 * self.duration_ms as f64 / 86_400_000.0
    }
}

/// Runs `opts`' generated fleet through `cfg`'s sources, `sql`'s views and
/// rules and `cfg`'s models; each rule is evaluated every `step_ms` of
/// event time (its views' window length) through the alert lifecycle.
pub async fn run(
    cfg: &Config,
    mut sql: SqlSet,
    opts: &FleetOptions,
    step_ms: i64,
) -> Result<FleetOutcome, String> {
    let defs = cfg.source_defs()?;
    let log = Arc::new(ScoreLog::default());
    telemine_detector::attach(&mut sql, &cfg.model_settings()?, false, Some(log.clone()))
        .map_err(|e| e.to_string())?;
    let timing: BTreeMap<String, _> = sql
        .rules
        .iter()
        .map(|r| (r.name.clone(), r.timing))
        .collect();
    let mut labels: BTreeMap<String, BTreeMap<String, String>> = sql
        .rules
        .iter()
        .map(|r| (r.name.clone(), r.extra_labels.clone()))
        .collect();
    let source = |name: &str| {
        defs.iter().position(|d| d.name == name).ok_or_else(|| {
            format!("the generated fleet needs a source named `{name}` in the config")
        })
    };
    let (telemetry, market) = (source("telemetry")?, source("market")?);
    let mut generator = Generator::new(GeneratorConfig {
        topology: opts.topology.clone(),
        duration_ms: opts.duration_ms,
        seed: opts.seed,
        anomalies: opts.anomalies,
        ..Default::default()
    });
    let start_ms = GeneratorConfig::default().start_ms;
    let mut out = FleetOutcome {
        hosts: generator.hosts(),
        duration_ms: opts.duration_ms,
        anomalies: generator.anomalies().to_vec(),
        ..Default::default()
    };
    let mut local =
        LocalRun::new(sql, &defs, Arc::new(Metrics::default())).map_err(|e| e.to_string())?;
    let seconds = (opts.duration_ms / 1000).max(0) as usize;
    let mut buffers: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for s in 0..seconds {
        generator.emit_second(&mut |stream, _key, payload| {
            buffers[stream as usize].push(payload.to_vec());
        });
        if s + 1 == seconds {
            generator.drain(&mut |stream, _key, payload| {
                buffers[stream as usize].push(payload.to_vec());
            });
        }
        if (s + 1) % CHUNK_SECONDS == 0 || s + 1 == seconds {
            for (stream, src) in [(Stream::Telemetry, telemetry), (Stream::Market, market)] {
                let records = std::mem::take(&mut buffers[stream as usize]);
                out.records += records.len() as u64;
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                local
                    .push_records(src, 0, &refs)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tally_scores(&mut out.scores, log.take());
        }
    }
    let outcome = local.finish().await.map_err(|e| e.to_string())?;
    tally_scores(&mut out.scores, log.take());
    out.rules = lifecycle(
        &outcome.alerts,
        &timing,
        start_ms,
        start_ms + opts.duration_ms,
        step_ms,
    );
    for (rule, o) in out.rules.iter_mut() {
        if let Some(l) = labels.remove(rule) {
            o.labels = l;
        }
    }
    Ok(out)
}

fn tally_scores(scores: &mut BTreeMap<String, ScoreOutcome>, rows: Vec<ScoredRow>) {
    for r in rows {
        let s = scores.entry(r.view).or_insert_with(|| ScoreOutcome {
            above: vec![0; CALIBRATION_AT.len()],
            ..Default::default()
        });
        match r.score {
            Some(v) => {
                s.scored += 1;
                for (n, t) in s.above.iter_mut().zip(CALIBRATION_AT) {
                    *n += usize::from(v > t);
                }
            }
            None => s.null += 1,
        }
    }
}

/// Every rule's rows through the lifecycle, evaluated at each `step_ms`
/// from `from` to `to` (and on to the last row's window end), as the
/// alerting stage evaluates a rule at each window end of its view.
pub fn lifecycle(
    rows: &[Alert],
    timing: &BTreeMap<String, telemine_types::alert::rule::Timing>,
    from: i64,
    to: i64,
    step_ms: i64,
) -> BTreeMap<String, RuleOutcome> {
    let mut by_rule: BTreeMap<&str, BTreeMap<i64, Vec<Alert>>> = BTreeMap::new();
    for a in rows {
        by_rule
            .entry(a.rule.as_str())
            .or_default()
            .entry(a.window_end_ms)
            .or_default()
            .push(a.clone());
    }
    let mut out = BTreeMap::new();
    for (rule, t) in timing {
        let mut rule_rows = by_rule.remove(rule.as_str()).unwrap_or_default();
        let last = rule_rows.keys().next_back().copied().unwrap_or(to).max(to);
        let mut ends: Vec<i64> = (0..)
            .map(|k| from + k * step_ms.max(1))
            .take_while(|&at| at <= last + step_ms * 2)
            .collect();
        ends.extend(rule_rows.keys().copied());
        ends.sort_unstable();
        ends.dedup();
        let mut life = Lifecycle::default();
        let mut o = RuleOutcome::default();
        let mut open: BTreeMap<String, Alert> = BTreeMap::new();
        for at in ends {
            let now = rule_rows.remove(&at).unwrap_or_default();
            o.rows += now.len();
            for u in life.evaluate(rule, *t, at, now) {
                let fp = u.alert.fingerprint.clone();
                match u.status {
                    Status::Firing if u.starts_at == at && !open.contains_key(&fp) => {
                        o.notifications += 1;
                        let mut e = u.alert.clone();
                        e.window_start_ms = e.window_start_ms.min(at - step_ms);
                        e.window_end_ms = at;
                        open.insert(fp, e);
                    }
                    Status::Firing => {
                        if let Some(e) = open.get_mut(&fp) {
                            e.window_end_ms = at;
                        }
                    }
                    Status::Resolved => {
                        if let Some(mut e) = open.remove(&fp) {
                            e.window_end_ms = u.ends_at.unwrap_or(at);
                            o.episodes.push(e);
                        }
                    }
                }
            }
        }
        o.episodes.extend(open.into_values());
        out.insert(rule.clone(), o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemine_types::alert::rule::Timing;

    fn row(rule: &str, host: &str, end: i64) -> Alert {
        let mut a = Alert {
            schema: telemine_types::alert::ALERT_SCHEMA.into(),
            status: "firing".into(),
            rule: rule.into(),
            severity: "warning".into(),
            fingerprint: format!("{rule}/{host}"),
            labels: [("host".to_string(), host.to_string())].into(),
            annotations: Default::default(),
            values: Default::default(),
            window_start: String::new(),
            window_end: String::new(),
            window_start_ms: end - 60,
            window_end_ms: end,
        };
        a.status = "firing".into();
        a
    }

    #[test]
    fn a_notification_is_an_instance_that_starts_firing() {
        let timing: BTreeMap<String, Timing> = [(
            "R".to_string(),
            Timing {
                for_ms: 60,
                keep_firing_for_ms: 0,
            },
        )]
        .into();
        // h1: rows at 60, 120, 180 (fires at 120, resolves at 240), and
        // again at 420, 480 (a second notification); h2: one row at 300
        // (pending, never fires).
        let rows: Vec<Alert> = [60, 120, 180, 420, 480]
            .iter()
            .map(|&t| row("R", "h1", t))
            .chain([row("R", "h2", 300)])
            .collect();
        let out = lifecycle(&rows, &timing, 0, 600, 60);
        let r = &out["R"];
        assert_eq!((r.rows, r.notifications), (6, 2));
        let spans: Vec<(i64, i64)> = r
            .episodes
            .iter()
            .map(|e| (e.window_start_ms, e.window_end_ms))
            .collect();
        assert_eq!(spans, vec![(60, 240), (420, 540)]);
    }
}
