//! The sandbox: what analysts' SQL may do.
//!
//! A SQL file is one `SELECT` that reads the declared sources (through a
//! window function), feature views and reference tables — nothing else.
//! This pass runs on the parsed statement before DataFusion sees it and
//! refuses, with the reason and the place:
//! - any statement that is not a query (DDL, DML, `COPY`, `SET`, `EXPLAIN`,
//!   `CREATE EXTERNAL TABLE`, …), also when nested in a query;
//! - `SELECT … INTO`;
//! - `WITH RECURSIVE` (it can run without end);
//! - table functions other than the window functions (`generate_series`
//!   and `range` can produce unbounded rows);
//! - qualified or quoted table names (`information_schema.tables`,
//!   `'/etc/passwd'`, `'s3://…'`): only bare names of declared tables;
//! - functions that read files or the network (`read_csv`, `read_parquet`,
//!   …), whether or not they are registered.
//!
//! - functions whose output size comes from an argument (`repeat`, `lpad`,
//!   `rpad`, `array_repeat`, `array_resize`, and the array forms of
//!   `range` / `generate_series`) unless that size is a literal of at
//!   most [`MAX_GENERATED`]: one expression could otherwise build
//!   gigabytes inside a single kernel call, where no memory pool or time
//!   limit can stop it;
//! - `CROSS JOIN` (it multiplies rows without a key: join on a key). A
//!   cross product written otherwise (`JOIN … ON true`, a comma join with
//!   no condition relating its sides) is refused after planning, by
//!   `planner::has_cross_product`.
//!
//! The session itself backs this up: no table functions, no URL tables, no
//! information schema, a memory pool per session and no spill files (see
//! `planner::new_context`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, JoinOperator, ObjectName,
    Query, Select, Spanned, Statement, TableFactor, UnaryOperator, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::tokenizer::Span;

/// Table functions the engine itself rewrites (see `window.rs`).
pub const WINDOW_FUNCTIONS: [&str; 3] = ["tumble", "hop", "session"];

/// Functions that read files or the network in DataFusion and its usual
/// extensions. Refused by name even though none is registered, so the
/// message says why instead of "invalid function".
const IO_FUNCTIONS: &[&str] = &[
    "read_csv",
    "read_json",
    "read_ndjson",
    "read_parquet",
    "read_avro",
    "read_arrow",
    "parquet_metadata",
    "list_files",
    "metadata_cache",
    "statistics_cache",
    "http_get",
    "http_post",
    "url_get",
    "load_extension",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "lo_import",
    "lo_export",
    "sys_exec",
    "system",
];

/// The most elements (characters, array items) one call of a
/// size-generating function may produce.
pub const MAX_GENERATED: i64 = 10_000;

/// Size-generating functions, and which argument gives the size.
const SIZED_BY_ARGUMENT: &[(&str, usize)] = &[
    ("repeat", 1),
    ("lpad", 1),
    ("rpad", 1),
    ("array_repeat", 1),
    ("list_repeat", 1),
    ("array_resize", 1),
    ("list_resize", 1),
];

/// Functions building an array of numbers from their bounds.
const SERIES: &[&str] = &["range", "generate_series"];

/// Why a statement is refused, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

const WHY: &str =
    "telemine SQL may only read the declared sources, feature views and reference tables";

