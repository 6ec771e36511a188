//! The SQLite side of [`rm_store::VerificationStore`]: repositories'
//! rotating verification records. The read, the cycle rules and the write
//! happen inside one write transaction, which SQLite's single writer
//! serialises.

use async_trait::async_trait;
use chrono::Utc;
use rm_core::verification::{VerificationCycle, VerificationRun};
use rm_store::prelude::*;
use rm_store::StoreResult;
use rm_store_sql::encode::{ms, ms_opt};
use rm_store_sql::{subsets_text, VerificationRow, VERIFICATION_COLUMNS};
// The SQL text is built from a constant column list; values are bound.
use sqlx::AssertSqlSafe;

use crate::codec::backend;
use crate::SqliteStore;

fn select_sql() -> String {
    format!("SELECT {VERIFICATION_COLUMNS} FROM repository_verification WHERE repository_key = ?")
}

#[async_trait]
impl VerificationStore for SqliteStore {
    async fn verification(&self, key: &str) -> StoreResult<Option<VerificationCycle>> {
        sqlx::query_as::<_, VerificationRow>(AssertSqlSafe(select_sql()))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(VerificationCycle::try_from)
            .transpose()
    }

    async fn record_verification(
        &self,
        key: &str,
        run: &VerificationRun,
    ) -> StoreResult<VerificationCycle> {
        let mut tx = self.begin_write().await?;
        let mut record = sqlx::query_as::<_, VerificationRow>(AssertSqlSafe(select_sql()))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .map(VerificationCycle::try_from)
            .transpose()?;
        let current = record.get_or_insert_with(|| VerificationCycle::new(run.cycle));
        if !current.apply(run) {
            tx.rollback().await.map_err(backend)?;
            return Ok(current.clone());
        }
        sqlx::query(
            "INSERT INTO repository_verification (repository_key, cycle, subsets_done, \
             cycle_started_at, last_error, failed_subset, last_subset, last_run_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repository_key) DO UPDATE SET \
             cycle = excluded.cycle, subsets_done = excluded.subsets_done, \
             cycle_started_at = excluded.cycle_started_at, last_error = excluded.last_error, \
             failed_subset = excluded.failed_subset, last_subset = excluded.last_subset, \
             last_run_at = excluded.last_run_at, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(i64::from(current.cycle))
        .bind(subsets_text(current))
        .bind(ms_opt(current.cycle_started_at))
        .bind(&current.last_error)
        .bind(current.failed_subset.map(i64::from))
        .bind(current.last_subset.map(i64::from))
        .bind(ms_opt(current.last_run_at))
        .bind(ms(Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(current.clone())
    }
}
