//! The store's part for hosts' sealed repository settings and repository
//! identities.

use async_trait::async_trait;
use rm_core::HostId;

use crate::{Host, NewAuditEntry, RepositoryJob, SealedRepository, StoreResult};

/// Hosts' sealed repository settings and repository identities. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait RepositoryStore: Send + Sync {
    /// Stores (replaces) a host's own sealed repository settings; `key` is
    /// the repository's identity (its URL without credentials).
    /// [`crate::StoreError::NotFound`] for an unknown or deleted host.
    async fn set_repository(
        &self,
        host: HostId,
        sealed: &SealedRepository,
        key: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// Removes a host's own repository settings (a policy's may then apply).
    /// Returns whether there were own settings.
    async fn delete_own_repository(
        &self,
        host: HostId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    /// Records the identity of settings stored before identities were
    /// (learned by opening them on start).
    async fn set_repository_key(&self, host: HostId, key: &str) -> StoreResult<()>;

    /// The identity of a live host's repository, if it has one: one key
    /// lookup, for the dispatcher, which asks on every job.
    async fn repository_key(&self, host: HostId) -> StoreResult<Option<String>>;

    /// The live hosts using the repository with identity `key`, by id.
    async fn hosts_of_repository(&self, key: &str) -> StoreResult<Vec<Host>>;

    /// The queued, dispatched and running jobs of every live host using the
    /// repository `key`, oldest first.
    async fn repository_jobs(&self, key: &str) -> StoreResult<Vec<RepositoryJob>>;

    /// A host's sealed repository settings.
    async fn repository(&self, host: HostId) -> StoreResult<Option<SealedRepository>>;

    /// Every live host's sealed repository settings and the refusal
    /// recorded for them (for the start-up check of stored settings against
    /// the current rules).
    async fn repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository, Option<String>)>>;

    /// Records why a host's stored settings are refused (`Some`), or that
    /// they are usable (`None`). Storing new settings clears it too. A host
    /// without settings is left alone.
    async fn set_repository_refused(&self, host: HostId, reason: Option<&str>) -> StoreResult<()>;
}
