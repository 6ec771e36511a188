//! `/ws/agent`: authenticates an agent before the upgrade, runs the `hello`
//! handshake, registers the connection in the hub, and then reads and
//! dispatches frames until the socket ends.
//!
//! One tokio task per connection does everything (reads, queued writes,
//! close requests, the idle timer), so ten thousand agents cost ten thousand
//! small tasks and no OS threads. A bad frame gets an `error` reply and the
//! connection goes on; only an oversized frame, a broken handshake or
//! silence ends it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rm_core::token::{PresentedToken, TokenKind};
use rm_core::HostId;
use rm_protocol::{
    close_code, Envelope, ErrorBody, ErrorCode, Frame, Hello, Message, RepoStats, SnapshotsReport,
    CURRENT_PROTOCOL_VERSION, MAX_FRAME_BYTES, MIN_PROTOCOL_VERSION,
};
use rm_store::{HelloRecord, RepoStatsRecord, SnapshotRecord};
use tokio::time::Instant;

use crate::agent_tokens;
use crate::audit::Client;
use crate::hub::{AgentConn, CloseSignal, Outbound};
use crate::jobs::{self, AgentJobs, ReportError};
use crate::metrics::Metrics;
use crate::repositories;
use crate::schedules;
use crate::state::AppState;
use rm_protocol::upgrade::is_platform;

/// A write that takes longer than this means the agent stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Initial read buffer of a connection. tungstenite's default, 128 KiB, is
/// allocated and zero-filled up front for every socket — 1.3 GB for ten
/// thousand agents that mostly send 50-byte heartbeats. The buffer still
/// grows to hold a larger frame (log batches), up to [`MAX_FRAME_BYTES`].
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Frames are written out at once: every send is flushed anyway, so
/// collecting them in a buffer first (128 KiB by default) buys nothing.
const WRITE_BUFFER_BYTES: usize = 0;

/// Checks the bearer token, then upgrades. Every authentication failure gets
/// the same bare 401 so a caller learns nothing about why.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let host_id = match authenticate(&state, &headers).await {
        Ok(Some(host_id)) => host_id,
        // A missing header is no guess; a wrong token counts towards the
        // address's burst (checked only after it failed, so a right token
        // is never held up).
        Ok(None) if bearer_token(&headers).is_none() => {
            return (StatusCode::UNAUTHORIZED, "unauthorized").into_response()
        }
        Ok(None) => {
            return match crate::auth::token_failed(&state, client.ip) {
                Some(wait) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, wait.as_secs().max(1))],
                    "too many failed token checks from this address",
                )
                    .into_response(),
                None => (StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not check an agent token");
            return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response();
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| session(state, host_id, socket))
}

