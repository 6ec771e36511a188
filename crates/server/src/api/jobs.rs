//! Jobs over HTTP: start one on a host, list and show them, cancel, read
//! their logs, and follow them live as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::{Stream, StreamExt};
use rm_core::{BatchId, JobId, JobStatus, JobTrigger};
use rm_protocol::api::{BulkJobCreated, BulkJobRequest, CreateJob, JobView};
use rm_protocol::{JobKind, LogLine, LogStreamKind};
use rm_store::{Job, JobFilter, LogLineRecord, NewJob};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::hosts::parse_host_id;
use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::jobs::events::JobEvent;
use crate::jobs::{self, JobError, JobRequest};
use crate::state::AppState;

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Invalid(message) => ApiError::bad_request(message),
            JobError::HostNotFound(_) | JobError::NotFound(_) => ApiError::not_found(e.to_string()),
            JobError::HostOffline(_) | JobError::NoRepository(_) | JobError::Conflict(_) => {
                ApiError::conflict(e.to_string())
            }
            JobError::Store(e) => e.into(),
        }
    }
}

/// Start a job on a host.
///
/// `POST /api/v1/hosts/{id}/jobs`.
#[utoipa::path(
    post,
    path = "/hosts/{id}/jobs",
    tag = "jobs",
    operation_id = "create_job",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    request_body = CreateJob,
    responses(
        (status = 201, description = "The job, queued", body = JobView),
        (status = 404, description = "No such host", body = ApiErrorBody),
        (status = 409, description = "The host is offline or has no repository", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(host): ApiPath<String>,
    ApiJson(req): ApiJson<CreateJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let host_id = parse_host_id(&host)?;
    let kind: JobKind = req
        .kind
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("`kind`: {e}")))?;
    if state.store().host(host_id).await?.is_none() {
        return Err(JobError::HostNotFound(host_id).into());
    }
    if !crate::cluster::agent_connected(&state, host_id).await? {
        return Err(JobError::HostOffline(host_id).into());
    }
    let by = Audit::by(&state, &operator, &client).await;
    let entry_for = |job: &NewJob| {
        by.entry(
            Action::JobCreate,
            Some(Target::new("job", job.id)),
            serde_json::json!({"host_id": job.host_id.to_string(), "kind": job.kind, "params": job.params}),
        )
    };
    let request = JobRequest {
        id: JobId::new(),
        host: host_id,
        kind,
        params: &req.params,
        trigger: JobTrigger::Manual,
        schedule: None,
        scope: operator.scope.as_ref(),
    };
    let job = jobs::create(&state, &request, Some(&entry_for)).await?;
    tracing::info!(job_id = %job.id, by = %operator.user_id, "job requested");
    Ok((StatusCode::CREATED, Json(jobs::view(&job))))
}

