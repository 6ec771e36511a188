//! Conversions between the store's domain types and SQLite column values, and
//! the mapping of sqlx errors onto [`StoreError`].
//!
//! Storage conventions: ids are ULID strings, timestamps are INTEGER unix
//! milliseconds (UTC), token hashes are lower-case hex, booleans are 0/1,
//! JSON values are TEXT (a `Null` job `stats` is SQL NULL) and u64 values are
//! INTEGER: writing one above `i64::MAX` is refused with
//! [`StoreError::Conflict`] instead of wrapping, and reading a negative one
//! back is [`StoreError::Corrupt`]. A value that cannot be read back becomes [`StoreError::Corrupt`] naming
//! the column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{JobStatus, Labels, Selector};
use rm_store::{
    AgentToken, ApiToken, AuditActor, AuditEntry, CommandResultRecord, EnrollmentToken, Host,
    HostBackupSummary, HostCounts, Job, LastBackupRun, LogLineRecord, NewAuditEntry, PolicyRecord,
    PolicyScheduleRecord, RepoStatsRecord, ScheduleRecord, SealFormat, SealedRepository,
    SealingKeyRecord, Session, SnapshotRecord, StorageFault, StoreError, User,
};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// Wraps a database failure, telling a condition of the machine (full
/// disk, read-only file, I/O error, a lock held too long) from a fault of
/// the query, so callers can say what is wrong and that it will pass.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    match storage_fault(&e) {
        Some(fault) => StoreError::Unavailable {
            fault,
            source: Box::new(e),
        },
        None => StoreError::Backend(Box::new(e)),
    }
}

/// A closer look at what SQLite calls an I/O error on `file`: a database
/// file made read-only (immutable) or a file system the kernel remounted
/// read-only after errors, and a full disk on some file systems, all reach
/// SQLite as failed writes. The file's own state tells them apart.
pub(crate) fn closer_look(fault: StorageFault, file: &Path) -> StorageFault {
    use nix::errno::Errno;
    use nix::unistd::{access, AccessFlags};
    if fault != StorageFault::Io {
        return fault;
    }
    let wal = {
        let mut name = file.as_os_str().to_owned();
        name.push("-wal");
        PathBuf::from(name)
    };
    let folder = file.parent().unwrap_or(Path::new("."));
    for path in [file, wal.as_path(), folder] {
        if let Err(Errno::EROFS | Errno::EPERM | Errno::EACCES) = access(path, AccessFlags::W_OK) {
            return StorageFault::ReadOnly;
        }
    }
    match nix::sys::statvfs::statvfs(folder) {
        Ok(stats) if stats.blocks_available() == 0 => StorageFault::DiskFull,
        _ => fault,
    }
}

/// The storage fault behind `e`, if any, from SQLite's primary result code
/// (the low byte of the extended code sqlx reports).
fn storage_fault(e: &sqlx::Error) -> Option<StorageFault> {
    match e {
        sqlx::Error::Database(db) => {
            let code: i32 = db.code()?.parse().ok()?;
            match code & 0xff {
                // SQLITE_FULL
                13 => Some(StorageFault::DiskFull),
                // SQLITE_READONLY, SQLITE_CANTOPEN (a folder made read-only)
                8 | 14 => Some(StorageFault::ReadOnly),
                // SQLITE_IOERR; its extended codes (…_WRITE, …_FSYNC) too
                10 => Some(StorageFault::Io),
                // SQLITE_BUSY, SQLITE_LOCKED
                5 | 6 => Some(StorageFault::Busy),
                _ => None,
            }
        }
        sqlx::Error::Io(_) => Some(StorageFault::Io),
        sqlx::Error::PoolTimedOut => Some(StorageFault::Busy),
        _ => None,
    }
}

/// True when `e` is a UNIQUE / PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// True when `e` is a FOREIGN KEY violation.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

