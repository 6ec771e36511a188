//! The SQLite side of [`rm_store::JobStore`]: jobs, bulk batches, job logs
//! and command results.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{BatchId, HostId, JobId, JobStatus};
use rm_store::prelude::*;
use rm_store::{
    CommandResultRecord, Job, JobEnd, JobFilter, LogLineRecord, NewAuditEntry, NewJob, StoreError,
    StoreResult,
};
use rm_store_sql::encode;
use rm_store_sql::encode::{ms, u64_to_i64};
use rm_store_sql::{CommandResultRow, JobRow, LogLineRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{
    bind_selector, fetch_all_models, fetch_optional_model, insert_error, insert_job, placeholders,
    selector_sql, statement_rows, write_audit, SqliteStore, BACKUP_KIND,
};

/// `list_jobs` page size when the filter's limit is 0.
const DEFAULT_JOB_PAGE: u32 = 50;

/// Largest `list_jobs` page.
const MAX_JOB_PAGE: u32 = 1000;

/// Largest `logs` page.
const MAX_LOG_PAGE: u32 = 10_000;

/// Log lines per multi-row `INSERT` in `append_logs` (5 bind parameters
/// each, so 640 per statement: below even old SQLite's 999 limit). A batch
/// is cut into statements of this many rows, then the rest into
/// power-of-two sized statements, so at most 8 distinct SQL texts exist and
/// all of them stay in sqlx's per-connection prepared statement cache.
const LOG_ROWS_PER_INSERT: usize = 128;

/// The multi-row `INSERT OR IGNORE` of `rows` log lines.
fn insert_logs_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(64 + rows * 18);
    sql.push_str("INSERT OR IGNORE INTO job_logs (job_id, seq, ts, stream, text) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?)");
    }
    sql
}

/// One log line ready to bind.
struct LogRow<'a> {
    job_id: &'a str,
    seq: i64,
    ts: i64,
    stream: &'a str,
    text: &'a str,
}

/// Inserts `rows` (all of known jobs) with as few statements as possible;
/// returns how many were new.
async fn insert_log_rows(
    conn: &mut sqlx::SqliteConnection,
    mut rows: &[LogRow<'_>],
) -> StoreResult<u64> {
    let mut inserted = 0;
    while !rows.is_empty() {
        let n = statement_rows(rows.len(), LOG_ROWS_PER_INSERT);
        let (chunk, rest) = rows.split_at(n);
        let sql = insert_logs_sql(n);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.job_id)
                .bind(row.seq)
                .bind(row.ts)
                .bind(row.stream)
                .bind(row.text);
        }
        inserted += query
            .execute(&mut *conn)
            .await
            .map_err(backend)?
            .rows_affected();
        rows = rest;
    }
    Ok(inserted)
}

#[async_trait]
impl JobStore for SqliteStore {
    /// Inserts the job only if its host exists and is not deleted (one
    /// statement); a deleted host is [`StoreError::NotFound`] like an
    /// unknown one.
    ///
    /// `job.status` must be `queued`, `dispatched` (`dispatched_at` is set to
    /// `created_at`) or `skipped` (`finished_at` is set to `created_at`);
    /// anything else is [`StoreError::Conflict`]. `job.error` is stored as
    /// given. `job.schedule_id` is stored only when it names a schedule of
    /// the job's host; otherwise (e.g. an agent reports an offline run of a
    /// schedule deleted meanwhile) the job is kept with no schedule, exactly
    /// as if the schedule had been deleted after the job was created — check
    /// the returned [`Job`]'s `schedule_id`.
    async fn create_job(&self, job: &NewJob, audit: Option<&NewAuditEntry>) -> StoreResult<Job> {
        let mut tx = self.begin_write().await?;
        let created = insert_job(&mut tx, job).await?;
        write_audit(&mut tx, audit).await?;
        // The job is acknowledged only once the commit (which a full disk
        // fails) succeeded.
        tx.commit().await.map_err(backend)?;
        Ok(created)
    }

    async fn create_jobs(&self, jobs: &[NewJob]) -> StoreResult<Vec<Job>> {
        let mut tx = self.begin_write().await?;
        let mut created = Vec::with_capacity(jobs.len());
        for job in jobs {
            created.push(insert_job(&mut tx, job).await?);
        }
        tx.commit().await.map_err(backend)?;
        Ok(created)
    }

