//! The records the server stores, as plain Rust values.

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{
    BatchId, HostId, JobId, JobStatus, JobTrigger, Labels, PolicyId, Role, ScheduleId, Selector,
    TokenId, UserId,
};

/// An operator account.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// When the account was made.
    pub created_at: DateTime<Utc>,
    /// What they may do.
    pub role: Role,
    /// The hosts they see and act on; `None`: every host.
    pub scope: Option<Selector>,
}

/// A login session; its token is `rms.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Token id.
    pub id: TokenId,
    /// Whose session.
    pub user_id: UserId,
    /// Hash of the session token.
    pub token_hash: TokenHash,
    /// Login time.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A long-lived API token; `rmt.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Token id.
    pub id: TokenId,
    /// Whose token (it acts as this user).
    pub user_id: UserId,
    /// What the operator called it.
    pub name: String,
    /// Hash of the token.
    pub token_hash: TokenHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set once revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// A narrower role than its user's; `None`: the user's role. The
    /// effective role is the smaller of the two at each request.
    pub role: Option<Role>,
}

/// A single-use enrolment token; `rme.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentToken {
    /// Token id.
    pub id: TokenId,
    /// Name for the host it will enrol, if the operator gave one.
    pub name: Option<String>,
    /// Hash of the token.
    pub token_hash: TokenHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// When it was spent.
    pub used_at: Option<DateTime<Utc>>,
    /// The host it enrolled.
    pub host_id: Option<HostId>,
    /// Labels the enrolled host gets.
    pub labels: Labels,
}

/// An agent's credential; `rma.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentToken {
    /// Token id.
    pub id: TokenId,
    /// The host it authenticates.
    pub host_id: HostId,
    /// Hash of the token.
    pub token_hash: TokenHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Whether it is a rotation's new token the agent has not confirmed yet
    /// (valid alongside the current one until confirmed or replaced).
    pub pending: bool,
}

/// The fields of a host known at enrolment.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHost {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// The machine's host name.
    pub hostname: String,
    /// Its labels; `None`: the enrolment token's.
    pub labels: Option<Labels>,
}

/// A host (an enrolled machine and its agent).
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// The machine's host name (updated from each `hello`).
    pub hostname: String,
    /// Enrolment time.
    pub enrolled_at: DateTime<Utc>,
    /// Last frame from its agent.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Whether an agent connection owns it now.
    pub online: bool,
    /// Agent release version, from `hello`.
    pub agent_version: Option<String>,
    /// restic version, from `hello`.
    pub restic_version: Option<String>,
    /// Why the restic version is unknown, from `hello`.
    pub restic_error: Option<String>,
    /// Protocol version, from `hello`.
    pub protocol_version: Option<u32>,
    /// Operating system, from `hello`.
    pub os: Option<String>,
    /// CPU architecture, from `hello`.
    pub arch: Option<String>,
    /// When the last backup job finished.
    pub last_backup_at: Option<DateTime<Utc>>,
    /// That job's status.
    pub last_backup_status: Option<JobStatus>,
    /// When the last backup that saved a snapshot (succeeded or partial)
    /// finished, whatever came after it: `backup_stale` counts from here.
    pub last_backup_success_at: Option<DateTime<Utc>>,
    /// Repository size (raw bytes) from the latest statistics.
    pub repo_size_bytes: Option<u64>,
    /// How many snapshots the last `snapshots.report` listed (`None` before
    /// the first), kept on the host so lists need no per-host query.
    pub snapshot_count: Option<u64>,
    /// Whether repository settings are stored for the host.
    pub has_repository: bool,
    /// Why the stored repository settings are not used (they break the
    /// current rules, e.g. a variable outside the allow-list); `None` when
    /// they are usable or there are none.
    pub repository_refused: Option<String>,
    /// The schedule-set version the server wants the agent to run (0 when
    /// no schedule was ever set); bumped by every schedule change.
    pub schedule_version: u64,
    /// The highest version the agent acknowledged.
    pub schedule_applied_version: Option<u64>,
    /// When the agent last confirmed a new token (rotation); `None` while it
    /// uses the token it enrolled with.
    pub token_rotated_at: Option<DateTime<Utc>>,
    /// Whether a rotation's new token waits for the agent's confirmation.
    pub token_rotation_pending: bool,
    /// When an operator revoked the agent: no token of it works since, and
    /// only a new enrolment (a new host) brings the machine back.
    pub agent_revoked_at: Option<DateTime<Utc>>,
    /// The hooks the agent listed as usable in its last `hello`.
    pub hooks: Vec<String>,
    /// The files in its hooks folder it refuses to run, and why.
    pub hooks_refused: Vec<RefusedHookRecord>,
    /// Its labels.
    pub labels: Labels,
    /// Its own freshness (seconds), overriding its policy's.
    pub freshness_seconds: Option<u64>,
    /// Its own offline threshold (seconds) for `host_offline`, overriding
    /// its policy's.
    pub offline_seconds: Option<u64>,
    /// The policy that applies to it (as last reconciled).
    pub policy_id: Option<PolicyId>,
    /// The policy its repository settings come from; `None` when they are
    /// its own (or it has none).
    pub repository_policy_id: Option<PolicyId>,
    /// Its repository's identity (the URL without credentials): hosts with
    /// the same one share the repository.
    pub repository_key: Option<String>,
    /// How many other live hosts have the same `repository_key`.
    pub repository_shared_with: u64,
    /// Whether it has any schedule (its own or a policy's).
    pub has_schedules: bool,
    /// The platform its agent reported (`linux-x86_64`); `None` for an
    /// agent too old to upgrade itself.
    pub platform: Option<String>,
    /// Agent upgrades asked for and reported.
    pub upgrade: AgentUpgradeRecord,
}

