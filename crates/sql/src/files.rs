//! Reading SQL files and their metadata header.
//!
//! Metadata lines come before the query, as SQL comments:
//!
//! ```sql
//! -- Any prose comment is fine.
//! -- @name: HostCpuSaturated
//! -- @severity: critical
//! SELECT …
//! ```
//!
//! Rules know, as Prometheus alerting rules do:
//!
//! - `@name` (default: the file name) and `@severity` (critical, warning
//!   or info; default warning), both also labels of every alert;
//! - `@for: 2m`: how long the condition must hold, over consecutive
//!   windows, before the alert fires (default 0: at once);
//! - `@keep_firing_for: 5m`: how long a firing alert stays firing after
//!   its condition stops holding (default 0);
//! - `@label.NAME: value`: extra labels;
//! - `@summary`, `@description`, `@runbook_url` and `@annotation.NAME`:
//!   annotations, templated with `{{ $labels.NAME }}` and
//!   `{{ $values.NAME }}` (checked against the rule's columns when it is
//!   planned).
//!
//! Views take no metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use telemine_types::alert::rule::Severity;
use telemine_types::diagnostic::{Diagnostic, Diagnostics};
use telemine_types::duration::parse_duration;

/// What a SQL file defines, from the folder it sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    View,
    Rule,
}

/// One `-- @key: value` line.
#[derive(Debug, Clone)]
pub struct Meta {
    pub key: String,
    pub value: String,
    pub line: usize,
    /// Column of the `@`.
    pub col: usize,
    /// Column of the value's first character.
    pub value_col: usize,
}

/// A rule's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMeta {
    pub name: String,
    pub severity: Severity,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    /// Where each label was set: (line, column of the `@`).
    pub label_at: BTreeMap<String, (usize, usize)>,
    /// (name, template text, line, column of the text).
    pub annotations: Vec<(String, String, usize, usize)>,
}

/// A SQL file as read from disk.
#[derive(Debug, Clone)]
pub struct SqlFile {
    pub path: PathBuf,
    pub kind: Kind,
    /// File stem: the view's table name or the rule's default name.
    pub stem: String,
    pub text: String,
    pub meta: Vec<Meta>,
}

impl SqlFile {
    /// A file of `kind` named `path` (its stem names the view or rule).
    pub fn new(path: PathBuf, kind: Kind, text: String) -> SqlFile {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = parse_meta(&text);
        SqlFile {
            path,
            kind,
            stem,
            text,
            meta,
        }
    }

    pub fn meta(&self, key: &str) -> Option<&Meta> {
        self.meta.iter().find(|m| m.key == key)
    }
}

/// Reads `dir/features/*.sql` and `dir/rules/*.sql`, sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<SqlFile>, Diagnostics> {
    if !dir.is_dir() {
        return Err(Diagnostics(vec![Diagnostic::new(
            dir,
            1,
            1,
            "SQL folder not found: expected features/*.sql and rules/*.sql here (set [sql] dir or --sql)",
        )]));
    }
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for (sub, kind) in [("features", Kind::View), ("rules", Kind::Rule)] {
        let folder = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        paths.sort();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push(SqlFile::new(path, kind, text)),
                Err(e) => diags.push(Diagnostic::new(&path, 1, 1, format!("cannot read: {e}"))),
            }
        }
    }
    if diags.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Collects `-- @key: value` lines from the leading comment block.
fn parse_meta(text: &str) -> Vec<Meta> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("--") else {
            break;
        };
        let body = comment.trim_start();
        if let Some(rest) = body.strip_prefix('@') {
            let col = line.len() - body.len() + 1;
            let (key, value) = rest.split_once(':').unwrap_or((rest, ""));
            let value_at = line.len() - value.trim_start().len();
            out.push(Meta {
                key: key.trim().to_string(),
                value: value.trim().to_string(),
                line: i + 1,
                col,
                value_col: line[..value_at].chars().count() + 1,
            });
        }
    }
    out
}

