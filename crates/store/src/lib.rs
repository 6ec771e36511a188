//! The storage contract of the restic-manager server.
//!
//! [`Store`] is what the server needs from a database, expressed in domain
//! types; `rm-store-sqlite` (and later PostgreSQL) implement it. Nothing here
//! knows SQL or HTTP, so the server can be tested against any implementation
//! and the implementations against one shared scenario.

mod alerts;
mod error;
mod models;
mod notifications;

pub mod copy;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{
    BatchId, HostId, JobId, JobStatus, PolicyId, Role, ScheduleId, Selector, TokenId, UserId,
};

pub use alerts::{AlertFilter, AlertRecord, AlertStore, NewAlert, SilenceRecord};
pub use error::{StorageFault, StoreError, StoreResult};
pub use models::*;
pub use notifications::{
    ChannelRecord, ChannelStats, DeliveryOutcome, NewNotification, NotificationStore, OutboxRow,
};

/// Largest page [`Store::list_hosts_page`] and
/// [`Store::list_hosts_attention_first`] return.
pub const MAX_HOST_PAGE: u32 = 1000;

/// Everything the server persists. Implementations must be safe to share
/// between tasks; every method is one transaction.
///
/// Methods that make a change an operator can make take `audit`: the audit
/// log entry recording it, written in the change's own transaction, so the
/// change and its entry commit together or not at all (a failed write
/// leaves neither). The entry is written only when the change happens: not
/// on an `Err`, nor when a method that returns whether it changed anything
/// returns `false`. Callers that are not operators (schedule fires, the
/// server's own jobs, tests) pass `None`.
#[async_trait]
pub trait Store: AlertStore + NotificationStore + Send + Sync + 'static {
    // ── operators ──────────────────────────────────────────────────────

    /// Adds a user. [`StoreError::Conflict`] when the name is taken.
    async fn create_user(&self, user: &User, audit: Option<&NewAuditEntry>) -> StoreResult<()>;
    /// Looks a user up by name.
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// Looks a user up by id.
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Replaces a user's password hash and ends their sessions.
    /// [`StoreError::NotFound`] when there is no such user.
    async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// How many users exist (zero on first start).
    async fn count_users(&self) -> StoreResult<u64>;
    /// Every user, in user-name order.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Deletes a user for good (the name may be reused later) together with
    /// their sessions and API tokens, in one transaction, so no credential
    /// of theirs works afterwards (their tokens are removed, not merely
    /// marked revoked: nothing is left to list them under). [`StoreError::NotFound`] when
    /// there is no such user; [`StoreError::Conflict`] (`cannot delete the
    /// last user`) when they are the only user left, since nobody could log
    /// in afterwards (only the offline `admin create-user` could recover).
    async fn delete_user(&self, id: UserId, audit: Option<&NewAuditEntry>) -> StoreResult<()>;
    /// Sets a user's role and scope (`None`: every host) and returns the
    /// user as stored. [`StoreError::NotFound`] when there is no such user;
    /// [`StoreError::Conflict`] (`cannot demote the last admin`) when this
    /// would leave no admin. Deleting the last admin is refused the same
    /// way by [`Store::delete_user`].
    async fn set_user_access(
        &self,
        id: UserId,
        role: Role,
        scope: Option<&Selector>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<User>;

    /// Stores a login session.
    async fn create_session(
        &self,
        session: &Session,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// A session by its token id.
    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>>;
    /// Ends a session (logout). Ending a missing session is not an error.
    async fn delete_session(&self, id: TokenId, audit: Option<&NewAuditEntry>) -> StoreResult<()>;
    /// Removes sessions that expired before `now`; returns how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Stores an API token.
    async fn create_api_token(
        &self,
        token: &ApiToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// An API token by its id (revoked ones included; callers check).
    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>>;
    /// A user's API tokens in creation order, revoked and expired ones
    /// included.
    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiToken>>;
    /// Marks API token `id` revoked at `at`. Returns false when there is no
    /// such token or it was already revoked (its first revocation time is
    /// kept).
    async fn revoke_api_token(
        &self,
        id: TokenId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    // ── enrolment ──────────────────────────────────────────────────────

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
    /// its first agent token. [`StoreError::TokenSpent`] when the token was
    /// already used or expired at `now` — also when two enrolments race.
    async fn enroll_host(
        &self,
        token_id: TokenId,
        now: DateTime<Utc>,
        host: &NewHost,
        agent_token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host>;

    // ── hosts ──────────────────────────────────────────────────────────

    /// Every host that is not deleted, in enrolment order. For small
    /// fleets and pickers; lists that must scale use [`Store::list_hosts_page`].
    async fn list_hosts(&self) -> StoreResult<Vec<Host>>;
    /// One page of hosts that are not deleted, in id order (ids are ULIDs,
    /// so that is enrolment order): those with an id greater than `after`,
    /// at most `limit` (clamped to 1..=[`MAX_HOST_PAGE`]). The last id of a
    /// page is the `after` of the next, so pages neither skip nor repeat
    /// hosts while others enrol or go.
    async fn list_hosts_page(&self, after: Option<HostId>, limit: u32) -> StoreResult<Vec<Host>>;
    /// [`Store::list_hosts_page`] of the hosts `selector` matches only (a
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
    /// [`StoreError::NotFound`] for an unknown or deleted host.
    async fn patch_host(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host>;
    /// A host that is not deleted.
    async fn host(&self, id: HostId) -> StoreResult<Option<Host>>;
    /// The agent token `id` if it is still valid: not revoked, and its host
    /// not deleted.
    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>>;
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
    /// Writes and commits one small row, to learn whether the database can
    /// be written now (the server's storage probe).
    async fn probe_write(&self, at: DateTime<Utc>) -> StoreResult<()>;
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

    // ── repositories ───────────────────────────────────────────────────

    /// Stores (replaces) a host's own sealed repository settings; `key` is
    /// the repository's identity (its URL without credentials).
    /// [`StoreError::NotFound`] for an unknown or deleted host.
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

    // ── sealing key ────────────────────────────────────────────────────

    /// The fingerprint of the key that sealed the store's secrets, once one
    /// was recorded.
    async fn sealing_key_record(&self) -> StoreResult<Option<SealingKeyRecord>>;
    /// Every sealed value the store holds, by owner: the repository
    /// settings of every host, deleted hosts included (their values are
    /// still sealed data), in host id order.
    async fn sealed_repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository)>>;
    /// Records `record` as the key that seals the store's secrets and
    /// replaces the given [`SealFormat::Unbound`] values with their
    /// re-sealed form, in one transaction: a store is never half re-sealed.
    /// [`StoreError::Conflict`] (and nothing changed) when one of them is
    /// no longer stored unbound.
    async fn record_sealing_key(
        &self,
        record: &SealingKeyRecord,
        resealed: &[(HostId, SealedRepository)],
    ) -> StoreResult<()>;
    /// Discards every sealed value (the repository settings of every host,
    /// and the repository templates of policies)
    /// and records `record` as the sealing key, in one transaction. Returns
    /// the hosts whose settings were discarded, deleted ones included.
    async fn reset_sealed_secrets(
        &self,
        record: &SealingKeyRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<HostId>>;

    // ── policies ───────────────────────────────────────────────────────

    /// Every policy, oldest first.
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>>;
    /// A policy by id.
    async fn policy(&self, id: PolicyId) -> StoreResult<Option<PolicyRecord>>;
    /// What the reconciler needs of `hosts` (every live host when `None`),
    /// in id order.
    async fn policy_targets(&self, hosts: Option<&[HostId]>) -> StoreResult<Vec<PolicyTarget>>;
    /// Writes `policy` (if any) and every host's change in one transaction,
    /// bumping the schedule version once for each host whose schedules
    /// change. Returns those hosts with their new versions.
    async fn apply_policy_changes(
        &self,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>>;
    /// The live hosts a policy applies to, by name.
    async fn hosts_of_policy(&self, id: PolicyId) -> StoreResult<Vec<Host>>;
    /// How many hosts each policy applies to, and how many are in sync.
    async fn policy_coverage(&self) -> StoreResult<Vec<PolicyCoverage>>;

    // ── jobs ───────────────────────────────────────────────────────────

    /// Creates many jobs in one transaction (the server's own follow-ups
    /// to a fleet-wide change, such as initialising new repositories).
    async fn create_jobs(&self, jobs: &[NewJob]) -> StoreResult<Vec<Job>>;
    /// Creates the jobs of one bulk action in one transaction, all in
    /// batch `batch`, of which at most `max_parallel` run at a time per
    /// repository.
    async fn create_batch_jobs(
        &self,
        batch: BatchId,
        max_parallel: u32,
        jobs: &[NewJob],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<Job>>;
    /// Creates `job` unless a job was already created under `fire_key` (a
    /// shared repository's policy prune or check, fired by each of its
    /// hosts at once): returns the job that holds the key, and whether it
    /// is the one just made.
    async fn create_job_once(&self, job: &NewJob, fire_key: &str) -> StoreResult<(Job, bool)>;

    /// Creates a job in status `queued`. Creating the same id twice is a
    /// [`StoreError::Conflict`]; an unknown host is [`StoreError::NotFound`].
    async fn create_job(&self, job: &NewJob, audit: Option<&NewAuditEntry>) -> StoreResult<Job>;
    /// A job by id.
    async fn job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// Jobs matching `filter`, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;
    /// The host's jobs that are dispatched or running.
    async fn active_jobs(&self, host: HostId) -> StoreResult<Vec<Job>>;
    /// The host's oldest queued job, but only when none of its jobs is
    /// dispatched or running (a host runs one job at a time, in order).
    async fn next_dispatchable_job(&self, host: HostId) -> StoreResult<Option<Job>>;
    /// Hosts that have queued jobs (for dispatch after a restart).
    async fn hosts_with_queued_jobs(&self) -> StoreResult<Vec<HostId>>;
    /// Hosts that have dispatched or running jobs (to watch for agents
    /// that do not come back after a restart).
    async fn hosts_with_active_jobs(&self) -> StoreResult<Vec<HostId>>;
    /// Moves job `id` to `to` (`dispatched` or `running`, setting
    /// `dispatched_at` / `started_at` to `at`; or back to `queued`, clearing
    /// `dispatched_at`) if its current status may become `to`
    /// ([`JobStatus::can_become`]). Returns whether it moved; a repeated or
    /// late move changes nothing.
    async fn advance_job(&self, id: JobId, to: JobStatus, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Records how job `id` ended, if it has not ended already (idempotent),
    /// or if its end so far is a provisional verdict and `end` is not (the
    /// agent's real end replacing the server's guess). For a finished
    /// `backup` job it also updates the host's last backup time and
    /// status. Returns whether it changed anything.
    async fn finish_job(
        &self,
        id: JobId,
        end: &JobEnd,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    /// Stores log lines of any number of jobs in one transaction. Lines
    /// already stored (same job and seq) are skipped, so a replay stores
    /// nothing twice. Returns how many were new.
    async fn append_logs(&self, lines: &[LogLineRecord]) -> StoreResult<u64>;
    /// A job's lines with `seq > after_seq`, in order, at most `limit`.
    async fn logs(&self, job: JobId, after_seq: u64, limit: u32)
        -> StoreResult<Vec<LogLineRecord>>;

    /// Stores an agent's answer to a `command.run` (the latest answer per
    /// job wins).
    async fn record_command_result(&self, result: &CommandResultRecord) -> StoreResult<()>;
    /// The stored answer for a job.
    async fn command_result(&self, job: JobId) -> StoreResult<Option<CommandResultRecord>>;

    // ── repository contents ────────────────────────────────────────────

    /// Replaces a host's stored snapshot list in one transaction, and sets
    /// the host's `snapshot_count` to its length.
    async fn replace_snapshots(
        &self,
        host: HostId,
        snapshots: &[SnapshotRecord],
    ) -> StoreResult<()>;
    /// Adds one snapshot to a host's stored list (replacing the entry with
    /// the same id, so a repeat changes nothing) and sets the host's
    /// `snapshot_count` to the list's new length, in one transaction.
    async fn add_snapshot(&self, host: HostId, snapshot: &SnapshotRecord) -> StoreResult<()>;
    /// A host's snapshots, newest first.
    async fn snapshots(&self, host: HostId) -> StoreResult<Vec<SnapshotRecord>>;
    /// Adds a statistics history row and makes it the host's latest
    /// (updating the host's repository size).
    async fn add_repo_stats(&self, host: HostId, stats: &RepoStatsRecord) -> StoreResult<()>;
    /// A host's statistics, newest first, at most `limit` rows.
    async fn repo_stats(&self, host: HostId, limit: u32) -> StoreResult<Vec<RepoStatsRecord>>;

    // ── schedules ──────────────────────────────────────────────────────

    /// Adds a schedule and bumps its host's schedule version, in one
    /// transaction. Returns the new version. Unknown or deleted host:
    /// [`StoreError::NotFound`].
    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64>;
    /// Replaces a schedule's fields (not its id, host or creation time) and
    /// bumps the host's schedule version. Returns the new version.
    async fn update_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64>;
    /// Deletes a schedule and bumps the host's version. Returns the host and
    /// the new version; [`StoreError::NotFound`] when there is no such
    /// schedule.
    async fn delete_schedule(
        &self,
        id: ScheduleId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<(HostId, u64)>;
    /// A schedule by id.
    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<ScheduleRecord>>;
    /// A host's schedule version and all its schedules (creation order),
    /// read together so they match. [`StoreError::NotFound`] for an unknown
    /// or deleted host.
    async fn schedule_set(&self, host: HostId) -> StoreResult<(u64, Vec<ScheduleRecord>)> {
        self.schedule_sets(&[host])
            .await?
            .into_iter()
            .next()
            .map(|(_, version, schedules)| (version, schedules))
            .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))
    }
    /// [`Store::schedule_set`] of many hosts at once, all read together
    /// (pushing a policy change to 10,000 agents); unknown or deleted hosts
    /// are left out.
    async fn schedule_sets(
        &self,
        hosts: &[HostId],
    ) -> StoreResult<Vec<(HostId, u64, Vec<ScheduleRecord>)>>;
    /// Records that the agent runs schedule-set `version` now. The applied
    /// version only moves forward. Returns whether it changed.
    async fn record_schedule_ack(&self, host: HostId, version: u64) -> StoreResult<bool> {
        Ok(!self
            .record_schedule_acks(&[(host, version)])
            .await?
            .is_empty())
    }
    /// [`Store::record_schedule_ack`] of many acknowledgements in one
    /// transaction, ending as if written one by one (of a host acknowledged
    /// twice, the highest version issued counts); returns the hosts whose
    /// applied version changed, with it.
    async fn record_schedule_acks(&self, acks: &[(HostId, u64)])
        -> StoreResult<Vec<(HostId, u64)>>;
    /// The schedule's jobs that are queued, dispatched or running.
    async fn active_jobs_of_schedule(&self, schedule: ScheduleId) -> StoreResult<Vec<Job>>;

    // ── audit log ──────────────────────────────────────────────────────

    /// Appends an audit entry on its own; returns its id (larger than every
    /// earlier entry's). For events that change nothing (a refused login,
    /// asking an agent to cancel); a change passes its entry to the method
    /// that makes it instead.
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<u64>;
    /// Audit entries matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;
    // ── agent token rotation and revocation ────────────────────────────

    /// Stores `token` (marked pending) as the new token of its host, beside
    /// the current one, revoking an earlier rotation's unconfirmed token.
    /// [`StoreError::NotFound`] for an unknown or deleted host;
    /// [`StoreError::Conflict`] when the host's agent was revoked.
    async fn begin_token_rotation(
        &self,
        token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// Makes the host's pending token `id` its only token: the others are
    /// revoked and the rotation time recorded, in one transaction. Returns
    /// false when `id` is not a valid pending token of `host` (already
    /// promoted, replaced by a newer rotation, or revoked).
    async fn promote_agent_token(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The host's valid pending token, if a rotation waits for the agent.
    async fn pending_agent_token(&self, host: HostId) -> StoreResult<Option<AgentToken>>;
    /// Revokes one agent token (a rotation whose token never reached the
    /// agent). Returns whether it was valid before.
    async fn revoke_agent_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Revokes every token of the host's agent and marks the host revoked
    /// and offline; the host and its history stay. Revoking again keeps the
    /// first time. Returns false for an unknown or deleted host.
    async fn revoke_agent(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;
}
