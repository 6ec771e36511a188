//! Notification channels and their outbox (migration 0014): the SQLite
//! side of [`NotificationStore`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::ChannelId;
use rm_store::{
    ChannelRecord, DeliveryOutcome, NewAuditEntry, NewNotification, NotificationStore, OutboxRow,
    StoreError, StoreResult,
};
use rm_store_sql::encode;
use rm_store_sql::encode::ms;
use rm_store_sql::{ChannelRow, OutboxEntryRow, CHANNEL_COLUMNS, OUTBOX_COLUMNS};
// The SQL texts here are built from constant column lists; values are
// always bound.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{insert_error, write_audit, SqliteStore};

/// Longest error text kept on a row or channel, in characters.
const MAX_ERROR_CHARS: usize = 1000;

fn clipped(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

fn duplicate_name(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("a notification channel named `{name}` already exists")
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn create_channel(
        &self,
        c: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO notification_channels (id, name, kind, config, secret_nonce, \
             secret_ciphertext, selector, kinds, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.to_string())
        .bind(&c.name)
        .bind(&c.kind)
        .bind(c.config.to_string())
        .bind(c.secret.as_ref().map(|s| s.nonce.clone()))
        .bind(c.secret.as_ref().map(|s| s.ciphertext.clone()))
        .bind(encode::labels_json(&c.selector.0))
        .bind(encode::json_strings(&c.kinds))
        .bind(ms(c.created_at))
        .bind(ms(c.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, duplicate_name(&c.name), "notification channel"))?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn update_channel(
        &self,
        c: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE notification_channels SET name = ?, kind = ?, config = ?, secret_nonce = ?, \
             secret_ciphertext = ?, selector = ?, kinds = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&c.name)
        .bind(&c.kind)
        .bind(c.config.to_string())
        .bind(c.secret.as_ref().map(|s| s.nonce.clone()))
        .bind(c.secret.as_ref().map(|s| s.ciphertext.clone()))
        .bind(encode::labels_json(&c.selector.0))
        .bind(encode::json_strings(&c.kinds))
        .bind(ms(c.updated_at))
        .bind(c.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, duplicate_name(&c.name), "notification channel"))?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!(
                "notification channel `{}`",
                c.id
            )));
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn delete_channel(
        &self,
        id: ChannelId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let id = id.to_string();
        // Explicitly, not only by the foreign key's cascade: a database
        // opened without foreign keys must not keep orphans either.
        sqlx::query("DELETE FROM notification_outbox WHERE channel_id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM notification_channels WHERE id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if deleted == 0 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("notification channel `{id}`")));
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = ?");
        sqlx::query_as::<_, ChannelRow>(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(ChannelRecord::try_from)
            .transpose()
    }

    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels ORDER BY name");
        sqlx::query_as::<_, ChannelRow>(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .into_iter()
            .map(ChannelRecord::try_from)
            .collect()
    }

    async fn enqueue_notifications(&self, rows: &[NewNotification]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for row in rows {
            let inserted = sqlx::query(
                "INSERT INTO notification_outbox (channel_id, alert_id, event, payload, \
                 next_attempt_at, created_at) \
                 SELECT id, ?, ?, ?, ?, ? FROM notification_channels WHERE id = ?",
            )
            .bind(&row.alert_id)
            .bind(&row.event)
            .bind(row.payload.to_string())
            .bind(ms(row.created_at))
            .bind(ms(row.created_at))
            .bind(row.channel_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await.map_err(backend)?;
                return Err(StoreError::NotFound(format!(
                    "notification channel `{}`",
                    row.channel_id
                )));
            }
        }
        tx.commit().await.map_err(backend)
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let until = ms(now).saturating_add(lease_ms);
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE notification_outbox SET attempts = attempts + 1, next_attempt_at = ? \
             WHERE id IN (SELECT id FROM notification_outbox \
              WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= ? \
              ORDER BY next_attempt_at, id LIMIT ?) \
             RETURNING {OUTBOX_COLUMNS}"
        );
        let rows = sqlx::query_as::<_, OutboxEntryRow>(AssertSqlSafe(sql))
            .bind(until)
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let mut claimed = rows
            .into_iter()
            .map(OutboxRow::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|r| r.id);
        Ok(claimed)
    }

    async fn finish_notification(&self, id: u64, outcome: &DeliveryOutcome) -> StoreResult<bool> {
        let id = encode::u64_to_i64(id, "outbox row id")?;
        let mut tx = self.begin_write().await?;
        let (sql, at, error, retry_at) = match outcome {
            DeliveryOutcome::Delivered { at } => (
                "UPDATE notification_outbox SET delivered_at = ?, last_error = ? \
                 WHERE id = ? AND delivered_at IS NULL AND given_up_at IS NULL \
                 RETURNING channel_id",
                *at,
                None,
                None,
            ),
            DeliveryOutcome::Retry {
                at,
                error,
                retry_at,
            } => (
                "UPDATE notification_outbox SET next_attempt_at = ?, last_error = ? \
                 WHERE id = ? AND delivered_at IS NULL AND given_up_at IS NULL \
                 RETURNING channel_id",
                *at,
                Some(clipped(error)),
                Some(*retry_at),
            ),
            DeliveryOutcome::GiveUp { at, error } => (
                "UPDATE notification_outbox SET given_up_at = ?, last_error = ? \
                 WHERE id = ? AND delivered_at IS NULL AND given_up_at IS NULL \
                 RETURNING channel_id",
                *at,
                Some(clipped(error)),
                None,
            ),
        };
        let first = retry_at.unwrap_or(at);
        let row = sqlx::query(sql)
            .bind(ms(first))
            .bind(&error)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        };
        let channel_id = codec::text(&row, "channel_id")?;
        let counters = match outcome {
            DeliveryOutcome::Delivered { .. } => {
                "UPDATE notification_channels SET delivered = delivered + 1, \
                 last_success_at = ?1, failing_since = NULL WHERE id = ?2"
            }
            DeliveryOutcome::Retry { .. } => {
                "UPDATE notification_channels SET failed = failed + 1, last_failure_at = ?1, \
                 failing_since = COALESCE(failing_since, ?1), last_error = ?2 WHERE id = ?3"
            }
            DeliveryOutcome::GiveUp { .. } => {
                "UPDATE notification_channels SET failed = failed + 1, given_up = given_up + 1, \
                 last_failure_at = ?1, failing_since = COALESCE(failing_since, ?1), \
                 last_error = ?2 WHERE id = ?3"
            }
        };
        let query = sqlx::query(counters).bind(ms(at));
        let query = match outcome {
            DeliveryOutcome::Delivered { .. } => query.bind(&channel_id),
            _ => query.bind(&error).bind(&channel_id),
        };
        query.execute(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn next_notification_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS due FROM notification_outbox \
             WHERE delivered_at IS NULL AND given_up_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        codec::time_opt(&row, "due")
    }

    async fn prune_notifications(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM notification_outbox WHERE created_at < ? \
             AND (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)",
        )
        .bind(ms(before))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }
}