/// A host's agent upgrade: the one asked for, and the agent's last report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentUpgradeRecord {
    /// The version an operator asked for, not yet installed or failed:
    /// sent at the agent's next `hello` while it is older.
    pub requested_version: Option<String>,
    /// When it was asked for.
    pub requested_at: Option<DateTime<Utc>>,
    /// The agent's last `agent.upgrade.status` state (`installed`, …).
    pub state: Option<String>,
    /// The version that report was about.
    pub version: Option<String>,
    /// Why it failed, with `failed`.
    pub error: Option<String>,
    /// When it was reported.
    pub at: Option<DateTime<Utc>>,
}

/// One host as `/metrics` shows it ([`crate::HostStore::host_backup_summaries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HostBackupSummary {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// Whether an agent connection owns it now.
    pub online: bool,
    /// The policy that applies to it (for its effective freshness).
    pub policy_id: Option<PolicyId>,
    /// Its own freshness (seconds), overriding its policy's.
    pub freshness_seconds: Option<u64>,
    /// When the last backup that saved a snapshot finished.
    pub last_backup_success_at: Option<DateTime<Utc>>,
    /// That backup's job, while it is still stored.
    pub last_backup: Option<LastBackupRun>,
}

/// The job of a host's last successful (or partial) backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBackupRun {
    /// When the agent started it (`None` for a job that never reported
    /// its start).
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// restic's `total_bytes_processed`: the size of what was backed up.
    pub bytes_processed: Option<u64>,
    /// restic's `data_added`: new data it stored in the repository.
    pub bytes_added: Option<u64>,
}

/// The fleet summary: how many hosts are online and how many lack a recent
/// backup, counted in one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounts {
    /// Hosts that are not deleted.
    pub total: u64,
    /// Of those, hosts whose agent is connected.
    pub online: u64,
    /// Of those, hosts without a successful (or partial) backup since the
    /// cut-off asked for: never backed up, last backup failed, or too old.
    pub not_backed_up: u64,
    /// Of those, hosts with neither a repository nor a schedule.
    pub unconfigured: u64,
}

impl HostCounts {
    /// Hosts whose agent is not connected.
    pub fn offline(&self) -> u64 {
        self.total.saturating_sub(self.online)
    }
}

