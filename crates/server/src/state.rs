//! The shared state every handler gets: store, hub, settings, sealing key,
//! job event fan-out, the batching log writer, the last-seen cache, the
//! store's write health, the server's own metrics and its place among the
//! servers on its database.

use std::sync::Arc;

use rm_core::sealing::SealingKey;
use rm_store::prelude::*;

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::jobs::events::JobEvents;
use crate::jobs::log_writer::LogWriter;
use crate::liveness::LastSeen;
use crate::metrics::Metrics;
use crate::rpc::Rpc;
use crate::storage::StorageHealth;
use crate::throttle::{LoginLimiter, TokenFailures};
use crate::tree_cache::TreeCache;

/// Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    hub: Hub,
    config: ServerConfig,
    sealing_key: SealingKey,
    job_events: JobEvents,
    log_writer: LogWriter,
    last_seen: LastSeen,
    schedule_acks: crate::schedules::Acks,
    metrics: Metrics,
    rpc: Rpc,
    tree_cache: TreeCache,
    login_limiter: LoginLimiter,
    storage: Arc<StorageHealth>,
    downloads: crate::downloads::AgentDownloads,
    snapshot_downloads: crate::snapshot_downloads::Downloads,
    token_failures: TokenFailures,
    fleet: tokio::sync::broadcast::Sender<()>,
    ended: tokio::sync::broadcast::Sender<crate::auth::Ended>,
    stopping: tokio_util::sync::CancellationToken,
    policy_lock: tokio::sync::Mutex<()>,
    repository_turns: crate::repositories::shared::Turns,
    alerts: crate::alerts::AlertsHandle,
    notifier: crate::notify::Notifier,
    cluster: crate::cluster::Cluster,
}

