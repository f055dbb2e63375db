//! What the JSON API and the live page show of a running engine: each
//! view's latest rows, each series' recent rows (features and, for a
//! scored view, its anomaly score), the alerts active now, and whether
//! the SQL is loaded. Filled where the rows are made (`sql/`, the
//! alerter); read by `http/`.
//!
//! Everything here is bounded: [`RECENT_ROWS`] rows per view,
//! [`SERIES_POINTS`] rows per series, [`MAX_SERIES`] series per view (a
//! series beyond it is not kept, and counted in `series_refused`), and
//! subscribers of the live stream that fall behind lose the oldest events
//! rather than hold the engine up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use datafusion::arrow::array::RecordBatch;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Latest rows kept per view.
pub const RECENT_ROWS: usize = 200;
/// Rows kept per series.
pub const SERIES_POINTS: usize = 240;
/// Series kept per view.
pub const MAX_SERIES: usize = 20_000;
/// Events a slow subscriber of the live stream may fall behind by.
const STREAM_BACKLOG: usize = 4096;

/// One row of a view as the API shows it.
pub type Row = Map<String, Value>;

/// A view's rows as they are made, for the live stream.
#[derive(Debug, Clone, Serialize)]
pub struct RowEvent {
    pub view: String,
    pub series: String,
    pub row: Row,
}

/// See the module docs.
pub struct Live {
    inner: Mutex<Inner>,
    events: broadcast::Sender<RowEvent>,
}

#[derive(Default)]
struct Inner {
    catalog: Catalog,
    /// When the engine's loop last turned.
    last_beat: Option<std::time::Instant>,
    views: BTreeMap<String, ViewLive>,
    /// The alerts held by the alerter, as the API shows them.
    alerts: Vec<Value>,
    sql_loaded: bool,
}

#[derive(Default)]
struct ViewLive {
    keys: Vec<String>,
    recent: VecDeque<Row>,
    series: HashMap<String, VecDeque<Row>>,
    rows: u64,
    series_refused: u64,
}

/// The views and rules of the running SQL, as the API lists them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    pub views: Vec<ViewInfo>,
    pub rules: Vec<RuleInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViewInfo {
    pub name: String,
    pub file: String,
    /// The source it windows (`None`: a view over views).
    pub source: Option<String>,
    /// The views it reads (a view over views).
    pub inputs: Vec<String>,
    /// `TUMBLE 60s`, `HOP 300s every 60s`, `SESSION gap 30s`.
    pub window: String,
    pub keys: Vec<String>,
    /// The model scoring it, if any.
    pub model: Option<String>,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub name: String,
    pub file: String,
    pub severity: String,
    pub views: Vec<String>,
    /// The values the rule compares `anomaly_score` with (`>` / `>=`): the
    /// thresholds the live page draws.
    pub score_thresholds: Vec<f64>,
}

impl Catalog {
    /// What `sql` (over `sources`) holds.
    pub fn of(sql: &telemine_sql::SqlSet, sources: &[telemine_sql::source::SourceDef]) -> Catalog {
        use telemine_sql::WindowKind;
        let secs = |ms: i64| format!("{}s", ms as f64 / 1000.0);
        let views = sql
            .views
            .iter()
            .map(|v| ViewInfo {
                name: v.name.clone(),
                file: v.file.display().to_string(),
                source: v
                    .source
                    .and_then(|s| sources.get(s))
                    .map(|s| s.name.clone()),
                inputs: v
                    .inputs
                    .iter()
                    .filter_map(|&i| sql.views.get(i))
                    .map(|i| i.name.clone())
                    .collect(),
                window: match v.window.kind {
                    WindowKind::Tumble => format!("TUMBLE {}", secs(v.window.size_ms)),
                    WindowKind::Hop { slide_ms } => {
                        format!("HOP {} every {}", secs(v.window.size_ms), secs(slide_ms))
                    }
                    WindowKind::Session => format!("SESSION gap {}", secs(v.window.size_ms)),
                },
                keys: v.keys.clone(),
                model: v.model.as_ref().map(|m| m.name.clone()),
                columns: v
                    .output_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            })
            .collect();
        let rules = sql
            .rules
            .iter()
            .map(|r| RuleInfo {
                name: r.name.clone(),
                file: r.file.display().to_string(),
                severity: r.severity.as_str().to_string(),
                views: r
                    .views
                    .iter()
                    .filter_map(|&i| sql.views.get(i))
                    .map(|v| v.name.clone())
                    .collect(),
                score_thresholds: telemine_sql::score_thresholds(&r.plan),
            })
            .collect();
        Catalog { views, rules }
    }
}

