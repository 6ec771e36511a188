//! The caller's own API tokens: `GET/POST /api-tokens` and
//! `DELETE /api-tokens/{id}`.
//!
//! A token acts as the user who made it, with their role or a narrower one
//! it was given (never wider: 400 naming `role`); the smaller of the two
//! applies at each request, so demoting the user demotes their tokens. Its secret is shown once, in the
//! answer to its creation; listings never contain it. Nobody sees or
//! revokes another user's tokens here: someone else's token id is 404,
//! exactly like one that does not exist. [`issue`] is also what the web
//! UI's token form calls, so both paths create tokens the same way.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rm_core::token::{IssuedToken, TokenKind};
use rm_core::TokenId;
use rm_store::{ApiToken, StoreError};
use serde::{Deserialize, Serialize};

use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::state::AppState;

/// Longest token name accepted.
pub(crate) const MAX_NAME_CHARS: usize = 64;
/// Longest lifetime accepted, in days (ten years).
pub(crate) const MAX_TTL_DAYS: u32 = 3650;

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The request was wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Generating the token failed.
    #[error(transparent)]
    Core(#[from] rm_core::CoreError),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        match e {
            TokenError::Invalid(message) => ApiError::bad_request(message),
            TokenError::Store(e) => e.into(),
            TokenError::Core(e) => e.into(),
        }
    }
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenView {
    /// The token's id (not secret).
    id: String,
    /// What the operator called it.
    name: String,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    revoked_at: Option<DateTime<Utc>>,
    /// Its own narrower role; `null`: its user's.
    role: Option<rm_core::Role>,
}

impl From<ApiToken> for TokenView {
    fn from(token: ApiToken) -> TokenView {
        TokenView {
            id: token.id.to_string(),
            name: token.name,
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
            role: token.role,
        }
    }
}

/// `POST /api/v1/api-tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// 1 to 64 characters.
    name: String,
    /// Lifetime in days; none means it never expires.
    #[serde(default)]
    ttl_days: Option<u32>,
    /// A narrower role than the caller's (`admin`, `operator`, `viewer`).
    #[serde(default)]
    role: Option<String>,
}

/// A new token with its secret: the only time the secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenCreated {
    /// The token's id (not secret).
    pub(crate) id: String,
    /// `rmt.<id>.<secret>`, to send as `Authorization: Bearer`.
    pub(crate) token: String,
    /// What the operator called it.
    pub(crate) name: String,
    /// Creation time.
    pub(crate) created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Its own narrower role, if it was given one.
    pub(crate) role: Option<rm_core::Role>,
}

/// Issues an API token for `operator`: checks the name (trimmed, 1–64
/// characters, no control characters) and lifetime (1–3650 days, or none),
/// stores the token's hash, audits it and returns the secret.
pub(crate) async fn issue(
    state: &AppState,
    operator: &Operator,
    client: &Client,
    name: &str,
    ttl_days: Option<u32>,
    role: Option<&str>,
) -> Result<TokenCreated, TokenError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(TokenError::Invalid(format!(
            "`name` must be 1 to {MAX_NAME_CHARS} characters long"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(TokenError::Invalid(String::from(
            "`name` must not contain control characters",
        )));
    }
    if let Some(days) = ttl_days {
        if days == 0 || days > MAX_TTL_DAYS {
            return Err(TokenError::Invalid(format!(
                "`ttl_days` must be between 1 and {MAX_TTL_DAYS} (or left out for no expiry)"
            )));
        }
    }
    let role = match role.map(str::trim).filter(|r| !r.is_empty()) {
        None => None,
        Some(raw) => {
            let role: rm_core::Role = raw
                .parse()
                .map_err(|e| TokenError::Invalid(format!("`role`: {e}")))?;
            if role > operator.role {
                return Err(TokenError::Invalid(format!(
                    "`role` must not be wider than yours (`{}`), not `{role}`",
                    operator.role
                )));
            }
            Some(role)
        }
    };
    let issued = IssuedToken::generate(TokenKind::Api)?;
    let now = Utc::now();
    let user = operator.user_id;
    let token = ApiToken {
        id: issued.id,
        user_id: user,
        name: name.to_owned(),
        token_hash: issued.hash,
        created_at: now,
        expires_at: ttl_days.map(|d| now + chrono::Duration::days(i64::from(d))),
        revoked_at: None,
        role,
    };
    let entry = Audit::by(state, operator, client).await.entry(
        Action::ApiTokenCreate,
        Some(Target::new("api_token", token.id)),
        serde_json::json!({"name": token.name, "expires_at": token.expires_at, "role": token.role}),
    );
    state.store().create_api_token(&token, Some(&entry)).await?;
    tracing::info!(token_id = %token.id, name = %token.name, expires_at = ?token.expires_at, by = %user, "API token created");
    Ok(TokenCreated {
        id: token.id.to_string(),
        token: issued.token,
        name: token.name,
        created_at: token.created_at,
        expires_at: token.expires_at,
        role: token.role,
    })
}

/// List your API tokens.
///
/// `GET /api/v1/api-tokens`: the caller's tokens in creation order,
/// revoked and expired ones included.
#[utoipa::path(
    get,
    path = "/api-tokens",
    tag = "api-tokens",
    operation_id = "list_api_tokens",
    responses((status = 200, description = "Your tokens, revoked and expired ones too, without secrets", body = [TokenView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = state.store().list_api_tokens(operator.user_id).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Create an API token.
///
/// `POST /api/v1/api-tokens` → 201 with the secret (shown only here).
#[utoipa::path(
    post,
    path = "/api-tokens",
    tag = "api-tokens",
    operation_id = "create_api_token",
    request_body = CreateToken,
    responses((status = 201, description = "The token with its secret, shown only here", body = TokenCreated)),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let created = issue(
        &state,
        &operator,
        &client,
        &req.name,
        req.ttl_days,
        req.role.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke one of your API tokens.
///
/// `DELETE /api/v1/api-tokens/{id}` → 204: revokes one of the caller's
/// tokens (again is fine: the first revocation time stays). Another user's
/// token is 404.
#[utoipa::path(
    delete,
    path = "/api-tokens/{id}",
    tag = "api-tokens",
    operation_id = "revoke_api_token",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked (again is fine)"),
        (status = 404, description = "No such token of yours", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let token_id: TokenId = super::parse_id(&id, "an API token")?;
    let not_found = || ApiError::not_found(format!("API token `{token_id}` not found"));
    let token = state
        .store()
        .api_token(token_id)
        .await?
        .filter(|t| t.user_id == operator.user_id)
        .ok_or_else(not_found)?;
    // Written only if this revokes it (a repeated revocation changes
    // nothing, so it records nothing).
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::ApiTokenRevoke,
        Some(Target::new("api_token", token.id)),
        serde_json::json!({"name": token.name}),
    );
    let revoked = state
        .store()
        .revoke_api_token(token.id, Utc::now(), Some(&entry))
        .await?;
    // Announced even when it was revoked already: nothing may outlive it.
    state.credentials_ended(crate::auth::Ended::Credential(token.id));
    if revoked {
        tracing::info!(token_id = %token.id, name = %token.name, by = %operator.user_id, "API token revoked");
    }
    Ok(StatusCode::NO_CONTENT)
}
