//! Jobs: creating them, handing them to a host's agent one at a time in
//! creation order, cancelling them, and recording what the agent reports.
//!
//! The store's conditional updates make every step idempotent: a job is
//! dispatched by whoever moves it from `queued` first, and a repeated or
//! late report can never move a finished job.

pub mod bulk;
pub(crate) mod events;
pub(crate) mod log_writer;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rm_core::{HostId, JobId, JobStatus, JobTrigger, ScheduleId};
use rm_protocol::api::JobView;
use rm_protocol::params::{JobParams, RestoreParams};
use rm_protocol::{
    close_code, CommandCancel, CommandResult, CommandRun, Frame, JobAck, JobFinished, JobKind,
    JobOutcome, JobProgress, JobStarted, LogStream, LogStreamKind, RejectReason, SnapshotAdded,
};
use rm_store::{
    CommandResultRecord, Job, JobEnd, LogLineRecord, NewAuditEntry, NewJob, SnapshotRecord,
    StoreError,
};
use serde_json::Value;

use crate::audit::EntryFor;
use crate::cluster::bus::{self, Signal};
use crate::hub::AgentConn;
use crate::repositories;
use crate::repositories::shared::{may_start, Verdict};
use crate::state::AppState;
use events::JobEvent;

/// Longest log line stored; longer ones are cut with a marker, not dropped.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 64 * 1024;
/// Longest job error text stored (an agent's, or restic's via the agent).
const MAX_ERROR_BYTES: usize = 4 * 1024;
/// Most "files being worked on" passed on from one progress sample, and
/// the longest name kept of each: live display only.
const MAX_CURRENT_FILES: usize = 16;
const MAX_CURRENT_FILE_BYTES: usize = 1024;

/// What can go wrong with a job request.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Bad kind or parameters; names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such host.
    #[error("host `{0}` not found")]
    HostNotFound(HostId),
    /// The host's agent is not connected.
    #[error("host `{0}` is offline; jobs can be started when its agent is connected")]
    HostOffline(HostId),
    /// The job needs a repository that is not set.
    #[error("{0}")]
    NoRepository(String),
    /// No such job.
    #[error("job `{0}` not found")]
    NotFound(JobId),
    /// The job is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The API form of a job.
pub(crate) fn view(job: &Job) -> JobView {
    JobView {
        id: job.id.to_string(),
        host_id: job.host_id.to_string(),
        kind: job.kind.clone(),
        params: job.params.clone(),
        status: job.status.to_string(),
        trigger: job.trigger.as_str().to_owned(),
        schedule_id: job.schedule_id.map(|s| s.to_string()),
        exit_code: job.exit_code,
        stats: job.stats.clone(),
        error: job.error.clone(),
        created_at: job.created_at,
        dispatched_at: job.dispatched_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
    }
}

/// A job to queue: what, where, and why.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    /// The new job's id, chosen by the caller so that an audit entry
    /// written with the job (or with the change that queues it) can name it.
    pub id: JobId,
    /// The host that runs it.
    pub host: HostId,
    /// What it does.
    pub kind: JobKind,
    /// Its parameters, checked against `kind`.
    pub params: &'a Value,
    /// Who or what asked for it.
    pub trigger: JobTrigger,
    /// The schedule that fired it, if one did.
    pub schedule: Option<ScheduleId>,
    /// The asking user's scope, if any: a restore's source host outside it
    /// is refused exactly like a missing one.
    pub scope: Option<&'a rm_core::Selector>,
}

/// Validates and queues a job, then dispatches it if the host is free.
/// `audit` builds the audit entry written with it (from the job as it is
/// stored: parameters normalised).
pub async fn create(
    state: &AppState,
    request: &JobRequest<'_>,
    audit: Option<EntryFor<'_, NewJob>>,
) -> Result<Job, JobError> {
    let new = prepare(state, request).await?;
    let entry = audit.map(|entry_for| entry_for(&new));
    let job = state.store().create_job(&new, entry.as_ref()).await?;
    queued(state, &job).await
}

/// Like [`create`], but only the first request under `fire_key` makes a
/// job: a policy's prune or check of a shared repository is fired by each
/// of its hosts, and runs once. Returns the job holding the key and
/// whether it is the one just made.
pub async fn create_once(
    state: &AppState,
    request: &JobRequest<'_>,
    fire_key: &str,
) -> Result<(Job, bool), JobError> {
    let new = prepare(state, request).await?;
    let (job, made) = state.store().create_job_once(&new, fire_key).await?;
    if !made {
        return Ok((job, false));
    }
    Ok((queued(state, &job).await?, true))
}

