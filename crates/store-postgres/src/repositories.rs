//! The PostgreSQL side of [`rm_store::RepositoryStore`]: hosts' sealed
//! repository settings and repository identities.

use async_trait::async_trait;
use rm_core::{HostId, JobStatus};
use rm_store::prelude::*;
use rm_store::{Host, NewAuditEntry, RepositoryJob, SealedRepository, StoreError, StoreResult};
use rm_store_sql::{HostRepositoryRow, HostRow, JoinedRepositoryRow, RepositoryJobRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists and `$n` placeholders; values are always bound, never
// formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::shared::{
    db_error, fetch_all_models, finish, read_hosts, require_live_host, upsert_repository,
    write_audit, HOST_COLUMNS,
};
use crate::PostgresStore;

#[async_trait]
impl RepositoryStore for PostgresStore {
    async fn set_repository(
        &self,
        host: HostId,
        sealed: &SealedRepository,
        key: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let host_id = host.to_string();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The host's row stays locked (FOR SHARE) until commit: a deletion
            // at the same time waits, and never leaves settings on a deleted
            // host.
            require_live_host(&mut tx, &host_id).await?;
            upsert_repository(&mut tx, &host_id, sealed, key, None).await?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn delete_own_repository(
        &self,
        host: HostId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let host_id = host.to_string();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            require_live_host(&mut tx, &host_id).await?;
            let deleted = sqlx::query(
                "DELETE FROM host_repositories WHERE host_id = $1 AND policy_id IS NULL",
            )
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_audit(&mut tx, audit).await?;
            Ok(true)
        }
        .await;
        finish(tx, result).await
    }

    async fn set_repository_key(&self, host: HostId, key: &str) -> StoreResult<()> {
        sqlx::query("UPDATE host_repositories SET repository_key = $1 WHERE host_id = $2")
            .bind(key)
            .bind(host.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn repository_key(&self, host: HostId) -> StoreResult<Option<String>> {
        let key: Option<Option<String>> = sqlx::query_scalar(
            "SELECT host_repositories.repository_key FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id \
             WHERE host_repositories.host_id = $1 AND hosts.deleted_at IS NULL",
        )
        .bind(host.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(key.flatten())
    }

    async fn hosts_of_repository(&self, key: &str) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE deleted_at IS NULL AND id IN \
             (SELECT host_id FROM host_repositories WHERE repository_key = $1) ORDER BY id"
        );
        read_hosts(
            &self.pool,
            sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)).bind(key),
        )
        .await
    }

    async fn repository_jobs(&self, key: &str) -> StoreResult<Vec<RepositoryJob>> {
        let unfinished: Vec<&str> = [JobStatus::Queued, JobStatus::Dispatched, JobStatus::Running]
            .iter()
            .map(|s| s.as_str())
            .collect();
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, RepositoryJobRow>(
                "SELECT jobs.id AS id, jobs.host_id AS host_id, hosts.online AS online, \
                 jobs.kind AS kind, jobs.params AS params, jobs.status AS status, \
                 jobs.created_at AS created_at, job_batches.batch_id AS batch_id, \
                 job_batches.max_parallel AS max_parallel \
                 FROM host_repositories \
                 JOIN hosts ON hosts.id = host_repositories.host_id \
                      AND hosts.deleted_at IS NULL \
                 JOIN jobs ON jobs.host_id = hosts.id AND jobs.status = ANY($1) \
                 LEFT JOIN job_batches ON job_batches.job_id = jobs.id \
                 WHERE host_repositories.repository_key = $2 \
                 ORDER BY jobs.created_at, jobs.id",
            )
            .bind(&unfinished)
            .bind(key),
        )
        .await
    }

    /// `Ok(None)` when the host has no settings stored;
    /// [`StoreError::NotFound`] when the host is unknown or deleted.
    async fn repository(&self, host: HostId) -> StoreResult<Option<SealedRepository>> {
        let sql = format!(
            "SELECT {} FROM hosts \
             LEFT JOIN host_repositories ON host_repositories.host_id = hosts.id \
             WHERE hosts.id = $1 AND hosts.deleted_at IS NULL",
            rm_store_sql::REPOSITORY_COLUMNS_QUALIFIED
        );
        let row = sqlx::query_as::<_, JoinedRepositoryRow>(AssertSqlSafe(sql))
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))?;
        // The host exists; the columns are NULL when no settings are joined.
        row.into_repository()
    }

    async fn repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository, Option<String>)>> {
        let sql = format!(
            "SELECT host_repositories.host_id AS host_id, refused, {} FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id \
             WHERE hosts.deleted_at IS NULL ORDER BY host_repositories.host_id",
            rm_store_sql::REPOSITORY_COLUMNS_QUALIFIED
        );
        sqlx::query_as::<_, HostRepositoryRow>(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .into_iter()
            .map(HostRepositoryRow::into_parts)
            .collect()
    }

    async fn set_repository_refused(&self, host: HostId, reason: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE host_repositories SET refused = $1 WHERE host_id = $2")
            .bind(reason)
            .bind(host.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}
