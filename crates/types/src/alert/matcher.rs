//! Label matchers, as Alertmanager writes them: `name="value"`,
//! `name!="value"`, `name=~"regex"`, `name!~"regex"` (quotes optional;
//! regular expressions are anchored at both ends).

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Why a matcher cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatcherError {
    #[error("`{0}` is not a label name (letters, digits and _, not starting with a digit)")]
    LabelName(String),
    #[error("`{value}` is not a regular expression: {why}")]
    Regex { value: String, why: String },
    #[error("`{0}`: expected name=value, name!=value, name=~regex or name!~regex")]
    NoOperator(String),
    #[error("`{text}`: expected =, !=, =~ or !~ after `{name}`")]
    BadOperator { text: String, name: String },
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    pub is_equal: bool,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.value, self.is_regex, self.is_equal)
            == (&other.name, &other.value, other.is_regex, other.is_equal)
    }
}

impl Matcher {
    pub fn new(
        name: &str,
        value: &str,
        is_regex: bool,
        is_equal: bool,
    ) -> Result<Matcher, MatcherError> {
        if !is_label_name(name) {
            return Err(MatcherError::LabelName(name.to_string()));
        }
        let regex = if is_regex {
            Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError::Regex {
                    value: value.to_string(),
                    why: e.to_string(),
                })?,
            )
        } else {
            None
        };
        Ok(Matcher {
            name: name.to_string(),
            value: value.to_string(),
            is_regex,
            is_equal,
            regex,
        })
    }

    /// Parses `name<op>value` with `op` one of `=`, `!=`, `=~`, `!~`.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let text = text.trim();
        let at = text
            .find(['=', '!'])
            .ok_or_else(|| MatcherError::NoOperator(text.to_string()))?;
        let (name, rest) = text.split_at(at);
        let (op, value) = ["!=", "=~", "!~", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v)))
            .ok_or_else(|| MatcherError::BadOperator {
                text: text.to_string(),
                name: name.trim().to_string(),
            })?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Matcher::new(name.trim(), value, op.ends_with('~'), !op.starts_with('!'))
    }

    /// Whether `labels` satisfy the matcher; a missing label is the empty
    /// string, as in Alertmanager.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let hit = match &self.regex {
            Some(r) => r.is_match(v),
            None => v == self.value,
        };
        hit == self.is_equal
    }
}

/// Whether every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// Alertmanager's API shape: `{"name", "value", "isRegex", "isEqual"}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            name: self.name.clone(),
            value: self.value.clone(),
            is_regex: self.is_regex,
            is_equal: self.is_equal,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Matcher, D::Error> {
        let w = Wire::deserialize(d)?;
        Matcher::new(&w.name, &w.value, w.is_regex, w.is_equal).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_four_operators() {
        let l = labels(&[("host", "h-12"), ("dc", "dc1")]);
        assert!(Matcher::parse("host=h-12").unwrap().matches(&l));
        assert!(Matcher::parse(r#"host="h-12""#).unwrap().matches(&l));
        assert!(!Matcher::parse("host!=h-12").unwrap().matches(&l));
        assert!(Matcher::parse("host=~h-1.").unwrap().matches(&l));
        assert!(
            !Matcher::parse("host=~h-1").unwrap().matches(&l),
            "anchored"
        );
        assert!(Matcher::parse("dc!~dc[23]").unwrap().matches(&l));
        assert!(
            Matcher::parse("rack=").unwrap().matches(&l),
            "missing is empty"
        );
        assert_eq!(
            Matcher::parse("dc =~ \"dc.*\"").unwrap().to_string(),
            "dc=~\"dc.*\""
        );
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        assert!(
            Matcher::parse("host")
                .unwrap_err()
                .to_string()
                .contains("expected name=value")
        );
        assert!(
            Matcher::parse("1host=a")
                .unwrap_err()
                .to_string()
                .contains("not a label name")
        );
        assert!(
            Matcher::parse("host=~(")
                .unwrap_err()
                .to_string()
                .contains("not a regular expression")
        );
    }

    #[test]
    fn round_trips_alertmanagers_json() {
        let m = Matcher::parse("host=~h-.*").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"name":"host","value":"h-.*","isRegex":true,"isEqual":true}"#
        );
        assert_eq!(serde_json::from_str::<Matcher>(&json).unwrap(), m);
    }
}
