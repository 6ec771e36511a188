//! Rows of enrolment tokens and hosts.

use rm_core::JobStatus;
use rm_store::{
    AgentUpgradeRecord, EnrollmentToken, Host, HostBackupSummary, HostCounts, LastBackupRun,
    StoreError,
};

use crate::{decode, Flag};

/// Columns selected for an [`EnrollmentTokenRow`].
pub const ENROLLMENT_TOKEN_COLUMNS: &str =
    "id, name, token_hash, created_at, expires_at, used_at, host_id, labels";

/// An `enrollment_tokens` row.
#[derive(Debug, sqlx::FromRow)]
pub struct EnrollmentTokenRow {
    /// Column `id`.
    pub id: String,
    /// Column `name`.
    pub name: Option<String>,
    /// Column `token_hash`.
    pub token_hash: String,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `expires_at`.
    pub expires_at: i64,
    /// Column `used_at`.
    pub used_at: Option<i64>,
    /// Column `host_id`.
    pub host_id: Option<String>,
    /// Column `labels`.
    pub labels: String,
}

impl TryFrom<EnrollmentTokenRow> for EnrollmentToken {
    type Error = StoreError;

    fn try_from(r: EnrollmentTokenRow) -> Result<EnrollmentToken, StoreError> {
        Ok(EnrollmentToken {
            id: decode::id("id", r.id)?,
            name: r.name,
            token_hash: decode::hash("token_hash", r.token_hash)?,
            created_at: decode::time("created_at", r.created_at)?,
            expires_at: decode::time("expires_at", r.expires_at)?,
            used_at: decode::time_opt("used_at", r.used_at)?,
            host_id: decode::id_opt("host_id", r.host_id)?,
            labels: decode::labels("labels", &r.labels)?,
        })
    }
}

/// A `hosts` row with what each store's host column list derives beside it
/// (`has_repository`, `repository_refused`, `token_rotation_pending`,
/// `repository_policy_id`, `repository_key`, `has_schedules`: subqueries of
/// other tables). The column list itself stays with each store, since it
/// compares flags the way its dialect does. `repository_shared_with` is
/// not read: the store counts it per repository afterwards.
#[derive(Debug, sqlx::FromRow)]
pub struct HostRow {
    /// Column `id`.
    pub id: String,
    /// Column `name`.
    pub name: String,
    /// Column `hostname`.
    pub hostname: String,
    /// Column `enrolled_at`.
    pub enrolled_at: i64,
    /// Column `last_seen_at`.
    pub last_seen_at: Option<i64>,
    /// Column `online`.
    pub online: Flag,
    /// Column `agent_version`.
    pub agent_version: Option<String>,
    /// Column `restic_version`.
    pub restic_version: Option<String>,
    /// Column `restic_error`.
    pub restic_error: Option<String>,
    /// Column `protocol_version`.
    pub protocol_version: Option<i64>,
    /// Column `os`.
    pub os: Option<String>,
    /// Column `arch`.
    pub arch: Option<String>,
    /// Column `last_backup_at`.
    pub last_backup_at: Option<i64>,
    /// Column `last_backup_status`.
    pub last_backup_status: Option<String>,
    /// Column `last_backup_success_at`.
    pub last_backup_success_at: Option<i64>,
    /// Column `repo_size_bytes`.
    pub repo_size_bytes: Option<i64>,
    /// Column `snapshot_count`.
    pub snapshot_count: Option<i64>,
    /// Column `schedule_version`.
    pub schedule_version: i64,
    /// Column `schedule_applied_version`.
    pub schedule_applied_version: Option<i64>,
    /// Column `has_repository`.
    pub has_repository: Flag,
    /// Column `repository_refused`.
    pub repository_refused: Option<String>,
    /// Column `token_rotated_at`.
    pub token_rotated_at: Option<i64>,
    /// Column `agent_revoked_at`.
    pub agent_revoked_at: Option<i64>,
    /// Column `hooks`.
    pub hooks: Option<String>,
    /// Column `hooks_refused`.
    pub hooks_refused: Option<String>,
    /// Column `token_rotation_pending`.
    pub token_rotation_pending: Flag,
    /// Column `labels`.
    pub labels: String,
    /// Column `freshness_seconds`.
    pub freshness_seconds: Option<i64>,
    /// Column `offline_seconds`.
    pub offline_seconds: Option<i64>,
    /// Column `policy_id`.
    pub policy_id: Option<String>,
    /// Column `repository_policy_id`.
    pub repository_policy_id: Option<String>,
    /// Column `repository_key`.
    pub repository_key: Option<String>,
    /// Column `has_schedules`.
    pub has_schedules: Flag,
    /// Column `platform`.
    pub platform: Option<String>,
    /// Column `upgrade_requested_version`.
    pub upgrade_requested_version: Option<String>,
    /// Column `upgrade_requested_at`.
    pub upgrade_requested_at: Option<i64>,
    /// Column `upgrade_state`.
    pub upgrade_state: Option<String>,
    /// Column `upgrade_version`.
    pub upgrade_version: Option<String>,
    /// Column `upgrade_error`.
    pub upgrade_error: Option<String>,
    /// Column `upgrade_at`.
    pub upgrade_at: Option<i64>,
}

impl TryFrom<HostRow> for Host {
    type Error = StoreError;

