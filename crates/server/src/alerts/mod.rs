//! Alerts the server decides (DESIGN §7): a host that is not protected is
//! found by the server's own clock from what it stores, so an alert fires
//! even when the agent is silent (powered off, cut off, dead).
//!
//! - [`rules`]: the pure rules — deadlines of the timed conditions
//!   (`backup_stale`, `host_offline`) and what a job's end fires or
//!   resolves (`job_failed`, `check_failed`, `drill_failed`).
//! - [`evaluator`]: the deadline index and the due-notification queue,
//!   run by one background task ([`spawn`]).
//! - this module: the handle the rest of the server tells about changes
//!   ([`host_changed`], [`job_ended`], [`fleet_changed`]), and the service
//!   behind `GET /api/v1/alerts`, acknowledgements and silences.

pub mod evaluator;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rm_core::schedule::{Clock, SystemClock};
use rm_core::{AlertId, HostId, Labels, Selector, SilenceId};
use rm_protocol::api::{AlertView, SilenceRequest, SilenceView};
use rm_store::{AlertFilter, AlertRecord, Job, NewAlert, SilenceRecord, StoreError};
use tokio::sync::{mpsc, Notify};

use crate::audit::{Action, Audit, Target};
use crate::cluster::bus::{self, Signal};
use crate::cluster::{Lease, ALERTS_LEASE};
use crate::notify::{AlertEvent, AlertNotice, NoticeHost};
use crate::state::AppState;
use evaluator::{Evaluator, Settings};
pub use rules::AlertKind;

/// Host changes queued for the evaluator; beyond this the evaluator
/// re-reads the whole fleet instead (nothing is lost, nothing unbounded).
const QUEUE: usize = 4096;

/// Longest silence reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// How the rest of the server reaches the evaluator task.
pub struct AlertsHandle {
    changed: mpsc::Sender<HostId>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<HostId>>>,
    resync: AtomicBool,
    wake: Notify,
}

impl Default for AlertsHandle {
    fn default() -> Self {
        let (changed, receiver) = mpsc::channel(QUEUE);
        AlertsHandle {
            changed,
            receiver: std::sync::Mutex::new(Some(receiver)),
            resync: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }
}

impl AlertsHandle {
    fn host_changed(&self, host: HostId) {
        if self.changed.try_send(host).is_err() {
            self.fleet_changed();
        }
    }

    fn fleet_changed(&self) {
        self.resync.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Errors of the alert service.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such alert or silence.
    #[error("{0} not found")]
    NotFound(String),
    /// The alert cannot be acknowledged (resolved, or acknowledged already).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AlertError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AlertError::NotFound(what),
            StoreError::Conflict(why) => AlertError::Conflict(why),
            other => AlertError::Store(other),
        }
    }
}

/// Tells the evaluator that what it knows of `host` changed (it connected
/// or went away, its settings or labels changed, it was enrolled or
/// deleted). Never waits.
/// The evaluator runs on one server (the holder of the `alerts` lease):
/// the others are told too.
pub(crate) fn host_changed(state: &AppState, host: HostId) {
    host_changed_here(state, host);
    bus::send(state, Signal::AlertsHost { host });
}

/// [`host_changed`] for this server's evaluator only.
pub(crate) fn host_changed_here(state: &AppState, host: HostId) {
    state.alerts().host_changed(host);
}

/// Tells the evaluator to re-read the whole fleet (a policy changed),
/// wherever it runs.
pub(crate) fn fleet_changed(state: &AppState) {
    fleet_changed_here(state);
    bus::send(state, Signal::AlertsFleet);
}

/// [`fleet_changed`] for this server's evaluator only.
pub(crate) fn fleet_changed_here(state: &AppState) {
    state.alerts().fleet_changed();
}

/// Wakes the evaluator, wherever it runs, to hand over notifications.
fn wake(state: &AppState) {
    wake_here(state);
    bus::send(state, Signal::AlertsWake);
}

/// [`wake`] for this server's evaluator only.
pub(crate) fn wake_here(state: &AppState) {
    state.alerts().wake.notify_one();
}

