//! Rows of notification channels and the outbox.

use rm_core::Selector;
use rm_store::{ChannelRecord, ChannelStats, OutboxRow, SealFormat, SealedRepository, StoreError};

use crate::decode;

/// Columns selected for a [`ChannelRow`], with its queue length (a
/// `COUNT(*)`: BIGINT on PostgreSQL too, so it decodes as `i64` alike).
pub const CHANNEL_COLUMNS: &str = "id, name, kind, config, secret_nonce, secret_ciphertext, \
     selector, kinds, created_at, updated_at, delivered, failed, given_up, last_success_at, \
     last_failure_at, last_error, failing_since, \
     (SELECT COUNT(*) FROM notification_outbox o WHERE o.channel_id = notification_channels.id \
      AND o.delivered_at IS NULL AND o.given_up_at IS NULL) AS queued";

/// A `notification_channels` row with its queue length.
#[derive(Debug, sqlx::FromRow)]
pub struct ChannelRow {
    /// Column `id`.
    pub id: String,
    /// Column `name`.
    pub name: String,
    /// Column `kind`.
    pub kind: String,
    /// Column `config`.
    pub config: String,
    /// Column `secret_nonce`.
    pub secret_nonce: Option<Vec<u8>>,
    /// Column `secret_ciphertext`.
    pub secret_ciphertext: Option<Vec<u8>>,
    /// Column `selector`.
    pub selector: String,
    /// Column `kinds`.
    pub kinds: String,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `updated_at`.
    pub updated_at: i64,
    /// Column `delivered`.
    pub delivered: i64,
    /// Column `failed`.
    pub failed: i64,
    /// Column `given_up`.
    pub given_up: i64,
    /// Column `last_success_at`.
    pub last_success_at: Option<i64>,
    /// Column `last_failure_at`.
    pub last_failure_at: Option<i64>,
    /// Column `last_error`.
    pub last_error: Option<String>,
    /// Column `failing_since`.
    pub failing_since: Option<i64>,
    /// Column `queued`.
    pub queued: i64,
}

impl TryFrom<ChannelRow> for ChannelRecord {
    type Error = StoreError;

    fn try_from(r: ChannelRow) -> Result<ChannelRecord, StoreError> {
        let updated_at = decode::time("updated_at", r.updated_at)?;
        Ok(ChannelRecord {
            id: decode::id("id", r.id)?,
            name: r.name,
            kind: r.kind,
            config: decode::json("config", &r.config)?,
            secret: match (r.secret_nonce, r.secret_ciphertext) {
                (Some(nonce), Some(ciphertext)) => Some(SealedRepository {
                    nonce,
                    ciphertext,
                    format: SealFormat::OwnerBound,
                    updated_at,
                }),
                _ => None,
            },
            selector: Selector(decode::labels("selector", &r.selector)?),
            kinds: decode::json("kinds", &r.kinds)?,
            created_at: decode::time("created_at", r.created_at)?,
            updated_at,
            stats: ChannelStats {
                delivered: decode::int("delivered", r.delivered)?,
                failed: decode::int("failed", r.failed)?,
                given_up: decode::int("given_up", r.given_up)?,
                last_success_at: decode::time_opt("last_success_at", r.last_success_at)?,
                last_failure_at: decode::time_opt("last_failure_at", r.last_failure_at)?,
                last_error: r.last_error,
                failing_since: decode::time_opt("failing_since", r.failing_since)?,
                queued: decode::int("queued", r.queued)?,
            },
        })
    }
}

/// Columns selected for an [`OutboxEntryRow`].
pub const OUTBOX_COLUMNS: &str = "id, channel_id, alert_id, event, payload, attempts, created_at";

/// A `notification_outbox` row (the model is [`OutboxRow`]).
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxEntryRow {
    /// Column `id`.
    pub id: i64,
    /// Column `channel_id`.
    pub channel_id: String,
    /// Column `alert_id`.
    pub alert_id: Option<String>,
    /// Column `event`.
    pub event: String,
    /// Column `payload`.
    pub payload: String,
    /// Column `attempts`.
    pub attempts: i64,
    /// Column `created_at`.
    pub created_at: i64,
}

impl TryFrom<OutboxEntryRow> for OutboxRow {
    type Error = StoreError;

    fn try_from(r: OutboxEntryRow) -> Result<OutboxRow, StoreError> {
        let attempts: u64 = decode::int("attempts", r.attempts)?;
        Ok(OutboxRow {
            id: decode::int("id", r.id)?,
            channel_id: decode::id("channel_id", r.channel_id)?,
            alert_id: r.alert_id,
            event: r.event,
            payload: decode::json("payload", &r.payload)?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            created_at: decode::time("created_at", r.created_at)?,
        })
    }
}
