//! What the agent does with each message from the server, kept apart from
//! the socket so it can be tested frame in, frames out.
//!
//! Side effects are limited to caching what the server sent in the state
//! directory and adopting the heartbeat interval; replies are returned for
//! the session to send. Repository settings are checked against the same
//! rules the server applies (`params::validate_repository`) before they
//! are used or cached.

use std::time::Duration;

use chrono::Utc;
use rm_protocol::{
    AgentSettings, CommandResult, ConfigUpdate, ErrorBody, ErrorCode, Frame, RejectReason,
    RepositoryConfig, ScheduleAck, ScheduleSet, TreeListResult,
};

use crate::error::AgentError;
use crate::inbound::{self, Inbound};
use crate::jobs::{check_repository, JobRunner};
use crate::state::StateDir;

/// The heartbeat interval the server asks for, never below one second so a
/// bad setting cannot turn the agent into a flood.
pub(crate) fn heartbeat_interval(settings: &AgentSettings) -> Duration {
    Duration::from_secs(u64::from(settings.heartbeat_seconds.max(1)))
}

/// Handles server messages for one agent, across reconnects.
#[derive(Debug)]
pub(crate) struct Handler {
    state: StateDir,
    heartbeat: Duration,
    repository: Option<RepositoryConfig>,
    jobs: JobRunner,
    schedules: tokio::sync::watch::Sender<ScheduleSet>,
    upgrader: Option<crate::upgrade::Upgrader>,
    downloader: Option<crate::download::Downloader>,
}

impl Handler {
    /// A handler caching into `state`, heartbeating every `heartbeat` until
    /// the server says otherwise, running jobs with `jobs` against
    /// `repository` (the cached one, until the server sends another).
    pub(crate) fn new(
        state: StateDir,
        heartbeat: Duration,
        repository: Option<RepositoryConfig>,
        jobs: JobRunner,
        schedules: tokio::sync::watch::Sender<ScheduleSet>,
    ) -> Self {
        Handler {
            state,
            heartbeat,
            repository,
            jobs,
            schedules,
            upgrader: None,
            downloader: None,
        }
    }

    /// Takes `agent.upgrade` with `upgrader` (without one, offers are
    /// refused).
    pub(crate) fn use_upgrader(&mut self, upgrader: crate::upgrade::Upgrader) {
        self.upgrader = Some(upgrader);
    }

    /// Answers `download.start` with `downloader` (without one, downloads
    /// are logged and not answered: the server times out).
    pub(crate) fn use_downloader(&mut self, downloader: crate::download::Downloader) {
        self.downloader = Some(downloader);
    }

    /// The upgrader, when upgrades are set up.
    pub(crate) fn upgrader(&self) -> Option<&crate::upgrade::Upgrader> {
        self.upgrader.as_ref()
    }

    /// The job runner.
    pub(crate) fn jobs(&self) -> &JobRunner {
        &self.jobs
    }

    /// A reply for a frame that could not be decoded: a `command.run` that
    /// names its job is refused (so the server does not wait for it
    /// forever); anything else is only logged.
    pub(crate) fn undecodable(
        &self,
        text: &str,
        error: &rm_protocol::DecodeError,
    ) -> Option<Frame> {
        tracing::warn!("ignoring a frame from the server that could not be decoded: {error}");
        let envelope: rm_protocol::Envelope = serde_json::from_str(text).ok()?;
        if error.kind() == Some("tree.list") {
            // An RPC request: answer it, so the caller does not wait out its
            // timeout.
            return Some(Frame {
                id: envelope.id,
                message: TreeListResult {
                    entries: Vec::new(),
                    error: Some(format!("this agent cannot read the request: {error}")),
                }
                .into(),
            });
        }
        if error.kind() != Some("command.run") {
            return None;
        }
        let job_id = envelope.payload.get("job_id")?.as_str()?.to_owned();
        Some(Frame::new(CommandResult {
            job_id,
            accepted: false,
            reason: Some(RejectReason::UnknownKind),
            message: Some(format!("this agent cannot run this job: {error}")),
        }))
    }

