//! The PostgreSQL side of [`rm_store::SnapshotStore`]: repository contents:
//! hosts' snapshot lists and statistics.
//!
//! A host's snapshot list and its `snapshot_count` are written under a lock
//! of the host's row (`SELECT … FOR UPDATE`): the SQLite store's single
//! writer made "delete the list, insert the new one, count it" atomic, and
//! under READ COMMITTED two servers doing it at once would otherwise insert
//! into each other's lists or count a list without the other's rows.

use async_trait::async_trait;
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{RepoStatsRecord, SnapshotRecord, StoreError, StoreResult};
use rm_store_sql::encode::{self, ms, ms_opt, u64_opt_to_i64, u64_to_i64};
use rm_store_sql::{RepoStatsRow, SnapshotRow};
use sqlx::postgres::PgConnection;
// Every SQL text built at run time here is made of rm-store-sql's constant
// column lists; values are always bound, never formatted in, so each such
// text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{backend, pg_text};
use crate::shared::{fetch_all_models, finish, insert_error};
use crate::PostgresStore;

/// Largest `repo_stats` page.
const MAX_REPO_STATS_PAGE: u32 = 1000;

/// Locks live host `host`'s row until the caller's transaction ends;
/// [`StoreError::NotFound`] for an unknown or deleted host.
async fn lock_live_host(conn: &mut PgConnection, host: &str) -> StoreResult<()> {
    let found = sqlx::query("SELECT 1 FROM hosts WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
        .bind(host)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("host `{host}`"))),
    }
}

/// A snapshot's columns as bound: text with NULs replaced, lists as JSON.
struct SnapshotValues {
    id: String,
    short_id: String,
    time: i64,
    hostname: String,
    paths: String,
    tags: String,
    size_bytes: Option<i64>,
    file_count: Option<i64>,
}

impl SnapshotValues {
    /// `s` as stored; sizes above `i64::MAX` are [`StoreError::Conflict`].
    fn of(s: &SnapshotRecord) -> StoreResult<SnapshotValues> {
        Ok(SnapshotValues {
            id: pg_text(&s.id).into_owned(),
            short_id: pg_text(&s.short_id).into_owned(),
            time: ms(s.time),
            hostname: pg_text(&s.hostname).into_owned(),
            paths: encode::json_strings(&s.paths),
            tags: encode::json_strings(&s.tags),
            size_bytes: u64_opt_to_i64(s.size_bytes, "snapshot size_bytes")?,
            file_count: u64_opt_to_i64(s.file_count, "snapshot file_count")?,
        })
    }
}

