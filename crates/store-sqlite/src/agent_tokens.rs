//! Agent token rotation and revocation (migration 0007): a rotation's new
//! token is a `pending` row beside the current one until the agent confirms
//! it; revoking an agent revokes every token of the host and stamps it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, TokenId};
use rm_store::AgentTokenStore;
use rm_store::{AgentToken, NewAuditEntry, StoreError, StoreResult};
use rm_store_sql::encode::ms;
use rm_store_sql::AgentTokenRow;
// The SQL texts here are built from constant column lists; values are bound.
use sqlx::AssertSqlSafe;

use crate::codec::backend;
use crate::fetch_optional_model;
use crate::SqliteStore;

impl SqliteStore {
    pub(crate) async fn begin_token_rotation_impl(
        &self,
        token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let host_id = token.host_id.to_string();
        let now_ms = ms(token.created_at);
        let mut tx = self.begin_write().await?;
        let revoked: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT agent_revoked_at FROM hosts WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(&host_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        match revoked {
            None => return Err(StoreError::NotFound(format!("host `{host_id}`"))),
            Some(Some(_)) => {
                return Err(StoreError::Conflict(format!(
                    "the agent of host `{host_id}` was revoked"
                )))
            }
            Some(None) => {}
        }
        // An earlier rotation the agent never confirmed is superseded: only
        // the newest new token may become the host's token.
        sqlx::query(
            "UPDATE agent_tokens SET revoked_at = ?, pending = 0 \
             WHERE host_id = ? AND pending = 1 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO agent_tokens (id, host_id, token_hash, created_at, pending) \
             VALUES (?, ?, ?, ?, 1)",
        )
        .bind(token.id.to_string())
        .bind(&host_id)
        .bind(token.token_hash.to_hex())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            crate::insert_error(
                e,
                || format!("agent token `{}` already exists", token.id),
                &format!("host `{host_id}`"),
            )
        })?;
        crate::write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    pub(crate) async fn promote_agent_token_impl(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let host_id = host.to_string();
        let at_ms = ms(at);
        let mut tx = self.begin_write().await?;
        let promoted = sqlx::query(
            "UPDATE agent_tokens SET pending = 0 \
             WHERE id = ? AND host_id = ? AND pending = 1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if promoted != 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE agent_tokens SET revoked_at = ? \
             WHERE host_id = ? AND id <> ? AND revoked_at IS NULL",
        )
        .bind(at_ms)
        .bind(&host_id)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("UPDATE hosts SET token_rotated_at = ? WHERE id = ?")
            .bind(at_ms)
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    pub(crate) async fn pending_agent_token_impl(
        &self,
        host: HostId,
    ) -> StoreResult<Option<AgentToken>> {
        let sql = format!(
            "SELECT {} FROM agent_tokens \
             WHERE host_id = ? AND pending = 1 AND revoked_at IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT 1",
            rm_store_sql::AGENT_TOKEN_COLUMNS
        );
        fetch_optional_model(
            self.pool(),
            sqlx::query_as::<_, AgentTokenRow>(AssertSqlSafe(sql)).bind(host.to_string()),
        )
        .await
    }

    pub(crate) async fn revoke_agent_token_impl(
        &self,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let revoked = sqlx::query(
            "UPDATE agent_tokens SET revoked_at = ?, pending = 0 WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(ms(at))
        .bind(id.to_string())
        .execute(self.pool())
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(revoked == 1)
    }

    pub(crate) async fn revoke_agent_impl(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        // Revoking again keeps the first time.
        self.retire_agent(
            &host.to_string(),
            ms(at),
            "UPDATE hosts SET agent_revoked_at = COALESCE(agent_revoked_at, ?), online = 0 \
             WHERE id = ? AND deleted_at IS NULL",
            audit,
        )
        .await
    }
}

#[async_trait]
impl AgentTokenStore for SqliteStore {
    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>> {
        let sql = format!(
            "SELECT {} FROM agent_tokens JOIN hosts ON hosts.id = agent_tokens.host_id \
             WHERE agent_tokens.id = ? AND agent_tokens.revoked_at IS NULL \
             AND hosts.deleted_at IS NULL",
            rm_store_sql::AGENT_TOKEN_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, AgentTokenRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    async fn begin_token_rotation(
        &self,
        token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        self.begin_token_rotation_impl(token, audit).await
    }

    async fn promote_agent_token(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.promote_agent_token_impl(host, id, at).await
    }

    async fn pending_agent_token(&self, host: HostId) -> StoreResult<Option<AgentToken>> {
        self.pending_agent_token_impl(host).await
    }

    async fn revoke_agent_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
        self.revoke_agent_token_impl(id, at).await
    }

    async fn revoke_agent(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.revoke_agent_impl(host, at, audit).await
    }
}
