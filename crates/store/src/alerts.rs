//! What the store keeps of alerts (DESIGN §7): each spell of a condition on
//! a host, when its notifications are due, and silences.
//!
//! The server decides when an alert fires or resolves; the store makes the
//! decision stick exactly once, whichever server decides it: at most one
//! alert of a (host, kind, subject) is firing at a time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{AlertId, HostId, JobId, Selector, SilenceId};

use crate::{NewAuditEntry, StoreResult};

/// A stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Id.
    pub id: AlertId,
    /// `backup_stale`, `job_failed`, `host_offline` or `check_failed`.
    pub kind: String,
    /// The host.
    pub host_id: HostId,
    /// What tells it apart from other alerts of its kind on the host.
    pub subject: String,
    /// Still firing (else resolved).
    pub firing: bool,
    /// What is wrong.
    pub message: String,
    /// The job that fired it.
    pub job_id: Option<JobId>,
    /// When it fired.
    pub started_at: DateTime<Utc>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What resolved it.
    pub resolved_message: Option<String>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When its last notification was handed to the channels.
    pub notified_at: Option<DateTime<Utc>>,
    /// How many notifications of it were handed over.
    pub notifications: u64,
    /// When its next notification is due (`None`: none is).
    pub next_notify_at: Option<DateTime<Utc>>,
}

/// An alert to fire.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// Id.
    pub id: AlertId,
    /// Kind.
    pub kind: String,
    /// The host.
    pub host_id: HostId,
    /// Subject (may be empty).
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// The job that fired it.
    pub job_id: Option<JobId>,
    /// When it fired; its first notification is due then.
    pub started_at: DateTime<Utc>,
}

/// Which alerts to list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Only firing (`Some(true)`) or only resolved (`Some(false)`).
    pub firing: Option<bool>,
    /// Only acknowledged (`Some(true)`) or only not (`Some(false)`).
    pub acknowledged: Option<bool>,
    /// Only this host's.
    pub host_id: Option<HostId>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only hosts with these labels.
    pub selector: Option<Selector>,
    /// At most this many.
    pub limit: u32,
    /// Only alerts that started before this one (paging: the last id seen).
    pub before: Option<AlertId>,
}

/// A silence: notifications for matching hosts held back until a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceRecord {
    /// Id.
    pub id: SilenceId,
    /// Labels a host must all have (empty: every host).
    pub selector: Selector,
    /// Until when.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Alerts and silences. Part of [`crate::Store`].
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Fires `alert` unless an alert of its host, kind and subject is
    /// firing already; returns whether it fired. Its first notification is
    /// due at once.
    async fn fire_alert(
        &self,
        alert: &NewAlert,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;
    /// Resolves the firing alert of `host`, `kind` and `subject`, if any,
    /// and returns it as resolved. A resolution is notified (due at once)
    /// only when the firing was.
    async fn resolve_alert(
        &self,
        host: HostId,
        kind: &str,
        subject: &str,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AlertRecord>>;
    /// Resolves every firing alert of `host` (it was deleted); returns how
    /// many. Resolutions of notified alerts are due at once.
    async fn resolve_host_alerts(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        message: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64>;
    /// One alert.
    async fn alert(&self, id: AlertId) -> StoreResult<Option<AlertRecord>>;
    /// Alerts matching `filter`, newest first.
    async fn list_alerts(&self, filter: &AlertFilter) -> StoreResult<Vec<AlertRecord>>;
    /// Every firing alert.
    async fn firing_alerts(&self) -> StoreResult<Vec<AlertRecord>>;
    /// How many alerts are firing, per kind (kinds with none left out).
    async fn firing_alert_counts(&self) -> StoreResult<Vec<(String, u64)>>;
    /// Acknowledges a firing alert: no more repeats. [`crate::StoreError::NotFound`]
    /// when there is no such alert, [`crate::StoreError::Conflict`] when it
    /// is resolved or acknowledged already.
    async fn acknowledge_alert(
        &self,
        id: AlertId,
        by: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<AlertRecord>;
    /// Alerts whose next notification is due at `now`, oldest due first.
    async fn alerts_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<AlertRecord>>;
    /// When the next notification of any alert is due.
    async fn next_alert_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// Records that a notification of `id` was handed over at `at` (a
    /// resolved alert's is its last) and when the next one is due.
    async fn alert_notified(
        &self,
        id: AlertId,
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> StoreResult<()>;
    /// Holds a firing alert's due notification back until `until` (a
    /// silence covers its host).
    async fn hold_alert(&self, id: AlertId, until: DateTime<Utc>) -> StoreResult<()>;

    /// Adds a silence.
    async fn create_silence(
        &self,
        silence: &SilenceRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
    /// Silences that end after `after` (all when `None`), ending first
    /// first.
    async fn silences(&self, after: Option<DateTime<Utc>>) -> StoreResult<Vec<SilenceRecord>>;
    /// Ends a silence now (it is kept, ended, as history): alerts it held
    /// are due at `now`. [`crate::StoreError::NotFound`] when there is no
    /// such silence, [`crate::StoreError::Conflict`] when it ended already.
    async fn delete_silence(
        &self,
        id: SilenceId,
        now: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;
}