/// The host whose valid agent token is in `Authorization: Bearer`, if any.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<HostId>, rm_store::StoreError> {
    let Some(token) = bearer_token(headers) else {
        return Ok(None);
    };
    let Ok(presented) = PresentedToken::parse_as(token, TokenKind::Agent) else {
        return Ok(None);
    };
    let stored = state.store().active_agent_token(presented.id).await?;
    let Some(token) = stored.filter(|t| presented.verify(&t.token_hash)) else {
        return Ok(None);
    };
    agent_tokens::on_connect(state, &token).await;
    Ok(Some(token.host_id))
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// One agent connection from upgrade to close.
async fn session(state: AppState, host_id: HostId, mut socket: WebSocket) {
    let Some(hello) = Box::pin(handshake(&state, host_id, &mut socket)).await else {
        return;
    };
    let hello_arrived = std::time::Instant::now();
    let (conn, mut outbound, close) = AgentConn::new();
    let record = HelloRecord {
        connection_id: conn.id().to_string(),
        server_id: state.cluster().id().to_owned(),
        agent_version: hello.agent_version.clone(),
        restic_version: hello.restic_version.clone(),
        restic_error: hello.restic_error.clone(),
        protocol_version: hello.protocol_version,
        hostname: hello.hostname.clone(),
        os: hello.os.clone(),
        arch: hello.arch.clone(),
        at: Utc::now(),
        hooks: hello.hooks.clone(),
        hooks_refused: hello
            .hooks_refused
            .iter()
            .map(|r| rm_store::RefusedHookRecord {
                name: r.name.clone(),
                reason: r.reason.clone(),
            })
            .collect(),
        platform: hello.platform.clone(),
    };
    // Queue the initial pushes before the connection becomes visible in the
    // hub, so nothing another task sends can overtake them; under the push
    // lock, so a change stored meanwhile is not missed (see `push_lock`).
    let push_lock = state.hub().push_lock(host_id).await;
    // Settings that break the current rules are not pushed: the agent gets
    // none (and says so for each job) until an operator sets usable ones.
    let repository = match repositories::usable(&state, host_id).await {
        Ok(repository) => repository,
        Err(e @ repositories::RepositoryError::Refused(_)) => {
            tracing::warn!(%host_id, "not pushing the host's repository settings: {e}");
            None
        }
        Err(e) => {
            tracing::error!(%host_id, error = %e, "could not open the host's repository settings");
            None
        }
    };
    let _ = conn.send(Frame::new(repositories::config_update(&state, repository)));
    match schedules::schedule_set(&state, host_id).await {
        Ok(set) => {
            let _ = conn.send(Frame::new(set));
        }
        // Sending an empty set would wipe the agent's cached schedules;
        // without one it keeps running what it has until the next push.
        Err(e) => {
            tracing::error!(%host_id, error = %e, "could not read the host's schedules; not pushing any")
        }
    }
    if let Some(old) = state.hub().register(host_id, conn.clone()) {
        tracing::warn!(%host_id, "a new connection replaced the host's existing one");
        old.close(
            close_code::REPLACED,
            "replaced by a newer connection for this host",
        );
    }
    // Stored as online only once the hub has the connection (whoever sees
    // the host online can start a job on it at once), and still under the
    // push lock, so two connections of one host racing leave the store
    // naming the one the hub kept.
    let recorded = state.store().record_hello(host_id, &record).await;
    drop(push_lock);
    if let Err(e) = recorded {
        state
            .storage()
            .failed(&format!("recording the hello of host {host_id}"), &e);
        let error = error_frame(
            None,
            ErrorCode::Internal,
            "the server could not record this connection; retry later",
        );
        let _ = write(&mut socket, WsMessage::Text(error.encode().into())).await;
        let _ = close_socket(&mut socket, close_code::GOING_AWAY, "server error").await;
        end_session(&state, host_id, &conn, "its hello could not be recorded");
        return;
    }
    state.metrics().hello_accepted();
    crate::alerts::host_changed(&state, host_id);
    state.fleet_changed();
    // Boxed like every step that runs once per connection: inline, their
    // state would be part of each connection's task for its whole life.
    Box::pin(jobs::reconcile_after_hello(
        &state, host_id, &hello, record.at,
    ))
    .await;
    Box::pin(jobs::dispatch_next(&state, host_id)).await;
    Box::pin(crate::upgrades::after_hello(&state, host_id, &hello)).await;
    if let Some(slot) = Metrics::frame_slot("hello") {
        state.metrics().frame_handled(slot, hello_arrived.elapsed());
    }
    tracing::info!(
        %host_id,
        agent_version = %hello.agent_version,
        restic_version = hello.restic_version.as_deref().unwrap_or("unknown"),
        protocol_version = hello.protocol_version,
        "agent connected"
    );

    let reason = run(&state, host_id, &conn, &mut socket, &mut outbound, &close).await;
    tracing::info!(%host_id, %reason, "agent disconnected");

    end_session(&state, host_id, &conn, &reason.to_string());
    if let Err(e) = state
        .store()
        .mark_host_offline(host_id, &conn.id().to_string(), Utc::now())
        .await
    {
        tracing::error!(%host_id, error = %e, "could not mark host offline");
    }
    crate::alerts::host_changed(&state, host_id);
    state.fleet_changed();
}

