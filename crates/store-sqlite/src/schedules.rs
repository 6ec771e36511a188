//! The SQLite side of [`rm_store::ScheduleStore`]: hosts' schedules, their
//! versions and acknowledgements.

use std::collections::HashMap;

use async_trait::async_trait;
use rm_core::{HostId, JobStatus, ScheduleId};
use rm_store::prelude::*;
use rm_store::{Job, NewAuditEntry, ScheduleRecord, StoreError, StoreResult};
use rm_store_sql::encode::ms;
use rm_store_sql::{JobRow, ScheduleRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{
    fetch_all_models, fetch_optional_model, insert_error, placeholders, statement_rows,
    write_audit, SqliteStore,
};

/// Hosts per `IN (…)` list when reading schedule sets.
const SET_HOSTS_PER_QUERY: usize = 256;

/// Hosts per `record_schedule_acks` statement (2 bind parameters each).
const ACKS_PER_UPDATE: usize = 256;

/// Bumps the schedule version of live host `host` inside the caller's
/// transaction; returns the new version. [`StoreError::NotFound`] for an
/// unknown or deleted host.
async fn bump_schedule_version(conn: &mut sqlx::SqliteConnection, host: &str) -> StoreResult<u64> {
    let row = sqlx::query(
        "UPDATE hosts SET schedule_version = schedule_version + 1 \
         WHERE id = ? AND deleted_at IS NULL RETURNING schedule_version",
    )
    .bind(host)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))?;
    codec::u64_col(&row, "schedule_version")
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    /// Bumps the version first (which also finds the host), then inserts;
    /// a duplicate schedule id is [`StoreError::Conflict`].
    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let host_id = schedule.host_id.to_string();
        let mut tx = self.begin_write().await?;
        let version = bump_schedule_version(&mut tx, &host_id).await?;
        sqlx::query(
            "INSERT INTO schedules (id, host_id, kind, cron, timezone, params, enabled, \
             jitter_seconds, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(schedule.id.to_string())
        .bind(&host_id)
        .bind(&schedule.kind)
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(schedule.params.to_string())
        .bind(schedule.enabled)
        .bind(i64::from(schedule.jitter_seconds))
        .bind(ms(schedule.created_at))
        .bind(ms(schedule.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("schedule `{}` already exists", schedule.id),
                &format!("host `{host_id}`"),
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(version)
    }

    /// Changes kind, cron, timezone, params, enabled, jitter and
    /// `updated_at`; `schedule.host_id` and `created_at` are ignored (the
    /// stored ones stay). A schedule of a deleted host is hidden with its
    /// host: [`StoreError::NotFound`].
    async fn update_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE schedules SET kind = ?, cron = ?, timezone = ?, params = ?, enabled = ?, \
             jitter_seconds = ?, updated_at = ? \
             WHERE id = ? AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL) \
             RETURNING host_id",
        )
        .bind(&schedule.kind)
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(schedule.params.to_string())
        .bind(schedule.enabled)
        .bind(i64::from(schedule.jitter_seconds))
        .bind(ms(schedule.updated_at))
        .bind(schedule.id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("schedule `{}`", schedule.id)));
        };
        let host_id = codec::text(&row, "host_id")?;
        let version = bump_schedule_version(&mut tx, &host_id).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(version)
    }

    /// The schedule's jobs stay, with `schedule_id` NULL (`ON DELETE SET
    /// NULL`). A schedule of a deleted host is hidden with its host:
    /// [`StoreError::NotFound`].
    async fn delete_schedule(
        &self,
        id: ScheduleId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<(HostId, u64)> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "DELETE FROM schedules \
             WHERE id = ? AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL) \
             RETURNING host_id",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("schedule `{id}`")));
        };
        let host_id: HostId = codec::id(&row, "host_id")?;
        let version = bump_schedule_version(&mut tx, &host_id.to_string()).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok((host_id, version))
    }

    /// `None` also for a schedule of a deleted host (hidden with its host).
    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<ScheduleRecord>> {
        let sql = format!(
            "SELECT {} FROM schedules WHERE id = ? \
             AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL)",
            rm_store_sql::SCHEDULE_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    /// All reads run in one read transaction, so they see one snapshot of
    /// the database (WAL); hosts in statements of up to
    /// [`SET_HOSTS_PER_QUERY`].
    async fn schedule_sets(
        &self,
        hosts: &[HostId],
    ) -> StoreResult<Vec<(HostId, u64, Vec<ScheduleRecord>)>> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut sets: Vec<(HostId, u64, Vec<ScheduleRecord>)> = Vec::with_capacity(hosts.len());
        let mut index: HashMap<HostId, usize> = HashMap::with_capacity(hosts.len());
        let mut rest = hosts;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(statement_rows(rest.len(), SET_HOSTS_PER_QUERY));
            rest = after;
            let sql = format!(
                "SELECT id, schedule_version FROM hosts \
                 WHERE deleted_at IS NULL AND id IN ({}) ORDER BY id",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                let id: HostId = codec::id(&row, "id")?;
                if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(id) {
                    slot.insert(sets.len());
                    sets.push((id, codec::u64_col(&row, "schedule_version")?, Vec::new()));
                }
            }
            let sql = format!(
                "SELECT {} FROM schedules WHERE host_id IN ({}) ORDER BY created_at, id",
                rm_store_sql::SCHEDULE_COLUMNS,
                placeholders(chunk.len())
            );
            let mut query = sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                let schedule = ScheduleRecord::try_from(row)?;
                if let Some(&at) = index.get(&schedule.host_id) {
                    sets[at].2.push(schedule);
                }
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(sets)
    }

    /// One write transaction, with conditional `UPDATE`s of up to
    /// [`ACKS_PER_UPDATE`] acks each: a version only moves forward, and
    /// never past the version the server issued (an ack of a version above
    /// `schedule_version` is ignored). An unknown or deleted host changes
    /// nothing.
    async fn record_schedule_acks(
        &self,
        acks: &[(HostId, u64)],
    ) -> StoreResult<Vec<(HostId, u64)>> {
        // No issued version exceeds i64::MAX, so such an ack is ignored.
        let mut acks: Vec<(HostId, i64)> = acks
            .iter()
            .filter_map(|(host, version)| Some((*host, i64::try_from(*version).ok()?)))
            .collect();
        acks.sort_unstable();
        acks.dedup();
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let mut recorded = Vec::new();
        let mut tx = self.begin_write().await?;
        let mut rest = acks.as_slice();
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(statement_rows(rest.len(), ACKS_PER_UPDATE));
            rest = after;
            // Of a host's acks, the highest version issued so far counts
            // (as if they were written one by one); a host split over two
            // statements still ends there, as versions only move forward.
            let sql = format!(
                "UPDATE hosts SET schedule_applied_version = acked.version \
                 FROM (SELECT ack.column1 AS id, MAX(ack.column2) AS version \
                       FROM (VALUES {}) AS ack \
                       JOIN hosts AS issued ON issued.id = ack.column1 \
                       AND ack.column2 <= issued.schedule_version \
                       GROUP BY ack.column1) AS acked \
                 WHERE hosts.id = acked.id AND hosts.deleted_at IS NULL \
                 AND acked.version > COALESCE(hosts.schedule_applied_version, -1) \
                 RETURNING hosts.id AS id, hosts.schedule_applied_version AS version",
                vec!["(?, ?)"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (host, version) in chunk {
                query = query.bind(host.to_string()).bind(*version);
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                recorded.push((codec::id(&row, "id")?, codec::u64_col(&row, "version")?));
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(recorded)
    }

    /// In creation order.
    async fn active_jobs_of_schedule(&self, schedule: ScheduleId) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE schedule_id = ? AND status IN (?, ?, ?) \
             ORDER BY created_at, id",
            rm_store_sql::JOB_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
                .bind(schedule.to_string())
                .bind(JobStatus::Queued.as_str())
                .bind(JobStatus::Dispatched.as_str())
                .bind(JobStatus::Running.as_str()),
        )
        .await
    }
}
