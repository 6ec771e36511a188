//! Notification channels and their outbox (DESIGN §7): where alert
//! notifications and healthchecks pings go, the deliveries waiting to go
//! there, and each channel's delivery counters (read by `/metrics`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{ChannelId, Selector};

use crate::{NewAuditEntry, SealedRepository, StoreResult};

/// A notification channel as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    /// Id.
    pub id: ChannelId,
    /// Unique name.
    pub name: String,
    /// `webhook`, `ntfy`, `email`, `slack`, `discord` or `healthchecks`.
    pub kind: String,
    /// The settings that are not secret (a JSON object).
    pub config: serde_json::Value,
    /// The secret settings (a JSON object), sealed bound to
    /// `channel:<id>/config`; `None` when the channel has none.
    pub secret: Option<SealedRepository>,
    /// The labels a host must all have for its alerts to go here.
    pub selector: Selector,
    /// The alert kinds that go here (empty: every kind).
    pub kinds: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// How its deliveries went; ignored when writing.
    pub stats: ChannelStats,
}

/// How a channel's deliveries went, kept by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Deliveries the receiver accepted.
    pub delivered: u64,
    /// Failed attempts (each retry that failed counts).
    pub failed: u64,
    /// Deliveries given up after retrying for too long.
    pub given_up: u64,
    /// The last accepted delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// What the last failed attempt got (status and body excerpt, or the
    /// error).
    pub last_error: Option<String>,
    /// Since when every attempt failed (`None` while the last one
    /// succeeded, or none failed).
    pub failing_since: Option<DateTime<Utc>>,
    /// Deliveries waiting (not delivered, not given up).
    pub queued: u64,
}

/// A delivery to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Where it goes.
    pub channel_id: ChannelId,
    /// The alert it is about, if any.
    pub alert_id: Option<String>,
    /// `alert.firing`, `alert.resolved`, `backup.succeeded`,
    /// `backup.failed`.
    pub event: String,
    /// What the channel's message is made from (JSON).
    pub payload: serde_json::Value,
    /// When it was queued (and first due).
    pub created_at: DateTime<Utc>,
}

/// A queued delivery, as claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Its row id.
    pub id: u64,
    /// Where it goes.
    pub channel_id: ChannelId,
    /// The alert it is about, if any.
    pub alert_id: Option<String>,
    /// The event.
    pub event: String,
    /// What the message is made from.
    pub payload: serde_json::Value,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

/// How one attempt at a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// The receiver accepted it at `at`.
    Delivered {
        /// When.
        at: DateTime<Utc>,
    },
    /// It failed at `at` with `error`; try again at `retry_at`.
    Retry {
        /// When it failed.
        at: DateTime<Utc>,
        /// What the receiver said, or the transport error.
        error: String,
        /// When to try again.
        retry_at: DateTime<Utc>,
    },
    /// It failed at `at` with `error`, for the last time.
    GiveUp {
        /// When it failed.
        at: DateTime<Utc>,
        /// What the receiver said, or the transport error.
        error: String,
    },
}

/// Notification channels and the outbox. One transaction per method;
/// operator changes take their audit entry (see [`crate::Store`]).
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Adds a channel. [`crate::StoreError::Conflict`] when the name is
    /// taken.
    async fn create_channel(
        &self,
        channel: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// Replaces a channel's name, kind, settings, selector and kinds (its
    /// counters and queue stay). [`crate::StoreError::NotFound`] when there
    /// is no such channel, [`crate::StoreError::Conflict`] when the name is
    /// another channel's.
    async fn update_channel(
        &self,
        channel: &ChannelRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// Deletes a channel and every delivery queued for it.
    /// [`crate::StoreError::NotFound`] when there is no such channel.
    async fn delete_channel(&self, id: ChannelId, audit: Option<&NewAuditEntry>)
        -> StoreResult<()>;
    /// One channel, with its counters.
    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>>;
    /// Every channel in name order, with its counters.
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>>;
    /// Queues deliveries (all or none). [`crate::StoreError::NotFound`]
    /// when a channel does not exist (any more).
    async fn enqueue_notifications(&self, rows: &[NewNotification]) -> StoreResult<()>;
    /// Claims up to `limit` deliveries due at `now`, oldest due first: each
    /// gets one more attempt counted and is not due again before
    /// `now + lease`, in the claiming transaction, so two servers never
    /// claim one row at once and a claim whose server died is retried once
    /// the lease ends.
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Records how an attempt at delivery `id` ended, on the row and on
    /// its channel's counters, in one transaction. A row already delivered
    /// or given up (or gone with its channel) is left alone: `Ok(false)`.
    async fn finish_notification(&self, id: u64, outcome: &DeliveryOutcome) -> StoreResult<bool>;
    /// When the earliest waiting delivery is due, if any is waiting.
    async fn next_notification_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// Deletes delivered and given-up rows queued before `before`; returns
    /// how many.
    async fn prune_notifications(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
