//! `/api/v1/hosts/{id}/token/rotate` and `/token/revoke`: HTTP over the
//! rotation and revocation service in [`crate::agent_tokens`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::TokenId;
use rm_protocol::api::TokenRotationStarted;

use super::hosts::parse_host_id;
use super::ApiErrorBody;
use super::{ApiError, ApiPath, Operator};
use crate::agent_tokens::{self, TokenError};
use crate::audit::{Action, Audit, Client, Target};
use crate::state::AppState;

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        match e {
            TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
            TokenError::Revoked(_) | TokenError::Offline(_) => ApiError::conflict(e.to_string()),
            TokenError::Store(e) => e.into(),
            TokenError::Core(e) => e.into(),
            TokenError::Sealing(_) => ApiError::internal(e),
        }
    }
}

/// Rotate a host's agent token.
///
/// `POST /api/v1/hosts/{id}/token/rotate` → 202: the new token is on its
/// way to the agent; 409 when the host is offline or revoked.
#[utoipa::path(
    post,
    path = "/hosts/{id}/token/rotate",
    tag = "hosts",
    operation_id = "rotate_agent_token",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 202, description = "The new token is on its way to the agent", body = TokenRotationStarted),
        (status = 404, description = "No such host", body = ApiErrorBody),
        (status = 409, description = "The host is offline or revoked", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<TokenRotationStarted>), ApiError> {
    let host = parse_host_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    let entry_for = |token_id: &TokenId| {
        by.entry(
            Action::AgentTokenRotate,
            Some(Target::new("host", host)),
            serde_json::json!({ "token_id": token_id.to_string() }),
        )
    };
    let token_id = agent_tokens::rotate(&state, host, Some(&entry_for)).await?;
    tracing::info!(host_id = %host, by = %operator.user_id, "agent token rotation requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(TokenRotationStarted {
            token_id: token_id.to_string(),
        }),
    ))
}

/// Revoke a host's agent.
///
/// `POST /api/v1/hosts/{id}/token/revoke` → 204: every token of the host's
/// agent stops working and its connection closes with 4001.
#[utoipa::path(
    post,
    path = "/hosts/{id}/token/revoke",
    tag = "hosts",
    operation_id = "revoke_agent_token",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 204, description = "Every token of the agent stopped working; its connection closed"),
        (status = 404, description = "No such host", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let host = parse_host_id(&id)?;
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::AgentTokenRevoke,
        Some(Target::new("host", host)),
        serde_json::json!({}),
    );
    agent_tokens::revoke(&state, host, Some(&entry)).await?;
    tracing::info!(host_id = %host, by = %operator.user_id, "agent token revocation requested");
    Ok(StatusCode::NO_CONTENT)
}
