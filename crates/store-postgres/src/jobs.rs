//! The PostgreSQL side of [`rm_store::JobStore`]: jobs, bulk batches, job
//! logs and command results.
//!
//! Races the SQLite store leaves to its single writer are decided here by
//! the statements themselves: a status move is one conditional `UPDATE …
//! WHERE status = ANY(…)` (under READ COMMITTED a second writer blocked on
//! the row re-checks the condition against the first one's result, so a
//! job moves or ends once), and `create_job_once` claims its key with
//! `INSERT … ON CONFLICT DO NOTHING`. Bulk writes (many jobs, log lines)
//! are one statement over `UNNEST`ed arrays, not one per row.

use std::borrow::Cow;
use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{BatchId, HostId, JobId, JobStatus};
use rm_store::prelude::*;
use rm_store::{
    CommandResultRecord, Job, JobEnd, JobFilter, LogLineRecord, NewAuditEntry, NewJob, StoreError,
    StoreResult,
};
use rm_store_sql::encode::{self, ms, u64_to_i64};
use rm_store_sql::{CommandResultRow, HostIdRow, JobRow, LogLineRow};
use sqlx::postgres::PgConnection;
// Every SQL text built at run time here is made of rm-store-sql's constant
// column lists and numbered placeholders; values are always bound, never
// formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::pg_text;
use crate::shared::{
    fetch_all_models, fetch_optional_model, finish, finish_if, insert_error, selector_param,
    selector_sql, write_audit,
};
use crate::PostgresStore;

/// `list_jobs` page size when the filter's limit is 0.
const DEFAULT_JOB_PAGE: u32 = 50;

/// Largest `list_jobs` page.
const MAX_JOB_PAGE: u32 = 1000;

/// Largest `logs` page.
const MAX_LOG_PAGE: u32 = 10_000;

/// The job kind whose end updates the host's last-backup summary.
const BACKUP_KIND: &str = "backup";

/// The statuses of a job a host is busy with.
const ACTIVE: [&str; 2] = ["dispatched", "running"];

/// Inserts `jobs` inside the caller's transaction with one statement, and
/// returns them as stored, in the order given.
///
/// [`StoreError::NotFound`] when a job's host is unknown or deleted,
/// [`StoreError::Conflict`] for a taken id (or one given twice) or a status
/// a job cannot start in (checked before anything is written). A
/// `schedule_id` that is not a schedule of the job's host is stored as NULL
/// (see [`JobStore::create_job`] of the SQLite store, whose rules these
/// are).
pub(crate) async fn insert_jobs(conn: &mut PgConnection, jobs: &[NewJob]) -> StoreResult<Vec<Job>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let n = jobs.len();
    let (mut ids, mut hosts, mut kinds, mut params, mut statuses, mut triggers) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut schedules, mut errors, mut created, mut dispatched, mut finished) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for job in jobs {
        let at = ms(job.created_at);
        let (dispatched_at, finished_at) = match job.status {
            JobStatus::Queued => (None, None),
            JobStatus::Dispatched => (Some(at), None),
            JobStatus::Skipped => (None, Some(at)),
            other => {
                return Err(StoreError::Conflict(format!(
                    "a job cannot be created in status `{other}`: only queued, dispatched \
                     or skipped"
                )))
            }
        };
        ids.push(job.id.to_string());
        hosts.push(job.host_id.to_string());
        kinds.push(pg_text(&job.kind).into_owned());
        params.push(job.params.to_string());
        statuses.push(job.status.as_str());
        triggers.push(job.trigger.as_str());
        schedules.push(job.schedule_id.map(|s| s.to_string()));
        errors.push(job.error.as_deref().map(|e| pg_text(e).into_owned()));
        created.push(at);
        dispatched.push(dispatched_at);
        finished.push(finished_at);
    }
    // Only live hosts join, so a missing row in RETURNING is a job whose
    // host is unknown or deleted; the schedule is kept only when it is one
    // of the job's host.
    let sql = format!(
        "INSERT INTO jobs (id, host_id, kind, params, status, \"trigger\", schedule_id, \
         error, created_at, dispatched_at, finished_at) \
         SELECT n.id, hosts.id, n.kind, n.params, n.status, n.trg, schedules.id, \
         n.error, n.created_at, n.dispatched_at, n.finished_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[]) \
              AS n(id, host_id, kind, params, status, trg, schedule_id, error, created_at, \
                   dispatched_at, finished_at) \
         JOIN hosts ON hosts.id = n.host_id AND hosts.deleted_at IS NULL \
         LEFT JOIN schedules ON schedules.id = n.schedule_id AND schedules.host_id = hosts.id \
         RETURNING {}",
        rm_store_sql::JOB_COLUMNS
    );
    let rows = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
        .bind(&ids)
        .bind(&hosts)
        .bind(&kinds)
        .bind(&params)
        .bind(&statuses)
        .bind(&triggers)
        .bind(&schedules)
        .bind(&errors)
        .bind(&created)
        .bind(&dispatched)
        .bind(&finished)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || match jobs {
                    [job] => format!("job `{}` already exists", job.id),
                    _ => format!("one of the {n} jobs' ids already exists or is given twice"),
                },
                "host",
            )
        })?;
    let mut made: Vec<Job> = rm_store_sql::convert_all(rows)?;
    if made.len() < n {
        let stored: HashSet<JobId> = made.iter().map(|j| j.id).collect();
        let missing = jobs
            .iter()
            .find(|j| !stored.contains(&j.id))
            .map_or_else(String::new, |j| j.host_id.to_string());
        return Err(StoreError::NotFound(format!("host `{missing}`")));
    }
    // RETURNING follows no promised order; give the jobs back as asked.
    let order: std::collections::HashMap<JobId, usize> =
        jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    made.sort_by_key(|j| order.get(&j.id).copied().unwrap_or(usize::MAX));
    Ok(made)
}

