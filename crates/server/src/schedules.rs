//! Schedules: checked, stored with a version bump per change, and pushed to
//! the host's agent as one whole set that the agent acknowledges by version.
//! The agent's own clock fires them; a fire becomes a job here.

use chrono::Utc;
use rm_core::schedule::CronSchedule;
use rm_core::{HostId, JobId, JobStatus, JobTrigger, ScheduleId};
use rm_protocol::api::{ScheduleRequest, ScheduleView};
use rm_protocol::params::JobParams;
use rm_protocol::{Frame, JobKind, Schedule, ScheduleAck, ScheduleFire, ScheduleSet};
use rm_store::{NewJob, ScheduleRecord, StoreError};

use crate::audit::EntryFor;
use crate::cluster::bus::{self, Pushed, Signal};
use crate::jobs::{self, JobError, JobRequest, ReportError};
use crate::state::AppState;

/// Job kinds a schedule may run.
const SCHEDULABLE: [JobKind; 6] = [
    JobKind::Backup,
    JobKind::Forget,
    JobKind::Prune,
    JobKind::Check,
    JobKind::Copy,
    JobKind::Drill,
];

/// Longest jitter (a day): beyond that a schedule would drift past its
/// next fire.
const MAX_JITTER_SECONDS: u32 = 24 * 3600;