/// The message of a database error, or empty.
pub(crate) fn db_message(e: &sqlx::Error) -> String {
    e.as_database_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

/// A timestamp as stored: unix milliseconds.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// An optional timestamp as stored.
pub(crate) fn ms_opt(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn corrupt(col: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column `{col}`: {what}"))
}

fn raw<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get::<T, _>(col).map_err(|e| corrupt(col, e))
}

fn millis_to_time(col: &str, v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| corrupt(col, format!("{v} is not a valid timestamp")))
}

/// A NOT NULL text column.
pub(crate) fn text(row: &SqliteRow, col: &str) -> Result<String, StoreError> {
    raw::<String>(row, col)
}

/// A nullable text column.
pub(crate) fn text_opt(row: &SqliteRow, col: &str) -> Result<Option<String>, StoreError> {
    raw::<Option<String>>(row, col)
}

/// A NOT NULL timestamp column.
pub(crate) fn time(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>, StoreError> {
    millis_to_time(col, raw::<i64>(row, col)?)
}

/// A nullable timestamp column.
pub(crate) fn time_opt(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    raw::<Option<i64>>(row, col)?
        .map(|v| millis_to_time(col, v))
        .transpose()
}

/// A NOT NULL id column (ULID string) of any typed id.
pub(crate) fn id<T: FromStr>(row: &SqliteRow, col: &str) -> Result<T, StoreError> {
    let s = text(row, col)?;
    s.parse()
        .map_err(|_| corrupt(col, format!("`{s}` is not a ULID")))
}

/// A nullable id column.
pub(crate) fn id_opt<T: FromStr>(row: &SqliteRow, col: &str) -> Result<Option<T>, StoreError> {
    text_opt(row, col)?
        .map(|s| {
            s.parse()
                .map_err(|_| corrupt(col, format!("`{s}` is not a ULID")))
        })
        .transpose()
}

/// A NOT NULL token hash column (hex).
pub(crate) fn hash(row: &SqliteRow, col: &str) -> Result<TokenHash, StoreError> {
    let s = text(row, col)?;
    TokenHash::from_hex(&s).ok_or_else(|| corrupt(col, "not a 64-digit hex SHA-256"))
}

/// A NOT NULL 0/1 column.
pub(crate) fn flag(row: &SqliteRow, col: &str) -> Result<bool, StoreError> {
    match raw::<i64>(row, col)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(corrupt(col, format!("{v} is not 0 or 1"))),
    }
}

/// A nullable u32 column.
pub(crate) fn u32_opt(row: &SqliteRow, col: &str) -> Result<Option<u32>, StoreError> {
    raw::<Option<i64>>(row, col)?
        .map(|v| u32::try_from(v).map_err(|_| corrupt(col, format!("{v} is out of range"))))
        .transpose()
}

/// A NOT NULL u32 column.
pub(crate) fn u32_col(row: &SqliteRow, col: &str) -> Result<u32, StoreError> {
    let v = raw::<i64>(row, col)?;
    u32::try_from(v).map_err(|_| corrupt(col, format!("{v} is out of range")))
}

/// A nullable u64 column (stored as i64; negative values are corrupt).
pub(crate) fn u64_opt(row: &SqliteRow, col: &str) -> Result<Option<u64>, StoreError> {
    raw::<Option<i64>>(row, col)?
        .map(|v| u64::try_from(v).map_err(|_| corrupt(col, format!("{v} is negative"))))
        .transpose()
}

/// A NOT NULL u64 column (stored as i64; negative values are corrupt).
pub(crate) fn u64_col(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v = raw::<i64>(row, col)?;
    u64::try_from(v).map_err(|_| corrupt(col, format!("{v} is negative")))
}

/// A nullable i32 column.
pub(crate) fn i32_opt(row: &SqliteRow, col: &str) -> Result<Option<i32>, StoreError> {
    raw::<Option<i64>>(row, col)?
        .map(|v| i32::try_from(v).map_err(|_| corrupt(col, format!("{v} is out of range"))))
        .transpose()
}

