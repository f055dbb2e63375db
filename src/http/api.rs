//! The handlers of the HTTP server (see `mod.rs` and docs/HTTP.md).
//! Every answer is JSON (`/metrics` and the page excepted); an error is
//! `{"error": "…"}` with a status saying whose it is: 400 a request this
//! API cannot take, 401 a change without the token, 404 nothing by that
//! name, 503 a broker that did not answer (retry later).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures::Stream;
use prometheus::core::Collector;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{AppState, STALLED_AFTER};
use telemine_alerting::silence::{self, Silence, Silences};
use telemine_observe::live::RowEvent;
use telemine_types::alert::matcher::Matcher;
use telemine_types::alert::{format_ms, parse_ms};

/// Longest a silence read or write waits for the brokers.
const BROKER_WAIT: Duration = Duration::from_secs(10);
/// Most rows one answer carries.
const MAX_ROWS: usize = telemine_observe::live::RECENT_ROWS;
/// Most series names one answer lists.
const MAX_SERIES_LISTED: usize = 5_000;

type Answer = Result<Response, ApiError>;

/// An answer that is not 2xx: its status and what to do about it.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    /// 401: say which scheme the API takes.
    challenge: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        challenge: false,
    }
}

fn ok(value: impl serde::Serialize) -> Answer {
    Ok(Json(value).into_response())
}

/// The live page: one file, no outside scripts.
pub(super) async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

pub(super) async fn not_found() -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: GET /api/v1 lists them",
    )
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.exposition(),
    )
        .into_response()
}

pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    match s.metrics.live.since_beat() {
        Some(d) if d > STALLED_AFTER => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the engine's loop has not turned for {} s", d.as_secs()),
        )
        .into_response(),
        _ => Json(json!({ "status": "ok" })).into_response(),
    }
}

/// Why this instance is not ready (empty: ready).
fn not_ready(s: &AppState) -> Vec<String> {
    let mut why = Vec::new();
    if !s.metrics.live.sql_loaded() {
        why.push("the SQL is not loaded yet".to_string());
    }
    if s.metrics.partitions_assigned.get() <= 0 {
        why.push("the consumer group has assigned no partition here yet".to_string());
    }
    let max = s.config.http.ready_max_lag;
    for family in s.metrics.consumer_lag.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let lag = m.get_gauge().get_value();
            let at = format!("{}/{}", label("topic"), label("partition"));
            if lag < 0.0 {
                why.push(format!("{at}: consumer lag not known yet"));
            } else if lag > max as f64 {
                why.push(format!(
                    "{at}: consumer lag {lag} is more than [http] ready_max_lag ({max})"
                ));
            }
        }
    }
    why
}

pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    let why = not_ready(&s);
    if why.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reasons": why })),
        )
            .into_response()
    }
}

pub(super) async fn index() -> Answer {
    ok(json!({
        "endpoints": [
            "GET /metrics",
            "GET /healthz",
            "GET /readyz",
            "GET /api/v1/views",
            "GET /api/v1/views/{view}/rows?limit=N",
            "GET /api/v1/views/{view}/series?limit=N",
            "GET /api/v1/views/{view}/series/{series}",
            "GET /api/v1/rules",
            "GET /api/v1/alerts",
            "GET /api/v1/silences",
            "POST /api/v1/silences (bearer token)",
            "DELETE /api/v1/silences/{id} (bearer token)",
            "GET /api/v1/stream?view=V&series=S (server-sent events)",
            "GET / (live page)",
        ]
    }))
}

pub(super) async fn views(State(s): State<AppState>) -> Answer {
    let catalog = s.metrics.live.catalog();
    let status = s.metrics.live.views();
    let views: Vec<Value> = catalog
        .views
        .iter()
        .map(|v| {
            let st = status.iter().find(|x| x.name == v.name);
            let (evaluations, errors) = evaluations(&s, "view", &v.name);
            json!({
                "name": v.name,
                "file": v.file,
                "source": v.source,
                "inputs": v.inputs,
                "window": v.window,
                "keys": v.keys,
                "model": v.model,
                "columns": v.columns,
                "evaluations": evaluations,
                "errors": errors,
                "rows": st.map_or(0, |x| x.rows),
                "series": st.map_or(0, |x| x.series),
                "series_refused": st.map_or(0, |x| x.series_refused),
                "last_window_end": st.and_then(|x| x.last_window_end.clone()),
            })
        })
        .collect();
    ok(json!({ "views": views }))
}