/// What an accepted `hello` records.
#[derive(Debug, Clone, PartialEq)]
pub struct HelloRecord {
    /// Id of the connection that now owns the host (a ULID: unique across
    /// servers too).
    pub connection_id: String,
    /// Id of the server holding that connection (see
    /// [`crate::ClusterStore`]).
    pub server_id: String,
    /// Agent release version.
    pub agent_version: String,
    /// restic version, if detected.
    pub restic_version: Option<String>,
    /// Why not, if not.
    pub restic_error: Option<String>,
    /// Protocol version spoken.
    pub protocol_version: u32,
    /// Host name reported.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// When the hello was accepted.
    pub at: DateTime<Utc>,
    /// Usable hooks, by name.
    pub hooks: Vec<String>,
    /// Refused hook files, with why.
    pub hooks_refused: Vec<RefusedHookRecord>,
    /// The agent's platform, when it said.
    pub platform: Option<String>,
}

/// A file in an agent's hooks folder that the agent refuses to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefusedHookRecord {
    /// The file's name.
    pub name: String,
    /// Why the agent refuses it.
    pub reason: String,
}

/// How a sealed value was sealed, stored beside it so re-sealing old
/// values is idempotent: only [`SealFormat::Unbound`] values are re-sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealFormat {
    /// Sealed without associated data (before owner binding); the server
    /// re-seals these on start.
    Unbound,
    /// Sealed with its owner and field as associated data
    /// (`host:<id>/repository`).
    OwnerBound,
}

impl SealFormat {
    /// The stored number: 0 unbound, 1 owner-bound.
    pub fn as_i64(self) -> i64 {
        match self {
            SealFormat::Unbound => 0,
            SealFormat::OwnerBound => 1,
        }
    }

    /// The format a stored number names, if any.
    pub fn from_i64(value: i64) -> Option<SealFormat> {
        match value {
            0 => Some(SealFormat::Unbound),
            1 => Some(SealFormat::OwnerBound),
            _ => None,
        }
    }
}

/// A host's repository settings, sealed by the server (AES-256-GCM) so the
/// database never holds the password or backend keys in clear.
#[derive(Clone, PartialEq)]
pub struct SealedRepository {
    /// The AEAD nonce.
    pub nonce: Vec<u8>,
    /// The encrypted JSON of the repository settings.
    pub ciphertext: Vec<u8>,
    /// Whether it is bound to its owner.
    pub format: SealFormat,
    /// When the settings were last changed.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for SealedRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRepository")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("format", &self.format)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Which key sealed the store's secrets: its fingerprint (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealingKeyRecord {
    /// The key's fingerprint (`SealingKey::fingerprint`).
    pub fingerprint: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Id (minted by the server, or by an agent for offline runs).
    pub id: JobId,
    /// The host that runs it.
    pub host_id: HostId,
    /// The job kind's wire name (`backup`, `forget`, …).
    pub kind: String,
    /// Validated parameters, as JSON.
    pub params: serde_json::Value,
    /// Why it exists.
    pub trigger: JobTrigger,
    /// The schedule that fired it, for scheduled jobs.
    pub schedule_id: Option<ScheduleId>,
    /// The status it starts in: `queued` normally; `dispatched` for a job
    /// an agent started on its own (offline); `skipped` (finished at once)
    /// for a fire whose previous run was still going.
    pub status: JobStatus,
    /// Why, for a job created finished (`skipped`).
    pub error: Option<String>,
    /// Creation time; also the order jobs of one host run in.
    pub created_at: DateTime<Utc>,
}

