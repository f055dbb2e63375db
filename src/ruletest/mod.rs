//! Rule test files: what `telemine test` runs.
//!
//! A test file is TOML: the SQL under test, the sources it reads, input
//! records, and what must come out — the exact set of alerts, late and
//! duplicate counts, dead letters, or the error a refused SQL file gets.
//! `sql/tests/*.toml` test the project's own rules; `spec/**/*.toml` pin
//! down the SQL language itself (windows, watermarks, lateness, dedupe,
//! joins, the sandbox). The format is documented in `sql/README.md`
//! ("Rule tests"); in short:
//!
//! ```toml
//! config = "../../config/telemine.toml"   # sources and engine settings
//! sql = ".."                               # SQL folder under test
//! [sql_files]                              # files added or replaced inline
//! "rules/hot.sql" = '''
//! SELECT host, window_start, window_end FROM host_1m WHERE cpu_avg > 90
//! '''
//! [[input]]
//! source = "telemetry"
//! records = '''
//! {"ts": "2026-11-27T00:00:01Z", "host": "h1", "cpu": 95}
//! '''
//! [[alert]]
//! rule = "hot"
//! window_start = "2026-11-27T00:00:00Z"
//! labels = { host = "h1" }
//! ```
//!
//! Several `[[case]]` tables may share one file's config and SQL; each has
//! its own `name`, `sql_files`, `input`, `alert`, `notification` and
//! `expect`. A file may declare `[[models]]` (they score its views as in
//! a config) and `[alerting]`; `[[notification]]` tables pin down what the
//! alerting sends for the case's rule rows (`notify.rs`).

mod notify;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use telemine_connectors::kafka::KafkaClientConfig;
use toml::Spanned;

use crate::config::{Config, EngineConfig, ModelConfig, SinksConfig, SourceConfig, SqlConfig};
use notify::{ExpectedNotification, Notifier};
use telemine_alerting::config::AlertingConfig;
use telemine_observe::metrics::Metrics;
use telemine_sql::{Kind, SqlFile, SqlSet, read_dir};
use telemine_stream::local::{LocalOutcome, LocalRun};
use telemine_types::alert::{Alert, format_ms};
use telemine_types::diagnostic::{Diagnostic, Diagnostics};
use telemine_types::duration::parse_duration;

/// One test file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// What the file pins down (printed with failures).
    #[allow(dead_code)]
    description: Option<String>,
    /// Config file (relative to the test file) whose sources, engine
    /// settings and SQL folder the test uses.
    config: Option<PathBuf>,
    /// Sources declared inline, as in a config file (instead of `config`).
    #[serde(default)]
    sources: Vec<SourceConfig>,
    /// The wall clock the decoders compare event times with (a source's
    /// `max_future_skew`), RFC 3339. Default: the real one; give it when
    /// the records are not safely in the past.
    now: Option<String>,
    /// Reference tables declared inline (paths relative to the test file).
    #[serde(default)]
    tables: Vec<crate::config::TableConfig>,
    /// Engine settings with inline sources.
    #[serde(default)]
    engine: EngineConfig,
    /// SQL folder under test, relative to the test file (default: the
    /// config's; none with inline sources).
    sql: Option<PathBuf>,
    /// Inline SQL files for every case of the file.
    #[serde(default)]
    sql_files: BTreeMap<String, Spanned<String>>,
    /// Models, as in a config's `[[models]]` (instead of the config's).
    #[serde(default)]
    models: Vec<ModelConfig>,
    /// The alerting, as in a config's `[alerting]` (instead of the
    /// config's): grouping, waits, inhibition.
    alerting: Option<AlertingConfig>,
    // One case written at the top level…
    #[serde(default)]
    input: Vec<Input>,
    #[serde(default)]
    alert: Vec<ExpectedAlert>,
    #[serde(default)]
    notification: Vec<ExpectedNotification>,
    #[serde(default)]
    expect: Expect,
    // …or several.
    #[serde(default)]
    case: Vec<CaseBody>,
}

