//! The SQLite side of [`rm_store::SnapshotStore`]: repository contents:
//! hosts' snapshot lists and statistics.

use async_trait::async_trait;
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{RepoStatsRecord, SnapshotRecord, StoreError, StoreResult};
use rm_store_sql::encode;
use rm_store_sql::encode::{ms, ms_opt, u64_opt_to_i64, u64_to_i64};
use rm_store_sql::{RepoStatsRow, SnapshotRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::backend;
use crate::{fetch_all_models, insert_error, require_live_host, SqliteStore};

/// Largest `repo_stats` page.
const MAX_REPO_STATS_PAGE: u32 = 1000;

#[async_trait]
impl SnapshotStore for SqliteStore {
    /// [`StoreError::NotFound`] for an unknown or deleted host; a snapshot id
    /// listed twice is a [`StoreError::Conflict`] (nothing is replaced).
    async fn replace_snapshots(
        &self,
        host: HostId,
        snapshots: &[SnapshotRecord],
    ) -> StoreResult<()> {
        let host_id = host.to_string();
        let sizes = snapshots
            .iter()
            .map(|s| {
                Ok((
                    u64_opt_to_i64(s.size_bytes, "snapshot size_bytes")?,
                    u64_opt_to_i64(s.file_count, "snapshot file_count")?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        sqlx::query("DELETE FROM snapshots WHERE host_id = ?")
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE hosts SET snapshot_count = ? WHERE id = ?")
            .bind(u64_to_i64(snapshots.len() as u64, "snapshot count")?)
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        for (snapshot, (size_bytes, file_count)) in snapshots.iter().zip(sizes) {
            sqlx::query(
                "INSERT INTO snapshots \
                 (host_id, id, short_id, time, hostname, paths, tags, size_bytes, file_count) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&host_id)
            .bind(&snapshot.id)
            .bind(&snapshot.short_id)
            .bind(ms(snapshot.time))
            .bind(&snapshot.hostname)
            .bind(encode::json_strings(&snapshot.paths))
            .bind(encode::json_strings(&snapshot.tags))
            .bind(size_bytes)
            .bind(file_count)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("snapshot `{}` is listed twice", snapshot.id),
                    &format!("host `{host_id}`"),
                )
            })?;
        }
        tx.commit().await.map_err(backend)
    }

    /// [`StoreError::NotFound`] for an unknown or deleted host.
    async fn add_snapshot(&self, host: HostId, snapshot: &SnapshotRecord) -> StoreResult<()> {
        let host_id = host.to_string();
        let size_bytes = u64_opt_to_i64(snapshot.size_bytes, "snapshot size_bytes")?;
        let file_count = u64_opt_to_i64(snapshot.file_count, "snapshot file_count")?;
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        sqlx::query(
            "INSERT INTO snapshots \
             (host_id, id, short_id, time, hostname, paths, tags, size_bytes, file_count) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (host_id, id) DO UPDATE SET short_id = excluded.short_id, \
             time = excluded.time, hostname = excluded.hostname, paths = excluded.paths, \
             tags = excluded.tags, size_bytes = excluded.size_bytes, \
             file_count = excluded.file_count",
        )
        .bind(&host_id)
        .bind(&snapshot.id)
        .bind(&snapshot.short_id)
        .bind(ms(snapshot.time))
        .bind(&snapshot.hostname)
        .bind(encode::json_strings(&snapshot.paths))
        .bind(encode::json_strings(&snapshot.tags))
        .bind(size_bytes)
        .bind(file_count)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "UPDATE hosts SET snapshot_count = \
             (SELECT COUNT(*) FROM snapshots WHERE host_id = ?) WHERE id = ?",
        )
        .bind(&host_id)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Newest first (`time DESC`, then id).
    async fn snapshots(&self, host: HostId) -> StoreResult<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {} FROM snapshots WHERE host_id = ? ORDER BY time DESC, id DESC",
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

        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE hosts SET repo_size_bytes = COALESCE(?, repo_size_bytes) \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(raw)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if updated != 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("host `{host_id}`")));
        }
        sqlx::query(
            "INSERT INTO repo_stats (host_id, recorded_at, total_size_bytes, raw_size_bytes, \
             unique_files, snapshot_count, last_check_at, last_check_status, lock_present, \
             last_prune_at, last_prune_freed_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&host_id)
        .bind(ms(stats.recorded_at))
        .bind(total)
        .bind(raw)
        .bind(files)
        .bind(count)
        .bind(ms_opt(stats.last_check_at))
        .bind(&stats.last_check_status)
        .bind(stats.lock_present)
        .bind(ms_opt(stats.last_prune_at))
        .bind(freed)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Newest first (`recorded_at DESC`, then insertion order reversed);
    /// `limit` is clamped to 1..=1000.
    async fn repo_stats(&self, host: HostId, limit: u32) -> StoreResult<Vec<RepoStatsRecord>> {
        let sql = format!(
            "SELECT {} FROM repo_stats WHERE host_id = ? \
             ORDER BY recorded_at DESC, rowid DESC LIMIT ?",
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
