//! What is SQLite's own in reading and writing: the mapping of sqlx errors
//! onto [`StoreError`] (storage faults told apart, a column that does not
//! decode as [`StoreError::Corrupt`] naming it), the host column list (its
//! subqueries compare flags as SQLite stores them), and checked readers of
//! single columns for the ad hoc rows that have no shared row type (counts,
//! ids, a few columns of a join).
//!
//! Models are read through the shared rows of `rm-store-sql` and stored
//! with its `encode` helpers: ids as ULID strings, timestamps as INTEGER
//! unix milliseconds, flags as 0/1, JSON as TEXT.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rm_store::{StorageFault, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// Wraps a database failure, telling a condition of the machine (full
/// disk, read-only file, I/O error, a lock held too long) from a fault of
/// the query, so callers can say what is wrong and that it will pass.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    if let Some(corrupt) = rm_store_sql::column_decode_error(&e) {
        return corrupt;
    }
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
    if fault != StorageFault::Io {
        return fault;
    }
    if cannot_write(file) {
        return StorageFault::ReadOnly;
    }
    let folder = file.parent().unwrap_or(Path::new("."));
    match nix::sys::statvfs::statvfs(folder) {
        Ok(stats) if stats.blocks_available() == 0 => StorageFault::DiskFull,
        _ => fault,
    }
}

/// Whether the database `file`, its WAL or its folder cannot be written
/// now: made immutable or read-only, or on a file system remounted
/// read-only.
pub(crate) fn cannot_write(file: &Path) -> bool {
    use nix::errno::Errno;
    use nix::unistd::{access, AccessFlags};
    let wal = {
        let mut name = file.as_os_str().to_owned();
        name.push("-wal");
        PathBuf::from(name)
    };
    let folder = file.parent().unwrap_or(Path::new("."));
    // Bound to a name so the array's borrow of `wal` ends before `wal` does.
    let refused = [file, wal.as_path(), folder].into_iter().any(|path| {
        matches!(
            access(path, AccessFlags::W_OK),
            Err(Errno::EROFS | Errno::EPERM | Errno::EACCES)
        )
    });
    refused
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

/// A NOT NULL 0/1 column.
pub(crate) fn flag(row: &SqliteRow, col: &str) -> Result<bool, StoreError> {
    match raw::<i64>(row, col)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(corrupt(col, format!("{v} is not 0 or 1"))),
    }
}

/// A NOT NULL u32 column.
pub(crate) fn u32_col(row: &SqliteRow, col: &str) -> Result<u32, StoreError> {
    let v = raw::<i64>(row, col)?;
    u32::try_from(v).map_err(|_| corrupt(col, format!("{v} is out of range")))
}

/// A NOT NULL u64 column (stored as i64; negative values are corrupt).
pub(crate) fn u64_col(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v = raw::<i64>(row, col)?;
    u64::try_from(v).map_err(|_| corrupt(col, format!("{v} is negative")))
}

/// A NOT NULL column parsed with [`FromStr`] (status and trigger names).
pub(crate) fn parsed<T: FromStr>(row: &SqliteRow, col: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s = text(row, col)?;
    s.parse().map_err(|e| corrupt(col, e))
}

/// A NOT NULL JSON text column holding any value.
pub(crate) fn json_value(row: &SqliteRow, col: &str) -> Result<serde_json::Value, StoreError> {
    let s = text(row, col)?;
    serde_json::from_str(&s).map_err(|e| corrupt(col, format!("invalid JSON: {e}")))
}

/// A count (`COUNT(*)` or similar) column.
pub(crate) fn count(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v = raw::<i64>(row, col)?;
    u64::try_from(v).map_err(|_| corrupt(col, format!("{v} is negative")))
}

// ── row decoders ───────────────────────────────────────────────────────

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