    /// The current heartbeat interval.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Handles one decoded frame and returns the frames to send back. Its
    /// ids are parsed first ([`crate::inbound`]); a frame with a bad one is
    /// answered and does nothing else.
    pub(crate) async fn handle(&mut self, frame: Frame) -> Vec<Frame> {
        // A frame after `hello` other than an `error` (a refused hello is
        // answered with one) means the server accepted the connection: an
        // upgraded binary on trial has proved it can connect.
        if let Some(upgrader) = &self.upgrader {
            if !matches!(frame.message, rm_protocol::Message::Error(_)) {
                upgrader.welcomed();
            }
        }
        let inbound = match inbound::parse(frame) {
            Ok(inbound) => inbound,
            Err(reply) => return reply.map(|frame| *frame).into_iter().collect(),
        };
        match inbound {
            Inbound::Config(config) => {
                self.on_config(config).await;
                Vec::new()
            }
            Inbound::Schedules(set) => self.on_schedules(set).await.into_iter().collect(),
            Inbound::Run(run) => vec![self.jobs.start(run, self.repository.clone())],
            Inbound::Cancel(job_id) => {
                self.jobs.cancel(job_id);
                Vec::new()
            }
            Inbound::Ack(job_id, ack) => {
                self.jobs.spool().ack(job_id, &ack);
                Vec::new()
            }
            Inbound::TreeList {
                id,
                snapshot_id,
                path,
            } => {
                self.jobs
                    .list_tree(id, snapshot_id, path, self.repository.clone());
                Vec::new()
            }
            Inbound::Download(request) => {
                match &self.downloader {
                    Some(downloader) => {
                        let repository = match self.jobs.refused() {
                            Some(reason) => Err(reason),
                            None => Ok(self.repository.clone()),
                        };
                        downloader.start(request, repository);
                    }
                    None => {
                        tracing::warn!(download = %request.id, "this agent cannot upload downloads")
                    }
                }
                Vec::new()
            }
            Inbound::Error(error) => {
                log_server_error(&error);
                Vec::new()
            }
            Inbound::TokenRotate(rotate) => {
                vec![crate::rotation::on_rotate(&self.state, rotate).await]
            }
            Inbound::Upgrade(upgrade) => match &self.upgrader {
                Some(upgrader) => {
                    upgrader.offer(upgrade);
                    Vec::new()
                }
                None => vec![Frame::new(rm_protocol::AgentUpgradeStatus {
                    version: upgrade.version,
                    state: rm_protocol::UpgradeState::Failed,
                    error: Some(String::from("this agent cannot upgrade itself")),
                })],
            },
            Inbound::Ignored(kind) => {
                tracing::debug!(%kind, "ignoring a message this agent does not know or the server should not send");
                Vec::new()
            }
        }
    }

    async fn on_config(&mut self, config: ConfigUpdate) {
        // Settings that break the rules (an old server, a forged frame) are
        // not applied and not cached: the frame is dropped whole, and jobs
        // on this host's repository fail with the reason until the server
        // sends usable settings.
        if let Some(Err(refused)) = config.repository.as_ref().map(check_repository) {
            tracing::error!(
                "refusing the configuration from the server; jobs fail until it sends usable settings: {refused}"
            );
            self.repository = None;
            self.jobs.refuse_repository(Some(refused));
            self.jobs.repository_settings(None);
            return;
        }
        self.jobs.refuse_repository(None);
        self.jobs.repository_settings(config.repository.as_ref());
        let heartbeat = heartbeat_interval(&config.settings);
        if heartbeat != self.heartbeat {
            tracing::info!(seconds = heartbeat.as_secs(), "heartbeat interval changed");
            self.heartbeat = heartbeat;
        }
        // The repository URL may embed credentials, so only say whether one is set.
        let has_repository = config.repository.is_some();
        self.repository = config.repository.clone();
        let state = self.state.clone();
        match blocking(move || state.save_config(&config)).await {
            Ok(path) => tracing::info!(
                repository = if has_repository { "set" } else { "none" },
                file = %path.display(),
                "received configuration"
            ),
            Err(e) => tracing::error!(
                "could not save the configuration from the server; it is used until the agent restarts: {e}"
            ),
        }
    }

