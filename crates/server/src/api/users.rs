//! Operator accounts: `GET/POST /users`, `DELETE /users/{id}` and
//! `PUT /users/me/password`.
//!
//! Only admins manage accounts (the access table, [`crate::access`]), with
//! guards: nobody deletes their own account (so a slip cannot lock the
//! last operator out, and so a stolen session cannot erase its owner), and
//! the store refuses to delete the last user or to delete or demote the
//! last admin. `PATCH /users/{id}` sets a role and scope; admins have no
//! scope. `GET /auth/me` tells any caller who they are. Changing a password ends all
//! of that user's sessions, the caller's included: the web UI then sends
//! them to the login page.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rm_core::password::{hash_password, verify_password};
use rm_core::{Labels, Role, Selector, UserId};
use rm_store::User;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::state::AppState;

/// Shortest password accepted (the same as `restic-manager admin`).
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (hashing is deliberately slow; keep it bounded).
pub(crate) const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest user name accepted.
pub(crate) const MAX_USERNAME_CHARS: usize = 64;

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserView {
    /// Id (ULID).
    id: String,
    /// The login name.
    username: String,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// `admin`, `operator` or `viewer`.
    role: Role,
    /// The label selector limiting what they see; `null`: every host.
    scope: Option<BTreeMap<String, String>>,
}

impl From<User> for UserView {
    fn from(user: User) -> UserView {
        UserView {
            id: user.id.to_string(),
            username: user.username,
            created_at: user.created_at,
            role: user.role,
            scope: user.scope.map(|s| s.0.as_map().clone()),
        }
    }
}

/// `GET /api/v1/auth/me`: who the caller is and what this request may do
/// (a token's narrower role shows here, not the user's).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MeView {
    id: String,
    username: String,
    /// The user's own role.
    user_role: Role,
    /// The role this credential acts with: the user's, or the API token's
    /// when narrower.
    role: Role,
    scope: Option<BTreeMap<String, String>>,
    /// Whether the request came with an API token (else a login session).
    api_token: bool,
}

/// `POST /api/v1/users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    /// 1 to 64 characters, no spaces or control characters.
    username: String,
    /// 8 to 1024 characters.
    password: String,
    /// Required; optional here so a missing one gets the API's words.
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    scope: Option<BTreeMap<String, String>>,
}

/// `PATCH /api/v1/users/{id}`: what is left out stays; `"scope": null`
/// removes the scope.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchUser {
    #[serde(default)]
    role: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<Option<BTreeMap<String, String>>>,
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Parses `role` (the field named in the error).
pub(crate) fn parse_role(raw: &str) -> Result<Role, ApiError> {
    raw.trim()
        .parse::<Role>()
        .map_err(|e| ApiError::bad_request(format!("`role`: {e}")))
}

/// Checks a role and scope together: a scope is a non-empty label
/// selector, and admins have none (they manage everything, users included).
pub(crate) fn checked_access(
    role: Role,
    scope: Option<BTreeMap<String, String>>,
) -> Result<Option<Selector>, ApiError> {
    let Some(scope) = scope else {
        return Ok(None);
    };
    let labels = Labels::parse("scope", scope).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if labels.is_empty() {
        return Err(ApiError::bad_request(
            "`scope` must name at least one label (leave it out for every host)",
        ));
    }
    if role == Role::Admin {
        return Err(ApiError::bad_request(
            "`scope`: an admin cannot have a scope (admins manage every host and user)",
        ));
    }
    Ok(Some(Selector(labels)))
}

/// `PUT /api/v1/users/me/password`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePassword {
    /// Your password now.
    current_password: String,
    /// The new one, 8 to 1024 characters.
    new_password: String,
}

/// Checks a user name (already trimmed): 1–64 characters, no whitespace or
/// control characters.
pub(crate) fn validate_username(username: &str) -> Result<(), ApiError> {
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "`username` must be 1 to {MAX_USERNAME_CHARS} characters long"
        )));
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::bad_request(
            "`username` must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// Checks a new password's length; `field` names it in the message.
pub(crate) fn validate_password(field: &str, password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be at least {MIN_PASSWORD_CHARS} characters long"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be at most {MAX_PASSWORD_CHARS} characters long"
        )));
    }
    Ok(())
}

/// Hashes a password off the async threads (argon2 is slow on purpose).
async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// Checks a password against a stored hash off the async threads.
async fn verify(password: String, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(ApiError::internal)
}

fn parse_user_id(raw: &str) -> Result<UserId, ApiError> {
    super::parse_id(raw, "a user")
}

