//! `telemine check`: validate config and SQL without a broker.

use std::path::Path;
use std::process::ExitCode;

pub async fn check(config: &Path, sql: Option<&Path>) -> anyhow::Result<ExitCode> {
    match super::load(config, sql).await? {
        Some((cfg, set)) => {
            telemine_observe::out!(
                "ok: {} ({} sources), {} feature views and {} rules in {}",
                config.display(),
                cfg.sources.len(),
                set.views.len(),
                set.rules.len(),
                cfg.sql.dir.display()
            );
            telemine_observe::out!(
                "kafka client: {}",
                telemine_connectors::kafka::librdkafka_build()
            );
            let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
            let repartition = cfg.engine.repartition;
            for v in &set.views {
                telemine_observe::out!(
                    "{}",
                    placement_line(v, &defs, repartition, &cfg.kafka.group_id)
                );
            }
            let alone = telemine_stream::alone_reasons(&set, &defs, repartition);
            if alone.is_empty() {
                telemine_observe::out!(
                    "scale-out: several instances may share consumer group `{}` (each with its own [kafka] instance_id); the group's alerting runs on the one holding its alerting relay",
                    cfg.kafka.group_id
                );
            } else {
                telemine_observe::out!(
                    "scale-out: one instance per consumer group `{}`; a second one is refused because {}",
                    cfg.kafka.group_id,
                    alone.join("; ")
                );
            }
            if let Some(d) = telemine_stream::deferred::Deferral::plan(&set) {
                let names = |ix: &mut dyn Iterator<Item = String>| {
                    let v: Vec<String> = ix.map(|n| format!("`{n}`")).collect();
                    if v.is_empty() {
                        "(none)".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                let view = |&i: &usize| set.views[i].name.clone();
                telemine_observe::out!(
                    "where the alerting runs (the instance holding the group's alerting relay, so that they see every partition whatever the number of instances): scored view(s) {}, view(s) over views {}, rule(s) {}; each instance relays the closed windows of view(s) {} there (one row per series and window, Arrow IPC)",
                    names(&mut d.scored.iter().map(view)),
                    names(&mut d.over.iter().map(view)),
                    names(&mut d.rules.iter().map(|&r| set.rules[r].name.clone())),
                    names(&mut d.views.iter().map(view)),
                );
            }
            for m in &cfg.models {
                for s in m.detector_settings().map_err(anyhow::Error::msg)? {
                    let values = s.values_per_series();
                    telemine_observe::out!(
                        "model `{}` on view `{}`: {} model features; state per series at most {values} values (~{:.1} KiB), at most {} series; online training keeps at most {} rows ({:.1} MiB)",
                        s.name,
                        m.view.get_ref(),
                        s.model_features.len(),
                        values as f64 * 8.0 / 1024.0,
                        s.max_series,
                        s.training_rows,
                        (s.training_rows * s.model_features.len() * 4) as f64 / (1024.0 * 1024.0)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::FAILURE),
    }
}

/// What `check` says of a view's placement: whether it scales out by
/// partition, and what it would cost otherwise.
fn placement_line(
    v: &telemine_sql::View,
    defs: &[telemine_sql::source::SourceDef],
    repartition: bool,
    group: &str,
) -> String {
    use telemine_sql::Placement;
    let source = v.source.and_then(|s| defs.get(s));
    match (v.placement(defs), source) {
        (Placement::PerPartition, Some(d)) => format!(
            "view `{}`: groups by the key of source `{}` ({}): computed per partition, scales out across instances at no extra cost",
            v.name,
            d.name,
            d.key.join(", ")
        ),
        (Placement::Repartitioned { by }, Some(d)) => {
            let by = if by.is_empty() {
                "one group over all records".to_string()
            } else {
                format!("`{}`", by.join("`, `"))
            };
            let key = if d.key.is_empty() {
                format!("source `{}` declares no `key`", d.name)
            } else {
                format!(
                    "not by the key of source `{}` ({})",
                    d.name,
                    d.key.join(", ")
                )
            };
            let mut sorted = v.keys.clone();
            sorted.sort();
            let topic = telemine_stream::repartition::topic(group, &d.name, &sorted);
            let how = if repartition {
                "repartitioned ([engine] repartition = true)"
            } else {
                "with [engine] repartition = true it would be repartitioned"
            };
            format!(
                "view `{}`: groups by {by}, {key}: its rows need every partition's records; {how} through topic `{topic}`, keyed by {by}: every record of `{}` is produced once more and read once more, by the instance holding its key's partition",
                v.name, d.name
            )
        }
        _ => format!(
            "view `{}`: a view over views: computed where its inputs' rows meet; bringing them together across instances is not built yet, so its instance runs alone in its consumer group",
            v.name
        ),
    }
}