/// A job and everything known about how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// The host that runs it.
    pub host_id: HostId,
    /// Kind (`backup`, …).
    pub kind: String,
    /// Parameters.
    pub params: serde_json::Value,
    /// Where it is now.
    pub status: JobStatus,
    /// Why it exists.
    pub trigger: JobTrigger,
    /// The schedule that fired it.
    pub schedule_id: Option<ScheduleId>,
    /// restic's exit code, once finished.
    pub exit_code: Option<i32>,
    /// Command-specific statistics (JSON object), once finished.
    pub stats: serde_json::Value,
    /// What went wrong, in restic's words where possible.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it was sent to the agent.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When restic started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// How a job ended, as recorded by [`crate::JobStore::finish_job`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    /// A finished status.
    pub status: JobStatus,
    /// restic's exit code, if it ran.
    pub exit_code: Option<i32>,
    /// Statistics (JSON object, `Null` when none).
    pub stats: serde_json::Value,
    /// Error text.
    pub error: Option<String>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The server's own verdict for a job whose agent vanished: a later
    /// end reported by the agent replaces it (once).
    pub provisional: bool,
}

/// Which jobs to list; newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only this host's.
    pub host_id: Option<HostId>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind (`backup`, `drill`, …).
    pub kind: Option<String>,
    /// Only jobs of hosts matching this selector (a scoped user's view).
    pub scope: Option<Selector>,
    /// Only jobs older than this one (for paging).
    pub before: Option<JobId>,
    /// At most this many.
    pub limit: u32,
}

/// One stored output line of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLineRecord {
    /// The job.
    pub job_id: JobId,
    /// Dense per job, from 1.
    pub seq: u64,
    /// When the agent read it.
    pub ts: DateTime<Utc>,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text.
    pub text: String,
}

/// An agent's answer to a `command.run`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResultRecord {
    /// The job.
    pub job_id: JobId,
    /// Whether the agent took it.
    pub accepted: bool,
    /// Why not (`busy`, `unknown_kind`, …).
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// When the answer arrived.
    pub received_at: DateTime<Utc>,
}

/// One snapshot in a host's repository.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// Full id.
    pub id: String,
    /// Short id.
    pub short_id: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// The host name restic recorded.
    pub hostname: String,
    /// Backed-up paths.
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Bytes, when known.
    pub size_bytes: Option<u64>,
    /// Files, when known.
    pub file_count: Option<u64>,
}

/// Repository statistics at one moment (one history row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepoStatsRecord {
    /// When they were taken.
    pub recorded_at: DateTime<Utc>,
    /// Restore size of all snapshots.
    pub total_size_bytes: Option<u64>,
    /// Bytes stored in the repository.
    pub raw_size_bytes: Option<u64>,
    /// Distinct files.
    pub unique_files: Option<u64>,
    /// Snapshot count.
    pub snapshot_count: Option<u64>,
    /// Last check time.
    pub last_check_at: Option<DateTime<Utc>>,
    /// Last check result.
    pub last_check_status: Option<String>,
    /// Whether a lock was present.
    pub lock_present: Option<bool>,
    /// Last prune time.
    pub last_prune_at: Option<DateTime<Utc>>,
    /// Bytes the last prune freed.
    pub last_prune_freed_bytes: Option<u64>,
}

/// Changes to a host's own settings (`PATCH /api/v1/hosts/{id}`); `None`
/// leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostPatch {
    /// New display name.
    pub name: Option<String>,
    /// New labels (replacing the old).
    pub labels: Option<Labels>,
    /// New own freshness (`Some(None)` clears it).
    pub freshness_seconds: Option<Option<u64>>,
    /// New own offline threshold (`Some(None)` clears it).
    pub offline_seconds: Option<Option<u64>>,
}

