//! Window functions in a view's FROM clause, and their rewrite to the
//! table that holds a window's rows:
//!
//! - `TUMBLE(source, time_column, INTERVAL '1 minute')` — fixed windows;
//! - `HOP(source, time_column, INTERVAL '1 second', INTERVAL '1 minute')` —
//!   windows of the size (the last argument) starting every slide (the
//!   third), as Flink's `HOP` orders them; the size is a multiple of the
//!   slide;
//! - `SESSION(source, time_column, INTERVAL '5 minutes')` — per key (the
//!   view's GROUP BY columns other than the window bounds), a window lasts
//!   while records keep arriving less than the gap apart; it ends one gap
//!   after its last record.
//!
//! The engine, not DataFusion, decides which rows belong to a closing
//! window. A view reads them from an input table with the source's columns
//! plus `window_start` and `window_end`; the rewrite swaps the call for
//! that table's name, keeping the alias, so the rest of the query is plain
//! DataFusion SQL.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, ObjectNamePart, Spanned, Statement,
    TableFactor, VisitMut, VisitorMut,
};

use telemine_types::duration::parse_duration;

/// Column with the inclusive start of a row's window.
pub const WINDOW_START: &str = "window_start";
/// Column with the exclusive end of a row's window.
pub const WINDOW_END: &str = "window_end";

/// The kind of window and its lengths, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed windows of `size_ms`, aligned to the Unix epoch.
    Tumble,
    /// Windows of `size_ms` starting every `slide_ms` (aligned to the
    /// epoch); `size_ms` is a multiple of `slide_ms`.
    Hop { slide_ms: i64 },
    /// Per key, records less than `size_ms` (the gap) apart.
    Session,
}

/// A window over one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub source: String,
    pub time_column: String,
    pub kind: WindowKind,
    /// Window length (TUMBLE, HOP) or gap (SESSION), in milliseconds.
    pub size_ms: i64,
}

impl WindowSpec {
    /// The grid windows are aligned to: the slide for HOP, the size
    /// otherwise.
    pub fn step_ms(&self) -> i64 {
        match self.kind {
            WindowKind::Hop { slide_ms } => slide_ms,
            _ => self.size_ms,
        }
    }

    /// Start of the grid cell (window for TUMBLE, pane for HOP) holding `ts`.
    pub fn start_of(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.step_ms())
    }
}

/// A 1-based (line, column) in a SQL file.
pub type Position = (usize, usize);

/// A problem with a window call, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Replaces the window function (`TUMBLE`, `HOP` or `SESSION`) in `stmt`'s
/// FROM clause with `input_table`. Returns the window and the call's (line,
/// column), or `Ok(None)` when there is none.
pub fn rewrite_window(
    stmt: &mut Statement,
    input_table: &str,
) -> Result<Option<(WindowSpec, Position)>, WindowError> {
    let mut v = WindowRewriter {
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
                message: "a view windows exactly one source (one TUMBLE, HOP or SESSION per view); to combine two streams, join two views in a third".into(),
            })
        }
    }
}

struct WindowRewriter<'a> {
    input_table: &'a str,
    found: Vec<(WindowSpec, (usize, usize))>,
    error: Option<WindowError>,
}

impl VisitorMut for WindowRewriter<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        let pos = position(tf);
        if let TableFactor::Table {
            name,
            args: args @ Some(_),
            ..
        } = tf
        {
            let function = name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_ascii_uppercase())
                .unwrap_or_default();
            let Some(usage) = usage(&function) else {
                return ControlFlow::Continue(());
            };
            let list = args.take().map(|a| a.args).unwrap_or_default();
            match parse_args(&function, usage, &list, pos) {
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

fn usage(function: &str) -> Option<&'static str> {
    Some(match function {
        "TUMBLE" => "write TUMBLE(source, time_column, INTERVAL '1 minute')",
        "HOP" => {
            "write HOP(source, time_column, INTERVAL '<slide>', INTERVAL '<size>'), e.g. HOP(telemetry, ts, INTERVAL '10 seconds', INTERVAL '1 minute')"
        }
        "SESSION" => "write SESSION(source, time_column, INTERVAL '<gap>')",
        _ => return None,
    })
}