    fn try_from(r: HostRow) -> Result<Host, StoreError> {
        Ok(Host {
            id: decode::id("id", r.id)?,
            name: r.name,
            hostname: r.hostname,
            enrolled_at: decode::time("enrolled_at", r.enrolled_at)?,
            last_seen_at: decode::time_opt("last_seen_at", r.last_seen_at)?,
            online: r.online.into(),
            agent_version: r.agent_version,
            restic_version: r.restic_version,
            restic_error: r.restic_error,
            protocol_version: decode::int_opt("protocol_version", r.protocol_version)?,
            os: r.os,
            arch: r.arch,
            last_backup_at: decode::time_opt("last_backup_at", r.last_backup_at)?,
            last_backup_status: decode::parsed_opt::<JobStatus>(
                "last_backup_status",
                r.last_backup_status,
            )?,
            last_backup_success_at: decode::time_opt(
                "last_backup_success_at",
                r.last_backup_success_at,
            )?,
            repo_size_bytes: decode::int_opt("repo_size_bytes", r.repo_size_bytes)?,
            snapshot_count: decode::int_opt("snapshot_count", r.snapshot_count)?,
            has_repository: r.has_repository.into(),
            repository_refused: r.repository_refused,
            schedule_version: decode::int("schedule_version", r.schedule_version)?,
            schedule_applied_version: decode::int_opt(
                "schedule_applied_version",
                r.schedule_applied_version,
            )?,
            token_rotated_at: decode::time_opt("token_rotated_at", r.token_rotated_at)?,
            token_rotation_pending: r.token_rotation_pending.into(),
            agent_revoked_at: decode::time_opt("agent_revoked_at", r.agent_revoked_at)?,
            hooks: decode::json_list_opt("hooks", r.hooks)?,
            hooks_refused: decode::json_list_opt("hooks_refused", r.hooks_refused)?,
            labels: decode::labels("labels", &r.labels)?,
            freshness_seconds: decode::int_opt("freshness_seconds", r.freshness_seconds)?,
            offline_seconds: decode::int_opt("offline_seconds", r.offline_seconds)?,
            policy_id: decode::id_opt("policy_id", r.policy_id)?,
            repository_policy_id: decode::id_opt("repository_policy_id", r.repository_policy_id)?,
            repository_key: r.repository_key,
            // Counted per repository afterwards, by the store.
            repository_shared_with: 0,
            has_schedules: r.has_schedules.into(),
            platform: r.platform,
            upgrade: AgentUpgradeRecord {
                requested_version: r.upgrade_requested_version,
                requested_at: decode::time_opt("upgrade_requested_at", r.upgrade_requested_at)?,
                state: r.upgrade_state,
                version: r.upgrade_version,
                error: r.upgrade_error,
                at: decode::time_opt("upgrade_at", r.upgrade_at)?,
            },
        })
    }
}

/// A row of the fleet count query (`HostStore::host_counts`): four counts.
#[derive(Debug, sqlx::FromRow)]
pub struct HostCountsRow {
    /// Column `total`.
    pub total: i64,
    /// Column `online`.
    pub online: i64,
    /// Column `not_backed_up`.
    pub not_backed_up: i64,
    /// Column `unconfigured`.
    pub unconfigured: i64,
}

impl TryFrom<HostCountsRow> for HostCounts {
    type Error = StoreError;

    fn try_from(r: HostCountsRow) -> Result<HostCounts, StoreError> {
        Ok(HostCounts {
            total: decode::int("total", r.total)?,
            online: decode::int("online", r.online)?,
            not_backed_up: decode::int("not_backed_up", r.not_backed_up)?,
            unconfigured: decode::int("unconfigured", r.unconfigured)?,
        })
    }
}

/// A row of `HostStore::host_backup_summaries`: a host and the job of its
/// last successful backup, if found. The byte counts are restic's report
/// (not the store's own data): the query gives NULL for any that is not a
/// whole non-negative number, and a negative one reads as unknown too.
#[derive(Debug, sqlx::FromRow)]
pub struct HostBackupSummaryRow {
    /// Column `id`.
    pub id: String,
    /// Column `name`.
    pub name: String,
    /// Column `online`.
    pub online: Flag,
    /// Column `policy_id`.
    pub policy_id: Option<String>,
    /// Column `freshness_seconds`.
    pub freshness_seconds: Option<i64>,
    /// Column `last_backup_success_at`.
    pub last_backup_success_at: Option<i64>,
    /// The job's `started_at`.
    pub job_started_at: Option<i64>,
    /// The job's `finished_at` (NULL when no job was found).
    pub job_finished_at: Option<i64>,
    /// `total_bytes_processed` of the job's stats.
    pub bytes_processed: Option<i64>,
    /// `data_added` of the job's stats.
    pub bytes_added: Option<i64>,
}

impl TryFrom<HostBackupSummaryRow> for HostBackupSummary {
    type Error = StoreError;

    fn try_from(r: HostBackupSummaryRow) -> Result<HostBackupSummary, StoreError> {
        let last_backup = match decode::time_opt("job_finished_at", r.job_finished_at)? {
            Some(finished_at) => Some(LastBackupRun {
                started_at: decode::time_opt("job_started_at", r.job_started_at)?,
                finished_at,
                bytes_processed: r.bytes_processed.and_then(|v| u64::try_from(v).ok()),
                bytes_added: r.bytes_added.and_then(|v| u64::try_from(v).ok()),
            }),
            None => None,
        };
        Ok(HostBackupSummary {
            id: decode::id("id", r.id)?,
            name: r.name,
            online: r.online.into(),
            policy_id: decode::id_opt("policy_id", r.policy_id)?,
            freshness_seconds: decode::int_opt("freshness_seconds", r.freshness_seconds)?,
            last_backup_success_at: decode::time_opt(
                "last_backup_success_at",
                r.last_backup_success_at,
            )?,
            last_backup,
        })
    }
}