/// One case: SQL files, input and what must come out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseBody {
    /// Names the case in reports (inside `[[case]]`).
    name: Option<String>,
    /// SQL files added to (or replacing those of) the SQL folder, by path
    /// inside it: `"features/x.sql"`, `"rules/y.sql"`.
    #[serde(default)]
    sql_files: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    input: Vec<Input>,
    /// The alerts expected, all of them (order does not matter).
    #[serde(default)]
    alert: Vec<ExpectedAlert>,
    /// The notifications expected, all of them, in the order sent.
    #[serde(default)]
    notification: Vec<ExpectedNotification>,
    #[serde(default)]
    expect: Expect,
}

/// One step of input: records of one partition as one batch, or time
/// passing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    source: Option<String>,
    #[serde(default)]
    partition: i32,
    /// Records, one per line, in the source's format.
    records: Option<String>,
    /// A file of records (relative to the test file): JSONL, CSV or Parquet.
    file: Option<PathBuf>,
    /// Records per batch (default: the whole step is one batch).
    batch: Option<usize>,
    /// Processing time that passes before the next step ("3s"); idle
    /// partitions stop holding the watermark back.
    wait: Option<String>,
    /// Hot reload: SQL files changed (added or replaced; an empty text
    /// deletes the file), then the whole set is checked and swapped in — or
    /// refused, keeping the running SQL.
    reload: Option<BTreeMap<String, String>>,
    /// The alerting stops before this step and starts again from the
    /// state it saved (as when the alerting owner restarts or moves).
    #[serde(default)]
    alerting_restart: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedAlert {
    rule: String,
    window_start: String,
    window_end: Option<String>,
    /// Labels that must be present with these values (others may be too).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Values that must be present: numbers within 1e-9 (relative).
    #[serde(default)]
    values: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The SQL must be refused with a message containing this text.
    error: Option<String>,
    /// Late records per source name.
    #[serde(default)]
    late: BTreeMap<String, u64>,
    /// Lateness (ms) of each late record, in arrival order.
    lateness_ms: Option<Vec<i64>>,
    /// Duplicates dropped per source name.
    #[serde(default)]
    duplicates: BTreeMap<String, u64>,
    /// Records that did not decode.
    dead_letters: Option<u64>,
    /// Text each dead letter's reason must contain, in arrival order (as
    /// many as there are dead letters).
    dead_letter_reasons: Option<Vec<String>>,
    /// View or rule evaluations that failed (e.g. over their memory limit).
    sql_errors: Option<u64>,
    sql_memory_exceeded: Option<u64>,
    /// Reloads refused (the running SQL kept).
    reload_errors: Option<u64>,
    /// Text each refused reload's error must contain.
    reload_error: Option<String>,
    /// Close open windows at the end of input (default true).
    finish: Option<bool>,
    /// How many notifications the alerting sends (with no
    /// `[[notification]]` tables: `0` says none may be sent).
    notifications: Option<usize>,
}

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: Option<String>,
    /// `None` when it passed; what differed otherwise.
    pub failure: Option<String>,
}

