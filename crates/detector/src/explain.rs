//! `anomaly_features`: which of the view's own columns made a row
//! unusual, in the words an operator reads — the column, whether it was
//! higher or lower than expected, and what was expected:
//! `power_avg higher than expected 352.1, temp_avg lower than expected 41.3`.
//!
//! A model may read derived features (a column's change, its distance
//! from its recent mean, …); their shares of the miss are added back to
//! the column they come from, so the explanation never names a feature
//! the analyst did not write.

/// The `n` columns with the largest `share`, worst first, each as
/// `NAME higher|lower than expected VALUE` (`as expected` where the value
/// is what was expected), joined by `", "`.
pub fn explain(names: &[String], x: &[f64], share: &[f64], expected: &[f64], n: usize) -> String {
    let mut order: Vec<usize> = (0..names.len().min(share.len())).collect();
    order.sort_by(|&a, &b| share[b].total_cmp(&share[a]));
    order
        .iter()
        .take(n)
        .map(|&j| {
            let (v, e) = (x.get(j).copied(), expected.get(j).copied());
            match (v, e) {
                (Some(v), Some(e)) if e.is_finite() && v > e => {
                    format!("{} higher than expected {}", names[j], number(e))
                }
                (Some(v), Some(e)) if e.is_finite() && v < e => {
                    format!("{} lower than expected {}", names[j], number(e))
                }
                (_, Some(e)) if e.is_finite() => format!("{} as expected {}", names[j], number(e)),
                _ => names[j].clone(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column names in an explanation [`explain`] wrote, worst first.
pub fn named(explanation: &str) -> impl Iterator<Item = &str> {
    explanation
        .split(", ")
        .filter_map(|part| part.split_whitespace().next())
}

/// `v` to four significant digits, without trailing zeros or an exponent
/// for everyday magnitudes.
fn number(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..=9).contains(&magnitude) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - magnitude).clamp(0, 8) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_columns_with_their_direction_and_expected_value() {
        let names: Vec<String> = ["cpu_avg", "power_avg", "temp_avg"]
            .map(String::from)
            .to_vec();
        let text = explain(
            &names,
            &[40.0, 412.0, 39.0],
            &[0.1, 5.0, 2.0],
            &[40.0, 352.123_4, 41.26],
            2,
        );
        assert_eq!(
            text,
            "power_avg higher than expected 352.1, temp_avg lower than expected 41.26"
        );
        assert_eq!(named(&text).collect::<Vec<_>>(), ["power_avg", "temp_avg"]);
    }

    #[test]
    fn numbers_read_as_an_operator_writes_them() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1234.56), "1235");
        assert_eq!(number(0.012_345), "0.01235");
        assert_eq!(number(-3.5), "-3.5");
        assert_eq!(number(2.0e12), "2.000e12");
    }
}
