//! The HTTP server of `telemine run` (`[http] listen`): what operators
//! and their tools watch the engine with.
//!
//! - `GET /metrics`: every metric of `metrics.rs`, in Prometheus' text
//!   format.
//! - `GET /healthz`: 200 while the engine's loop is turning (it beats at
//!   every input and tick); 503 once it has not for [`STALLED_AFTER`].
//! - `GET /readyz`: 200 when the SQL is loaded, the group has assigned
//!   this instance partitions, and every assigned partition's consumer
//!   lag is at most `[http] ready_max_lag`; otherwise 503 with the
//!   reasons.
//! - `/api/v1/…`: the JSON API (`api.rs`; listed in docs/HTTP.md). Reads
//!   need nothing; changes need `Authorization: Bearer <[http] token>`
//!   and get 401 without it.
//! - `GET /`: the live page (`page.html`), fed by
//!   `GET /api/v1/stream` (server-sent events).
//!
//! The server runs on the pipeline's runtime; it never blocks the engine
//! (every handler reads shared state under short locks, or does its own
//! Kafka I/O for silences).

mod api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get};
use tokio::sync::oneshot;

use crate::config::Config;
use telemine_observe::metrics::Metrics;

/// How long the engine's loop may go without a beat before `/healthz`
/// says it is stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(120);

/// What every handler reads.
#[derive(Clone)]
pub(crate) struct AppState {
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// `[http] token`: what changes need.
    pub token: Option<Arc<str>>,
}

/// A running server: stops when dropped or with [`HttpServer::stop`].
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `[http] listen` and serves until stopped; `None` without
    /// `listen`. A port that cannot be bound is an error for the operator
    /// (the address is in it).
    pub async fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Option<Self>, String> {
        let Some(listen) = &config.http.listen else {
            return Ok(None);
        };
        let listen = listen.get_ref();
        let addr: SocketAddr = listen
            .parse()
            .map_err(|e| format!("[http] listen `{listen}`: {e}"))?;
        let token = config.http.bearer_token()?.map(Arc::from);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("[http] listen `{listen}`: cannot listen there: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("[http] listen `{listen}`: {e}"))?;
        let state = AppState {
            metrics,
            config: Arc::new(config.clone()),
            token,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
        tracing::info!(%addr, "HTTP server listening: /metrics, /healthz, /readyz, /api/v1, live page at /");
        Ok(Some(HttpServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }))
    }

    /// Stops serving (open live streams end) and waits for it, at most a
    /// few seconds.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/v1", get(api::index))
        .route("/api/v1/views", get(api::views))
        .route("/api/v1/views/{view}/rows", get(api::view_rows))
        .route("/api/v1/views/{view}/series", get(api::view_series))
        .route(
            "/api/v1/views/{view}/series/{series}",
            get(api::series_points),
        )
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/alerts", get(api::alerts))
        .route(
            "/api/v1/silences",
            get(api::list_silences).post(api::add_silence),
        )
        .route("/api/v1/silences/{id}", delete(api::expire_silence))
        .route("/api/v1/stream", get(api::stream))
        .fallback(api::not_found)
        .with_state(state)
}