/// A nullable 0/1 column.
pub(crate) fn flag_opt(row: &SqliteRow, col: &str) -> Result<Option<bool>, StoreError> {
    match raw::<Option<i64>>(row, col)? {
        None => Ok(None),
        Some(0) => Ok(Some(false)),
        Some(1) => Ok(Some(true)),
        Some(v) => Err(corrupt(col, format!("{v} is not 0 or 1"))),
    }
}

/// A NOT NULL BLOB column.
pub(crate) fn blob(row: &SqliteRow, col: &str) -> Result<Vec<u8>, StoreError> {
    raw::<Vec<u8>>(row, col)
}

/// A NOT NULL column parsed with [`FromStr`] (status and trigger names).
pub(crate) fn parsed<T: FromStr>(row: &SqliteRow, col: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s = text(row, col)?;
    s.parse().map_err(|e| corrupt(col, e))
}

/// A nullable column parsed with [`FromStr`].
pub(crate) fn parsed_opt<T: FromStr>(row: &SqliteRow, col: &str) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    text_opt(row, col)?
        .map(|s| s.parse().map_err(|e| corrupt(col, e)))
        .transpose()
}

/// A NOT NULL JSON text column holding any value.
pub(crate) fn json_value(row: &SqliteRow, col: &str) -> Result<serde_json::Value, StoreError> {
    let s = text(row, col)?;
    serde_json::from_str(&s).map_err(|e| corrupt(col, format!("invalid JSON: {e}")))
}

/// A NOT NULL JSON text column holding an array of strings.
pub(crate) fn json_string_list(row: &SqliteRow, col: &str) -> Result<Vec<String>, StoreError> {
    let s = text(row, col)?;
    serde_json::from_str(&s).map_err(|e| corrupt(col, format!("not a JSON array of strings: {e}")))
}

/// The nullable `hooks` column (a JSON array of names); NULL reads as none.
pub(crate) fn hook_names(row: &SqliteRow, col: &str) -> Result<Vec<String>, StoreError> {
    match raw::<Option<String>>(row, col)? {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s)
            .map_err(|e| corrupt(col, format!("not a JSON array of strings: {e}"))),
    }
}

/// The nullable `hooks_refused` column; NULL reads as none.
pub(crate) fn refused_hooks(
    row: &SqliteRow,
    col: &str,
) -> Result<Vec<rm_store::RefusedHookRecord>, StoreError> {
    match raw::<Option<String>>(row, col)? {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s)
            .map_err(|e| corrupt(col, format!("not a JSON array of refused hooks: {e}"))),
    }
}

/// A nullable JSON text column; NULL reads as [`serde_json::Value::Null`].
pub(crate) fn json_value_opt(row: &SqliteRow, col: &str) -> Result<serde_json::Value, StoreError> {
    text_opt(row, col)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(col, format!("invalid JSON: {e}"))))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A JSON value as stored in a nullable column: `Null` becomes SQL NULL.
pub(crate) fn json_value_to_opt(v: &serde_json::Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

/// A list of strings as stored: a JSON array.
pub(crate) fn json_strings(v: &[String]) -> String {
    // Serialising a slice of strings cannot fail; fall back to `[]` anyway
    // rather than panic.
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// A u64 as stored (SQLite INTEGER is i64). Values above `i64::MAX` cannot
/// be stored and are refused with [`StoreError::Conflict`] naming `what`,
/// rather than wrapped to negative numbers.
pub(crate) fn u64_to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Conflict(format!(
            "{what} {v} is too large to store (max {})",
            i64::MAX
        ))
    })
}

/// An optional u64 as stored; see [`u64_to_i64`].
pub(crate) fn u64_opt_to_i64(v: Option<u64>, what: &str) -> Result<Option<i64>, StoreError> {
    v.map(|v| u64_to_i64(v, what)).transpose()
}

/// A count (`COUNT(*)` or similar) column.
pub(crate) fn count(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v = raw::<i64>(row, col)?;
    u64::try_from(v).map_err(|_| corrupt(col, format!("{v} is negative")))
}