/// Takes a finished connection out of the hub. Unless a newer connection
/// took over the host, its pending calls cannot be answered, and if it does
/// not come back its running job is lost.
fn end_session(state: &AppState, host_id: HostId, conn: &AgentConn, reason: &str) {
    if state.hub().unregister(host_id, conn.id()) {
        state.rpc().fail_host(host_id);
        if !state.is_stopping() {
            jobs::watch_for_lost_agent(
                state,
                host_id,
                Utc::now(),
                format!("its connection ended ({reason})"),
            );
        }
    }
}

/// Waits for `hello` and judges it. Returns the hello when accepted; on any
/// failure it has already told the agent why and closed.
async fn handshake(state: &AppState, host_id: HostId, socket: &mut WebSocket) -> Option<Hello> {
    let first = tokio::time::timeout(state.config().hello_timeout, first_text(socket)).await;
    let text = match first {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(_) => {
            tracing::info!(%host_id, "agent sent no hello in time");
            let _ = close_socket(socket, close_code::POLICY, "no hello in time").await;
            return None;
        }
    };
    let rejection = match Frame::decode(&text) {
        Ok(Frame {
            message: Message::Hello(hello),
            ..
        }) => match judge_hello(hello, &state.config().upgrade_url()) {
            Ok(hello) => {
                if hello.protocol_version > CURRENT_PROTOCOL_VERSION {
                    tracing::info!(
                        %host_id,
                        agent = hello.protocol_version,
                        server = CURRENT_PROTOCOL_VERSION,
                        "agent speaks a newer protocol than this server; accepting"
                    );
                }
                return Some(hello);
            }
            Err(rejection) => {
                tracing::warn!(%host_id, reason = %rejection.message, "agent hello refused");
                rejection
            }
        },
        Ok(frame) => ErrorBody::new(
            ErrorCode::BadRequest,
            format!(
                "the first frame must be `hello`, not `{}`",
                frame.message.kind()
            ),
        ),
        Err(e) => ErrorBody::new(
            ErrorCode::BadRequest,
            format!("the first frame must be `hello`: {e}"),
        ),
    };
    let _ = write(
        socket,
        WsMessage::Text(Frame::new(rejection).encode().into()),
    )
    .await;
    let _ = close_socket(socket, close_code::POLICY, "handshake failed").await;
    None
}

/// Longest value accepted for each short `hello` field; they are stored and
/// shown, so a misbehaving agent must not fill the database with them.
const MAX_HELLO_FIELD_CHARS: usize = 255;

/// Longest `restic_error` kept; longer ones are cut, since the text is only
/// shown to operators and losing its tail is better than losing the hello.
const MAX_RESTIC_ERROR_CHARS: usize = 2048;

/// Accepts or refuses a `hello`: the protocol version must be supported and
/// every field of sane length.
fn judge_hello(mut hello: Hello, upgrade_url: &str) -> Result<Hello, ErrorBody> {
    if hello.protocol_version < MIN_PROTOCOL_VERSION {
        return Err(ErrorBody {
            code: ErrorCode::ProtocolTooOld,
            message: format!(
                "agent protocol version {} is older than the oldest this server accepts \
                 ({MIN_PROTOCOL_VERSION}; the server speaks {CURRENT_PROTOCOL_VERSION}): upgrade the agent",
                hello.protocol_version
            ),
            url: Some(upgrade_url.to_owned()),
        });
    }
    let fields = [
        ("agent_version", Some(&hello.agent_version)),
        ("hostname", Some(&hello.hostname)),
        ("os", Some(&hello.os)),
        ("arch", Some(&hello.arch)),
        ("restic_version", hello.restic_version.as_ref()),
    ];
    for (name, value) in fields {
        let Some(value) = value else { continue };
        if value.chars().count() > MAX_HELLO_FIELD_CHARS || value.chars().any(char::is_control) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "hello field `{name}` must be at most {MAX_HELLO_FIELD_CHARS} characters without control characters"
                ),
            ));
        }
    }
    if hello.hostname.trim().is_empty() {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "hello field `hostname` must not be empty",
        ));
    }
    if let Some(error) = &mut hello.restic_error {
        if error.chars().count() > MAX_RESTIC_ERROR_CHARS {
            *error = error
                .chars()
                .take(MAX_RESTIC_ERROR_CHARS)
                .collect::<String>()
                + "…";
        }
    }
    tidy_hooks(&mut hello);
    // Only used to pick an upgrade binary: a name that is not a platform
    // counts as none (that agent is not offered upgrades).
    if hello.platform.as_deref().is_some_and(|p| !is_platform(p)) {
        hello.platform = None;
    }
    Ok(hello)
}