/// Announces a job just stored and dispatches it if its host is free.
async fn queued(state: &AppState, job: &Job) -> Result<Job, JobError> {
    tracing::info!(job_id = %job.id, host_id = %job.host_id, kind = %job.kind, trigger = job.trigger.as_str(), "job queued");
    state.fleet_changed();
    dispatch_next(state, job.host_id).await;
    Ok(state
        .store()
        .job(job.id)
        .await?
        .unwrap_or_else(|| job.clone()))
}

/// Checks a job request against its kind and host, and makes the job to
/// store.
pub(crate) async fn prepare(
    state: &AppState,
    request: &JobRequest<'_>,
) -> Result<NewJob, JobError> {
    let JobRequest {
        id,
        host: host_id,
        kind,
        params,
        trigger,
        schedule,
        scope,
    } = *request;
    let params = JobParams::parse(kind, params).map_err(|e| JobError::Invalid(e.to_string()))?;
    let host = state
        .store()
        .host(host_id)
        .await?
        .ok_or(JobError::HostNotFound(host_id))?;
    match &params {
        JobParams::Restore(RestoreParams {
            source_host_id: Some(source),
            ..
        }) => {
            let source: HostId = source.parse().map_err(|_| {
                JobError::Invalid(format!(
                    "`params.source_host_id` `{source}` is not a host id"
                ))
            })?;
            let source_host = state
                .store()
                .host(source)
                .await?
                .filter(|h| scope.is_none_or(|scope| scope.matches(&h.labels)))
                .ok_or_else(|| {
                JobError::Invalid(format!(
                    "`params.source_host_id`: host `{source}` not found"
                ))
            })?;
            if !source_host.has_repository {
                return Err(JobError::NoRepository(format!(
                    "source host `{}` has no repository set",
                    source_host.name
                )));
            }
            if let Some(reason) = &source_host.repository_refused {
                return Err(JobError::NoRepository(format!(
                    "source host `{}`: repository settings refused: {reason}",
                    source_host.name
                )));
            }
        }
        _ if !host.has_repository => {
            return Err(JobError::NoRepository(format!(
                "host `{}` has no repository set; PUT /api/v1/hosts/{host_id}/repository first",
                host.name
            )))
        }
        _ if host.repository_refused.is_some() => {
            return Err(JobError::NoRepository(format!(
                "host `{}`: repository settings refused: {}; PUT /api/v1/hosts/{host_id}/repository with usable settings",
                host.name,
                host.repository_refused.as_deref().unwrap_or_default()
            )))
        }
        _ => {}
    }
    if matches!(params, JobParams::Copy(_)) {
        repositories::require_copy_target(state, host_id).await?;
    }
    Ok(NewJob {
        id,
        host_id,
        kind: kind.as_str().to_owned(),
        params: params.to_value(),
        trigger,
        schedule_id: schedule,
        status: JobStatus::Queued,
        error: None,
        created_at: Utc::now(),
    })
}

/// After a job of `host` ended, gives the other hosts of its repository
/// (if shared) the chance to start what waited for it.
pub(crate) async fn wake_repository(state: &AppState, host: HostId) {
    // Only other hosts' queued jobs count: for a repository nobody shares
    // there are none.
    let key = match state.store().repository_key(host).await {
        Ok(Some(key)) => key,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(%host, "could not read the host's repository: {e}");
            return;
        }
    };
    let waiting: Vec<HostId> = match state.store().repository_jobs(&key).await {
        Ok(jobs) => jobs
            .into_iter()
            .filter(|j| j.status == JobStatus::Queued && j.host_id != host)
            .map(|j| j.host_id)
            .collect(),
        Err(e) => {
            tracing::error!(%host, "could not read the jobs of a shared repository: {e}");
            return;
        }
    };
    let mut seen = std::collections::HashSet::new();
    for other in waiting {
        if seen.insert(other) {
            dispatch_next(state, other).await;
        }
    }
}

