//! Operator authentication: password login into a session token, and the
//! [`Operator`] extractor that accepts a session or API token as
//! `Authorization: Bearer`.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use rm_core::password::{verify_against_dummy, verify_password};
use rm_core::token::{IssuedToken, PresentedToken, TokenKind};
use rm_core::UserId;
use rm_protocol::api::{LoginRequest, LoginResponse};
use rm_store::Session;

use super::{ApiError, ApiJson};
use crate::agent_ws::bearer_token;
use crate::state::AppState;

/// The same words for every failed bearer check, so nothing leaks.
const BAD_TOKEN: &str = "missing, invalid or expired bearer token";

/// An authenticated operator.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    /// Who.
    pub user_id: UserId,
    /// The session behind this request, when it came from a login.
    pub session: Option<rm_core::TokenId>,
    /// The session or API token behind this request: what per-session
    /// caches are keyed by.
    pub credential: rm_core::TokenId,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer_token(&parts.headers).ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
        let presented: PresentedToken = token
            .parse()
            .map_err(|_| ApiError::unauthorized(BAD_TOKEN))?;
        let now = Utc::now();
        let operator = match presented.kind {
            TokenKind::Session => state
                .store()
                .session(presented.id)
                .await?
                .filter(|s| presented.verify(&s.token_hash) && s.expires_at > now)
                .map(|s| Operator {
                    user_id: s.user_id,
                    session: Some(s.id),
                    credential: s.id,
                }),
            TokenKind::Api => state
                .store()
                .api_token(presented.id)
                .await?
                .filter(|t| {
                    presented.verify(&t.token_hash)
                        && t.revoked_at.is_none()
                        && t.expires_at.is_none_or(|at| at > now)
                })
                .map(|t| Operator {
                    user_id: t.user_id,
                    session: None,
                    credential: t.id,
                }),
            TokenKind::Agent | TokenKind::Enrollment => None,
        };
        operator.ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))
    }
}

/// `POST /api/v1/auth/login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let user = state.store().user_by_name(req.username.trim()).await?;
    let verified = match &user {
        Some(user) => verify_password(&req.password, &user.password_hash),
        None => {
            verify_against_dummy(&req.password);
            false
        }
    };
    let Some(user) = user.filter(|_| verified) else {
        tracing::info!(username = %req.username, "failed login");
        return Err(ApiError::unauthorized("invalid user name or password"));
    };
    let issued = IssuedToken::generate(TokenKind::Session)?;
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(state.config().session_ttl).map_err(ApiError::internal)?;
    let session = Session {
        id: issued.id,
        user_id: user.id,
        token_hash: issued.hash,
        created_at: now,
        expires_at: now + ttl,
    };
    state.store().create_session(&session).await?;
    // Expired sessions are swept here rather than by a timer: logins are
    // rare and this keeps the table small without another task.
    let _ = state.store().delete_expired_sessions(now).await;
    tracing::info!(username = %user.username, "operator logged in");
    Ok(Json(LoginResponse {
        token: issued.token,
        expires_at: session.expires_at,
    }))
}

/// `POST /api/v1/auth/logout`: ends the session the request came with.
pub(crate) async fn logout(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<StatusCode, ApiError> {
    match operator.session {
        Some(id) => {
            state.store().delete_session(id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::bad_request(
            "this request used an API token, not a login session; revoke API tokens instead",
        )),
    }
}
