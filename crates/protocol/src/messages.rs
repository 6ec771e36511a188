//! Every message kind of protocol version 1 and its payload.
//!
//! Payload structs accept unknown fields (a newer peer may add some) and
//! default the optional ones, but required fields stay required so that a
//! malformed payload is reported, naming the missing or mistyped field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::DecodeError;

/// Declares [`Message`] from one table of `Variant = "kind" (Payload)` rows so
/// the kind strings, the enum and the decoder can never disagree.
macro_rules! messages {
    ($( $(#[$doc:meta])* $variant:ident = $kind:literal ($payload:ty), )*) => {
        /// A typed protocol message; the envelope's `type` picks the variant.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {
            $( $(#[$doc])* $variant($payload), )*
            /// A kind this build does not know. Receivers log and ignore it.
            Unknown {
                /// The `type` string as received.
                kind: String,
                /// The payload as received.
                payload: Value,
            },
        }

        impl Message {
            /// Every kind this build knows, in protocol-table order.
            pub const KINDS: &'static [&'static str] = &[$($kind),*];

            /// The wire name of this message's kind.
            pub fn kind(&self) -> &str {
                match self {
                    $( Message::$variant(_) => $kind, )*
                    Message::Unknown { kind, .. } => kind,
                }
            }

            /// Builds a typed message from an envelope's `type` and payload.
            pub(crate) fn from_parts(kind: &str, payload: Value) -> Result<Message, DecodeError> {
                let payload = if payload.is_null() {
                    Value::Object(Default::default())
                } else {
                    payload
                };
                match kind {
                    $( $kind => serde_path_to_error::deserialize(payload)
                        .map(Message::$variant)
                        .map_err(|e| DecodeError::Payload { kind: $kind, source: naming_the_field(e) }), )*
                    other => Ok(Message::Unknown { kind: other.to_owned(), payload }),
                }
            }

            /// The payload as a JSON value, ready for an envelope.
            pub fn payload(&self) -> Value {
                match self {
                    $( Message::$variant(p) => serde_json::to_value(p).unwrap_or(Value::Null), )*
                    Message::Unknown { payload, .. } => payload.clone(),
                }
            }
        }

        $( impl From<$payload> for Message {
            fn from(payload: $payload) -> Self {
                Message::$variant(payload)
            }
        } )*
    };
}

/// serde names a missing field but not a mistyped one; this adds where in
/// the payload the error is (`version`, `lines[0].seq`), so the `error` reply
/// tells the sender exactly which field to fix.
fn naming_the_field(e: serde_path_to_error::Error<serde_json::Error>) -> serde_json::Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path.is_empty() || path == "." {
        inner
    } else {
        serde::de::Error::custom(format_args!("{inner} at `{path}`"))
    }
}

messages! {
    /// A→S: the handshake; must be the first frame.
    Hello = "hello" (Hello),
    /// A→S: liveness, every heartbeat interval.
    Heartbeat = "heartbeat" (Heartbeat),
    /// S→A: repository credentials and agent settings.
    ConfigUpdate = "config.update" (ConfigUpdate),
    /// S→A: the host's complete schedule set.
    ScheduleSet = "schedule.set" (ScheduleSet),
    /// A→S: the agent now runs this schedule version.
    ScheduleAck = "schedule.ack" (ScheduleAck),
    /// A→S: the agent's local clock fired a schedule.
    ScheduleFire = "schedule.fire" (ScheduleFire),
    /// S→A: run a job.
    CommandRun = "command.run" (CommandRun),
    /// A→S: whether a `command.run` was accepted.
    CommandResult = "command.result" (CommandResult),
    /// S→A: cancel a running or queued job.
    CommandCancel = "command.cancel" (CommandCancel),
    /// A→S: a job's restic process started.
    JobStarted = "job.started" (JobStarted),
    /// A→S: live progress, at most once a second; never persisted.
    JobProgress = "job.progress" (JobProgress),
    /// A→S: a batch of a job's output lines.
    LogStream = "log.stream" (LogStream),
    /// A→S: a job's final outcome.
    JobFinished = "job.finished" (JobFinished),
    /// S→A: the server has stored a job's reports up to here.
    JobAck = "job.ack" (JobAck),
    /// A→S: the repository's full snapshot list for this host.
    SnapshotsReport = "snapshots.report" (SnapshotsReport),
    /// A→S: one snapshot a backup job just saved.
    SnapshotAdded = "snapshot.added" (SnapshotAdded),
    /// A→S: repository statistics.
    RepoStats = "repo.stats" (RepoStats),
    /// S→A (RPC request): list the direct children of a path in a snapshot.
    TreeList = "tree.list" (TreeList),
    /// A→S (RPC reply): the children, or the agent-side error.
    TreeListResult = "tree.list.result" (TreeListResult),
    /// Both ways: something was wrong with a frame or a request.
    Error = "error" (ErrorBody),
    /// S→A: a new agent token to use from now on (rotation).
    TokenRotate = "token.rotate" (TokenRotate),
    /// A→S: the new token is safely stored; the old one may stop working.
    TokenRotated = "token.rotated" (TokenRotated),
    /// S→A: replace the agent's binary with this newer one.
    AgentUpgrade = "agent.upgrade" (AgentUpgrade),
    /// A→S: how an `agent.upgrade` is going.
    AgentUpgradeStatus = "agent.upgrade.status" (AgentUpgradeStatus),
    /// S→A: stream a file or folder of a snapshot to the server's upload
    /// endpoint (see [`crate::downloads`]).
    DownloadStart = "download.start" (DownloadStart),
}

/// `hello`: who the agent is and what it can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the agent speaks.
    pub protocol_version: u32,
    /// The agent's own release version.
    pub agent_version: String,
    /// restic's version (`0.14.0`), or `None` when restic could not be run.
    #[serde(default)]
    pub restic_version: Option<String>,
    /// Why restic's version is unknown (not installed, failed to run, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic_error: Option<String>,
    /// The machine's host name.
    pub hostname: String,
    /// Operating system (`linux`, `macos`, …).
    pub os: String,
    /// CPU architecture (`x86_64`, `aarch64`, …).
    pub arch: String,
    /// Jobs the agent is running right now (after a reconnect), so the
    /// server can tell a job that is still going from one that was lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running_jobs: Vec<String>,
    /// Jobs that have ended but whose reports sit in the agent's on-disk
    /// spool, not yet acknowledged by a `job.ack` with `done`; the agent
    /// replays them right after this hello, so they are not lost either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spooled_jobs: Vec<String>,
    /// The hooks jobs may name: the usable executables in the agent's
    /// `<state-dir>/hooks` folder, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// Files in that folder the agent will not run, and why (owner, mode,
    /// not executable, a symbolic link, a bad name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks_refused: Vec<RefusedHook>,
    /// The platform the agent's binary is built for (`linux-x86_64`, as
    /// [`crate::upgrade::own_platform`] names it). Sent by agents that
    /// understand `agent.upgrade`; older agents leave it out and are
    /// never sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// A file in the hooks folder that the agent refuses to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedHook {
    /// The file's name.
    pub name: String,
    /// Why it is refused.
    pub reason: String,
}

