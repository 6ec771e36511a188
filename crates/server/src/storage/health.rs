//! The one record of the store's write health: episodes of storage faults,
//! logged once at their start and end, shown by `/readyz` and `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rm_store::{StorageFault, StoreError};
use tokio::task::JoinHandle;

use crate::state::AppState;

/// How often the probe writes.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// A storage fault that has not cleared yet.
#[derive(Debug, Clone)]
pub(crate) struct Episode {
    /// What is wrong.
    pub(crate) fault: StorageFault,
    /// The database's own words, for the log and `/readyz`.
    pub(crate) detail: String,
    /// When the first failure of the episode was seen.
    pub(crate) since: DateTime<Utc>,
}

/// Every faults counter, one per [`StorageFault`].
const FAULTS: [StorageFault; 5] = [
    StorageFault::DiskFull,
    StorageFault::ReadOnly,
    StorageFault::Io,
    StorageFault::Busy,
    StorageFault::Unreachable,
];

/// The store's write health as last seen by any part of the server.
#[derive(Debug, Default)]
pub(crate) struct StorageHealth {
    /// A fast check for the common case: no episode going on.
    faulty: AtomicBool,
    episode: Mutex<Option<Episode>>,
    /// Failed store calls per fault kind, in [`FAULTS`] order.
    failures: [AtomicU64; 5],
    /// When the last episode ended.
    recovered_at: Mutex<Option<Instant>>,
}

impl StorageHealth {
    /// Notes that `what` (e.g. "recording agent last-seen times") failed
    /// with `error`, and logs it: a storage fault is logged at its first
    /// failure and then quietly until it clears; any other store error is
    /// logged every time, since it is not a condition that lasts.
    pub(crate) fn failed(&self, what: &str, error: &StoreError) {
        let Some(fault) = error.fault() else {
            tracing::error!(error = %error, "{what} failed");
            return;
        };
        if let Some(slot) = FAULTS.iter().position(|f| *f == fault) {
            self.failures[slot].fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut episode) = self.episode.lock() else {
            tracing::error!(error = %error, "{what} failed");
            return;
        };
        match episode.as_ref() {
            Some(current) if current.fault == fault || current.fault.explains(fault) => {
                tracing::debug!(error = %error, "{what} failed (storage fault continues)");
            }
            _ => {
                tracing::error!(
                    error = %error,
                    "{what} failed: {fault}. Nothing is acknowledged that was not stored; \
                     agents keep their reports and resend them. Further failures are \
                     logged once this clears."
                );
                *episode = Some(Episode {
                    fault,
                    detail: error.to_string(),
                    since: Utc::now(),
                });
                self.faulty.store(true, Ordering::Release);
            }
        }
    }

    /// Notes that a write succeeded; ends an episode (logged once).
    pub(crate) fn succeeded(&self) {
        if !self.faulty.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut episode) = self.episode.lock() else {
            return;
        };
        if let Some(ended) = episode.take() {
            if let Ok(mut at) = self.recovered_at.lock() {
                *at = Some(Instant::now());
            }
            let lasted = (Utc::now() - ended.since).num_seconds();
            tracing::info!(
                fault = ended.fault.as_str(),
                lasted_seconds = lasted,
                "the database can be written again ({} had lasted {lasted} s)",
                ended.fault
            );
        }
        self.faulty.store(false, Ordering::Release);
    }

    /// How long the store has been writable: `None` during a fault, the
    /// time since the last fault ended, or [`Duration::MAX`] when there was
    /// none. Timed verdicts about agents wait for this to pass their grace:
    /// during a fault the server itself keeps agents out.
    pub(crate) fn settled_for(&self) -> Option<Duration> {
        if self.faulty.load(Ordering::Acquire) {
            return None;
        }
        match self.recovered_at.lock().ok().and_then(|at| *at) {
            Some(at) => Some(at.elapsed()),
            None => Some(Duration::MAX),
        }
    }

    /// The fault going on now, if any.
    pub(crate) fn episode(&self) -> Option<Episode> {
        if !self.faulty.load(Ordering::Acquire) {
            return None;
        }
        self.episode.lock().ok().and_then(|e| e.clone())
    }

    /// Failed store calls so far, per fault kind (every kind, zeros too).
    pub(crate) fn failures(&self) -> impl Iterator<Item = (StorageFault, u64)> + '_ {
        FAULTS
            .iter()
            .zip(&self.failures)
            .map(|(fault, count)| (*fault, count.load(Ordering::Relaxed)))
    }
}