/// List users.
///
/// `GET /api/v1/users`: every user, by name.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    operation_id = "list_users",
    responses((status = 200, description = "Every user, by name", body = [UserView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.store().list_users().await?;
    Ok(Json(users.into_iter().map(UserView::from).collect()))
}

/// Create a user.
///
/// `POST /api/v1/users` → 201; a taken name is 409.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    operation_id = "create_user",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The user", body = UserView),
        (status = 409, description = "The name is taken", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let username = req.username.trim().to_owned();
    validate_username(&username)?;
    validate_password("password", &req.password)?;
    let role =
        parse_role(req.role.as_deref().ok_or_else(|| {
            ApiError::bad_request("`role` is required: admin, operator or viewer")
        })?)?;
    let scope = checked_access(role, req.scope)?;
    if state.store().user_by_name(&username).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "user name `{username}` is taken"
        )));
    }
    let user = User {
        id: UserId::new(),
        username,
        password_hash: hash(req.password).await?,
        created_at: Utc::now(),
        role,
        scope,
    };
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::UserCreate,
        Some(Target::new("user", user.id)),
        serde_json::json!({
            "username": user.username,
            "role": user.role,
            "scope": user.scope.as_ref().map(ToString::to_string),
        }),
    );
    // The store's unique constraint decides a race between two creations.
    state.store().create_user(&user, Some(&entry)).await?;
    tracing::info!(user_id = %user.id, username = %user.username, by = %operator.user_id, "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}

/// Change a user's role or scope.
///
/// `PATCH /api/v1/users/{id}` → the user: a new role and/or scope, in
/// effect from the user's next request (their tokens included); their open
/// live streams end (a reconnect is checked afresh). Demoting
/// the last admin is 409. Audited as `user.role_change` with old and new.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    operation_id = "update_user_access",
    params(("id" = String, Path, description = "The user's id (ULID)")),
    request_body = PatchUser,
    responses(
        (status = 200, description = "The user with the new role and scope", body = UserView),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "That would leave no admin", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PatchUser>,
) -> Result<Json<UserView>, ApiError> {
    let id = parse_user_id(&id)?;
    let user = state
        .store()
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user `{id}` not found")))?;
    let role = match req.role.as_deref() {
        Some(raw) => parse_role(raw)?,
        None => user.role,
    };
    let scope = match req.scope {
        Some(scope) => checked_access(role, scope)?,
        // Made admin without saying: the scope goes (admins have none).
        None if role == Role::Admin => None,
        None => user.scope.clone(),
    };
    let scope_text = |s: &Option<Selector>| s.as_ref().map(ToString::to_string);
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::UserRoleChange,
        Some(Target::new("user", id)),
        serde_json::json!({
            "username": user.username,
            "old": {"role": user.role, "scope": scope_text(&user.scope)},
            "new": {"role": role, "scope": scope_text(&scope)},
        }),
    );
    let updated = state
        .store()
        .set_user_access(id, role, scope.as_ref(), Some(&entry))
        .await?;
    // Streams already open were checked with the old role and scope.
    state.credentials_ended(crate::auth::Ended::AccessOf(id));
    tracing::info!(user_id = %id, old = %user.role, new = %role, by = %operator.user_id, "user's role changed");
    Ok(Json(UserView::from(updated)))
}

/// Who the caller is.
///
/// `GET /api/v1/auth/me`: the user, the role this credential acts with and
/// the scope.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    operation_id = "who_am_i",
    responses((status = 200, description = "The caller's user, role and scope", body = MeView)),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Json<MeView>, ApiError> {
    let user = state
        .store()
        .user_by_id(operator.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("your account no longer exists"))?;
    Ok(Json(MeView {
        id: user.id.to_string(),
        username: user.username,
        user_role: user.role,
        role: operator.role,
        scope: operator.scope.map(|s| s.0.as_map().clone()),
        api_token: operator.session.is_none(),
    }))
}

/// Delete a user.
///
/// `DELETE /api/v1/users/{id}` → 204: the user goes with their sessions and
/// API tokens. Deleting yourself, or the last user, is 409.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    operation_id = "delete_user",
    params(("id" = String, Path, description = "The user's id (ULID)")),
    responses(
        (status = 204, description = "Deleted, with their sessions and API tokens"),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "Yourself, or the last user", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_user_id(&id)?;
    if id == operator.user_id {
        return Err(ApiError::conflict(
            "you cannot delete your own account; another user has to do it",
        ));
    }
    // Read first: afterwards the name is gone, and the log should keep it.
    let username = state.store().user_by_id(id).await?.map(|u| u.username);
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::UserDelete,
        Some(Target::new("user", id)),
        serde_json::json!({"username": username}),
    );
    state.store().delete_user(id, Some(&entry)).await?;
    state.credentials_ended(crate::auth::Ended::User(id));
    tracing::info!(user_id = %id, by = %operator.user_id, "user deleted with their sessions and API tokens");
    Ok(StatusCode::NO_CONTENT)
}

/// Change your password.
///
/// `PUT /api/v1/users/me/password` → 204. Needs the current password (a
/// wrong one is 400 naming `current_password`); ends every session of the
/// user, the caller's too. API tokens keep working.
#[utoipa::path(
    put,
    path = "/users/me/password",
    tag = "users",
    operation_id = "change_own_password",
    request_body = ChangePassword,
    responses((status = 204, description = "Changed; every session of yours ended")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn change_own_password(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    let user = state
        .store()
        .user_by_id(operator.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("your account no longer exists"))?;
    validate_password("new_password", &req.new_password)?;
    if !verify(req.current_password, user.password_hash.clone()).await? {
        tracing::info!(by = %operator.user_id, "password change refused: wrong current password");
        return Err(ApiError::bad_request(
            "`current_password` is not your current password",
        ));
    }
    let new_hash = hash(req.new_password).await?;
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::UserPasswordChange,
        Some(Target::new("user", user.id)),
        serde_json::json!({"sessions_ended": true}),
    );
    state
        .store()
        .set_user_password(&user.username, &new_hash, Some(&entry))
        .await?;
    state.credentials_ended(crate::auth::Ended::SessionsOf(user.id));
    tracing::info!(by = %operator.user_id, "password changed; all of the user's sessions ended");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_short_and_plain() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("ops.team-1@example").is_ok());
        assert!(validate_username(&"x".repeat(MAX_USERNAME_CHARS)).is_ok());
        for bad in [
            String::new(),
            "two words".to_owned(),
            "tab\there".to_owned(),
            "bell\u{7}".to_owned(),
            "x".repeat(MAX_USERNAME_CHARS + 1),
        ] {
            assert!(validate_username(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn passwords_have_bounds_counted_in_characters() {
        assert!(validate_password("password", "12345678").is_ok());
        assert!(validate_password("password", "ééééééé").is_err());
        assert!(validate_password("password", "éééééééé").is_ok());
        assert!(validate_password("password", &"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
    }
}
