//! Rows of jobs, their log lines and command results.

use rm_store::{CommandResultRecord, Job, LogLineRecord, StoreError};

use crate::{decode, Flag};

/// Columns selected for a [`JobRow`] (`trigger` is quoted: it is an SQL
/// keyword in both dialects).
pub const JOB_COLUMNS: &str = "id, host_id, kind, params, status, \"trigger\", exit_code, \
     schedule_id, stats, error, created_at, dispatched_at, started_at, finished_at";

/// The newest job of one kind in one status per host (newest by
/// `finished_at`, then id), by host id. `kind` and `status` are the two
/// engines' placeholders, each used twice (`?` bound twice over on SQLite,
/// `$1` and `$2` on PostgreSQL). With `jobs_kind_status_host` it is one
/// short index descent per host, not a scan of each host's jobs.
pub fn latest_jobs_per_host_sql(kind: &str, status: &str) -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN \
         (SELECT (SELECT k.id FROM jobs k WHERE k.kind = {kind} AND k.status = {status} \
         AND k.host_id = h.host_id ORDER BY k.finished_at DESC, k.id DESC LIMIT 1) \
         FROM (SELECT DISTINCT host_id FROM jobs WHERE kind = {kind} AND status = {status}) h) \
         ORDER BY host_id"
    )
}

/// A `jobs` row.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    /// Column `id`.
    pub id: String,
    /// Column `host_id`.
    pub host_id: String,
    /// Column `kind`.
    pub kind: String,
    /// Column `params`.
    pub params: String,
    /// Column `status`.
    pub status: String,
    /// Column `trigger`.
    pub trigger: String,
    /// Column `exit_code`.
    pub exit_code: Option<i64>,
    /// Column `schedule_id`.
    pub schedule_id: Option<String>,
    /// Column `stats`.
    pub stats: Option<String>,
    /// Column `error`.
    pub error: Option<String>,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `dispatched_at`.
    pub dispatched_at: Option<i64>,
    /// Column `started_at`.
    pub started_at: Option<i64>,
    /// Column `finished_at`.
    pub finished_at: Option<i64>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Job, StoreError> {
        Ok(Job {
            id: decode::id("id", r.id)?,
            host_id: decode::id("host_id", r.host_id)?,
            kind: r.kind,
            params: decode::json("params", &r.params)?,
            status: decode::parsed("status", r.status)?,
            trigger: decode::parsed("trigger", r.trigger)?,
            schedule_id: decode::id_opt("schedule_id", r.schedule_id)?,
            exit_code: decode::int_opt("exit_code", r.exit_code)?,
            stats: decode::json_value_opt("stats", r.stats)?,
            error: r.error,
            created_at: decode::time("created_at", r.created_at)?,
            dispatched_at: decode::time_opt("dispatched_at", r.dispatched_at)?,
            started_at: decode::time_opt("started_at", r.started_at)?,
            finished_at: decode::time_opt("finished_at", r.finished_at)?,
        })
    }
}

/// Columns selected for a [`LogLineRow`].
pub const LOG_COLUMNS: &str = "job_id, seq, ts, stream, text";

/// A `job_logs` row.
#[derive(Debug, sqlx::FromRow)]
pub struct LogLineRow {
    /// Column `job_id`.
    pub job_id: String,
    /// Column `seq`.
    pub seq: i64,
    /// Column `ts`.
    pub ts: i64,
    /// Column `stream`.
    pub stream: String,
    /// Column `text`.
    pub text: String,
}

impl TryFrom<LogLineRow> for LogLineRecord {
    type Error = StoreError;

    fn try_from(r: LogLineRow) -> Result<LogLineRecord, StoreError> {
        Ok(LogLineRecord {
            job_id: decode::id("job_id", r.job_id)?,
            seq: decode::int("seq", r.seq)?,
            ts: decode::time("ts", r.ts)?,
            stream: r.stream,
            text: r.text,
        })
    }
}

/// Columns selected for a [`CommandResultRow`].
pub const COMMAND_RESULT_COLUMNS: &str = "job_id, accepted, reason, message, received_at";

/// A `command_results` row.
#[derive(Debug, sqlx::FromRow)]
pub struct CommandResultRow {
    /// Column `job_id`.
    pub job_id: String,
    /// Column `accepted`.
    pub accepted: Flag,
    /// Column `reason`.
    pub reason: Option<String>,
    /// Column `message`.
    pub message: Option<String>,
    /// Column `received_at`.
    pub received_at: i64,
}

impl TryFrom<CommandResultRow> for CommandResultRecord {
    type Error = StoreError;

    fn try_from(r: CommandResultRow) -> Result<CommandResultRecord, StoreError> {
        Ok(CommandResultRecord {
            job_id: decode::id("job_id", r.job_id)?,
            accepted: r.accepted.into(),
            reason: r.reason,
            message: r.message,
            received_at: decode::time("received_at", r.received_at)?,
        })
    }
}

/// A row naming one host (`SELECT DISTINCT host_id …`): the hosts that
/// have queued or active jobs.
#[derive(Debug, sqlx::FromRow)]
pub struct HostIdRow {
    /// Column `host_id`.
    pub host_id: String,
}

impl TryFrom<HostIdRow> for rm_core::HostId {
    type Error = StoreError;

    fn try_from(r: HostIdRow) -> Result<rm_core::HostId, StoreError> {
        decode::id("host_id", r.host_id)
    }
}
