//! Browsing a snapshot folder by folder (the restore wizard's tree): one
//! `tree.list` call to the host's agent per folder, through the
//! per-session cache.

use std::sync::Arc;
use std::time::Duration;

use rm_core::HostId;
use rm_protocol::{Message, TreeEntry, TreeList};

use crate::rpc::RpcError;
use crate::state::AppState;
use crate::tree_cache::TreeKey;

/// How long the agent may take to list one folder (restic opens the
/// repository each time).
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a folder could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The snapshot id or path is malformed; names which.
    #[error("{0}")]
    Invalid(String),
    /// The host's agent is not connected.
    #[error("host `{0}` is offline; its agent must be connected to browse its snapshots")]
    Offline(HostId),
    /// The call failed (timeout, disconnect, full queue).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The agent answered with an error (in restic's words).
    #[error("{0}")]
    Agent(String),
}

/// The direct children of `path` in `snapshot` of `host`'s repository.
pub async fn list(
    state: &AppState,
    session: String,
    host: HostId,
    snapshot: &str,
    path: &str,
) -> Result<Arc<Vec<TreeEntry>>, BrowseError> {
    rm_protocol::params::snapshot_id(snapshot)
        .map_err(|problem| BrowseError::Invalid(format!("`snapshot_id` {problem}")))?;
    rm_protocol::params::absolute_path(path)
        .map_err(|problem| BrowseError::Invalid(format!("`path` {problem}")))?;
    let key = TreeKey {
        session,
        host,
        snapshot: snapshot.to_owned(),
        path: path.to_owned(),
    };
    state
        .tree_cache()
        .get_or_fetch(key, || async {
            let request = TreeList {
                snapshot_id: snapshot.to_owned(),
                path: path.to_owned(),
            };
            let reply = match state.hub().get(host) {
                Some(conn) => state.rpc().call(host, &conn, request, LIST_TIMEOUT).await?,
                None if crate::cluster::agent_connected(state, host)
                    .await
                    .map_err(|e| BrowseError::Agent(e.to_string()))? =>
                {
                    state
                        .rpc()
                        .call_elsewhere(state, host, request, LIST_TIMEOUT)
                        .await?
                }
                None => return Err(BrowseError::Offline(host)),
            };
            match reply.message {
                Message::TreeListResult(result) => match result.error {
                    Some(error) => Err(BrowseError::Agent(error)),
                    None => Ok(result.entries),
                },
                Message::Error(error) => Err(BrowseError::Agent(error.message)),
                other => Err(BrowseError::Agent(format!(
                    "the agent answered with `{}` instead of `tree.list.result`",
                    other.kind()
                ))),
            }
        })
        .await
}
