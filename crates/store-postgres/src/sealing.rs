//! The PostgreSQL side of [`rm_store::SealingStore`]: the key that seals
//! the store's secrets and re-sealing.

use async_trait::async_trait;
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{
    NewAuditEntry, SealFormat, SealedRepository, SealingKeyRecord, StoreError, StoreResult,
};
use rm_store_sql::encode::ms;
use rm_store_sql::{HostRepositoryRow, SealingKeyRow};
use sqlx::postgres::PgConnection;
// The SQL text is built from a constant column list; values are bound.
use sqlx::AssertSqlSafe;

use crate::shared::{db_error, finish, write_audit};
use crate::PostgresStore;

/// Makes `record` the one `sealing_key` row, inside the caller's
/// transaction.
async fn upsert_sealing_key(conn: &mut PgConnection, record: &SealingKeyRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sealing_key (id, fingerprint, recorded_at) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, \
         recorded_at = excluded.recorded_at",
    )
    .bind(&record.fingerprint)
    .bind(ms(record.recorded_at))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl SealingStore for PostgresStore {
    async fn sealing_key_record(&self) -> StoreResult<Option<SealingKeyRecord>> {
        sqlx::query_as::<_, SealingKeyRow>(
            "SELECT fingerprint, recorded_at FROM sealing_key WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error(e))?
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
            .map_err(|e| self.error(e))?
            .into_iter()
            .map(|row| row.into_parts().map(|(host, sealed, _)| (host, sealed)))
            .collect()
    }

    async fn record_sealing_key(
        &self,
        record: &SealingKeyRecord,
        resealed: &[(HostId, SealedRepository)],
    ) -> StoreResult<()> {
        let mut hosts = Vec::with_capacity(resealed.len());
        let mut nonces = Vec::with_capacity(resealed.len());
        let mut ciphertexts = Vec::with_capacity(resealed.len());
        let mut formats = Vec::with_capacity(resealed.len());
        for (host, sealed) in resealed {
            hosts.push(host.to_string());
            nonces.push(sealed.nonce.clone());
            ciphertexts.push(sealed.ciphertext.clone());
            formats.push(sealed.format.as_i64());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // One statement for every host. Only a value still stored unbound
            // is replaced: re-sealing twice, or over a value set meanwhile (the
            // condition is re-checked on the committed row after a wait),
            // changes nothing, and then the whole change is refused.
            let replaced: Vec<String> = sqlx::query_scalar(
                "UPDATE host_repositories AS hr SET nonce = r.nonce, ciphertext = r.ciphertext, \
             seal_format = r.seal_format \
             FROM UNNEST($1::TEXT[], $2::BYTEA[], $3::BYTEA[], $4::BIGINT[]) \
                  AS r(host_id, nonce, ciphertext, seal_format) \
             WHERE hr.host_id = r.host_id AND hr.seal_format = $5 \
             RETURNING hr.host_id",
            )
            .bind(&hosts)
            .bind(&nonces)
            .bind(&ciphertexts)
            .bind(&formats)
            .bind(SealFormat::Unbound.as_i64())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            if let Some(missed) = hosts.iter().find(|h| !replaced.contains(h)) {
                return Err(StoreError::Conflict(format!(
                    "the repository settings of host `{missed}` are no longer stored unbound"
                )));
            }
            upsert_sealing_key(&mut tx, record).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn reset_sealed_secrets(
        &self,
        record: &SealingKeyRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<HostId>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let deleted: Vec<String> =
                sqlx::query_scalar("DELETE FROM host_repositories RETURNING host_id")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
            let mut hosts = deleted
                .iter()
                .map(|id| {
                    id.parse::<HostId>().map_err(|_| {
                        StoreError::Corrupt(format!("column `host_id`: `{id}` is not a ULID"))
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            hosts.sort();
            // Policies' repository templates were sealed with the lost key too.
            sqlx::query(
                "UPDATE policies SET repository_nonce = NULL, repository_ciphertext = NULL",
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            upsert_sealing_key(&mut tx, record).await?;
            write_audit(&mut tx, audit).await?;
            Ok(hosts)
        }
        .await;
        finish(tx, result).await
    }
}
