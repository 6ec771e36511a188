//! Alerts and silences (migration 0013) for the SQLite store.
//!
//! The partial unique index `alerts_one_firing` is what makes a firing
//! alert unique per (host, kind, subject): `fire_alert` inserts with
//! `ON CONFLICT DO NOTHING`, so two deciders racing fire it once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{AlertId, HostId, SilenceId};
use rm_store::{
    AlertFilter, AlertRecord, AlertStore, NewAlert, NewAuditEntry, SilenceRecord, StoreError,
    StoreResult,
};
use rm_store_sql::encode;
use rm_store_sql::encode::ms;
use rm_store_sql::{AlertRow, SilenceRow, ALERT_COLUMNS};
// The SQL texts here are built from constant column lists and the
// selector's `?` clauses; values are always bound.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{bind_selector, selector_sql, write_audit, SqliteStore};

impl SqliteStore {
    async fn alerts_where(&self, clause: &str, bind: &[String]) -> StoreResult<Vec<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts {clause}");
        let mut query = sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql));
        for value in bind {
            query = query.bind(value.clone());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(backend)?;
        rows.into_iter().map(AlertRecord::try_from).collect()
    }
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn fire_alert(&self, new: &NewAlert, audit: Option<&NewAuditEntry>) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let started = ms(new.started_at);
        let inserted = sqlx::query(
            "INSERT INTO alerts (id, kind, host_id, subject, state, message, job_id, started_at, \
             next_notify_at) VALUES (?, ?, ?, ?, 'firing', ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(&new.kind)
        .bind(new.host_id.to_string())
        .bind(&new.subject)
        .bind(&new.message)
        .bind(new.job_id.map(|j| j.to_string()))
        .bind(started)
        .bind(started)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            > 0;
        if !inserted {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
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
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?1, resolved_message = ?2, \
             next_notify_at = CASE WHEN notifications > 0 THEN ?1 END \
             WHERE host_id = ?3 AND kind = ?4 AND subject = ?5 AND state = 'firing' \
             RETURNING {ALERT_COLUMNS}"
        );
        let row = sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
            .bind(ms(at))
            .bind(message)
            .bind(host.to_string())
            .bind(kind)
            .bind(subject)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Ok(None);
        };
        let resolved = AlertRecord::try_from(row)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(resolved))
    }

    async fn resolve_host_alerts(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let resolved = sqlx::query(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?1, resolved_message = ?2, \
             next_notify_at = CASE WHEN notifications > 0 THEN ?1 END \
             WHERE host_id = ?3 AND state = 'firing'",
        )
        .bind(ms(at))
        .bind(message)
        .bind(host.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if resolved == 0 {
            tx.rollback().await.map_err(backend)?;
            return Ok(0);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(resolved)
    }

    async fn alert(&self, id: AlertId) -> StoreResult<Option<AlertRecord>> {
        Ok(self
            .alerts_where("WHERE id = ?", &[id.to_string()])
            .await?
            .pop())
    }

    async fn list_alerts(&self, filter: &AlertFilter) -> StoreResult<Vec<AlertRecord>> {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        if let Some(firing) = filter.firing {
            clauses.push(if firing {
                "alerts.state = 'firing'"
            } else {
                "alerts.state = 'resolved'"
            });
        }
        if let Some(acknowledged) = filter.acknowledged {
            clauses.push(if acknowledged {
                "alerts.acknowledged_at IS NOT NULL"
            } else {
                "alerts.acknowledged_at IS NULL"
            });
        }
        if let Some(host) = filter.host_id {
            clauses.push("alerts.host_id = ?");
            values.push(host.to_string());
        }
        if let Some(kind) = &filter.kind {
            clauses.push("alerts.kind = ?");
            values.push(kind.clone());
        }
        if let Some(before) = filter.before {
            clauses.push("alerts.id < ?");
            values.push(before.to_string());
        }
        let selector = filter.selector.clone().unwrap_or_default();
        let mut sql = format!(
            "SELECT {} FROM alerts JOIN hosts ON hosts.id = alerts.host_id WHERE 1 = 1",
            ALERT_COLUMNS
                .split(", ")
                .map(|c| format!("alerts.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for clause in &clauses {
            sql.push_str(" AND ");
            sql.push_str(clause);
        }
        sql.push_str(&selector_sql(&selector));
        sql.push_str(" ORDER BY alerts.id DESC LIMIT ?");
        let mut query = sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        let query = bind_selector(query, &selector).bind(i64::from(filter.limit.clamp(1, 1000)));
        let rows = query.fetch_all(&self.pool).await.map_err(backend)?;
        rows.into_iter().map(AlertRecord::try_from).collect()
    }

    async fn firing_alerts(&self) -> StoreResult<Vec<AlertRecord>> {
        self.alerts_where("WHERE state = 'firing' ORDER BY id", &[])
            .await
    }

    async fn firing_alert_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS n FROM alerts WHERE state = 'firing' GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| Ok((codec::text(row, "kind")?, codec::u64_col(row, "n")?)))
            .collect()
    }

    async fn acknowledge_alert(
        &self,
        id: AlertId,
        by: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<AlertRecord> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?");
        let current = sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("alert `{id}`")))?;
        let current = AlertRecord::try_from(current)?;
        if !current.firing {
            return Err(StoreError::Conflict(format!("alert `{id}` is resolved")));
        }
        if let Some(by) = &current.acknowledged_by {
            return Err(StoreError::Conflict(format!(
                "alert `{id}` was acknowledged already by {by}"
            )));
        }
        let sql = format!(
            "UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, next_notify_at = NULL \
             WHERE id = ? RETURNING {ALERT_COLUMNS}"
        );
        let row = sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
            .bind(by)
            .bind(ms(at))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let acknowledged = AlertRecord::try_from(row)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(acknowledged)
    }

    async fn alerts_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<AlertRecord>> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE next_notify_at IS NOT NULL \
             AND next_notify_at <= ? ORDER BY next_notify_at, id LIMIT ?"
        );
        let rows = sqlx::query_as::<_, AlertRow>(AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.into_iter().map(AlertRecord::try_from).collect()
    }

    async fn next_alert_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(next_notify_at) AS due FROM alerts WHERE next_notify_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        codec::time_opt(&row, "due")
    }

    async fn alert_notified(
        &self,
        id: AlertId,
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        // A firing notice (`next` given) of an alert acknowledged meanwhile
        // does not bring its repeats back; of one resolved meanwhile it
        // leaves the resolution due (resolving it saw no notice sent yet,
        // or was due already), so the receiver hears the end too.
        sqlx::query(
            "UPDATE alerts SET notified_at = ?1, notifications = notifications + 1, \
             next_notify_at = CASE \
               WHEN state = 'firing' AND acknowledged_at IS NULL \
                    AND next_notify_at IS NOT NULL THEN ?2 \
               WHEN state = 'resolved' AND ?2 IS NOT NULL \
                    THEN COALESCE(next_notify_at, resolved_at) \
             END WHERE id = ?3",
        )
        .bind(ms(at))
        .bind(next.map(ms))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn hold_alert(&self, id: AlertId, until: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE alerts SET next_notify_at = ? \
             WHERE id = ? AND state = 'firing' AND next_notify_at IS NOT NULL",
        )
        .bind(ms(until))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn create_silence(
        &self,
        s: &SilenceRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO silences (id, selector, until, reason, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(encode::labels_json(&s.selector.0))
        .bind(ms(s.until))
        .bind(&s.reason)
        .bind(&s.created_by)
        .bind(ms(s.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn silences(&self, after: Option<DateTime<Utc>>) -> StoreResult<Vec<SilenceRecord>> {
        let rows = sqlx::query_as::<_, SilenceRow>(
            "SELECT id, selector, until, reason, created_by, created_at FROM silences \
             WHERE until > ? ORDER BY until, id",
        )
        .bind(after.map(ms).unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(SilenceRecord::try_from).collect()
    }

    async fn delete_silence(
        &self,
        id: SilenceId,
        now: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT until FROM silences WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("silence `{id}`")))?;
        let until = codec::time(&row, "until")?;
        if until <= now {
            return Err(StoreError::Conflict(format!(
                "silence `{id}` has ended already"
            )));
        }
        // Kept, ending now: the list of all silences is their history.
        sqlx::query("UPDATE silences SET until = ? WHERE id = ?")
            .bind(ms(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // Firing alerts held back until exactly this silence's end are due
        // now (another silence still covering one holds it again); repeats
        // merely scheduled before that end keep their time.
        sqlx::query(
            "UPDATE alerts SET next_notify_at = ?1 WHERE state = 'firing' \
             AND next_notify_at = ?2",
        )
        .bind(ms(now))
        .bind(ms(until))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}
