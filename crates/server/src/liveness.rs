//! Batches `last_seen_at` updates: every agent frame touches an in-memory
//! map, and one task writes the map to the store once a second in a single
//! transaction. Ten thousand agents heartbeating then cost one write a
//! second, not hundreds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rm_core::HostId;
use rm_store::prelude::*;
use tokio::task::JoinHandle;

use crate::state::AppState;
use crate::storage::StorageHealth;

/// How often pending times are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Pending last-seen times; at most one entry per host, so it is bounded by
/// the number of hosts.
#[derive(Default)]
pub(crate) struct LastSeen {
    pending: Mutex<HashMap<HostId, DateTime<Utc>>>,
}

impl LastSeen {
    /// Notes that `host` was heard from now.
    pub(crate) fn touch(&self, host: HostId) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(host, Utc::now());
        }
    }

    /// Writes and clears what is pending; returns how many hosts were
    /// written. On a store failure the times are put back (unless newer
    /// ones arrived) to be tried on the next flush.
    pub(crate) async fn flush(&self, store: &dyn Store, health: &StorageHealth) -> usize {
        let batch: Vec<(HostId, DateTime<Utc>)> = match self.pending.lock() {
            Ok(mut pending) if !pending.is_empty() => pending.drain().collect(),
            _ => return 0,
        };
        match store.touch_hosts(&batch).await {
            Ok(()) => {
                health.succeeded();
                batch.len()
            }
            Err(e) => {
                health.failed("recording agent last-seen times (kept to retry)", &e);
                if let Ok(mut pending) = self.pending.lock() {
                    for (host, at) in batch {
                        pending.entry(host).or_insert(at);
                    }
                }
                0
            }
        }
    }
}

/// Starts the once-a-second flusher.
pub(crate) fn spawn_flusher(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            state.flush_last_seen().await;
        }
    })
}
