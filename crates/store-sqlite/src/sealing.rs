//! The SQLite side of [`rm_store::SealingStore`]: the key that seals the
//! store's secrets and re-sealing.

use async_trait::async_trait;
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{
    NewAuditEntry, SealFormat, SealedRepository, SealingKeyRecord, StoreError, StoreResult,
};
use rm_store_sql::encode::ms;
use rm_store_sql::{HostRepositoryRow, SealingKeyRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{write_audit, SqliteStore};

/// Makes `record` the one `sealing_key` row, inside the caller's
/// transaction.
async fn upsert_sealing_key(
    conn: &mut sqlx::SqliteConnection,
    record: &SealingKeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sealing_key (id, fingerprint, recorded_at) VALUES (1, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, \
         recorded_at = excluded.recorded_at",
    )
    .bind(&record.fingerprint)
    .bind(ms(record.recorded_at))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl SealingStore for SqliteStore {
    async fn sealing_key_record(&self) -> StoreResult<Option<SealingKeyRecord>> {
        sqlx::query_as::<_, SealingKeyRow>(
            "SELECT fingerprint, recorded_at FROM sealing_key WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(SealingKeyRecord::try_from)
        .transpose()
    }

    async fn sealed_repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository)>> {
        let sql = format!(
            "SELECT host_id, refused, {} FROM host_repositories ORDER BY host_id",
            rm_store_sql::REPOSITORY_COLUMNS
        );
        sqlx::query_as::<_, HostRepositoryRow>(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .into_iter()
            .map(|row| row.into_parts().map(|(host, sealed, _)| (host, sealed)))
            .collect()
    }

    async fn record_sealing_key(
        &self,
        record: &SealingKeyRecord,
        resealed: &[(HostId, SealedRepository)],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (host, sealed) in resealed {
            // Only a value still stored unbound is replaced: re-sealing
            // twice, or over a value set meanwhile, changes nothing.
            let replaced = sqlx::query(
                "UPDATE host_repositories SET nonce = ?, ciphertext = ?, seal_format = ? \
                 WHERE host_id = ? AND seal_format = ?",
            )
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(sealed.format.as_i64())
            .bind(host.to_string())
            .bind(SealFormat::Unbound.as_i64())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if replaced != 1 {
                tx.rollback().await.map_err(backend)?;
                return Err(StoreError::Conflict(format!(
                    "the repository settings of host `{host}` are no longer stored unbound"
                )));
            }
        }
        upsert_sealing_key(&mut tx, record).await?;
        tx.commit().await.map_err(backend)
    }

    async fn reset_sealed_secrets(
        &self,
        record: &SealingKeyRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<HostId>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("DELETE FROM host_repositories RETURNING host_id")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut hosts = rows
            .iter()
            .map(|row| codec::parsed::<HostId>(row, "host_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        hosts.sort();
        // Policies' repository templates were sealed with the lost key too.
        sqlx::query("UPDATE policies SET repository_nonce = NULL, repository_ciphertext = NULL")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        upsert_sealing_key(&mut tx, record).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(hosts)
    }
}