/// Most hooks (usable or refused) kept from one `hello`.
const MAX_HELLO_HOOKS: usize = 256;
/// Longest reason kept for a refused hook.
const MAX_HOOK_REASON_CHARS: usize = 512;

/// Keeps what the host page can show of the agent's hooks: usable names
/// that are valid hook names (jobs could not name the others anyway), and
/// refused files with their names and reasons made printable and cut. A
/// list that breaks these rules is trimmed, never a reason to refuse the
/// connection: it is only shown.
fn tidy_hooks(hello: &mut Hello) {
    hello
        .hooks
        .retain(|name| rm_protocol::params::hook_name(name).is_ok());
    hello.hooks.truncate(MAX_HELLO_HOOKS);
    hello.hooks_refused.truncate(MAX_HELLO_HOOKS);
    let printable = |text: &str, max: usize| {
        let mut kept: String = text
            .chars()
            .take(max)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        if text.chars().count() > max {
            kept.push('…');
        }
        kept
    };
    for refused in &mut hello.hooks_refused {
        refused.name = printable(&refused.name, MAX_HELLO_FIELD_CHARS);
        refused.reason = printable(&refused.reason, MAX_HOOK_REASON_CHARS);
    }
}

/// The first text frame, skipping pings; `None` if the socket ends first.
async fn first_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(WsMessage::Text(text)) => return Some(text.to_string()),
            Ok(WsMessage::Binary(_)) => return Some(String::from("<binary frame>")),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The read/write loop after the handshake. Returns why it ended.
