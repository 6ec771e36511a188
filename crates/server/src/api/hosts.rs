//! Hosts: list, show, delete (which revokes the agent and disconnects it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use rm_core::HostId;
use rm_protocol::api::HostView;
use rm_protocol::close_code;
use rm_store::Host;

use super::{ApiError, Operator};
use crate::state::AppState;

/// `GET /api/v1/hosts`.
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<HostView>>, ApiError> {
    let hosts = state.store().list_hosts().await?;
    Ok(Json(hosts.into_iter().map(view).collect()))
}

/// `GET /api/v1/hosts/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    let id = parse_host_id(&id)?;
    let host = state
        .store()
        .host(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host `{id}` not found")))?;
    Ok(Json(view(host)))
}

/// `DELETE /api/v1/hosts/{id}`: revokes the agent's token and closes its
/// connection; the agent's reconnects then get 401.
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_host_id(&id)?;
    if !state.store().delete_host(id, Utc::now()).await? {
        return Err(ApiError::not_found(format!("host `{id}` not found")));
    }
    state
        .hub()
        .disconnect(id, close_code::REVOKED, "host deleted");
    tracing::info!(host_id = %id, by = %operator.user_id, "host deleted; agent token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Parses a host id from a path segment.
pub(crate) fn parse_host_id(raw: &str) -> Result<HostId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{raw}` is not a host id (expected a 26-character ULID)"
        ))
    })
}

fn view(host: Host) -> HostView {
    HostView {
        id: host.id.to_string(),
        name: host.name,
        hostname: host.hostname,
        online: host.online,
        enrolled_at: host.enrolled_at,
        last_seen_at: host.last_seen_at,
        agent_version: host.agent_version,
        restic_version: host.restic_version,
        restic_error: host.restic_error,
        protocol_version: host.protocol_version,
        os: host.os,
        arch: host.arch,
        // Schedules, jobs and repository statistics arrive with their
        // features; until then a host has schedule version 0 and no history.
        schedule_version: 0,
        schedule_applied_version: None,
        last_backup_at: None,
        last_backup_status: None,
        repo_size_bytes: None,
    }
}
