//! `/api/v1/policies`: fleet policies over the service in
//! [`crate::policies`] (DESIGN §6).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::PolicyId;
use rm_protocol::api::{PolicyHostView, PolicyRequest, PolicyView};

use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, Operator};
use crate::audit::{Audit, Client};
use crate::policies::{self, PolicyError};
use crate::state::AppState;

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> ApiError {
        match e {
            PolicyError::Invalid(message) => ApiError::bad_request(message),
            PolicyError::NotFound(_) => ApiError::not_found(e.to_string()),
            PolicyError::Conflict(message) => ApiError::conflict(message),
            PolicyError::Sealing(_) => ApiError::internal(e),
            PolicyError::Store(e) => e.into(),
        }
    }
}

fn parse_policy_id(raw: &str) -> Result<PolicyId, ApiError> {
    super::parse_id(raw, "a policy")
}

/// List policies.
///
/// `GET /api/v1/policies`: every policy with its coverage, oldest first.
#[utoipa::path(
    get,
    path = "/policies",
    tag = "policies",
    operation_id = "list_policies",
    responses((status = 200, description = "Every policy with its coverage, oldest first", body = [PolicyView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<PolicyView>>, ApiError> {
    Ok(Json(policies::list(&state).await?))
}

/// Create a policy.
///
/// `POST /api/v1/policies` → 201 with the policy, applied to every host it
/// matches.
#[utoipa::path(
    post,
    path = "/policies",
    tag = "policies",
    operation_id = "create_policy",
    request_body = PolicyRequest,
    responses(
        (status = 201, description = "The policy, applied to every host it matches", body = PolicyView),
        (status = 409, description = "The name is taken, or a repository conflicts", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<PolicyRequest>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    let by = Audit::by(&state, &operator, &client).await;
    let view = policies::create(&state, &req, Some(&by)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Show a policy.
///
/// `GET /api/v1/policies/{id}`.
#[utoipa::path(
    get,
    path = "/policies/{id}",
    tag = "policies",
    operation_id = "show_policy",
    params(("id" = String, Path, description = "The policy's id (ULID)")),
    responses(
        (status = 200, description = "The policy", body = PolicyView),
        (status = 404, description = "No such policy", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(policies::show(&state, parse_policy_id(&id)?).await?))
}

/// Replace a policy.
///
/// `PUT /api/v1/policies/{id}`: replaces the policy; every host it (newly)
/// covers or no longer covers is changed once.
#[utoipa::path(
    put,
    path = "/policies/{id}",
    tag = "policies",
    operation_id = "update_policy",
    params(("id" = String, Path, description = "The policy's id (ULID)")),
    request_body = PolicyRequest,
    responses(
        (status = 200, description = "The changed policy", body = PolicyView),
        (status = 404, description = "No such policy", body = ApiErrorBody),
        (status = 409, description = "The name is taken, or a repository conflicts", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PolicyRequest>,
) -> Result<Json<PolicyView>, ApiError> {
    let id = parse_policy_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    Ok(Json(policies::update(&state, id, &req, Some(&by)).await?))
}

/// Delete a policy.
///
/// `DELETE /api/v1/policies/{id}` → 204: what it gave its hosts is taken
/// back (their own settings stay).
#[utoipa::path(
    delete,
    path = "/policies/{id}",
    tag = "policies",
    operation_id = "delete_policy",
    params(("id" = String, Path, description = "The policy's id (ULID)")),
    responses(
        (status = 204, description = "Deleted; what it gave its hosts is taken back"),
        (status = 404, description = "No such policy", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_policy_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    policies::delete(&state, id, Some(&by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the hosts a policy applies to.
///
/// `GET /api/v1/policies/{id}/hosts`: the hosts it applies to, each with
/// `in_sync`.
#[utoipa::path(
    get,
    path = "/policies/{id}/hosts",
    tag = "policies",
    operation_id = "policy_hosts",
    params(("id" = String, Path, description = "The policy's id (ULID)")),
    responses(
        (status = 200, description = "The hosts, each with `in_sync`", body = [PolicyHostView]),
        (status = 404, description = "No such policy", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn hosts(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<PolicyHostView>>, ApiError> {
    let mut hosts = policies::hosts(&state, parse_policy_id(&id)?).await?;
    if let Some(scope) = &operator.scope {
        let mine: std::collections::BTreeSet<String> = state
            .store()
            .hosts_matching(scope)
            .await?
            .into_iter()
            .map(|h| h.id.to_string())
            .collect();
        hosts.retain(|h| mine.contains(&h.host_id));
    }
    Ok(Json(hosts))
}