async fn run(
    state: &AppState,
    host_id: HostId,
    conn: &AgentConn,
    socket: &mut WebSocket,
    outbound: &mut Outbound,
    close: &Arc<CloseSignal>,
) -> String {
    let idle = state.config().idle_timeout();
    let mut deadline = Instant::now() + idle;
    let mut jobs = AgentJobs::new(conn.clone());
    loop {
        tokio::select! {
            biased;
            _ = close.requested() => {
                let (code, reason) = close
                    .reason()
                    .unwrap_or((close_code::GOING_AWAY, String::from("closing")));
                let _ = close_socket(socket, code, &reason).await;
                return format!("closed by the server: {reason}");
            }
            frame = outbound.recv() => {
                let Some(frame) = frame else {
                    return String::from("outbound queue closed");
                };
                if let Err(e) = write(socket, WsMessage::Text(frame.encode().into())).await {
                    return format!("write failed: {e}");
                }
            }
            received = socket.recv() => {
                let arrived = std::time::Instant::now();
                let message = match received {
                    None => return String::from("socket closed"),
                    Some(Err(e)) => {
                        // Includes frames over MAX_FRAME_BYTES: the socket is
                        // no longer usable, so only this connection ends.
                        let _ = close_socket(socket, 1009, "frame too large or unreadable").await;
                        return format!("read failed: {e}");
                    }
                    Some(Ok(message)) => message,
                };
                deadline = Instant::now() + idle;
                let reply = match message {
                    // Boxed: handling is the largest state of this loop,
                    // and kept inline it would sit in every idle
                    // connection's task.
                    WsMessage::Text(text) => {
                        Box::pin(handle_text(state, host_id, &mut jobs, text.as_str(), arrived)).await
                    }
                    WsMessage::Binary(_) => Some(error_frame(
                        None,
                        ErrorCode::BadRequest,
                        "binary frames are not part of the protocol; send JSON text frames",
                    )),
                    WsMessage::Close(_) => return String::from("agent closed the connection"),
                    WsMessage::Ping(_) | WsMessage::Pong(_) => None,
                };
                if let Some(reply) = reply {
                    if let Err(e) = write(socket, WsMessage::Text(reply.encode().into())).await {
                        return format!("write failed: {e}");
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let _ = close_socket(socket, close_code::IDLE, "no frame within the idle limit").await;
                return format!("idle for {}s", idle.as_secs());
            }
        }
    }
}

/// Decodes and dispatches one text frame that arrived at `arrived`;
/// returns the reply, if any.
async fn handle_text(
    state: &AppState,
    host_id: HostId,
    jobs: &mut AgentJobs,
    text: &str,
    arrived: std::time::Instant,
) -> Option<Frame> {
    let envelope: Envelope = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            tracing::warn!(%host_id, error = %e, "agent sent an unreadable frame");
            return Some(error_frame(
                None,
                ErrorCode::BadRequest,
                format!("frame is not a valid envelope: {e}"),
            ));
        }
    };
    let id = envelope.id.clone();
    let frame = match Frame::from_envelope(envelope) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::warn!(%host_id, error = %e, "agent sent a malformed payload");
            return Some(error_frame(id, ErrorCode::BadRequest, e.to_string()));
        }
    };
    // Any well-formed frame proves the agent is alive.
    state.last_seen().touch(host_id);
    let slot = Metrics::frame_slot(frame.message.kind());
    let reply = dispatch(state, host_id, jobs, frame).await;
    if let Some(slot) = slot {
        state.metrics().frame_handled(slot, arrived.elapsed());
    }
    reply
}