/// Fires and resolves what `job`'s end decides (`job_failed`,
/// `check_failed`; a backup that saved a snapshot resolves `backup_stale`),
/// in the caller's task, right after the end is stored; then lets the
/// evaluator hand the notifications over. Failures are logged: a job's end
/// is stored whatever happens here.
pub(crate) async fn job_ended(state: &AppState, job: &Job) {
    if let Err(e) = apply_job_end(state, job).await {
        tracing::error!(job_id = %job.id, host_id = %job.host_id, error = %e, "could not evaluate the job's alerts");
    }
    if job.kind == "backup" {
        host_changed(state, job.host_id);
        ping_healthchecks(state, job).await;
    }
    wake(state);
}

/// Tells healthchecks channels how a backup ended (a success or partial
/// pings, a failure pings `/fail`; cancelled and skipped ones nothing).
async fn ping_healthchecks(state: &AppState, job: &Job) {
    let succeeded = match job.status {
        rm_core::JobStatus::Succeeded | rm_core::JobStatus::Partial => true,
        rm_core::JobStatus::Failed => false,
        _ => return,
    };
    let host = match state.store().host(job.host_id).await {
        Ok(Some(host)) => NoticeHost::from(&host),
        Ok(None) => return,
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "could not read the host to ping its healthchecks");
            return;
        }
    };
    if let Err(e) = crate::notify::backup_finished(state, &host, job.id, succeeded).await {
        tracing::error!(job_id = %job.id, error = %e, "could not queue the healthchecks ping");
    }
}

async fn apply_job_end(state: &AppState, job: &Job) -> Result<(), StoreError> {
    let verdict = rules::job_verdict(job);
    let now = Utc::now();
    let saved_snapshot = job.kind == "backup"
        && matches!(
            job.status,
            rm_core::JobStatus::Succeeded | rm_core::JobStatus::Partial
        );
    let mut resolve = verdict.resolve;
    if saved_snapshot {
        resolve.push((AlertKind::BackupStale, String::new()));
    }
    // Most job ends resolve nothing: one read of the host's firing alerts
    // (no write, no turn at the writer) decides whether any write is due.
    if !resolve.is_empty() {
        let firing = state
            .store()
            .list_alerts(&AlertFilter {
                firing: Some(true),
                host_id: Some(job.host_id),
                limit: 1000,
                ..AlertFilter::default()
            })
            .await?;
        resolve.retain(|(kind, subject)| {
            firing
                .iter()
                .any(|a| a.kind == kind.as_str() && &a.subject == subject)
        });
    }
    for (kind, subject) in resolve {
        let why = match kind {
            AlertKind::BackupStale => format!("backup {} saved a snapshot", job.id),
            AlertKind::CheckFailed => format!("check {} found no errors", job.id),
            AlertKind::DrillFailed => format!("drill {} verified its sample", job.id),
            _ => format!("{} {} succeeded", job.kind, job.id),
        };
        let entry = evaluator::resolve_entry(job.host_id, kind.as_str(), &subject, &why);
        state
            .store()
            .resolve_alert(
                job.host_id,
                kind.as_str(),
                &subject,
                now,
                &why,
                Some(&entry),
            )
            .await?;
    }
    if verdict.fire.is_empty() {
        return Ok(());
    }
    let host_name = state
        .store()
        .host(job.host_id)
        .await?
        .map(|h| h.name)
        .unwrap_or_default();
    for (kind, subject, message) in verdict.fire {
        let alert = NewAlert {
            id: AlertId::new(),
            kind: kind.as_str().to_owned(),
            host_id: job.host_id,
            subject,
            message,
            job_id: Some(job.id),
            started_at: now,
        };
        let entry = evaluator::fire_entry(&alert, &host_name);
        if state.store().fire_alert(&alert, Some(&entry)).await? {
            tracing::warn!(host_id = %job.host_id, host = %host_name, kind = %kind, "{}", alert.message);
        }
    }
    Ok(())
}

/// Starts the evaluator task (once; later calls do nothing). It stops with
/// the server.
pub(crate) fn spawn(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    spawn_with_clock(state, Arc::new(SystemClock))
}