/// Sends the host's next queued job to its agent, if the agent is connected
/// and no other job of the host is dispatched or running. An agent
/// connected to another server is that server's to dispatch to: it is
/// asked to.
pub async fn dispatch_next(state: &AppState, host_id: HostId) {
    if !state.hub().is_connected(host_id) {
        bus::send(state, Signal::Dispatch { host: host_id });
        return;
    }
    if let Err(e) = try_dispatch_next(state, host_id).await {
        tracing::error!(%host_id, error = %e, "could not dispatch the next job");
    }
}

async fn try_dispatch_next(state: &AppState, host_id: HostId) -> Result<(), JobError> {
    loop {
        let Some(conn) = state.hub().get(host_id) else {
            return Ok(());
        };
        let Some(job) = state.store().next_dispatchable_job(host_id).await? else {
            return Ok(());
        };
        // A job into a repository other hosts use may have to wait for
        // theirs; the repository's turn is held until it is marked
        // dispatched, so the decision and the move are one step.
        let key = state.store().repository_key(host_id).await?;
        let _turn = match &key {
            Some(key) => {
                let Some(turn) = state.repository_turns().take(state, key).await else {
                    return Ok(());
                };
                let jobs = state.store().repository_jobs(key).await?;
                if let Verdict::Wait(why) =
                    may_start(job.id, &jobs, state.config().backups_per_repository)
                {
                    tracing::debug!(job_id = %job.id, %host_id, "job {why}");
                    return Ok(());
                }
                Some(turn)
            }
            None => None,
        };
        if !state
            .store()
            .advance_job(job.id, JobStatus::Dispatched, Utc::now())
            .await?
        {
            // Another task dispatched it first.
            return Ok(());
        }
        let command = match command_for(state, &job).await {
            Ok(command) => command,
            Err(reason) => {
                fail(state, job.id, reason).await?;
                continue;
            }
        };
        match conn.send(Frame::new(command)) {
            Ok(()) => {
                tracing::info!(job_id = %job.id, %host_id, kind = %job.kind, "job dispatched");
                publish_status(state, job.id).await;
                return Ok(());
            }
            Err(e) => {
                fail(
                    state,
                    job.id,
                    format!("the job could not be sent to the agent: {e}"),
                )
                .await?;
            }
        }
    }
}

/// The `command.run` for a job; for a restore from another host it carries
/// that host's repository, and a rotating check the subset to read (see
/// [`crate::verification`]).
async fn command_for(state: &AppState, job: &Job) -> Result<CommandRun, String> {
    let kind: JobKind = job.kind.parse()?;
    let mut params = JobParams::parse(kind, &job.params).map_err(|e| e.to_string())?;
    if let JobParams::Check(check) = &mut params {
        crate::verification::choose_subset(state, job.host_id, check).await;
    }
    let repository = match &params {
        JobParams::Restore(RestoreParams {
            source_host_id: Some(source),
            ..
        }) => {
            let source: HostId = source
                .parse()
                .map_err(|_| format!("bad source host `{source}`"))?;
            let config = repositories::usable(state, source)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("source host `{source}` has no repository set"))?;
            Some(config)
        }
        _ => None,
    };
    Ok(CommandRun {
        job_id: job.id.to_string(),
        kind,
        params: params.to_value(),
        repository,
    })
}

/// Marks a job failed with `error` (if it is not finished already) and
/// tells watchers.
async fn fail(state: &AppState, job: JobId, error: String) -> Result<(), JobError> {
    tracing::warn!(job_id = %job, %error, "job failed before it ran");
    finish(
        state,
        job,
        JobEnd {
            status: JobStatus::Failed,
            exit_code: None,
            stats: Value::Null,
            error: Some(error),
            finished_at: Utc::now(),
            provisional: false,
        },
        None,
    )
    .await
}

/// Records a job's end (with `audit`, the entry of an operator's action
/// that ended it, in the same transaction), tells watchers, and dispatches
/// the host's next job.
async fn finish(
    state: &AppState,
    job: JobId,
    end: JobEnd,
    audit: Option<&NewAuditEntry>,
) -> Result<(), JobError> {
    if state.store().finish_job(job, &end, audit).await? {
        if let Some(stored) = state.store().job(job).await? {
            state
                .job_events()
                .publish(job, JobEvent::Finished(Box::new(view(&stored))));
            bus::send(state, Signal::JobChanged { job });
            tracing::info!(job_id = %job, status = %end.status, "job finished");
            Box::pin(crate::verification::job_ended(state, &stored)).await;
            Box::pin(crate::alerts::job_ended(state, &stored)).await;
            state.fleet_changed();
            Box::pin(dispatch_next(state, stored.host_id)).await;
            Box::pin(wake_repository(state, stored.host_id)).await;
        }
    }
    Ok(())
}