/// Acts on one decoded frame from an agent; returns the reply, if any.
async fn dispatch(
    state: &AppState,
    host_id: HostId,
    jobs: &mut AgentJobs,
    frame: Frame,
) -> Option<Frame> {
    let id = frame.id;
    let kind = frame.message.kind().to_owned();
    let report = match frame.message {
        Message::Heartbeat(_) => Ok(()),
        Message::Hello(_) => {
            return Some(error_frame(
                id,
                ErrorCode::BadRequest,
                "`hello` was already accepted on this connection",
            ))
        }
        Message::Error(body) => {
            tracing::warn!(%host_id, code = ?body.code, message = %body.message, "agent reported an error");
            // An error carrying a request's id answers that request.
            if id.is_some() {
                state.rpc().resolve(
                    host_id,
                    Frame {
                        id: id.clone(),
                        message: body.into(),
                    },
                );
            }
            Ok(())
        }
        Message::ScheduleAck(ack) => schedules::on_ack(state, host_id, ack).await,
        Message::ScheduleFire(fire) => {
            // An offline run's fire: a skipped one is the whole job, and
            // one the server refuses takes the job's reports with it.
            let offline = fire.job_id.clone().map(|job| (job, fire.skipped));
            let outcome = schedules::on_fire(state, host_id, fire).await;
            if let Some((job, skipped)) = offline {
                match &outcome {
                    Ok(()) if skipped => jobs.ack_done(&job, None),
                    Err(ReportError::NotFound(why)) => jobs.ack_done(&job, Some(why.clone())),
                    _ => {}
                }
            }
            outcome
        }
        Message::CommandResult(result) => jobs.command_result(state, host_id, result).await,
        Message::JobStarted(started) => jobs.started(state, host_id, started).await,
        Message::JobProgress(progress) => jobs.progress(state, host_id, progress).await,
        Message::LogStream(stream) => jobs.logs(state, host_id, stream).await,
        Message::JobFinished(finished) => jobs.finished(state, host_id, finished).await,
        Message::SnapshotsReport(report) => store_snapshots(state, host_id, report).await,
        Message::SnapshotAdded(added) => jobs.snapshot_added(state, host_id, added).await,
        Message::RepoStats(stats) => store_repo_stats(state, host_id, stats).await,
        Message::Unknown { kind, .. } => {
            tracing::info!(%host_id, %kind, "ignoring a message type this server does not know");
            Ok(())
        }
        Message::TokenRotated(ack) => agent_tokens::on_rotated(state, host_id, ack).await,
        Message::AgentUpgradeStatus(status) => {
            crate::upgrades::on_status(state, host_id, status).await
        }
        Message::ConfigUpdate(_)
        | Message::ScheduleSet(_)
        | Message::CommandRun(_)
        | Message::CommandCancel(_)
        | Message::JobAck(_)
        | Message::TreeList(_)
        | Message::TokenRotate(_)
        | Message::AgentUpgrade(_)
        | Message::DownloadStart(_) => {
            return Some(error_frame(
                id,
                ErrorCode::BadRequest,
                format!("`{kind}` is sent by the server, not by agents"),
            ))
        }
        Message::TreeListResult(result) => {
            let reply = Frame {
                id: id.clone(),
                message: result.into(),
            };
            if !state.rpc().resolve(host_id, reply) {
                tracing::debug!(%host_id, "dropping a tree.list.result nobody waits for (too late?)");
            }
            Ok(())
        }
    };
    match report {
        Ok(()) => None,
        Err(ReportError::BadId(message)) => Some(error_frame(id, ErrorCode::BadRequest, message)),
        Err(ReportError::NotFound(message)) => {
            tracing::warn!(%host_id, %kind, %message, "agent reported on an unknown job");
            Some(error_frame(id, ErrorCode::NotFound, message))
        }
        Err(ReportError::Store(e)) => {
            state
                .storage()
                .failed(&format!("storing a `{kind}` from host {host_id}"), &e);
            // Close rather than carry on: the agent replays the report (and
            // everything after it) from its spool on the next connection.
            jobs.report_not_stored(&kind);
            Some(error_frame(
                id,
                ErrorCode::Internal,
                format!("the server could not store this `{kind}`; send it again later"),
            ))
        }
    }
}

/// Replaces the host's stored snapshot list with the agent's report.
async fn store_snapshots(
    state: &AppState,
    host_id: HostId,
    report: SnapshotsReport,
) -> Result<(), ReportError> {
    let records: Vec<SnapshotRecord> = report
        .snapshots
        .into_iter()
        .map(crate::jobs::snapshot_record)
        .collect();
    state.store().replace_snapshots(host_id, &records).await?;
    state.fleet_changed();
    tracing::info!(%host_id, count = records.len(), "snapshots refreshed");
    Ok(())
}

/// Adds a statistics history row for the host.
async fn store_repo_stats(
    state: &AppState,
    host_id: HostId,
    stats: RepoStats,
) -> Result<(), ReportError> {
    let record = RepoStatsRecord {
        recorded_at: Utc::now(),
        total_size_bytes: stats.total_size_bytes,
        raw_size_bytes: stats.raw_size_bytes,
        unique_files: stats.unique_files,
        snapshot_count: stats.snapshot_count,
        last_check_at: stats.last_check_at,
        last_check_status: stats.last_check_status,
        lock_present: stats.lock_present,
        last_prune_at: stats.last_prune_at,
        last_prune_freed_bytes: stats.last_prune_freed_bytes,
    };
    state.store().add_repo_stats(host_id, &record).await?;
    state.fleet_changed();
    Ok(())
}

fn error_frame(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame {
        id,
        message: ErrorBody::new(code, message).into(),
    }
}