/// `heartbeat`: carries nothing; its arrival is the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {}

/// `config.update`: what the agent needs to run jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    /// The host's repository, when one is set.
    #[serde(default)]
    pub repository: Option<RepositoryConfig>,
    /// Agent behaviour settings.
    #[serde(default)]
    pub settings: AgentSettings,
}

/// A restic repository and how to open it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryConfig {
    /// restic's repository string: a local path, `rest:…`, `s3:…`, `sftp:…`, `rclone:…`.
    pub url: String,
    /// The repository password.
    pub password: String,
    /// Extra environment for the backend (e.g. `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A second repository that `copy` jobs copy this host's snapshots to
    /// (3-2-1). Left out by older servers and in older stored settings; an
    /// older agent ignores it (unknown fields are accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to: Option<CopyTarget>,
}

/// The repository a `copy` job copies snapshots to, opened like the
/// host's own: URL and password on pipes, `env` for its backend.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyTarget {
    /// restic's repository string, as for [`RepositoryConfig::url`].
    pub url: String,
    /// Its password.
    pub password: String,
    /// Extra environment for its backend.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The URL with anything before an `@` (a REST `user:password@`) hidden.
fn url_for_debug(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, rest)) => format!("<redacted>@{rest}"),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for RepositoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never let a password or backend key reach a log through `{:?}`.
        f.debug_struct("RepositoryConfig")
            .field("url", &url_for_debug(&self.url))
            .field("password", &"<redacted>")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("copy_to", &self.copy_to)
            .finish()
    }
}

