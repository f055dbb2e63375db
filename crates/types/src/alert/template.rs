//! Annotation templates: text with `{{ $labels.NAME }}` and
//! `{{ $values.NAME }}` filled in from the alert's row. Parsed once when
//! the rule is loaded, so `telemine check` reports a bad reference at its
//! column.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
    Value(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A template error and the 0-based character offset it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    /// Parses `text`; `labels` and `values` are the names the rule's
    /// alerts will carry, so a reference to anything else is an error.
    pub fn parse(
        text: &str,
        labels: &[String],
        values: &[String],
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| TemplateError {
                offset: char_offset(text, offset + open),
                message: "`{{` without a closing `}}`".into(),
            })?;
            let inner = after[..close].trim();
            let err = |message: String| TemplateError {
                offset: char_offset(text, offset + open),
                message,
            };
            let part = if let Some(name) = inner.strip_prefix("$labels.") {
                if !labels.iter().any(|l| l == name) {
                    return Err(err(format!(
                        "the alerts carry no label `{name}` (they carry: {})",
                        labels.join(", ")
                    )));
                }
                Part::Label(name.to_string())
            } else if let Some(name) = inner.strip_prefix("$values.") {
                if !values.iter().any(|v| v == name) {
                    return Err(err(format!(
                        "the rule selects no value column `{name}` (it selects: {})",
                        if values.is_empty() {
                            "none".to_string()
                        } else {
                            values.join(", ")
                        }
                    )));
                }
                Part::Value(name.to_string())
            } else {
                return Err(err(format!(
                    "`{{{{ {inner} }}}}`: write {{{{ $labels.NAME }}}} or {{{{ $values.NAME }}}}"
                )));
            };
            parts.push(part);
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text with the alert's labels and values filled in. Numbers print
    /// with at most two decimals; a NULL value prints as `null`.
    pub fn render(
        &self,
        labels: &BTreeMap<String, String>,
        values: &serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Label(n) => out.push_str(labels.get(n).map(String::as_str).unwrap_or("")),
                Part::Value(n) => match values.get(n) {
                    Some(serde_json::Value::Number(x)) => match x.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                            out.push_str(&format!("{}", f as i64))
                        }
                        Some(f) => {
                            let s = format!("{f:.2}");
                            out.push_str(s.trim_end_matches('0').trim_end_matches('.'))
                        }
                        None => out.push_str(&x.to_string()),
                    },
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(v) => out.push_str(&v.to_string()),
                    None => out.push_str("null"),
                },
            }
        }
        out
    }
}

fn char_offset(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fills_in_labels_and_values() {
        let t = Template::parse(
            "CPU of {{ $labels.host }} at {{$values.cpu_avg}}% ({{ $values.n }} samples, {{ $values.note }})",
            &names(&["host"]),
            &names(&["cpu_avg", "n", "note"]),
        )
        .unwrap();
        let labels = [("host".to_string(), "h-1".to_string())].into();
        let values = serde_json::json!({"cpu_avg": 91.256, "n": 60.0, "note": null});
        let values = values.as_object().unwrap();
        assert_eq!(
            t.render(&labels, values),
            "CPU of h-1 at 91.26% (60 samples, null)"
        );
    }

    #[test]
    fn errors_point_at_the_reference() {
        let e = Template::parse("héllo {{ $labels.rack }}", &names(&["host"]), &[]).unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(
            e.message.contains("no label `rack`") && e.message.contains("host"),
            "{}",
            e.message
        );
        let e = Template::parse("x {{ $values.cpu", &[], &names(&["cpu"])).unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (2, "`{{` without a closing `}}`")
        );
        let e = Template::parse("{{ .Labels.host }}", &[], &[]).unwrap_err();
        assert!(e.message.contains("$labels.NAME"), "{}", e.message);
    }
}
