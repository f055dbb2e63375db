//! Silences: label matchers and a time range during which matching alerts
//! are not notified. They are stored as JSON, keyed by id, in a compacted
//! topic so every instance sees the same set; expiring one rewrites it
//! with its end set to the time it was expired.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use telemine_types::alert::matcher::{Matcher, all_match};
use telemine_types::alert::{format_ms, parse_ms};

/// Why a message of the silences topic is not a silence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("not a silence's JSON: {0}")]
    Json(String),
    #[error("`{text}`: {why}")]
    Time { text: String, why: String },
    #[error("silence {0} has no matchers")]
    NoMatchers(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    /// RFC 3339.
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    #[serde(skip)]
    pub starts_at_ms: i64,
    #[serde(skip)]
    pub ends_at_ms: i64,
}

impl Silence {
    pub fn new(
        id: String,
        matchers: Vec<Matcher>,
        starts_at_ms: i64,
        ends_at_ms: i64,
        created_by: String,
        comment: String,
    ) -> Silence {
        Silence {
            id,
            matchers,
            starts_at: format_ms(starts_at_ms),
            ends_at: format_ms(ends_at_ms),
            created_by,
            comment,
            starts_at_ms,
            ends_at_ms,
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Silence, SilenceError> {
        let mut s: Silence =
            serde_json::from_slice(bytes).map_err(|e| SilenceError::Json(e.to_string()))?;
        let ms = |t: &str| {
            parse_ms(t).map_err(|e| SilenceError::Time {
                text: t.to_string(),
                why: e.to_string(),
            })
        };
        s.starts_at_ms = ms(&s.starts_at)?;
        s.ends_at_ms = ms(&s.ends_at)?;
        if s.matchers.is_empty() {
            return Err(SilenceError::NoMatchers(s.id));
        }
        Ok(s)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Active from its start up to (not including) its end.
    pub fn active_at(&self, t: i64) -> bool {
        self.starts_at_ms <= t && t < self.ends_at_ms
    }

    pub fn mutes(&self, labels: &BTreeMap<String, String>, t: i64) -> bool {
        self.active_at(t) && all_match(&self.matchers, labels)
    }

    /// The same silence, ending at `t` (if it had not ended already).
    pub fn expired(&self, t: i64) -> Silence {
        let mut s = self.clone();
        if t < s.ends_at_ms {
            s.ends_at_ms = t.max(s.starts_at_ms);
            s.ends_at = format_ms(s.ends_at_ms);
        }
        s
    }
}

/// The current silences, by id, as the silences topic last said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Silences {
    by_id: BTreeMap<String, Silence>,
}

impl Silences {
    /// Applies one message of the silences topic: a silence, or (no value)
    /// the removal of the id.
    pub fn apply(&mut self, id: &str, silence: Option<Silence>) {
        match silence {
            Some(s) => {
                self.by_id.insert(id.to_string(), s);
            }
            None => {
                self.by_id.remove(id);
            }
        }
    }

    /// The silences a read of the silences topic holds.
    pub fn from_table(table: &BTreeMap<String, Option<Vec<u8>>>) -> Silences {
        let mut silences = Silences::default();
        for (id, value) in table {
            silences.apply_message(id, value.as_deref());
        }
        silences
    }

    /// Applies a message of the silences topic as read: a value that is
    /// not a silence is logged and skipped.
    pub fn apply_message(&mut self, key: &str, value: Option<&[u8]>) {
        match value.map(Silence::from_json) {
            None => self.apply(key, None),
            Some(Ok(s)) => self.apply(key, Some(s)),
            Some(Err(e)) => {
                tracing::warn!(key, error = %e, "a message on the silences topic is not a silence; skipped")
            }
        }
    }

    pub fn mutes(&self, labels: &BTreeMap<String, String>, t: i64) -> bool {
        self.by_id.values().any(|s| s.mutes(labels, t))
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Silence> {
        self.by_id.values()
    }
}

/// Writes `s` to the silences topic (`[alerting] silences_topic`,
/// created compacted if missing) and waits until the broker has it.
pub async fn write_to_topic(
    kafka: &telemine_connectors::kafka::KafkaClientConfig,
    topic: &str,
    s: &Silence,
) -> Result<(), telemine_connectors::ConnectorError> {
    use telemine_connectors::kafka::{KafkaProducer, create_compacted_topic};
    create_compacted_topic(kafka, topic).await?;
    let mut producer = KafkaProducer::new(kafka)?;
    producer
        .send(
            topic,
            Some(s.id.as_bytes()),
            s.to_json().as_bytes(),
            &[("content-type", b"application/json")],
        )
        .await?;
    producer.acknowledged(topic).await?;
    Ok(())
}

/// The silences topic, read to its end (at most `wait` for the brokers).
pub async fn read_topic(
    kafka: &telemine_connectors::kafka::KafkaClientConfig,
    topic: &str,
    wait: std::time::Duration,
) -> Result<Silences, telemine_connectors::ConnectorError> {
    use telemine_connectors::kafka::{TableReader, create_compacted_topic};
    create_compacted_topic(kafka, topic).await?;
    let (_, table) = TableReader::open(kafka, topic, wait).await?;
    Ok(Silences::from_table(&table))
}

/// A new silence id: 32 hex digits from the time, the process and the
/// standard library's random hasher keys.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// What a silence is at `now`: "active", "pending" (not started) or
/// "expired".
pub fn state_at(s: &Silence, now: i64) -> &'static str {
    if s.active_at(now) {
        "active"
    } else if now < s.starts_at_ms {
        "pending"
    } else {
        "expired"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_between_start_and_end_and_round_trips() {
        let s = Silence::new(
            "s1".into(),
            vec![Matcher::parse("host=h1").unwrap()],
            1_000,
            61_000,
            "ops".into(),
            "maintenance".into(),
        );
        let labels = [("host".to_string(), "h1".to_string())].into();
        assert!(!s.mutes(&labels, 999));
        assert!(s.mutes(&labels, 1_000));
        assert!(!s.mutes(&labels, 61_000));
        assert!(!s.expired(30_000).mutes(&labels, 30_000));
        let back = Silence::from_json(s.to_json().as_bytes()).unwrap();
        assert_eq!(back, s);
        assert!(Silence::from_json(br#"{"id":"x","matchers":[],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2026-01-01T01:00:00Z","createdBy":"","comment":""}"#).unwrap_err().to_string().contains("no matchers"));
    }
}
