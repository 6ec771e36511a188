//! Operator authentication over HTTP: `POST /auth/login` and `/auth/logout`,
//! and the [`Operator`] extractor. A request is authenticated by
//! `Authorization: Bearer` (session or API token), or by the web UI's
//! session cookie — and then, unless it only reads, it must also carry the
//! session's CSRF token in `X-CSRF-Token`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::Json;
use rm_protocol::api::{LoginRequest, LoginResponse};

use super::ApiErrorBody;
use super::{ApiError, ApiJson};
use crate::agent_ws::bearer_token;
use crate::audit::{Action, Audit, Client, Target};
pub(crate) use crate::auth::Operator;
use crate::auth::{self, LoginError};
use crate::state::AppState;

/// The same words for every failed bearer check, so nothing leaks.
const BAD_TOKEN: &str = "missing, invalid or expired bearer token";

/// The header the web UI sends its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Already checked by the access guard (crate::access) for this request.
        if let Some(operator) = parts.extensions.get::<Operator>() {
            return Ok(operator.clone());
        }
        if let Some(token) = bearer_token(&parts.headers) {
            return match auth::operator_for(state, token).await? {
                Some(operator) => Ok(operator),
                None => Err(refused(parts, state)),
            };
        }
        let cookie = auth::session_cookie(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
        let Some(operator) = auth::operator_for(state, &cookie).await? else {
            return Err(refused(parts, state));
        };
        let reads_only = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !reads_only {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !auth::csrf_ok(&cookie, presented) {
                return Err(ApiError::forbidden(
                    "missing or wrong CSRF token (send the page's token in X-CSRF-Token)",
                ));
            }
        }
        Ok(operator)
    }
}

/// The answer to a presented token that failed its check: 401, or 429 once
/// the client's address has failed too often in a short time.
fn refused(parts: &Parts, state: &AppState) -> ApiError {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_canonical());
    match auth::token_failed(state, ip) {
        Some(wait) => ApiError::too_many_requests(
            "too many failed bearer-token checks from this address; try again later",
        )
        .with_retry_after(wait),
        None => ApiError::unauthorized(BAD_TOKEN),
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> ApiError {
        match e {
            LoginError::Invalid => ApiError::unauthorized(e.to_string()),
            LoginError::RateLimited { retry_after, .. } => {
                ApiError::too_many_requests(e.to_string()).with_retry_after(retry_after)
            }
            LoginError::Unavailable { retry_after } => {
                ApiError::unavailable(e.to_string()).with_retry_after(retry_after)
            }
            LoginError::Store(e) => e.into(),
            LoginError::Core(e) => e.into(),
        }
    }
}

/// Log in.
///
/// `POST /api/v1/auth/login`.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A session token for `Authorization: Bearer` (12 h)", body = LoginResponse),
        (status = 401, description = "Wrong user name or password", body = ApiErrorBody),
        (status = 429, description = "Too many attempts for this user or address; see `Retry-After`", body = ApiErrorBody),
    ),
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    client: Client,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (token, session) = auth::login(&state, &req.username, &req.password, &client).await?;
    Ok(Json(LoginResponse {
        token,
        expires_at: session.expires_at,
    }))
}

/// Log out.
///
/// `POST /api/v1/auth/logout`: ends the session the request came with.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    operation_id = "logout",
    responses(
        (status = 204, description = "The session ended"),
        (status = 400, description = "The request used an API token, not a session", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
) -> Result<StatusCode, ApiError> {
    match operator.session {
        Some(id) => {
            let entry = Audit::by(&state, &operator, &client).await.entry(
                Action::AuthLogout,
                Some(Target::new("user", operator.user_id)),
                serde_json::json!({}),
            );
            state.store().delete_session(id, Some(&entry)).await?;
            state.credentials_ended(auth::Ended::Credential(id));
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::bad_request(
            "this request used an API token, not a login session; revoke API tokens instead",
        )),
    }
}
