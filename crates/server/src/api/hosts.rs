//! Hosts: list, show, delete (which revokes the agent and disconnects it).

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rm_core::HostId;
use rm_protocol::api::{HostView, PatchHost, RepoStatsEntry, RepoStatsResponse};
use rm_protocol::close_code;
use rm_protocol::{RepoStats, SnapshotInfo, TreeEntry};

use crate::browse::{self, BrowseError};
use crate::hosts::HostError;
use crate::rpc::RpcError;
use rm_store::{Host, MAX_HOST_PAGE};

use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::policies::Fleet;
use crate::state::AppState;

/// Hosts per page of `GET /api/v1/hosts` unless `limit` says otherwise.
const DEFAULT_HOST_PAGE: u32 = 500;

/// Query of `GET /api/v1/hosts`: both taken as text so a bad value gets an
/// error in the API's shape naming the parameter.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Hosts per page, 1 to 1000 (default 500).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// The `X-Next-Cursor` of the previous page.
    after: Option<String>,
}

/// List hosts.
///
/// `GET /api/v1/hosts?limit=&after=`: one page of hosts in id (enrolment)
/// order, as a JSON array. When more follow, the `X-Next-Cursor` header
/// holds the `after` of the next page and `Link` its URL (`rel="next"`).
#[utoipa::path(
    get,
    path = "/hosts",
    tag = "hosts",
    operation_id = "list_hosts",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of hosts in id (enrolment) order", body = [HostView],
            headers(
                ("x-next-cursor" = String, description = "The `after` of the next page, when more follow"),
                ("link" = String, description = "`<…>; rel=\"next\"`: the next page's URL, when more follow"),
            )),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_HOST_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_HOST_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`limit` must be a whole number from 1 to {MAX_HOST_PAGE}, not `{raw}`"
                ))
            })?,
    };
    let after = query
        .after
        .as_deref()
        .map(|raw| {
            raw.parse::<HostId>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`after` must be a cursor from `X-Next-Cursor` (a host id), not `{raw}`"
                ))
            })
        })
        .transpose()?;
    // A scoped user's pages hold their hosts only (filtered in SQL).
    let everything = rm_core::Selector::default();
    let scope = operator.scope.as_ref().unwrap_or(&everything);
    let hosts = state
        .store()
        .list_hosts_page_matching(after, limit, scope)
        .await?;
    // A full page may be the last one: look one host further to know.
    let next = match hosts.last() {
        Some(last) if hosts.len() == limit as usize => {
            let more = state
                .store()
                .list_hosts_page_matching(Some(last.id), 1, scope)
                .await?;
            (!more.is_empty()).then_some(last.id)
        }
        _ => None,
    };
    let fleet = Fleet::load(&state).await?;
    let body = Json(
        hosts
            .into_iter()
            .map(|h| fleet.host_view(h))
            .collect::<Vec<HostView>>(),
    );
    let Some(next) = next else {
        return Ok(body.into_response());
    };
    let link = format!("</api/v1/hosts?limit={limit}&after={next}>; rel=\"next\"");
    let mut response = body.into_response();
    for (name, value) in [("x-next-cursor", next.to_string()), ("link", link)] {
        // Ids and digits only: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}

/// Show a host.
///
/// `GET /api/v1/hosts/{id}`.
#[utoipa::path(
    get,
    path = "/hosts/{id}",
    tag = "hosts",
    operation_id = "show_host",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 200, description = "The host", body = HostView),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<HostView>, ApiError> {
    let id = parse_host_id(&id)?;
    let host = state
        .store()
        .host(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host `{id}` not found")))?;
    Ok(Json(Fleet::load(&state).await?.host_view(host)))
}

/// Change a host's name, labels or thresholds.
///
/// `PATCH /api/v1/hosts/{id}`: the host's own name, labels, freshness or
/// offline threshold (`crate::hosts::patch`). New labels may change which
/// policy applies: it is applied (and the result pushed) before the answer.
#[utoipa::path(
    patch,
    path = "/hosts/{id}",
    tag = "hosts",
    operation_id = "patch_host",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    request_body = PatchHost,
    responses(
        (status = 200, description = "The changed host", body = HostView),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PatchHost>,
) -> Result<Json<HostView>, ApiError> {
    let id = parse_host_id(&id)?;
    // A scoped user may relabel their host, but not give it away: it
    // would vanish from their view (and land in someone else's).
    if let Some(labels) = &req.labels {
        let labels = rm_core::Labels::from_stored(labels.clone());
        if !crate::access::sees(&operator, &labels) {
            return Err(ApiError::bad_request(
                "`labels` would move the host outside your scope",
            ));
        }
    }
    let by = Audit::by(&state, &operator, &client).await;
    let host = crate::hosts::patch(&state, id, &req, Some(&by)).await?;
    Ok(Json(Fleet::load(&state).await?.host_view(host)))
}

/// Delete a host.
///
/// `DELETE /api/v1/hosts/{id}`: revokes the agent's token and closes its
/// connection; the agent's reconnects then get 401.
#[utoipa::path(
    delete,
    path = "/hosts/{id}",
    tag = "hosts",
    operation_id = "delete_host",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 204, description = "Deleted; its agent's token is revoked"),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_host_id(&id)?;
    // Read first: a deleted host is hidden, and the log should name it.
    let host = state.store().host(id).await?;
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::HostDelete,
        Some(Target::new("host", id)),
        serde_json::json!({
            "name": host.as_ref().map(|h| &h.name),
            "hostname": host.as_ref().map(|h| &h.hostname),
        }),
    );
    if !state
        .store()
        .delete_host(id, Utc::now(), Some(&entry))
        .await?
    {
        return Err(ApiError::not_found(format!("host `{id}` not found")));
    }
    crate::cluster::disconnect(&state, id, close_code::REVOKED, "host deleted");
    crate::alerts::host_changed(&state, id);
    tracing::info!(host_id = %id, by = %operator.user_id, "host deleted; agent token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Parses a host id from a path segment.
pub(crate) fn parse_host_id(raw: &str) -> Result<HostId, ApiError> {
    super::parse_id(raw, "a host")
}

/// The host, or 404.
pub(crate) async fn existing(state: &AppState, raw: &str) -> Result<Host, ApiError> {
    let id = parse_host_id(raw)?;
    state
        .store()
        .host(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host `{id}` not found")))
}

/// List a host's snapshots.
///
/// `GET /api/v1/hosts/{id}/snapshots`: the stored list, newest first, as
/// last reported by the agent.
#[utoipa::path(
    get,
    path = "/hosts/{id}/snapshots",
    tag = "hosts",
    operation_id = "list_snapshots",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 200, description = "The stored list, newest first", body = [SnapshotInfo]),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn snapshots(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<SnapshotInfo>>, ApiError> {
    let host = existing(&state, &id).await?;
    let snapshots = state.store().snapshots(host.id).await?;
    Ok(Json(
        snapshots
            .into_iter()
            .map(crate::jobs::snapshot_info)
            .collect(),
    ))
}

/// Rows of history returned by `repo-stats`.
const STATS_HISTORY: u32 = 365;

/// Show a host's repository statistics.
///
/// `GET /api/v1/hosts/{id}/repo-stats`: the latest statistics and their
/// history, newest first.
#[utoipa::path(
    get,
    path = "/hosts/{id}/repo-stats",
    tag = "hosts",
    operation_id = "repo_stats",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 200, description = "The latest statistics and their history", body = RepoStatsResponse),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn repo_stats(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RepoStatsResponse>, ApiError> {
    let host = existing(&state, &id).await?;
    let history: Vec<RepoStatsEntry> = state
        .store()
        .repo_stats(host.id, STATS_HISTORY)
        .await?
        .into_iter()
        .map(|r| RepoStatsEntry {
            recorded_at: r.recorded_at,
            stats: RepoStats {
                total_size_bytes: r.total_size_bytes,
                raw_size_bytes: r.raw_size_bytes,
                unique_files: r.unique_files,
                snapshot_count: r.snapshot_count,
                last_check_at: r.last_check_at,
                last_check_status: r.last_check_status,
                lock_present: r.lock_present,
                last_prune_at: r.last_prune_at,
                last_prune_freed_bytes: r.last_prune_freed_bytes,
            },
        })
        .collect();
    Ok(Json(RepoStatsResponse {
        latest: history.first().cloned(),
        history,
    }))
}

/// Query of the tree endpoint.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TreeQuery {
    /// The folder, absolute (default `/`).
    path: Option<String>,
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> ApiError {
        match e {
            HostError::Invalid(message) => ApiError::bad_request(message),
            HostError::NotFound(_) => ApiError::not_found(e.to_string()),
            HostError::Store(e) => e.into(),
            HostError::Policy(e) => e.into(),
        }
    }
}

impl From<BrowseError> for ApiError {
    fn from(e: BrowseError) -> ApiError {
        match e {
            BrowseError::Invalid(message) => ApiError::bad_request(message),
            BrowseError::Offline(_) => ApiError::conflict(e.to_string()),
            BrowseError::Rpc(RpcError::TimedOut(_)) => ApiError::gateway_timeout(e.to_string()),
            BrowseError::Rpc(_) | BrowseError::Agent(_) => ApiError::bad_gateway(e.to_string()),
        }
    }
}

/// Browse a folder of a snapshot.
///
/// `GET /api/v1/hosts/{id}/snapshots/{snapshot_id}/tree?path=/x`: the
/// direct children of a folder, asked of the host's agent (cached per
/// session for 30 minutes).
#[utoipa::path(
    get,
    path = "/hosts/{id}/snapshots/{snapshot_id}/tree",
    tag = "hosts",
    operation_id = "snapshot_tree",
    params(("id" = String, Path, description = "The host's id (ULID)"), ("snapshot_id" = String, Path, description = "The snapshot's id (full or short)"), TreeQuery),
    responses(
        (status = 200, description = "The folder's direct children", body = [TreeEntry]),
        (status = 404, description = "No such host", body = ApiErrorBody),
        (status = 409, description = "The host is offline", body = ApiErrorBody),
        (status = 502, description = "The agent answered with an error", body = ApiErrorBody),
        (status = 504, description = "The agent did not answer in time", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn tree(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath((id, snapshot)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<TreeQuery>,
) -> Result<Json<Vec<TreeEntry>>, ApiError> {
    let host = existing(&state, &id).await?;
    let path = query.path.unwrap_or_else(|| String::from("/"));
    let listing = browse::list(
        &state,
        operator.credential.to_string(),
        host.id,
        &snapshot,
        &path,
    )
    .await?;
    Ok(Json(listing.as_ref().clone()))
}
