//! The store's part for repository contents: hosts' snapshot lists and
//! statistics.

use async_trait::async_trait;
use rm_core::HostId;

use crate::{RepoStatsRecord, SnapshotRecord, StoreResult};

/// Repository contents: hosts' snapshot lists and statistics. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Replaces a host's stored snapshot list in one transaction, and sets
    /// the host's `snapshot_count` to its length.
    async fn replace_snapshots(
        &self,
        host: HostId,
        snapshots: &[SnapshotRecord],
    ) -> StoreResult<()>;

    /// Adds one snapshot to a host's stored list (replacing the entry with
    /// the same id, so a repeat changes nothing) and sets the host's
    /// `snapshot_count` to the list's new length, in one transaction.
    async fn add_snapshot(&self, host: HostId, snapshot: &SnapshotRecord) -> StoreResult<()>;

    /// A host's snapshots, newest first.
    async fn snapshots(&self, host: HostId) -> StoreResult<Vec<SnapshotRecord>>;

    /// Adds a statistics history row and makes it the host's latest
    /// (updating the host's repository size).
    async fn add_repo_stats(&self, host: HostId, stats: &RepoStatsRecord) -> StoreResult<()>;

    /// A host's statistics, newest first, at most `limit` rows.
    async fn repo_stats(&self, host: HostId, limit: u32) -> StoreResult<Vec<RepoStatsRecord>>;
}