// ── row decoders ───────────────────────────────────────────────────────

/// Columns selected for a [`User`].
pub(crate) const USER_COLUMNS: &str = "id, username, password_hash, created_at, role, scope";

/// Decodes a `users` row.
pub(crate) fn user(row: &SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: id(row, "id")?,
        username: text(row, "username")?,
        password_hash: text(row, "password_hash")?,
        created_at: time(row, "created_at")?,
        role: role(row, "role")?,
        scope: text_opt(row, "scope")?
            .map(|raw| {
                serde_json::from_str::<BTreeMap<String, String>>(&raw)
                    .map(|map| Selector(Labels::from_stored(map)))
                    .map_err(|e| corrupt("scope", e))
            })
            .transpose()?,
    })
}

/// Decodes a role column.
fn role(row: &SqliteRow, col: &str) -> Result<rm_core::Role, StoreError> {
    text(row, col)?.parse().map_err(|e| corrupt(col, e))
}

/// A user's scope as stored (JSON object), or NULL.
pub(crate) fn scope_json(scope: Option<&Selector>) -> Option<String> {
    scope.map(|s| labels_json(&s.0))
}

/// Columns selected for a [`Session`].
pub(crate) const SESSION_COLUMNS: &str = "id, user_id, token_hash, created_at, expires_at";

/// Decodes a `sessions` row.
pub(crate) fn session(row: &SqliteRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: id(row, "id")?,
        user_id: id(row, "user_id")?,
        token_hash: hash(row, "token_hash")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
    })
}

/// Columns selected for an [`ApiToken`].
pub(crate) const API_TOKEN_COLUMNS: &str =
    "id, user_id, name, token_hash, created_at, expires_at, revoked_at, role";

/// Decodes an `api_tokens` row.
pub(crate) fn api_token(row: &SqliteRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: id(row, "id")?,
        user_id: id(row, "user_id")?,
        name: text(row, "name")?,
        token_hash: hash(row, "token_hash")?,
        created_at: time(row, "created_at")?,
        expires_at: time_opt(row, "expires_at")?,
        revoked_at: time_opt(row, "revoked_at")?,
        role: text_opt(row, "role")?
            .map(|raw| raw.parse().map_err(|e| corrupt("role", e)))
            .transpose()?,
    })
}

/// Columns selected for an [`EnrollmentToken`].
pub(crate) const ENROLLMENT_TOKEN_COLUMNS: &str =
    "id, name, token_hash, created_at, expires_at, used_at, host_id, labels";

/// Decodes an `enrollment_tokens` row.
pub(crate) fn enrollment_token(row: &SqliteRow) -> Result<EnrollmentToken, StoreError> {
    Ok(EnrollmentToken {
        id: id(row, "id")?,
        name: text_opt(row, "name")?,
        token_hash: hash(row, "token_hash")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
        used_at: time_opt(row, "used_at")?,
        host_id: id_opt(row, "host_id")?,
        labels: labels(row, "labels")?,
    })
}

/// Columns selected for an [`AgentToken`] (qualified: used in a join).
pub(crate) const AGENT_TOKEN_COLUMNS: &str = "agent_tokens.id, agent_tokens.host_id, \
     agent_tokens.token_hash, agent_tokens.created_at, agent_tokens.pending";

/// Decodes an `agent_tokens` row.
pub(crate) fn agent_token(row: &SqliteRow) -> Result<AgentToken, StoreError> {
    Ok(AgentToken {
        id: id(row, "id")?,
        host_id: id(row, "host_id")?,
        token_hash: hash(row, "token_hash")?,
        created_at: time(row, "created_at")?,
        pending: flag(row, "pending")?,
    })
}