async fn publish_status(state: &AppState, job: JobId) {
    state.fleet_changed();
    bus::send(state, Signal::JobChanged { job });
    if let Ok(Some(stored)) = state.store().job(job).await {
        state
            .job_events()
            .publish(job, JobEvent::Status(Box::new(view(&stored))));
    }
}

/// Cancels a job: a queued one at once; a dispatched or running one by
/// asking its agent (which then reports it cancelled). `audit` builds the
/// audit entry from the job as the cancel leaves it: written with the
/// cancellation of a queued job, or, for a job an agent is asked to stop
/// (which changes nothing here yet), written before the agent is asked.
pub async fn cancel(
    state: &AppState,
    id: JobId,
    audit: Option<EntryFor<'_, Job>>,
) -> Result<Job, JobError> {
    let job = state.store().job(id).await?.ok_or(JobError::NotFound(id))?;
    match job.status {
        JobStatus::Queued => {
            let end = JobEnd {
                status: JobStatus::Cancelled,
                exit_code: None,
                stats: Value::Null,
                error: Some(String::from("cancelled before it started")),
                finished_at: Utc::now(),
                provisional: false,
            };
            let entry = audit.map(|entry_for| {
                entry_for(&Job {
                    status: end.status,
                    ..job.clone()
                })
            });
            finish(state, id, end, entry.as_ref()).await?;
        }
        JobStatus::Dispatched | JobStatus::Running => {
            let conn = state.hub().get(job.host_id);
            if conn.is_none() && !crate::cluster::agent_connected(state, job.host_id).await? {
                return Err(JobError::HostOffline(job.host_id));
            }
            // No entry, no request: an agent is never asked to stop a job
            // unless the log says who asked.
            if let Some(entry_for) = audit {
                state.store().record_audit(&entry_for(&job)).await?;
            }
            match conn {
                Some(conn) => conn
                    .send(Frame::new(CommandCancel {
                        job_id: id.to_string(),
                    }))
                    .map_err(|e| JobError::Conflict(format!("could not reach the agent: {e}")))?,
                // The server holding the agent's connection asks it.
                None => bus::send(
                    state,
                    Signal::Cancel {
                        host: job.host_id,
                        job: id,
                    },
                ),
            }
            tracing::info!(job_id = %id, "cancel requested");
        }
        finished => {
            return Err(JobError::Conflict(format!(
                "job `{id}` already finished ({finished})"
            )))
        }
    }
    state.store().job(id).await?.ok_or(JobError::NotFound(id))
}

/// Asks `host`'s agent, if connected here, to stop `job` (for a cancel
/// requested on another server).
pub(crate) fn send_cancel_here(state: &AppState, host: HostId, job: JobId) {
    let Some(conn) = state.hub().get(host) else {
        return;
    };
    match conn.send(Frame::new(CommandCancel {
        job_id: job.to_string(),
    })) {
        Ok(()) => tracing::info!(job_id = %job, "cancel requested through another server"),
        Err(e) => tracing::warn!(job_id = %job, error = %e, "could not ask the agent to cancel"),
    }
}

/// Per-connection bookkeeping for job messages: which jobs this agent may
/// report on (its own host's), remembered so the hot log path does not
/// read the job on every batch, and the connection that `job.ack`s go to.
pub(crate) struct AgentJobs {
    conn: AgentConn,
    owned: HashSet<JobId>,
}

/// A job report that cannot be accepted; sent back as `error bad_request`
/// or `not_found`.
#[derive(Debug)]
pub(crate) enum ReportError {
    /// The job id is malformed.
    BadId(String),
    /// No such job for this host.
    NotFound(String),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for ReportError {
    fn from(e: StoreError) -> Self {
        ReportError::Store(e)
    }
}

impl AgentJobs {
    /// Bookkeeping for the agent connection `conn`.
    pub(crate) fn new(conn: AgentConn) -> AgentJobs {
        AgentJobs {
            conn,
            owned: HashSet::new(),
        }
    }

