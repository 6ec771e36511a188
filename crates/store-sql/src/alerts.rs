//! Rows of alerts and silences.

use rm_core::Selector;
use rm_store::{AlertRecord, SilenceRecord, StoreError};

use crate::decode;

/// Columns selected for an [`AlertRow`].
pub const ALERT_COLUMNS: &str = "id, kind, host_id, subject, state, message, job_id, started_at, \
     resolved_at, resolved_message, acknowledged_by, acknowledged_at, notified_at, \
     notifications, next_notify_at";

/// An `alerts` row.
#[derive(Debug, sqlx::FromRow)]
pub struct AlertRow {
    /// Column `id`.
    pub id: String,
    /// Column `kind`.
    pub kind: String,
    /// Column `host_id`.
    pub host_id: String,
    /// Column `subject`.
    pub subject: String,
    /// Column `state`: `firing` or `resolved`.
    pub state: String,
    /// Column `message`.
    pub message: String,
    /// Column `job_id`.
    pub job_id: Option<String>,
    /// Column `started_at`.
    pub started_at: i64,
    /// Column `resolved_at`.
    pub resolved_at: Option<i64>,
    /// Column `resolved_message`.
    pub resolved_message: Option<String>,
    /// Column `acknowledged_by`.
    pub acknowledged_by: Option<String>,
    /// Column `acknowledged_at`.
    pub acknowledged_at: Option<i64>,
    /// Column `notified_at`.
    pub notified_at: Option<i64>,
    /// Column `notifications`.
    pub notifications: i64,
    /// Column `next_notify_at`.
    pub next_notify_at: Option<i64>,
}

impl TryFrom<AlertRow> for AlertRecord {
    type Error = StoreError;

    fn try_from(r: AlertRow) -> Result<AlertRecord, StoreError> {
        Ok(AlertRecord {
            id: decode::id("id", r.id)?,
            kind: r.kind,
            host_id: decode::id("host_id", r.host_id)?,
            subject: r.subject,
            firing: r.state == "firing",
            message: r.message,
            job_id: decode::id_opt("job_id", r.job_id)?,
            started_at: decode::time("started_at", r.started_at)?,
            resolved_at: decode::time_opt("resolved_at", r.resolved_at)?,
            resolved_message: r.resolved_message,
            acknowledged_by: r.acknowledged_by,
            acknowledged_at: decode::time_opt("acknowledged_at", r.acknowledged_at)?,
            notified_at: decode::time_opt("notified_at", r.notified_at)?,
            notifications: decode::int("notifications", r.notifications)?,
            next_notify_at: decode::time_opt("next_notify_at", r.next_notify_at)?,
        })
    }
}

/// Columns selected for a [`SilenceRow`].
pub const SILENCE_COLUMNS: &str = "id, selector, until, reason, created_by, created_at";

/// A `silences` row.
#[derive(Debug, sqlx::FromRow)]
pub struct SilenceRow {
    /// Column `id`.
    pub id: String,
    /// Column `selector`.
    pub selector: String,
    /// Column `until`.
    pub until: i64,
    /// Column `reason`.
    pub reason: String,
    /// Column `created_by`.
    pub created_by: String,
    /// Column `created_at`.
    pub created_at: i64,
}

impl TryFrom<SilenceRow> for SilenceRecord {
    type Error = StoreError;

    fn try_from(r: SilenceRow) -> Result<SilenceRecord, StoreError> {
        Ok(SilenceRecord {
            id: decode::id("id", r.id)?,
            selector: Selector(decode::labels("selector", &r.selector)?),
            until: decode::time("until", r.until)?,
            reason: r.reason,
            created_by: r.created_by,
            created_at: decode::time("created_at", r.created_at)?,
        })
    }
}
