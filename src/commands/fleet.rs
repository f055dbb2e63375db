//! `telemine eval --fleet DURATION`: the generated fleet through an
//! operator's config and the alert lifecycle (see
//! `telemine::eval::fleet`); prints what an on-call engineer would have
//! been sent.

use std::path::PathBuf;
use std::process::ExitCode;

use telemine::eval::fleet::{self, CALIBRATION_AT, FleetOptions};
use telemine::matching::score;
use telemine_connectors::generator::Topology;

pub struct FleetCommand {
    pub duration: String,
    pub anomalies: bool,
    pub config: PathBuf,
    pub seed: u64,
}

/// The project's views are one-minute windows: each rule is evaluated at
/// each minute's end.
const STEP_MS: i64 = 60_000;

pub async fn fleet(o: FleetCommand) -> anyhow::Result<ExitCode> {
    let duration = telemine_types::duration::parse_duration(&o.duration)
        .map_err(|e| anyhow::anyhow!("--fleet {}: {e}", o.duration))?;
    let Some((cfg, sql)) = super::load(&o.config, None).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let opts = FleetOptions {
        duration_ms: duration.as_millis().min(i64::MAX as u128) as i64,
        seed: o.seed,
        anomalies: o.anomalies,
        topology: Topology::default(),
    };
    let started = std::time::Instant::now();
    let out = fleet::run(&cfg, sql, &opts, STEP_MS)
        .await
        .map_err(anyhow::Error::msg)?;
    let secs = started.elapsed().as_secs_f64();
    telemine_observe::note!(
        "fleet: {} hosts × {} of event time ({:.1} host-days, {} records, {}) through {} in {secs:.0} s",
        out.hosts,
        o.duration,
        out.host_days(),
        out.records,
        if o.anomalies {
            format!("{} anomalies injected", out.anomalies.len())
        } else {
            "no anomalies".to_string()
        },
        o.config.display()
    );
    for (view, s) in &out.scores {
        let shares: Vec<String> = CALIBRATION_AT
            .iter()
            .zip(&s.above)
            .map(|(t, n)| {
                format!(
                    "above {t}: {:.5} (1 − t = {:.5})",
                    *n as f64 / s.scored.max(1) as f64,
                    1.0 - t
                )
            })
            .collect();
        telemine_observe::note!(
            "fleet: model scores of {view}: {} rows scored, {} NULL while warming up; share {}",
            s.scored,
            s.null,
            shares.join(", ")
        );
    }
    let per_500 = |n: usize| n as f64 * 500.0 / out.host_days().max(1e-9);
    for (rule, r) in &out.rules {
        telemine_observe::note!(
            "fleet: {rule}: {} rows, {} notifications ({:.2} per 500 host-days)",
            r.rows,
            r.notifications,
            per_500(r.notifications)
        );
    }
    let model_rules: Vec<&str> = cfg_model_rules(&out);
    let model_notifications: usize = model_rules
        .iter()
        .map(|r| out.rules[*r].notifications)
        .sum();
    telemine_observe::note!(
        "fleet: the model's rules ({}): {model_notifications} notifications, {:.2} per 500 host-days",
        model_rules.join(", "),
        per_500(model_notifications)
    );
    if o.anomalies {
        let episodes = |model: Option<bool>| -> Vec<telemine_types::alert::Alert> {
            out.rules
                .iter()
                .filter(|(name, _)| model.is_none_or(|m| model_rules.contains(&name.as_str()) == m))
                .flat_map(|(_, r)| r.episodes.iter().cloned())
                .collect()
        };
        let relational: Vec<_> = out
            .anomalies
            .iter()
            .filter(|a| a.kind.relational())
            .cloned()
            .collect();
        for (path, alerts) in [
            ("rules", episodes(Some(false))),
            ("model", episodes(Some(true))),
            ("any", episodes(None)),
        ] {
            let all = score(&alerts, &out.anomalies);
            let rel = score(&alerts, &relational);
            let kinds: Vec<String> = all
                .by_kind
                .iter()
                .map(|(k, (n, hit))| format!("{k} {hit}/{n}"))
                .collect();
            telemine_observe::note!(
                "fleet: {path} path: precision {:.2} ({} of {} episodes match an injected anomaly), recall {:.2} ({} of {}: {}); over the relational kinds: recall {:.2} ({} of {})",
                all.precision,
                all.true_alerts,
                all.alerts,
                all.recall,
                all.detected,
                all.anomalies,
                kinds.join(", "),
                rel.recall,
                rel.detected,
                rel.anomalies
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rules raised by the anomaly model: those labelled
/// `detector="model"`, as the demo tells them apart.
fn cfg_model_rules(out: &fleet::FleetOutcome) -> Vec<&str> {
    out.rules
        .iter()
        .filter(|(_, r)| r.labels.get("detector").map(String::as_str) == Some("model"))
        .map(|(name, _)| name.as_str())
        .collect()
}