/// A view's figures for the API.
#[derive(Debug, Clone, Serialize)]
pub struct ViewStatus {
    pub name: String,
    pub keys: Vec<String>,
    /// Rows made since the start.
    pub rows: u64,
    pub series: usize,
    /// Series not kept because the view had [`MAX_SERIES`] already.
    pub series_refused: u64,
    /// `window_end` of its newest row, as written in it.
    pub last_window_end: Option<Value>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            inner: Mutex::default(),
            events: broadcast::channel(STREAM_BACKLOG).0,
        }
    }
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows of view `view` (whose series are told apart by `keys`), as the
    /// view made them.
    pub fn record(&self, view: &str, keys: &[String], batches: &[RecordBatch]) {
        let rows = match to_rows(batches) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(view, error = %e, "rows not shown on the API: not representable as JSON");
                return;
            }
        };
        if rows.is_empty() {
            return;
        }
        let streaming = self.events.receiver_count() > 0;
        let mut inner = self.lock();
        let v = inner.views.entry(view.to_string()).or_default();
        v.keys = keys.to_vec();
        for row in rows {
            v.rows += 1;
            let series = series_of(keys, &row);
            if v.series.len() < MAX_SERIES || v.series.contains_key(&series) {
                let points = v.series.entry(series.clone()).or_default();
                if points.len() == SERIES_POINTS {
                    points.pop_front();
                }
                points.push_back(row.clone());
            } else {
                v.series_refused += 1;
            }
            if streaming {
                // No subscriber, or one that fell behind: never an error
                // for the engine.
                let _ = self.events.send(RowEvent {
                    view: view.to_string(),
                    series,
                    row: row.clone(),
                });
            }
            if v.recent.len() == RECENT_ROWS {
                v.recent.pop_front();
            }
            v.recent.push_back(row);
        }
    }

    /// The alerts the alerter holds now (replaces the last snapshot).
    pub fn set_alerts(&self, alerts: Vec<Value>) {
        self.lock().alerts = alerts;
    }

    pub fn alerts(&self) -> Vec<Value> {
        self.lock().alerts.clone()
    }

    /// The SQL now running (at start and after each reload): the API
    /// lists it, and readiness needs it.
    pub fn set_catalog(&self, catalog: Catalog) {
        let mut inner = self.lock();
        inner.catalog = catalog;
        inner.sql_loaded = true;
    }

    /// The engine's loop turned (an input or a tick): `/healthz` reads it.
    pub fn beat(&self) {
        self.lock().last_beat = Some(std::time::Instant::now());
    }

    /// How long since the engine's loop last turned (`None`: not yet).
    pub fn since_beat(&self) -> Option<std::time::Duration> {
        self.lock().last_beat.map(|t| t.elapsed())
    }

    pub fn catalog(&self) -> Catalog {
        self.lock().catalog.clone()
    }

    pub fn sql_loaded(&self) -> bool {
        self.lock().sql_loaded
    }

    pub fn views(&self) -> Vec<ViewStatus> {
        self.lock()
            .views
            .iter()
            .map(|(name, v)| ViewStatus {
                name: name.clone(),
                keys: v.keys.clone(),
                rows: v.rows,
                series: v.series.len(),
                series_refused: v.series_refused,
                last_window_end: v.recent.back().and_then(|r| r.get("window_end").cloned()),
            })
            .collect()
    }

    /// View `view`'s latest rows, newest last (at most `limit`).
    pub fn recent(&self, view: &str, limit: usize) -> Option<Vec<Row>> {
        let inner = self.lock();
        let v = inner.views.get(view)?;
        let skip = v.recent.len().saturating_sub(limit);
        Some(v.recent.iter().skip(skip).cloned().collect())
    }

    /// The series of view `view` (sorted), at most `limit`.
    pub fn series(&self, view: &str, limit: usize) -> Option<Vec<String>> {
        let inner = self.lock();
        let v = inner.views.get(view)?;
        let mut names: Vec<String> = v.series.keys().cloned().collect();
        names.sort();
        names.truncate(limit);
        Some(names)
    }

    /// Series `series` of view `view`: its rows, oldest first.
    pub fn points(&self, view: &str, series: &str) -> Option<Vec<Row>> {
        let inner = self.lock();
        let points = inner.views.get(view)?.series.get(series)?;
        Some(points.iter().cloned().collect())
    }

    /// Rows as they are made, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RowEvent> {
        self.events.subscribe()
    }

    /// Subscribers of the live stream now.
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }
}