fn spawn_with_clock(
    state: &AppState,
    clock: Arc<dyn Clock>,
) -> Option<tokio::task::JoinHandle<()>> {
    let receiver = state
        .alerts()
        .receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()?;
    let settings = Settings {
        repeat: chrono::Duration::from_std(state.config().alert_repeat)
            .unwrap_or(chrono::Duration::days(1)),
        grace: chrono::Duration::from_std(state.config().alert_grace)
            .unwrap_or(chrono::Duration::zero()),
    };
    let evaluator = Evaluator::new(state.store_arc(), clock, settings);
    let lease = Lease::spawn(state, ALERTS_LEASE);
    let state = state.clone();
    Some(tokio::spawn(run(state, evaluator, receiver, lease)))
}

/// The evaluator's loop, while this server holds the alerts lease (with
/// several servers on one database, one evaluates and hands notifications
/// over; alone, the lease is always held).
async fn run(
    state: AppState,
    mut evaluator: Evaluator,
    mut changed: mpsc::Receiver<HostId>,
    mut lease: Lease,
) {
    loop {
        if !lease.is_held() {
            tokio::select! {
                _ = lease.held() => {}
                _ = state.stopping() => return,
            }
            // What the last holder knew is not here: the deadline index is
            // rebuilt from the store.
            state.alerts().resync.store(true, Ordering::Release);
        }
        if let Err(e) = round(&state, &mut evaluator, &mut changed).await {
            tracing::error!(error = %e, "alert evaluation failed; retrying in 5 s");
            state.alerts().resync.store(true, Ordering::Release);
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = state.stopping() => return,
            }
            continue;
        }
        let wake = match evaluator.next_wake().await {
            Ok(at) => (at - Utc::now()).to_std().unwrap_or_default(),
            Err(_) => std::time::Duration::from_secs(5),
        };
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            _ = state.alerts().wake.notified() => {}
            _ = lease.lost() => {}
            Some(host) = changed.recv() => {
                if let Err(e) = evaluator.host_changed(host).await {
                    tracing::error!(%host, error = %e, "could not re-read a host for its alerts");
                    state.alerts().resync.store(true, Ordering::Release);
                }
            }
            _ = state.stopping() => return,
        }
    }
}

/// One round: whatever changed, whatever deadline came, whatever
/// notification is due.
async fn round(
    state: &AppState,
    evaluator: &mut Evaluator,
    changed: &mut mpsc::Receiver<HostId>,
) -> Result<(), StoreError> {
    if state.alerts().resync.swap(false, Ordering::AcqRel) || evaluator.resync_due() {
        // Queued changes are part of what a full read sees.
        while changed.try_recv().is_ok() {}
        evaluator.resync().await?;
    }
    while let Ok(host) = changed.try_recv() {
        evaluator.host_changed(host).await?;
    }
    evaluator.run_deadlines().await?;
    if evaluator.take_changed() {
        state.fleet_changed();
    }
    loop {
        let due = evaluator.due().await?;
        if due.is_empty() {
            break;
        }
        for notice in due {
            hand_over(state, &notice).await?;
            evaluator
                .handed_over(notice.alert.id, notice.alert.firing)
                .await?;
        }
    }
    Ok(())
}

/// Hands one notification to the channels (the outbox, which delivers
/// and retries). If it cannot be queued the alert stays due and the round
/// is tried again, so nothing is dropped; a crash between queueing and
/// marking it handed over sends it twice rather than never.
async fn hand_over(state: &AppState, notice: &evaluator::Due) -> Result<(), StoreError> {
    let view = view(&notice.alert, notice.host.as_ref().map(|h| h.name.as_str()));
    let host = match &notice.host {
        Some(host) => NoticeHost::from(host),
        None => NoticeHost {
            id: notice.alert.host_id.to_string(),
            name: String::from("(deleted host)"),
            labels: BTreeMap::new(),
        },
    };
    let event = if notice.alert.firing {
        AlertEvent::Firing
    } else {
        AlertEvent::Resolved
    };
    let notice = AlertNotice {
        event,
        repeat: notice.repeat,
        alert: view,
        host,
    };
    match crate::notify::enqueue_alert(state, &notice).await {
        Ok(queued) => {
            tracing::info!(
                alert_id = %notice.alert.id,
                kind = %notice.alert.kind,
                event = event.as_str(),
                repeat = notice.repeat,
                queued,
                "alert notification queued"
            );
            Ok(())
        }
        Err(crate::notify::NotifyError::Store(e)) => Err(e),
        // Anything else is about one channel's settings, which the outbox
        // reports on the channel; the alert has been handed over.
        Err(e) => {
            tracing::error!(alert_id = %notice.alert.id, error = %e, "could not queue an alert notification");
            Ok(())
        }
    }
}