#[async_trait]
impl SnapshotStore for PostgresStore {
    /// [`StoreError::NotFound`] for an unknown or deleted host; a snapshot id
    /// listed twice is a [`StoreError::Conflict`] (nothing is replaced). The
    /// new list is one `INSERT … SELECT FROM UNNEST(…)`.
    async fn replace_snapshots(
        &self,
        host: HostId,
        snapshots: &[SnapshotRecord],
    ) -> StoreResult<()> {
        let host_id = host.to_string();
        let values = snapshots
            .iter()
            .map(SnapshotValues::of)
            .collect::<StoreResult<Vec<_>>>()?;
        let count = u64_to_i64(snapshots.len() as u64, "snapshot count")?;
        let column = |f: fn(&SnapshotValues) -> &str| values.iter().map(f).collect::<Vec<_>>();
        let ids = column(|v| &v.id);
        let short_ids = column(|v| &v.short_id);
        let hostnames = column(|v| &v.hostname);
        let paths = column(|v| &v.paths);
        let tags = column(|v| &v.tags);
        let times: Vec<i64> = values.iter().map(|v| v.time).collect();
        let sizes: Vec<Option<i64>> = values.iter().map(|v| v.size_bytes).collect();
        let files: Vec<Option<i64>> = values.iter().map(|v| v.file_count).collect();

        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            lock_live_host(&mut tx, &host_id).await?;
            sqlx::query("DELETE FROM snapshots WHERE host_id = $1")
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            sqlx::query("UPDATE hosts SET snapshot_count = $1 WHERE id = $2")
                .bind(count)
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            if !values.is_empty() {
                sqlx::query(
                    "INSERT INTO snapshots \
                 (host_id, id, short_id, time, hostname, paths, tags, size_bytes, file_count) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], \
                                          $6::text[], $7::text[], $8::bigint[], $9::bigint[])",
                )
                .bind(&host_id)
                .bind(&ids)
                .bind(&short_ids)
                .bind(&times)
                .bind(&hostnames)
                .bind(&paths)
                .bind(&tags)
                .bind(&sizes)
                .bind(&files)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    insert_error(
                        e,
                        || "a snapshot id is listed twice".to_owned(),
                        &format!("host `{host_id}`"),
                    )
                })?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// [`StoreError::NotFound`] for an unknown or deleted host.
    async fn add_snapshot(&self, host: HostId, snapshot: &SnapshotRecord) -> StoreResult<()> {
        let host_id = host.to_string();
        let v = SnapshotValues::of(snapshot)?;
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            lock_live_host(&mut tx, &host_id).await?;
            sqlx::query(
                "INSERT INTO snapshots \
             (host_id, id, short_id, time, hostname, paths, tags, size_bytes, file_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (host_id, id) DO UPDATE SET short_id = excluded.short_id, \
             time = excluded.time, hostname = excluded.hostname, paths = excluded.paths, \
             tags = excluded.tags, size_bytes = excluded.size_bytes, \
             file_count = excluded.file_count",
            )
            .bind(&host_id)
            .bind(&v.id)
            .bind(&v.short_id)
            .bind(v.time)
            .bind(&v.hostname)
            .bind(&v.paths)
            .bind(&v.tags)
            .bind(v.size_bytes)
            .bind(v.file_count)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            sqlx::query(
                "UPDATE hosts SET snapshot_count = \
             (SELECT COUNT(*) FROM snapshots WHERE host_id = $1) WHERE id = $1",
            )
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// Newest first (`time DESC`, then id).
    async fn snapshots(&self, host: HostId) -> StoreResult<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {} FROM snapshots WHERE host_id = $1 ORDER BY time DESC, id DESC",
            rm_store_sql::SNAPSHOT_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, SnapshotRow>(AssertSqlSafe(sql)).bind(host.to_string()),
        )
        .await
    }

    /// Sets the host's `repo_size_bytes` to `raw_size_bytes` when that is
    /// known (otherwise keeps the previous size). [`StoreError::NotFound`]
    /// for an unknown or deleted host.
    async fn add_repo_stats(&self, host: HostId, stats: &RepoStatsRecord) -> StoreResult<()> {
        let host_id = host.to_string();
        let total = u64_opt_to_i64(stats.total_size_bytes, "total_size_bytes")?;
        let raw = u64_opt_to_i64(stats.raw_size_bytes, "raw_size_bytes")?;
        let files = u64_opt_to_i64(stats.unique_files, "unique_files")?;
        let count = u64_opt_to_i64(stats.snapshot_count, "snapshot_count")?;
        let freed = u64_opt_to_i64(stats.last_prune_freed_bytes, "last_prune_freed_bytes")?;

        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let updated = sqlx::query(
                "UPDATE hosts SET repo_size_bytes = COALESCE($1, repo_size_bytes) \
             WHERE id = $2 AND deleted_at IS NULL",
            )
            .bind(raw)
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
            if updated != 1 {
                return Err(StoreError::NotFound(format!("host `{host_id}`")));
            }
            sqlx::query(
                "INSERT INTO repo_stats (host_id, recorded_at, total_size_bytes, raw_size_bytes, \
             unique_files, snapshot_count, last_check_at, last_check_status, lock_present, \
             last_prune_at, last_prune_freed_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&host_id)
            .bind(ms(stats.recorded_at))
            .bind(total)
            .bind(raw)
            .bind(files)
            .bind(count)
            .bind(ms_opt(stats.last_check_at))
            .bind(stats.last_check_status.as_deref().map(pg_text))
            .bind(stats.lock_present)
            .bind(ms_opt(stats.last_prune_at))
            .bind(freed)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// Newest first (`recorded_at DESC`, then insertion order reversed by
    /// the identity column standing in for SQLite's `rowid`); `limit` is
    /// clamped to 1..=1000.
    async fn repo_stats(&self, host: HostId, limit: u32) -> StoreResult<Vec<RepoStatsRecord>> {
        let sql = format!(
            "SELECT {} FROM repo_stats WHERE host_id = $1 \
             ORDER BY recorded_at DESC, rowid DESC LIMIT $2",
            rm_store_sql::REPO_STATS_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, RepoStatsRow>(AssertSqlSafe(sql))
                .bind(host.to_string())
                .bind(i64::from(limit.clamp(1, MAX_REPO_STATS_PAGE))),
        )
        .await
    }
}
