//! Notification channels and their outbox: the PostgreSQL side of
//! [`NotificationStore`].
//!
//! Several servers deliver from one outbox: a claim locks its rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint rows, and
//! an outcome is recorded by an `UPDATE … WHERE` the row is still waiting,
//! so a late second outcome of one row changes nothing.

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

use crate::codec;
use crate::shared::{
    db_error, fetch_all_models, fetch_optional_model, finish, finish_if, write_audit,
};
use crate::PostgresStore;

/// Longest error text kept on a row or channel, in characters.
const MAX_ERROR_CHARS: usize = 1000;

fn clipped(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

/// Maps a failed write of channel `name`: a taken name is a conflict.
fn channel_write_error(e: sqlx::Error, name: &str) -> StoreError {
    if codec::is_unique_violation(&e) {
        StoreError::Conflict(format!(
            "a notification channel named `{name}` already exists"
        ))
    } else {
        db_error(e)
    }
}

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn create_channel(
        &self,
        c: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "INSERT INTO notification_channels (id, name, kind, config, secret_nonce, \
             secret_ciphertext, selector, kinds, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            .map_err(|e| channel_write_error(e, &c.name))?;
            write_audit(&mut tx, audit).await
        }
        .await;
        finish(tx, result).await
    }

    async fn update_channel(
        &self,
        c: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            let changed = sqlx::query(
                "UPDATE notification_channels SET name = $1, kind = $2, config = $3, \
             secret_nonce = $4, secret_ciphertext = $5, selector = $6, kinds = $7, \
             updated_at = $8 WHERE id = $9",
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
            .map_err(|e| channel_write_error(e, &c.name))?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "notification channel `{}`",
                    c.id
                )));
            }
            write_audit(&mut tx, audit).await
        }
        .await;
        finish(tx, result).await
    }

    async fn delete_channel(
        &self,
        id: ChannelId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let id = id.to_string();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The outbox rows go by the foreign key's cascade.
            let deleted = sqlx::query("DELETE FROM notification_channels WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("notification channel `{id}`")));
            }
            write_audit(&mut tx, audit).await
        }
        .await;
        finish(tx, result).await
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = $1");
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, ChannelRow>(AssertSqlSafe(sql)).bind(id.to_string()),
        )
        .await
    }

    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels ORDER BY name");
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, ChannelRow>(AssertSqlSafe(sql)),
        )
        .await
    }

    async fn enqueue_notifications(&self, rows: &[NewNotification]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut channels = Vec::with_capacity(rows.len());
        let mut alerts = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut payloads = Vec::with_capacity(rows.len());
        let mut created = Vec::with_capacity(rows.len());
        for row in rows {
            channels.push(row.channel_id.to_string());
            alerts.push(row.alert_id.clone());
            events.push(row.event.clone());
            payloads.push(row.payload.to_string());
            created.push(ms(row.created_at));
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // One statement for the batch; rows of a channel that is not there
            // join nothing, which the count below notices. A channel deleted
            // by another server between this read and the insert fails the
            // foreign key instead: either way nothing is queued.
            let inserted = sqlx::query(
                "INSERT INTO notification_outbox (channel_id, alert_id, event, payload, \
             next_attempt_at, created_at) \
             SELECT c.id, v.alert_id, v.event, v.payload, v.created_at, v.created_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
               WITH ORDINALITY AS v(channel_id, alert_id, event, payload, created_at, n) \
             JOIN notification_channels c ON c.id = v.channel_id ORDER BY v.n",
            )
            .bind(&channels)
            .bind(&alerts)
            .bind(&events)
            .bind(&payloads)
            .bind(&created)
            .execute(&mut *tx)
            .await;
            let missing = match inserted {
                Ok(done) if done.rows_affected() == rows.len() as u64 => None,
                Ok(_) => {
                    let found: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM notification_channels WHERE id = ANY($1)",
                    )
                    .bind(&channels)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    Some(
                        channels
                            .iter()
                            .find(|c| !found.contains(c))
                            .cloned()
                            .unwrap_or_default(),
                    )
                }
                Err(e) if codec::is_foreign_key_violation(&e) => Some(String::new()),
                Err(e) => return Err(db_error(e)),
            };
            match missing {
                None => Ok(()),
                Some(channel) => Err(StoreError::NotFound(if channel.is_empty() {
                    "a notification channel of the batch (deleted meanwhile)".to_owned()
                } else {
                    format!("notification channel `{channel}`")
                })),
            }
        }
        .await;
        finish(tx, result).await
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let until = ms(now).saturating_add(lease_ms);
        // SKIP LOCKED: a row another server is claiming right now is not
        // waited for (and then claimed twice after its lease was moved) but
        // left to that server; this claim takes the next due ones.
        let sql = format!(
            "UPDATE notification_outbox SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE id IN (SELECT id FROM notification_outbox \
              WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $2 \
              ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {OUTBOX_COLUMNS}"
        );
        let mut claimed: Vec<OutboxRow> = fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, OutboxEntryRow>(AssertSqlSafe(sql))
                .bind(until)
                .bind(ms(now))
                .bind(i64::from(limit)),
        )
        .await?;
        claimed.sort_by_key(|r| r.id);
        Ok(claimed)
    }

    async fn finish_notification(&self, id: u64, outcome: &DeliveryOutcome) -> StoreResult<bool> {
        let id = encode::u64_to_i64(id, "outbox row id")?;
        let (sql, at, error, retry_at) = match outcome {
            DeliveryOutcome::Delivered { at } => (
                "UPDATE notification_outbox SET delivered_at = $1, last_error = $2 \
                 WHERE id = $3 AND delivered_at IS NULL AND given_up_at IS NULL \
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
                "UPDATE notification_outbox SET next_attempt_at = $1, last_error = $2 \
                 WHERE id = $3 AND delivered_at IS NULL AND given_up_at IS NULL \
                 RETURNING channel_id",
                *at,
                Some(clipped(error)),
                Some(*retry_at),
            ),
            DeliveryOutcome::GiveUp { at, error } => (
                "UPDATE notification_outbox SET given_up_at = $1, last_error = $2 \
                 WHERE id = $3 AND delivered_at IS NULL AND given_up_at IS NULL \
                 RETURNING channel_id",
                *at,
                Some(clipped(error)),
                None,
            ),
        };
        let first = retry_at.unwrap_or(at);
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The row's WHERE decides a race of two outcomes: the second waits
            // for the first's row lock, re-reads the row finished, and matches
            // nothing, so the counters move once.
            let channel_id: Option<String> = sqlx::query_scalar(sql)
                .bind(ms(first))
                .bind(&error)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some(channel_id) = channel_id else {
                return Ok(false);
            };
            let counters = match outcome {
            DeliveryOutcome::Delivered { .. } => {
                "UPDATE notification_channels SET delivered = delivered + 1, \
                 last_success_at = $1, failing_since = NULL WHERE id = $2"
            }
            DeliveryOutcome::Retry { .. } => {
                "UPDATE notification_channels SET failed = failed + 1, last_failure_at = $1, \
                 failing_since = COALESCE(failing_since, $1), last_error = $2 WHERE id = $3"
            }
            DeliveryOutcome::GiveUp { .. } => {
                "UPDATE notification_channels SET failed = failed + 1, given_up = given_up + 1, \
                 last_failure_at = $1, failing_since = COALESCE(failing_since, $1), \
                 last_error = $2 WHERE id = $3"
            }
        };
            let query = sqlx::query(counters).bind(ms(at));
            let query = match outcome {
                DeliveryOutcome::Delivered { .. } => query.bind(&channel_id),
                _ => query.bind(&error).bind(&channel_id),
            };
            query.execute(&mut *tx).await.map_err(db_error)?;
            Ok(true)
        }
        .await;
        // An outcome of a row no longer waiting changes nothing.
        finish_if(tx, result, |recorded| *recorded).await
    }

    async fn next_notification_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM notification_outbox \
             WHERE delivered_at IS NULL AND given_up_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        rm_store_sql::time_opt("next_attempt_at", due)
    }

    async fn prune_notifications(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = sqlx::query(
            "DELETE FROM notification_outbox WHERE created_at < $1 \
             AND (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)",
        )
        .bind(ms(before))
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(deleted)
    }
}
