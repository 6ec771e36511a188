//! The SQLite side of [`rm_store::UserStore`]: users, login sessions and
//! API tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{Role, Selector, TokenId, UserId};
use rm_store::prelude::*;
use rm_store::{ApiToken, NewAuditEntry, Session, StoreError, StoreResult, User};
use rm_store_sql::encode;
use rm_store_sql::encode::{ms, ms_opt};
use rm_store_sql::{ApiTokenRow, SessionRow, UserRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::tx::WriteTx;
use crate::{fetch_all_models, fetch_optional_model, insert_error, write_audit, SqliteStore};

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, role, scope) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(ms(user.created_at))
        .bind(user.role.as_str())
        .bind(encode::scope_json(user.scope.as_ref()))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if codec::is_unique_violation(&e) && codec::db_message(&e).contains("username") {
                StoreError::Conflict(format!("user name `{}` is taken", user.username))
            } else {
                insert_error(
                    e,
                    || format!("user id `{}` already exists", user.id),
                    "user",
                )
            }
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.row_by::<UserRow, User>(
            "users",
            "username",
            rm_store_sql::USER_COLUMNS,
            username.to_owned(),
        )
        .await
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE id = ?",
            rm_store_sql::USER_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, UserRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ?")
            .bind(password_hash)
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if updated != 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("user `{username}`")));
        }
        sqlx::query(
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = ?)",
        )
        .bind(username)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        codec::count(&row, "n")
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let sql = format!(
            "SELECT {} FROM users ORDER BY username, id",
            rm_store_sql::USER_COLUMNS
        );
        fetch_all_models(&self.pool, sqlx::query_as::<_, UserRow>(AssertSqlSafe(sql))).await
    }

    async fn delete_user(&self, id: UserId, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let id = id.to_string();
        // BEGIN IMMEDIATE: two operators deleting the last two users one
        // each are serialised, so one of them sees the last-user rule.
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        if !exists {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("user `{id}`")));
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if codec::count(&row, "n")? <= 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Conflict(String::from(
                "cannot delete the last user",
            )));
        }
        if self.last_admin(&mut tx, &id).await? {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Conflict(String::from(
                "cannot delete the last admin",
            )));
        }
        // Explicit rather than relying on ON DELETE CASCADE alone, so the
        // credentials go even on a connection without foreign keys.
        for sql in [
            "DELETE FROM sessions WHERE user_id = ?",
            "DELETE FROM api_tokens WHERE user_id = ?",
            "DELETE FROM users WHERE id = ?",
        ] {
            sqlx::query(sql)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn set_user_access(
        &self,
        id: UserId,
        role: Role,
        scope: Option<&Selector>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<User> {
        let id = id.to_string();
        // BEGIN IMMEDIATE: two admins demoting each other are serialised,
        // so one of them sees the last-admin rule.
        let mut tx = self.begin_write().await?;
        if role != Role::Admin && self.last_admin(&mut tx, &id).await? {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Conflict(String::from(
                "cannot demote the last admin",
            )));
        }
        let sql = format!(
            "UPDATE users SET role = ?, scope = ? WHERE id = ? RETURNING {}",
            rm_store_sql::USER_COLUMNS
        );
        let row = sqlx::query_as::<_, UserRow>(AssertSqlSafe(sql))
            .bind(role.as_str())
            .bind(encode::scope_json(scope))
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("user `{id}`")));
        };
        let user = User::try_from(row)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(user)
    }

    async fn create_session(
        &self,
        session: &Session,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(session.token_hash.to_hex())
        .bind(ms(session.created_at))
        .bind(ms(session.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("session `{}` already exists", session.id),
                &format!("user `{}`", session.user_id),
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>> {
        self.row_by::<SessionRow, Session>(
            "sessions",
            "id",
            rm_store_sql::SESSION_COLUMNS,
            id.to_string(),
        )
        .await
    }

    /// The entry is written even when the session was gone already (the
    /// logout was asked for, and nothing of the session is left).
    async fn delete_session(&self, id: TokenId, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn create_api_token(
        &self,
        token: &ApiToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_tokens \
             (id, user_id, name, token_hash, created_at, expires_at, revoked_at, role) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(token.user_id.to_string())
        .bind(&token.name)
        .bind(token.token_hash.to_hex())
        .bind(ms(token.created_at))
        .bind(ms_opt(token.expires_at))
        .bind(ms_opt(token.revoked_at))
        .bind(token.role.map(Role::as_str))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("API token `{}` already exists", token.id),
                &format!("user `{}`", token.user_id),
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>> {
        self.row_by::<ApiTokenRow, ApiToken>(
            "api_tokens",
            "id",
            rm_store_sql::API_TOKEN_COLUMNS,
            id.to_string(),
        )
        .await
    }

    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiToken>> {
        let sql = format!(
            "SELECT {} FROM api_tokens WHERE user_id = ? ORDER BY created_at, id",
            rm_store_sql::API_TOKEN_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, ApiTokenRow>(AssertSqlSafe(sql)).bind(user.to_string()),
        )
        .await
    }

    async fn revoke_api_token(
        &self,
        id: TokenId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let updated =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(at))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        if updated != 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}

impl SqliteStore {
    /// Whether user `id` is an admin and no other admin exists.
    async fn last_admin(&self, tx: &mut WriteTx, id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND id <> ?")
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(backend)?;
        let others = codec::count(&row, "n")?;
        let is_admin = sqlx::query("SELECT 1 FROM users WHERE id = ? AND role = 'admin'")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(backend)?
            .is_some();
        Ok(is_admin && others == 0)
    }
}