impl std::fmt::Debug for CopyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyTarget")
            .field("url", &url_for_debug(&self.url))
            .field("password", &"<redacted>")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `token.rotate`: the agent's new bearer token. Until the agent answers
/// `token.rotated` (or connects with the new token) the server accepts both.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRotate {
    /// The new agent token. Secret: never logged.
    pub token: String,
}

impl std::fmt::Debug for TokenRotate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `{:?}` of a frame must never put a credential into a log.
        f.debug_struct("TokenRotate")
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `token.rotated`: the agent wrote the new token to disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenRotated {
    /// The public id part of the token now stored (`rma.<id>.<secret>`),
    /// so a late answer cannot confirm a newer rotation than it saw.
    /// Without it the server confirms the host's pending token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

/// Agent behaviour the server decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// Seconds between heartbeats. The server closes a connection that is
    /// silent for three of these.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u32,
}

fn default_heartbeat() -> u32 {
    crate::DEFAULT_HEARTBEAT_SECS
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            heartbeat_seconds: default_heartbeat(),
        }
    }
}

/// `schedule.set`: the full schedule set; `version` only ever increases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSet {
    /// Monotonic version of this host's schedule set (0 = none ever set).
    pub version: u64,
    /// Every schedule of the host.
    #[serde(default)]
    pub schedules: Vec<Schedule>,
}

/// One schedule as the agent runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's id (ULID).
    pub id: String,
    /// What to run.
    pub kind: JobKind,
    /// Cron expression (5 or 6 fields, or `@daily` and friends).
    pub cron: String,
    /// IANA time zone the cron is read in; `None` means the host's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Job parameters, as for `command.run`.
    #[serde(default)]
    pub params: Value,
    /// Disabled schedules are kept but never fire.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Random delay up to this many seconds added to each fire.
    #[serde(default)]
    pub jitter_seconds: u32,
}

fn yes() -> bool {
    true
}

/// `schedule.ack`: the version the agent applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleAck {
    /// The applied `schedule.set` version.
    pub version: u64,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
}

/// `schedule.fire`: the agent's clock reached a schedule's fire time.
///
/// Connected, the agent sends only `schedule_id` and `scheduled_at` and the
/// server creates and dispatches the job. While the server is away the
/// agent runs the job itself under its own `job_id` (or skips it, when the
/// previous run is still going) and sends this, followed by the job's
/// reports, once it is back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleFire {
    /// Which schedule fired.
    pub schedule_id: String,
    /// The fire time the schedule named (not the send time).
    pub scheduled_at: DateTime<Utc>,
    /// Set when the agent ran (or skipped) the job itself: its own job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The agent skipped this fire: the schedule's previous run was still going.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// A fire missed while the agent itself was down, run once at start-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch_up: bool,
}