impl CaseResult {
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} :: {n}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// Every `*.toml` under `path` (or `path` itself), sorted.
pub fn find_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every case of one test file. A file that cannot be read or parsed
/// is one failed result.
pub async fn run_file(path: &Path) -> Vec<CaseResult> {
    let fail = |name: Option<String>, msg: String| CaseResult {
        file: path.to_path_buf(),
        name,
        failure: Some(msg),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![fail(None, format!("cannot read: {e}"))],
    };
    let file: TestFile = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            let d = Diagnostic::at_offset(
                path,
                &text,
                e.span().map(|s| s.start).unwrap_or(0),
                e.message().trim(),
            );
            return vec![fail(None, d.to_string())];
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = match file_config(path, &text, base, &file) {
        Ok(c) => c,
        Err(e) => return vec![fail(None, e)],
    };
    if let Some(now) = &file.now {
        match telemine_types::alert::parse_ms(now) {
            Ok(ms) => config.clock = telemine_codec::decode::Clock::fixed(ms),
            Err(e) => return vec![fail(None, format!("now = `{now}`: {e}"))],
        }
    }
    let single;
    let mut cases: Vec<&CaseBody> = Vec::new();
    if file.case.is_empty() {
        single = CaseBody {
            name: None,
            sql_files: BTreeMap::new(),
            input: file.input,
            alert: file.alert,
            notification: file.notification,
            expect: file.expect,
        };
        cases.push(&single);
    } else {
        if !file.input.is_empty() || !file.alert.is_empty() || !file.notification.is_empty() {
            return vec![fail(
                None,
                "a file with [[case]] tables keeps input, alert and notification inside them"
                    .into(),
            )];
        }
        cases.extend(file.case.iter());
    }
    let mut out = Vec::new();
    for body in cases {
        let failure = run_case(path, &text, base, &config, &file.sql_files, body)
            .await
            .err();
        out.push(CaseResult {
            file: path.to_path_buf(),
            name: body.name.clone(),
            failure,
        });
    }
    out
}

/// The config a file's cases run with: its `config`, or its inline sources.
fn file_config(path: &Path, text: &str, base: &Path, file: &TestFile) -> Result<Config, String> {
    let mut config = match &file.config {
        Some(c) => {
            if !file.sources.is_empty() || !file.tables.is_empty() {
                return Err(format!(
                    "{}: give either `config` or [[sources]] and [[tables]], not both",
                    path.display()
                ));
            }
            let mut config = Config::load(&base.join(c)).map_err(|d| d.to_string())?;
            if !file.models.is_empty() {
                config.models = file.models.clone();
            }
            if let Some(alerting) = &file.alerting {
                config.alerting = alerting.clone();
            }
            config
        }
        None => {
            let mut config = Config {
                kafka: KafkaClientConfig {
                    bootstrap_servers: "none (rule test)".into(),
                    group_id: "telemine-test".into(),
                    properties: BTreeMap::new(),
                    instance_id: String::new(),
                },
                sources: file.sources.clone(),
                tables: file.tables.clone(),
                sinks: SinksConfig::default(),
                sql: SqlConfig {
                    dir: PathBuf::new(),
                },
                engine: file.engine.clone(),
                models: file.models.clone(),
                alerting: file.alerting.clone().unwrap_or_default(),
                http: Default::default(),
                clock: Default::default(),
            };
            let diags = config.validate(path, text);
            if !diags.is_empty() {
                return Err(Diagnostics(diags).to_string());
            }
            config.resolve_paths(base);
            config
        }
    };
    if let Some(sql) = &file.sql {
        config.sql.dir = base.join(sql);
    }
    Ok(config)
}