/// Checks a file's metadata for its kind.
pub fn rule_meta(file: &SqlFile, diags: &mut Vec<Diagnostic>) -> RuleMeta {
    let mut meta = RuleMeta {
        name: file.stem.clone(),
        severity: Severity::Warning,
        for_ms: 0,
        keep_firing_for_ms: 0,
        labels: BTreeMap::new(),
        label_at: BTreeMap::new(),
        annotations: Vec::new(),
    };
    for m in &file.meta {
        let mut err =
            |message: String| diags.push(Diagnostic::new(&file.path, m.line, m.col, message));
        if file.kind == Kind::View {
            err(format!(
                "unknown view metadata @{} (views take none)",
                m.key
            ));
            continue;
        }
        match m.key.as_str() {
            "name" if is_label_value(&m.value) => meta.name = m.value.clone(),
            "name" => err(format!(
                "@name `{}` must be letters, digits and _ only",
                m.value
            )),
            "severity" => match m.value.as_str() {
                "critical" => meta.severity = Severity::Critical,
                "warning" => meta.severity = Severity::Warning,
                "info" => meta.severity = Severity::Info,
                v => err(format!("@severity `{v}` must be critical, warning or info")),
            },
            "for" | "keep_firing_for" => match parse_duration(&m.value) {
                Ok(d) => {
                    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                    if m.key == "for" {
                        meta.for_ms = ms;
                    } else {
                        meta.keep_firing_for_ms = ms;
                    }
                }
                Err(e) => err(format!("@{}: {e}", m.key)),
            },
            "summary" | "description" | "runbook_url" => {
                meta.annotations
                    .push((m.key.clone(), m.value.clone(), m.line, m.value_col))
            }
            k => {
                if let Some(label) = k.strip_prefix("label.") {
                    if !telemine_types::alert::matcher::is_label_name(label) {
                        err(format!(
                            "@label.{label}: `{label}` is not a label name (letters, digits and _, not starting with a digit)"
                        ));
                    } else if matches!(label, "alertname" | "severity") {
                        err(format!(
                            "@label.{label}: set it with @{} instead",
                            if label == "alertname" {
                                "name"
                            } else {
                                "severity"
                            }
                        ));
                    } else if m.value.is_empty() {
                        err(format!("@label.{label} needs a value"));
                    } else {
                        meta.labels.insert(label.to_string(), m.value.clone());
                        meta.label_at.insert(label.to_string(), (m.line, m.col));
                    }
                } else if let Some(name) = k.strip_prefix("annotation.") {
                    if telemine_types::alert::matcher::is_label_name(name) {
                        meta.annotations.push((
                            name.to_string(),
                            m.value.clone(),
                            m.line,
                            m.value_col,
                        ));
                    } else {
                        err(format!(
                            "@annotation.{name}: `{name}` is not an annotation name (letters, digits and _)"
                        ));
                    }
                } else {
                    err(format!(
                        "unknown rule metadata @{k} (known: @name, @severity, @for, @keep_firing_for, @label.NAME, @summary, @description, @runbook_url, @annotation.NAME)"
                    ));
                }
            }
        }
    }
    meta
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_from_the_leading_comments_only() {
        let m = parse_meta(
            "-- A rule.\n--   @severity: critical\n-- @name: X\nSELECT 1\n-- @name: Y\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].key.as_str(), m[0].value.as_str(), m[0].line, m[0].col),
            ("severity", "critical", 2, 6)
        );
        assert_eq!(m[1].value, "X");
        assert_eq!(m[1].value_col, 11);
    }

    fn rule(text: &str) -> (RuleMeta, Vec<Diagnostic>) {
        let file = SqlFile::new(PathBuf::from("rules/r.sql"), Kind::Rule, text.to_string());
        let mut diags = Vec::new();
        (rule_meta(&file, &mut diags), diags)
    }

    #[test]
    fn rule_metadata_in_full() {
        let (m, diags) = rule(
            "-- @name: HostHot\n-- @for: 2m\n-- @keep_firing_for: 30s\n-- @label.team: infra\n-- @summary: {{ $labels.host }} is hot\n-- @runbook_url: https://runbooks/hot\n-- @annotation.dashboard: https://grafana/d/hosts\nSELECT 1",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!((m.for_ms, m.keep_firing_for_ms), (120_000, 30_000));
        assert_eq!(m.labels["team"], "infra");
        let names: Vec<&str> = m.annotations.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(names, ["summary", "runbook_url", "dashboard"]);
        assert_eq!((m.annotations[0].2, m.annotations[0].3), (5, 14));
    }

    #[test]
    fn bad_rule_metadata_is_reported_where_it_is() {
        let (_, diags) =
            rule("-- @for: soon\n-- @label.severity: x\n--  @labels: a\n-- @label.1x: y\nSELECT 1");
        let at: Vec<(usize, usize)> = diags.iter().map(|d| (d.line, d.col)).collect();
        assert_eq!(at, [(1, 4), (2, 4), (3, 5), (4, 4)]);
        assert!(
            diags[0].message.starts_with("@for: "),
            "{}",
            diags[0].message
        );
        assert!(diags[1].message.contains("@severity"));
        assert!(diags[2].message.contains("unknown rule metadata @labels"));
        assert!(diags[3].message.contains("not a label name"));
    }
}