/// Evaluations run and failed of view or rule `name`, from the metrics.
fn evaluations(s: &AppState, kind: &str, name: &str) -> (u64, u64) {
    let runs = s
        .metrics
        .evaluation_seconds
        .get_metric_with_label_values(&[kind, name])
        .map_or(0, |h| h.get_sample_count());
    let errors = s
        .metrics
        .evaluation_errors_total
        .get_metric_with_label_values(&[kind, name])
        .map_or(0, |c| c.get());
    (runs, errors)
}

pub(super) async fn rules(State(s): State<AppState>) -> Answer {
    let active = s.metrics.live.alerts();
    let rules: Vec<Value> = s
        .metrics
        .live
        .catalog()
        .rules
        .iter()
        .map(|r| {
            let (evaluations, errors) = evaluations(&s, "rule", &r.name);
            let of = |state: &str| {
                active
                    .iter()
                    .filter(|a| a["rule"] == r.name.as_str() && a["state"] == state)
                    .count()
            };
            json!({
                "name": r.name,
                "file": r.file,
                "severity": r.severity,
                "views": r.views,
                "score_thresholds": r.score_thresholds,
                "evaluations": evaluations,
                "errors": errors,
                "pending": of("pending"),
                "firing": of("firing"),
            })
        })
        .collect();
    ok(json!({ "rules": rules }))
}

#[derive(Deserialize)]
pub(super) struct Limit {
    limit: Option<usize>,
}

pub(super) async fn view_rows(
    State(s): State<AppState>,
    Path(view): Path<String>,
    Query(q): Query<Limit>,
) -> Answer {
    let limit = q.limit.unwrap_or(50).min(MAX_ROWS);
    match s.metrics.live.recent(&view, limit) {
        Some(rows) => ok(json!({ "view": view, "rows": rows })),
        None => Err(unknown_view(&s, &view)),
    }
}

/// 404 for a view without rows: unknown, or known and not closed yet.
fn unknown_view(s: &AppState, view: &str) -> ApiError {
    if s.metrics
        .live
        .catalog()
        .views
        .iter()
        .any(|v| v.name == view)
    {
        error(
            StatusCode::NOT_FOUND,
            format!("view `{view}` has closed no window yet"),
        )
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no view `{view}`: GET /api/v1/views lists them"),
        )
    }
}

pub(super) async fn view_series(
    State(s): State<AppState>,
    Path(view): Path<String>,
    Query(q): Query<Limit>,
) -> Answer {
    let limit = q.limit.unwrap_or(MAX_SERIES_LISTED).min(MAX_SERIES_LISTED);
    match s.metrics.live.series(&view, limit) {
        Some(series) => ok(json!({ "view": view, "series": series })),
        None => Err(unknown_view(&s, &view)),
    }
}

pub(super) async fn series_points(
    State(s): State<AppState>,
    Path((view, series)): Path<(String, String)>,
) -> Answer {
    match s.metrics.live.points(&view, &series) {
        Some(rows) => ok(json!({ "view": view, "series": series, "rows": rows })),
        None => Err(error(
            StatusCode::NOT_FOUND,
            format!(
                "no series `{series}` in view `{view}`: GET /api/v1/views/{view}/series lists them"
            ),
        )),
    }
}

pub(super) async fn alerts(State(s): State<AppState>) -> Answer {
    ok(json!({ "alerts": s.metrics.live.alerts() }))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn silence_json(x: &Silence, now: i64) -> Value {
    json!({
        "id": x.id,
        "matchers": x.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "startsAt": x.starts_at,
        "endsAt": x.ends_at,
        "createdBy": x.created_by,
        "comment": x.comment,
        "status": silence::state_at(x, now),
    })
}

fn broker_error(e: telemine_connectors::ConnectorError) -> ApiError {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the silences topic could not be reached: {e}"),
    )
}

/// The silences topic, read to its end within [`BROKER_WAIT`].
async fn read_silences(s: &AppState) -> Result<Silences, ApiError> {
    silence::read_topic(
        &s.config.kafka,
        &s.config.alerting.silences_topic,
        BROKER_WAIT,
    )
    .await
    .map_err(broker_error)
}

/// Writes `x` to the silences topic; `late` is the answer when the
/// brokers do not take it within [`BROKER_WAIT`].
async fn write_silence(s: &AppState, x: &Silence, late: &'static str) -> Result<(), ApiError> {
    tokio::time::timeout(
        BROKER_WAIT,
        silence::write_to_topic(&s.config.kafka, &s.config.alerting.silences_topic, x),
    )
    .await
    .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, late))?
    .map_err(broker_error)
}