/// An alert as the API shows it.
pub fn view(alert: &AlertRecord, host_name: Option<&str>) -> AlertView {
    AlertView {
        id: alert.id.to_string(),
        kind: alert.kind.clone(),
        host_id: alert.host_id.to_string(),
        host_name: host_name.unwrap_or_default().to_owned(),
        state: String::from(if alert.firing { "firing" } else { "resolved" }),
        subject: alert.subject.clone(),
        message: alert.message.clone(),
        job_id: alert.job_id.map(|j| j.to_string()),
        started_at: alert.started_at,
        resolved_at: alert.resolved_at,
        resolved_message: alert.resolved_message.clone(),
        acknowledged_by: alert.acknowledged_by.clone(),
        acknowledged_at: alert.acknowledged_at,
        notified_at: alert.notified_at,
        notifications: alert.notifications,
    }
}

/// `GET /api/v1/alerts` filters, as given.
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `firing`, `acknowledged` (firing and acknowledged) or `resolved`.
    pub state: Option<String>,
    /// One host.
    pub host_id: Option<String>,
    /// One kind.
    pub kind: Option<String>,
    /// Hosts with these labels (`env=prod,role=web`).
    pub labels: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Alerts older than this one (paging).
    pub before: Option<String>,
}

/// The alerts `query` asks for, newest first, with their hosts' names;
/// only those of hosts `scope` matches when there is one.
pub async fn list(
    state: &AppState,
    query: &AlertQuery,
    scope: Option<&Selector>,
) -> Result<Vec<AlertView>, AlertError> {
    let mut filter = AlertFilter {
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
        ..AlertFilter::default()
    };
    match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => {}
        Some("firing") => filter.firing = Some(true),
        Some("acknowledged") => {
            filter.firing = Some(true);
            filter.acknowledged = Some(true);
        }
        Some("resolved") => filter.firing = Some(false),
        Some(other) => {
            return Err(AlertError::Invalid(format!(
                "`state` must be firing, acknowledged or resolved, not `{other}`"
            )))
        }
    }
    if let Some(host) = query.host_id.as_deref().filter(|s| !s.is_empty()) {
        filter.host_id =
            Some(host.parse::<HostId>().map_err(|_| {
                AlertError::Invalid(format!("`host_id` is not a host id: `{host}`"))
            })?);
    }
    if let Some(kind) = query.kind.as_deref().filter(|s| !s.is_empty()) {
        let kind: AlertKind = kind
            .parse()
            .map_err(|e: String| AlertError::Invalid(format!("`kind`: {e}")))?;
        filter.kind = Some(kind.as_str().to_owned());
    }
    if let Some(labels) = query.labels.as_deref().filter(|s| !s.trim().is_empty()) {
        let labels = Labels::parse_pairs("labels", labels)
            .map_err(|e| AlertError::Invalid(e.to_string()))?;
        filter.selector = Some(Selector(labels));
    }
    if let Some(before) = query.before.as_deref().filter(|s| !s.is_empty()) {
        filter.before = Some(before.parse::<AlertId>().map_err(|_| {
            AlertError::Invalid(format!("`before` is not an alert id: `{before}`"))
        })?);
    }
    if let Some(scope) = scope {
        let asked = filter.selector.take().unwrap_or_default();
        match crate::access::intersect(scope, &asked) {
            Some(both) => filter.selector = Some(both),
            // Labels outside the scope: no host of theirs can match.
            None => return Ok(Vec::new()),
        }
    }
    let alerts = state.store().list_alerts(&filter).await?;
    named(state, &alerts).await
}