/// Sends one message, giving up after [`WRITE_TIMEOUT`].
async fn write(socket: &mut WebSocket, message: WsMessage) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(String::from("agent stopped reading")),
    }
}

async fn close_socket(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), String> {
    write(
        socket,
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(protocol_version: u32) -> Hello {
        Hello {
            protocol_version,
            agent_version: String::from("1.0.0"),
            restic_version: Some(String::from("0.14.0")),
            restic_error: None,
            hostname: String::from("web-01"),
            os: String::from("linux"),
            arch: String::from("x86_64"),
            running_jobs: Vec::new(),
            spooled_jobs: Vec::new(),
            hooks: Vec::new(),
            hooks_refused: Vec::new(),
            platform: None,
        }
    }

    #[test]
    fn current_and_newer_protocols_are_accepted() {
        assert!(judge_hello(hello(CURRENT_PROTOCOL_VERSION), "u").is_ok());
        assert!(judge_hello(hello(CURRENT_PROTOCOL_VERSION + 1), "u").is_ok());
    }

    #[test]
    fn a_too_old_protocol_names_both_versions_and_links_the_upgrade() {
        let refused = judge_hello(hello(0), "http://s/docs/upgrading").unwrap_err();
        assert_eq!(refused.code, ErrorCode::ProtocolTooOld);
        assert!(refused.message.contains("version 0"));
        assert!(refused
            .message
            .contains(&format!("({MIN_PROTOCOL_VERSION};")));
        assert_eq!(refused.url.as_deref(), Some("http://s/docs/upgrading"));
    }

    #[test]
    fn oversized_or_odd_fields_are_refused_by_name() {
        let mut long = hello(1);
        long.os = "x".repeat(300);
        assert!(judge_hello(long, "u").unwrap_err().message.contains("`os`"));
        let mut control = hello(1);
        control.hostname = String::from("web\n01");
        assert!(judge_hello(control, "u")
            .unwrap_err()
            .message
            .contains("`hostname`"));
        let mut empty = hello(1);
        empty.hostname = String::from("  ");
        assert!(judge_hello(empty, "u").is_err());
    }

    #[test]
    fn hooks_in_hello_are_trimmed_to_what_can_be_shown() {
        let mut h = hello(CURRENT_PROTOCOL_VERSION);
        h.hooks = vec!["pg-dump".into(), "../x".into(), "a\nb".into()];
        h.hooks_refused = vec![rm_protocol::RefusedHook {
            name: "bad\u{1b}name".into(),
            reason: "r".repeat(5000),
        }];
        let h = judge_hello(h, "u").unwrap();
        assert_eq!(h.hooks, vec!["pg-dump".to_owned()]);
        assert_eq!(h.hooks_refused[0].name, "bad\u{fffd}name");
        assert_eq!(
            h.hooks_refused[0].reason.chars().count(),
            MAX_HOOK_REASON_CHARS + 1
        );
    }

    #[test]
    fn a_long_restic_error_is_cut_not_refused() {
        let mut h = hello(1);
        h.restic_error = Some("e".repeat(10_000));
        let accepted = judge_hello(h, "u").unwrap();
        assert_eq!(
            accepted.restic_error.unwrap().chars().count(),
            MAX_RESTIC_ERROR_CHARS + 1
        );
    }

    #[test]
    fn a_platform_that_is_not_one_counts_as_none() {
        let mut h = hello(1);
        h.platform = Some(String::from("linux-x86_64"));
        let kept = judge_hello(h.clone(), "u").unwrap();
        assert_eq!(kept.platform.as_deref(), Some("linux-x86_64"));
        for bad in ["linux-../../etc", "LINUX-X86", "darwin-arm64", ""] {
            h.platform = Some(bad.to_owned());
            assert_eq!(judge_hello(h.clone(), "u").unwrap().platform, None, "{bad}");
        }
    }
}
