//! Planning SQL files with DataFusion, and turning its errors into
//! `file:line:col` diagnostics.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::config::SessionConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, SetExpr, Spanned, Statement, visit_relations,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use telemine_codec::schema::EVENT_TIME_TYPE;

use super::files::{Kind, SqlFile, rule_meta};
use super::panes;
use super::sandbox;
use super::window::{WINDOW_END, WINDOW_START, WindowKind, WindowSpec, rewrite_window};
use super::{Rule, SqlOptions, SqlSet, View, register_slot};
use crate::source::SourceDef;
use datafusion::datasource::memory::PartitionData;
use telemine_types::diagnostic::{Diagnostic, Diagnostics};

/// A session for analysts' SQL: one partition (windows are small and the
/// other core decodes), spans collected for diagnostics, and the sandbox's
/// second line: no table functions, no information schema, no URL tables,
/// a bounded memory pool and no spill files.
fn new_context(options: &SqlOptions) -> Result<SessionContext, DataFusionError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    config.options_mut().sql_parser.collect_spans = true;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(options.query_memory_limit, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_table_functions(HashMap::new())
        .build();
    Ok(SessionContext::new_with_state(state))
}

pub(super) async fn plan_all(
    files: Vec<SqlFile>,
    sources: &[SourceDef],
    options: &SqlOptions,
) -> Result<SqlSet, Diagnostics> {
    let ctx = new_context(options).map_err(|e| {
        Diagnostics(vec![Diagnostic::new(
            std::path::Path::new("<engine>"),
            1,
            1,
            format!("cannot create the SQL session: {e}"),
        )])
    })?;
    let mut slots = HashMap::new();
    let mut diags = Vec::new();
    for t in &options.tables {
        let path = &t.path;
        let loaded = t
            .rows
            .clone()
            .and_then(|batch| {
                MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| e.to_string())
            })
            .and_then(|table| {
                ctx.register_table(t.name.as_str(), Arc::new(table))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = loaded {
            diags.push(Diagnostic::new(
                path,
                1,
                1,
                format!("reference table `{}`: {e}", t.name),
            ));
        }
    }
    let mut views = Vec::new();
    let mut joins = Vec::new();
    for f in files.iter().filter(|f| f.kind == Kind::View) {
        match plan_view(&ctx, &mut slots, f, sources, &mut diags).await {
            Some(Planned::View(mut v)) => {
                bind_model(&ctx, &mut slots, &mut v, options, &mut diags);
                views.push(*v);
            }
            Some(Planned::OverViews(stmt)) => joins.push((f, stmt)),
            None => {}
        }
    }
    // Views over views, once every windowed view is known.
    for (f, stmt) in joins {
        if let Some(mut v) =
            plan_view_over_views(&ctx, &mut slots, f, *stmt, &views, &mut diags).await
        {
            bind_model(&ctx, &mut slots, &mut v, options, &mut diags);
            views.push(v);
        }
    }
    for m in &options.models {
        if !views.iter().any(|v| v.name == m.view) {
            diags.push(Diagnostic::new(
                &m.config,
                1,
                1,
                format!(
                    "model `{}` scores view `{}`, but no features/*.sql defines it",
                    m.name, m.view
                ),
            ));
        }
    }
    let mut rules = Vec::new();
    for f in files.iter().filter(|f| f.kind == Kind::Rule) {
        if let Some(r) = plan_rule(&ctx, f, &views, &mut diags).await {
            rules.push(r);
        }
    }
    let mut names = HashMap::new();
    for r in &rules {
        if let Some(first) = names.insert(r.name.clone(), r.file.clone()) {
            diags.push(Diagnostic::new(
                &r.file,
                1,
                1,
                format!(
                    "rule name `{}` is already used by {}",
                    r.name,
                    first.display()
                ),
            ));
        }
    }
    if diags.is_empty() {
        Ok(SqlSet {
            ctx,
            views,
            rules,
            limits: super::QueryLimits {
                time: options.query_time_limit,
                output_bytes: options.query_memory_limit,
            },
            slots,
            scorers: HashMap::new(),
            observer: None,
            origin: Arc::new(super::Origin {
                files: files.clone(),
                sources: sources.to_vec(),
                options: options.clone(),
            }),
        })
    } else {
        Err(Diagnostics(diags))
    }
}

/// A feature view file: a windowed view, or one that reads other views.
enum Planned {
    View(Box<View>),
    /// No window function: planned once the windowed views are known.
    OverViews(Box<Statement>),
}

async fn plan_view(
    ctx: &SessionContext,
    slots: &mut HashMap<String, datafusion::datasource::memory::PartitionData>,
    file: &SqlFile,
    sources: &[SourceDef],
    diags: &mut Vec<Diagnostic>,
) -> Option<Planned> {
    let _ = rule_meta(file, diags);
    let name = file.stem.clone();
    if !is_identifier(&name) {
        diags.push(Diagnostic::new(&file.path, 1, 1, format!(
            "view name `{name}` (the file name) must be lower-case letters, digits and _, starting with a letter"
        )));
        return None;
    }
    let mut stmt = parse_one(file).map_err(|d| diags.push(d)).ok()?;
    let input_table = format!("__window_{name}");
    let (window, at) = match rewrite_window(&mut stmt, &input_table) {
        Ok(Some(found)) => found,
        Ok(None) => return Some(Planned::OverViews(Box::new(stmt))),
        Err(e) => {
            diags.push(Diagnostic::new(&file.path, e.line, e.col, e.message));
            return None;
        }
    };
    let Some(source) = sources.iter().position(|s| s.name == window.source) else {
        let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        diags.push(Diagnostic::new(
            &file.path,
            at.0,
            at.1,
            format!(
                "unknown source `{}` (declared sources: {})",
                window.source,
                known.join(", ")
            ),
        ));
        return None;
    };
    let def = &sources[source];
    if window.time_column != def.schema.event_time_name() {
        diags.push(Diagnostic::new(
            &file.path,
            at.0,
            at.1,
            format!(
                "the window must use `{}`, the event-time column of source `{}` (not `{}`)",
                def.schema.event_time_name(),
                def.name,
                window.time_column
            ),
        ));
        return None;
    }
    let mut fields: Vec<Field> = def
        .schema
        .batch_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(WINDOW_START, EVENT_TIME_TYPE, false));
    fields.push(Field::new(WINDOW_END, EVENT_TIME_TYPE, false));
    let input_schema: SchemaRef = Arc::new(Schema::new(fields));
    if let Err(e) = register_slot(ctx, slots, &input_table, input_schema.clone()) {
        diags.push(Diagnostic::new(
            &file.path,
            1,
            1,
            format!("internal error (a bug in telemine): {e}"),
        ));
        return None;
    }
    let keys = group_by_names(&stmt);
    let group_count = group_by_count(&stmt);
    let start = start_of(&stmt);
    let (plan, output_schema) = plan_view_query(
        ctx,
        file,
        stmt,
        start,
        "(and GROUP BY window_start, window_end)",
        diags,
    )
    .await?;
    let group_keys: Vec<String> = keys
        .into_iter()
        .filter(|k| k != WINDOW_START && k != WINDOW_END)
        .collect();
    let keys: Vec<String> = group_keys
        .iter()
        .filter(|k| output_schema.field_with_name(k).is_ok())
        .cloned()
        .collect();
    let mut session_keys = Vec::new();
    if window.kind == WindowKind::Session && group_count != group_keys.len() + 2 {
        diags.push(Diagnostic::new(&file.path, at.0, at.1,
            "SESSION windows are kept per key: GROUP BY plain source columns (e.g. host) and window_start, window_end, nothing else"));
        return None;
    }
    if window.kind == WindowKind::Session {
        for k in &group_keys {
            match def.schema.batch_schema().index_of(k) {
                Ok(i) => session_keys.push(i),
                Err(_) => {
                    diags.push(Diagnostic::new(&file.path, at.0, at.1, format!(
                        "SESSION windows are kept per key, and the keys are the GROUP BY columns: `{k}` is not a column of source `{}`",
                        def.name
                    )));
                    return None;
                }
            }
        }
    }
    let panes = match window.kind {
        WindowKind::Hop { .. } => match panes::analyse(ctx, &plan).await {
            Ok(p) => Some(Arc::new(p)),
            Err(why) => {
                tracing::warn!(view = %name, file = %file.path.display(), "hopping view recomputes every window from its rows, because {why}; it costs size/slide times a tumbling window");
                None
            }
        },
        _ => None,
    };
    if let Err(e) = register_slot(ctx, slots, &name, output_schema.clone()) {
        diags.push(Diagnostic::new(
            &file.path,
            1,
            1,
            format!("view `{name}` cannot be registered: {e}"),
        ));
        return None;
    }
    Some(Planned::View(Box::new(View {
        name,
        file: file.path.clone(),
        source: Some(source),
        inputs: Vec::new(),
        window,
        input_table,
        input_schema,
        plan,
        output_schema,
        keys,
        session_keys,
        panes,
        model: None,
    })))
}