    /// Tells the agent what is stored. A full queue drops the ack, which
    /// only means the agent sends the acknowledged reports once more. A
    /// connection closing after a storage failure acknowledges nothing
    /// more: a later report may be stored while an earlier one was not,
    /// and the agent must keep (and replay) both.
    pub(crate) fn ack(&self, ack: JobAck) {
        if self.conn.is_closing() {
            tracing::debug!(job_id = %ack.job_id, "not acknowledging on a closing connection");
            return;
        }
        if let Err(e) = self.conn.send(Frame::new(ack)) {
            tracing::debug!(error = %e, "could not queue a job.ack");
        }
    }

    /// Ends the connection because a report could not be stored: the agent
    /// keeps everything unacknowledged in its spool and replays it on its
    /// next connection, after the usual "going away" delay.
    pub(crate) fn report_not_stored(&self, kind: &str) {
        self.conn.close(
            close_code::GOING_AWAY,
            &format!("the server could not store a `{kind}`; send it again"),
        );
    }

    /// Acknowledges a whole job: the agent may forget it.
    pub(crate) fn ack_done(&self, job_id: &str, error: Option<String>) {
        self.ack(JobAck {
            job_id: job_id.to_owned(),
            log_seq: 0,
            done: true,
            error,
        });
    }

    /// The job `raw` if it exists and belongs to `host`. Reports about any
    /// other job are refused for good: the agent is told to drop them, or
    /// it would replay them from its spool forever.
    async fn own(
        &mut self,
        state: &AppState,
        host: HostId,
        raw: &str,
    ) -> Result<JobId, ReportError> {
        let id = parse_job_id(raw)?;
        match self.known(state, host, id).await? {
            Some(id) => Ok(id),
            None => {
                let why = format!("job `{id}` not found for this host");
                self.ack_done(raw, Some(why.clone()));
                Err(ReportError::NotFound(why))
            }
        }
    }