/// What can go wrong with a schedule request.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Bad kind, cron, zone, params or jitter; names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such host.
    #[error("host `{0}` not found")]
    HostNotFound(HostId),
    /// No such schedule.
    #[error("schedule `{0}` not found")]
    NotFound(ScheduleId),
    /// A policy gives the schedule: it is changed on the policy.
    #[error("schedule `{0}` is given by policy `{1}`: change it on the policy (or give the host its own schedule of this kind, which replaces the policy's)")]
    FromPolicy(ScheduleId, rm_core::PolicyId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The checked form of a request: kind and normalised params.
pub(crate) fn validate(
    req: &ScheduleRequest,
) -> Result<(JobKind, serde_json::Value, CronSchedule), ScheduleError> {
    let kind: JobKind = req
        .kind
        .parse()
        .map_err(|e: String| ScheduleError::Invalid(format!("`kind`: {e}")))?;
    if !SCHEDULABLE.contains(&kind) {
        return Err(ScheduleError::Invalid(format!(
            "`kind`: `{kind}` cannot be scheduled (backup, forget, prune, check or copy can)"
        )));
    }
    let cron = CronSchedule::parse(req.cron.trim(), req.timezone.as_deref().map(str::trim))
        .map_err(|e| ScheduleError::Invalid(format!("`cron`/`timezone`: {e}")))?;
    let params =
        JobParams::parse(kind, &req.params).map_err(|e| ScheduleError::Invalid(e.to_string()))?;
    // A rotating check's subset is chosen per run (docs/verification.md);
    // one fixed in a schedule would read the same part every time.
    if let JobParams::Check(check) = &params {
        if check.rotation().is_some() && check.subset.is_some() {
            return Err(ScheduleError::Invalid(String::from(
                "`params.subset` is chosen for each run of a rotating check; a schedule cannot fix it (leave it out)",
            )));
        }
    }
    if req.jitter_seconds > MAX_JITTER_SECONDS {
        return Err(ScheduleError::Invalid(format!(
            "`jitter_seconds` must be at most {MAX_JITTER_SECONDS} (a day)"
        )));
    }
    Ok((kind, params.to_value(), cron))
}

/// The API form of a schedule, with its next fire time.
pub(crate) fn view(record: &ScheduleRecord) -> ScheduleView {
    let cron = CronSchedule::parse(&record.cron, record.timezone.as_deref()).ok();
    ScheduleView {
        id: record.id.to_string(),
        host_id: record.host_id.to_string(),
        kind: record.kind.clone(),
        cron: record.cron.clone(),
        timezone: record.timezone.clone(),
        params: record.params.clone(),
        enabled: record.enabled,
        jitter_seconds: record.jitter_seconds,
        description: cron
            .as_ref()
            .map(CronSchedule::describe)
            .unwrap_or_else(|| format!("cron `{}`", record.cron)),
        next_fire_at: cron
            .filter(|_| record.enabled)
            .and_then(|c| c.next_after(Utc::now())),
        created_at: record.created_at,
        updated_at: record.updated_at,
        source: String::from(if record.policy.is_some() {
            "policy"
        } else {
            "host"
        }),
        policy_id: record.policy.map(|(policy, _)| policy.to_string()),
    }
}

/// Adds a schedule to a host and pushes the new set. `audit` builds the
/// audit entry written with it.
pub async fn create(
    state: &AppState,
    host: HostId,
    req: &ScheduleRequest,
    audit: Option<EntryFor<'_, ScheduleRecord>>,
) -> Result<ScheduleRecord, ScheduleError> {
    let (kind, params, _) = validate(req)?;
    if state.store().host(host).await?.is_none() {
        return Err(ScheduleError::HostNotFound(host));
    }
    let now = Utc::now();
    let record = ScheduleRecord {
        id: ScheduleId::new(),
        host_id: host,
        kind: kind.as_str().to_owned(),
        cron: req.cron.trim().to_owned(),
        timezone: req.timezone.as_deref().map(str::trim).map(str::to_owned),
        params,
        enabled: req.enabled,
        jitter_seconds: req.jitter_seconds,
        created_at: now,
        updated_at: now,
        policy: None,
    };
    let entry = audit.map(|entry_for| entry_for(&record));
    let version = state
        .store()
        .create_schedule(&record, entry.as_ref())
        .await?;
    tracing::info!(%host, schedule = %record.id, version, "schedule created");
    push(state, host).await;
    own_schedules_changed(state, host).await;
    Ok(record)
}

/// Replaces a schedule's settings and pushes the new set. `audit` builds
/// the audit entry written with it.
pub async fn update(
    state: &AppState,
    id: ScheduleId,
    req: &ScheduleRequest,
    audit: Option<EntryFor<'_, ScheduleRecord>>,
) -> Result<ScheduleRecord, ScheduleError> {
    let (kind, params, _) = validate(req)?;
    let current = state
        .store()
        .schedule(id)
        .await?
        .ok_or(ScheduleError::NotFound(id))?;
    if let Some((policy, _)) = current.policy {
        return Err(ScheduleError::FromPolicy(id, policy));
    }
    let record = ScheduleRecord {
        kind: kind.as_str().to_owned(),
        cron: req.cron.trim().to_owned(),
        timezone: req.timezone.as_deref().map(str::trim).map(str::to_owned),
        params,
        enabled: req.enabled,
        jitter_seconds: req.jitter_seconds,
        updated_at: Utc::now(),
        ..current
    };
    let entry = audit.map(|entry_for| entry_for(&record));
    let version = state
        .store()
        .update_schedule(&record, entry.as_ref())
        .await
        .map_err(not_found(id))?;
    tracing::info!(host = %record.host_id, schedule = %id, version, "schedule updated");
    push(state, record.host_id).await;
    own_schedules_changed(state, record.host_id).await;
    Ok(record)
}

/// Deletes a schedule and pushes the new set. `audit` builds the audit
/// entry written with it from the schedule as it was.
pub async fn delete(
    state: &AppState,
    id: ScheduleId,
    audit: Option<EntryFor<'_, ScheduleRecord>>,
) -> Result<(), ScheduleError> {
    // Read first, so the entry says what was deleted (and a policy's
    // schedule is refused).
    let current = state
        .store()
        .schedule(id)
        .await?
        .ok_or(ScheduleError::NotFound(id))?;
    if let Some((policy, _)) = current.policy {
        return Err(ScheduleError::FromPolicy(id, policy));
    }
    let entry = audit.map(|entry_for| entry_for(&current));
    let (host, version) = state
        .store()
        .delete_schedule(id, entry.as_ref())
        .await
        .map_err(not_found(id))?;
    tracing::info!(%host, schedule = %id, version, "schedule deleted");
    push(state, host).await;
    own_schedules_changed(state, host).await;
    Ok(())
}

/// The key under which a fire runs once per repository: a policy's
/// prune, check or forget with prune (see `shared::once_per_repository`)
/// into a repository other hosts share. Every host of the repository fires the schedule at the
/// same nominal time; the first fire to arrive makes the job. `None` for
/// every other fire.
async fn shared_fire_key(
    state: &AppState,
    host: HostId,
    schedule: &ScheduleRecord,
    fire: &ScheduleFire,
) -> Result<Option<String>, StoreError> {
    let Some((_, policy_schedule)) = schedule.policy else {
        return Ok(None);
    };
    if !crate::repositories::shared::once_per_repository(&schedule.kind, &schedule.params) {
        return Ok(None);
    }
    let Some(host) = state.store().host(host).await? else {
        return Ok(None);
    };
    Ok(match host.repository_key {
        Some(key) if host.repository_shared_with > 0 => Some(format!(
            "{policy_schedule}@{}@{key}",
            fire.scheduled_at.timestamp()
        )),
        _ => None,
    })
}

/// The params of a `forget` that prunes, without the prune: what each
/// other host of a shared repository still runs when one host holds the
/// fire (its `forget` keeps to its own snapshots). `None` for other jobs.
fn own_forget(kind: &str, params: &serde_json::Value) -> Option<serde_json::Value> {
    if kind != "forget" || params.get("prune").and_then(serde_json::Value::as_bool) != Some(true) {
        return None;
    }
    let mut own = params.clone();
    own.as_object_mut()?
        .insert(String::from("prune"), serde_json::Value::Bool(false));
    Some(own)
}

/// A host's own schedules replace its policy's of the same kind: after a
/// change to them, the policy's are given or taken back to match.
async fn own_schedules_changed(state: &AppState, host: HostId) {
    if let Err(e) = crate::policies::reconcile(state, Some(&[host]), None, None).await {
        tracing::error!(%host, "could not apply the host's policy after its schedules changed: {e}");
    }
}

fn not_found(id: ScheduleId) -> impl Fn(StoreError) -> ScheduleError {
    move |e| match e {
        StoreError::NotFound(_) => ScheduleError::NotFound(id),
        other => ScheduleError::Store(other),
    }
}

/// The host's whole schedule set as the agent receives it.
pub(crate) async fn schedule_set(
    state: &AppState,
    host: HostId,
) -> Result<ScheduleSet, StoreError> {
    let (version, records) = state.store().schedule_set(host).await?;
    Ok(as_set(version, records))
}

/// A stored schedule set as the agent receives it.
fn as_set(version: u64, records: Vec<ScheduleRecord>) -> ScheduleSet {
    let schedules = records
        .into_iter()
        .filter_map(|r| {
            let kind: JobKind = r.kind.parse().ok()?;
            Some(Schedule {
                id: r.id.to_string(),
                kind,
                cron: r.cron,
                timezone: r.timezone,
                params: r.params,
                enabled: r.enabled,
                jitter_seconds: r.jitter_seconds,
            })
        })
        .collect();
    ScheduleSet { version, schedules }
}

/// Sends the host's current set to its agent, if connected. A host that is
/// offline gets it on its next hello.
async fn push(state: &AppState, host: HostId) {
    state.fleet_changed();
    send_sets(state, &[host]).await;
}

/// Hosts whose sets are read and sent together.
const PUSH_BATCH: usize = 256;

/// Sends the current sets of `hosts` to their agents, those connected,
/// without announcing a fleet change (for callers that change many hosts
/// and announce once). A batch of hosts at a time: their sets read in one
/// go under their push locks, since a read per host made a policy change's
/// push to 10,000 agents take seconds of the server's time.
pub(crate) async fn send_sets(state: &AppState, hosts: &[HostId]) {
    for chunk in hosts.chunks(PUSH_BATCH) {
        let (connected, elsewhere): (Vec<HostId>, Vec<HostId>) = chunk
            .iter()
            .copied()
            .partition(|h| state.hub().is_connected(*h));
        // Agents connected to other servers get theirs from those.
        for host in elsewhere {
            bus::send(
                state,
                Signal::Push {
                    host,
                    what: Pushed::Schedules,
                },
            );
        }
        if connected.is_empty() {
            continue;
        }
        // A host connecting meanwhile reads its set itself, under its lock.
        let _push = state.hub().push_locks(&connected).await;
        let sets = match state.store().schedule_sets(&connected).await {
            Ok(sets) => sets,
            Err(e) => {
                tracing::error!(hosts = connected.len(), error = %e, "could not read schedules to push");
                continue;
            }
        };
        for (host, version, records) in sets {
            let Some(conn) = state.hub().get(host) else {
                continue;
            };
            if let Err(e) = conn.send(Frame::new(as_set(version, records))) {
                tracing::warn!(%host, error = %e, "could not push schedules; the agent gets them on reconnect");
            }
        }
    }
}

/// `schedule.ack`: the agent runs `version` now.
pub(crate) async fn on_ack(
    state: &AppState,
    host: HostId,
    ack: ScheduleAck,
) -> Result<(), ReportError> {
    if state
        .schedule_acks()
        .record(state.store(), host, ack.version)
        .await?
    {
        tracing::info!(%host, version = ack.version, "agent applied schedule set");
        state.fleet_changed();
    } else {
        tracing::debug!(%host, version = ack.version, "stale or unknown schedule ack ignored");
    }
    Ok(())
}

/// An acknowledgement waiting to be written.
struct PendingAck {
    host: HostId,
    version: u64,
    /// Whether it changed the applied version; `Err` when its batch failed
    /// (it is then written on its own, for its own error).
    answer: tokio::sync::oneshot::Sender<Result<bool, ()>>,
}

/// Writes `schedule.ack`s in groups: whoever has the turn writes every
/// acknowledgement waiting, in one transaction. One ack alone is written at
/// once; the 10,000 that follow a policy change are written a few hundred
/// at a time instead of one transaction each, with heartbeats and job
/// events queueing behind every one of them.
#[derive(Default)]
pub(crate) struct Acks {
    pending: std::sync::Mutex<Vec<PendingAck>>,
    turn: tokio::sync::Mutex<()>,
}

impl Acks {
    /// Records that `host` runs `version`; returns whether its applied
    /// version changed.
    pub(crate) async fn record(
        &self,
        store: &dyn rm_store::Store,
        host: HostId,
        version: u64,
    ) -> Result<bool, StoreError> {
        let (answer, mut answered) = tokio::sync::oneshot::channel();
        let queued = match self.pending.lock() {
            Ok(mut pending) => {
                pending.push(PendingAck {
                    host,
                    version,
                    answer,
                });
                true
            }
            Err(_) => false,
        };
        if !queued {
            return store.record_schedule_ack(host, version).await;
        }
        {
            let _turn = self.turn.lock().await;
            // Taken and answered by an earlier turn, or taken now.
            let batch: Vec<PendingAck> = self
                .pending
                .lock()
                .map(|mut p| std::mem::take(&mut *p))
                .unwrap_or_default();
            if !batch.is_empty() {
                let acks: Vec<(HostId, u64)> = batch.iter().map(|a| (a.host, a.version)).collect();
                match store.record_schedule_acks(&acks).await {
                    Ok(recorded) => {
                        for a in batch {
                            let changed = recorded.contains(&(a.host, a.version));
                            let _ = a.answer.send(Ok(changed));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(
                            acks = batch.len(),
                            "a batch of schedule acks failed; each is tried alone: {e}"
                        );
                        for a in batch {
                            let _ = a.answer.send(Err(()));
                        }
                    }
                }
            }
        }
        match answered.try_recv() {
            Ok(Ok(changed)) => Ok(changed),
            // Its batch failed, or the turn that took it was abandoned.
            Ok(Err(())) | Err(_) => store.record_schedule_ack(host, version).await,
        }
    }
}

/// `schedule.fire`: a schedule's time came on the agent.
///
/// Connected, the server makes the job (or records it skipped when the
/// schedule's previous run is still going) and dispatches it as any other.
/// A fire carrying a `job_id` is an agent reporting what it did while the
/// server was away: the job is recorded under the agent's id, and the
/// reports that follow fill it in.
pub(crate) async fn on_fire(
    state: &AppState,
    host: HostId,
    fire: ScheduleFire,
) -> Result<(), ReportError> {
    let id: ScheduleId = fire.schedule_id.parse().map_err(|_| {
        ReportError::BadId(format!(
            "`schedule_id` `{}` is not a schedule id",
            fire.schedule_id
        ))
    })?;
    let schedule = state
        .store()
        .schedule(id)
        .await?
        .filter(|s| s.host_id == host)
        .ok_or_else(|| ReportError::NotFound(format!("schedule `{id}` not found for this host")))?;
    let trigger = if fire.catch_up {
        JobTrigger::CatchUp
    } else {
        JobTrigger::Schedule
    };

    if let Some(raw) = &fire.job_id {
        let job_id: JobId = raw
            .parse()
            .map_err(|_| ReportError::BadId(format!("`job_id` `{raw}` is not a job id")))?;
        if state.store().job(job_id).await?.is_some() {
            return Ok(()); // a replay after a reconnect
        }
        let (status, error) = if fire.skipped {
            (
                JobStatus::Skipped,
                Some(String::from(
                    "skipped by the agent: the schedule's previous run was still going",
                )),
            )
        } else {
            (JobStatus::Dispatched, None)
        };
        state
            .store()
            .create_job(
                &NewJob {
                    id: job_id,
                    host_id: host,
                    kind: schedule.kind.clone(),
                    params: schedule.params.clone(),
                    trigger,
                    schedule_id: Some(id),
                    status,
                    error,
                    created_at: fire.scheduled_at,
                },
                None,
            )
            .await?;
        tracing::info!(%host, schedule = %id, job_id = %job_id, skipped = fire.skipped, "agent ran a scheduled job while offline");
        return Ok(());
    }

    if !schedule.enabled {
        tracing::info!(%host, schedule = %id, "ignoring a fire of a disabled schedule");
        return Ok(());
    }
    let active = state.store().active_jobs_of_schedule(id).await?;
    if let Some(previous) = active.first() {
        let skipped = state
            .store()
            .create_job(
                &NewJob {
                    id: JobId::new(),
                    host_id: host,
                    kind: schedule.kind.clone(),
                    params: schedule.params.clone(),
                    trigger,
                    schedule_id: Some(id),
                    status: JobStatus::Skipped,
                    error: Some(format!(
                        "skipped: the schedule's previous run (job {}) was still {}",
                        previous.id, previous.status
                    )),
                    created_at: Utc::now(),
                },
                None,
            )
            .await?;
        tracing::info!(%host, schedule = %id, job_id = %skipped.id, "scheduled run skipped");
        return Ok(());
    }
    let kind: JobKind = schedule
        .kind
        .parse()
        .map_err(|e: String| ReportError::NotFound(e))?;
    let request = JobRequest {
        id: JobId::new(),
        host,
        kind,
        params: &schedule.params,
        trigger,
        schedule: Some(id),
        scope: None,
    };
    if let Some(fire_key) = shared_fire_key(state, host, &schedule, &fire).await? {
        return match jobs::create_once(state, &request, &fire_key).await {
            Ok((job, true)) => {
                tracing::info!(%host, schedule = %id, job_id = %job.id, "scheduled job queued for the shared repository");
                Ok(())
            }
            Ok((job, false)) => match own_forget(&schedule.kind, &schedule.params) {
                // Retention is per host (`forget --host`): the other host
                // prunes the repository for this fire, but this host's
                // snapshots are forgotten only by a forget of its own.
                Some(params) => {
                    let request = JobRequest {
                        params: &params,
                        ..request
                    };
                    match jobs::create(state, &request, None).await {
                        Ok(own) => {
                            tracing::info!(%host, schedule = %id, job_id = %own.id, prunes_on = %job.host_id, "scheduled forget queued; the shared repository's prune runs on another host");
                            Ok(())
                        }
                        Err(JobError::Store(e)) => Err(ReportError::Store(e)),
                        Err(e) => {
                            tracing::warn!(%host, schedule = %id, error = %e, "a scheduled job could not be queued");
                            Err(ReportError::NotFound(e.to_string()))
                        }
                    }
                }
                None => {
                    tracing::info!(%host, schedule = %id, job_id = %job.id, runs_on = %job.host_id, "this fire of the policy's schedule already runs for the shared repository on another host");
                    Ok(())
                }
            },
            Err(JobError::Store(e)) => Err(ReportError::Store(e)),
            Err(e) => {
                tracing::warn!(%host, schedule = %id, error = %e, "a scheduled job could not be queued");
                Err(ReportError::NotFound(e.to_string()))
            }
        };
    }
    match jobs::create(state, &request, None).await {
        Ok(job) => {
            tracing::info!(%host, schedule = %id, job_id = %job.id, "scheduled job queued");
            Ok(())
        }
        Err(JobError::Store(e)) => Err(ReportError::Store(e)),
        Err(e) => {
            // No repository, bad stored params…: the operator must see it.
            tracing::warn!(%host, schedule = %id, error = %e, "a scheduled job could not be queued");
            Err(ReportError::NotFound(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{own_forget, validate};

    #[test]
    fn only_a_pruning_forget_leaves_its_own_forget_to_each_host() {
        assert_eq!(
            own_forget("forget", &json!({"keep_last": 3, "prune": true})),
            Some(json!({"keep_last": 3, "prune": false}))
        );
        assert_eq!(own_forget("forget", &json!({"keep_last": 3})), None);
        assert_eq!(own_forget("prune", &json!({"prune": true})), None);
        assert_eq!(own_forget("check", &json!({})), None);
    }

    #[test]
    fn a_rotating_check_schedule_leaves_the_subset_to_each_run() {
        let request = |params| rm_protocol::api::ScheduleRequest {
            kind: String::from("check"),
            cron: String::from("0 4 * * *"),
            timezone: None,
            params,
            enabled: true,
            jitter_seconds: 0,
        };
        let (_, params, _) =
            validate(&request(json!({"read_data": "rotate", "cycle": 7}))).unwrap();
        assert_eq!(params, json!({"read_data": "rotate", "cycle": 7}));
        let fixed = validate(&request(
            json!({"read_data": "rotate", "cycle": 7, "subset": 2}),
        ))
        .unwrap_err()
        .to_string();
        assert!(fixed.contains("`params.subset`"), "{fixed}");
    }
}