async fn run_case(
    path: &Path,
    text: &str,
    base: &Path,
    config: &Config,
    shared: &BTreeMap<String, Spanned<String>>,
    case: &CaseBody,
) -> Result<(), String> {
    let defs = config.source_defs()?;
    let options = config.sql_options();
    let files = case_files(path, text, config, shared, case)?;
    let loaded = SqlSet::load_files(&config.sql.dir, files.files.clone(), &defs, &options)
        .await
        .map_err(|d| files.remap(d));
    let sql = match (loaded, &case.expect.error) {
        (Ok(_), Some(want)) => {
            return Err(format!(
                "the SQL was accepted, but it must be refused with an error containing `{want}`"
            ));
        }
        (Err(d), Some(want)) => {
            let got = d.to_string();
            return if got.contains(want.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "the SQL was refused, but not with an error containing `{want}`:\n{got}"
                ))
            };
        }
        (Err(d), None) => return Err(format!("the SQL was refused:\n{d}")),
        (Ok(sql), None) => sql,
    };
    let mut sql = sql;
    telemine_detector::attach(&mut sql, &config.model_settings()?, false, None)
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::default());
    let mut run = LocalRun::new(sql, &defs, metrics.clone()).map_err(|e| e.to_string())?;
    let mut notifier = (!case.notification.is_empty() || case.expect.notifications.is_some())
        .then(|| Notifier::new(&config.alerting));
    if notifier.is_some() {
        run.record_alerting();
    }
    let mut current = files.files;
    let mut refused = Vec::new();
    for (i, step) in case.input.iter().enumerate() {
        if let Some(changes) = &step.reload {
            for (key, body) in changes {
                let virtual_path = config.sql.dir.join(key);
                current.retain(|f| f.path != virtual_path);
                if !body.trim().is_empty() {
                    let kind = kind_of(key).map_err(|e| format!("reload: {e}"))?;
                    current.push(SqlFile::new(virtual_path, kind, body.clone()));
                }
            }
            current.sort_by(|a, b| a.path.cmp(&b.path));
            match SqlSet::load_files(&config.sql.dir, current.clone(), &defs, &options).await {
                Ok(set) => run.reload(set).map_err(|e| e.to_string())?,
                Err(d) => refused.push(d.to_string()),
            }
        }
        if step.alerting_restart {
            let Some(n) = notifier.as_mut() else {
                return Err(format!(
                    "[[input]] #{}: alerting_restart needs [[notification]] tables or expect.notifications",
                    i + 1
                ));
            };
            n.restart()?;
        }
        feed(&mut run, base, step)
            .await
            .map_err(|e| format!("[[input]] #{}: {e}", i + 1))?;
        if let Some(n) = notifier.as_mut() {
            n.apply(run.take_alerting());
        }
    }
    if let Some(n) = case.expect.reload_errors
        && n != refused.len() as u64
    {
        return Err(format!(
            "reloads refused: expected {n}, got {}{}",
            refused.len(),
            refused
                .iter()
                .map(|r| format!("\n  {r}"))
                .collect::<String>()
        ));
    }
    if let Some(want) = &case.expect.reload_error
        && let Some(bad) = refused.iter().find(|r| !r.contains(want.as_str()))
    {
        return Err(format!("a refused reload's error lacks `{want}`:\n{bad}"));
    }
    let finish = case.expect.finish.unwrap_or(true);
    if finish {
        run.close().await.map_err(|e| e.to_string())?;
    }
    let sent = notifier.map(|mut n| {
        n.apply(run.take_alerting());
        if finish { n.finish() } else { n.sent() }
    });
    let outcome = run.stop();
    compare(case, &outcome, &metrics, sent.as_deref())
}

/// The SQL files of a case, with inline ones mapped back to the test file.
struct CaseFiles {
    files: Vec<SqlFile>,
    /// Inline file path → (line in the test file where its text starts).
    inline: BTreeMap<PathBuf, usize>,
    test_file: PathBuf,
}

impl CaseFiles {
    /// Points diagnostics in inline SQL at the test file's lines.
    fn remap(&self, d: Diagnostics) -> Diagnostics {
        Diagnostics(
            d.0.into_iter()
                .map(|mut d| {
                    if let Some(first) = self.inline.get(&d.file) {
                        d.file = self.test_file.clone();
                        d.line += first - 1;
                    }
                    d
                })
                .collect(),
        )
    }
}

