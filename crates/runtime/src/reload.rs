//! Hot reload of the SQL folder: a file watcher on the folder and SIGHUP
//! both wake the pipeline, which then reloads between two batches (see
//! `WindowEngine::replace_sql`). Events are coalesced: an editor's save is
//! several file events, and one reload follows them.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the folder must be quiet before a reload.
const SETTLE: Duration = Duration::from_millis(300);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    FileChange,
    Sighup,
}

impl ReloadCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::FileChange => "a change in the SQL folder",
            ReloadCause::Sighup => "SIGHUP",
        }
    }
}

/// The triggers of hot reload. Dropping it stops the watcher.
pub struct ReloadTriggers {
    rx: mpsc::UnboundedReceiver<ReloadCause>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl ReloadTriggers {
    /// Watches `dir` (recursively, `.sql` files) and listens for SIGHUP. A
    /// folder that cannot be watched is logged; SIGHUP still works.
    pub fn start(dir: &Path) -> ReloadTriggers {
        let (tx, rx) = mpsc::unbounded_channel();
        let files = tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let relevant = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            ) && event
                .paths
                .iter()
                .any(|p| p.extension().is_some_and(|x| x == "sql"));
            if relevant {
                let _ = files.send(ReloadCause::FileChange);
            }
        })
        .and_then(|mut w| w.watch(dir, RecursiveMode::Recursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the SQL folder; reload with SIGHUP");
                None
            }
        };
        #[cfg(unix)]
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; SQL reloads on file changes only");
                return;
            };
            while hup.recv().await.is_some() {
                if tx.send(ReloadCause::Sighup).is_err() {
                    break;
                }
            }
        });
        ReloadTriggers {
            rx,
            _watcher: watcher,
        }
    }

    /// Waits for a trigger (cancel-safe: nothing is lost if the future is
    /// dropped before it returns).
    pub async fn next(&mut self) -> Option<ReloadCause> {
        self.rx.recv().await
    }

    /// After a trigger: waits until the folder has been quiet for a moment
    /// and swallows the events of the same edit.
    pub async fn settle(&mut self) {
        loop {
            tokio::time::sleep(SETTLE).await;
            let mut more = false;
            while self.rx.try_recv().is_ok() {
                more = true;
            }
            if !more {
                return;
            }
        }
    }
}