fn parse_args(
    function: &str,
    usage: &str,
    args: &[FunctionArg],
    at: (usize, usize),
) -> Result<WindowSpec, WindowError> {
    let err = |(line, col): (usize, usize), message: String| WindowError { line, col, message };
    let exprs: Vec<&Expr> = args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let want = if function == "HOP" { 4 } else { 3 };
    if exprs.len() != want || args.len() != want {
        return Err(err(
            at,
            format!("{function} takes {want} arguments: {usage}"),
        ));
    }
    let ident = |e: &Expr, what: &str| match e {
        Expr::Identifier(i) => Ok(i.value.clone()),
        other => Err(err(
            position(other),
            format!("{function}'s {what} must be a name: {usage}"),
        )),
    };
    let interval = |e: &Expr, what: &str| -> Result<i64, WindowError> {
        let Expr::Interval(iv) = e else {
            return Err(err(
                position(e),
                format!("{function}'s {what} must be an INTERVAL: {usage}"),
            ));
        };
        let value = iv.value.to_string();
        let value = value.trim_matches('\'');
        let text = match &iv.leading_field {
            Some(unit) => format!("{value} {unit}"),
            None => value.to_string(),
        };
        let d = parse_duration(&text)
            .map_err(|why| err(position(e), format!("{function}'s {what}: {why}")))?;
        let ms = d.as_millis() as i64;
        if ms <= 0 {
            return Err(err(
                position(e),
                format!("{function}'s {what} must be positive"),
            ));
        }
        Ok(ms)
    };
    let source = ident(exprs[0], "first argument (the source)")?;
    let time_column = ident(exprs[1], "second argument (the event-time column)")?;
    let (kind, size_ms) = match function {
        "TUMBLE" => (WindowKind::Tumble, interval(exprs[2], "window size")?),
        "SESSION" => (WindowKind::Session, interval(exprs[2], "gap")?),
        _ => {
            let slide_ms = interval(exprs[2], "slide (third argument)")?;
            let size_ms = interval(exprs[3], "size (fourth argument)")?;
            if slide_ms >= size_ms {
                return Err(err(
                    position(exprs[2]),
                    format!(
                        "HOP's slide ({slide_ms} ms) must be shorter than its size ({size_ms} ms): the slide comes first, as in Flink ({usage}); for windows that do not overlap use TUMBLE"
                    ),
                ));
            }
            if size_ms % slide_ms != 0 {
                return Err(err(
                    position(exprs[3]),
                    format!(
                        "HOP's size ({size_ms} ms) must be a whole number of slides ({slide_ms} ms)"
                    ),
                ));
            }
            (WindowKind::Hop { slide_ms }, size_ms)
        }
    };
    Ok(WindowSpec {
        source,
        time_column,
        kind,
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
        let r = rewrite_window(&mut stmt, "__in").map(|o| o.map(|(spec, _)| spec));
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
                kind: WindowKind::Tumble,
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
    fn hop_and_session_parse_and_check_their_lengths() {
        let (r, sql) =
            rewrite("SELECT 1 FROM HOP(telemetry, ts, INTERVAL '1 second', INTERVAL '1 minute') h");
        let spec = r.unwrap().unwrap();
        assert_eq!(spec.kind, WindowKind::Hop { slide_ms: 1_000 });
        assert_eq!((spec.size_ms, spec.step_ms()), (60_000, 1_000));
        assert_eq!(sql, "SELECT 1 FROM __in h");
        let (r, _) = rewrite("SELECT 1 FROM HOP(t, ts, INTERVAL '1 minute', INTERVAL '1 second')");
        assert!(r.unwrap_err().message.contains("slide comes first"));
        let (r, _) = rewrite("SELECT 1 FROM HOP(t, ts, INTERVAL '7 seconds', INTERVAL '1 minute')");
        assert!(r.unwrap_err().message.contains("whole number of slides"));
        let (r, _) = rewrite("SELECT 1 FROM SESSION(t, ts, INTERVAL '5 minutes')");
        let spec = r.unwrap().unwrap();
        assert_eq!((spec.kind, spec.size_ms), (WindowKind::Session, 300_000));
        let (r, _) = rewrite("SELECT 1 FROM SESSION(t, ts)");
        assert!(r.unwrap_err().message.contains("3 arguments"));
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let w = WindowSpec {
            source: "s".into(),
            time_column: "ts".into(),
            kind: WindowKind::Tumble,
            size_ms: 60_000,
        };
        assert_eq!(w.start_of(125_000), 120_000);
        assert_eq!(w.start_of(-1), -60_000);
    }
}
