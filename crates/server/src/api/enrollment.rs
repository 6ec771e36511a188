//! `/api/v1/enrollment-tokens` and `/api/v1/agents/enroll`: HTTP over the
//! enrolment service in [`crate::enrollment`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rm_core::token::{PresentedToken, TokenKind};
use rm_protocol::api::{
    CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenCreated,
};
use rm_store::{AuditActor, AuditActorKind};
use serde::Serialize;

use super::{ApiError, ApiJson, Operator};
use crate::audit::{self, Action, Client, Target};
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

/// `POST /api/v1/enrollment-tokens`.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> Result<(StatusCode, Json<EnrollmentTokenCreated>), ApiError> {
    let created = enrollment::issue_token(
        state.store(),
        state.config(),
        req.name.as_deref(),
        req.ttl_seconds,
    )
    .await?;
    tracing::info!(token_id = %created.id, by = %operator.user_id, "enrolment token created");
    audit::record(
        &state,
        &operator,
        &client,
        Action::EnrollmentTokenCreate,
        Some(Target::new("enrollment_token", &created.id)),
        serde_json::json!({"name": req.name, "expires_at": created.expires_at}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A pending token as listed (never the secret).
#[derive(Serialize)]
pub(crate) struct PendingToken {
    id: String,
    name: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// `GET /api/v1/enrollment-tokens`: tokens not used and not expired.
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

/// `POST /api/v1/agents/enroll`: the token is the authentication, so it
/// is the audited actor (by its public id and name, never the secret).
pub(crate) async fn enroll(
    State(state): State<AppState>,
    client: Client,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let enrolled = enrollment::enroll(state.store(), &req).await?;
    audit_enrolment(&state, &client, &req.token, &enrolled.host_id).await;
    Ok((StatusCode::CREATED, Json(enrolled)))
}

/// Records `host.enroll` by the enrolment token `token` (just spent, so it
/// parses; only its public id and name are written).
async fn audit_enrolment(state: &AppState, client: &Client, token: &str, host_id: &str) {
    let Ok(presented) = PresentedToken::parse_as(token.trim(), TokenKind::Enrollment) else {
        return;
    };
    let store = state.store();
    let token_name = store
        .enrollment_token(presented.id)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.name);
    let host = match host_id.parse() {
        Ok(id) => store.host(id).await.ok().flatten(),
        Err(_) => None,
    };
    let actor = AuditActor {
        kind: AuditActorKind::EnrollmentToken,
        user_id: None,
        username: None,
        token_id: Some(presented.id),
        token_name,
    };
    audit::record_as(
        store,
        actor,
        client,
        Action::HostEnroll,
        Some(Target::new("host", host_id)),
        serde_json::json!({
            "name": host.as_ref().map(|h| &h.name),
            "hostname": host.as_ref().map(|h| &h.hostname),
        }),
    )
    .await;
}