/// Columns selected for a [`Host`] (from `hosts`, unaliased: the
/// `has_repository` subquery refers to `hosts.id`). Not
/// `repository_shared_with`: rows read with these go through
/// [`crate::shared::fill_shared`], which counts once per repository.
pub(crate) const HOST_COLUMNS: &str = "id, name, hostname, enrolled_at, last_seen_at, online, \
     agent_version, restic_version, restic_error, protocol_version, os, arch, \
     last_backup_at, last_backup_status, last_backup_success_at, repo_size_bytes, snapshot_count, \
     schedule_version, schedule_applied_version, \
     EXISTS (SELECT 1 FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS has_repository, \
     (SELECT refused FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS repository_refused, \
     token_rotated_at, agent_revoked_at, hooks, hooks_refused, \
     EXISTS (SELECT 1 FROM agent_tokens WHERE agent_tokens.host_id = hosts.id \
     AND agent_tokens.pending = 1 AND agent_tokens.revoked_at IS NULL) AS token_rotation_pending, \
     labels, freshness_seconds, offline_seconds, policy_id, \
     (SELECT policy_id FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS repository_policy_id, \
     (SELECT repository_key FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS repository_key, \
     EXISTS (SELECT 1 FROM schedules WHERE schedules.host_id = hosts.id) AS has_schedules, \
     platform, upgrade_requested_version, upgrade_requested_at, upgrade_state, upgrade_version, \
     upgrade_error, upgrade_at";

/// Decodes a row of [`rm_store::Store::host_backup_summaries`]. Byte
/// counts that are not whole non-negative numbers (a stats object from an
/// older agent, or none) read as unknown rather than corrupt: they are
/// restic's report, not the store's own data.
pub(crate) fn host_backup_summary(row: &SqliteRow) -> Result<HostBackupSummary, StoreError> {
    let bytes = |col: &str| {
        raw::<Option<i64>>(row, col)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
    };
    let last_backup = match time_opt(row, "job_finished_at")? {
        Some(finished_at) => Some(LastBackupRun {
            started_at: time_opt(row, "job_started_at")?,
            finished_at,
            bytes_processed: bytes("bytes_processed"),
            bytes_added: bytes("bytes_added"),
        }),
        None => None,
    };
    Ok(HostBackupSummary {
        id: id(row, "id")?,
        name: text(row, "name")?,
        online: flag(row, "online")?,
        policy_id: id_opt(row, "policy_id")?,
        freshness_seconds: u64_opt(row, "freshness_seconds")?,
        last_backup_success_at: time_opt(row, "last_backup_success_at")?,
        last_backup,
    })
}

/// Decodes a `hosts` row.
pub(crate) fn host(row: &SqliteRow) -> Result<Host, StoreError> {
    Ok(Host {
        id: id(row, "id")?,
        name: text(row, "name")?,
        hostname: text(row, "hostname")?,
        enrolled_at: time(row, "enrolled_at")?,
        last_seen_at: time_opt(row, "last_seen_at")?,
        online: flag(row, "online")?,
        agent_version: text_opt(row, "agent_version")?,
        restic_version: text_opt(row, "restic_version")?,
        restic_error: text_opt(row, "restic_error")?,
        protocol_version: u32_opt(row, "protocol_version")?,
        os: text_opt(row, "os")?,
        arch: text_opt(row, "arch")?,
        last_backup_at: time_opt(row, "last_backup_at")?,
        last_backup_status: parsed_opt::<JobStatus>(row, "last_backup_status")?,
        last_backup_success_at: time_opt(row, "last_backup_success_at")?,
        repo_size_bytes: u64_opt(row, "repo_size_bytes")?,
        snapshot_count: u64_opt(row, "snapshot_count")?,
        has_repository: flag(row, "has_repository")?,
        repository_refused: text_opt(row, "repository_refused")?,
        schedule_version: u64_col(row, "schedule_version")?,
        schedule_applied_version: u64_opt(row, "schedule_applied_version")?,
        token_rotated_at: time_opt(row, "token_rotated_at")?,
        token_rotation_pending: flag(row, "token_rotation_pending")?,
        agent_revoked_at: time_opt(row, "agent_revoked_at")?,
        hooks: hook_names(row, "hooks")?,
        hooks_refused: refused_hooks(row, "hooks_refused")?,
        labels: labels(row, "labels")?,
        freshness_seconds: u64_opt(row, "freshness_seconds")?,
        offline_seconds: u64_opt(row, "offline_seconds")?,
        policy_id: id_opt(row, "policy_id")?,
        repository_policy_id: id_opt(row, "repository_policy_id")?,
        repository_key: text_opt(row, "repository_key")?,
        // Counted per repository afterwards (`shared::fill_shared`).
        repository_shared_with: 0,
        has_schedules: flag(row, "has_schedules")?,
        platform: text_opt(row, "platform")?,
        upgrade: rm_store::AgentUpgradeRecord {
            requested_version: text_opt(row, "upgrade_requested_version")?,
            requested_at: time_opt(row, "upgrade_requested_at")?,
            state: text_opt(row, "upgrade_state")?,
            version: text_opt(row, "upgrade_version")?,
            error: text_opt(row, "upgrade_error")?,
            at: time_opt(row, "upgrade_at")?,
        },
    })
}

