//! Signals between the servers on one database: what one server asks of
//! the server holding an agent's connection (dispatch its next job, stop a
//! job, push settings, close the connection, forward a call), and what it
//! tells every server's live watchers (a job changed, the fleet changed,
//! credentials ended).
//!
//! A signal names things (ids, sequence numbers) and travels through the
//! store's [`rm_store::ClusterBus`] (PostgreSQL `NOTIFY`); whatever it
//! refers to is read from the store by whoever acts on it, so a signal
//! carries no body and no secret in the clear. Every server hears every
//! signal, its own included (ignored: it acted already); the one holding
//! the named host's connection acts, the others drop it.
//!
//! Signals are hints, not the record: one lost (a full queue, a listener
//! that reconnected, a server restarting) delays what it asked for until
//! the holder's next [`resync`], which re-reads what is stored. So the
//! queue is bounded, and full means dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rm_core::{HostId, JobId};
use rm_protocol::JobProgress;
use rm_store::{ClusterMessage, MAX_MESSAGE_BYTES};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::Ended;
use crate::jobs::events::JobEvent;
use crate::state::AppState;

/// Signals waiting to be published; beyond this they are dropped (see the
/// module's documentation).
const QUEUE: usize = 65_536;
/// Most signals published in one statement.
const BATCH: usize = 500;
/// How often the holder of agents re-reads what signals may have missed.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// Relayed calls answered at once (each waits for an agent).
const CALLS: usize = 64;

/// What a server asks of another, or tells them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Signal {
    /// Hand the host's next queued job to its agent.
    Dispatch { host: HostId },
    /// Ask the host's agent to stop a job.
    Cancel { host: HostId, job: JobId },
    /// Send the host's agent its current settings of one kind.
    Push { host: HostId, what: Pushed },
    /// Close the host's connection.
    Disconnect {
        host: HostId,
        code: u16,
        reason: String,
    },
    /// Send the host's agent a new token, sealed with the servers' shared
    /// key (see [`crate::agent_tokens`]).
    RotateToken {
        host: HostId,
        token_id: String,
        sealed: String,
    },
    /// Send `request` to the host's agent and store its answer as reply
    /// `id` for server `caller` (see [`crate::rpc`]).
    Call {
        host: HostId,
        id: String,
        caller: String,
        request: String,
        timeout_ms: u64,
    },
    /// Send the host's agent this `download.start` (its `upload_url` on
    /// the asking server; see [`crate::snapshot_downloads`]).
    Download {
        host: HostId,
        start: rm_protocol::DownloadStart,
    },
    /// The answer to call `id` is stored.
    Replied {
        id: String,
        caller: String,
        host: HostId,
    },
    /// A job's status changed (watchers read it, ended or not, from the
    /// store).
    JobChanged { job: JobId },
    /// A running job's progress.
    JobProgress { job: JobId, progress: JobProgress },
    /// A job's log lines up to `upto` are stored.
    JobLogStored { job: JobId, upto: u64 },
    /// Something dashboards show changed.
    Fleet,
    /// What the alert evaluator knows of a host changed.
    AlertsHost { host: HostId },
    /// The alert evaluator must re-read the fleet.
    AlertsFleet,
    /// The alert evaluator has notifications to hand over.
    AlertsWake,
    /// Credentials stopped working; streams opened with them end.
    CredentialsEnded { ended: Ended },
}

/// Settings pushed to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Pushed {
    /// Its repository settings.
    Repository,
    /// Its schedule set.
    Schedules,
    /// The agent upgrade requested for it.
    Upgrade,
}

/// A signal and the server that sent it.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    signal: Signal,
}

/// The sending half, kept by [`super::Cluster`] once the bus runs.
pub(crate) type Outbox = mpsc::Sender<String>;

/// Whether signals go anywhere (the server shares its store).
pub(crate) fn running(state: &AppState) -> bool {
    state.cluster().outbox().is_some()
}

/// Queues `signal` for the other servers; nothing when the server is alone.
pub(crate) fn send(state: &AppState, signal: Signal) {
    let cluster = state.cluster();
    let Some(outbox) = cluster.outbox() else {
        return;
    };
    let Some(text) = encode(cluster.id(), signal) else {
        return;
    };
    if outbox.try_send(text).is_err() {
        state.metrics().cluster_signal_dropped();
        tracing::debug!(
            "cluster signal queue full; a signal was dropped (the next resync covers it)"
        );
    }
}

