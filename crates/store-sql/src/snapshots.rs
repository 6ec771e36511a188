//! Rows of hosts' snapshot lists and repository statistics.

use rm_store::{RepoStatsRecord, SnapshotRecord, StoreError};

use crate::{decode, Flag};

/// Columns selected for a [`SnapshotRow`].
pub const SNAPSHOT_COLUMNS: &str =
    "id, short_id, time, hostname, paths, tags, size_bytes, file_count";

/// A `snapshots` row.
#[derive(Debug, sqlx::FromRow)]
pub struct SnapshotRow {
    /// Column `id`.
    pub id: String,
    /// Column `short_id`.
    pub short_id: String,
    /// Column `time`.
    pub time: i64,
    /// Column `hostname`.
    pub hostname: String,
    /// Column `paths`.
    pub paths: String,
    /// Column `tags`.
    pub tags: String,
    /// Column `size_bytes`.
    pub size_bytes: Option<i64>,
    /// Column `file_count`.
    pub file_count: Option<i64>,
}

impl TryFrom<SnapshotRow> for SnapshotRecord {
    type Error = StoreError;

    fn try_from(r: SnapshotRow) -> Result<SnapshotRecord, StoreError> {
        Ok(SnapshotRecord {
            id: r.id,
            short_id: r.short_id,
            time: decode::time("time", r.time)?,
            hostname: r.hostname,
            paths: decode::json("paths", &r.paths)?,
            tags: decode::json("tags", &r.tags)?,
            size_bytes: decode::int_opt("size_bytes", r.size_bytes)?,
            file_count: decode::int_opt("file_count", r.file_count)?,
        })
    }
}

/// Columns selected for a [`RepoStatsRow`].
pub const REPO_STATS_COLUMNS: &str = "recorded_at, total_size_bytes, raw_size_bytes, \
     unique_files, snapshot_count, last_check_at, last_check_status, lock_present, \
     last_prune_at, last_prune_freed_bytes";

/// A `repo_stats` row.
#[derive(Debug, sqlx::FromRow)]
pub struct RepoStatsRow {
    /// Column `recorded_at`.
    pub recorded_at: i64,
    /// Column `total_size_bytes`.
    pub total_size_bytes: Option<i64>,
    /// Column `raw_size_bytes`.
    pub raw_size_bytes: Option<i64>,
    /// Column `unique_files`.
    pub unique_files: Option<i64>,
    /// Column `snapshot_count`.
    pub snapshot_count: Option<i64>,
    /// Column `last_check_at`.
    pub last_check_at: Option<i64>,
    /// Column `last_check_status`.
    pub last_check_status: Option<String>,
    /// Column `lock_present`.
    pub lock_present: Option<Flag>,
    /// Column `last_prune_at`.
    pub last_prune_at: Option<i64>,
    /// Column `last_prune_freed_bytes`.
    pub last_prune_freed_bytes: Option<i64>,
}

impl TryFrom<RepoStatsRow> for RepoStatsRecord {
    type Error = StoreError;

    fn try_from(r: RepoStatsRow) -> Result<RepoStatsRecord, StoreError> {
        Ok(RepoStatsRecord {
            recorded_at: decode::time("recorded_at", r.recorded_at)?,
            total_size_bytes: decode::int_opt("total_size_bytes", r.total_size_bytes)?,
            raw_size_bytes: decode::int_opt("raw_size_bytes", r.raw_size_bytes)?,
            unique_files: decode::int_opt("unique_files", r.unique_files)?,
            snapshot_count: decode::int_opt("snapshot_count", r.snapshot_count)?,
            last_check_at: decode::time_opt("last_check_at", r.last_check_at)?,
            last_check_status: r.last_check_status,
            lock_present: r.lock_present.map(bool::from),
            last_prune_at: decode::time_opt("last_prune_at", r.last_prune_at)?,
            last_prune_freed_bytes: decode::int_opt(
                "last_prune_freed_bytes",
                r.last_prune_freed_bytes,
            )?,
        })
    }
}
