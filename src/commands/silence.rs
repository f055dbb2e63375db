//! `telemine silence add|list|expire`: silences, stored in the compacted
//! silences topic (`[alerting] silences_topic`) so every instance sees
//! the same set.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use telemine::config::Config;
use telemine_alerting::silence::{self, Silence, Silences};
use telemine_types::alert::matcher::Matcher;
use telemine_types::alert::{format_ms, parse_ms};

use crate::cli::{SilenceClock, SilenceCommand};

pub async fn silence(command: SilenceCommand) -> anyhow::Result<ExitCode> {
    match command {
        SilenceCommand::Add {
            config,
            matchers,
            start,
            duration,
            end,
            created_by,
            comment,
            clock,
        } => {
            let cfg = Config::load(&config).map_err(|d| anyhow!("{d}"))?;
            let matchers = matchers
                .iter()
                .map(|m| Matcher::parse(m).map_err(|e| anyhow!("--matcher {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if matchers.is_empty() {
                bail!("a silence needs at least one --matcher (it would mute every alert)");
            }
            let now = now_of(&clock)?;
            let start_ms = match start {
                Some(t) => parse_time(&t).context("--start")?,
                None => now,
            };
            let end_ms = match (end, duration) {
                (Some(t), None) => parse_time(&t).context("--end")?,
                (None, Some(d)) => {
                    let d = telemine_types::duration::parse_duration(&d)
                        .map_err(|e| anyhow!("--duration: {e}"))?;
                    start_ms + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
                }
                _ => bail!("give the silence an end: --duration 2h or --end 2026-11-27T18:00:00Z"),
            };
            if end_ms <= start_ms {
                bail!(
                    "the silence would end ({}) before it starts ({})",
                    format_ms(end_ms),
                    format_ms(start_ms)
                );
            }
            let id = silence::new_id();
            let created_by = created_by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "telemine".into());
            let s = Silence::new(id.clone(), matchers, start_ms, end_ms, created_by, comment);
            write(&cfg, &s).await?;
            telemine_observe::out!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::List { config, all, clock } => {
            let cfg = Config::load(&config).map_err(|d| anyhow!("{d}"))?;
            let now = now_of(&clock)?;
            for s in read(&cfg).await?.all() {
                let state = silence::state_at(s, now);
                if all || state != "expired" {
                    let matchers: Vec<String> =
                        s.matchers.iter().map(ToString::to_string).collect();
                    telemine_observe::out!(
                        "{}  {state:<7}  {} → {}  {{{}}}  {}: {}",
                        s.id,
                        s.starts_at,
                        s.ends_at,
                        matchers.join(", "),
                        s.created_by,
                        s.comment
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SilenceCommand::Expire { config, id, clock } => {
            let cfg = Config::load(&config).map_err(|d| anyhow!("{d}"))?;
            let silences = read(&cfg).await?;
            let Some(s) = silences.get(&id) else {
                bail!(
                    "no silence `{id}` in {} (`telemine silence list --all` shows them)",
                    cfg.alerting.silences_topic
                );
            };
            let now = now_of(&clock)?;
            if s.ends_at_ms <= now {
                telemine_observe::note!("silence {id} had already ended at {}", s.ends_at);
                return Ok(ExitCode::SUCCESS);
            }
            write(&cfg, &s.expired(now)).await?;
            telemine_observe::note!(
                "silence {id} expired at {}",
                format_ms(now.max(s.starts_at_ms))
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// 128 random bits as hex, from the standard library's per-process
/// random hash keys and the clock.
fn now_of(clock: &SilenceClock) -> anyhow::Result<i64> {
    match &clock.now {
        Some(t) => parse_time(t).context("--now"),
        None => Ok(chrono::Utc::now().timestamp_millis()),
    }
}

fn parse_time(text: &str) -> anyhow::Result<i64> {
    parse_ms(text)
        .map_err(|e| anyhow!("`{text}` is not an RFC 3339 time such as 2026-11-27T18:00:00Z: {e}"))
}

async fn write(cfg: &Config, s: &Silence) -> anyhow::Result<()> {
    Ok(silence::write_to_topic(&cfg.kafka, &cfg.alerting.silences_topic, s).await?)
}

/// The silences topic, read to its end.
pub async fn read(cfg: &Config) -> anyhow::Result<Silences> {
    Ok(silence::read_topic(
        &cfg.kafka,
        &cfg.alerting.silences_topic,
        Duration::from_secs(30),
    )
    .await?)
}