/// The kinds of job an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `restic init`.
    Init,
    /// `restic backup`.
    Backup,
    /// `restic forget` (then `prune` when asked).
    Forget,
    /// `restic prune`.
    Prune,
    /// `restic check`.
    Check,
    /// `restic unlock` (stale locks only).
    Unlock,
    /// `restic snapshots`.
    Snapshots,
    /// `restic stats`.
    Stats,
    /// `restic restore`.
    Restore,
    /// `restic copy` of this host's snapshots to the repository's `copy_to`.
    Copy,
    /// A restore drill: a random sample of a snapshot's files restored into
    /// a scratch folder and verified (DESIGN §10).
    Drill,
}

impl JobKind {
    /// Every job kind.
    pub const ALL: [JobKind; 11] = [
        JobKind::Init,
        JobKind::Backup,
        JobKind::Forget,
        JobKind::Prune,
        JobKind::Check,
        JobKind::Unlock,
        JobKind::Snapshots,
        JobKind::Stats,
        JobKind::Restore,
        JobKind::Copy,
        JobKind::Drill,
    ];

    /// The wire name (`backup`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Init => "init",
            JobKind::Backup => "backup",
            JobKind::Forget => "forget",
            JobKind::Prune => "prune",
            JobKind::Check => "check",
            JobKind::Unlock => "unlock",
            JobKind::Snapshots => "snapshots",
            JobKind::Stats => "stats",
            JobKind::Restore => "restore",
            JobKind::Copy => "copy",
            JobKind::Drill => "drill",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;

    /// Parses a wire name; the error says which names exist.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown job kind `{s}` (expected one of {})",
                    known.join(", ")
                )
            })
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `command.run`: run one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    /// The server's job id (ULID).
    pub job_id: String,
    /// What to run.
    pub kind: JobKind,
    /// Kind-specific parameters.
    #[serde(default)]
    pub params: Value,
    /// The repository to use instead of the host's own: set for a restore
    /// from another host's snapshot. Used for this job only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryConfig>,
}

/// Why an agent turned a `command.run` down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Another job is running.
    Busy,
    /// The agent does not know the job kind.
    UnknownKind,
    /// No repository credentials yet.
    NoCredentials,
    /// The parameters are not valid for the kind.
    BadParams,
    /// A reason this build does not know.
    #[serde(other)]
    Other,
}

/// `command.result`: the agent's answer to a `command.run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The job the answer is about.
    pub job_id: String,
    /// Whether the agent took the job.
    pub accepted: bool,
    /// Why not, when rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `command.cancel`: stop a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCancel {
    /// The job to cancel.
    pub job_id: String,
}

/// `job.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStarted {
    /// The job.
    pub job_id: String,
    /// When restic was started.
    pub started_at: DateTime<Utc>,
}

/// `job.progress`: a live progress sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// The job.
    pub job_id: String,
    /// 0–100. `null` reads as 0: serde_json writes a NaN or infinite value
    /// (e.g. 0 of 0 bytes) as `null`, and such a sample must still decode.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub percent: f64,
    /// Files processed so far.
    #[serde(default)]
    pub files_done: u64,
    /// Files to process, when known.
    #[serde(default)]
    pub files_total: u64,
    /// Bytes processed so far.
    #[serde(default)]
    pub bytes_done: u64,
    /// Bytes to process, when known.
    #[serde(default)]
    pub bytes_total: u64,
    /// Estimated seconds left, when known.
    #[serde(default)]
    pub eta_seconds: Option<u64>,
    /// Files being worked on now.
    #[serde(default)]
    pub current_files: Vec<String>,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// Which output stream of restic a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogStreamKind {
    /// restic's standard output.
    Stdout,
    /// restic's standard error.
    Stderr,
}

/// One output line of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Dense per job, from 1: storage is idempotent on `(job_id, seq)`.
    pub seq: u64,
    /// When the agent read the line.
    pub ts: DateTime<Utc>,
    /// Which stream.
    pub stream: LogStreamKind,
    /// The line, without its newline.
    pub text: String,
}