/// Starts the probe: a small write every [`PROBE_EVERY`], so a fault is
/// seen even when the server is idle and its end is seen even when nothing
/// else writes.
pub(crate) fn spawn_probe(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.store().probe_write(Utc::now()).await {
                Ok(()) => state.storage().succeeded(),
                Err(e) => state.storage().failed("the storage probe", &e),
            }
        }
    })
}

/// `GET /readyz`: 200 while the database can be written, 503 with the
/// fault while it cannot. (`/healthz` stays "alive": the process is fine
/// and will recover by itself.)
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.storage().episode() {
        None => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Some(episode) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "not_ready",
                "storage": {
                    "fault": episode.fault.as_str(),
                    "message": format!("the server cannot write its database: {}", episode.fault),
                    "detail": episode.detail,
                    "since": episode.since,
                }
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StoreError {
        StoreError::Unavailable {
            fault: StorageFault::DiskFull,
            source: "disk full".into(),
        }
    }

    #[test]
    fn an_episode_starts_at_the_first_fault_and_ends_at_the_next_success() {
        let health = StorageHealth::default();
        assert!(health.episode().is_none());
        assert_eq!(health.settled_for(), Some(Duration::MAX));
        health.succeeded();
        health.failed("x", &full());
        let first = health.episode().unwrap();
        assert_eq!(first.fault, StorageFault::DiskFull);
        health.failed("y", &full());
        assert_eq!(health.episode().unwrap().since, first.since, "one episode");
        health.failed("z", &StoreError::NotFound("thing".into()));
        assert!(health.episode().is_some(), "other errors do not end it");
        assert_eq!(health.settled_for(), None, "not settled during a fault");
        health.succeeded();
        assert!(health.episode().is_none());
        assert!(health.settled_for().unwrap() < Duration::from_secs(5));
        assert!(health
            .failures()
            .any(|(fault, count)| fault == StorageFault::DiskFull && count == 2));
    }

    fn io() -> StoreError {
        StoreError::Unavailable {
            fault: StorageFault::Io,
            source: "disk I/O error".into(),
        }
    }

    /// Only the storage probe looks closely at an I/O error (the database
    /// file's own state); other writes that fail during the same episode
    /// report a plain I/O error, and must not flip `/readyz` back and forth.
    #[test]
    fn a_plain_io_error_during_a_read_only_episode_continues_it() {
        let health = StorageHealth::default();
        let read_only = StoreError::Unavailable {
            fault: StorageFault::ReadOnly,
            source: "ro".into(),
        };
        health.failed("the storage probe", &read_only);
        let since = health.episode().unwrap().since;
        health.failed("renewing this server's registration", &io());
        let episode = health.episode().unwrap();
        assert_eq!(episode.fault, StorageFault::ReadOnly);
        assert_eq!(episode.since, since, "one episode");
        health.failed("x", &full());
        assert_eq!(health.episode().unwrap().fault, StorageFault::DiskFull);
        health.failed("x", &io());
        assert_eq!(health.episode().unwrap().fault, StorageFault::DiskFull);
        // The other way round, a closer look refines a plain I/O episode.
        health.succeeded();
        health.failed("x", &io());
        health.failed("the storage probe", &read_only);
        assert_eq!(health.episode().unwrap().fault, StorageFault::ReadOnly);
    }

    #[test]
    fn a_different_fault_starts_a_new_episode() {
        let health = StorageHealth::default();
        health.failed("x", &full());
        health.failed(
            "x",
            &StoreError::Unavailable {
                fault: StorageFault::ReadOnly,
                source: "ro".into(),
            },
        );
        assert_eq!(health.episode().unwrap().fault, StorageFault::ReadOnly);
    }
}