    /// `id` if it exists and belongs to `host`, remembered for this
    /// connection.
    async fn known(
        &mut self,
        state: &AppState,
        host: HostId,
        id: JobId,
    ) -> Result<Option<JobId>, ReportError> {
        if self.owned.contains(&id) {
            return Ok(Some(id));
        }
        match state.store().job(id).await? {
            Some(job) if job.host_id == host => {
                self.owned.insert(id);
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    /// `command.result`.
    pub(crate) async fn command_result(
        &mut self,
        state: &AppState,
        host: HostId,
        result: CommandResult,
    ) -> Result<(), ReportError> {
        let id = self.own(state, host, &result.job_id).await?;
        let reason = result.reason.as_ref().map(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from("other"))
        });
        state
            .store()
            .record_command_result(&CommandResultRecord {
                job_id: id,
                accepted: result.accepted,
                reason: reason.clone(),
                message: result.message.clone(),
                received_at: Utc::now(),
            })
            .await?;
        if result.accepted {
            return Ok(());
        }
        if result.reason == Some(RejectReason::Busy) {
            // The agent is still busy with a job this server thinks is over
            // (it ended while the two were apart). This one waits its turn
            // and goes out when the agent reports that job's end.
            if state
                .store()
                .advance_job(id, JobStatus::Queued, Utc::now())
                .await?
            {
                tracing::info!(job_id = %id, "agent busy; job back in the queue");
                publish_status(state, id).await;
            }
            return Ok(());
        }
        let why = match (&reason, &result.message) {
            (Some(r), Some(m)) => format!("the agent refused the job ({r}): {m}"),
            (Some(r), None) => format!("the agent refused the job ({r})"),
            (None, Some(m)) => format!("the agent refused the job: {m}"),
            (None, None) => String::from("the agent refused the job"),
        };
        fail(state, id, why).await.map_err(job_to_report)
    }

    /// `job.started`.
    pub(crate) async fn started(
        &mut self,
        state: &AppState,
        host: HostId,
        started: JobStarted,
    ) -> Result<(), ReportError> {
        let id = self.own(state, host, &started.job_id).await?;
        if state
            .store()
            .advance_job(id, JobStatus::Running, started.started_at)
            .await?
        {
            publish_status(state, id).await;
        }
        Ok(())
    }

    /// `job.progress`: live only.
    pub(crate) async fn progress(
        &mut self,
        state: &AppState,
        host: HostId,
        mut progress: JobProgress,
    ) -> Result<(), ReportError> {
        // Progress is live and lossy, never spooled: for a job the server
        // does not know (yet) it is dropped, not refused. An agent that
        // reconnects in the middle of a job it started offline sends
        // progress at once, before its spool's replay has told the server
        // about the job; refusing it for good would make the agent drop
        // the job's whole record.
        let Some(id) = self
            .known(state, host, parse_job_id(&progress.job_id)?)
            .await?
        else {
            tracing::debug!(job_id = %progress.job_id, "progress of a job not (yet) known; dropped");
            return Ok(());
        };
        progress.current_files.truncate(MAX_CURRENT_FILES);
        for file in &mut progress.current_files {
            truncate_with_marker(file, MAX_CURRENT_FILE_BYTES);
        }
        if bus::running(state) {
            bus::send(
                state,
                Signal::JobProgress {
                    job: id,
                    progress: progress.clone(),
                },
            );
        }
        state.job_events().publish(id, JobEvent::Progress(progress));
        Ok(())
    }

    /// `log.stream`: handed to the batching writer, and to watchers.
    pub(crate) async fn logs(
        &mut self,
        state: &AppState,
        host: HostId,
        mut stream: LogStream,
    ) -> Result<(), ReportError> {
        let id = self.own(state, host, &stream.job_id).await?;
        if let Some(line) = stream
            .lines
            .iter()
            .find(|l| l.seq == 0 || l.seq > i64::MAX as u64)
        {
            return Err(ReportError::BadId(format!(
                "`seq` {} is out of range (1 to {})",
                line.seq,
                i64::MAX
            )));
        }
        for line in &mut stream.lines {
            truncate_line(&mut line.text);
        }
        let records = stream
            .lines
            .iter()
            .map(|line| LogLineRecord {
                job_id: id,
                seq: line.seq,
                ts: line.ts,
                stream: stream_name(line.stream).to_owned(),
                text: line.text.clone(),
            })
            .collect();
        // Once stored, the agent may drop these lines from its spool. An
        // agent sends a job's lines in order and the writer stores them in
        // order, so every line up to the highest is stored then. If a
        // batch cannot be stored, the connection ends: the agent replays
        // everything unacknowledged on the next one.
        let highest = stream.lines.iter().map(|l| l.seq).max().unwrap_or(0);
        let conn = self.conn.clone();
        let job_id = stream.job_id.clone();
        let signals = state.clone();
        let then: log_writer::Stored = Box::new(move |stored| {
            if stored {
                // Watchers on other servers read the lines from the store.
                bus::send(
                    &signals,
                    Signal::JobLogStored {
                        job: id,
                        upto: highest,
                    },
                );
            }
            if conn.is_closing() {
                // An earlier report failed: acknowledge nothing more here.
            } else if stored {
                let _ = conn.send(Frame::new(JobAck {
                    job_id,
                    log_seq: highest,
                    done: false,
                    error: None,
                }));
            } else {
                conn.close(
                    close_code::GOING_AWAY,
                    "the server could not store log lines; send them again",
                );
            }
        });
        state.log_writer().write(records, Some(then)).await;
        state.job_events().publish(id, JobEvent::Log(stream.lines));
        Ok(())
    }

    /// `snapshot.added`: the snapshot a backup of this host saved joins
    /// the host's stored list (the refresh after the job relists it all).
    pub(crate) async fn snapshot_added(
        &mut self,
        state: &AppState,
        host: HostId,
        added: SnapshotAdded,
    ) -> Result<(), ReportError> {
        self.own(state, host, &added.job_id).await?;
        let s = added.snapshot;
        if let Err(problem) = rm_protocol::params::snapshot_id(&s.id) {
            return Err(ReportError::BadId(format!("`snapshot.id` {problem}")));
        }
        let record = snapshot_record(s);
        state.store().add_snapshot(host, &record).await?;
        state.fleet_changed();
        tracing::info!(%host, snapshot = %record.short_id, "snapshot added");
        Ok(())
    }

    /// `job.finished`: stored once all earlier log lines are.
    pub(crate) async fn finished(
        &mut self,
        state: &AppState,
        host: HostId,
        finished: JobFinished,
    ) -> Result<(), ReportError> {
        let id = self.own(state, host, &finished.job_id).await?;
        state.log_writer().flush().await;
        let job_id = finished.job_id.clone();
        let mut error = finished.error;
        if let Some(error) = &mut error {
            truncate_with_marker(error, MAX_ERROR_BYTES);
        }
        let status = match finished.status {
            JobOutcome::Succeeded => JobStatus::Succeeded,
            JobOutcome::Partial => JobStatus::Partial,
            JobOutcome::Failed => JobStatus::Failed,
            JobOutcome::Cancelled => JobStatus::Cancelled,
        };
        let end = JobEnd {
            status,
            exit_code: finished.exit_code,
            stats: finished.stats,
            error,
            finished_at: finished.finished_at,
            provisional: false,
        };
        finish(state, id, end, None).await.map_err(job_to_report)?;
        // Stored (or already known): every report of the job came before
        // its end, so the agent may forget the job.
        self.ack_done(&job_id, None);
        // Even a report that changed nothing (the job had already been
        // given up on) means the agent is free now.
        dispatch_next(state, host).await;
        Ok(())
    }
}

/// A job id from an agent's report.
fn parse_job_id(raw: &str) -> Result<JobId, ReportError> {
    raw.parse()
        .map_err(|_| ReportError::BadId(format!("`job_id` `{raw}` is not a job id")))
}

fn job_to_report(e: JobError) -> ReportError {
    match e {
        JobError::Store(e) => ReportError::Store(e),
        other => ReportError::NotFound(other.to_string()),
    }
}

fn stream_name(stream: LogStreamKind) -> &'static str {
    match stream {
        LogStreamKind::Stdout => "stdout",
        LogStreamKind::Stderr => "stderr",
    }
}

/// Cuts a line longer than [`MAX_LOG_LINE_BYTES`] at a character boundary
/// and says how much was cut.
pub(crate) fn truncate_line(text: &mut String) {
    truncate_with_marker(text, MAX_LOG_LINE_BYTES);
}

/// Cuts `text` to at most `max` bytes (plus the marker) at a character
/// boundary, saying how much was cut.
fn truncate_with_marker(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!(" … [truncated {dropped} bytes]"));
}

