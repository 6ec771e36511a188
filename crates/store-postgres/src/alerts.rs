//! Alerts and silences: the PostgreSQL side of [`AlertStore`].
//!
//! Several servers may decide the same alert at once; each decision is one
//! statement whose condition PostgreSQL re-checks on the row it waited for
//! (READ COMMITTED), so it sticks once: `fire_alert` inserts with
//! `ON CONFLICT DO NOTHING` on the partial unique index `alerts_one_firing`,
//! resolving updates only a firing row, and acknowledging or ending a
//! silence reads its row `FOR UPDATE` before deciding.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{AlertId, HostId, SilenceId};
use rm_store::{
    AlertFilter, AlertRecord, AlertStore, NewAlert, NewAuditEntry, SilenceRecord, StoreError,
    StoreResult,
};
use rm_store_sql::encode;
use rm_store_sql::encode::ms;
use rm_store_sql::{AlertRow, SilenceRow, ALERT_COLUMNS, SILENCE_COLUMNS};
// The SQL texts here are built from constant column lists, constant
// clauses and `$n` placeholders; values are always bound.
use sqlx::AssertSqlSafe;

use crate::shared::{
    db_error, fetch_all_models, fetch_optional_model, finish, finish_if, selector_param,
    selector_sql, write_audit,
};
use crate::PostgresStore;

/// Most alerts one list or due read returns.
const MAX_ALERTS: u32 = 1000;