/// Decodes the `total`, `online` and `not_backed_up` columns of the fleet
/// count query.
pub(crate) fn host_counts(row: &SqliteRow) -> Result<HostCounts, StoreError> {
    Ok(HostCounts {
        total: count(row, "total")?,
        online: count(row, "online")?,
        not_backed_up: count(row, "not_backed_up")?,
        unconfigured: count(row, "unconfigured")?,
    })
}

/// Columns selected for a [`SealedRepository`].
pub(crate) const REPOSITORY_COLUMNS: &str = "nonce, ciphertext, seal_format, updated_at";

/// [`REPOSITORY_COLUMNS`] qualified by their table (for joins).
pub(crate) const REPOSITORY_COLUMNS_QUALIFIED: &str = "host_repositories.nonce AS nonce, \
     host_repositories.ciphertext AS ciphertext, host_repositories.seal_format AS seal_format, \
     host_repositories.updated_at AS updated_at";

/// [`SCHEDULE_COLUMNS`] qualified by their table (for joins).
pub(crate) const SCHEDULE_COLUMNS_QUALIFIED: &str = "schedules.id AS id, \
     schedules.host_id AS host_id, schedules.kind AS kind, schedules.cron AS cron, \
     schedules.timezone AS timezone, schedules.params AS params, schedules.enabled AS enabled, \
     schedules.jitter_seconds AS jitter_seconds, schedules.created_at AS created_at, \
     schedules.updated_at AS updated_at, schedules.policy_id AS policy_id, \
     schedules.policy_schedule_id AS policy_schedule_id";

/// Decodes the repository columns of a `LEFT JOIN`: `None` when the host
/// has no settings.
pub(crate) fn repository_opt(row: &SqliteRow) -> Result<Option<SealedRepository>, StoreError> {
    let nonce: Option<Vec<u8>> = raw(row, "nonce")?;
    if nonce.is_none() {
        return Ok(None);
    }
    repository(row).map(Some)
}

/// Decodes a `host_repositories` row.
pub(crate) fn repository(row: &SqliteRow) -> Result<SealedRepository, StoreError> {
    let format = raw::<i64>(row, "seal_format")?;
    Ok(SealedRepository {
        nonce: blob(row, "nonce")?,
        ciphertext: blob(row, "ciphertext")?,
        format: SealFormat::from_i64(format)
            .ok_or_else(|| corrupt("seal_format", format!("unknown format {format}")))?,
        updated_at: time(row, "updated_at")?,
    })
}

/// Decodes the `sealing_key` row.
pub(crate) fn sealing_key(row: &SqliteRow) -> Result<SealingKeyRecord, StoreError> {
    Ok(SealingKeyRecord {
        fingerprint: text(row, "fingerprint")?,
        recorded_at: time(row, "recorded_at")?,
    })
}

/// Columns selected for a [`Job`] (`trigger` is quoted: it is an SQL
/// keyword).
pub(crate) const JOB_COLUMNS: &str = "id, host_id, kind, params, status, \"trigger\", exit_code, \
     schedule_id, stats, error, created_at, dispatched_at, started_at, finished_at";