    async fn on_schedules(&mut self, set: ScheduleSet) -> Option<Frame> {
        let version = set.version;
        let count = set.schedules.len();
        let state = self.state.clone();
        let saved = set.clone();
        match blocking(move || state.save_schedules(&saved)).await {
            Ok(_) => {
                // The scheduler switches to the whole new set at once.
                self.schedules.send_replace(set);
                tracing::info!(version, schedules = count, "applied schedule set");
                Some(Frame::new(ScheduleAck {
                    version,
                    applied_at: Utc::now(),
                }))
            }
            Err(e) => {
                // No ack: the server keeps showing the version as pending,
                // which is the truth, and resends it on the next connect.
                tracing::error!(
                    version,
                    "could not save schedule set, not acknowledging it: {e}"
                );
                None
            }
        }
    }
}

/// Runs a state-directory write off the async threads: fsync can stall.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the writer task failed: {e}")),
    }
}

fn log_server_error(error: &ErrorBody) {
    let code = serde_json::to_value(error.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let url = error.url.as_deref().unwrap_or("");
    if error.code == ErrorCode::ProtocolTooOld {
        tracing::error!(%code, %url, "the server refuses this agent version; upgrade the agent: {}", error.message);
    } else {
        tracing::warn!(%code, %url, "the server reported an error: {}", error.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_protocol::{CommandRun, Heartbeat, JobKind, Message, TreeList};

    const JOB: &str = "01J0000000000000000000000A";
    const RPC: &str = "01J0000000000000000000000R";

    fn handler(dir: &tempfile::TempDir) -> Handler {
        let (outbox, _) = tokio::sync::mpsc::channel(8);
        let spool = crate::spool::Spool::open(&dir.path().join("agent-home")).unwrap();
        let jobs = JobRunner::new(
            "restic".into(),
            dir.path().join("cache"),
            None,
            outbox,
            spool,
        );
        Handler::new(
            StateDir::new(dir.path().join("state")),
            Duration::from_secs(30),
            None,
            jobs,
            tokio::sync::watch::channel(ScheduleSet::default()).0,
        )
    }

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[tokio::test]
    async fn config_update_is_cached_and_sets_the_heartbeat() {
        let dir = temp();
        let mut h = handler(&dir);
        let config = ConfigUpdate {
            repository: None,
            settings: AgentSettings {
                heartbeat_seconds: 5,
            },
        };
        let replies = h.handle(Frame::new(config.clone())).await;
        assert!(replies.is_empty());
        assert_eq!(h.heartbeat(), Duration::from_secs(5));
        assert_eq!(h.state.load_config().ok().flatten(), Some(config));
    }

    #[tokio::test]
    async fn a_config_update_breaking_the_rules_is_refused_and_not_cached() {
        let dir = temp();
        let mut h = handler(&dir);
        let good = ConfigUpdate {
            repository: Some(RepositoryConfig {
                url: "/srv/repo".into(),
                password: "pw".into(),
                env: [("AWS_ACCESS_KEY_ID".to_owned(), "AKIA".to_owned())].into(),
                copy_to: None,
            }),
            settings: AgentSettings {
                heartbeat_seconds: 5,
            },
        };
        h.handle(Frame::new(good.clone())).await;
        let mut bad = good.clone();
        if let Some(repo) = bad.repository.as_mut() {
            repo.env.insert("PATH".into(), "/tmp/evil".into());
        }
        bad.settings.heartbeat_seconds = 9;
        assert!(h.handle(Frame::new(bad)).await.is_empty());
        // Nothing of it applied or cached…
        assert_eq!(h.heartbeat(), Duration::from_secs(5));
        assert_eq!(h.state.load_config().ok().flatten(), Some(good.clone()));
        // …and jobs fail with the reason instead of using older settings.
        let replies = h
            .handle(Frame::new(CommandRun {
                job_id: JOB.into(),
                kind: JobKind::Snapshots,
                params: serde_json::Value::Null,
                repository: None,
            }))
            .await;
        let [Frame {
            message: Message::CommandResult(result),
            ..
        }] = replies.as_slice()
        else {
            panic!("expected one command.result, got {replies:?}");
        };
        assert!(!result.accepted);
        let message = result.message.clone().unwrap_or_default();
        assert!(
            message.starts_with("repository settings refused: `env.PATH`"),
            "{message}"
        );
        // Usable settings lift the refusal.
        h.handle(Frame::new(good.clone())).await;
        assert!(h.jobs().refused().is_none());
    }

    #[test]
    fn heartbeat_is_at_least_one_second() {
        let settings = AgentSettings {
            heartbeat_seconds: 0,
        };
        assert_eq!(heartbeat_interval(&settings), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn schedule_set_is_cached_then_acked() {
        let dir = temp();
        let mut h = handler(&dir);
        let set = ScheduleSet {
            version: 42,
            schedules: Vec::new(),
        };
        let replies = h.handle(Frame::new(set.clone())).await;
        match replies.as_slice() {
            [Frame {
                id: None,
                message: Message::ScheduleAck(ack),
            }] => assert_eq!(ack.version, 42),
            other => panic!("expected one schedule.ack, got {other:?}"),
        }
        assert_eq!(h.state.load_schedules().ok().flatten(), Some(set));
    }

    #[tokio::test]
    async fn schedule_set_that_cannot_be_saved_is_not_acked() {
        let dir = temp();
        let blocker = dir.path().join("state");
        std::fs::write(&blocker, "a file where the directory should be")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut h = handler(&dir);
        let replies = h
            .handle(Frame::new(ScheduleSet {
                version: 1,
                schedules: Vec::new(),
            }))
            .await;
        assert!(replies.is_empty(), "{replies:?}");
    }

    #[tokio::test]
    async fn jobs_without_a_repository_are_refused() {
        let dir = temp();
        let mut h = handler(&dir);
        let replies = h
            .handle(Frame::new(CommandRun {
                job_id: JOB.into(),
                kind: JobKind::Backup,
                params: serde_json::json!({"paths": ["/etc"]}),
                repository: None,
            }))
            .await;
        match replies.as_slice() {
            [Frame {
                message: Message::CommandResult(result),
                ..
            }] => {
                assert_eq!(result.job_id, JOB);
                assert!(!result.accepted);
                assert_eq!(result.reason, Some(RejectReason::NoCredentials));
            }
            other => panic!("expected one command.result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn tree_list_is_answered_through_the_outbox_with_the_request_id() {
        let dir = temp();
        let (outbox, mut answers) = tokio::sync::mpsc::channel(8);
        let spool = crate::spool::Spool::open(&dir.path().join("agent-home")).unwrap();
        let jobs = JobRunner::new(
            "restic".into(),
            dir.path().join("cache"),
            None,
            outbox,
            spool,
        );
        let mut h = Handler::new(
            StateDir::new(dir.path().join("state")),
            Duration::from_secs(30),
            None,
            jobs,
            tokio::sync::watch::channel(ScheduleSet::default()).0,
        );
        let request = TreeList {
            snapshot_id: "abcd1234".into(),
            path: "/".into(),
        };
        let replies = h.handle(Frame::with_id(RPC, request)).await;
        assert!(replies.is_empty(), "answered in the background");
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.recv())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("outbox closed"));
        assert_eq!(answer.id.as_deref(), Some(RPC));
        match answer.message {
            Message::TreeListResult(result) => {
                assert!(result.entries.is_empty());
                assert!(result.error.unwrap_or_default().contains("no repository"));
            }
            other => panic!("expected tree.list.result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn errors_unknown_kinds_and_strays_get_no_reply() {
        let dir = temp();
        let mut h = handler(&dir);
        for frame in [
            Frame::new(ErrorBody::new(ErrorCode::BadRequest, "nope")),
            Frame::new(ErrorBody::new(ErrorCode::ProtocolTooOld, "upgrade")),
            Frame::new(Message::Unknown {
                kind: "future.thing".into(),
                payload: serde_json::json!({}),
            }),
            Frame::new(Heartbeat {}),
        ] {
            assert!(h.handle(frame).await.is_empty());
        }
    }
}
