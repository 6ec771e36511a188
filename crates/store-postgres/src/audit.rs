//! The PostgreSQL side of [`rm_store::AuditStore`]: the audit log.

use async_trait::async_trait;
use rm_store::prelude::*;
use rm_store::{AuditEntry, AuditFilter, NewAuditEntry, StoreResult};
use rm_store_sql::AuditRow;
// The SQL text is built from a constant column list and `$n`
// placeholders; values are always bound.
use sqlx::AssertSqlSafe;

use crate::shared::{fetch_all_models, insert_audit};
use crate::PostgresStore;

/// `list_audit` page size when the filter's limit is 0.
const DEFAULT_AUDIT_PAGE: u32 = 50;

/// Largest `list_audit` page.
const MAX_AUDIT_PAGE: u32 = 500;

#[async_trait]
impl AuditStore for PostgresStore {
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<u64> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        insert_audit(&mut conn, entry).await
    }

    /// Newest first (by id, which is write order within one server; ids
    /// come from a sequence). The action filter is a case-sensitive
    /// prefix; the actor filter matches the actor's user id, user name or
    /// token id exactly. `limit` 0 means 50; at most 500.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        // Absent filters are bound as NULL and switch their condition off,
        // so there is one SQL text.
        let sql = format!(
            "SELECT {} FROM audit_log \
             WHERE ($1::TEXT IS NULL OR left(action, length($1)) = $1) \
             AND ($2::TEXT IS NULL OR actor_user_id = $2 OR actor_username = $2 \
                  OR actor_token_id = $2) \
             AND ($3::TEXT IS NULL OR target_id = $3) \
             AND ($4::BIGINT IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
            rm_store_sql::AUDIT_COLUMNS
        );
        let limit = match filter.limit {
            0 => DEFAULT_AUDIT_PAGE,
            n => n.min(MAX_AUDIT_PAGE),
        };
        let query = sqlx::query_as::<_, AuditRow>(AssertSqlSafe(sql))
            .bind(&filter.action_prefix)
            .bind(&filter.actor)
            .bind(&filter.target_id)
            // Ids never exceed i64::MAX, so a larger cursor is "before
            // everything".
            .bind(filter.before.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
            .bind(i64::from(limit));
        fetch_all_models(&self.pool, query).await
    }
}
