//! Several servers on one database (DESIGN §9; docs/postgresql.md, "Several
//! servers"): this server's identity and its registration, leases that let
//! one server at a time run a piece of timed work ([`leases`]), and the
//! sweep of agents whose server died ([`sweep`]).
//!
//! A store only one process can open (SQLite) makes the server *alone*:
//! nothing is registered, every lease is always held, and at start every
//! host is offline, as before several servers existed. A shared store
//! (PostgreSQL) makes it one *peer* of any number, even when it is the
//! only one running.

pub(crate) mod bus;
pub mod leases;
mod registration;
mod sweep;

use std::collections::HashMap;
use std::time::Duration;

use rm_core::HostId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use crate::state::AppState;
pub use leases::Lease;

/// The lease of the alert evaluator (deadlines and due notifications).
pub const ALERTS_LEASE: &str = "alerts";
/// The lease of the sweep of agents held by dead servers and of jobs whose
/// agent is connected to no server.
pub const LOST_AGENTS_LEASE: &str = "lost-agents";

/// This server among the servers on its database.
pub struct Cluster {
    id: String,
    shared: bool,
    renew: Duration,
    expiry: Duration,
    halted: CancellationToken,
    /// Every lease this server takes, by name, as its renewal task last
    /// learnt.
    leases: std::sync::Mutex<HashMap<&'static str, watch::Receiver<bool>>>,
    /// Where signals to the other servers are queued, once the bus runs
    /// (never when alone).
    outbox: std::sync::OnceLock<bus::Outbox>,
    /// Where the other servers — and agents uploading a download this
    /// server relays — reach this one, once registered.
    internal_url: std::sync::OnceLock<String>,
}

impl Cluster {
    /// A new identity (a ULID per process) for a server on `store`.
    pub(crate) fn new(shared: bool, renew: Duration, expiry: Duration) -> Cluster {
        Cluster {
            id: Ulid::new().to_string(),
            shared,
            renew,
            expiry,
            halted: CancellationToken::new(),
            leases: std::sync::Mutex::default(),
            outbox: std::sync::OnceLock::new(),
            internal_url: std::sync::OnceLock::new(),
        }
    }

    /// The queue of signals to the other servers, while the bus runs.
    pub(crate) fn outbox(&self) -> Option<&bus::Outbox> {
        self.outbox.get()
    }

    /// This server's `--internal-url`, once it is registered (with a
    /// shared store only).
    pub(crate) fn internal_url(&self) -> Option<&str> {
        self.internal_url.get().map(String::as_str)
    }

    /// Called once by [`bus::start`].
    pub(crate) fn set_outbox(&self, outbox: bus::Outbox) {
        let _ = self.outbox.set(outbox);
    }

    /// Stops this server's part in the cluster as a crash would: no more
    /// renewals (its registration and leases expire), nothing released,
    /// its lease-held work stops. For tests of a dead server's takeover in
    /// one process; a server stopping gracefully releases instead.
    pub fn halt(&self) {
        self.halted.cancel();
    }

    /// Whether this server holds lease `name` now (alone: every lease it
    /// takes, always).
    pub fn holds(&self, name: &str) -> bool {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .is_some_and(|held| *held.borrow())
    }

    /// Remembers lease `name`'s state for [`Cluster::holds`].
    pub(crate) fn track(&self, name: &'static str, held: watch::Receiver<bool>) {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, held);
    }

    /// Resolves once [`Cluster::halt`] was called.
    pub(crate) async fn halted(&self) {
        self.halted.cancelled().await;
    }

    /// This server's id, recorded with every agent connection it holds.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether other servers may share the store (see the module's
    /// documentation).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// How often registration and leases are renewed.
    pub(crate) fn renew(&self) -> Duration {
        self.renew
    }

    /// How long a registration or lease lasts unrenewed.
    pub(crate) fn expiry(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.expiry).unwrap_or(chrono::Duration::seconds(20))
    }
}

/// At start, before agents are accepted: registers this server (with a
/// shared store) and marks offline the hosts no server holds any more —
/// every host when alone. Returns the tasks that keep the registration
/// and the sweep going; they end when the server stops.
pub(crate) async fn start(
    state: &AppState,
    internal_url: String,
) -> Result<Vec<tokio::task::JoinHandle<()>>, rm_store::StoreError> {
    if !state.cluster().shared() {
        state.store().mark_all_hosts_offline().await?;
        crate::jobs::watch_hosts_with_active_jobs(state).await;
        return Ok(Vec::new());
    }
    let mut tasks = bus::start(state).await?;
    let _ = state
        .cluster()
        .internal_url
        .set(internal_url.trim_end_matches('/').to_owned());
    let renewal = registration::register(state, internal_url).await?;
    // This server's earlier runs and dead servers held these, and nobody
    // does now; each host is returned to one server only, which gives its
    // jobs the grace.
    let now = chrono::Utc::now();
    let orphaned = state.store().mark_orphaned_hosts_offline(now).await?;
    for host in orphaned {
        crate::alerts::host_changed(state, host);
        crate::jobs::watch_for_lost_agent(
            state,
            host,
            now,
            String::from("the server holding its connection stopped"),
        );
    }
    let sweep = sweep::spawn(state);
    tasks.extend([renewal, sweep]);
    Ok(tasks)
}

/// At a graceful stop: gives up the registration and the leases at once,
/// so the other servers take over without waiting for them to expire.
pub(crate) async fn stop(state: &AppState) {
    if !state.cluster().shared() || state.cluster().halted.is_cancelled() {
        return;
    }
    if let Err(e) = state.store().unregister_server(state.cluster().id()).await {
        tracing::warn!(error = %e, "could not unregister this server; its leases expire instead");
    }
}

/// Whether `host`'s agent is connected, as far as its record says: to
/// this server, or (with a shared store) online through another (for
/// choices over many hosts; one host is asked with [`agent_connected`]).
pub(crate) fn online(state: &AppState, host: &rm_store::Host) -> bool {
    state.hub().is_connected(host.id) || (state.cluster().shared() && host.online)
}

/// Whether `host`'s agent is connected: to this server, or (with a shared
/// store) to another live one.
pub(crate) async fn agent_connected(state: &AppState, host: HostId) -> rm_store::StoreResult<bool> {
    if state.hub().is_connected(host) {
        return Ok(true);
    }
    if !state.cluster().shared() {
        return Ok(false);
    }
    let Some(holder) = state.store().host_holder(host).await? else {
        return Ok(false);
    };
    if holder == state.cluster().id() {
        // The store says this server holds it but the hub does not: the
        // connection just ended.
        return Ok(false);
    }
    let live = state.store().live_servers(chrono::Utc::now()).await?;
    Ok(live.iter().any(|server| server.id == holder))
}

/// Closes `host`'s agent connection, here or on the server holding it.
pub(crate) fn disconnect(state: &AppState, host: HostId, code: u16, reason: &str) {
    if !state.hub().disconnect(host, code, reason) {
        bus::send(
            state,
            bus::Signal::Disconnect {
                host,
                code,
                reason: reason.to_owned(),
            },
        );
    }
}
