//! The PostgreSQL side of [`rm_store::ScheduleStore`]: hosts' schedules,
//! their versions and acknowledgements.
//!
//! A schedule change bumps its host's `schedule_version` with an `UPDATE
//! … RETURNING`, which locks the host's row: changes of one host's
//! schedules from several servers take turns there, and each gets its own
//! version. Schedule sets are read in one REPEATABLE READ transaction, so
//! a version and its schedules come from one snapshot.

use std::collections::HashMap;

use async_trait::async_trait;
use rm_core::{HostId, ScheduleId};
use rm_store::prelude::*;
use rm_store::{Job, NewAuditEntry, ScheduleRecord, StoreError, StoreResult};
use rm_store_sql::encode::ms;
use rm_store_sql::{HostVersionRow, JobRow, ScheduleRow};
use sqlx::postgres::PgConnection;
// Every SQL text built at run time here is made of rm-store-sql's constant
// column lists; values are always bound, never formatted in, so each such
// text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{backend, pg_text};
use crate::shared::{fetch_all_models, fetch_optional_model, finish, insert_error, write_audit};
use crate::PostgresStore;

/// Bumps the schedule version of live host `host` inside the caller's
/// transaction (locking its row until the transaction ends); returns the
/// new version. [`StoreError::NotFound`] for an unknown or deleted host.
async fn bump_schedule_version(conn: &mut PgConnection, host: &str) -> StoreResult<u64> {
    let row = sqlx::query_as::<_, HostVersionRow>(
        "UPDATE hosts SET schedule_version = schedule_version + 1 \
         WHERE id = $1 AND deleted_at IS NULL RETURNING id, schedule_version AS version",
    )
    .bind(host)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))?;
    let (_, version) = <(HostId, u64)>::try_from(row)?;
    Ok(version)
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    /// Bumps the version first (which also finds and locks the host), then
    /// inserts; a duplicate schedule id is [`StoreError::Conflict`].
    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let host_id = schedule.host_id.to_string();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let version = bump_schedule_version(&mut tx, &host_id).await?;
            sqlx::query(
                "INSERT INTO schedules (id, host_id, kind, cron, timezone, params, enabled, \
             jitter_seconds, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(schedule.id.to_string())
            .bind(&host_id)
            .bind(pg_text(&schedule.kind))
            .bind(pg_text(&schedule.cron))
            .bind(schedule.timezone.as_deref().map(pg_text))
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
            Ok(version)
        }
        .await;
        finish(tx, result).await
    }

    /// As the SQLite store's: changes kind, cron, timezone, params,
    /// enabled, jitter and `updated_at`; a schedule of a deleted host is
    /// [`StoreError::NotFound`].
    async fn update_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let host_id: Option<String> = sqlx::query_scalar(
                "UPDATE schedules SET kind = $1, cron = $2, timezone = $3, params = $4, \
             enabled = $5, jitter_seconds = $6, updated_at = $7 \
             WHERE id = $8 AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL) \
             RETURNING host_id",
            )
            .bind(pg_text(&schedule.kind))
            .bind(pg_text(&schedule.cron))
            .bind(schedule.timezone.as_deref().map(pg_text))
            .bind(schedule.params.to_string())
            .bind(schedule.enabled)
            .bind(i64::from(schedule.jitter_seconds))
            .bind(ms(schedule.updated_at))
            .bind(schedule.id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            let Some(host_id) = host_id else {
                return Err(StoreError::NotFound(format!("schedule `{}`", schedule.id)));
            };
            let version = bump_schedule_version(&mut tx, &host_id).await?;
            write_audit(&mut tx, audit).await?;
            Ok(version)
        }
        .await;
        finish(tx, result).await
    }

    /// The schedule's jobs stay, with `schedule_id` NULL (`ON DELETE SET
    /// NULL`). A schedule of a deleted host is [`StoreError::NotFound`].
    async fn delete_schedule(
        &self,
        id: ScheduleId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<(HostId, u64)> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let row = sqlx::query_as::<_, HostVersionRow>(
                "WITH gone AS (DELETE FROM schedules \
               WHERE id = $1 AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL) \
               RETURNING host_id) \
             UPDATE hosts SET schedule_version = schedule_version + 1 \
             FROM gone WHERE hosts.id = gone.host_id \
             RETURNING hosts.id AS id, hosts.schedule_version AS version",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("schedule `{id}`")));
            };
            let (host_id, version) = <(HostId, u64)>::try_from(row)?;
            write_audit(&mut tx, audit).await?;
            Ok((host_id, version))
        }
        .await;
        finish(tx, result).await
    }

    /// `None` also for a schedule of a deleted host (hidden with its host).
    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<ScheduleRecord>> {
        let sql = format!(
            "SELECT {} FROM schedules WHERE id = $1 \
             AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL)",
            rm_store_sql::SCHEDULE_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    /// Two statements (the hosts' versions, then all their schedules), each
    /// over the whole list bound as one array, in one REPEATABLE READ
    /// transaction so both see one snapshot. Ordered by host id.
    async fn schedule_sets(
        &self,
        hosts: &[HostId],
    ) -> StoreResult<Vec<(HostId, u64, Vec<ScheduleRecord>)>> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            let versions: Vec<(HostId, u64)> = fetch_all_models(
                &mut *tx,
                sqlx::query_as::<_, HostVersionRow>(
                    "SELECT id, schedule_version AS version FROM hosts \
                 WHERE deleted_at IS NULL AND id = ANY($1) ORDER BY id",
                )
                .bind(&ids),
            )
            .await?;
            let mut index: HashMap<HostId, usize> = HashMap::with_capacity(versions.len());
            let mut sets: Vec<(HostId, u64, Vec<ScheduleRecord>)> =
                Vec::with_capacity(versions.len());
            for (host, version) in versions {
                index.insert(host, sets.len());
                sets.push((host, version, Vec::new()));
            }
            let sql = format!(
                "SELECT {} FROM schedules WHERE host_id = ANY($1) ORDER BY created_at, id",
                rm_store_sql::SCHEDULE_COLUMNS
            );
            let schedules: Vec<ScheduleRecord> = fetch_all_models(
                &mut *tx,
                sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql)).bind(&ids),
            )
            .await?;
            Ok((sets, index, schedules))
        }
        .await;
        let (mut sets, index, schedules) = finish(tx, result).await?;
        for schedule in schedules {
            if let Some(&at) = index.get(&schedule.host_id) {
                sets[at].2.push(schedule);
            }
        }
        Ok(sets)
    }

    /// One conditional `UPDATE … FROM UNNEST(…)` for all acks: a version
    /// only moves forward, and never past the version the server issued
    /// (an ack of a version above `schedule_version` is ignored). An
    /// unknown or deleted host changes nothing. The hosts' rows are locked
    /// first in id order, so two servers recording overlapping batches
    /// wait for each other instead of deadlocking; the `UPDATE` then
    /// re-checks "forward only" on the rows as they are.
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
        let ids: Vec<String> = acks.iter().map(|(host, _)| host.to_string()).collect();
        let versions: Vec<i64> = acks.iter().map(|(_, version)| *version).collect();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query("SELECT 1 FROM hosts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            // Of a host's acks, the highest version issued so far counts (as
            // if they were written one by one).
            fetch_all_models(
                &mut *tx,
                sqlx::query_as::<_, HostVersionRow>(
                    "UPDATE hosts SET schedule_applied_version = acked.version \
                 FROM (SELECT ack.id, MAX(ack.version) AS version \
                       FROM UNNEST($1::text[], $2::bigint[]) AS ack(id, version) \
                       JOIN hosts AS issued ON issued.id = ack.id \
                       AND ack.version <= issued.schedule_version \
                       GROUP BY ack.id) AS acked \
                 WHERE hosts.id = acked.id AND hosts.deleted_at IS NULL \
                 AND acked.version > COALESCE(hosts.schedule_applied_version, -1) \
                 RETURNING hosts.id AS id, hosts.schedule_applied_version AS version",
                )
                .bind(&ids)
                .bind(&versions),
            )
            .await
        }
        .await;
        finish(tx, result).await
    }

    /// In creation order.
    async fn active_jobs_of_schedule(&self, schedule: ScheduleId) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE schedule_id = $1 \
             AND status IN ('queued', 'dispatched', 'running') \
             ORDER BY created_at, id",
            rm_store_sql::JOB_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql)).bind(schedule.to_string()),
        )
        .await
    }
}