/// Decodes a `jobs` row.
pub(crate) fn job(row: &SqliteRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: id(row, "id")?,
        host_id: id(row, "host_id")?,
        kind: text(row, "kind")?,
        params: json_value(row, "params")?,
        status: parsed(row, "status")?,
        trigger: parsed(row, "trigger")?,
        schedule_id: id_opt(row, "schedule_id")?,
        exit_code: i32_opt(row, "exit_code")?,
        stats: json_value_opt(row, "stats")?,
        error: text_opt(row, "error")?,
        created_at: time(row, "created_at")?,
        dispatched_at: time_opt(row, "dispatched_at")?,
        started_at: time_opt(row, "started_at")?,
        finished_at: time_opt(row, "finished_at")?,
    })
}

/// Columns selected for a [`LogLineRecord`].
pub(crate) const LOG_COLUMNS: &str = "job_id, seq, ts, stream, text";

/// Decodes a `job_logs` row.
pub(crate) fn log_line(row: &SqliteRow) -> Result<LogLineRecord, StoreError> {
    Ok(LogLineRecord {
        job_id: id(row, "job_id")?,
        seq: u64_col(row, "seq")?,
        ts: time(row, "ts")?,
        stream: text(row, "stream")?,
        text: text(row, "text")?,
    })
}

/// Columns selected for a [`CommandResultRecord`].
pub(crate) const COMMAND_RESULT_COLUMNS: &str = "job_id, accepted, reason, message, received_at";

/// Decodes a `command_results` row.
pub(crate) fn command_result(row: &SqliteRow) -> Result<CommandResultRecord, StoreError> {
    Ok(CommandResultRecord {
        job_id: id(row, "job_id")?,
        accepted: flag(row, "accepted")?,
        reason: text_opt(row, "reason")?,
        message: text_opt(row, "message")?,
        received_at: time(row, "received_at")?,
    })
}

/// Columns selected for a [`SnapshotRecord`].
pub(crate) const SNAPSHOT_COLUMNS: &str =
    "id, short_id, time, hostname, paths, tags, size_bytes, file_count";

/// Decodes a `snapshots` row.
pub(crate) fn snapshot(row: &SqliteRow) -> Result<SnapshotRecord, StoreError> {
    Ok(SnapshotRecord {
        id: text(row, "id")?,
        short_id: text(row, "short_id")?,
        time: time(row, "time")?,
        hostname: text(row, "hostname")?,
        paths: json_string_list(row, "paths")?,
        tags: json_string_list(row, "tags")?,
        size_bytes: u64_opt(row, "size_bytes")?,
        file_count: u64_opt(row, "file_count")?,
    })
}

/// Columns selected for a [`RepoStatsRecord`].
pub(crate) const REPO_STATS_COLUMNS: &str = "recorded_at, total_size_bytes, raw_size_bytes, \
     unique_files, snapshot_count, last_check_at, last_check_status, lock_present, \
     last_prune_at, last_prune_freed_bytes";

/// Decodes a `repo_stats` row.
pub(crate) fn repo_stats(row: &SqliteRow) -> Result<RepoStatsRecord, StoreError> {
    Ok(RepoStatsRecord {
        recorded_at: time(row, "recorded_at")?,
        total_size_bytes: u64_opt(row, "total_size_bytes")?,
        raw_size_bytes: u64_opt(row, "raw_size_bytes")?,
        unique_files: u64_opt(row, "unique_files")?,
        snapshot_count: u64_opt(row, "snapshot_count")?,
        last_check_at: time_opt(row, "last_check_at")?,
        last_check_status: text_opt(row, "last_check_status")?,
        lock_present: flag_opt(row, "lock_present")?,
        last_prune_at: time_opt(row, "last_prune_at")?,
        last_prune_freed_bytes: u64_opt(row, "last_prune_freed_bytes")?,
    })
}

