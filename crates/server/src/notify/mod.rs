//! Notifications (DESIGN §7): the channels alerts and healthchecks pings
//! go to, the outbox they wait in, and their delivery.
//!
//! The alert evaluator hands a notice to [`enqueue_alert`] and the job end
//! to [`backup_finished`]; both only write outbox rows (one transaction)
//! and wake the sender ([`outbox::Sender`]), so neither the agent endpoint
//! nor the API ever waits on a receiver. The sender claims due rows with a
//! lease, delivers them (`deliver`) and records the outcome; everything it
//! needs is in the store, so deliveries survive a restart. [`channels`]
//! checks channel settings and keeps their secrets sealed.

pub mod channels;
pub mod deliver;
pub mod outbox;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use rm_core::{JobId, Labels, Selector};
use rm_protocol::api::AlertView;
use rm_store::{ChannelRecord, NewNotification, StoreError};
use serde::{Deserialize, Serialize};

use crate::state::AppState;

pub use outbox::Sender;

/// Why a notification could not be queued, a channel not be saved, or a
/// test not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such channel.
    #[error("notification channel `{0}` not found")]
    NotFound(String),
    /// A channel's stored secrets do not open (sealed with another key, or
    /// altered).
    #[error("{0}")]
    Sealing(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEvent {
    /// `alert.firing`.
    Firing,
    /// `alert.resolved`.
    Resolved,
}

impl AlertEvent {
    /// The event's name in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Firing => EVENT_FIRING,
            AlertEvent::Resolved => EVENT_RESOLVED,
        }
    }
}

/// The event names a payload carries.
pub const EVENT_FIRING: &str = "alert.firing";
/// An alert resolved.
pub const EVENT_RESOLVED: &str = "alert.resolved";
/// A test message (`POST …/{id}/test`).
pub const EVENT_TEST: &str = "test";
/// A backup saved a snapshot (healthchecks success ping).
pub const EVENT_BACKUP_SUCCEEDED: &str = "backup.succeeded";
/// A backup failed (healthchecks `/fail` ping).
pub const EVENT_BACKUP_FAILED: &str = "backup.failed";

/// The host a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeHost {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl From<&rm_store::Host> for NoticeHost {
    fn from(host: &rm_store::Host) -> NoticeHost {
        NoticeHost {
            id: host.id.to_string(),
            name: host.name.clone(),
            labels: host.labels.as_map().clone(),
        }
    }
}

/// An alert's notification, as the evaluator hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertNotice {
    /// Firing or resolved.
    pub event: AlertEvent,
    /// A reminder of a still-firing alert.
    pub repeat: bool,
    /// The alert.
    pub alert: AlertView,
    /// Its host.
    pub host: NoticeHost,
}

/// What a delivery is made from, as kept in the outbox: for alerts and
/// tests exactly the webhook's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// One of the `EVENT_*` names.
    pub event: String,
    /// The alert (alerts and tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertView>,
    /// The host.
    pub host: NoticeHost,
    /// A reminder of a still-firing alert (alerts and tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<bool>,
    /// The backup job (healthchecks pings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// The sender's wake-up and the HTTP client deliveries share; one per
/// server.
pub(crate) struct Notifier {
    wake: Arc<tokio::sync::Notify>,
    /// Built on first use: loading the system's roots costs a few
    /// milliseconds a server without channels need not pay.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl Notifier {
    pub(crate) fn new() -> Notifier {
        Notifier {
            wake: Arc::new(tokio::sync::Notify::new()),
            http: std::sync::OnceLock::new(),
        }
    }

    /// Tells the sender that rows were queued.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn woken(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// The client deliveries use (a failure to build it is kept and shown
    /// on every delivery; it cannot happen with the bundled provider).
    pub(crate) fn http(&self) -> Result<&reqwest::Client, String> {
        self.http
            .get_or_init(deliver::http_client)
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Whether `channel` takes alerts of `kind` for a host with `labels`:
/// its selector matches and its `kinds` include the kind (none given:
/// every kind). healthchecks channels take no alerts.
fn takes_alert(channel: &ChannelRecord, kind: &str, labels: &Labels) -> bool {
    channel.kind != channels::KIND_HEALTHCHECKS
        && channel.selector.matches(labels)
        && (channel.kinds.is_empty() || channel.kinds.iter().any(|k| k == kind))
}

fn host_labels(host: &NoticeHost) -> Labels {
    Labels::from_stored(host.labels.clone())
}

/// Picks the channels whose selector matches the host and whose `kinds`
/// include the alert's kind (none given: every kind), writes one outbox
/// row per channel (one transaction) and wakes the sender. Returns how
/// many deliveries were queued. Silences are the caller's business: an
/// alert under a silence is not handed over until the silence ends.
pub async fn enqueue_alert(state: &AppState, notice: &AlertNotice) -> Result<usize, NotifyError> {
    let labels = host_labels(&notice.host);
    let payload = Payload {
        event: notice.event.as_str().to_owned(),
        alert: Some(notice.alert.clone()),
        host: notice.host.clone(),
        repeat: Some(notice.repeat),
        job_id: None,
    };
    let chosen: Vec<ChannelRecord> = state
        .store()
        .channels()
        .await?
        .into_iter()
        .filter(|c| takes_alert(c, &notice.alert.kind, &labels))
        .collect();
    queue(state, &chosen, Some(notice.alert.id.clone()), &payload).await
}

/// healthchecks channels whose selector matches the host: queues a ping of
/// `<base_url>/<host name as a URL-safe slug>` on a backup that saved a
/// snapshot (succeeded or partial), `<…>/fail` on one that failed.
pub async fn backup_finished(
    state: &AppState,
    host: &NoticeHost,
    job_id: JobId,
    succeeded: bool,
) -> Result<usize, NotifyError> {
    let labels = host_labels(host);
    let event = if succeeded {
        EVENT_BACKUP_SUCCEEDED
    } else {
        EVENT_BACKUP_FAILED
    };
    let payload = Payload {
        event: event.to_owned(),
        alert: None,
        host: host.clone(),
        repeat: None,
        job_id: Some(job_id.to_string()),
    };
    let chosen: Vec<ChannelRecord> = state
        .store()
        .channels()
        .await?
        .into_iter()
        .filter(|c| c.kind == channels::KIND_HEALTHCHECKS && c.selector.matches(&labels))
        .collect();
    queue(state, &chosen, None, &payload).await
}

async fn queue(
    state: &AppState,
    chosen: &[ChannelRecord],
    alert_id: Option<String>,
    payload: &Payload,
) -> Result<usize, NotifyError> {
    if chosen.is_empty() {
        return Ok(0);
    }
    let payload_json =
        serde_json::to_value(payload).map_err(|e| NotifyError::Invalid(format!("payload: {e}")))?;
    let now = Utc::now();
    let rows: Vec<NewNotification> = chosen
        .iter()
        .map(|c| NewNotification {
            channel_id: c.id,
            alert_id: alert_id.clone(),
            event: payload.event.clone(),
            payload: payload_json.clone(),
            created_at: now,
        })
        .collect();
    state.store().enqueue_notifications(&rows).await?;
    state.notifier().wake();
    Ok(rows.len())
}

/// A selector as the API shows it.
pub(crate) fn selector_map(selector: &Selector) -> BTreeMap<String, String> {
    selector.0.as_map().clone()
}