pub(super) async fn list_silences(State(s): State<AppState>) -> Answer {
    let silences = read_silences(&s).await?;
    let now = now_ms();
    let list: Vec<Value> = silences.all().map(|x| silence_json(x, now)).collect();
    ok(json!({ "silences": list }))
}

/// 401 unless the request carries `Authorization: Bearer <[http] token>`.
fn authorised(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |why: &str| ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: why.to_string(),
        challenge: true,
    };
    let Some(token) = &s.token else {
        return Err(refuse(
            "changes are off: set [http] token (or token_file) in the config",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| refuse("this change needs `Authorization: Bearer <token>`"))?;
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(refuse("the bearer token is not the configured one"))
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct NewSilence {
    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`.
    matchers: Vec<String>,
    /// RFC 3339; default: now.
    starts_at: Option<String>,
    /// RFC 3339; or give `duration`.
    ends_at: Option<String>,
    /// "2h", "30m"; or give `endsAt`.
    duration: Option<String>,
    created_by: Option<String>,
    comment: Option<String>,
}

pub(super) async fn add_silence(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    authorised(&s, &headers)?;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let new: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body is not a silence ({{\"matchers\": [\"host=h1\"], \"duration\": \"2h\", \"comment\": \"…\"}}): {e}"
        ))
    })?;
    let matchers = new
        .matchers
        .iter()
        .map(|m| Matcher::parse(m).map_err(|e| bad(format!("matcher `{m}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if matchers.is_empty() {
        return Err(bad(
            "a silence needs at least one matcher (it would mute every alert)".into(),
        ));
    }
    let time = |t: &str, key: &str| {
        parse_ms(t).map_err(|e| bad(format!("{key} `{t}` is not an RFC 3339 time: {e}")))
    };
    let start = match &new.starts_at {
        Some(t) => time(t, "startsAt")?,
        None => now_ms(),
    };
    let end = match (&new.ends_at, &new.duration) {
        (Some(t), None) => time(t, "endsAt")?,
        (None, Some(d)) => {
            let d = telemine_types::duration::parse_duration(d)
                .map_err(|e| bad(format!("duration `{d}`: {e}")))?;
            start.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
        }
        _ => return Err(bad("give the silence `endsAt` or `duration`".into())),
    };
    if end <= start {
        return Err(bad(format!(
            "the silence would end ({}) before it starts ({})",
            format_ms(end),
            format_ms(start)
        )));
    }
    let id = silence::new_id();
    let x = Silence::new(
        id.clone(),
        matchers,
        start,
        end,
        new.created_by.unwrap_or_else(|| "api".into()),
        new.comment.unwrap_or_default(),
    );
    write_silence(
        &s,
        &x,
        "the brokers did not take the silence in time; retry",
    )
    .await?;
    tracing::info!(id = %id, "silence added through the API");
    Ok((StatusCode::CREATED, Json(silence_json(&x, now_ms()))).into_response())
}

pub(super) async fn expire_silence(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    authorised(&s, &headers)?;
    let silences = read_silences(&s).await?;
    let Some(x) = silences.get(&id) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no silence `{id}`: GET /api/v1/silences lists them"),
        ));
    };
    let now = now_ms();
    if x.ends_at_ms <= now {
        return ok(silence_json(x, now));
    }
    let expired = x.expired(now);
    write_silence(
        &s,
        &expired,
        "the brokers did not take the change in time; retry",
    )
    .await?;
    tracing::info!(id = %id, "silence expired through the API");
    ok(silence_json(&expired, now))
}

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    view: Option<String>,
    series: Option<String>,
}

/// Rows as views make them, as server-sent events (`event: row`, the
/// data a [`RowEvent`]), filtered to one view and series when asked; a
/// subscriber that fell behind gets `event: lagged` with how many rows it
/// missed, and goes on.
pub(super) async fn stream(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.metrics.live.subscribe();
    let events = futures::stream::unfold((rx, q), |(mut rx, q)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if wanted(&e, &q) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    return Some((Ok(Event::default().event("row").data(data)), (rx, q)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let e = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(e), (rx, q)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn wanted(e: &RowEvent, q: &StreamQuery) -> bool {
    q.view.as_ref().is_none_or(|v| *v == e.view) && q.series.as_ref().is_none_or(|x| *x == e.series)
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