/// Plans a view's query and checks that it selects both window bounds;
/// `how` tells the analyst how to get them.
async fn plan_view_query(
    ctx: &SessionContext,
    file: &SqlFile,
    stmt: Statement,
    start: (usize, usize),
    how: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<(LogicalPlan, SchemaRef)> {
    let plan = plan_statement(ctx, file, stmt)
        .await
        .map_err(|d| diags.push(d))
        .ok()?;
    let output_schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    for bound in [WINDOW_START, WINDOW_END] {
        if output_schema.field_with_name(bound).is_err() {
            diags.push(Diagnostic::new(&file.path, start.0, start.1, format!(
                "a feature view must select `{bound}` {how} so its rows say which window they describe"
            )));
            return None;
        }
    }
    Some((plan, output_schema))
}

/// Names of the views `stmt` reads, as indices into `views`.
fn views_read(stmt: &Statement, views: &[View]) -> Vec<usize> {
    let mut used = Vec::new();
    let _ = visit_relations(stmt, |rel| {
        if let Some(ident) = rel.0.last().and_then(|p| p.as_ident()) {
            let n = ident.value.to_ascii_lowercase();
            if let Some(i) = views.iter().position(|v| v.name == n)
                && !used.contains(&i)
            {
                used.push(i);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    used
}

/// A feature view with no window function: it joins windowed views (of
/// one or several sources) window by window, e.g. power draw per host with
/// the electricity price of the same minute.
async fn plan_view_over_views(
    ctx: &SessionContext,
    slots: &mut HashMap<String, datafusion::datasource::memory::PartitionData>,
    file: &SqlFile,
    stmt: Statement,
    views: &[View],
    diags: &mut Vec<Diagnostic>,
) -> Option<View> {
    let name = file.stem.clone();
    let start = start_of(&stmt);
    let inputs = views_read(&stmt, views);
    if inputs.is_empty() {
        diags.push(Diagnostic::new(&file.path, start.0, start.1,
            "a feature view must read its source through a window — TUMBLE(source, time_column, INTERVAL '1 minute'), HOP(…) or SESSION(…) — or join other feature views"));
        return None;
    }
    let first = &views[inputs[0]].window;
    for &i in &inputs {
        let w = &views[i].window;
        if !views[i].inputs.is_empty() || w.kind == WindowKind::Session {
            diags.push(Diagnostic::new(
                &file.path,
                start.0,
                start.1,
                format!(
                    "a view over views reads TUMBLE or HOP views only; `{}` is a {}",
                    views[i].name,
                    if w.kind == WindowKind::Session {
                        "SESSION view"
                    } else {
                        "view over views"
                    }
                ),
            ));
            return None;
        }
        if (w.kind, w.size_ms) != (first.kind, first.size_ms) {
            diags.push(Diagnostic::new(
                &file.path,
                start.0,
                start.1,
                format!(
                    "views joined in one view must have the same windows: `{}` and `{}` differ",
                    views[inputs[0]].name, views[i].name
                ),
            ));
            return None;
        }
    }
    let group_keys = group_by_names(&stmt);
    let (plan, output_schema) = plan_view_query(
        ctx,
        file,
        stmt,
        start,
        "(and join its inputs on window_start)",
        diags,
    )
    .await?;
    let keys: Vec<String> = output_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| group_keys.contains(n) || inputs.iter().any(|&i| views[i].keys.contains(n)))
        .filter(|n| n != WINDOW_START && n != WINDOW_END)
        .collect();
    if let Err(e) = register_slot(ctx, slots, &name, output_schema.clone()) {
        diags.push(Diagnostic::new(
            &file.path,
            1,
            1,
            format!("view `{name}` cannot be registered: {e}"),
        ));
        return None;
    }
    Some(View {
        name,
        file: file.path.clone(),
        source: None,
        inputs,
        window: WindowSpec {
            source: String::new(),
            ..first.clone()
        },
        input_table: String::new(),
        input_schema: Arc::new(Schema::empty()),
        plan,
        output_schema,
        keys,
        session_keys: Vec::new(),
        panes: None,
        model: None,
    })
}

/// When a model scores view `v`: checks its feature and key columns, and
/// adds the score columns to what the view's readers see.
fn bind_model(
    ctx: &SessionContext,
    slots: &mut HashMap<String, PartitionData>,
    v: &mut View,
    options: &SqlOptions,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(spec) = options.models.iter().find(|m| m.view == v.name) else {
        return;
    };
    let schema = &v.output_schema;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut problems = Vec::new();
    let mut features = Vec::new();
    for f in &spec.features {
        match schema.index_of(f) {
            Ok(i) if schema.field(i).data_type().is_numeric() => features.push(i),
            Ok(i) => problems.push(format!(
                "feature `{f}` is {}, not a number",
                schema.field(i).data_type()
            )),
            Err(_) => problems.push(format!("the view has no column `{f}`")),
        }
    }
    let key_names = if spec.keys.is_empty() {
        v.keys.clone()
    } else {
        spec.keys.clone()
    };
    let mut keys = Vec::new();
    for k in &key_names {
        match schema.index_of(k) {
            Ok(i) => keys.push(i),
            Err(_) => problems.push(format!("the view has no key column `{k}`")),
        }
    }
    for taken in [super::ANOMALY_SCORE, super::ANOMALY_FEATURES] {
        if schema.index_of(taken).is_ok() {
            problems.push(format!(
                "the view already has a column `{taken}`, which the model's scores take"
            ));
        }
    }
    if !problems.is_empty() {
        diags.push(Diagnostic::new(
            &v.file,
            1,
            1,
            format!(
                "model `{}` (in the config) cannot score view `{}`: {} (its columns: {})",
                spec.name,
                v.name,
                problems.join("; "),
                columns.join(", ")
            ),
        ));
        return;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(super::ANOMALY_SCORE, DataType::Float64, true));
    fields.push(Field::new(super::ANOMALY_FEATURES, DataType::Utf8, true));
    let scored = Arc::new(Schema::new(fields));
    let _ = ctx.deregister_table(v.name.as_str());
    if let Err(e) = register_slot(ctx, slots, &v.name, scored.clone()) {
        diags.push(Diagnostic::new(
            &v.file,
            1,
            1,
            format!(
                "view `{}` cannot be registered with its scores: {e}",
                v.name
            ),
        ));
        return;
    }
    v.model = Some(super::ModelBinding {
        name: spec.name.clone(),
        features,
        keys,
    });
    v.output_schema = scored;
}

async fn plan_rule(
    ctx: &SessionContext,
    file: &SqlFile,
    views: &[View],
    diags: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let meta = rule_meta(file, diags);
    let mut stmt = parse_one(file).map_err(|d| diags.push(d)).ok()?;
    match rewrite_window(&mut stmt, "__invalid") {
        Ok(None) => {}
        Ok(Some((_, (line, col)))) | Err(super::window::WindowError { line, col, .. }) => {
            diags.push(Diagnostic::new(&file.path, line, col,
                "rules read feature views, not sources: move the window function into a view under features/"));
            return None;
        }
    }
    let used = views_read(&stmt, views);
    let start = start_of(&stmt);
    let plan = plan_statement(ctx, file, stmt)
        .await
        .map_err(|mut d| {
            if d.message.contains("not found") && d.message.starts_with("table ") {
                let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
                d.message = format!(
                    "{}: rules read feature views ({})",
                    d.message,
                    names.join(", ")
                );
            }
            diags.push(d)
        })
        .ok()?;
    let schema = plan.schema().as_arrow().clone();
    for bound in [WINDOW_START, WINDOW_END] {
        if schema.field_with_name(bound).is_err() {
            diags.push(Diagnostic::new(
                &file.path,
                start.0,
                start.1,
                format!(
                    "a rule must select `{bound}` from its view so each alert carries its window"
                ),
            ));
            return None;
        }
    }
    let keys: Vec<&str> = used
        .iter()
        .flat_map(|&i| views[i].keys.iter().map(String::as_str))
        .collect();
    let label_columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| keys.contains(&n.as_str()))
        .collect();
    if label_columns.is_empty() {
        diags.push(Diagnostic::new(&file.path, start.0, start.1, format!(
            "rule returns no key column: select at least one of its view's keys ({}) so each alert names its series",
            if keys.is_empty() { "the view has none: GROUP BY a key such as host".to_string() } else { keys.join(", ") }
        )));
        return None;
    }
    let annotations = rule_annotations(file, &meta, &label_columns, &schema, diags)?;
    Some(Rule {
        name: meta.name,
        severity: meta.severity,
        file: file.path.clone(),
        plan,
        views: used,
        label_columns,
        timing: telemine_types::alert::rule::Timing {
            for_ms: meta.for_ms,
            keep_firing_for_ms: meta.keep_firing_for_ms,
        },
        extra_labels: meta.labels,
        annotations,
    })
}

/// Parses a rule's annotation templates against the labels and values its
/// alerts will carry; a bad reference is reported at its column.
fn rule_annotations(
    file: &SqlFile,
    meta: &super::files::RuleMeta,
    label_columns: &[String],
    schema: &datafusion::arrow::datatypes::Schema,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<(String, telemine_types::alert::template::Template)>> {
    for l in meta.labels.keys() {
        if label_columns.contains(l) {
            let (line, col) = meta.label_at.get(l).copied().unwrap_or((1, 1));
            diags.push(Diagnostic::new(&file.path, line, col, format!(
                "@label.{l}: the rule's key column `{l}` is already a label of every alert; rename one of them"
            )));
            return None;
        }
    }
    let mut labels: Vec<String> = ["alertname", "severity"].map(String::from).to_vec();
    labels.extend(label_columns.iter().cloned());
    labels.extend(meta.labels.keys().cloned());
    let values: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != WINDOW_START && n != WINDOW_END && !label_columns.contains(n))
        .collect();
    let mut out = Vec::new();
    let mut ok = true;
    for (name, text, line, col) in &meta.annotations {
        match telemine_types::alert::template::Template::parse(text, &labels, &values) {
            Ok(t) => out.push((name.clone(), t)),
            Err(e) => {
                ok = false;
                diags.push(Diagnostic::new(
                    &file.path,
                    *line,
                    col + e.offset,
                    e.message,
                ));
            }
        }
    }
    ok.then_some(out)
}

/// Parses a file that must hold exactly one SELECT.
fn parse_one(file: &SqlFile) -> Result<Statement, Diagnostic> {
    let mut stmts = DFParser::parse_sql_with_dialect(&file.text, &GenericDialect {})
        .map_err(|e| df_diagnostic(file, &e))?;
    let what = match file.kind {
        Kind::View => "a feature view",
        Kind::Rule => "a rule",
    };
    if stmts.len() > 1 {
        let (line, col) = match &stmts[1] {
            DFStatement::Statement(s) => start_of(s),
            _ => (1, 1),
        };
        return Err(Diagnostic::new(
            &file.path,
            line,
            col,
            format!("{what} file holds exactly one query; this is a second statement"),
        ));
    }
    match stmts.pop_front() {
        None => Err(Diagnostic::new(
            &file.path,
            1,
            1,
            format!("{what} file holds no query"),
        )),
        Some(DFStatement::Statement(s)) => match sandbox::check(&s) {
            Ok(()) => Ok(*s),
            Err(r) => Err(Diagnostic::new(&file.path, r.line, r.col, r.message)),
        },
        Some(other) => {
            let kind = sandbox::statement_kind(&other.to_string());
            let (line, col) = file
                .text
                .find(|c: char| !c.is_whitespace())
                .map(|_| first_code(&file.text))
                .unwrap_or((1, 1));
            Err(Diagnostic::new(
                &file.path,
                line,
                col,
                format!(
                    "`{kind} …` is not allowed: {what} is a single SELECT over the declared sources, feature views and reference tables; it cannot create tables, copy data or read files"
                ),
            ))
        }
    }
}

/// Line and column of the first character outside comments and blanks.
fn first_code(text: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if !t.is_empty() && !t.starts_with("--") {
            return (i + 1, line.len() - t.len() + 1);
        }
    }
    (1, 1)
}

async fn plan_statement(
    ctx: &SessionContext,
    file: &SqlFile,
    stmt: Statement,
) -> Result<LogicalPlan, Diagnostic> {
    let state = ctx.state();
    let (line, column) = start_of(&stmt);
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
        .await
        .map_err(|e| df_diagnostic(file, &e))?;
    let plan = state.optimize(&plan).map_err(|e| df_diagnostic(file, &e))?;
    if has_cross_product(&plan) {
        return Err(Diagnostic::new(
            &file.path,
            line,
            column,
            "this query joins two inputs with no condition between them (a comma join without a WHERE that relates them, or `JOIN … ON true`): it multiplies every row by every other; join on a key (`JOIN … ON a.k = b.k`)",
        ));
    }
    Ok(plan)
}

/// Whether `plan` (its subqueries included) has an inner join with neither
/// join keys nor a filter: a cross product, however it was written. (An
/// uncorrelated scalar subquery becomes a left join on nothing, which
/// yields one row per input row, and is allowed.)
fn has_cross_product(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::JoinType;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Join(j) = node
            && j.join_type == JoinType::Inner
            && j.on.is_empty()
            && j.filter.is_none()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn start_of(stmt: &Statement) -> (usize, usize) {
    let s = stmt.span().start;
    if s.line == 0 {
        (1, 1)
    } else {
        (s.line as usize, s.column as usize)
    }
}

/// How many expressions the outermost GROUP BY has.
fn group_by_count(stmt: &Statement) -> usize {
    let Statement::Query(q) = stmt else {
        return 0;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return 0;
    };
    match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs.len(),
        GroupByExpr::All(_) => 0,
    }
}

/// Plain column names in the outermost GROUP BY.
fn group_by_names(stmt: &Statement) -> Vec<String> {
    let Statement::Query(q) = stmt else {
        return Vec::new();
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Vec::new();
    };
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return Vec::new();
    };
    exprs
        .iter()
        .filter_map(|e| match e {
            Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Turns a DataFusion error into a diagnostic: its span when DataFusion
/// attached one, the parser's "Line: N, Column: M" otherwise, and as a last
/// resort the first place the offending name appears in the file.
pub(crate) fn df_diagnostic(file: &SqlFile, err: &DataFusionError) -> Diagnostic {
    let full = err.strip_backtrace();
    if let Some(span) = err
        .diagnostic()
        .and_then(|d| d.span)
        .filter(|s| s.start.line > 0)
    {
        return Diagnostic::new(
            &file.path,
            span.start.line as usize,
            span.start.column as usize,
            clean(&full),
        );
    }
    if let Some((line, col, msg)) = parser_position(&full) {
        return Diagnostic::new(&file.path, line, col, clean(&msg));
    }
    let (line, col) = mentioned_name(&full)
        .and_then(|n| find_word(&file.text, &n))
        .map(|off| telemine_types::diagnostic::line_col(&file.text, off))
        .unwrap_or((1, 1));
    Diagnostic::new(&file.path, line, col, clean(&full))
}

/// Drops DataFusion's internal prefixes and our rewrite's table names.
fn clean(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    let mut s = first
        .trim_start_matches("SQL error: ")
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .trim_start_matches("ParserError(\"")
        .trim_end_matches("\")")
        .to_string();
    s = s.replace("datafusion.public.", "");
    while let Some(i) = s.find("__window_") {
        // `__window_<view>` is our name for what the analyst wrote as
        // TUMBLE(…); as a column qualifier it is just noise.
        let mut end = s[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(|e| i + e)
            .unwrap_or(s.len());
        if s[end..].starts_with('.') {
            end += 1;
            s.replace_range(i..end, "");
        } else {
            s.replace_range(i..end, "TUMBLE(…)");
        }
    }
    s
}

fn parser_position(msg: &str) -> Option<(usize, usize, String)> {
    let i = msg.find(" at Line: ")?;
    let rest = &msg[i + " at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((
        line.trim().parse().ok()?,
        col.parse().ok()?,
        format!("{}{}", &msg[..i], &rest[col.len()..]),
    ))
}

fn mentioned_name(msg: &str) -> Option<String> {
    for (pre, post) in [
        ("No field named ", " "),
        ("No field named ", "."),
        ("table '", "' not found"),
        ("Invalid function '", "'"),
    ] {
        if let Some(i) = msg.find(pre) {
            let rest = &msg[i + pre.len()..];
            let name = rest
                .split(post)
                .next()
                .unwrap_or(rest)
                .trim_end_matches('.');
            let name = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
            if !name.is_empty() {
                return Some(name.to_string());
            }
        }
    }
    None
}

/// Byte offset of `word` as a whole word in `text`, skipping comment lines.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if !line.trim_start().starts_with("--") {
            let mut from = 0;
            while let Some(i) = line[from..].find(word) {
                let s = from + i;
                let e = s + word.len();
                let before = line[..s].chars().next_back();
                let after = line[e..].chars().next();
                let boundary =
                    |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                if boundary(before) && boundary(after) {
                    return Some(offset + s);
                }
                from = e;
            }
        }
        offset += line.len();
    }
    None
}
