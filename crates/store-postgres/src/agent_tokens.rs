//! The PostgreSQL side of [`rm_store::AgentTokenStore`]: agent token
//! rotation and revocation. A rotation's new token is a `pending` row
//! beside the current one until the agent confirms it; revoking an agent
//! revokes every token of the host and stamps it.
//!
//! Races between servers are decided by the host's row lock: rotation and
//! promotion lock it first (`FOR UPDATE`), revocation and deletion update
//! it first, so every change to one host's tokens runs one after the
//! other, always taking the host's lock before its tokens' (no deadlock).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, TokenId};
use rm_store::prelude::*;
use rm_store::{AgentToken, NewAuditEntry, StoreError, StoreResult};
use rm_store_sql::encode::ms;
use rm_store_sql::AgentTokenRow;
// The SQL texts here are built from constant column lists; values are bound.
use sqlx::AssertSqlSafe;

use crate::shared::{
    db_error, fetch_optional_model, finish, insert_error, retire_agent, write_audit,
};
use crate::PostgresStore;

#[async_trait]
impl AgentTokenStore for PostgresStore {
    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>> {
        let sql = format!(
            "SELECT {} FROM agent_tokens JOIN hosts ON hosts.id = agent_tokens.host_id \
             WHERE agent_tokens.id = $1 AND agent_tokens.revoked_at IS NULL \
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
        let host_id = token.host_id.to_string();
        let now_ms = ms(token.created_at);
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The host's lock: two rotations at once would otherwise each
            // supersede the other's (uncommitted, unseen) pending token and
            // leave two.
            let revoked: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT agent_revoked_at FROM hosts WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(&host_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
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
                "UPDATE agent_tokens SET revoked_at = $1, pending = FALSE \
             WHERE host_id = $2 AND pending AND revoked_at IS NULL",
            )
            .bind(now_ms)
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO agent_tokens (id, host_id, token_hash, created_at, pending) \
             VALUES ($1, $2, $3, $4, TRUE)",
            )
            .bind(token.id.to_string())
            .bind(&host_id)
            .bind(token.token_hash.to_hex())
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("agent token `{}` already exists", token.id),
                    &format!("host `{host_id}`"),
                )
            })?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn promote_agent_token(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let host_id = host.to_string();
        let at_ms = ms(at);
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The host's lock first, as a rotation takes it: the conditional
            // UPDATE below then sees a rotation's supersession committed.
            sqlx::query("SELECT 1 FROM hosts WHERE id = $1 FOR UPDATE")
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let promoted = sqlx::query(
                "UPDATE agent_tokens SET pending = FALSE \
             WHERE id = $1 AND host_id = $2 AND pending AND revoked_at IS NULL",
            )
            .bind(id.to_string())
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if promoted != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE agent_tokens SET revoked_at = $1 \
             WHERE host_id = $2 AND id <> $3 AND revoked_at IS NULL",
            )
            .bind(at_ms)
            .bind(&host_id)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query("UPDATE hosts SET token_rotated_at = $1 WHERE id = $2")
                .bind(at_ms)
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            Ok(true)
        }
        .await;
        finish(tx, result).await
    }

    async fn pending_agent_token(&self, host: HostId) -> StoreResult<Option<AgentToken>> {
        let sql = format!(
            "SELECT {} FROM agent_tokens \
             WHERE host_id = $1 AND pending AND revoked_at IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT 1",
            rm_store_sql::AGENT_TOKEN_COLUMNS
        );
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, AgentTokenRow>(AssertSqlSafe(sql)).bind(host.to_string()),
        )
        .await
    }

    async fn revoke_agent_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
        // The conditional UPDATE decides a race of two revocations.
        let revoked = sqlx::query(
            "UPDATE agent_tokens SET revoked_at = $1, pending = FALSE \
             WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(ms(at))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(revoked == 1)
    }

    async fn revoke_agent(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        // Revoking again keeps the first time.
        retire_agent(
            self,
            &host.to_string(),
            ms(at),
            "UPDATE hosts SET agent_revoked_at = COALESCE(agent_revoked_at, $1), online = FALSE \
             WHERE id = $2 AND deleted_at IS NULL",
            audit,
        )
        .await
    }
}
