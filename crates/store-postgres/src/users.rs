//! The PostgreSQL side of [`rm_store::UserStore`]: users, login sessions
//! and API tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{Role, Selector, TokenId, UserId};
use rm_store::prelude::*;
use rm_store::{ApiToken, NewAuditEntry, Session, StoreError, StoreResult, User};
use rm_store_sql::encode;
use rm_store_sql::encode::{ms, ms_opt};
use rm_store_sql::{ApiTokenRow, SessionRow, UserRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists and `$n` placeholders; values are always bound, never
// formatted in, so each such text is asserted safe.
use sqlx::postgres::PgConnection;
use sqlx::AssertSqlSafe;

use crate::codec;
use crate::shared::{db_error, fetch_all_models, finish, insert_error, write_audit};
use crate::PostgresStore;

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, created_at, role, scope) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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
                if codec::is_unique_violation(&e)
                    && codec::constraint(&e).is_some_and(|c| c.contains("username"))
                {
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
            Ok(())
        }
        .await;
        finish(tx, result).await
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
        self.row_by::<UserRow, User>("users", "id", rm_store_sql::USER_COLUMNS, id.to_string())
            .await
    }

    async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let id: Option<String> = sqlx::query_scalar(
                "UPDATE users SET password_hash = $1 WHERE username = $2 RETURNING id",
            )
            .bind(password_hash)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(id) = id else {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            };
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(n.unsigned_abs())
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
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // Every user row locked (FOR UPDATE) before counting: two operators
            // deleting the last two users (or admins) one each are serialised,
            // and the second counts what the first committed.
            let users: Vec<(String, String)> =
                sqlx::query_as("SELECT id, role FROM users ORDER BY id FOR UPDATE")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
            let Some((_, role)) = users.iter().find(|(uid, _)| *uid == id) else {
                return Err(StoreError::NotFound(format!("user `{id}`")));
            };
            if users.len() <= 1 {
                return Err(StoreError::Conflict(String::from(
                    "cannot delete the last user",
                )));
            }
            let admin = Role::Admin.as_str();
            if role == admin && !users.iter().any(|(uid, r)| *uid != id && r == admin) {
                return Err(StoreError::Conflict(String::from(
                    "cannot delete the last admin",
                )));
            }
            // Explicit rather than relying on ON DELETE CASCADE alone, as the
            // SQLite store does.
            for sql in [
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM api_tokens WHERE user_id = $1",
                "DELETE FROM users WHERE id = $1",
            ] {
                sqlx::query(sql)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn set_user_access(
        &self,
        id: UserId,
        role: Role,
        scope: Option<&Selector>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<User> {
        let id = id.to_string();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            if role != Role::Admin && last_admin(&mut tx, &id).await? {
                return Err(StoreError::Conflict(String::from(
                    "cannot demote the last admin",
                )));
            }
            let sql = format!(
                "UPDATE users SET role = $1, scope = $2 WHERE id = $3 RETURNING {}",
                rm_store_sql::USER_COLUMNS
            );
            let row = sqlx::query_as::<_, UserRow>(AssertSqlSafe(sql))
                .bind(role.as_str())
                .bind(encode::scope_json(scope))
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("user `{id}`")));
            };
            let user = User::try_from(row)?;
            write_audit(&mut tx, audit).await?;
            Ok(user)
        }
        .await;
        finish(tx, result).await
    }

    async fn create_session(
        &self,
        session: &Session,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
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
            Ok(())
        }
        .await;
        finish(tx, result).await
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
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(ms(now))
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(deleted)
    }

    async fn create_api_token(
        &self,
        token: &ApiToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "INSERT INTO api_tokens \
             (id, user_id, name, token_hash, created_at, expires_at, revoked_at, role) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
            Ok(())
        }
        .await;
        finish(tx, result).await
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
            "SELECT {} FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id",
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
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The conditional UPDATE decides a race of two revocations: the
            // second waits for the first's row lock and then matches nothing.
            let updated = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(ms(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if updated != 1 {
                return Ok(false);
            }
            write_audit(&mut tx, audit).await?;
            Ok(true)
        }
        .await;
        finish(tx, result).await
    }
}

/// Whether user `id` is an admin and no other admin exists. Locks every
/// admin row first (FOR UPDATE), so two admins demoting each other at
/// once are serialised and the second sees the first's change: the
/// counting statements after the lock read what is committed.
async fn last_admin(conn: &mut PgConnection, id: &str) -> StoreResult<bool> {
    sqlx::query("SELECT id FROM users WHERE role = $1 ORDER BY id FOR UPDATE")
        .bind(Role::Admin.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    // Re-read after the locks: a row locked after waiting is re-checked,
    // but one that became admin meanwhile is only seen by a new statement.
    let admins: Vec<String> = sqlx::query_scalar("SELECT id FROM users WHERE role = $1")
        .bind(Role::Admin.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(admins.iter().any(|a| a == id) && admins.len() == 1)
}