/// Views of `alerts` with their hosts' names.
async fn named(state: &AppState, alerts: &[AlertRecord]) -> Result<Vec<AlertView>, AlertError> {
    let mut names: BTreeMap<HostId, String> = BTreeMap::new();
    for alert in alerts {
        if let std::collections::btree_map::Entry::Vacant(slot) = names.entry(alert.host_id) {
            let name = state
                .store()
                .host(alert.host_id)
                .await?
                .map(|h| h.name)
                .unwrap_or_default();
            slot.insert(name);
        }
    }
    Ok(alerts
        .iter()
        .map(|a| view(a, names.get(&a.host_id).map(String::as_str)))
        .collect())
}

/// One alert.
pub async fn show(state: &AppState, id: AlertId) -> Result<AlertView, AlertError> {
    let alert = state
        .store()
        .alert(id)
        .await?
        .ok_or_else(|| AlertError::NotFound(format!("alert `{id}`")))?;
    Ok(named(state, &[alert]).await?.remove(0))
}

/// Acknowledges a firing alert for `by` (no more repeats).
pub async fn acknowledge(
    state: &AppState,
    id: AlertId,
    by: &Audit,
) -> Result<AlertView, AlertError> {
    let entry = by.entry(
        Action::AlertAck,
        Some(Target::new("alert", id)),
        serde_json::json!({}),
    );
    let alert = state
        .store()
        .acknowledge_alert(id, &by.who(), Utc::now(), Some(&entry))
        .await?;
    state.fleet_changed();
    Ok(named(state, &[alert]).await?.remove(0))
}

/// A silence as the API shows it.
pub fn silence_view(s: &SilenceRecord, now: DateTime<Utc>) -> SilenceView {
    SilenceView {
        id: s.id.to_string(),
        selector: s.selector.0.as_map().clone(),
        until: s.until,
        reason: s.reason.clone(),
        created_by: s.created_by.clone(),
        created_at: s.created_at,
        active: s.until > now,
    }
}

/// Adds a silence (checked: a selector of valid labels, an end in the
/// future, a reason).
pub async fn create_silence(
    state: &AppState,
    req: SilenceRequest,
    by: &Audit,
) -> Result<SilenceView, AlertError> {
    let selector = Labels::parse("selector", req.selector)
        .map(Selector)
        .map_err(|e| AlertError::Invalid(e.to_string()))?;
    let now = Utc::now();
    if req.until <= now {
        return Err(AlertError::Invalid(format!(
            "`until` must be in the future, not {}",
            req.until.to_rfc3339()
        )));
    }
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(AlertError::Invalid(String::from(
            "`reason` must say why (e.g. `maintenance of the web servers`)",
        )));
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(AlertError::Invalid(format!(
            "`reason` must be at most {MAX_REASON_CHARS} characters, without control characters"
        )));
    }
    let silence = SilenceRecord {
        id: SilenceId::new(),
        selector,
        until: req.until,
        reason: reason.to_owned(),
        created_by: by.who(),
        created_at: now,
    };
    let entry = by.entry(
        Action::SilenceCreate,
        Some(Target::new("silence", silence.id)),
        serde_json::json!({
            "selector": silence.selector.0.to_string(),
            "until": silence.until.to_rfc3339(),
            "reason": silence.reason,
        }),
    );
    state.store().create_silence(&silence, Some(&entry)).await?;
    state.fleet_changed();
    Ok(silence_view(&silence, now))
}

/// Silences that have not ended (all, with `all`), ending first first.
pub async fn silences(state: &AppState, all: bool) -> Result<Vec<SilenceView>, AlertError> {
    let now = Utc::now();
    let after = (!all).then_some(now);
    Ok(state
        .store()
        .silences(after)
        .await?
        .iter()
        .map(|s| silence_view(s, now))
        .collect())
}

/// Ends a silence now; what it held back is due at once.
pub async fn delete_silence(state: &AppState, id: SilenceId, by: &Audit) -> Result<(), AlertError> {
    let entry = by.entry(
        Action::SilenceDelete,
        Some(Target::new("silence", id)),
        serde_json::json!({}),
    );
    state
        .store()
        .delete_silence(id, Utc::now(), Some(&entry))
        .await?;
    wake(state);
    state.fleet_changed();
    Ok(())
}