/// `log.stream`: a batch of lines of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogStream {
    /// The job.
    pub job_id: String,
    /// The lines, in `seq` order.
    pub lines: Vec<LogLine>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// restic exited 0.
    Succeeded,
    /// A snapshot was made but some files could not be read (backup exit 3).
    Partial,
    /// Anything else.
    Failed,
    /// Cancelled by an operator or by shutdown.
    Cancelled,
}

/// `job.finished`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFinished {
    /// The job.
    pub job_id: String,
    /// The outcome.
    pub status: JobOutcome,
    /// restic's exit code, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Command-specific statistics (a JSON object).
    #[serde(default)]
    pub stats: Value,
    /// restic's own error text on failure.
    #[serde(default)]
    pub error: Option<String>,
    /// When the job ended.
    pub finished_at: DateTime<Utc>,
}

/// `job.ack`: what the server has stored of a job's reports, so the agent
/// can drop them from its spool.
///
/// Acks only ever grow: `log_seq` is the highest `seq` below which every
/// log line of the job is stored; `done` says the job's end (and every
/// report before it) is stored, or that the server refuses the job's
/// reports for good (`error` says why), and the agent may forget the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobAck {
    /// The job.
    pub job_id: String,
    /// Every log line with `seq` up to this one is stored (0: none yet).
    #[serde(default)]
    pub log_seq: u64,
    /// Everything about the job is stored; the agent may forget it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
    /// Set with `done` when the server refuses the job's reports for good
    /// (it does not know the job): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One snapshot as stored by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotInfo {
    /// Full 64-hex id.
    pub id: String,
    /// First 8 hex characters.
    pub short_id: String,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// The host name restic recorded.
    #[serde(default)]
    pub hostname: String,
    /// The backed-up paths.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Bytes in the snapshot, when restic reports it.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Files in the snapshot, when restic reports it.
    #[serde(default)]
    pub file_count: Option<u64>,
}

/// `snapshots.report`: replaces the stored list for the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotsReport {
    /// Every snapshot of the repository made by this host.
    pub snapshots: Vec<SnapshotInfo>,
}

/// `snapshot.added`: the snapshot a backup job saved, reported with the
/// job (before its `job.finished`) so the server's list is current without
/// listing the repository again. Added to the stored list, or replacing
/// the entry with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotAdded {
    /// The backup job that saved it.
    pub job_id: String,
    /// The snapshot, as far as the backup's own output tells.
    pub snapshot: SnapshotInfo,
}

/// `repo.stats`: repository statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoStats {
    /// Restore size of all snapshots, in bytes.
    #[serde(default)]
    pub total_size_bytes: Option<u64>,
    /// Bytes stored in the repository (after dedup and compression).
    #[serde(default)]
    pub raw_size_bytes: Option<u64>,
    /// Distinct files across snapshots.
    #[serde(default)]
    pub unique_files: Option<u64>,
    /// Number of snapshots.
    #[serde(default)]
    pub snapshot_count: Option<u64>,
    /// When `check` last ran.
    #[serde(default)]
    pub last_check_at: Option<DateTime<Utc>>,
    /// `succeeded` / `failed` of that check.
    #[serde(default)]
    pub last_check_status: Option<String>,
    /// Whether a lock file is present.
    #[serde(default)]
    pub lock_present: Option<bool>,
    /// When `prune` last ran.
    #[serde(default)]
    pub last_prune_at: Option<DateTime<Utc>>,
    /// Bytes that prune freed.
    #[serde(default)]
    pub last_prune_freed_bytes: Option<u64>,
}

/// `tree.list`: RPC request for a directory's direct children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeList {
    /// The snapshot (full or short id).
    pub snapshot_id: String,
    /// Absolute path inside the snapshot (`/` for the root).
    pub path: String,
}