fn case_files(
    path: &Path,
    text: &str,
    config: &Config,
    shared: &BTreeMap<String, Spanned<String>>,
    case: &CaseBody,
) -> Result<CaseFiles, String> {
    let dir = &config.sql.dir;
    let mut files = if dir.as_os_str().is_empty() {
        Vec::new()
    } else {
        read_dir(dir).map_err(|d| d.to_string())?
    };
    let mut inline = BTreeMap::new();
    // The file's shared inline SQL, then the case's own (which wins).
    for (key, body) in shared.iter().chain(&case.sql_files) {
        let kind = kind_of(key)?;
        let virtual_path = dir.join(key);
        files.retain(|f| f.path != virtual_path);
        // Where the string's text starts: after the opening quotes, and
        // after the newline that may follow `'''`.
        let open = body.span().start;
        let rest = &text[open.min(text.len())..];
        let skip = if rest.starts_with("'''\n") || rest.starts_with("\"\"\"\n") {
            4
        } else if rest.starts_with("'''") || rest.starts_with("\"\"\"") {
            3
        } else {
            1
        };
        let (line, _) = telemine_types::diagnostic::line_col(text, open + skip);
        inline.insert(virtual_path.clone(), line);
        files.push(SqlFile::new(virtual_path, kind, body.get_ref().clone()));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(CaseFiles {
        files,
        inline,
        test_file: path.to_path_buf(),
    })
}

/// What a SQL file is, from its path inside the SQL folder.
fn kind_of(key: &str) -> Result<Kind, String> {
    if key.starts_with("features/") {
        Ok(Kind::View)
    } else if key.starts_with("rules/") {
        Ok(Kind::Rule)
    } else {
        Err(format!(
            "SQL file `{key}` must be under features/ or rules/"
        ))
    }
}

async fn feed(run: &mut LocalRun, base: &Path, step: &Input) -> Result<(), String> {
    if let Some(w) = &step.wait {
        let d = parse_duration(w).map_err(|e| format!("wait: {e}"))?;
        run.wait(d).await.map_err(|e| e.to_string())?;
    }
    let Some(name) = &step.source else {
        if step.records.is_some() || step.file.is_some() {
            return Err("records need a `source`".into());
        }
        return Ok(());
    };
    let source = run
        .source(name)
        .ok_or_else(|| format!("unknown source `{name}`"))?;
    if let Some(records) = &step.records {
        let lines: Vec<&[u8]> = records
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::as_bytes)
            .collect();
        let size = step.batch.unwrap_or(lines.len()).max(1);
        for chunk in lines.chunks(size) {
            run.push_records(source, step.partition, chunk)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(file) = &step.file {
        let def = run.source_def(source).clone();
        let recorded = crate::recorded::read(&base.join(file), &def).map_err(|e| e.to_string())?;
        for b in recorded.batches {
            run.push_batch(source, step.partition, b)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn compare(
    case: &CaseBody,
    out: &LocalOutcome,
    metrics: &Metrics,
    sent: Option<&[telemine_alerting::payload::Payload]>,
) -> Result<(), String> {
    let mut report = String::new();
    if let Some(sent) = sent {
        if !case.notification.is_empty() {
            notify::compare(&case.notification, sent, &mut report);
        }
        if let Some(n) = case.expect.notifications
            && n != sent.len()
        {
            let _ = writeln!(report, "notifications: expected {n}, sent {}", sent.len());
        }
    }
    let mut unmatched: Vec<&Alert> = out.alerts.iter().collect();
    // A case about notifications lists the rule rows only if it says so.
    if sent.is_some() && case.alert.is_empty() {
        unmatched.clear();
    }
    let mut missing = Vec::new();
    for want in &case.alert {
        match unmatched.iter().position(|a| matches(want, a)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => missing.push(want),
        }
    }
    if !missing.is_empty() || !unmatched.is_empty() {
        let _ = writeln!(
            report,
            "alerts differ (- expected but not raised, + raised but not expected):"
        );
        for w in &missing {
            let _ = writeln!(report, "  - {}", describe_expected(w));
        }
        for a in &unmatched {
            let _ = writeln!(report, "  + {}", describe(a));
        }
    }
    let counts: BTreeMap<&str, &telemine_stream::SourceCounts> =
        out.counts.iter().map(|(n, c)| (n.as_str(), c)).collect();
    for (what, want, get) in [
        (
            "late records",
            &case.expect.late,
            (|c: &telemine_stream::SourceCounts| c.late) as fn(&_) -> u64,
        ),
        (
            "duplicates dropped",
            &case.expect.duplicates,
            |c: &telemine_stream::SourceCounts| c.duplicates,
        ),
    ] {
        for (source, n) in want {
            let got = counts.get(source.as_str()).map_or(0, |c| get(c));
            if got != *n {
                let _ = writeln!(report, "{what} of `{source}`: expected {n}, got {got}");
            }
        }
    }
    if let Some(want) = &case.expect.lateness_ms {
        let got: Vec<i64> = out
            .late
            .iter()
            .flat_map(|l| l.lateness_ms.iter().copied())
            .collect();
        if &got != want {
            let _ = writeln!(report, "lateness_ms: expected {want:?}, got {got:?}");
        }
    }
    for (what, want, got) in [
        (
            "dead letters",
            case.expect.dead_letters,
            out.dead.len() as u64,
        ),
        (
            "sql_errors",
            case.expect.sql_errors,
            Metrics::get(&metrics.sql_errors),
        ),
        (
            "sql_memory_exceeded",
            case.expect.sql_memory_exceeded,
            Metrics::get(&metrics.sql_memory_exceeded),
        ),
    ] {
        if let Some(want) = want
            && want != got
        {
            let _ = writeln!(report, "{what}: expected {want}, got {got}");
        }
    }
    if let Some(want) = &case.expect.dead_letter_reasons {
        let got: Vec<String> = out.dead.iter().map(|(_, d)| d.reason.to_string()).collect();
        let matches =
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.contains(w.as_str()));
        if !matches {
            let _ = writeln!(
                report,
                "dead letter reasons: expected ones containing {want:?}, got {got:?}"
            );
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report.trim_end().to_string())
    }
}

fn time_ms(s: &str) -> Option<i64> {
    telemine_types::alert::parse_ms(s).ok()
}

fn matches(want: &ExpectedAlert, got: &Alert) -> bool {
    if want.rule != got.rule || time_ms(&want.window_start) != Some(got.window_start_ms) {
        return false;
    }
    if let Some(end) = &want.window_end
        && time_ms(end) != Some(got.window_end_ms)
    {
        return false;
    }
    want.labels
        .iter()
        .all(|(k, v)| got.labels.get(k) == Some(v))
        && want
            .values
            .iter()
            .all(|(k, v)| got.values.get(k).is_some_and(|g| value_matches(v, g)))
}

fn value_matches(want: &toml::Value, got: &serde_json::Value) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    match (want, got) {
        (toml::Value::Float(w), g) => g.as_f64().is_some_and(|g| close(*w, g)),
        (toml::Value::Integer(w), g) => g.as_f64().is_some_and(|g| close(*w as f64, g)),
        (toml::Value::String(w), serde_json::Value::String(g)) => w == g,
        (toml::Value::Boolean(w), serde_json::Value::Bool(g)) => w == g,
        _ => false,
    }
}

/// `Rule{k="v", …} [start, end) v=1.5 …` for a raised alert.
fn describe(a: &Alert) -> String {
    let values: Vec<String> = a.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}{} [{}, {}) {}",
        a.rule,
        label_set(&a.labels),
        format_ms(a.window_start_ms),
        format_ms(a.window_end_ms),
        values.join(" ")
    )
    .trim_end()
    .to_string()
}

/// `{host="h1", …}`: an alert's labels as a failure report shows them,
/// without the two every alert of a rule shares (`alertname`, `severity`).
fn label_set(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "alertname" && *k != "severity")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn describe_expected(w: &ExpectedAlert) -> String {
    let labels: Vec<String> = w
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    let values: Vec<String> = w.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let start = time_ms(&w.window_start).map_or(w.window_start.clone(), format_ms);
    let end = w
        .window_end
        .as_deref()
        .map(|e| time_ms(e).map_or(e.to_string(), format_ms))
        .unwrap_or_else(|| "…".into());
    format!(
        "{}{{{}}} [{}, {}) {}",
        w.rule,
        labels.join(", "),
        start,
        end,
        values.join(" ")
    )
    .trim_end()
    .to_string()
}