/// A series' name: its key columns' values, `k=v` joined by commas, in
/// the view's key order (`host=h1,rack=r2`); `all` for a view without
/// keys.
pub fn series_of(keys: &[String], row: &Row) -> String {
    if keys.is_empty() {
        return "all".to_string();
    }
    keys.iter()
        .map(|k| {
            let v = match row.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Batches as JSON objects (timestamps as RFC 3339 text, NULLs left out).
fn to_rows(batches: &[RecordBatch]) -> Result<Vec<Row>, String> {
    let mut out = Vec::new();
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        let bytes = writer.into_inner();
        let rows: Vec<Row> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        out.extend(rows);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(hosts: &[&str], scores: &[f64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, false),
            Field::new("anomaly_score", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(hosts.to_vec())),
                Arc::new(Float64Array::from(scores.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_kept_per_view_and_series_within_their_bounds() {
        let live = Live::default();
        let keys = vec!["host".to_string()];
        let n = SERIES_POINTS.max(RECENT_ROWS) + 10;
        for i in 0..n {
            live.record("v", &keys, &[batch(&["h1", "h2"], &[i as f64, 0.5])]);
        }
        let recent = live.recent("v", usize::MAX).unwrap();
        assert_eq!(recent.len(), RECENT_ROWS);
        let h1 = live.points("v", "host=h1").unwrap();
        assert_eq!(h1.len(), SERIES_POINTS);
        assert_eq!(
            h1.last().unwrap()["anomaly_score"],
            serde_json::json!((n - 1) as f64)
        );
        assert_eq!(live.series("v", 10).unwrap(), vec!["host=h1", "host=h2"]);
        assert!(live.recent("nope", 1).is_none());
        let status = &live.views()[0];
        assert_eq!(status.rows, 2 * n as u64);
        assert_eq!(status.series, 2);
    }

    #[test]
    fn series_past_the_bound_are_counted_not_kept() {
        let live = Live::default();
        let keys = vec!["host".to_string()];
        let hosts: Vec<String> = (0..MAX_SERIES + 5).map(|i| format!("h{i}")).collect();
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        live.record("v", &keys, &[batch(&refs, &vec![0.1; refs.len()])]);
        let status = &live.views()[0];
        assert_eq!(status.series, MAX_SERIES);
        assert_eq!(status.series_refused, 5);
    }

    #[test]
    fn a_subscriber_sees_rows_as_they_are_made() {
        let live = Live::default();
        let mut rx = live.subscribe();
        live.record("v", &["host".to_string()], &[batch(&["h1"], &[0.9])]);
        let e = rx.try_recv().unwrap();
        assert_eq!((e.view.as_str(), e.series.as_str()), ("v", "host=h1"));
    }
}