/// After a (re)connect: jobs the store thinks are dispatched or running on
/// this host but the agent neither runs nor holds in its spool were lost
/// (the agent's state was wiped, or it is an agent without a spool). They
/// fail with an error that says so. The ones it names are settled by the
/// reports it replays next.
pub(crate) async fn reconcile_after_hello(
    state: &AppState,
    host: HostId,
    hello: &rm_protocol::Hello,
    connected_at: DateTime<Utc>,
) {
    let active = match state.store().active_jobs(host).await {
        Ok(active) => active,
        Err(e) => {
            tracing::error!(%host, error = %e, "could not reconcile jobs after hello");
            return;
        }
    };
    for job in active {
        let id = job.id.to_string();
        if hello.running_jobs.contains(&id) || hello.spooled_jobs.contains(&id) {
            continue;
        }
        // Dispatched through this very connection after its hello: the
        // agent could not have listed it, and it is not lost.
        if job.dispatched_at.is_some_and(|at| at >= connected_at) {
            continue;
        }
        let end = JobEnd {
            status: JobStatus::Failed,
            exit_code: None,
            stats: Value::Null,
            error: Some(String::from(
                "the agent was interrupted: it reconnected without this job (it neither runs it nor has reports of it)",
            )),
            finished_at: connected_at,
            provisional: false,
        };
        if let Err(e) = finish(state, job.id, end, None).await {
            tracing::error!(job_id = %job.id, error = %e, "could not fail a lost job");
        }
    }
}