/// [`ALERT_COLUMNS`] qualified by `alerts.`, for reads that join hosts.
fn qualified_alert_columns() -> String {
    ALERT_COLUMNS
        .split(", ")
        .map(|c| format!("alerts.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl AlertStore for PostgresStore {
    async fn fire_alert(&self, new: &NewAlert, audit: Option<&NewAuditEntry>) -> StoreResult<bool> {
        let started = ms(new.started_at);
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // A second server firing the same alert waits on the index entry
            // of the first's row and, once that commits, inserts nothing.
            let inserted = sqlx::query(
            "INSERT INTO alerts (id, kind, host_id, subject, state, message, job_id, started_at, \
             next_notify_at) VALUES ($1, $2, $3, $4, 'firing', $5, $6, $7, $7) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(&new.kind)
        .bind(new.host_id.to_string())
        .bind(&new.subject)
        .bind(&new.message)
        .bind(new.job_id.map(|j| j.to_string()))
        .bind(started)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            > 0;
            if inserted {
                write_audit(&mut tx, audit).await?;
            }
            Ok(inserted)
        }
        .await;
        finish_if(tx, result, |inserted| *inserted).await
    }

    async fn resolve_alert(
        &self,
        host: HostId,
        kind: &str,
        subject: &str,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AlertRecord>> {
        let sql = format!(
            "UPDATE alerts SET state = 'resolved', resolved_at = $1, resolved_message = $2, \
             next_notify_at = CASE WHEN notifications > 0 THEN $1 END \
             WHERE host_id = $3 AND kind = $4 AND subject = $5 AND state = 'firing' \
             RETURNING {ALERT_COLUMNS}"
        );
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let resolved: Option<AlertRecord> = fetch_optional_model(
                &mut *tx,
                sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
                    .bind(ms(at))
                    .bind(message)
                    .bind(host.to_string())
                    .bind(kind)
                    .bind(subject),
            )
            .await?;
            if resolved.is_some() {
                write_audit(&mut tx, audit).await?;
            }
            Ok(resolved)
        }
        .await;
        finish_if(tx, result, Option::is_some).await
    }

    async fn resolve_host_alerts(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let resolved = sqlx::query(
                "UPDATE alerts SET state = 'resolved', resolved_at = $1, resolved_message = $2, \
             next_notify_at = CASE WHEN notifications > 0 THEN $1 END \
             WHERE host_id = $3 AND state = 'firing'",
            )
            .bind(ms(at))
            .bind(message)
            .bind(host.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if resolved > 0 {
                write_audit(&mut tx, audit).await?;
            }
            Ok(resolved)
        }
        .await;
        finish_if(tx, result, |resolved| *resolved > 0).await
    }

    async fn alert(&self, id: AlertId) -> StoreResult<Option<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> StoreResult<Vec<AlertRecord>> {
        // Every condition has its placeholder whether or not it is set (a
        // NULL parameter turns it off), so the SQL text is one constant
        // and stays prepared.
        let sql = format!(
            "SELECT {} FROM alerts JOIN hosts ON hosts.id = alerts.host_id \
             WHERE ($1::BOOLEAN IS NULL OR (alerts.state = 'firing') = $1) \
             AND ($2::BOOLEAN IS NULL OR (alerts.acknowledged_at IS NOT NULL) = $2) \
             AND ($3::TEXT IS NULL OR alerts.host_id = $3) \
             AND ($4::TEXT IS NULL OR alerts.kind = $4) \
             AND ($5::TEXT IS NULL OR alerts.id < $5) \
             AND {} ORDER BY alerts.id DESC LIMIT $7",
            qualified_alert_columns(),
            selector_sql(6)
        );
        let selector = filter.selector.clone().unwrap_or_default();
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
                .bind(filter.firing)
                .bind(filter.acknowledged)
                .bind(filter.host_id.map(|h| h.to_string()))
                .bind(&filter.kind)
                .bind(filter.before.map(|b| b.to_string()))
                .bind(selector_param(&selector))
                .bind(i64::from(filter.limit.clamp(1, MAX_ALERTS))),
        )
        .await
    }

    async fn firing_alerts(&self) -> StoreResult<Vec<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing' ORDER BY id");
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql)),
        )
        .await
    }

    async fn firing_alert_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, COUNT(*) FROM alerts WHERE state = 'firing' GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        // A COUNT is never negative.
        Ok(rows
            .into_iter()
            .map(|(kind, n)| (kind, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn acknowledge_alert(
        &self,
        id: AlertId,
        by: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<AlertRecord> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // FOR UPDATE: of two acknowledgements (or one racing a resolution)
            // the second waits here and then sees the first's outcome.
            let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE");
            let current: AlertRecord = fetch_optional_model(
                &mut *tx,
                sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql)).bind(id.to_string()),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("alert `{id}`")))?;
            if !current.firing {
                return Err(StoreError::Conflict(format!("alert `{id}` is resolved")));
            }
            if let Some(by) = &current.acknowledged_by {
                return Err(StoreError::Conflict(format!(
                    "alert `{id}` was acknowledged already by {by}"
                )));
            }
            let sql = format!(
            "UPDATE alerts SET acknowledged_by = $1, acknowledged_at = $2, next_notify_at = NULL \
             WHERE id = $3 RETURNING {ALERT_COLUMNS}"
        );
            let acknowledged: AlertRecord = fetch_optional_model(
                &mut *tx,
                sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
                    .bind(by)
                    .bind(ms(at))
                    .bind(id.to_string()),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("alert `{id}`")))?;
            write_audit(&mut tx, audit).await?;
            Ok(acknowledged)
        }
        .await;
        finish(tx, result).await
    }

    async fn alerts_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<AlertRecord>> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE next_notify_at IS NOT NULL \
             AND next_notify_at <= $1 ORDER BY next_notify_at, id LIMIT $2"
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
                .bind(ms(now))
                .bind(i64::from(limit.clamp(1, MAX_ALERTS))),
        )
        .await
    }

    async fn next_alert_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_notify_at) FROM alerts WHERE next_notify_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        rm_store_sql::time_opt("next_notify_at", due)
    }

    async fn alert_notified(
        &self,
        id: AlertId,
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        // One statement: the CASE reads the row as it is when the UPDATE
        // gets its lock, so an acknowledgement or resolution committed
        // meanwhile is seen. A firing notice (`next` given) of an alert
        // acknowledged meanwhile does not bring its repeats back; of one
        // resolved meanwhile it leaves the resolution due (resolving it saw
        // no notice sent yet, or was due already), so the receiver hears
        // the end too.
        sqlx::query(
            "UPDATE alerts SET notified_at = $1, notifications = notifications + 1, \
             next_notify_at = CASE \
               WHEN state = 'firing' AND acknowledged_at IS NULL \
                    AND next_notify_at IS NOT NULL THEN $2 \
               WHEN state = 'resolved' AND $2 IS NOT NULL \
                    THEN COALESCE(next_notify_at, resolved_at) \
             END WHERE id = $3",
        )
        .bind(ms(at))
        .bind(next.map(ms))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn hold_alert(&self, id: AlertId, until: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE alerts SET next_notify_at = $1 \
             WHERE id = $2 AND state = 'firing' AND next_notify_at IS NOT NULL",
        )
        .bind(ms(until))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn create_silence(
        &self,
        s: &SilenceRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "INSERT INTO silences (id, selector, until, reason, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(s.id.to_string())
            .bind(encode::labels_json(&s.selector.0))
            .bind(ms(s.until))
            .bind(&s.reason)
            .bind(&s.created_by)
            .bind(ms(s.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn silences(&self, after: Option<DateTime<Utc>>) -> StoreResult<Vec<SilenceRecord>> {
        let sql =
            format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE until > $1 ORDER BY until, id");
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, SilenceRow>(AssertSqlSafe(sql))
                .bind(after.map(ms).unwrap_or(i64::MIN)),
        )
        .await
    }

    async fn delete_silence(
        &self,
        id: SilenceId,
        now: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // FOR UPDATE: a second ending of the same silence waits here and
            // then reads it ended (a conflict), not the end it had before.
            let until: i64 =
                sqlx::query_scalar("SELECT until FROM silences WHERE id = $1 FOR UPDATE")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| StoreError::NotFound(format!("silence `{id}`")))?;
            if until <= ms(now) {
                return Err(StoreError::Conflict(format!(
                    "silence `{id}` has ended already"
                )));
            }
            // Kept, ending now: the list of all silences is their history.
            sqlx::query("UPDATE silences SET until = $1 WHERE id = $2")
                .bind(ms(now))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            // Firing alerts held back until exactly this silence's end are due
            // now (another silence still covering one holds it again); repeats
            // merely scheduled before that end keep their time.
            sqlx::query(
                "UPDATE alerts SET next_notify_at = $1 WHERE state = 'firing' \
             AND next_notify_at = $2",
            )
            .bind(ms(now))
            .bind(until)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }
}
