//! This server's row in `servers`: written at start, renewed every
//! [`super::Cluster::renew`] so the others know it is alive, removed at a
//! graceful stop ([`super::stop`]).

use chrono::Utc;
use rm_store::{ServerRecord, StoreError};

use crate::state::AppState;

/// Registers this server, reachable by its peers at `internal_url`, and
/// starts the task renewing the registration.
pub(super) async fn register(
    state: &AppState,
    internal_url: String,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let cluster = state.cluster();
    let now = Utc::now();
    let record = ServerRecord {
        id: cluster.id().to_owned(),
        internal_url,
        started_at: now,
        alive_until: now + cluster.expiry(),
    };
    state.store().register_server(&record).await?;
    tracing::info!(server = %record.id, internal_url = %record.internal_url, "registered among the servers on the database");
    let state = state.clone();
    Ok(tokio::spawn(async move {
        let cluster = state.cluster();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cluster.renew()) => {}
                _ = state.stopping() => return,
                _ = cluster.halted() => return,
            }
            let until = Utc::now() + cluster.expiry();
            match state.store().renew_server(cluster.id(), until).await {
                Ok(true) => {}
                // Another process registered at the same internal URL: two
                // servers must not share one.
                Ok(false) => tracing::error!(
                    server = cluster.id(),
                    "this server's registration was replaced by another server with the same --internal-url; \
                     the others treat this one as dead"
                ),
                Err(e) => tracing::warn!(error = %e, "could not renew this server's registration"),
            }
        }
    }))
}
