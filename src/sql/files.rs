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
//! Rules know `@name` (default: the file name) and `@severity` (critical,
//! warning or info; default warning). Views take no metadata yet.

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics};

/// What a SQL file defines, from the folder it sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    View,
    Rule,
}

/// Alert severity, as Prometheus rule labels spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One `-- @key: value` line.
#[derive(Debug, Clone)]
pub struct Meta {
    pub key: String,
    pub value: String,
    pub line: usize,
    pub col: usize,
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
            out.push(Meta {
                key: key.trim().to_string(),
                value: value.trim().to_string(),
                line: i + 1,
                col,
            });
        }
    }
    out
}

/// Checks a file's metadata for its kind; returns (name, severity).
pub fn rule_meta(file: &SqlFile, diags: &mut Vec<Diagnostic>) -> (String, Severity) {
    let mut name = file.stem.clone();
    let mut severity = Severity::Warning;
    for m in &file.meta {
        match (file.kind, m.key.as_str()) {
            (Kind::Rule, "name") if is_label_value(&m.value) => name = m.value.clone(),
            (Kind::Rule, "name") => diags.push(Diagnostic::new(
                &file.path,
                m.line,
                m.col,
                format!("@name `{}` must be letters, digits and _ only", m.value),
            )),
            (Kind::Rule, "severity") => match m.value.as_str() {
                "critical" => severity = Severity::Critical,
                "warning" => severity = Severity::Warning,
                "info" => severity = Severity::Info,
                v => diags.push(Diagnostic::new(
                    &file.path,
                    m.line,
                    m.col,
                    format!("@severity `{v}` must be critical, warning or info"),
                )),
            },
            (Kind::Rule, k) => diags.push(Diagnostic::new(
                &file.path,
                m.line,
                m.col,
                format!("unknown rule metadata @{k} (known: @name, @severity)"),
            )),
            (Kind::View, k) => diags.push(Diagnostic::new(
                &file.path,
                m.line,
                m.col,
                format!("unknown view metadata @{k} (views take none)"),
            )),
        }
    }
    (name, severity)
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
    }
}