/// Checks `stmt`, the one statement of a SQL file. The top statement must
/// be a query; see the module docs for what else is refused.
pub fn check(stmt: &Statement) -> Result<(), Refusal> {
    let mut v = Sandbox {
        depth: 0,
        refusal: None,
    };
    let _ = stmt.visit(&mut v);
    match v.refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// The first words of a statement, for messages (`DROP TABLE …`).
pub fn statement_kind(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Sandbox {
    /// Statements entered so far (the file's own is 1).
    depth: usize,
    refusal: Option<Refusal>,
}

impl Sandbox {
    fn refuse(&mut self, at: Span, message: String) -> ControlFlow<()> {
        let s = at.start;
        self.refusal = Some(Refusal {
            line: (s.line as usize).max(1),
            col: (s.column as usize).max(1),
            message,
        });
        ControlFlow::Break(())
    }
}

fn name_of(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.clone(),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

impl Visitor for Sandbox {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        self.depth += 1;
        if matches!(stmt, Statement::Query(_)) {
            return ControlFlow::Continue(());
        }
        let kind = statement_kind(&stmt.to_string());
        let what = if self.depth == 1 {
            "a SQL file holds one SELECT"
        } else {
            "a query may not contain another statement"
        };
        self.refuse(
            stmt.span(),
            format!(
                "`{kind} …` is not allowed: {what}; it cannot create, change, copy or delete anything ({WHY})"
            ),
        )
    }

    fn post_visit_statement(&mut self, _stmt: &Statement) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        match &query.with {
            Some(with) if with.recursive => self.refuse(
                with.with_token.0.span,
                "`WITH RECURSIVE` is not allowed: a recursive query can run without end".into(),
            ),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        for t in &select.from {
            for j in &t.joins {
                if matches!(
                    j.join_operator,
                    JoinOperator::CrossJoin(_)
                        | JoinOperator::CrossApply
                        | JoinOperator::OuterApply
                ) {
                    return self.refuse(
                        j.relation.span(),
                        "`CROSS JOIN` is not allowed: it multiplies every row by every other; join on a key (`JOIN … ON` or `USING`)".into(),
                    );
                }
            }
        }
        if let Some(into) = &select.into {
            return self.refuse(
                into.name.span(),
                format!(
                    "`SELECT … INTO {}` is not allowed: it creates a table ({WHY})",
                    into.name
                ),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            TableFactor::Table { name, args, .. } => {
                let full = name_of(name);
                if args.is_some() {
                    let last = name
                        .0
                        .last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.to_ascii_lowercase())
                        .unwrap_or_default();
                    if name.0.len() == 1 && WINDOW_FUNCTIONS.contains(&last.as_str()) {
                        return ControlFlow::Continue(());
                    }
                    return self.refuse(
                        tf.span(),
                        format!(
                            "table function `{full}` is not allowed: in FROM only the window functions TUMBLE, HOP and SESSION may be called ({WHY})"
                        ),
                    );
                }
                let quoted = name
                    .0
                    .iter()
                    .any(|p| p.as_ident().is_some_and(|i| i.quote_style.is_some()));
                if name.0.len() > 1 || quoted || full.contains(['/', ':', '.']) {
                    let at = if name.span().start.line > 0 {
                        name.span()
                    } else {
                        tf.span()
                    };
                    return self.refuse(
                        at,
                        format!(
                            "`{name}` is not a table telemine SQL can read: name a declared source (through a window function), a feature view or a reference table, unqualified and unquoted ({WHY})"
                        ),
                    );
                }
                ControlFlow::Continue(())
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => self.refuse(
                tf.span(),
                format!("table functions are not allowed in FROM ({WHY})"),
            ),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            let name = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default();
            if IO_FUNCTIONS.contains(&name.as_str()) || name.starts_with("read_") {
                return self.refuse(
                    expr.span(),
                    format!(
                        "function `{}` reads files or the network, which telemine SQL may not do ({WHY})",
                        f.name
                    ),
                );
            }
            if let Some(why) = unbounded_size(&name, f) {
                return self.refuse(expr.span(), why);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Why a call of a size-generating function is refused, if it is.
fn unbounded_size(name: &str, f: &Function) -> Option<String> {
    let args = literal_args(f);
    if let Some(&(_, at)) = SIZED_BY_ARGUMENT.iter().find(|(n, _)| *n == name) {
        return match args.get(at) {
            Some(Some(n)) if (0..=MAX_GENERATED).contains(n) => None,
            Some(Some(n)) => Some(format!(
                "`{name}(…, {n})` would build {n} elements: at most {MAX_GENERATED} (telemine bounds what one expression may build)"
            )),
            _ => Some(format!(
                "the size argument of `{name}` must be an integer literal of at most {MAX_GENERATED}: a size read from data could build gigabytes in one call"
            )),
        };
    }
    if SERIES.contains(&name) {
        let n = match args.as_slice() {
            [Some(stop)] => Some(*stop),
            [Some(start), Some(stop)] => stop.checked_sub(*start),
            [Some(start), Some(stop), Some(step)] if *step != 0 => {
                stop.checked_sub(*start).map(|d| d / step)
            }
            _ => None,
        };
        return match n {
            Some(n) if n <= MAX_GENERATED => None,
            Some(n) => Some(format!(
                "`{name}` over {n} steps: at most {MAX_GENERATED} (telemine bounds what one expression may build)"
            )),
            None => Some(format!(
                "the bounds of `{name}` must be integer literals spanning at most {MAX_GENERATED} steps"
            )),
        };
    }
    None
}

/// Each argument of `f` as an integer when it is an integer literal
/// (possibly negative), else `None`.
fn literal_args(f: &Function) -> Vec<Option<i64>> {
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => integer(e),
            _ => None,
        })
        .collect()
}

fn integer(e: &Expr) -> Option<i64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<i64>().ok().or_else(|| {
                // 1e8 and 100.0 are numbers too; a fractional size is no size.
                n.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                    .map(|f| f as i64)
            }),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => integer(expr).and_then(i64::checked_neg),
        Expr::Nested(inner) => integer(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn refused(sql: &str) -> Option<String> {
        let stmt = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        check(&stmt).err().map(|r| r.message)
    }

    #[test]
    fn plain_selects_pass() {
        assert_eq!(
            refused("WITH a AS (SELECT 1 AS x) SELECT x FROM a JOIN hosts ON true"),
            None
        );
        assert_eq!(
            refused("SELECT host FROM TUMBLE(telemetry, ts, INTERVAL '1 minute')"),
            None
        );
    }

    #[test]
    fn nested_and_top_level_statements_are_refused() {
        assert!(
            refused("DROP TABLE host_1m")
                .unwrap()
                .contains("`DROP TABLE …`")
        );
        assert!(refused("SELECT 1 INTO t").unwrap().contains("INTO"));
        assert!(
            refused("SELECT * FROM read_csv('/etc/passwd')")
                .unwrap()
                .contains("read_csv")
        );
        assert!(
            refused("SELECT read_parquet('x')")
                .unwrap()
                .contains("reads files")
        );
    }

    #[test]
    fn functions_that_build_what_an_argument_says_are_bounded() {
        for ok in [
            "SELECT repeat(host, 3) FROM h",
            "SELECT array_repeat(1, 10000) FROM h",
            "SELECT lpad(host, 20, '0') FROM h",
            "SELECT range(1, 100) FROM h",
            "SELECT generate_series(0, 100000, 10) FROM h",
        ] {
            assert_eq!(refused(ok), None, "{ok}");
        }
        for (bad, why) in [
            (
                "SELECT array_repeat(1, 300000000) FROM h",
                "would build 300000000",
            ),
            ("SELECT repeat(host, 400000000) FROM h", "at most 10000"),
            (
                "SELECT repeat(host, n) FROM h",
                "must be an integer literal",
            ),
            ("SELECT rpad(host, 1e9) FROM h", "would build"),
            (
                "SELECT x FROM h CROSS JOIN unnest(range(1, 1e8)) AS t(x)",
                "CROSS JOIN",
            ),
            (
                "SELECT unnest(range(1, 100000000)) FROM h",
                "99999999 steps",
            ),
            ("SELECT generate_series(1, n) FROM h", "integer literals"),
            ("SELECT a.x FROM a CROSS JOIN b", "CROSS JOIN"),
        ] {
            let got = refused(bad).unwrap_or_else(|| panic!("accepted: {bad}"));
            assert!(got.contains(why), "{bad}: {got}");
        }
    }
}