/// Gives a host whose agent went away (its connection ended, or the server
/// started without it) a grace period to come back. If it has not when
/// the grace is over, its dispatched and running jobs fail — provisionally:
/// should the agent return after all and replay a job's real end from its
/// spool, that end replaces the verdict.
pub(crate) fn watch_for_lost_agent(
    state: &AppState,
    host: HostId,
    since: DateTime<Utc>,
    why: String,
) {
    let state = state.clone();
    let grace = state.config().lost_agent_grace();
    tokio::spawn(async move {
        tokio::select! {
            // A server shutting down has not lost anybody.
            _ = state.stopping() => return,
            _ = tokio::time::sleep(grace) => {}
        }
        loop {
            // While the server cannot write, it refuses every agent's hello
            // itself: an agent kept out by that is not lost. It gets a
            // whole grace period once the store can be written again.
            let wait = match state.storage().settled_for() {
                None => Some(LOST_AGENT_RETRY),
                Some(settled) if settled < grace => Some(grace - settled),
                Some(_) => None,
            };
            // A storage fault does not cancel the verdict either, it delays
            // it: try again until the store can be written (or the agent
            // is back).
            let wait = match wait {
                Some(wait) => wait,
                None if fail_lost_jobs(&state, host, since, &why, grace).await => return,
                None => LOST_AGENT_RETRY,
            };
            tokio::select! {
                _ = state.stopping() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// How long a lost agent's verdict waits after the store failed.
const LOST_AGENT_RETRY: Duration = Duration::from_secs(5);

/// Fails `host`'s jobs dispatched before `since` unless its agent is back.
/// Returns false when the store failed (the caller tries again).
async fn fail_lost_jobs(
    state: &AppState,
    host: HostId,
    since: DateTime<Utc>,
    why: &str,
    grace: Duration,
) -> bool {
    match crate::cluster::agent_connected(state, host).await {
        Ok(true) => return true,
        Ok(false) => {}
        Err(e) => {
            state.storage().failed("checking where a lost agent is", &e);
            return false;
        }
    }
    let active = match state.store().active_jobs(host).await {
        Ok(active) => active,
        Err(e) => {
            state.storage().failed("checking a lost agent's jobs", &e);
            return false;
        }
    };
    for job in active {
        // Dispatched later, through a connection that ended later: that
        // connection's own watch decides.
        if job.dispatched_at.is_some_and(|at| at > since) {
            continue;
        }
        tracing::warn!(job_id = %job.id, %host, "agent did not come back; failing its job");
        let end = JobEnd {
            status: JobStatus::Failed,
            exit_code: None,
            stats: Value::Null,
            error: Some(format!(
                "the agent was interrupted: {why} at {} and it did not come back within {} s. \
                 If it returns and reports this job, its report replaces this one",
                since.format("%Y-%m-%d %H:%M:%S UTC"),
                grace.as_secs()
            )),
            finished_at: since,
            provisional: true,
        };
        match finish(state, job.id, end, None).await {
            Ok(_) => {}
            Err(JobError::Store(e)) => {
                state.storage().failed("failing a lost agent's job", &e);
                return false;
            }
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "could not fail a lost agent's job")
            }
        }
    }
    true
}

/// At start-up: every host with jobs still dispatched or running gets the
/// same grace as a host whose agent just went away.
pub(crate) async fn watch_hosts_with_active_jobs(state: &AppState) {
    match state.store().hosts_with_active_jobs().await {
        Ok(hosts) => {
            let now = Utc::now();
            for host in hosts {
                watch_for_lost_agent(state, host, now, String::from("the server restarted"));
            }
        }
        Err(e) => tracing::error!(error = %e, "could not list hosts with active jobs"),
    }
}

/// A snapshot as an agent reported it, as the store keeps it.
pub(crate) fn snapshot_record(s: rm_protocol::SnapshotInfo) -> SnapshotRecord {
    SnapshotRecord {
        id: s.id,
        short_id: s.short_id,
        time: s.time,
        hostname: s.hostname,
        paths: s.paths,
        tags: s.tags,
        size_bytes: s.size_bytes,
        file_count: s.file_count,
    }
}

/// A stored snapshot, as the API shows it.
pub(crate) fn snapshot_info(s: SnapshotRecord) -> rm_protocol::SnapshotInfo {
    rm_protocol::SnapshotInfo {
        id: s.id,
        short_id: s.short_id,
        time: s.time,
        hostname: s.hostname,
        paths: s.paths,
        tags: s.tags,
        size_bytes: s.size_bytes,
        file_count: s.file_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_with_a_marker_at_a_char_boundary() {
        let mut line = "é".repeat(MAX_LOG_LINE_BYTES);
        truncate_line(&mut line);
        assert!(line.len() < MAX_LOG_LINE_BYTES + 40);
        assert!(line.ends_with("bytes]"), "{}", &line[line.len() - 40..]);
        let mut short = String::from("fine");
        truncate_line(&mut short);
        assert_eq!(short, "fine");
        let mut error = "x".repeat(MAX_ERROR_BYTES * 3);
        truncate_with_marker(&mut error, MAX_ERROR_BYTES);
        assert!(error.len() < MAX_ERROR_BYTES + 40 && error.ends_with("bytes]"));
    }
}