/// A fleet policy as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    /// Id.
    pub id: PolicyId,
    /// Unique name.
    pub name: String,
    /// The labels a host must all have.
    pub selector: Selector,
    /// Higher wins; ties go to the older policy.
    pub priority: i32,
    /// The repository template (URL, password or none, env), sealed: it
    /// may hold a password and backend keys. `None`: the policy gives no
    /// repository.
    pub repository: Option<SealedRepository>,
    /// The schedules it gives.
    pub schedules: Vec<PolicyScheduleRecord>,
    /// Freshness in seconds, if it sets one.
    pub freshness_seconds: Option<u64>,
    /// Offline threshold in seconds (`host_offline`), if it sets one.
    pub offline_seconds: Option<u64>,
    /// Creation time (the tie-breaker).
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One schedule of a policy; every host the policy applies to gets a
/// schedule row made from it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyScheduleRecord {
    /// Id, stable across edits of the policy.
    pub id: ScheduleId,
    /// Job kind.
    pub kind: String,
    /// Cron expression.
    pub cron: String,
    /// IANA zone, if set.
    pub timezone: Option<String>,
    /// Validated params.
    pub params: serde_json::Value,
    /// Whether it fires.
    pub enabled: bool,
    /// Jitter.
    pub jitter_seconds: u32,
}

/// What the policy reconciler needs to know about one host: its labels,
/// what it has of its own, and what policies gave it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyTarget {
    /// The host.
    pub host_id: HostId,
    /// Its name (for `{host}` in repository templates).
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// The policy applied to it so far.
    pub policy_id: Option<PolicyId>,
    /// Its repository settings and where they came from (`None` source:
    /// its own).
    pub repository: Option<(Option<PolicyId>, SealedRepository)>,
    /// The kinds of its own schedules (a policy's schedules of these kinds
    /// are not given to it: the host's own win).
    pub own_schedule_kinds: Vec<String>,
    /// The schedule rows policies gave it.
    pub policy_schedules: Vec<ScheduleRecord>,
}

/// What changes for one host when policies are applied; written together
/// with every other host's in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPolicyChange {
    /// The host.
    pub host_id: HostId,
    /// The policy that applies now.
    pub policy_id: Option<PolicyId>,
    /// Its repository settings from the policy.
    pub repository: RepositoryChange,
    /// Policy schedule rows to add or replace (by id).
    pub upsert_schedules: Vec<ScheduleRecord>,
    /// Policy schedule rows to remove.
    pub delete_schedules: Vec<ScheduleId>,
}

impl HostPolicyChange {
    /// Whether the host's schedule set changes (its version is bumped once).
    pub fn changes_schedules(&self) -> bool {
        !self.upsert_schedules.is_empty() || !self.delete_schedules.is_empty()
    }
}

/// A policy-given repository change.
#[derive(Debug, Clone, PartialEq)]
pub enum RepositoryChange {
    /// Leave the host's repository settings as they are.
    Keep,
    /// Store these settings (identity `key`) as given by the policy.
    Set {
        /// The sealed settings.
        sealed: SealedRepository,
        /// The repository's identity.
        key: String,
        /// The policy giving them.
        policy_id: PolicyId,
    },
    /// Remove the policy-given settings (nothing gives a repository now).
    Remove,
}

/// A policy write that goes with its hosts' changes.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyWrite {
    /// Add a policy ([`crate::StoreError::Conflict`] on a taken name).
    Create(PolicyRecord),
    /// Replace a policy's fields ([`crate::StoreError::NotFound`] when gone).
    Update(PolicyRecord),
    /// Remove a policy.
    Delete(PolicyId),
}

/// How many hosts a policy applies to, and how many of them run the wanted
/// schedule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCoverage {
    /// The policy.
    pub policy_id: PolicyId,
    /// Hosts it applies to.
    pub hosts: u64,
    /// Of those, in sync.
    pub in_sync: u64,
}

