//! Leases: a named piece of timed work runs on one server at a time. The
//! server holding a lease renews it every [`Cluster::renew`]; it holds it
//! for [`Cluster::expiry`] after each renewal, so a server that dies (or
//! loses the database) stops holding it, and another takes it over, once
//! that time has passed. A server that cannot renew in time stops the work
//! itself before the lease can have passed to another.

use chrono::Utc;
use tokio::sync::watch;

use super::Cluster;
use crate::state::AppState;

/// Whether this server holds one lease, as its renewal task last learnt.
/// Cheap to clone; clones watch the same lease.
#[derive(Clone)]
pub struct Lease {
    name: &'static str,
    held: watch::Receiver<bool>,
}

impl Lease {
    /// Takes and keeps renewing lease `name` for this server until the
    /// server stops (then releases it). Alone, the lease is always held
    /// and nothing runs.
    pub(crate) fn spawn(state: &AppState, name: &'static str) -> Lease {
        let cluster = state.cluster();
        if !cluster.shared() {
            let (sender, held) = watch::channel(true);
            // The lease never changes: the sender is not needed, and a
            // closed channel keeps its last value.
            drop(sender);
            cluster.track(name, held.clone());
            return Lease { name, held };
        }
        let (sender, held) = watch::channel(false);
        cluster.track(name, held.clone());
        tokio::spawn(renew(state.clone(), name, sender));
        Lease { name, held }
    }

    /// The lease's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether this server holds the lease now.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves once this server holds the lease (at once if it does).
    pub async fn held(&mut self) {
        // An error means the renewal task ended (the server is stopping):
        // then the lease is never held again.
        if self.held.wait_for(|held| *held).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this server no longer holds the lease (never, while
    /// it does and keeps renewing).
    pub async fn lost(&mut self) {
        if self.held.wait_for(|held| !*held).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The renewal task of lease `name`.
async fn renew(state: AppState, name: &'static str, held: watch::Sender<bool>) {
    let cluster: &Cluster = state.cluster();
    loop {
        let now = Utc::now();
        let until = now + cluster.expiry();
        // A renewal slower than the interval counts as failed: waiting on
        // it could outlast the lease.
        let taken = tokio::time::timeout(
            cluster.renew(),
            state.store().take_lease(name, cluster.id(), now, until),
        )
        .await;
        let holds = match taken {
            Ok(Ok(holds)) => holds,
            Ok(Err(e)) => {
                tracing::warn!(lease = name, error = %e, "could not renew a lease; stopping its work");
                false
            }
            Err(_) => {
                tracing::warn!(
                    lease = name,
                    "renewing a lease took too long; stopping its work"
                );
                false
            }
        };
        let was = held.send_replace(holds);
        if holds != was {
            tracing::info!(
                lease = name,
                server = cluster.id(),
                held = holds,
                "lease changed hands"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(cluster.renew()) => {}
            _ = state.stopping() => break,
            _ = cluster.halted() => {
                held.send_replace(false);
                return;
            }
        }
    }
    held.send_replace(false);
    if let Err(e) = state.store().release_lease(name, cluster.id()).await {
        tracing::warn!(lease = name, error = %e, "could not release a lease; it expires instead");
    }
}
