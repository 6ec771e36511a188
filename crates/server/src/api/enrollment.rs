//! `/api/v1/enrollment-tokens` and `/api/v1/agents/enroll`: HTTP over the
//! enrolment service in [`crate::enrollment`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rm_protocol::api::{
    CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenCreated,
};
use serde::Serialize;

use super::ApiErrorBody;
use super::{ApiError, ApiJson, Operator};
use crate::audit::{Audit, Client};
use crate::enrollment::{self, EnrollmentError};
use crate::state::AppState;

impl From<EnrollmentError> for ApiError {
    fn from(e: EnrollmentError) -> ApiError {
        match e {
            EnrollmentError::Invalid(message) => ApiError::bad_request(message),
            EnrollmentError::TokenUnusable => ApiError::unauthorized(e.to_string()),
            EnrollmentError::Store(e) => e.into(),
            EnrollmentError::Core(e) => e.into(),
        }
    }
}

/// Create an enrolment token.
///
/// `POST /api/v1/enrollment-tokens`.
#[utoipa::path(
    post,
    path = "/enrollment-tokens",
    tag = "enrolment",
    operation_id = "create_enrollment_token",
    request_body = CreateEnrollmentToken,
    responses(
        (status = 201, description = "The token (its secret shown only here) and the line to paste on the new host", body = EnrollmentTokenCreated),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> Result<(StatusCode, Json<EnrollmentTokenCreated>), ApiError> {
    let by = Audit::by(&state, &operator, &client).await;
    let created = enrollment::issue_token(state.store(), state.config(), &req, Some(&by)).await?;
    tracing::info!(token_id = %created.id, by = %operator.user_id, "enrolment token created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// A pending token as listed (never the secret).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PendingToken {
    /// The token's id (not secret).
    id: String,
    /// The name the enrolled host will get.
    name: Option<String>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// When it stops working.
    expires_at: DateTime<Utc>,
}

/// List pending enrolment tokens.
///
/// `GET /api/v1/enrollment-tokens`: tokens not used and not expired.
#[utoipa::path(
    get,
    path = "/enrollment-tokens",
    tag = "enrolment",
    operation_id = "list_enrollment_tokens",
    responses((status = 200, description = "Tokens neither used nor expired, without secrets", body = [PendingToken])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list_pending(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<PendingToken>>, ApiError> {
    let tokens = state.store().pending_enrollment_tokens(Utc::now()).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| PendingToken {
                id: t.id.to_string(),
                name: t.name,
                created_at: t.created_at,
                expires_at: t.expires_at,
            })
            .collect(),
    ))
}

/// Enrol a host (agent).
///
/// `POST /api/v1/agents/enroll`: the token is the authentication, so it
/// is the audited actor (by its public id and name, never the secret).
#[utoipa::path(
    post,
    path = "/agents/enroll",
    tag = "enrolment",
    operation_id = "enroll_agent",
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "The new host and its agent token (shown only here)", body = EnrollResponse),
        (status = 401, description = "The enrolment token is unknown, used or expired", body = ApiErrorBody),
    ),
)]
pub(crate) async fn enroll(
    State(state): State<AppState>,
    client: Client,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let enrolled = enrollment::enroll(state.store(), &req, Some(&client)).await?;
    // The new host's labels may select policies: it gets their repository
    // and schedules before its agent first connects.
    if let Ok(host) = enrolled.host_id.parse() {
        if let Err(e) = crate::policies::reconcile(&state, Some(&[host]), None, None).await {
            tracing::error!(%host, "could not apply policies to the new host: {e}");
        }
        crate::alerts::host_changed(&state, host);
    }
    Ok((StatusCode::CREATED, Json(enrolled)))
}