impl AppState {
    /// State over `store` with `config`; `sealing_key` seals repository
    /// settings at rest. Starts the log writer task, so it must be called
    /// inside a Tokio runtime.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig, sealing_key: SealingKey) -> AppState {
        let storage = Arc::new(StorageHealth::default());
        let (log_writer, _task) = LogWriter::spawn(store.clone(), storage.clone());
        let downloads = crate::downloads::AgentDownloads::new(
            config.agent_binary.clone(),
            config.agent_binaries.clone(),
        );
        let cluster = crate::cluster::Cluster::new(
            store.shared(),
            config.cluster_renew,
            config.cluster_expiry,
        );
        AppState(Arc::new(Inner {
            cluster,
            store,
            hub: Hub::default(),
            config,
            sealing_key,
            job_events: JobEvents::default(),
            log_writer,
            last_seen: LastSeen::default(),
            schedule_acks: crate::schedules::Acks::default(),
            metrics: Metrics::default(),
            rpc: Rpc::default(),
            tree_cache: TreeCache::default(),
            login_limiter: LoginLimiter::default(),
            storage,
            token_failures: TokenFailures::default(),
            fleet: tokio::sync::broadcast::channel(16).0,
            ended: tokio::sync::broadcast::channel(256).0,
            stopping: tokio_util::sync::CancellationToken::new(),
            policy_lock: tokio::sync::Mutex::new(()),
            repository_turns: Default::default(),
            alerts: Default::default(),
            notifier: crate::notify::Notifier::new(),
            downloads,
            snapshot_downloads: Default::default(),
        }))
    }

    /// The agent binaries this server hands out.
    pub(crate) fn downloads(&self) -> &crate::downloads::AgentDownloads {
        &self.0.downloads
    }

    /// Snapshot downloads waiting for or streaming their upload.
    pub fn snapshot_downloads(&self) -> &crate::snapshot_downloads::Downloads {
        &self.0.snapshot_downloads
    }

    /// This server among the servers on its database.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        &self.0.cluster
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.0.store.as_ref()
    }

    /// The store, shared (for tasks that outlive a request).
    pub(crate) fn store_arc(&self) -> Arc<dyn Store> {
        self.0.store.clone()
    }

    /// The alert evaluator's handle.
    pub(crate) fn alerts(&self) -> &crate::alerts::AlertsHandle {
        &self.0.alerts
    }

    /// Held while policies are applied: one run at a time.
    pub(crate) fn policy_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.0.policy_lock
    }

    /// Taken while a job into a repository is chosen to run, so two hosts
    /// of one shared repository never both start conflicting jobs.
    pub(crate) fn repository_turns(&self) -> &crate::repositories::shared::Turns {
        &self.0.repository_turns
    }

    /// Wakes the notification sender; holds the client deliveries use.
    pub(crate) fn notifier(&self) -> &crate::notify::Notifier {
        &self.0.notifier
    }

    /// The live agent connections.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// Settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub(crate) fn sealing_key(&self) -> &SealingKey {
        &self.0.sealing_key
    }

    pub(crate) fn job_events(&self) -> &JobEvents {
        &self.0.job_events
    }

    pub(crate) fn log_writer(&self) -> &LogWriter {
        &self.0.log_writer
    }

    /// Calls to agents waiting for their answers.
    pub fn rpc(&self) -> &Rpc {
        &self.0.rpc
    }

    /// Tells watchers of the fleet (dashboards), here and on the other
    /// servers, that something changed.
    pub(crate) fn fleet_changed(&self) {
        self.fleet_changed_here();
        crate::cluster::bus::send(self, crate::cluster::bus::Signal::Fleet);
    }

    /// [`AppState::fleet_changed`] for this server's watchers only.
    pub(crate) fn fleet_changed_here(&self) {
        let _ = self.0.fleet.send(());
    }

    /// Subscribes to fleet changes.
    pub(crate) fn fleet_changes(&self) -> tokio::sync::broadcast::Receiver<()> {
        self.0.fleet.subscribe()
    }

    /// Tells live streams that credentials ended (logout, revocation,
    /// password change, user deleted), so theirs can stop.
    pub(crate) fn credentials_ended(&self, ended: crate::auth::Ended) {
        self.credentials_ended_here(ended);
        crate::cluster::bus::send(
            self,
            crate::cluster::bus::Signal::CredentialsEnded { ended },
        );
    }

    /// [`AppState::credentials_ended`] for this server's streams only.
    pub(crate) fn credentials_ended_here(&self, ended: crate::auth::Ended) {
        let _ = self.0.ended.send(ended);
    }

    /// Subscribes to ended credentials.
    pub(crate) fn ended_credentials(&self) -> tokio::sync::broadcast::Receiver<crate::auth::Ended> {
        self.0.ended.subscribe()
    }

    pub(crate) fn login_limiter(&self) -> &LoginLimiter {
        &self.0.login_limiter
    }

    /// Failed bearer-token checks per address.
    pub(crate) fn token_failures(&self) -> &TokenFailures {
        &self.0.token_failures
    }

    pub(crate) fn tree_cache(&self) -> &TreeCache {
        &self.0.tree_cache
    }

    pub(crate) fn last_seen(&self) -> &LastSeen {
        &self.0.last_seen
    }

    /// Where `schedule.ack`s are written in groups.
    pub(crate) fn schedule_acks(&self) -> &crate::schedules::Acks {
        &self.0.schedule_acks
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Whether the store can be written, as last seen.
    pub(crate) fn storage(&self) -> &StorageHealth {
        &self.0.storage
    }

    /// Writes pending last-seen times to the store now.
    pub async fn flush_last_seen(&self) {
        let started = std::time::Instant::now();
        let written = self.0.last_seen.flush(self.store(), &self.0.storage).await;
        if written > 0 {
            self.0.metrics.last_seen_flushed(written, started.elapsed());
        }
    }

    /// Marks the server as shutting down: agents closing from now on are
    /// not "lost".
    pub fn stop(&self) {
        self.0.stopping.cancel();
    }

    /// Resolves once [`AppState::stop`] was called.
    pub async fn stopping(&self) {
        self.0.stopping.cancelled().await;
    }

    /// Whether [`AppState::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.is_cancelled()
    }

    /// Waits until every log line handed to the writer so far is stored.
    pub async fn flush_logs(&self) {
        self.0.log_writer.flush().await;
    }
}
