//! Rows of users, login sessions and API tokens.

use rm_core::Selector;
use rm_store::{ApiToken, Session, StoreError, User};

use crate::decode;

/// Columns selected for a [`UserRow`].
pub const USER_COLUMNS: &str = "id, username, password_hash, created_at, role, scope";

/// A `users` row.
#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    /// Column `id`.
    pub id: String,
    /// Column `username`.
    pub username: String,
    /// Column `password_hash`.
    pub password_hash: String,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `role`.
    pub role: String,
    /// Column `scope`.
    pub scope: Option<String>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(r: UserRow) -> Result<User, StoreError> {
        Ok(User {
            id: decode::id("id", r.id)?,
            username: r.username,
            password_hash: r.password_hash,
            created_at: decode::time("created_at", r.created_at)?,
            role: decode::parsed("role", r.role)?,
            scope: r
                .scope
                .map(|s| decode::labels("scope", &s).map(Selector))
                .transpose()?,
        })
    }
}

/// Columns selected for a [`SessionRow`].
pub const SESSION_COLUMNS: &str = "id, user_id, token_hash, created_at, expires_at";

/// A `sessions` row.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionRow {
    /// Column `id`.
    pub id: String,
    /// Column `user_id`.
    pub user_id: String,
    /// Column `token_hash`.
    pub token_hash: String,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `expires_at`.
    pub expires_at: i64,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(r: SessionRow) -> Result<Session, StoreError> {
        Ok(Session {
            id: decode::id("id", r.id)?,
            user_id: decode::id("user_id", r.user_id)?,
            token_hash: decode::hash("token_hash", r.token_hash)?,
            created_at: decode::time("created_at", r.created_at)?,
            expires_at: decode::time("expires_at", r.expires_at)?,
        })
    }
}

/// Columns selected for an [`ApiTokenRow`].
pub const API_TOKEN_COLUMNS: &str =
    "id, user_id, name, token_hash, created_at, expires_at, revoked_at, role";

/// An `api_tokens` row.
#[derive(Debug, sqlx::FromRow)]
pub struct ApiTokenRow {
    /// Column `id`.
    pub id: String,
    /// Column `user_id`.
    pub user_id: String,
    /// Column `name`.
    pub name: String,
    /// Column `token_hash`.
    pub token_hash: String,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `expires_at`.
    pub expires_at: Option<i64>,
    /// Column `revoked_at`.
    pub revoked_at: Option<i64>,
    /// Column `role`.
    pub role: Option<String>,
}

impl TryFrom<ApiTokenRow> for ApiToken {
    type Error = StoreError;

    fn try_from(r: ApiTokenRow) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            id: decode::id("id", r.id)?,
            user_id: decode::id("user_id", r.user_id)?,
            name: r.name,
            token_hash: decode::hash("token_hash", r.token_hash)?,
            created_at: decode::time("created_at", r.created_at)?,
            expires_at: decode::time_opt("expires_at", r.expires_at)?,
            revoked_at: decode::time_opt("revoked_at", r.revoked_at)?,
            role: decode::parsed_opt("role", r.role)?,
        })
    }
}