/// A signal as published, or `None` (logged) when it cannot fit.
fn encode(from: &str, mut signal: Signal) -> Option<String> {
    loop {
        let envelope = Envelope {
            from: from.to_owned(),
            signal,
        };
        let text = match serde_json::to_string(&envelope) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(error = %e, "could not encode a cluster signal");
                return None;
            }
        };
        if text.len() <= MAX_MESSAGE_BYTES {
            return Some(text);
        }
        signal = envelope.signal;
        // Progress is for display: fewer current files still shows it.
        match &mut signal {
            Signal::JobProgress { progress, .. } if !progress.current_files.is_empty() => {
                progress.current_files.pop();
            }
            _ => {
                let start: String = text.chars().take(120).collect();
                tracing::warn!(
                    bytes = text.len(),
                    "a cluster signal is too long to send; dropped: {start}…"
                );
                return None;
            }
        }
    }
}

/// Starts the bus of a server sharing its store: the publisher, the
/// listener and the periodic resync. Returns their tasks.
pub(crate) async fn start(
    state: &AppState,
) -> Result<Vec<tokio::task::JoinHandle<()>>, rm_store::StoreError> {
    // Listening starts before anything is published, so no signal sent
    // after this server registered is missed by it.
    let listener = state.store().listen().await?;
    let (outbox, inbox) = mpsc::channel(QUEUE);
    state.cluster().set_outbox(outbox);
    let publisher = tokio::spawn(publish(state.clone(), inbox));
    let listening = tokio::spawn(listen(state.clone(), listener));
    let resyncing = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESYNC_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => resync(&state).await,
                    _ = state.stopping() => return,
                    _ = state.cluster().halted() => return,
                }
            }
        })
    };
    Ok(vec![publisher, listening, resyncing])
}

/// Publishes queued signals, a batch per statement, each distinct signal
/// once per batch.
async fn publish(state: AppState, mut inbox: mpsc::Receiver<String>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = inbox.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
            }
            _ = state.cluster().halted() => return,
        }
        let mut seen = HashSet::with_capacity(batch.len());
        batch.retain(|text| seen.insert(text.clone()));
        if let Err(e) = state.store().publish(&batch).await {
            tracing::warn!(error = %e, signals = batch.len(), "could not publish cluster signals; the next resync covers them");
        }
        batch.clear();
    }
}

/// Receives every server's signals and acts on those meant for this one,
/// one at a time in the order they were sent (each is a few store calls
/// at most), except calls, which wait for an agent.
async fn listen(state: AppState, mut listener: Box<dyn rm_store::ClusterListener>) {
    let calls = Arc::new(tokio::sync::Semaphore::new(CALLS));
    loop {
        let next = tokio::select! {
            next = listener.next() => next,
            _ = state.cluster().halted() => return,
        };
        match next {
            Ok(ClusterMessage::Message(text)) => {
                let envelope: Envelope = match serde_json::from_str(&text) {
                    Ok(envelope) => envelope,
                    Err(e) => {
                        // A newer server's signal this one does not know.
                        tracing::debug!(error = %e, "ignoring an unknown cluster signal");
                        continue;
                    }
                };
                if envelope.from == state.cluster().id() {
                    continue;
                }
                match envelope.signal {
                    // A call waits for its agent's answer (up to a
                    // minute): beside the others, in a bounded number.
                    call @ Signal::Call { .. } => {
                        let Ok(permit) = calls.clone().acquire_owned().await else {
                            return;
                        };
                        let state = state.clone();
                        tokio::spawn(async move {
                            handle(&state, call).await;
                            drop(permit);
                        });
                    }
                    // In the order sent: a repository pushed before the
                    // dispatch of its `init` must reach the agent first.
                    signal => handle(&state, signal).await,
                }
            }
            Ok(ClusterMessage::Resumed) => {
                tracing::warn!(
                    "the cluster listener reconnected; signals may have been missed, resyncing"
                );
                resync(&state).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the cluster listener failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = state.cluster().halted() => return,
                }
            }
        }
    }
}

