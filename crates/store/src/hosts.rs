//! The store's part for enrolment and hosts: enrolment tokens, the host
//! list and counts, hello, agent upgrades, liveness, deletion and the
//! metrics summaries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, Selector, TokenId};

use crate::{
    AgentToken, EnrollmentToken, HelloRecord, Host, HostBackupSummary, HostCounts, HostPatch,
    NewAuditEntry, NewHost, ProtectedAt, StoreResult,
};

/// Enrolment and hosts: enrolment tokens, the host list and counts, hello,
/// agent upgrades, liveness, deletion and the metrics summaries. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait HostStore: Send + Sync {
    /// Stores a new enrolment token.
    async fn create_enrollment_token(
        &self,
        token: &EnrollmentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// An enrolment token by its id, used or not.
    async fn enrollment_token(&self, id: TokenId) -> StoreResult<Option<EnrollmentToken>>;

    /// Tokens not yet used and not expired at `now`, newest first.
    async fn pending_enrollment_tokens(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<EnrollmentToken>>;

    /// Atomically spends enrolment token `token_id` and creates the host with
    /// its first agent token. [`crate::StoreError::TokenSpent`] when the token was
    /// already used or expired at `now` — also when two enrolments race.
    async fn enroll_host(
        &self,
        token_id: TokenId,
        now: DateTime<Utc>,
        host: &NewHost,
        agent_token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host>;

    /// Every host that is not deleted, in enrolment order. For small
    /// fleets and pickers; lists that must scale use [`Self::list_hosts_page`].
    async fn list_hosts(&self) -> StoreResult<Vec<Host>>;

    /// One page of hosts that are not deleted, in id order (ids are ULIDs,
    /// so that is enrolment order): those with an id greater than `after`,
    /// at most `limit` (clamped to 1..=[`crate::MAX_HOST_PAGE`]). The last id of a
    /// page is the `after` of the next, so pages neither skip nor repeat
    /// hosts while others enrol or go.
    async fn list_hosts_page(&self, after: Option<HostId>, limit: u32) -> StoreResult<Vec<Host>>;

    /// [`Self::list_hosts_page`] of the hosts `selector` matches only (a
    /// scoped user's view).
    async fn list_hosts_page_matching(
        &self,
        after: Option<HostId>,
        limit: u32,
        selector: &Selector,
    ) -> StoreResult<Vec<Host>>;

    /// Hosts that need attention first — offline, or not protected (see
    /// [`ProtectedAt`]) — then the rest, each
    /// group by name then id; `limit` rows (clamped as above) from `offset`.
    /// Only hosts `selector` matches (the dashboard's label filter).
    async fn list_hosts_attention_first(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Host>>;

    /// The agent versions of the hosts `selector` matches, with how many
    /// hosts report each (hosts whose agent never connected are left out).
    async fn agent_versions(&self, selector: &Selector) -> StoreResult<Vec<(String, u64)>>;

    /// Counts the hosts `selector` matches: all, online, those not
    /// protected (see [`ProtectedAt`]), and the unconfigured, in one query.
    async fn host_counts(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
    ) -> StoreResult<HostCounts>;

    /// Every live host `selector` matches, in id order (bulk jobs).
    async fn hosts_matching(&self, selector: &Selector) -> StoreResult<Vec<Host>>;

    /// Changes a host's own name, labels or freshness.
    /// [`crate::StoreError::NotFound`] for an unknown or deleted host.
    async fn patch_host(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host>;

    /// A host that is not deleted.
    async fn host(&self, id: HostId) -> StoreResult<Option<Host>>;

    /// Records an accepted `hello`: versions, platform, the connection that
    /// now owns the host, online, last seen.
    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()>;

    /// Records that agent `version` was asked for on `hosts` (replacing an
    /// earlier request), with the audit entry, in one transaction. Deleted
    /// hosts are left alone.
    async fn request_agent_upgrade(
        &self,
        hosts: &[HostId],
        version: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// Records an agent's report on an upgrade (`state` as the protocol
    /// names it). `installed` and `failed` end the request, so a failed
    /// upgrade is not retried at every reconnect.
    async fn record_agent_upgrade_status(
        &self,
        host_id: HostId,
        version: &str,
        state: &str,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Moves `last_seen_at` forward for many hosts in one transaction.
    async fn touch_hosts(&self, seen: &[(HostId, DateTime<Utc>)]) -> StoreResult<()>;

    /// Marks the host offline, but only if `connection_id` is still the
    /// connection that owns it (a fast reconnect must stay online). Returns
    /// whether it changed anything.
    async fn mark_host_offline(
        &self,
        host_id: HostId,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Marks every host offline (server start: no agent is connected yet).
    async fn mark_all_hosts_offline(&self) -> StoreResult<u64>;

    /// Deletes a host: hides it and revokes all of its agent tokens. Returns
    /// false when there was no such (undeleted) host.
    async fn delete_host(
        &self,
        id: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    /// Every host that is not deleted, in id order, with what `/metrics`
    /// shows of it: connection state, effective-freshness inputs and its
    /// last successful backup job (the one that set
    /// `last_backup_success_at`), in one query however many hosts there
    /// are (a scrape must not cost a query per host).
    async fn host_backup_summaries(&self) -> StoreResult<Vec<HostBackupSummary>>;
}