/// `download.start`: dump `path` of `snapshot_id` (`restic dump`) and post
/// it to the server's [`crate::downloads::upload_path`] of `download_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadStart {
    /// The one-time id the upload is posted under (ULID).
    pub download_id: String,
    /// The snapshot (8 to 64 hex characters).
    pub snapshot_id: String,
    /// Absolute, normalised path inside the snapshot (`/` for all of it).
    pub path: String,
    /// How a folder is packed (a file is sent as it is).
    #[serde(default)]
    pub format: crate::downloads::ArchiveFormat,
    /// Where to post the data instead of the agent's own server: the
    /// `--internal-url` of the server of a cluster that holds the
    /// browser's request, plus [`crate::downloads::upload_path`]. The agent
    /// takes it only with its own server's scheme and exactly that path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
}

/// The type of a snapshot tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else restic records (device, fifo, socket…).
    #[serde(other)]
    Other,
}

/// One child in a `tree.list.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TreeEntry {
    /// File name.
    pub name: String,
    /// Entry type.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Absolute path inside the snapshot.
    pub path: String,
    /// Size in bytes (files only).
    #[serde(default)]
    pub size: Option<u64>,
    /// Modification time.
    #[serde(default)]
    pub mtime: Option<DateTime<Utc>>,
    /// Unix permission bits.
    #[serde(default)]
    pub mode: Option<u32>,
}

/// `tree.list.result`: the reply, carrying the request's envelope id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeListResult {
    /// The children.
    #[serde(default)]
    pub entries: Vec<TreeEntry>,
    /// The agent-side failure, if any.
    #[serde(default)]
    pub error: Option<String>,
}

/// Error codes carried by `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or request was malformed.
    BadRequest,
    /// The agent's protocol version is below the server's minimum.
    ProtocolTooOld,
    /// Not allowed.
    Unauthorized,
    /// The thing referred to does not exist.
    NotFound,
    /// Try later.
    Busy,
    /// The sender failed internally.
    Internal,
    /// A code this build does not know.
    #[serde(other)]
    Unknown,
}

/// `error`: what went wrong, for a human and for code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What was wrong, naming the field or value.
    pub message: String,
    /// Where to read more (e.g. upgrade instructions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl ErrorBody {
    /// An error body without a URL.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            url: None,
        }
    }
}

/// `agent.upgrade`: the server offers a newer agent binary. The agent
/// ignores a version that is not newer than its own, downloads `url` (which
/// must be on the server it is enrolled with), checks `sha256`, tries the
/// binary (`--version` must print `version`), waits until no job runs, and
/// replaces and re-executes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpgrade {
    /// The release the binary is (`MAJOR.MINOR.PATCH`).
    pub version: String,
    /// Where to download it: `<server>/download/agent/<platform>`.
    pub url: String,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

/// Where an agent upgrade is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeState {
    /// The binary is being downloaded.
    Downloading,
    /// Downloaded, its SHA-256 matches and `--version` printed the version.
    Verified,
    /// Ready, waiting for the running job to end before restarting.
    WaitingForJob,
    /// The new binary runs and has connected: the upgrade is done.
    Installed,
    /// The upgrade did not happen (or was rolled back); `error` says why.
    Failed,
    /// A state this build does not know.
    #[serde(other)]
    Unknown,
}

impl UpgradeState {
    /// The wire name (`downloading`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeState::Downloading => "downloading",
            UpgradeState::Verified => "verified",
            UpgradeState::WaitingForJob => "waiting_for_job",
            UpgradeState::Installed => "installed",
            UpgradeState::Failed => "failed",
            UpgradeState::Unknown => "unknown",
        }
    }
}

/// `agent.upgrade.status`: a step of an upgrade, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpgradeStatus {
    /// The version being installed.
    pub version: String,
    /// Where the upgrade is.
    pub state: UpgradeState,
    /// Why it failed, with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