/// Start a job on every matching host.
///
/// `POST /api/v1/jobs` `{selector, kind, params, max_parallel?}` → 201:
/// one job per matching connected host, the others listed as skipped.
#[utoipa::path(
    post,
    path = "/jobs",
    tag = "jobs",
    operation_id = "bulk_create_jobs",
    request_body = BulkJobRequest,
    responses((status = 201, description = "The batch: the jobs made and the hosts skipped", body = BulkJobCreated)),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn bulk_create(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiJson(req): ApiJson<BulkJobRequest>,
) -> Result<(StatusCode, Json<BulkJobCreated>), ApiError> {
    let by = Audit::by(&state, &operator, &client).await;
    let selector = req
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let entry_for = |batch: BatchId, count: usize| {
        by.entry(
            Action::JobBulkCreate,
            Some(Target::new("batch", batch)),
            serde_json::json!({
                "selector": selector,
                "kind": req.kind,
                "params": req.params,
                "max_parallel": req.max_parallel,
                "jobs": count,
            }),
        )
    };
    let created =
        jobs::bulk::create(&state, &req, operator.scope.as_ref(), Some(&entry_for)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Query of `GET /api/v1/jobs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// One host's jobs.
    host_id: Option<String>,
    /// Only jobs in this status (`queued`, `running`, `failed`, …).
    status: Option<String>,
    /// Jobs older than this job id (paging).
    before: Option<String>,
    /// At most this many, 1 to 500 (default 50).
    limit: Option<u32>,
}

/// Default and largest page of jobs.
const DEFAULT_JOBS: u32 = 50;
const MAX_JOBS: u32 = 500;

/// A page of a job list (`GET /jobs`, a host's drills): jobs older than
/// the job `before`, at most `limit` (1 to 500, default 50).
pub(crate) fn page(
    before: Option<&str>,
    limit: Option<u32>,
) -> Result<(Option<JobId>, u32), ApiError> {
    let before = before
        .map(|raw| {
            raw.parse::<JobId>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`before` must be a job id (a 26-character ULID), not `{raw}`"
                ))
            })
        })
        .transpose()?;
    let limit = match limit {
        None => DEFAULT_JOBS,
        Some(n) if (1..=MAX_JOBS).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`limit` must be 1 to {MAX_JOBS}"
            )))
        }
    };
    Ok((before, limit))
}

/// List jobs.
///
/// `GET /api/v1/jobs?host_id=&status=&before=&limit=`: newest first.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    params(ListQuery),
    responses((status = 200, description = "Jobs, newest first", body = [JobView])),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    operator: Operator,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let host_id = query
        .host_id
        .as_deref()
        .map(|raw| {
            raw.parse::<rm_core::HostId>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`host_id` must be a host id (a 26-character ULID), not `{raw}`"
                ))
            })
        })
        .transpose()?;
    let status = query
        .status
        .as_deref()
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("`status`: {e}")))?;
    let (before, limit) = page(query.before.as_deref(), query.limit)?;
    let jobs = state
        .store()
        .list_jobs(&JobFilter {
            host_id,
            status,
            kind: None,
            before,
            limit,
            scope: operator.scope,
        })
        .await?;
    Ok(Json(jobs.iter().map(jobs::view).collect()))
}

/// Show a job.
///
/// `GET /api/v1/jobs/{id}`.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    operation_id = "show_job",
    params(("id" = String, Path, description = "The job's id (ULID)")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&id)?;
    let job = state.store().job(id).await?.ok_or(JobError::NotFound(id))?;
    Ok(Json(jobs::view(&job)))
}

/// Cancel a job.
///
/// `POST /api/v1/jobs/{id}/cancel`: 200 when cancelled at once (queued),
/// 202 when the agent was asked to stop it.
#[utoipa::path(
    post,
    path = "/jobs/{id}/cancel",
    tag = "jobs",
    operation_id = "cancel_job",
    params(("id" = String, Path, description = "The job's id (ULID)")),
    responses(
        (status = 200, description = "Cancelled at once (it was queued)", body = JobView),
        (status = 202, description = "The agent was asked to stop it", body = JobView),
        (status = 404, description = "No such job", body = ApiErrorBody),
        (status = 409, description = "It has finished", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let id = parse_job_id(&id)?;
    let by = Audit::by(&state, &operator, &client).await;
    let entry_for = |job: &Job| {
        by.entry(
            Action::JobCancel,
            Some(Target::new("job", job.id)),
            serde_json::json!({
                "host_id": job.host_id.to_string(),
                "kind": job.kind,
                "status": job.status.to_string(),
            }),
        )
    };
    let job = jobs::cancel(&state, id, Some(&entry_for)).await?;
    tracing::info!(job_id = %id, by = %operator.user_id, "job cancel requested");
    let status = if job.status.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(jobs::view(&job))))
}

/// Query of `GET /api/v1/jobs/{id}/logs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// Lines after this `seq` (default 0: from the start).
    after_seq: Option<u64>,
    /// At most this many lines, 1 to 10000 (default 10000).
    limit: Option<u32>,
}

/// Largest page of log lines.
const MAX_LOG_PAGE: u32 = 10_000;

/// Read a job's log.
///
/// `GET /api/v1/jobs/{id}/logs?after_seq=N&limit=M`.
#[utoipa::path(
    get,
    path = "/jobs/{id}/logs",
    tag = "jobs",
    operation_id = "job_logs",
    params(("id" = String, Path, description = "The job's id (ULID)"), LogsQuery),
    responses(
        (status = 200, description = "Log lines after `after_seq`", body = [LogLine]),
        (status = 404, description = "No such job", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn logs(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Json<Vec<LogLine>>, ApiError> {
    let id = parse_job_id(&id)?;
    if state.store().job(id).await?.is_none() {
        return Err(JobError::NotFound(id).into());
    }
    let limit = match query.limit {
        None => MAX_LOG_PAGE,
        Some(n) if (1..=MAX_LOG_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`limit` must be 1 to {MAX_LOG_PAGE}"
            )))
        }
    };
    let lines = state
        .store()
        .logs(id, query.after_seq.unwrap_or(0), limit)
        .await?;
    Ok(Json(lines.into_iter().map(to_wire).collect()))
}

fn to_wire(line: LogLineRecord) -> LogLine {
    LogLine {
        seq: line.seq,
        ts: line.ts,
        stream: if line.stream == "stderr" {
            LogStreamKind::Stderr
        } else {
            LogStreamKind::Stdout
        },
        text: line.text,
    }
}

pub(crate) fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    super::parse_id(raw, "a job")
}

