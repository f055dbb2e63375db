//! `TUMBLE(source, time_column, INTERVAL '1 minute')` in a view's FROM
//! clause, and its rewrite to the table that holds a window's rows.
//!
//! The engine, not DataFusion, decides which rows belong to a closing
//! window. A view reads them from an input table with the source's columns
//! plus `window_start` and `window_end`; the rewrite swaps the `TUMBLE(…)`
//! call for that table's name, keeping the alias, so the rest of the query
//! is plain DataFusion SQL.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, ObjectNamePart, Spanned, Statement,
    TableFactor, VisitMut, VisitorMut,
};

use crate::duration::parse_duration;

/// Column with the inclusive start of a row's window.
pub const WINDOW_START: &str = "window_start";
/// Column with the exclusive end of a row's window.
pub const WINDOW_END: &str = "window_end";

/// A tumbling window over one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub source: String,
    pub time_column: String,
    /// Window length in milliseconds; windows are aligned to the Unix epoch.
    pub size_ms: i64,
}

impl WindowSpec {
    /// Start of the window holding `ts`.
    pub fn start_of(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.size_ms)
    }
}

/// A 1-based (line, column) in a SQL file.
pub type Position = (usize, usize);

/// A problem with a `TUMBLE` call, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Replaces the `TUMBLE(...)` table function in `stmt` with `input_table`.
/// Returns the window and the call's (line, column), or `Ok(None)` when
/// there is no `TUMBLE`.
pub fn rewrite_tumble(
    stmt: &mut Statement,
    input_table: &str,
) -> Result<Option<(WindowSpec, Position)>, WindowError> {
    let mut v = TumbleRewriter {
        input_table,
        found: Vec::new(),
        error: None,
    };
    let _ = stmt.visit(&mut v);
    if let Some(e) = v.error {
        return Err(e);
    }
    match v.found.len() {
        0 => Ok(None),
        1 => Ok(v.found.pop()),
        _ => {
            let (_, (line, col)) = v.found[1];
            Err(WindowError {
                line,
                col,
                message: "a view may window only one source (one TUMBLE per view)".into(),
            })
        }
    }
}

struct TumbleRewriter<'a> {
    input_table: &'a str,
    found: Vec<(WindowSpec, (usize, usize))>,
    error: Option<WindowError>,
}

impl VisitorMut for TumbleRewriter<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        let pos = position(tf);
        if let TableFactor::Table {
            name,
            args: args @ Some(_),
            ..
        } = tf
        {
            let is_tumble = name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .is_some_and(|i| i.value.eq_ignore_ascii_case("tumble"));
            if !is_tumble {
                return ControlFlow::Continue(());
            }
            let list = args.take().map(|a| a.args).unwrap_or_default();
            match parse_args(&list, pos) {
                Ok(spec) => {
                    self.found.push((spec, pos));
                    *name = ObjectName::from(vec![Ident::new(self.input_table)]);
                }
                Err(e) => {
                    self.error = Some(e);
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }
}

fn position(node: &impl Spanned) -> (usize, usize) {
    let s = node.span().start;
    (s.line as usize, s.column as usize)
}

const USAGE: &str = "write TUMBLE(source, time_column, INTERVAL '1 minute')";

fn parse_args(args: &[FunctionArg], at: (usize, usize)) -> Result<WindowSpec, WindowError> {
    let err = |(line, col): (usize, usize), message: String| WindowError { line, col, message };
    let exprs: Vec<&Expr> = args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    if exprs.len() != 3 || args.len() != 3 {
        return Err(err(at, format!("TUMBLE takes 3 arguments: {USAGE}")));
    }
    let ident = |e: &Expr, what: &str| match e {
        Expr::Identifier(i) => Ok(i.value.clone()),
        other => Err(err(
            position(other),
            format!("TUMBLE's {what} must be a name: {USAGE}"),
        )),
    };
    let source = ident(exprs[0], "first argument (the source)")?;
    let time_column = ident(exprs[1], "second argument (the event-time column)")?;
    let size = match exprs[2] {
        Expr::Interval(iv) => {
            let value = iv.value.to_string();
            let value = value.trim_matches('\'');
            let text = match &iv.leading_field {
                Some(unit) => format!("{value} {unit}"),
                None => value.to_string(),
            };
            parse_duration(&text)
                .map_err(|e| err(position(exprs[2]), format!("TUMBLE's window size: {e}")))?
        }
        other => {
            return Err(err(
                position(other),
                format!("TUMBLE's third argument must be an INTERVAL: {USAGE}"),
            ));
        }
    };
    let size_ms = size.as_millis() as i64;
    if size_ms <= 0 {
        return Err(err(
            position(exprs[2]),
            "TUMBLE's window size must be positive".into(),
        ));
    }
    Ok(WindowSpec {
        source,
        time_column,
        size_ms,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn rewrite(sql: &str) -> (Result<Option<WindowSpec>, WindowError>, String) {
        let mut stmt = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        let r = rewrite_tumble(&mut stmt, "__in").map(|o| o.map(|(spec, _)| spec));
        (r, stmt.to_string())
    }

    #[test]
    fn rewrites_tumble_to_the_input_table() {
        let (r, sql) = rewrite(
            "SELECT host, count(*) FROM TUMBLE(telemetry, ts, INTERVAL '1 minute') AS t GROUP BY host",
        );
        assert_eq!(
            r.unwrap().unwrap(),
            WindowSpec {
                source: "telemetry".into(),
                time_column: "ts".into(),
                size_ms: 60_000
            }
        );
        assert_eq!(sql, "SELECT host, count(*) FROM __in AS t GROUP BY host");
        let (r, _) = rewrite("SELECT 1 FROM TUMBLE(m, ts, INTERVAL '5' SECOND)");
        assert_eq!(r.unwrap().unwrap().size_ms, 5_000);
    }

    #[test]
    fn reports_bad_arguments_with_positions() {
        let (r, _) = rewrite("SELECT 1\nFROM TUMBLE(telemetry, ts, 60)");
        let e = r.unwrap_err();
        assert_eq!((e.line, e.col), (2, 28));
        assert!(e.message.contains("INTERVAL"));
        let (r, _) = rewrite("SELECT 1 FROM TUMBLE(telemetry, ts)");
        assert!(r.unwrap_err().message.contains("3 arguments"));
        let (r, _) = rewrite("SELECT 1 FROM telemetry");
        assert_eq!(r.unwrap(), None);
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let w = WindowSpec {
            source: "s".into(),
            time_column: "ts".into(),
            size_ms: 60_000,
        };
        assert_eq!(w.start_of(125_000), 120_000);
        assert_eq!(w.start_of(-1), -60_000);
    }
}
