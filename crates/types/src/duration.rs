//! Durations as people write them: `"5s"`, `"250ms"`, `"1 minute"`, `"2h"`.

use std::time::Duration;

use thiserror::Error;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration: write a number and a unit, e.g. \"5s\" or \"1 minute\"")]
    NotANumber(String),
    #[error("`{text}` has no unit: write e.g. \"{number}s\"")]
    NoUnit { text: String, number: String },
    #[error("`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
}

/// Parses a duration: a number followed by a unit (ms, s, m, h, d, or their
/// English names, singular or plural), optionally separated by a space.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_string()))?;
    let unit_ms = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "" => {
            return Err(DurationError::NoUnit {
                text: text.to_string(),
                number: num.to_string(),
            });
        }
        u => {
            return Err(DurationError::UnknownUnit {
                text: text.to_string(),
                unit: u.to_string(),
            });
        }
    };
    Ok(Duration::from_millis((value * unit_ms).round() as u64))
}

/// Serde helper: a duration field written as a string.
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1 minute").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("1.5 hours").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }
}
