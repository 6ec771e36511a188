//! Conversions between the store's domain types and SQLite column values, and
//! the mapping of sqlx errors onto [`StoreError`].
//!
//! Storage conventions: ids are ULID strings, timestamps are INTEGER unix
//! milliseconds (UTC), token hashes are lower-case hex, booleans are 0/1.
//! A value that cannot be read back becomes [`StoreError::Corrupt`] naming
//! the column.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_store::{AgentToken, ApiToken, EnrollmentToken, Host, Session, StoreError, User};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// Wraps a database failure.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
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

/// A count (`COUNT(*)` or similar) column.
pub(crate) fn count(row: &SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v = raw::<i64>(row, col)?;
    u64::try_from(v).map_err(|_| corrupt(col, format!("{v} is negative")))
}

// ── row decoders ───────────────────────────────────────────────────────

/// Columns selected for a [`User`].
pub(crate) const USER_COLUMNS: &str = "id, username, password_hash, created_at";

/// Decodes a `users` row.
pub(crate) fn user(row: &SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: id(row, "id")?,
        username: text(row, "username")?,
        password_hash: text(row, "password_hash")?,
        created_at: time(row, "created_at")?,
    })
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
    "id, user_id, name, token_hash, created_at, expires_at, revoked_at";

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
    })
}

/// Columns selected for an [`EnrollmentToken`].
pub(crate) const ENROLLMENT_TOKEN_COLUMNS: &str =
    "id, name, token_hash, created_at, expires_at, used_at, host_id";

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
    })
}

/// Columns selected for an [`AgentToken`] (qualified: used in a join).
pub(crate) const AGENT_TOKEN_COLUMNS: &str =
    "agent_tokens.id, agent_tokens.host_id, agent_tokens.token_hash, agent_tokens.created_at";

/// Decodes an `agent_tokens` row.
pub(crate) fn agent_token(row: &SqliteRow) -> Result<AgentToken, StoreError> {
    Ok(AgentToken {
        id: id(row, "id")?,
        host_id: id(row, "host_id")?,
        token_hash: hash(row, "token_hash")?,
        created_at: time(row, "created_at")?,
    })
}

/// Columns selected for a [`Host`].
pub(crate) const HOST_COLUMNS: &str = "id, name, hostname, enrolled_at, last_seen_at, online, \
     agent_version, restic_version, restic_error, protocol_version, os, arch";

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
    })
}
