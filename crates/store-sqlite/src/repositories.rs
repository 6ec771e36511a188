//! The SQLite side of [`rm_store::RepositoryStore`]: hosts' sealed
//! repository settings and repository identities.

use async_trait::async_trait;
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{Host, NewAuditEntry, RepositoryJob, SealedRepository, StoreError, StoreResult};
use rm_store_sql::{HostRepositoryRow, JoinedRepositoryRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::backend;
use crate::{require_live_host, upsert_repository, write_audit, SqliteStore};

#[async_trait]
impl RepositoryStore for SqliteStore {
    async fn set_repository(
        &self,
        host: HostId,
        sealed: &SealedRepository,
        key: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let host_id = host.to_string();
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        upsert_repository(&mut tx, &host_id, sealed, key, None).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn delete_own_repository(
        &self,
        host: HostId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let host_id = host.to_string();
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        let deleted =
            sqlx::query("DELETE FROM host_repositories WHERE host_id = ? AND policy_id IS NULL")
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        if deleted == 0 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn set_repository_key(&self, host: HostId, key: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE host_repositories SET repository_key = ? WHERE host_id = ?")
            .bind(key)
            .bind(host.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn repository_key(&self, host: HostId) -> StoreResult<Option<String>> {
        let key: Option<Option<String>> = sqlx::query_scalar(
            "SELECT host_repositories.repository_key FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id \
             WHERE host_repositories.host_id = ? AND hosts.deleted_at IS NULL",
        )
        .bind(host.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(key.flatten())
    }

    async fn hosts_of_repository(&self, key: &str) -> StoreResult<Vec<Host>> {
        self.hosts_of_repository_impl(key).await
    }

    async fn repository_jobs(&self, key: &str) -> StoreResult<Vec<RepositoryJob>> {
        self.repository_jobs_impl(key).await
    }

    /// `Ok(None)` when the host has no settings stored;
    /// [`StoreError::NotFound`] when the host is unknown or deleted.
    async fn repository(&self, host: HostId) -> StoreResult<Option<SealedRepository>> {
        let sql = format!(
            "SELECT hosts.id AS host_id, {} FROM hosts \
             LEFT JOIN host_repositories ON host_repositories.host_id = hosts.id \
             WHERE hosts.id = ? AND hosts.deleted_at IS NULL",
            rm_store_sql::REPOSITORY_COLUMNS
        );
        let row = sqlx::query_as::<_, JoinedRepositoryRow>(AssertSqlSafe(sql))
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))?;
        // The host exists; the columns are NULL when no settings are joined.
        row.into_repository()
    }

    async fn repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository, Option<String>)>> {
        let sql = format!(
            "SELECT host_repositories.host_id AS host_id, refused, {} FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id \
             WHERE hosts.deleted_at IS NULL ORDER BY host_repositories.host_id",
            rm_store_sql::REPOSITORY_COLUMNS
        );
        sqlx::query_as::<_, HostRepositoryRow>(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .into_iter()
            .map(HostRepositoryRow::into_parts)
            .collect()
    }

    async fn set_repository_refused(&self, host: HostId, reason: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE host_repositories SET refused = ? WHERE host_id = ?")
            .bind(reason)
            .bind(host.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
}