/// Columns selected for a [`ScheduleRecord`].
pub(crate) const SCHEDULE_COLUMNS: &str = "id, host_id, kind, cron, timezone, params, enabled, \
     jitter_seconds, created_at, updated_at, policy_id, policy_schedule_id";

/// Decodes a `schedules` row.
pub(crate) fn schedule(row: &SqliteRow) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        id: id(row, "id")?,
        host_id: id(row, "host_id")?,
        kind: text(row, "kind")?,
        cron: text(row, "cron")?,
        timezone: text_opt(row, "timezone")?,
        params: json_value(row, "params")?,
        enabled: flag(row, "enabled")?,
        jitter_seconds: u32_col(row, "jitter_seconds")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        policy: match (
            id_opt(row, "policy_id")?,
            id_opt(row, "policy_schedule_id")?,
        ) {
            (Some(policy), Some(schedule)) => Some((policy, schedule)),
            _ => None,
        },
    })
}

/// A JSON object of strings stored by this crate (labels, selectors).
pub(crate) fn labels(row: &SqliteRow, col: &str) -> Result<Labels, StoreError> {
    let raw = text(row, col)?;
    serde_json::from_str::<BTreeMap<String, String>>(&raw)
        .map(Labels::from_stored)
        .map_err(|e| corrupt(col, e))
}

/// Labels as stored.
pub(crate) fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels.as_map()).unwrap_or_else(|_| String::from("{}"))
}

/// Columns selected for a [`PolicyRecord`].
pub(crate) const POLICY_COLUMNS: &str = "id, name, selector, priority, repository_nonce, \
     repository_ciphertext, schedules, freshness_seconds, offline_seconds, created_at, updated_at";

/// Decodes a `policies` row.
pub(crate) fn policy(row: &SqliteRow) -> Result<PolicyRecord, StoreError> {
    let updated_at = time(row, "updated_at")?;
    let nonce: Option<Vec<u8>> = raw(row, "repository_nonce")?;
    let ciphertext: Option<Vec<u8>> = raw(row, "repository_ciphertext")?;
    let schedules: Vec<PolicyScheduleRecord> =
        serde_json::from_str(&text(row, "schedules")?).map_err(|e| corrupt("schedules", e))?;
    Ok(PolicyRecord {
        id: id(row, "id")?,
        name: text(row, "name")?,
        selector: Selector(labels(row, "selector")?),
        priority: raw::<i32>(row, "priority")?,
        repository: match (nonce, ciphertext) {
            (Some(nonce), Some(ciphertext)) => Some(SealedRepository {
                nonce,
                ciphertext,
                format: SealFormat::OwnerBound,
                updated_at,
            }),
            _ => None,
        },
        schedules,
        freshness_seconds: u64_opt(row, "freshness_seconds")?,
        offline_seconds: u64_opt(row, "offline_seconds")?,
        created_at: time(row, "created_at")?,
        updated_at,
    })
}

/// Columns selected for an [`AuditEntry`].
pub(crate) const AUDIT_COLUMNS: &str = "id, at, actor_kind, actor_user_id, actor_username, \
     actor_token_id, actor_token_name, action, target_type, target_id, details, ip, user_agent";

/// Decodes an `audit_log` row.
pub(crate) fn audit_entry(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: u64_col(row, "id")?,
        entry: NewAuditEntry {
            at: time(row, "at")?,
            actor: AuditActor {
                kind: parsed(row, "actor_kind")?,
                user_id: id_opt(row, "actor_user_id")?,
                username: text_opt(row, "actor_username")?,
                token_id: id_opt(row, "actor_token_id")?,
                token_name: text_opt(row, "actor_token_name")?,
            },
            action: text(row, "action")?,
            target_type: text_opt(row, "target_type")?,
            target_id: text_opt(row, "target_id")?,
            details: json_value(row, "details")?,
            ip: text_opt(row, "ip")?,
            user_agent: text_opt(row, "user_agent")?,
        },
    })
}
