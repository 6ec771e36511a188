//! The SQLite side of [`rm_store::AuditStore`]: the audit log.

use async_trait::async_trait;
use rm_store::prelude::*;
use rm_store::{AuditEntry, AuditFilter, NewAuditEntry, StoreResult};
use rm_store_sql::AuditRow;
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::backend;
use crate::{fetch_all_models, insert_audit, SqliteStore};

/// `list_audit` page size when the filter's limit is 0.
const DEFAULT_AUDIT_PAGE: u32 = 50;

/// Largest `list_audit` page.
const MAX_AUDIT_PAGE: u32 = 500;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let id = insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    /// Newest first (by id, which is write order). The action filter is a
    /// case-sensitive prefix; the actor filter matches the actor's user id,
    /// user name or token id exactly. `limit` 0 means 50; at most 500.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = format!(
            "SELECT {} FROM audit_log WHERE 1 = 1",
            rm_store_sql::AUDIT_COLUMNS
        );
        if filter.action_prefix.is_some() {
            // substr rather than LIKE: exact and case-sensitive, and `_` in
            // action names needs no escaping.
            sql.push_str(" AND substr(action, 1, length(?)) = ?");
        }
        if filter.actor.is_some() {
            sql.push_str(" AND (actor_user_id = ? OR actor_username = ? OR actor_token_id = ?)");
        }
        if filter.target_id.is_some() {
            sql.push_str(" AND target_id = ?");
        }
        if filter.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let limit = match filter.limit {
            0 => DEFAULT_AUDIT_PAGE,
            n => n.min(MAX_AUDIT_PAGE),
        };
        let mut query = sqlx::query_as::<_, AuditRow>(AssertSqlSafe(sql));
        if let Some(prefix) = &filter.action_prefix {
            query = query.bind(prefix).bind(prefix);
        }
        if let Some(actor) = &filter.actor {
            query = query.bind(actor).bind(actor).bind(actor);
        }
        if let Some(target) = &filter.target_id {
            query = query.bind(target);
        }
        if let Some(before) = filter.before {
            // Ids never exceed i64::MAX, so a larger cursor is "before everything".
            query = query.bind(i64::try_from(before).unwrap_or(i64::MAX));
        }
        fetch_all_models(&self.pool, query.bind(i64::from(limit))).await
    }
}