    async fn create_batch_jobs(
        &self,
        batch: BatchId,
        max_parallel: u32,
        jobs: &[NewJob],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<Job>> {
        self.create_batch_jobs_impl(batch, max_parallel, jobs, audit)
            .await
    }

    async fn create_job_once(&self, job: &NewJob, fire_key: &str) -> StoreResult<(Job, bool)> {
        self.create_job_once_impl(job, fire_key).await
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE id = ?",
            rm_store_sql::JOB_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    /// Ordered by `created_at DESC, id DESC`. `before` pages by that same
    /// key: jobs strictly after job `before` in this order (when `before` is
    /// not stored, its ULID timestamp stands in for its `created_at`).
    /// `limit` 0 means 50; larger values are capped at 1000.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let mut sql = format!("SELECT {} FROM jobs WHERE 1 = 1", rm_store_sql::JOB_COLUMNS);
        if filter.host_id.is_some() {
            sql.push_str(" AND host_id = ?");
        }
        if filter.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if filter.kind.is_some() {
            sql.push_str(" AND kind = ?");
        }
        if let Some(scope) = &filter.scope {
            // The hosts' labels decide, so a job follows its host into or
            // out of a scope when the host's labels change.
            sql.push_str(&format!(
                " AND host_id IN (SELECT hosts.id FROM hosts WHERE 1 = 1{})",
                selector_sql(scope)
            ));
        }
        if filter.before.is_some() {
            sql.push_str(
                " AND (created_at, id) < \
                 (COALESCE((SELECT created_at FROM jobs WHERE id = ?), ?), ?)",
            );
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");

        let limit = match filter.limit {
            0 => DEFAULT_JOB_PAGE,
            n => n.min(MAX_JOB_PAGE),
        };
        let mut query = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql));
        if let Some(host) = filter.host_id {
            query = query.bind(host.to_string());
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(kind) = &filter.kind {
            query = query.bind(kind.clone());
        }
        if let Some(scope) = &filter.scope {
            query = bind_selector(query, scope);
        }
        if let Some(before) = filter.before {
            let before_id = before.to_string();
            // ULID milliseconds fit in 48 bits, so always in i64.
            let before_ms = i64::try_from(before.0.timestamp_ms()).unwrap_or(i64::MAX);
            query = query
                .bind(before_id.clone())
                .bind(before_ms)
                .bind(before_id);
        }
        fetch_all_models(&self.pool, query.bind(i64::from(limit))).await
    }

    async fn latest_jobs_per_host(&self, kind: &str, status: JobStatus) -> StoreResult<Vec<Job>> {
        let sql = rm_store_sql::latest_jobs_per_host_sql("?", "?");
        // Each placeholder twice: the inner newest-per-host and the hosts.
        let query = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
            .bind(kind.to_owned())
            .bind(status.as_str())
            .bind(kind.to_owned())
            .bind(status.as_str());
        fetch_all_models(&self.pool, query).await
    }

    /// In creation order.
    async fn active_jobs(&self, host: HostId) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE host_id = ? AND status IN (?, ?) \
             ORDER BY created_at, id",
            rm_store_sql::JOB_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
                .bind(host.to_string())
                .bind(JobStatus::Dispatched.as_str())
                .bind(JobStatus::Running.as_str()),
        )
        .await
    }

    /// One query, so the "nothing active" check and the pick see the same
    /// snapshot of the database.
    async fn next_dispatchable_job(&self, host: HostId) -> StoreResult<Option<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE host_id = ? AND status = ? \
             AND NOT EXISTS (SELECT 1 FROM jobs AS active \
                             WHERE active.host_id = ? AND active.status IN (?, ?)) \
             ORDER BY created_at, id LIMIT 1",
            rm_store_sql::JOB_COLUMNS
        );
        let host_id = host.to_string();
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
                .bind(&host_id)
                .bind(JobStatus::Queued.as_str())
                .bind(&host_id)
                .bind(JobStatus::Dispatched.as_str())
                .bind(JobStatus::Running.as_str()),
        )
        .await
    }

    /// Deleted hosts are left out; ordered by host id (enrolment order).
    async fn hosts_with_active_jobs(&self) -> StoreResult<Vec<HostId>> {
        sqlx::query(
            "SELECT DISTINCT jobs.host_id AS host_id FROM jobs \
             JOIN hosts ON hosts.id = jobs.host_id \
             WHERE jobs.status IN (?, ?) AND hosts.deleted_at IS NULL \
             ORDER BY jobs.host_id",
        )
        .bind(JobStatus::Dispatched.as_str())
        .bind(JobStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| codec::id(row, "host_id"))
        .collect()
    }

    async fn hosts_with_queued_jobs(&self) -> StoreResult<Vec<HostId>> {
        sqlx::query(
            "SELECT DISTINCT jobs.host_id AS host_id FROM jobs \
             JOIN hosts ON hosts.id = jobs.host_id \
             WHERE jobs.status = ? AND hosts.deleted_at IS NULL \
             ORDER BY jobs.host_id",
        )
        .bind(JobStatus::Queued.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| codec::id(row, "host_id"))
        .collect()
    }

    /// Only `to` = [`JobStatus::Dispatched`] (sets `dispatched_at`) or
    /// [`JobStatus::Running`] (sets `started_at`); any other `to` is a
    /// caller bug and fails with [`StoreError::Conflict`] (finished statuses
    /// go through `finish_job`). An unknown job is `Ok(false)`.
    async fn advance_job(&self, id: JobId, to: JobStatus, at: DateTime<Utc>) -> StoreResult<bool> {
        // Back to `queued` (the agent was busy) clears the dispatch time.
        let (column, value) = match to {
            JobStatus::Queued => ("dispatched_at", None),
            JobStatus::Dispatched => ("dispatched_at", Some(ms(at))),
            JobStatus::Running => ("started_at", Some(ms(at))),
            other => {
                return Err(StoreError::Conflict(format!(
                    "advance_job cannot move a job to `{other}`: it only moves jobs to \
                     queued, dispatched or running; use finish_job to end a job"
                )))
            }
        };
        let sources = JobStatus::sources_of(to);
        let sql = format!(
            "UPDATE jobs SET status = ?, {column} = ? WHERE id = ? AND status IN ({})",
            placeholders(sources.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(value)
            .bind(id.to_string());
        for source in sources {
            query = query.bind(source.as_str());
        }
        let mut tx = self.begin_write().await?;
        let moved = query
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(moved == 1)
    }

    /// `end.status` must be a finished status, else [`StoreError::Conflict`].
    /// The job moves only from a status that may become `end.status`
    /// ([`JobStatus::sources_of`]), so a job that already ended keeps its
    /// first outcome, and an unknown job is `Ok(false)`. For a `backup` job
    /// the host's `last_backup_at` / `last_backup_status` are set in the same
    /// transaction — unless the host already records a later backup (a late
    /// report of an older run does not hide a newer one).
    async fn finish_job(
        &self,
        id: JobId,
        end: &JobEnd,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        if !end.status.is_finished() {
            return Err(StoreError::Conflict(format!(
                "finish_job needs a finished status, not `{}`",
                end.status
            )));
        }
        let sources = JobStatus::sources_of(end.status);
        // An active job may finish; so may one the server failed
        // provisionally, when the agent's own end (never another verdict)
        // arrives after all.
        let sql = format!(
            "UPDATE jobs SET status = ?, exit_code = ?, stats = ?, error = ?, finished_at = ?, \
             end_provisional = ? \
             WHERE id = ? AND (status IN ({}) OR (end_provisional = 1 AND ? = 0)) \
             RETURNING host_id, kind",
            placeholders(sources.len())
        );
        let finished_ms = ms(end.finished_at);
        let mut tx = self.begin_write().await?;
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(end.status.as_str())
            .bind(end.exit_code)
            .bind(encode::json_value_to_opt(&end.stats))
            .bind(&end.error)
            .bind(finished_ms)
            .bind(end.provisional)
            .bind(id.to_string());
        for source in sources {
            query = query.bind(source.as_str());
        }
        query = query.bind(end.provisional);
        let Some(row) = query.fetch_optional(&mut *tx).await.map_err(backend)? else {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        };
        if codec::text(&row, "kind")? == BACKUP_KIND {
            sqlx::query(
                "UPDATE hosts SET last_backup_at = ?, last_backup_status = ? \
                 WHERE id = ? AND (last_backup_at IS NULL OR last_backup_at <= ?)",
            )
            .bind(finished_ms)
            .bind(end.status.as_str())
            .bind(codec::text(&row, "host_id")?)
            .bind(finished_ms)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if matches!(end.status, JobStatus::Succeeded | JobStatus::Partial) {
                sqlx::query(
                    "UPDATE hosts SET last_backup_success_at = ? WHERE id = ? \
                     AND (last_backup_success_at IS NULL OR last_backup_success_at <= ?)",
                )
                .bind(finished_ms)
                .bind(codec::text(&row, "host_id")?)
                .bind(finished_ms)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    /// One `BEGIN IMMEDIATE` transaction for the whole slice, with
    /// multi-row `INSERT OR IGNORE` statements (idempotent on
    /// `(job_id, seq)`); returns how many lines were new.
    ///
    /// Lines of unknown jobs are skipped, not an error, so they cannot cost
    /// the other jobs' lines (the server's log writer batches many agents'
    /// lines together and retries failed batches): the known jobs are looked
    /// up first in the same transaction, only their lines are stored and
    /// counted, and the unknown job ids are logged (`warn`). A `seq` above
    /// `i64::MAX` fails the whole call with [`StoreError::Conflict`] before
    /// anything is written.
    async fn append_logs(&self, lines: &[LogLineRecord]) -> StoreResult<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        // Distinct job ids as stored (few per batch; usually one).
        let mut job_ids: Vec<(JobId, String)> = Vec::new();
        let mut line_job: Vec<usize> = Vec::with_capacity(lines.len());
        let mut seqs: Vec<i64> = Vec::with_capacity(lines.len());
        for line in lines {
            seqs.push(u64_to_i64(line.seq, "log line seq")?);
            let index = match job_ids.iter().rposition(|(id, _)| *id == line.job_id) {
                Some(i) => i,
                None => {
                    job_ids.push((line.job_id, line.job_id.to_string()));
                    job_ids.len() - 1
                }
            };
            line_job.push(index);
        }

        let mut tx = self.begin_write().await?;
        let wanted =
            serde_json::Value::from(job_ids.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>())
                .to_string();
        let known: Vec<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
                .bind(wanted)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let is_known: Vec<bool> = job_ids.iter().map(|(_, s)| known.contains(s)).collect();
        if known.len() < job_ids.len() {
            let unknown: Vec<&str> = job_ids
                .iter()
                .zip(&is_known)
                .filter(|(_, known)| !**known)
                .map(|((_, s), _)| s.as_str())
                .collect();
            let skipped = line_job.iter().filter(|&&i| !is_known[i]).count();
            tracing::warn!(
                unknown_jobs = ?unknown,
                skipped,
                "dropping log lines of unknown jobs"
            );
        }

        let rows: Vec<LogRow<'_>> = lines
            .iter()
            .zip(&line_job)
            .zip(&seqs)
            .filter(|((_, &job), _)| is_known[job])
            .map(|((line, &job), &seq)| LogRow {
                job_id: &job_ids[job].1,
                seq,
                ts: ms(line.ts),
                stream: &line.stream,
                text: &line.text,
            })
            .collect();
        if rows.is_empty() {
            tx.rollback().await.map_err(backend)?;
            return Ok(0);
        }
        let inserted = insert_log_rows(&mut tx, &rows).await?;
        tx.commit().await.map_err(backend)?;
        Ok(inserted)
    }

    /// `limit` is clamped to 1..=10000. An unknown job has no lines.
    async fn logs(
        &self,
        job: JobId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<LogLineRecord>> {
        // No stored seq exceeds i64::MAX, so nothing comes after such a seq.
        let Ok(after) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {} FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            rm_store_sql::LOG_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, LogLineRow>(AssertSqlSafe(sql))
                .bind(job.to_string())
                .bind(after)
                .bind(i64::from(limit.clamp(1, MAX_LOG_PAGE))),
        )
        .await
    }

    /// [`StoreError::NotFound`] for an unknown job.
    async fn record_command_result(&self, result: &CommandResultRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO command_results (job_id, accepted, reason, message, received_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (job_id) DO UPDATE SET accepted = excluded.accepted, \
             reason = excluded.reason, message = excluded.message, \
             received_at = excluded.received_at",
        )
        .bind(result.job_id.to_string())
        .bind(result.accepted)
        .bind(&result.reason)
        .bind(&result.message)
        .bind(ms(result.received_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("command result of job `{}`", result.job_id),
                &format!("job `{}`", result.job_id),
            )
        })?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn command_result(&self, job: JobId) -> StoreResult<Option<CommandResultRecord>> {
        self.row_by::<CommandResultRow, CommandResultRecord>(
            "command_results",
            "job_id",
            rm_store_sql::COMMAND_RESULT_COLUMNS,
            job.to_string(),
        )
        .await
    }
}
