//! `/api/v1/policies`: fleet policies over the service in
//! [`crate::policies`] (DESIGN §6).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::PolicyId;
use rm_protocol::api::{PolicyHostView, PolicyRequest, PolicyView};

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

/// `GET /api/v1/policies`: every policy with its coverage, oldest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<PolicyView>>, ApiError> {
    Ok(Json(policies::list(&state).await?))
}

/// `POST /api/v1/policies` → 201 with the policy, applied to every host it
/// matches.
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

/// `GET /api/v1/policies/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(policies::show(&state, parse_policy_id(&id)?).await?))
}

/// `PUT /api/v1/policies/{id}`: replaces the policy; every host it (newly)
/// covers or no longer covers is changed once.
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

/// `DELETE /api/v1/policies/{id}` → 204: what it gave its hosts is taken
/// back (their own settings stay).
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

/// `GET /api/v1/policies/{id}/hosts`: the hosts it applies to, each with
/// `in_sync`.
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