/// The job with id `id`, read on `conn`.
async fn read_job<'c, E>(executor: E, id: &str) -> StoreResult<Option<Job>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let sql = format!(
        "SELECT {} FROM jobs WHERE id = $1",
        rm_store_sql::JOB_COLUMNS
    );
    fetch_optional_model(
        executor,
        sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql)).bind(id),
    )
    .await
}

/// The job created under `fire_key`, if any.
async fn fired_job<'c, E>(executor: E, fire_key: &str) -> StoreResult<Option<Job>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let sql = format!(
        "SELECT {} FROM jobs WHERE id = \
         (SELECT job_id FROM repository_fires WHERE fire_key = $1)",
        rm_store_sql::JOB_COLUMNS
    );
    fetch_optional_model(
        executor,
        sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql)).bind(fire_key),
    )
    .await
}

/// The names of `statuses`, to bind as a `text[]`.
fn names(statuses: &[JobStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

#[async_trait]
impl JobStore for PostgresStore {
    /// As the SQLite store's: only on a live host; `queued`, `dispatched`
    /// or `skipped`; a `schedule_id` of another host's (or no) schedule is
    /// stored as none.
    async fn create_job(&self, job: &NewJob, audit: Option<&NewAuditEntry>) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let made = insert_jobs(&mut tx, std::slice::from_ref(job)).await?;
            write_audit(&mut tx, audit).await?;
            Ok(made)
        }
        .await;
        let mut made = finish(tx, result).await?;
        made.pop()
            .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))
    }

    async fn create_jobs(&self, jobs: &[NewJob]) -> StoreResult<Vec<Job>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result = insert_jobs(&mut tx, jobs).await;
        finish(tx, result).await
    }

    /// The jobs and their batch rows are two statements, whatever the
    /// number of jobs.
    async fn create_batch_jobs(
        &self,
        batch: BatchId,
        max_parallel: u32,
        jobs: &[NewJob],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<Job>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let made = insert_jobs(&mut tx, jobs).await?;
            let ids: Vec<String> = made.iter().map(|j| j.id.to_string()).collect();
            sqlx::query(
                "INSERT INTO job_batches (job_id, batch_id, max_parallel) \
             SELECT job_id, $2, $3 FROM UNNEST($1::text[]) AS b(job_id)",
            )
            .bind(&ids)
            .bind(batch.to_string())
            .bind(i64::from(max_parallel.max(1)))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            write_audit(&mut tx, audit).await?;
            Ok(made)
        }
        .await;
        finish(tx, result).await
    }

    /// The key is claimed with `INSERT … ON CONFLICT DO NOTHING` in the
    /// transaction that creates the job: of two servers firing at once, the
    /// second's insert waits for the first's commit and then claims
    /// nothing, so it rolls its job back and returns the first's.
    async fn create_job_once(&self, job: &NewJob, fire_key: &str) -> StoreResult<(Job, bool)> {
        if let Some(found) = fired_job(&self.pool, fire_key).await? {
            return Ok((found, false));
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let made = insert_jobs(&mut tx, std::slice::from_ref(job)).await?;
            let claimed = sqlx::query(
                "INSERT INTO repository_fires (fire_key, job_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (fire_key) DO NOTHING",
            )
            .bind(fire_key)
            .bind(job.id.to_string())
            .bind(ms(job.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
            Ok((claimed == 1).then_some(made))
        }
        .await;
        // Not claimed: the job made for the claim is rolled back.
        if let Some(mut made) = finish_if(tx, result, Option::is_some).await? {
            let made = made
                .pop()
                .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))?;
            return Ok((made, true));
        }
        // The claim that won is committed (the insert waited for it), so a
        // new statement sees it.
        fired_job(&self.pool, fire_key)
            .await?
            .map(|j| (j, false))
            .ok_or_else(|| {
                StoreError::Backend(format!("fire key `{fire_key}` is taken by no job").into())
            })
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        read_job(&self.pool, &id.to_string()).await
    }

    /// As the SQLite store's: `created_at DESC, id DESC`, `before` pages by
    /// that key (its ULID time standing in when it is not stored), `limit`
    /// 0 is 50 and at most 1000.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let mut sql = format!("SELECT {} FROM jobs WHERE TRUE", rm_store_sql::JOB_COLUMNS);
        let mut next = 0;
        let mut param = || {
            next += 1;
            next
        };
        if filter.host_id.is_some() {
            sql.push_str(&format!(" AND host_id = ${}", param()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = ${}", param()));
        }
        if filter.kind.is_some() {
            sql.push_str(&format!(" AND kind = ${}", param()));
        }
        if filter.scope.is_some() {
            // The hosts' labels decide, so a job follows its host into or
            // out of a scope when the host's labels change.
            sql.push_str(&format!(
                " AND host_id IN (SELECT hosts.id FROM hosts WHERE {})",
                selector_sql(param())
            ));
        }
        if filter.before.is_some() {
            let (id, at) = (param(), param());
            sql.push_str(&format!(
                " AND (created_at, id) < \
                 (COALESCE((SELECT created_at FROM jobs WHERE id = ${id}), ${at}), ${id})"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${}",
            param()
        ));

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
            query = query.bind(selector_param(scope));
        }
        if let Some(before) = filter.before {
            // ULID milliseconds fit in 48 bits, so always in i64.
            let before_ms = i64::try_from(before.0.timestamp_ms()).unwrap_or(i64::MAX);
            query = query.bind(before.to_string()).bind(before_ms);
        }
        fetch_all_models(&self.pool, query.bind(i64::from(limit))).await
    }

    async fn latest_jobs_per_host(&self, kind: &str, status: JobStatus) -> StoreResult<Vec<Job>> {
        let sql = rm_store_sql::latest_jobs_per_host_sql("$1", "$2");
        let query = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
            .bind(kind.to_owned())
            .bind(status.as_str());
        fetch_all_models(&self.pool, query).await
    }

    /// In creation order.
    async fn active_jobs(&self, host: HostId) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE host_id = $1 AND status = ANY($2) \
             ORDER BY created_at, id",
            rm_store_sql::JOB_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
                .bind(host.to_string())
                .bind(&ACTIVE[..]),
        )
        .await
    }

    /// One query, so the "nothing active" check and the pick see the same
    /// snapshot of the database. Two servers may both read the same job;
    /// the `advance_job` to `dispatched` that follows moves it once.
    async fn next_dispatchable_job(&self, host: HostId) -> StoreResult<Option<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE host_id = $1 AND status = 'queued' \
             AND NOT EXISTS (SELECT 1 FROM jobs AS active \
                             WHERE active.host_id = $1 AND active.status = ANY($2)) \
             ORDER BY created_at, id LIMIT 1",
            rm_store_sql::JOB_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
                .bind(host.to_string())
                .bind(&ACTIVE[..]),
        )
        .await
    }

    /// Deleted hosts are left out; ordered by host id (enrolment order).
    async fn hosts_with_active_jobs(&self) -> StoreResult<Vec<HostId>> {
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, HostIdRow>(
                "SELECT DISTINCT jobs.host_id AS host_id FROM jobs \
                 JOIN hosts ON hosts.id = jobs.host_id \
                 WHERE jobs.status = ANY($1) AND hosts.deleted_at IS NULL \
                 ORDER BY jobs.host_id",
            )
            .bind(&ACTIVE[..]),
        )
        .await
    }

    async fn hosts_with_queued_jobs(&self) -> StoreResult<Vec<HostId>> {
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, HostIdRow>(
                "SELECT DISTINCT jobs.host_id AS host_id FROM jobs \
                 JOIN hosts ON hosts.id = jobs.host_id \
                 WHERE jobs.status = 'queued' AND hosts.deleted_at IS NULL \
                 ORDER BY jobs.host_id",
            ),
        )
        .await
    }

    /// As the SQLite store's: only to `queued` (clearing `dispatched_at`),
    /// `dispatched` or `running`; anything else is
    /// [`StoreError::Conflict`]; an unknown job is `Ok(false)`. One
    /// conditional `UPDATE`: of two servers moving one job, one moves it.
    async fn advance_job(&self, id: JobId, to: JobStatus, at: DateTime<Utc>) -> StoreResult<bool> {
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
        let sql = format!(
            "UPDATE jobs SET status = $1, {column} = $2 WHERE id = $3 AND status = ANY($4)"
        );
        let moved = sqlx::query(AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(value)
            .bind(id.to_string())
            .bind(names(&JobStatus::sources_of(to)))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(moved == 1)
    }

    /// As the SQLite store's (a job ends once; the agent's real end
    /// replaces a provisional one; a backup's end updates the host's
    /// summary unless it already records a later backup). The job's end is
    /// one conditional `UPDATE`, so of two servers ending one job, one
    /// does; the host's summary moves only forward, by conditional
    /// `UPDATE`s too.
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
        let finished_ms = ms(end.finished_at);
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let ended: Option<(String, String)> = sqlx::query_as(
                "UPDATE jobs SET status = $1, exit_code = $2, stats = $3, error = $4, \
             finished_at = $5, end_provisional = $6 \
             WHERE id = $7 AND (status = ANY($8) OR (end_provisional AND NOT $6)) \
             RETURNING host_id, kind",
            )
            .bind(end.status.as_str())
            .bind(end.exit_code)
            .bind(encode::json_value_to_opt(&end.stats))
            .bind(end.error.as_deref().map(pg_text))
            .bind(finished_ms)
            .bind(end.provisional)
            .bind(id.to_string())
            .bind(names(&JobStatus::sources_of(end.status)))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            let Some((host_id, kind)) = ended else {
                return Ok(false);
            };
            if kind == BACKUP_KIND {
                let succeeded = matches!(end.status, JobStatus::Succeeded | JobStatus::Partial);
                sqlx::query(
                    "UPDATE hosts SET \
                 last_backup_status = CASE WHEN last_backup_at IS NULL OR last_backup_at <= $1 \
                     THEN $2 ELSE last_backup_status END, \
                 last_backup_at = CASE WHEN last_backup_at IS NULL OR last_backup_at <= $1 \
                     THEN $1 ELSE last_backup_at END, \
                 last_backup_success_at = CASE WHEN $4 AND (last_backup_success_at IS NULL \
                     OR last_backup_success_at <= $1) THEN $1 ELSE last_backup_success_at END \
                 WHERE id = $3",
                )
                .bind(finished_ms)
                .bind(end.status.as_str())
                .bind(&host_id)
                .bind(succeeded)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            }
            write_audit(&mut tx, audit).await?;
            Ok(true)
        }
        .await;
        // A job already ended (or not there) is left as it was.
        finish_if(tx, result, |ended| *ended).await
    }

    /// As the SQLite store's contract (lines of unknown jobs are skipped
    /// and logged, a `seq` above `i64::MAX` fails the call before anything
    /// is written), with one lookup of the batch's jobs and then one
    /// `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO NOTHING` for all its
    /// lines, whose affected rows are the new lines. NUL characters, which
    /// PostgreSQL's TEXT cannot hold, are stored as U+FFFD.
    async fn append_logs(&self, lines: &[LogLineRecord]) -> StoreResult<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        let seqs = lines
            .iter()
            .map(|line| u64_to_i64(line.seq, "log line seq"))
            .collect::<StoreResult<Vec<i64>>>()?;
        // Distinct job ids as stored (few per batch; usually one).
        let mut job_ids: Vec<(JobId, String)> = Vec::new();
        let mut line_job: Vec<usize> = Vec::with_capacity(lines.len());
        for line in lines {
            let index = match job_ids.iter().rposition(|(id, _)| *id == line.job_id) {
                Some(i) => i,
                None => {
                    job_ids.push((line.job_id, line.job_id.to_string()));
                    job_ids.len() - 1
                }
            };
            line_job.push(index);
        }
        let wanted: Vec<&str> = job_ids.iter().map(|(_, s)| s.as_str()).collect();
        let known: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
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

        let kept = line_job.iter().filter(|&&i| is_known[i]).count();
        if kept == 0 {
            return Ok(0);
        }
        let mut ids: Vec<&str> = Vec::with_capacity(kept);
        let mut kept_seqs: Vec<i64> = Vec::with_capacity(kept);
        let mut ts: Vec<i64> = Vec::with_capacity(kept);
        let mut streams: Vec<Cow<'_, str>> = Vec::with_capacity(kept);
        let mut texts: Vec<Cow<'_, str>> = Vec::with_capacity(kept);
        for ((line, &job), &seq) in lines.iter().zip(&line_job).zip(&seqs) {
            if !is_known[job] {
                continue;
            }
            ids.push(&job_ids[job].1);
            kept_seqs.push(seq);
            ts.push(ms(line.ts));
            streams.push(pg_text(&line.stream));
            texts.push(pg_text(&line.text));
        }
        let streams: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        // One statement is one transaction: all the batch's lines or none.
        // Rows go in key order, so two servers storing overlapping batches
        // (an agent replaying its spool to another server) wait for each
        // other on the first shared key instead of deadlocking.
        let inserted = sqlx::query(
            "INSERT INTO job_logs (job_id, seq, ts, stream, text) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
                                  $5::text[]) AS line(job_id, seq, ts, stream, text) \
             ORDER BY line.job_id, line.seq \
             ON CONFLICT (job_id, seq) DO NOTHING",
        )
        .bind(&ids)
        .bind(&kept_seqs)
        .bind(&ts)
        .bind(&streams)
        .bind(&texts)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
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
            "SELECT {} FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
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
        sqlx::query(
            "INSERT INTO command_results (job_id, accepted, reason, message, received_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (job_id) DO UPDATE SET accepted = excluded.accepted, \
             reason = excluded.reason, message = excluded.message, \
             received_at = excluded.received_at",
        )
        .bind(result.job_id.to_string())
        .bind(result.accepted)
        .bind(result.reason.as_deref().map(pg_text))
        .bind(result.message.as_deref().map(pg_text))
        .bind(ms(result.received_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("command result of job `{}`", result.job_id),
                &format!("job `{}`", result.job_id),
            )
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_names_the_statuses_a_host_is_busy_with() {
        assert_eq!(
            ACTIVE,
            [JobStatus::Dispatched.as_str(), JobStatus::Running.as_str()]
        );
    }
}