/// Follow a job.
///
/// `GET /api/v1/jobs/{id}/events`: Server-Sent Events. First the job's
/// `status`, then its stored `log` lines (after `Last-Event-ID` or
/// `?after_seq=`), then live `log`, `progress` and `status` events, and a
/// final `finished`, after which the stream ends. Log events carry their
/// `seq` as the event id, so a reconnecting client resumes without gaps.
/// The stream also ends when the request's session or API token ends.
#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    operation_id = "job_events",
    params(
        ("id" = String, Path, description = "The job's id (ULID)"),
        LogsQuery,
        ("last-event-id" = Option<u64>, Header, description = "Resume after this log line (`seq`); wins over `after_seq`"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `status` and `finished` (a job), `log` (a log line, id = seq), `progress`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_job_id(&id)?;
    if state.store().job(id).await?.is_none() {
        return Err(JobError::NotFound(id).into());
    }
    let after_seq = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or(query.after_seq)
        .unwrap_or(0);
    // Subscribe before reading what is stored, so nothing falls between.
    let live = state
        .job_events()
        .subscribe(id)
        .ok_or_else(|| ApiError::internal("job event hub unavailable"))?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    // The stream ends with the credential it was opened with; dropping
    // `rx` then stops `follow` at its next send.
    let ended = crate::auth::credential_ended(state.clone(), operator);
    tokio::spawn(follow(state, id, after_seq, live, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    })
    .take_until(ended);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Feeds one SSE client until the job finishes or the client goes away.
async fn follow(
    state: AppState,
    id: JobId,
    mut last_seq: u64,
    mut live: broadcast::Receiver<JobEvent>,
    tx: mpsc::Sender<Event>,
) {
    let Ok(Some(job)) = state.store().job(id).await else {
        return;
    };
    if tx
        .send(json_event("status", &jobs::view(&job)))
        .await
        .is_err()
    {
        return;
    }
    if !backfill(&state, id, &mut last_seq, &tx).await {
        return;
    }
    if job.status.is_finished() {
        let _ = tx.send(json_event("finished", &jobs::view(&job))).await;
        return;
    }
    loop {
        let event = match live.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let _ = tx
                    .send(Event::default().comment(format!("skipped {missed} live events")))
                    .await;
                if !backfill(&state, id, &mut last_seq, &tx).await {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The job finished (or the hub dropped the channel): close
                // with whatever is stored.
                let _ = backfill(&state, id, &mut last_seq, &tx).await;
                if let Ok(Some(job)) = state.store().job(id).await {
                    let name = if job.status.is_finished() {
                        "finished"
                    } else {
                        "status"
                    };
                    let _ = tx.send(json_event(name, &jobs::view(&job))).await;
                }
                return;
            }
        };
        let sent = match event {
            JobEvent::Status(view) => tx.send(json_event("status", &view)).await.is_ok(),
            JobEvent::Progress(progress) => {
                tx.send(json_event("progress", &progress)).await.is_ok()
            }
            JobEvent::Log(lines) => {
                let mut ok = true;
                for line in lines {
                    if line.seq <= last_seq {
                        continue;
                    }
                    last_seq = line.seq;
                    ok = tx.send(log_event(&line)).await.is_ok();
                    if !ok {
                        break;
                    }
                }
                ok
            }
            JobEvent::Stored(upto) => {
                upto <= last_seq || backfill(&state, id, &mut last_seq, &tx).await
            }
            JobEvent::Finished(view) => {
                let _ = backfill(&state, id, &mut last_seq, &tx).await;
                let _ = tx.send(json_event("finished", &view)).await;
                return;
            }
        };
        if !sent {
            return;
        }
    }
}

/// Sends stored lines after `last_seq`; false when the client is gone.
async fn backfill(
    state: &AppState,
    id: JobId,
    last_seq: &mut u64,
    tx: &mpsc::Sender<Event>,
) -> bool {
    state.flush_logs().await;
    loop {
        let page = match state.store().logs(id, *last_seq, 1000).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(job_id = %id, error = %e, "could not read logs for an event stream");
                return true;
            }
        };
        if page.is_empty() {
            return true;
        }
        for line in page {
            *last_seq = line.seq;
            if tx.send(log_event(&to_wire(line))).await.is_err() {
                return false;
            }
        }
    }
}

fn json_event<T: serde::Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

fn log_event(line: &LogLine) -> Event {
    json_event("log", line).id(line.seq.to_string())
}
