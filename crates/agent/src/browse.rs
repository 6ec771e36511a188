//! Answering `tree.list`: the direct children of one folder of a snapshot,
//! for the restore wizard. Each request runs in its own task (restic takes
//! a moment) and answers through the outbox with the request's id; any
//! failure travels inside the result's `error`, in restic's words.

use std::time::Duration;

use rm_core::{RequestId, SnapshotId};
use rm_protocol::{EntryType, Frame, RepositoryConfig, TreeEntry, TreeListResult};
use rm_restic::{Limits, Node, NodeType, Repository};

use crate::jobs::JobRunner;

/// How long one listing may take on the agent (the server waits a little
/// longer).
const LIST_LIMIT: Duration = Duration::from_secs(50);

/// Starts answering a `tree.list` (envelope id `id`) for `path` in
/// `snapshot_id` (both parsed by [`crate::inbound`]) from `repository`, or
/// with the reason the host's repository settings were refused.
pub(crate) fn spawn(
    id: RequestId,
    snapshot_id: SnapshotId,
    path: String,
    repository: Result<Option<RepositoryConfig>, String>,
    runner: JobRunner,
) {
    tokio::spawn(async move {
        let result = match list(&snapshot_id, &path, repository, &runner).await {
            Ok(entries) => TreeListResult {
                entries,
                error: None,
            },
            Err(error) => {
                tracing::info!(snapshot = %snapshot_id, %path, "tree.list failed: {error}");
                TreeListResult {
                    entries: Vec::new(),
                    error: Some(error),
                }
            }
        };
        let frame = Frame {
            id: Some(id.to_string()),
            message: result.into(),
        };
        if runner.outbox().send(frame).await.is_err() {
            tracing::warn!("the agent's outbox is closed; a tree.list answer was lost");
        }
    });
}

async fn list(
    snapshot_id: &SnapshotId,
    path: &str,
    repository: Result<Option<RepositoryConfig>, String>,
    runner: &JobRunner,
) -> Result<Vec<TreeEntry>, String> {
    let repository = repository?.ok_or("this agent has no repository settings yet")?;
    crate::jobs::check_repository(&repository)?;
    // The version detected once (see `JobRunner::restic`), not per folder.
    let restic = runner
        .restic()
        .await
        .map_err(|e| format!("restic is not usable on this host: {e}"))?;
    let repo = Repository {
        url: repository.url,
        password: repository.password,
        env: repository.env,
    };
    let nodes = restic
        .ls_dir(
            &repo,
            snapshot_id.as_str(),
            path,
            // A folder listing is no job: it must not hold the lock
            // another host's prune in a shared repository needs.
            &Limits::new(LIST_LIMIT).without_lock(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(nodes.into_iter().map(entry).collect())
}

/// A restic node as a tree entry: permission bits only in `mode`.
fn entry(node: Node) -> TreeEntry {
    TreeEntry {
        entry_type: match node.node_type {
            NodeType::File => EntryType::File,
            NodeType::Dir => EntryType::Dir,
            NodeType::Symlink => EntryType::Symlink,
            _ => EntryType::Other,
        },
        name: node.name,
        path: node.path,
        size: node.size,
        mtime: node.mtime,
        mode: u32::try_from(node.mode & 0o7777).ok(),
    }
}