/// A job into a repository, as the dispatcher weighs it: jobs of every host
/// using the repository that are queued, dispatched or running.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryJob {
    /// The job.
    pub job_id: JobId,
    /// Its host.
    pub host_id: HostId,
    /// Whether that host's agent is connected.
    pub host_online: bool,
    /// Kind.
    pub kind: String,
    /// Params (to tell a `forget` with prune).
    pub params: serde_json::Value,
    /// Status.
    pub status: JobStatus,
    /// Creation time (queue order).
    pub created_at: DateTime<Utc>,
    /// The bulk batch it belongs to, with the batch's per-repository limit.
    pub batch: Option<(BatchId, u32)>,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Id.
    pub id: ScheduleId,
    /// The host it runs on.
    pub host_id: HostId,
    /// Job kind (`backup`, `forget`, `prune`, `check`).
    pub kind: String,
    /// Cron expression.
    pub cron: String,
    /// IANA time zone; `None` means the host's own.
    pub timezone: Option<String>,
    /// Validated job parameters.
    pub params: serde_json::Value,
    /// Disabled schedules are kept but never fire.
    pub enabled: bool,
    /// Random delay up to this many seconds added to each fire.
    pub jitter_seconds: u32,
    /// Creation time (schedules are listed in creation order).
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The policy and policy schedule it was made from; `None` for the
    /// host's own schedules.
    pub policy: Option<(PolicyId, ScheduleId)>,
}

/// What kind of credential an audited action was done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditActorKind {
    /// A logged-in operator (session).
    User,
    /// An operator's API token.
    ApiToken,
    /// An enrolment token (a host enrolling itself).
    EnrollmentToken,
    /// The offline `restic-manager admin` command on the server machine.
    Cli,
    /// Nobody known (a failed login).
    Anonymous,
    /// The server itself (an alert it fired or resolved).
    Server,
}

impl AuditActorKind {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditActorKind::User => "user",
            AuditActorKind::ApiToken => "api_token",
            AuditActorKind::EnrollmentToken => "enrollment_token",
            AuditActorKind::Cli => "cli",
            AuditActorKind::Anonymous => "anonymous",
            AuditActorKind::Server => "server",
        }
    }
}

impl std::fmt::Display for AuditActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuditActorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AuditActorKind::User,
            AuditActorKind::ApiToken,
            AuditActorKind::EnrollmentToken,
            AuditActorKind::Cli,
            AuditActorKind::Anonymous,
            AuditActorKind::Server,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown audit actor kind `{s}`"))
    }
}

/// Who did an audited action. Copied into the entry (not referenced), so
/// the entry still names them after the user or token is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditActor {
    /// How they authenticated.
    pub kind: AuditActorKind,
    /// The operator, for sessions and API tokens.
    pub user_id: Option<UserId>,
    /// The operator's name at the time.
    pub username: Option<String>,
    /// The API or enrolment token used (its public id, never the secret).
    pub token_id: Option<TokenId>,
    /// That token's name.
    pub token_name: Option<String>,
}

impl AuditActor {
    /// An actor with only a kind (`cli`, `anonymous`).
    pub fn of_kind(kind: AuditActorKind) -> AuditActor {
        AuditActor {
            kind,
            user_id: None,
            username: None,
            token_id: None,
            token_name: None,
        }
    }
}

/// An audit log entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: AuditActor,
    /// What, as `area.verb` (`host.delete`, `auth.login_failed`, …).
    pub action: String,
    /// The kind of thing acted on (`host`, `user`, …).
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// A small JSON object of facts; never a secret.
    pub details: serde_json::Value,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's User-Agent, truncated.
    pub user_agent: Option<String>,
}

/// A stored audit log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Grows with every entry written; the paging cursor.
    pub id: u64,
    /// Everything else, as written.
    pub entry: NewAuditEntry,
}

/// Which audit entries to list; newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Only actions starting with this (`host.` or `auth.login`).
    pub action_prefix: Option<String>,
    /// Only entries whose actor has this user id, user name or token id.
    pub actor: Option<String>,
    /// Only entries about this target id.
    pub target_id: Option<String>,
    /// Only entries older than the one with this id (paging).
    pub before: Option<u64>,
    /// At most this many (0: the implementation's default; capped at 500).
    pub limit: u32,
}

/// The moment and the default that decide whether a host is protected: a
/// backup that saved a snapshot (succeeded or partial) within its
/// effective freshness — its own, else its policy's, else
/// `default_freshness_seconds` — of `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectedAt {
    /// The moment.
    pub now: DateTime<Utc>,
    /// The freshness of a host for which neither it nor its policy sets one.
    pub default_freshness_seconds: u64,
}
