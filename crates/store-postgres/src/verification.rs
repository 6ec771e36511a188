//! The PostgreSQL side of [`rm_store::VerificationStore`]: repositories'
//! rotating verification records. Several servers may take the ends of
//! two hosts' checks of one repository at once, so a record is made if
//! missing and then read `FOR UPDATE`: the second writer waits for the
//! first and applies its run to the record the first left.

use async_trait::async_trait;
use chrono::Utc;
use rm_core::verification::{VerificationCycle, VerificationRun};
use rm_store::prelude::*;
use rm_store::StoreResult;
use rm_store_sql::encode::{ms, ms_opt};
use rm_store_sql::{subsets_text, VerificationRow, VERIFICATION_COLUMNS};
// The SQL text is built from a constant column list; values are bound.
use sqlx::AssertSqlSafe;

use crate::shared::{db_error, finish_if};
use crate::PostgresStore;

#[async_trait]
impl VerificationStore for PostgresStore {
    async fn verification(&self, key: &str) -> StoreResult<Option<VerificationCycle>> {
        let sql = format!(
            "SELECT {VERIFICATION_COLUMNS} FROM repository_verification WHERE repository_key = $1"
        );
        sqlx::query_as::<_, VerificationRow>(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .map(VerificationCycle::try_from)
            .transpose()
    }

    async fn record_verification(
        &self,
        key: &str,
        run: &VerificationRun,
    ) -> StoreResult<VerificationCycle> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<(VerificationCycle, bool)> = async {
            let now = ms(Utc::now());
            // An empty record to lock when there is none yet; rolled back
            // with everything else when the run changes nothing.
            sqlx::query(
                "INSERT INTO repository_verification (repository_key, cycle, subsets_done, \
                 updated_at) VALUES ($1, $2, '[]', $3) ON CONFLICT (repository_key) DO NOTHING",
            )
            .bind(key)
            .bind(i64::from(run.cycle))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            let sql = format!(
                "SELECT {VERIFICATION_COLUMNS} FROM repository_verification \
                 WHERE repository_key = $1 FOR UPDATE"
            );
            let mut record = VerificationCycle::try_from(
                sqlx::query_as::<_, VerificationRow>(AssertSqlSafe(sql))
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?,
            )?;
            if !record.apply(run) {
                return Ok((record, false));
            }
            sqlx::query(
                "UPDATE repository_verification SET cycle = $2, subsets_done = $3, \
                 cycle_started_at = $4, last_error = $5, failed_subset = $6, last_subset = $7, \
                 last_run_at = $8, updated_at = $9 WHERE repository_key = $1",
            )
            .bind(key)
            .bind(i64::from(record.cycle))
            .bind(subsets_text(&record))
            .bind(ms_opt(record.cycle_started_at))
            .bind(&record.last_error)
            .bind(record.failed_subset.map(i64::from))
            .bind(record.last_subset.map(i64::from))
            .bind(ms_opt(record.last_run_at))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            Ok((record, true))
        }
        .await;
        finish_if(tx, result, |(_, changed)| *changed)
            .await
            .map(|(record, _)| record)
    }
}
