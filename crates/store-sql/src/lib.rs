//! The rows the SQL stores read, shared by every SQL backend.
//!
//! Each model has one row struct (`#[derive(sqlx::FromRow)]`, generic over
//! the database) whose fields SQLite and PostgreSQL decode alike — `String`
//! for ids, text and JSON stored as TEXT, `i64` for unix-millisecond
//! timestamps and integers (BIGINT on PostgreSQL), [`Flag`] for flags
//! (SQLite INTEGER 0/1, PostgreSQL BOOLEAN), `Vec<u8>` for blobs (BYTEA),
//! `Option<…>` when nullable — and one `TryFrom<XRow> for X` into the
//! domain type. A value that does not convert is [`StoreError::Corrupt`]
//! naming its column; a column the driver cannot decode at all is too, once
//! the store maps the driver's error with [`column_decode_error`].
//!
//! A store reads a model with
//! `sqlx::query_as::<_, JobRow>(…).fetch_all(…)` and converts each row with
//! `Job::try_from` (or [`convert_all`]). The column lists (`JOB_COLUMNS`…)
//! select exactly a row's fields, in SQL both backends accept.
//!
//! [`encode`] holds the other direction: how values are stored.

mod decode;
pub mod encode;
mod flag;

mod agent_tokens;
mod alerts;
mod audit;
mod cluster;
mod hosts;
mod jobs;
mod notifications;
mod policies;
mod repositories;
mod schedules;
mod sealing;
mod snapshots;
mod users;
mod verification;

pub use agent_tokens::{AgentTokenRow, AGENT_TOKEN_COLUMNS};
pub use alerts::{AlertRow, SilenceRow, ALERT_COLUMNS, SILENCE_COLUMNS};
pub use audit::{AuditRow, AUDIT_COLUMNS};
pub use cluster::{ServerRow, SERVER_COLUMNS};
pub use flag::Flag;
pub use hosts::{
    EnrollmentTokenRow, HostBackupSummaryRow, HostCountsRow, HostRow, ENROLLMENT_TOKEN_COLUMNS,
};
pub use jobs::{
    latest_jobs_per_host_sql, CommandResultRow, HostIdRow, JobRow, LogLineRow,
    COMMAND_RESULT_COLUMNS, JOB_COLUMNS, LOG_COLUMNS,
};
pub use notifications::{ChannelRow, OutboxEntryRow, CHANNEL_COLUMNS, OUTBOX_COLUMNS};
pub use policies::{PolicyCoverageRow, PolicyRow, PolicyTargetRow, POLICY_COLUMNS};
pub use repositories::{
    HostRepositoryRow, JoinedRepositoryRow, RepositoryJobRow, RepositoryRow, REPOSITORY_COLUMNS,
    REPOSITORY_COLUMNS_QUALIFIED,
};
pub use schedules::{HostVersionRow, ScheduleRow, SCHEDULE_COLUMNS, SCHEDULE_COLUMNS_QUALIFIED};
pub use sealing::SealingKeyRow;
pub use snapshots::{RepoStatsRow, SnapshotRow, REPO_STATS_COLUMNS, SNAPSHOT_COLUMNS};
pub use users::{
    ApiTokenRow, SessionRow, UserRow, API_TOKEN_COLUMNS, SESSION_COLUMNS, USER_COLUMNS,
};
pub use verification::{subsets_text, VerificationRow, VERIFICATION_COLUMNS};

use rm_store::StoreError;

/// The [`StoreError::Corrupt`] for a column the driver could not decode
/// (`sqlx::Error::ColumnDecode`), naming the column as the conversions
/// do; `None` for any other error, which the store maps its own way.
pub fn column_decode_error(e: &sqlx::Error) -> Option<StoreError> {
    match e {
        sqlx::Error::ColumnDecode { index, source } => {
            Some(decode::corrupt(index.trim_matches('"'), source))
        }
        _ => None,
    }
}

/// A single nullable timestamp a query computes (`MIN(next_attempt_at)`…),
/// read as a scalar rather than a row: [`StoreError::Corrupt`] naming `col`
/// when it is not a valid time.
pub fn time_opt(
    col: &str,
    v: Option<i64>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    decode::time_opt(col, v)
}

/// Converts every row into its model, failing on the first that does not.
pub fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