/// Does what another server's signal asks, if it concerns this one.
async fn handle(state: &AppState, signal: Signal) {
    match signal {
        Signal::Dispatch { host } => {
            if state.hub().is_connected(host) {
                crate::jobs::dispatch_next(state, host).await;
            }
        }
        Signal::Cancel { host, job } => crate::jobs::send_cancel_here(state, host, job),
        Signal::Push { host, what } => {
            if state.hub().is_connected(host) {
                match what {
                    Pushed::Repository => crate::repositories::push(state, host).await,
                    Pushed::Schedules => crate::schedules::send_sets(state, &[host]).await,
                    Pushed::Upgrade => crate::upgrades::send_requested(state, host).await,
                }
            }
        }
        Signal::Disconnect { host, code, reason } => {
            state.hub().disconnect(host, code, &reason);
        }
        Signal::RotateToken {
            host,
            token_id,
            sealed,
        } => crate::agent_tokens::deliver_sealed(state, host, &token_id, &sealed).await,
        Signal::Call {
            host,
            id,
            caller,
            request,
            timeout_ms,
        } => {
            if let Some(conn) = state.hub().get(host) {
                crate::rpc::answer_for(
                    state,
                    host,
                    &conn,
                    id,
                    caller,
                    &request,
                    Duration::from_millis(timeout_ms),
                )
                .await;
            }
        }
        Signal::Download { host, start } => {
            if let Some(conn) = state.hub().get(host) {
                if let Err(e) = conn.send(rm_protocol::Frame::new(start)) {
                    tracing::info!(%host, "could not pass a download on to the agent: {e}");
                }
            }
        }
        Signal::Replied { id, caller, host } => {
            if caller == state.cluster().id() {
                crate::rpc::take_answer(state, host, &id).await;
            }
        }
        Signal::JobChanged { job } => {
            if state.job_events().is_watched(job) {
                republish(state, job).await;
            }
        }
        Signal::JobProgress { job, progress } => {
            state
                .job_events()
                .publish(job, JobEvent::Progress(progress));
        }
        Signal::JobLogStored { job, upto } => {
            state.job_events().publish(job, JobEvent::Stored(upto));
        }
        Signal::Fleet => state.fleet_changed_here(),
        Signal::AlertsHost { host } => crate::alerts::host_changed_here(state, host),
        Signal::AlertsFleet => crate::alerts::fleet_changed_here(state),
        Signal::AlertsWake => crate::alerts::wake_here(state),
        Signal::CredentialsEnded { ended } => state.credentials_ended_here(ended),
    }
}

/// Re-reads what signals may have missed: the queued jobs of the agents
/// connected here are dispatched, dashboards and the alert evaluator
/// refresh, and watched jobs are re-read. Also drops relayed answers
/// nobody took.
pub(crate) async fn resync(state: &AppState) {
    // Answers whose caller gave up long ago.
    let stale = chrono::Utc::now() - chrono::Duration::minutes(10);
    if let Err(e) = state.store().prune_replies(stale).await {
        tracing::debug!(error = %e, "could not prune old relayed answers");
    }
    match state.store().hosts_with_queued_jobs().await {
        Ok(hosts) => {
            for host in hosts {
                if state.hub().is_connected(host) {
                    crate::jobs::dispatch_next(state, host).await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list hosts with queued jobs to resync"),
    }
    state.fleet_changed_here();
    crate::alerts::fleet_changed_here(state);
    for job in state.job_events().watched_jobs() {
        republish(state, job).await;
    }
}

/// Tells this server's watchers of `job` what the store holds of it: its
/// end, or its status.
async fn republish(state: &AppState, job: JobId) {
    if let Ok(Some(stored)) = state.store().job(job).await {
        let view = Box::new(crate::jobs::view(&stored));
        let event = if stored.status.is_finished() {
            JobEvent::Finished(view)
        } else {
            JobEvent::Status(view)
        };
        state.job_events().publish(job, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_read_back_as_sent() {
        let host = HostId::new();
        let job = JobId::new();
        for signal in [
            Signal::Dispatch { host },
            Signal::Cancel { host, job },
            Signal::Push {
                host,
                what: Pushed::Schedules,
            },
            Signal::JobLogStored { job, upto: 42 },
            Signal::Fleet,
            Signal::Download {
                host,
                start: rm_protocol::DownloadStart {
                    download_id: rm_core::DownloadId::new().to_string(),
                    snapshot_id: String::from("abcdef12"),
                    path: String::from("/srv/a file"),
                    format: rm_protocol::downloads::ArchiveFormat::Zip,
                    upload_url: Some(String::from("http://10.0.0.1:8080/agent/v1/downloads/x")),
                },
            },
        ] {
            let text = encode("server-a", signal.clone()).unwrap();
            let envelope: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(envelope.from, "server-a");
            assert_eq!(envelope.signal, signal);
        }
    }

    #[test]
    fn progress_too_long_loses_current_files_until_it_fits() {
        let progress = JobProgress {
            percent: 50.0,
            current_files: vec!["f".repeat(1024); 16],
            ..Default::default()
        };
        let text = encode(
            "server-a",
            Signal::JobProgress {
                job: JobId::new(),
                progress,
            },
        )
        .unwrap();
        assert!(text.len() <= MAX_MESSAGE_BYTES);
        let envelope: Envelope = serde_json::from_str(&text).unwrap();
        let Signal::JobProgress { progress, .. } = envelope.signal else {
            panic!("not progress");
        };
        assert!(!progress.current_files.is_empty() && progress.current_files.len() < 16);
    }

    #[test]
    fn other_signals_too_long_are_dropped() {
        let signal = Signal::Disconnect {
            host: HostId::new(),
            code: 4001,
            reason: "x".repeat(MAX_MESSAGE_BYTES),
        };
        assert!(encode("server-a", signal).is_none());
    }
}
