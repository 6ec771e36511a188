//! The restore wizard: pick a host and one of its snapshots, browse the
//! snapshot folder by folder (each folder is one `tree.list` to the host's
//! agent, cached per session), tick files and folders, choose where they
//! go — the original place, another folder, or another host — review, and
//! run. The steps after the snapshot run in the page's script against the
//! JSON API; this handler renders the choices.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use rm_core::HostId;
use serde::Deserialize;

use super::format;
use super::session::{render, store_error, WebUser};
use crate::state::AppState;

/// Which host and snapshot were chosen so far.
#[derive(Deserialize)]
pub(crate) struct Choice {
    host: Option<String>,
    snapshot: Option<String>,
}

/// A host to pick from.
pub(crate) struct HostOption {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) online: bool,
    pub(crate) selected: bool,
}

/// A snapshot to pick from.
pub(crate) struct SnapshotOption {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

#[derive(Template)]
#[template(path = "restore.html")]
struct RestorePage {
    user: super::session::Who,
    csrf: String,
    hosts: Vec<HostOption>,
    snapshots: Vec<SnapshotOption>,
    host: String,
    host_name: String,
    snapshot: String,
    snapshot_paths: String,
}

/// `GET /restore?host=&snapshot=`.
pub(crate) async fn wizard(
    State(state): State<AppState>,
    user: WebUser,
    Query(choice): Query<Choice>,
) -> Response {
    // A scoped user picks among their hosts only.
    let hosts = match &user.operator.scope {
        None => state.store().list_hosts().await,
        Some(scope) => state.store().hosts_matching(scope).await,
    };
    let hosts = match hosts {
        Ok(hosts) => hosts,
        Err(e) => return store_error(e),
    };
    let chosen: Option<HostId> = choice
        .host
        .as_deref()
        .and_then(|h| h.parse().ok())
        .filter(|id| hosts.iter().any(|h| h.id == *id));
    let snapshots = match chosen {
        Some(host) => match state.store().snapshots(host).await {
            Ok(snapshots) => snapshots,
            Err(e) => return store_error(e),
        },
        None => Vec::new(),
    };
    let snapshot = choice
        .snapshot
        .as_deref()
        .filter(|s| snapshots.iter().any(|snap| snap.id == *s))
        .unwrap_or_default()
        .to_owned();
    let snapshot_paths = snapshots
        .iter()
        .find(|s| s.id == snapshot)
        .map(|s| s.paths.join(", "))
        .unwrap_or_default();
    render(&RestorePage {
        user: user.username,
        csrf: user.csrf,
        host_name: chosen
            .and_then(|id| hosts.iter().find(|h| h.id == id))
            .map(|h| h.name.clone())
            .unwrap_or_default(),
        hosts: hosts
            .iter()
            .map(|h| HostOption {
                id: h.id.to_string(),
                name: h.name.clone(),
                online: h.online,
                selected: Some(h.id) == chosen,
            })
            .collect(),
        snapshots: snapshots
            .iter()
            .map(|s| SnapshotOption {
                id: s.id.clone(),
                label: format!(
                    "{} · {} · {}",
                    format::time(s.time),
                    s.short_id,
                    s.paths.join(", ")
                ),
                selected: s.id == snapshot,
            })
            .collect(),
        host: chosen.map(|h| h.to_string()).unwrap_or_default(),
        snapshot,
        snapshot_paths,
    })
}
