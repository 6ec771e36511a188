//! Running jobs: one at a time, each as one or more restic commands, with
//! everything restic prints turned into protocol messages.
//!
//! A job runs in its own task and keeps running across reconnects. What it
//! reports (start, log batches, the snapshot a backup saved, then the end)
//! is written to the on-disk [spool](crate::spool) that every connection
//! replays and follows, so a job that outlives its connection — or the
//! agent process — still reports everything, in order. Only live progress
//! goes straight to the outbox, and is dropped when that is full.
//!
//! A job ends when its restic exits: the repository's full snapshot list
//! and statistics (three more restic runs, each paying the repository's key
//! derivation) are gathered afterwards by the [refresh](Refresh), which
//! yields to the next job instead of holding it up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use rm_core::{HostId, JobId, RequestId, SnapshotId};
use rm_protocol::params::{
    BackupParams, CheckParams, CopyParams, ForgetParams, JobParams, RestoreParams,
};
use rm_protocol::{
    CommandResult, Frame, JobFinished, JobOutcome, JobProgress, JobStarted, LogLine, LogStream,
    LogStreamKind, Message, RejectReason, RepoStats, RepositoryConfig, SnapshotAdded, SnapshotInfo,
    SnapshotsReport,
};
use rm_restic::{
    BackupOptions, Bandwidth, Command, Event, FailureKind, Finished, Limits, Repository, Restic,
    ResticError, ResticVersion, RetentionPolicy, StatsMode, Status, Stream,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hooks::{Hooks, DEFAULT_HOOK_TIMEOUT};
use crate::inbound::{shown, Run};
use crate::restore_guard::{RestoreGuard, RestoreRefused};
use crate::spool::{Shortfall, Spool};
use crate::state::StateDir;
use crate::verification::Cursors;

/// Live frames (progress, RPC answers) waiting for the connection.
pub(crate) const OUTBOX: usize = 4096;

/// Lines gathered into one `log.stream` frame at most.
const LOG_BATCH_LINES: usize = 200;
/// How long a line may wait before its batch is sent.
const LOG_BATCH_WAIT: Duration = Duration::from_millis(250);
/// At most one progress frame per this interval.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

mod copy;
mod drill;
mod refresh;
pub use drill::{sweep as sweep_drills, DEFAULT_DRILL_DIR};
use refresh::Refresh;

/// How often the repository report is refreshed while no job changes the
/// repository (other hosts may share it; prunes elsewhere change its size).
const REFRESH_EVERY: Duration = Duration::from_secs(24 * 3600);
/// SIGINT to SIGKILL grace when a job is cancelled or times out.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long each kind of restic command may run.
fn timeout_for(command: &Command) -> Duration {
    let minutes = match command {
        Command::Init
        | Command::InitFrom { .. }
        | Command::CatConfig
        | Command::ListLocks
        | Command::Unlock => 10,
        Command::Snapshots { .. } | Command::Ls { .. } => 15,
        Command::Forget { .. } | Command::Stats { .. } => 60,
        Command::Prune | Command::Check { .. } => 12 * 60,
        Command::Backup { .. }
        | Command::BackupStdin { .. }
        | Command::Restore { .. }
        | Command::Copy { .. }
        | Command::LsTree { .. }
        | Command::Dump { .. } => 24 * 60,
    };
    Duration::from_secs(minutes * 60)
}

/// What the agent knows about its repository between jobs, sent with
/// every `repo.stats`.
#[derive(Debug, Clone, Default)]
struct RepoHistory {
    last_check_at: Option<DateTime<Utc>>,
    last_check_status: Option<String>,
    last_prune_at: Option<DateTime<Utc>>,
    last_prune_freed_bytes: Option<u64>,
}

/// The restic found for the agent's `--restic-bin`, kept while its file is
/// unchanged: `restic version` need not run before every job and listing.
#[derive(Debug)]
struct Detected {
    stamp: BinStamp,
    restic: Restic,
}

/// What identifies a binary's file: a changed path, size or modification
/// time (an upgrade) means detecting its version again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BinStamp {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

impl BinStamp {
    fn of(path: PathBuf) -> Option<BinStamp> {
        let meta = std::fs::metadata(&path).ok()?;
        Some(BinStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            path,
        })
    }
}

/// The job running now, if any.
#[derive(Debug)]
struct Current {
    job_id: JobId,
    cancel: CancellationToken,
}

/// Starts jobs and remembers the one running.
#[derive(Debug, Clone)]
pub(crate) struct JobRunner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    restic_bin: std::path::PathBuf,
    cache_dir: std::path::PathBuf,
    /// See [`Detected`].
    detected: tokio::sync::Mutex<Option<Detected>>,
    refresh: Mutex<Refresh>,
    /// The host name restic records in snapshots and `forget` filters on;
    /// set once at start-up, the machine's own when unset.
    hostname: OnceLock<String>,
    command_timeout: Option<Duration>,
    outbox: mpsc::Sender<Frame>,
    spool: Spool,
    current: Mutex<Option<Current>>,
    /// Set while the agent replaces itself: no new job starts (a server
    /// job is answered `busy` and goes back to the server's queue).
    held: std::sync::atomic::AtomicBool,
    history: Mutex<RepoHistory>,
    /// Where restores may write; set once at start-up. Unset, system
    /// folders are still protected.
    restore_guard: OnceLock<RestoreGuard>,
    /// The host's hooks folder; set once at start-up. Unset, every hook
    /// is refused.
    hooks: OnceLock<Hooks>,
    /// Where each repository's rotating check stands; kept in the state
    /// directory once [`JobRunner::keep_cursors_in`] said where, in memory
    /// until then.
    cursors: OnceLock<Cursors>,
    /// Why the host's latest repository settings were refused (they break
    /// the rules of `params::validate_repository`), while they are the
    /// latest: jobs on the host's own repository fail with this instead of
    /// running restic with older settings.
    refused: Mutex<Option<String>>,
    /// Where drills make their scratch folders, and the state directory
    /// they must stay out of; set once at start-up.
    drills: OnceLock<(PathBuf, PathBuf)>,
}

/// The prefix of every refusal of repository settings, as operators see it.
pub(crate) const REFUSED: &str = "repository settings refused";

/// Checks repository settings as the server should have, so settings from
/// an old server, a forged frame or an old cache never reach restic.
pub(crate) fn check_repository(config: &RepositoryConfig) -> Result<(), String> {
    rm_protocol::params::validate_repository(config).map_err(|e| format!("{REFUSED}: {e}"))
}

impl JobRunner {
    /// A runner using `restic_bin`, whose job reports go to `spool` and
    /// live frames to `outbox`.
    pub(crate) fn new(
        restic_bin: std::path::PathBuf,
        cache_dir: std::path::PathBuf,
        command_timeout: Option<Duration>,
        outbox: mpsc::Sender<Frame>,
        spool: Spool,
    ) -> JobRunner {
        JobRunner {
            inner: Arc::new(Inner {
                restic_bin,
                cache_dir,
                detected: tokio::sync::Mutex::new(None),
                refresh: Mutex::new(Refresh::default()),
                hostname: OnceLock::new(),
                command_timeout,
                outbox,
                spool,
                current: Mutex::new(None),
                held: std::sync::atomic::AtomicBool::new(false),
                history: Mutex::new(RepoHistory::default()),
                restore_guard: OnceLock::new(),
                hooks: OnceLock::new(),
                cursors: OnceLock::new(),
                refused: Mutex::new(None),
                drills: OnceLock::new(),
            }),
        }
    }

    /// Checks every restore against `guard` (the state directory and the
    /// operator's opt-in). Only the first call counts.
    pub(crate) fn guard_restores(&self, guard: RestoreGuard) {
        if self.inner.restore_guard.set(guard).is_err() {
            tracing::warn!("the restore guard was already set; keeping the first");
        }
    }

    /// Makes drills restore under `drill_dir`, which must stay clear of
    /// `state_dir`. Only the first call counts.
    pub(crate) fn use_drill_dir(&self, drill_dir: PathBuf, state_dir: PathBuf) {
        if self.inner.drills.set((drill_dir, state_dir)).is_err() {
            tracing::warn!("the drill folder was already set; keeping the first");
        }
    }

    /// Where drills make their scratch folders.
    pub(crate) fn drill_dir(&self) -> PathBuf {
        self.inner
            .drills
            .get()
            .map_or_else(|| PathBuf::from(DEFAULT_DRILL_DIR), |(dir, _)| dir.clone())
    }

    /// The agent's state directory, when known.
    pub(crate) fn state_dir(&self) -> Option<&std::path::Path> {
        self.inner.drills.get().map(|(_, state)| state.as_path())
    }

    /// Runs the hooks jobs name from `hooks`. Only the first call counts.
    pub(crate) fn use_hooks(&self, hooks: Hooks) {
        if self.inner.hooks.set(hooks).is_err() {
            tracing::warn!("the hooks folder was already set; keeping the first");
        }
    }

    /// Keeps the rotating checks' cursors in `dir`, so they survive a
    /// restart. Only the first call counts.
    pub(crate) fn keep_cursors_in(&self, dir: StateDir) {
        if self.inner.cursors.set(Cursors::in_dir(dir)).is_err() {
            tracing::warn!("the rotating checks' cursors were already placed; keeping the first");
        }
    }

    /// The rotating checks' cursors.
    fn cursors(&self) -> &Cursors {
        self.inner.cursors.get_or_init(Cursors::default)
    }

    /// The host's hooks (a folder that does not exist when none was set).
    pub(crate) fn hooks(&self) -> &Hooks {
        self.inner
            .hooks
            .get_or_init(|| Hooks::new(std::path::Path::new("/nonexistent"), DEFAULT_HOOK_TIMEOUT))
    }

    /// Names this host `hostname` in its snapshots, its `forget`s and its
    /// hooks instead of the machine's host name. Only the first call counts.
    pub(crate) fn use_hostname(&self, hostname: String) {
        if self.inner.hostname.set(hostname).is_err() {
            tracing::warn!("the host name was already set; keeping the first");
        }
    }

    /// The host name restic records and `forget` keeps to (`RM_HOST` for
    /// hooks): `--hostname`, or the machine's.
    pub(crate) fn hostname(&self) -> &str {
        self.inner.hostname.get_or_init(crate::hostname)
    }

    /// Records that the host's latest repository settings were refused and
    /// why (`Some`), or that usable ones arrived (`None`).
    pub(crate) fn refuse_repository(&self, reason: Option<String>) {
        if let Ok(mut refused) = self.inner.refused.lock() {
            *refused = reason;
        }
    }

    /// The host's repository settings as the latest `config.update` has
    /// them (`None`: none, or refused): a refresh only ever lists those, so
    /// one due or daily for earlier settings is dropped or moved over.
    pub(crate) fn repository_settings(&self, repository: Option<&RepositoryConfig>) {
        let repository = repository.map(|r| Repository {
            url: r.url.clone(),
            password: r.password.clone(),
            env: r.env.clone(),
        });
        if let Ok(mut refresh) = self.inner.refresh.lock() {
            if refresh.last.is_some() && refresh.last != repository {
                refresh.last = repository.clone();
            }
            if refresh.due.is_some() && refresh.due != repository {
                refresh.due = None;
            }
        }
    }

    /// Why the host's own repository settings are refused, if they are.
    pub(crate) fn refused(&self) -> Option<String> {
        self.inner.refused.lock().ok().and_then(|r| r.clone())
    }

    /// The job running now, if any (for `hello.running_jobs`).
    pub(crate) fn running(&self) -> Vec<JobId> {
        self.inner
            .current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.job_id))
            .into_iter()
            .collect()
    }

    /// Where this runner's job reports go.
    pub(crate) fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// Answers a `tree.list` in the background through the outbox.
    pub(crate) fn list_tree(
        &self,
        id: RequestId,
        snapshot_id: SnapshotId,
        path: String,
        repository: Option<RepositoryConfig>,
    ) {
        let repository = match self.refused() {
            Some(reason) => Err(reason),
            None => Ok(repository),
        };
        crate::browse::spawn(id, snapshot_id, path, repository, self.clone());
    }

    /// The outbox for live frames.
    pub(crate) fn outbox(&self) -> &mpsc::Sender<Frame> {
        &self.inner.outbox
    }

    /// The agent's restic, using its cache folder. Its version is detected
    /// once and again only when the binary's file changes.
    pub(crate) async fn restic(&self) -> Result<Restic, ResticError> {
        let bin = rm_restic::resolve_bin(&self.inner.restic_bin)?;
        let stamp = BinStamp::of(bin.clone());
        let mut detected = self.inner.detected.lock().await;
        if let (Some(known), Some(stamp)) = (detected.as_ref(), stamp.as_ref()) {
            if &known.stamp == stamp {
                return Ok(known.restic.clone());
            }
        }
        let version = rm_restic::detect_version(&bin).await?;
        let restic = Restic::new(bin, version).with_cache_dir(self.inner.cache_dir.clone());
        *detected = stamp.map(|stamp| Detected {
            stamp,
            restic: restic.clone(),
        });
        Ok(restic)
    }

    /// Whether a job is executing now (its end may still be unsent).
    pub(crate) fn busy(&self) -> bool {
        self.inner
            .current
            .lock()
            .map(|c| c.is_some())
            .unwrap_or(true)
    }

    /// Holds (or releases) new jobs while the agent replaces its binary.
    /// Holding succeeds only while no job runs, checked under the same
    /// lock `start` takes, so a job cannot slip in between.
    pub(crate) fn hold(&self, hold: bool) -> bool {
        let Ok(current) = self.inner.current.lock() else {
            return false;
        };
        if hold && current.is_some() {
            return false;
        }
        self.inner
            .held
            .store(hold, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Whether new jobs are held (the agent is about to restart itself).
    pub(crate) fn held(&self) -> bool {
        self.inner.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Cancels the running job if it is `job_id`.
    pub(crate) fn cancel(&self, job_id: JobId) {
        if let Ok(current) = self.inner.current.lock() {
            match current.as_ref() {
                Some(c) if c.job_id == job_id => {
                    tracing::info!(job_id = %c.job_id, "cancelling job");
                    c.cancel.cancel();
                }
                _ => {
                    tracing::debug!(%job_id, "cancel for a job that is not running")
                }
            }
        }
    }

    /// Cancels whatever runs (agent shutdown) and waits up to `limit` for
    /// it to write its end to the spool.
    pub(crate) async fn cancel_all(&self, limit: Duration) {
        // A refresh would only keep restic running past the agent.
        self.yield_refresh();
        let running = self.inner.current.lock().ok().and_then(|c| {
            c.as_ref().map(|c| {
                c.cancel.cancel();
                c.job_id
            })
        });
        if running.is_none() {
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline && self.busy() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Accepts or refuses a `command.run`; an accepted job starts at once.
    /// `own_repository` is the host's repository from the latest config.
    pub(crate) fn start(&self, run: Run, own_repository: Option<RepositoryConfig>) -> Frame {
        let reject = |reason: RejectReason, message: String| {
            tracing::warn!(job_id = %run.job_id, kind = %run.kind, %message, "refusing job");
            Frame::new(CommandResult {
                job_id: run.job_id.to_string(),
                accepted: false,
                reason: Some(reason),
                message: Some(message),
            })
        };
        let params = match JobParams::parse(run.kind, &run.params) {
            Ok(params) => params,
            Err(e) => return reject(RejectReason::BadParams, e.to_string()),
        };
        if let JobParams::Restore(restore) = &params {
            if let Err((field, problem)) = restore_ids(restore) {
                return reject(RejectReason::BadParams, format!("`{field}` {problem}"));
            }
            if let Err(refused) = self.guard().check(restore) {
                return reject(RejectReason::BadParams, refused.to_string());
            }
        }
        // A restore from another host brings that host's repository; every
        // other job uses this host's own, unless its latest was refused.
        let own = run.repository.is_none();
        let repository = match run.repository.clone() {
            Some(other) => Some(other),
            None => match self.refused() {
                Some(reason) => return reject(RejectReason::NoCredentials, reason),
                None => own_repository,
            },
        };
        let Some(repository) = repository else {
            return reject(
                RejectReason::NoCredentials,
                String::from("this agent has no repository settings yet"),
            );
        };
        if let Err(refused) = check_repository(&repository) {
            return reject(RejectReason::NoCredentials, refused);
        }
        if matches!(params, JobParams::Copy(_)) && (!own || repository.copy_to.is_none()) {
            return reject(
                RejectReason::NoCredentials,
                String::from(
                    "this host's repository has no `copy_to`: a copy job needs a second repository to copy to (set `copy_to` with the repository)",
                ),
            );
        }
        let cancel = CancellationToken::new();
        {
            let Ok(mut current) = self.inner.current.lock() else {
                return reject(RejectReason::Other, String::from("internal state poisoned"));
            };
            if let Some(running) = current.as_ref() {
                if running.job_id == run.job_id {
                    // A repeated dispatch of the job we are running.
                    return accepted(run.job_id);
                }
                return reject(
                    RejectReason::Busy,
                    format!("job {} is still running", running.job_id),
                );
            }
            if self.held() {
                return reject(
                    RejectReason::Busy,
                    String::from("the agent is restarting into its upgraded binary"),
                );
            }
            *current = Some(Current {
                job_id: run.job_id,
                cancel: cancel.clone(),
            });
        }
        self.yield_refresh();
        tracing::info!(job_id = %run.job_id, kind = %run.kind, "starting job");
        let runner = self.clone();
        let job_id = run.job_id;
        tokio::spawn(async move {
            let refresh = runner
                .execute(job_id, params, repository, own, cancel)
                .await;
            if let Ok(mut current) = runner.inner.current.lock() {
                if current.as_ref().is_some_and(|c| c.job_id == job_id) {
                    *current = None;
                }
            }
            runner.refresh_soon(refresh);
        });
        accepted(run.job_id)
    }

    /// The host's rules for restore destinations.
    fn guard(&self) -> &RestoreGuard {
        self.inner.restore_guard.get_or_init(RestoreGuard::default)
    }

    /// Records a report about `job_id`; the session sends it from the spool.
    fn report(&self, job_id: JobId, frame: impl Into<Message>) {
        self.inner.spool.append(job_id, &Frame::new(frame.into()));
    }

    /// Runs a job to its end and reports everything. Returns the
    /// repository to refresh afterwards, if the job changed it.
    async fn execute(
        &self,
        job_id: JobId,
        params: JobParams,
        repository: RepositoryConfig,
        own: bool,
        cancel: CancellationToken,
    ) -> Option<Repository> {
        let mut log = LogPump::new(job_id, self.inner.spool.clone(), self.inner.outbox.clone());
        self.report(
            job_id,
            JobStarted {
                job_id: job_id.to_string(),
                started_at: Utc::now(),
            },
        );
        let copy_to = repository.copy_to.map(|target| Repository {
            url: target.url,
            password: target.password,
            env: target.env,
        });
        let repo = Repository {
            url: repository.url,
            password: repository.password,
            env: repository.env,
        };
        let restic = match self.restic().await {
            Ok(restic) => restic,
            Err(e) => {
                let error = format!("restic is not usable on this host: {e}");
                log.line(LogStreamKind::Stderr, error.clone());
                log.flush();
                self.finish(
                    job_id,
                    &finished_without_restic(Status::Failed, Some(error)),
                    Value::Null,
                );
                return None;
            }
        };
        let bandwidth = params.bandwidth();
        let job = Job {
            runner: self,
            restic: &restic,
            repo: &repo,
            copy_to: copy_to.as_ref(),
            cancel: &cancel,
            log: &mut log,
            bandwidth: Bandwidth {
                upload_kib: bandwidth.upload_kib,
                download_kib: bandwidth.download_kib,
            },
        };
        let began = Utc::now();
        let (finished, stats) = job.run(&params).await;
        log.flush();
        // The end goes out as soon as restic is done: the snapshot a backup
        // saved is known from its own output, and the full list and the
        // statistics are refreshed after the end (see `Refresh`).
        if let JobParams::Backup(backup) = &params {
            // restic records a stdin backup under `/<stdin_filename>`.
            let paths = match backup.stdin_from {
                Some(_) => vec![format!("/{}", backup.stdin_filename())],
                None => backup.paths.clone(),
            };
            if let Some(snapshot) =
                self.saved_snapshot(restic.version(), &paths, &backup.tags, &finished, began)
            {
                self.report(
                    job_id,
                    SnapshotAdded {
                        job_id: job_id.to_string(),
                        snapshot,
                    },
                );
            }
        }
        // These jobs are the refresh: their report is part of the job.
        if matches!(params, JobParams::Snapshots | JobParams::Stats) {
            let restore_size = matches!(params, JobParams::Stats)
                .then_some(&stats)
                .filter(|_| finished.succeeded());
            match self
                .repository_report(&restic, &repo, &cancel, restore_size)
                .await
            {
                Ok(messages) => {
                    for message in messages {
                        self.report(job_id, message);
                    }
                    if own {
                        if let Ok(mut refresh) = self.inner.refresh.lock() {
                            refresh.due = None;
                        }
                    }
                }
                Err(e) => tracing::warn!("could not report the repository after the job: {e}"),
            }
        }
        self.finish(job_id, &finished, stats);
        // A backup or init that saved something changed the list or the
        // size; a forget or prune may have even when it failed later on,
        // and a check's verdict goes into the statistics.
        let refresh = match params {
            JobParams::Init | JobParams::Backup(_) => {
                matches!(finished.status, Status::Succeeded | Status::Partial)
            }
            JobParams::Forget(_) | JobParams::Prune(_) | JobParams::Check(_) => {
                finished.exit_code.is_some()
            }
            _ => false,
        };
        (own && refresh).then_some(repo)
    }

    /// The snapshot a backup saved, from its summary and its params; `None`
    /// when it saved none (failed, `--skip-if-unchanged`, a dry run) or
    /// restic printed only the short id (0.14), which the refresh resolves.
    fn saved_snapshot(
        &self,
        version: ResticVersion,
        paths: &[String],
        tags: &[String],
        finished: &Finished,
        began: DateTime<Utc>,
    ) -> Option<SnapshotInfo> {
        if !matches!(finished.status, Status::Succeeded | Status::Partial) {
            return None;
        }
        let id = finished.snapshot_id.as_deref()?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let summary = &finished.stats;
        // restic 0.18+ says when the backup began, which is the snapshot's
        // time; before, the moment restic was started is within a moment.
        let time = summary
            .get("backup_start")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(began, |t| t.with_timezone(&Utc));
        // Snapshots carry these numbers from 0.17 on; older ones none, and
        // the list shows what `restic snapshots` shows.
        let sized = version.has_snapshot_summary();
        let count = |field: &str| summary.get(field).and_then(Value::as_u64).filter(|_| sized);
        Some(SnapshotInfo {
            id: id.to_owned(),
            short_id: id[..8].to_owned(),
            time,
            hostname: self.hostname().to_owned(),
            // As restic records them: cleaned (no trailing `/`, no `//`).
            paths: paths
                .iter()
                .map(|p| {
                    std::path::Path::new(p)
                        .components()
                        .collect::<PathBuf>()
                        .display()
                        .to_string()
                })
                .collect(),
            tags: tags.to_vec(),
            size_bytes: count("total_bytes_processed"),
            file_count: count("total_files_processed"),
        })
    }

    /// Reports the job's end. When the spool could not keep all of the
    /// job's reports (its disk is full), the end says `failed` with what
    /// was not kept, whatever restic did: the server must not show a
    /// success whose record may be missing parts. restic's own result
    /// follows in the error, so nothing about the backup itself is hidden.
    fn finish(&self, job_id: JobId, finished: &Finished, stats: Value) {
        let status = match finished.status {
            Status::Succeeded => JobOutcome::Succeeded,
            Status::Partial => JobOutcome::Partial,
            Status::Cancelled => JobOutcome::Cancelled,
            Status::Failed | Status::TimedOut => JobOutcome::Failed,
        };
        let end = |shortfall: Option<&Shortfall>| {
            let (status, error) = match shortfall {
                None => (status, finished.error.clone()),
                Some(short) => (
                    JobOutcome::Failed,
                    Some(format!(
                        "{short}. What restic itself reported: {}{}",
                        outcome_word(status),
                        finished
                            .error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )),
                ),
            };
            Frame::new(JobFinished {
                job_id: job_id.to_string(),
                status,
                exit_code: finished.exit_code,
                stats: stats.clone(),
                error,
                finished_at: Utc::now(),
            })
        };
        match self.inner.spool.append_end(job_id, end) {
            None => {
                tracing::info!(%job_id, status = ?status, exit_code = ?finished.exit_code, "job finished")
            }
            Some(short) => tracing::error!(
                %job_id,
                restic_status = ?status,
                exit_code = ?finished.exit_code,
                "job finished, reported failed: {short}"
            ),
        }
    }

    /// The repository report: `snapshots.report` and `repo.stats`. Fails
    /// only when the snapshots cannot be listed; statistics that cannot be
    /// read are left out.
    async fn repository_report(
        &self,
        restic: &Restic,
        repo: &Repository,
        cancel: &CancellationToken,
        restore_size: Option<&Value>,
    ) -> Result<Vec<Message>, String> {
        // Without the lock: in a repository other hosts share, this
        // host's listing must not be the lock their prune or check fails on
        // (the server keeps jobs apart, but knows nothing of this).
        let limits = |command: &Command| self.limits(command, cancel).without_lock();
        match restic
            .snapshots(
                repo,
                Some(self.hostname()),
                &limits(&Command::Snapshots { host: None }),
            )
            .await
        {
            Ok(snapshots) => {
                let snapshots: Vec<SnapshotInfo> = snapshots
                    .into_iter()
                    .map(|s| SnapshotInfo {
                        size_bytes: s.size_bytes(),
                        file_count: s.file_count(),
                        id: s.id,
                        short_id: s.short_id,
                        time: s.time,
                        hostname: s.hostname,
                        paths: s.paths,
                        tags: s.tags,
                    })
                    .collect();
                let count = snapshots.len() as u64;
                let list = SnapshotsReport { snapshots };
                let raw = restic
                    .stats(
                        repo,
                        StatsMode::RawData,
                        &limits(&Command::Stats {
                            mode: StatsMode::RawData,
                        }),
                    )
                    .await;
                let locks = restic
                    .locks_present(repo, &limits(&Command::ListLocks))
                    .await;
                let history = self
                    .inner
                    .history
                    .lock()
                    .map(|h| h.clone())
                    .unwrap_or_default();
                let raw_size = match &raw {
                    Ok(stats) => Some(stats.total_size),
                    Err(e) => {
                        tracing::warn!("could not read repository statistics: {e}");
                        None
                    }
                };
                // The restore size walks every snapshot, so it is only known
                // after a `stats` job, which measures exactly that.
                let restore_size = restore_size
                    .and_then(|s| s.get("total_size"))
                    .and_then(Value::as_u64);
                let stats = RepoStats {
                    total_size_bytes: restore_size,
                    raw_size_bytes: raw_size,
                    unique_files: None,
                    snapshot_count: Some(count),
                    last_check_at: history.last_check_at,
                    last_check_status: history.last_check_status,
                    lock_present: locks.ok(),
                    last_prune_at: history.last_prune_at,
                    last_prune_freed_bytes: history.last_prune_freed_bytes,
                };
                Ok(vec![list.into(), stats.into()])
            }
            Err(e) => Err(format!("could not list the snapshots: {e}")),
        }
    }

    /// Remembers a successful prune for the next `repo.stats`.
    fn pruned(&self, finished: &Finished) {
        if let Ok(mut history) = self.inner.history.lock() {
            history.last_prune_at = Some(Utc::now());
            history.last_prune_freed_bytes =
                finished.stats.get("freed_bytes").and_then(Value::as_u64);
        }
    }

    pub(crate) fn limits(&self, command: &Command, cancel: &CancellationToken) -> Limits {
        Limits {
            timeout: self
                .inner
                .command_timeout
                .unwrap_or_else(|| timeout_for(command)),
            cancel: cancel.clone(),
            grace: KILL_GRACE,
            bandwidth: Bandwidth::default(),
            no_lock: false,
        }
    }
}

/// An end decided without (another) restic exit code: a no-op success, or
/// a failure before restic could start.
pub(crate) fn finished_without_restic(status: Status, error: Option<String>) -> Finished {
    Finished {
        status,
        kind: None,
        exit_code: None,
        error,
        stats: Value::Null,
        snapshot_id: None,
        output: None,
    }
}

/// `init` on a repository that exists: a success, as restic's own probe
/// (`cat config`) exited 0.
fn already_initialized() -> Finished {
    Finished {
        exit_code: Some(0),
        ..finished_without_restic(Status::Succeeded, None)
    }
}

/// The typed form of a restore's ids, or the field that is not one. The
/// params were checked already; parsing into the types makes sure.
fn restore_ids(
    restore: &RestoreParams,
) -> Result<(SnapshotId, Option<HostId>), (&'static str, String)> {
    let snapshot_id = restore
        .snapshot_id
        .parse::<SnapshotId>()
        .map_err(|e| ("params.snapshot_id", e.to_string()))?;
    let source = match &restore.source_host_id {
        Some(host) => Some(host.parse::<HostId>().map_err(|_| {
            (
                "params.source_host_id",
                format!(
                    "must be a host id (a 26-character ULID), got {}",
                    shown(host)
                ),
            )
        })?),
        None => None,
    };
    Ok((snapshot_id, source))
}

fn accepted(job_id: JobId) -> Frame {
    Frame::new(CommandResult {
        job_id: job_id.to_string(),
        accepted: true,
        reason: None,
        message: None,
    })
}

/// One job's restic commands.
pub(crate) struct Job<'a> {
    pub(crate) runner: &'a JobRunner,
    pub(crate) restic: &'a Restic,
    repo: &'a Repository,
    /// The repository's `copy_to`, for a copy job.
    copy_to: Option<&'a Repository>,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) log: &'a mut LogPump,
    /// The job's `limit_*_kib`, for every restic command it runs.
    bandwidth: Bandwidth,
}

impl Job<'_> {
    /// The limits of one of this job's restic commands: the runner's time
    /// limit, stopped by `cancel`, capped at the job's bandwidth.
    pub(crate) fn limits(&self, command: &Command, cancel: &CancellationToken) -> Limits {
        self.runner
            .limits(command, cancel)
            .with_bandwidth(self.bandwidth)
    }

    /// Runs the job's commands; returns the deciding command's end and the
    /// job's statistics.
    async fn run(mut self, params: &JobParams) -> (Finished, Value) {
        match params {
            JobParams::Init => self.init().await,
            JobParams::Backup(backup) => self.backup(backup).await,
            JobParams::Forget(forget) => {
                self.clear_stale_locks().await;
                self.forget(forget).await
            }
            JobParams::Prune(_) => {
                self.clear_stale_locks().await;
                let finished = self.command(Command::Prune).await;
                if finished.succeeded() {
                    self.runner.pruned(&finished);
                }
                let stats = finished.stats.clone();
                (finished, stats)
            }
            JobParams::Check(check) => self.check(check).await,
            JobParams::Unlock => self.simple(Command::Unlock).await,
            JobParams::Snapshots => self.simple(Command::Snapshots { host: None }).await,
            JobParams::Stats => {
                self.simple(Command::Stats {
                    mode: StatsMode::RestoreSize,
                })
                .await
            }
            JobParams::Restore(restore) => self.restore(restore).await,
            JobParams::Copy(copy) => self.copy(copy).await,
            JobParams::Drill(drill) => {
                let job_id = self.log.job_id;
                self.drill(drill, job_id).await
            }
        }
    }

    /// `check`, reading the subset the params name; a rotating check
    /// reads the next `n/cycle` of its cycle (the server's pick, else the
    /// agent's cursor), moves the cursor by how it ended, and says in its
    /// statistics which subset it read.
    async fn check(&mut self, check: &CheckParams) -> (Finished, Value) {
        let rotation = check.rotation().map(|cycle| {
            let subset = check
                .subset
                .unwrap_or_else(|| self.runner.cursors().next(&self.repo.url, cycle));
            (cycle, subset)
        });
        let read_data_subset = match rotation {
            Some((cycle, subset)) => {
                self.log.line(
                    LogStreamKind::Stdout,
                    format!(
                        "rotating check: reading subset {subset}/{cycle} of the pack data ({}); {cycle} runs read all of it",
                        if check.subset.is_some() {
                            "chosen by the server"
                        } else {
                            "this agent's next"
                        }
                    ),
                );
                Some(format!("{subset}/{cycle}"))
            }
            None => check.read_data_subset.clone(),
        };
        self.clear_stale_locks().await;
        let finished = self
            .command(Command::Check {
                read_data_subset: read_data_subset.clone(),
            })
            .await;
        if matches!(finished.status, Status::Succeeded | Status::Failed) {
            if let Ok(mut h) = self.runner.inner.history.lock() {
                h.last_check_at = Some(Utc::now());
                h.last_check_status = Some(String::from(finished.status.as_str()));
            }
        }
        let mut stats = finished.stats.clone();
        if let (Some((cycle, subset)), Some(read)) = (rotation, read_data_subset) {
            // A cancelled run proves nothing either way: the cursor stays.
            if finished.status != Status::Cancelled {
                let passed = finished.succeeded();
                self.runner
                    .cursors()
                    .ran(&self.repo.url, cycle, subset, passed);
            }
            if !stats.is_object() {
                stats = json!({});
            }
            stats["subset"] = json!(subset);
            stats["cycle"] = json!(cycle);
            stats["read_data_subset"] = json!(read);
        }
        (finished, stats)
    }

    /// The restic part of a backup of `paths` (hooks around it are
    /// [`Job::backup`]'s). `skip_if_unchanged` needs restic 0.17: with an
    /// older one it is left out and the log says so, as the backup itself
    /// still does what was asked otherwise.
    pub(crate) async fn backup_paths(&mut self, backup: &BackupParams) -> Finished {
        let mut skip_if_unchanged = backup.skip_if_unchanged;
        if skip_if_unchanged && !self.restic.version().supports_skip_if_unchanged() {
            skip_if_unchanged = false;
            self.log.line(
                LogStreamKind::Stdout,
                format!(
                    "skip_if_unchanged is ignored: restic {} has no --skip-if-unchanged (0.17 or newer has), so this backup makes a snapshot even if nothing changed",
                    self.restic.version()
                ),
            );
        }
        let finished = self
            .command(Command::Backup {
                paths: backup.paths.clone(),
                excludes: backup.excludes.clone(),
                tags: backup.tags.clone(),
                // Named explicitly, so the backup records the same host
                // name its `forget` keeps to (see `use_hostname`).
                host: Some(self.runner.hostname().to_owned()),
                options: BackupOptions {
                    iexcludes: backup.iexcludes.clone(),
                    exclude_caches: backup.exclude_caches,
                    exclude_if_present: backup.exclude_if_present.clone(),
                    exclude_larger_than: backup.exclude_larger_than.clone(),
                    one_file_system: backup.one_file_system,
                    skip_if_unchanged,
                },
            })
            .await;
        if skip_if_unchanged && finished.succeeded() && finished.snapshot_id.is_none() {
            self.log.line(
                LogStreamKind::Stdout,
                String::from(
                    "nothing changed since the last snapshot: no new snapshot was made (skip_if_unchanged)",
                ),
            );
        }
        finished
    }

    /// A restore, after checking every path it would write: `restic ls
    /// --recursive` of the snapshot's parts to restore (exactly the nodes
    /// `restore --include` selects) is streamed through the host's guard,
    /// and restic's restore runs only if every destination passes. A
    /// listing that fails or is cut short refuses the restore (fail closed).
    async fn restore(&mut self, restore: &RestoreParams) -> (Finished, Value) {
        let guard = self.runner.guard().clone();
        let mut check = guard.writes(&restore.target);
        let listing = Command::LsTree {
            snapshot_id: restore.snapshot_id.clone(),
            dirs: restore
                .include
                .iter()
                .map(|path| crate::restore_guard::snapshot_dir(path))
                .collect(),
        };
        self.log.line(
            LogStreamKind::Stdout,
            String::from(
                "checking every path the restore would write against this host's restore guard",
            ),
        );
        let mut refused: Option<RestoreRefused> = None;
        let mut checked: u64 = 0;
        let result = self
            .stream_tree(listing, |node| {
                checked += 1;
                match check.node(&node.path, node.node_type) {
                    Ok(()) => true,
                    // No need to list further: stop restic.
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                }
            })
            .await;
        if let Some(why) = refused {
            let error = why.to_string();
            self.log.line(LogStreamKind::Stderr, error.clone());
            return (
                finished_without_restic(Status::Failed, Some(error)),
                Value::Null,
            );
        }
        let listed = match result {
            Ok(finished) if finished.succeeded() => Ok(()),
            Ok(finished) if self.cancel.is_cancelled() => Err(finished),
            Ok(finished) => Err(Finished {
                error: Some(format!(
                    "could not list what the restore would write, so it was not started: {}",
                    finished.error.as_deref().unwrap_or("restic ls failed")
                )),
                ..finished
            }),
            Err(e) => Err(finished_without_restic(
                Status::Failed,
                Some(format!(
                    "could not run restic to list what the restore would write: {e}"
                )),
            )),
        };
        if let Err(finished) = listed {
            if let Some(error) = &finished.error {
                self.log.line(LogStreamKind::Stderr, error.clone());
            }
            return (finished, Value::Null);
        }
        self.log.line(
            LogStreamKind::Stdout,
            format!("the restore guard let all {checked} paths through; restoring"),
        );
        self.simple(Command::Restore {
            snapshot_id: restore.snapshot_id.clone(),
            include: restore.include.clone(),
            target: restore.target.clone(),
            verify: false,
        })
        .await
    }

    /// Streams `listing` (a [`Command::LsTree`]) node by node through
    /// `on_node`, which returns `false` to stop restic early; restic's
    /// errors go to the job's log. A snapshot of millions of nodes is never
    /// held in memory.
    pub(crate) async fn stream_tree(
        &mut self,
        listing: Command,
        mut on_node: impl FnMut(rm_restic::Node) -> bool,
    ) -> Result<Finished, ResticError> {
        let stop = self.cancel.child_token();
        let limits = self.limits(&listing, &stop);
        let (tx, mut rx) = mpsc::channel::<Event>(1024);
        let (restic, repo) = (self.restic, self.repo);
        let run = async move {
            let result = restic.run(repo, &listing, &limits, &tx).await;
            drop(tx);
            result
        };
        let log = &mut *self.log;
        let stop = &stop;
        let watch = async move {
            let mut wanted = true;
            while let Some(event) = rx.recv().await {
                match event {
                    // Nodes still queued after a stop are drained unseen.
                    Event::Node(node) => {
                        wanted = wanted && on_node(node);
                        if !wanted {
                            stop.cancel();
                        }
                    }
                    Event::Line {
                        stream: Stream::Stderr,
                        text,
                    } => log.line(LogStreamKind::Stderr, text),
                    _ => {}
                }
            }
        };
        let (result, ()) = tokio::join!(run, watch);
        result
    }

    /// Before a command that locks the repository exclusively: a job cut
    /// short (the agent killed, the machine rebooted) leaves its lock
    /// behind, and that lock would make this command fail. `restic unlock`
    /// without `--remove-all` removes only stale locks — of a process on
    /// this host that is gone, or not refreshed for 30 minutes — so a
    /// backup running elsewhere keeps its lock.
    async fn clear_stale_locks(&mut self) {
        self.log.line(
            LogStreamKind::Stdout,
            String::from(
                "removing stale locks first (`restic unlock` keeps the locks of live processes)",
            ),
        );
        let unlocked = self.command(Command::Unlock).await;
        if !unlocked.succeeded() {
            self.log.line(
                LogStreamKind::Stderr,
                format!(
                    "could not remove stale locks ({}); going on",
                    unlocked.error.as_deref().unwrap_or("restic unlock failed")
                ),
            );
        }
    }

    async fn simple(&mut self, command: Command) -> (Finished, Value) {
        let finished = self.command(command).await;
        let stats = finished.stats.clone();
        (finished, stats)
    }

    /// `init`, unless the repository exists already (then a no-op success).
    async fn init(&mut self) -> (Finished, Value) {
        let limits = self.runner.limits(&Command::CatConfig, self.cancel);
        match self.restic.repository_exists(self.repo, &limits).await {
            Ok(true) => {
                self.log.line(
                    LogStreamKind::Stdout,
                    String::from("the repository already exists; nothing to initialise"),
                );
                (already_initialized(), json!({"already_initialized": true}))
            }
            Ok(false) => {
                let finished = self.command(Command::Init).await;
                if finished.kind == Some(FailureKind::AlreadyInitialized) {
                    return (already_initialized(), json!({"already_initialized": true}));
                }
                (finished, json!({"already_initialized": false}))
            }
            // Wrong password, unreachable backend, no permission: running
            // `init` would not help and could mislead ("already exists").
            Err(e) => {
                let error = e.to_string();
                self.log.line(LogStreamKind::Stderr, error.clone());
                (
                    finished_without_restic(Status::Failed, Some(error)),
                    Value::Null,
                )
            }
        }
    }

    /// `forget`, then `prune` as a second command when asked.
    async fn forget(&mut self, forget: &ForgetParams) -> (Finished, Value) {
        let policy = RetentionPolicy {
            keep_last: forget.keep_last,
            keep_hourly: forget.keep_hourly,
            keep_daily: forget.keep_daily,
            keep_weekly: forget.keep_weekly,
            keep_monthly: forget.keep_monthly,
            keep_yearly: forget.keep_yearly,
            keep_within: forget.keep_within.clone(),
        };
        let forgotten = self
            .command(Command::Forget {
                policy,
                host: Some(self.runner.hostname().to_owned()),
            })
            .await;
        let mut stats = json!({ "forget": forgotten.stats.clone() });
        if !forget.prune || !forgotten.succeeded() {
            return (forgotten, stats);
        }
        let pruned = self.command(Command::Prune).await;
        stats["prune"] = pruned.stats.clone();
        if pruned.succeeded() {
            self.runner.pruned(&pruned);
        }
        (pruned, stats)
    }

    /// Runs one restic command, streaming its output into the job's log and
    /// progress.
    pub(crate) async fn command(&mut self, command: Command) -> Finished {
        let limits = self.limits(&command, self.cancel);
        let (finished, ()) = self
            .command_beside(command, limits, None, None, |_, _| async {})
            .await;
        finished
    }

    /// [`Job::command`] with restic's stdin fed from `input` (see
    /// [`Restic::run_with_input`]) and `beside` running alongside restic:
    /// it gets a sender into the same log and a token cancelled once restic
    /// has exited. `relabel` replaces a prefix of restic's stderr lines.
    pub(crate) async fn command_beside<T, Fut>(
        &mut self,
        command: Command,
        limits: Limits,
        input: Option<std::os::fd::OwnedFd>,
        relabel: Option<(String, String)>,
        beside: impl FnOnce(mpsc::Sender<Event>, CancellationToken) -> Fut,
    ) -> (Finished, T)
    where
        Fut: std::future::Future<Output = T>,
    {
        let (tx, rx) = mpsc::channel::<Event>(256);
        let restic = self.restic;
        let repo = self.repo;
        let exited = CancellationToken::new();
        let side = beside(tx.clone(), exited.clone());
        let run = async {
            let result = match input {
                Some(input) => {
                    restic
                        .run_with_input(repo, &command, &limits, &tx, input)
                        .await
                }
                None => restic.run(repo, &command, &limits, &tx).await,
            };
            exited.cancel();
            drop(tx);
            result
        };
        let (result, value, ()) = tokio::join!(run, side, pump(self.log, rx, relabel));
        let finished = match result {
            Ok(finished) => finished,
            Err(e) => {
                self.log
                    .line(LogStreamKind::Stderr, format!("could not run restic: {e}"));
                finished_without_restic(Status::Failed, Some(format!("could not run restic: {e}")))
            }
        };
        (finished, value)
    }
}

/// Moves events into the job's log (lines) and live progress until every
/// sender is gone. `relabel` (`from`, `to`) replaces a prefix of stderr
/// lines.
pub(crate) async fn pump(
    log: &mut LogPump,
    mut rx: mpsc::Receiver<Event>,
    relabel: Option<(String, String)>,
) {
    let mut progress = ProgressThrottle::default();
    let mut flush = tokio::time::interval(LOG_BATCH_WAIT);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(Event::Line { stream, text }) => {
                    let (stream, text) = match stream {
                        Stream::Stdout => (LogStreamKind::Stdout, text),
                        Stream::Stderr => {
                            let text = match &relabel {
                                Some((from, to)) => match text.strip_prefix(from.as_str()) {
                                    Some(rest) => format!("{to}{rest}"),
                                    None => text,
                                },
                                None => text,
                            };
                            (LogStreamKind::Stderr, text)
                        }
                    };
                    log.line(stream, text);
                }
                Some(Event::Progress(p)) => {
                    if progress.due() {
                        log.progress(JobProgress {
                            job_id: log.job_id.to_string(),
                            percent: p.percent,
                            files_done: p.files_done,
                            files_total: p.files_total,
                            bytes_done: p.bytes_done,
                            bytes_total: p.bytes_total,
                            eta_seconds: p.eta_seconds,
                            current_files: p.current_files,
                        });
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = flush.tick() => log.flush(),
        }
    }
    log.flush();
}

/// How a job's outcome reads in a sentence.
fn outcome_word(outcome: JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Succeeded => "succeeded",
        JobOutcome::Partial => "partial",
        JobOutcome::Cancelled => "cancelled",
        JobOutcome::Failed => "failed",
    }
}

/// Lets through at most one progress sample per [`PROGRESS_EVERY`].
#[derive(Default)]
struct ProgressThrottle {
    last: Option<tokio::time::Instant>,
}

impl ProgressThrottle {
    fn due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < PROGRESS_EVERY => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Numbers a job's lines densely from 1 and spools them in batches.
pub(crate) struct LogPump {
    pub(crate) job_id: JobId,
    spool: Spool,
    outbox: mpsc::Sender<Frame>,
    next_seq: u64,
    pending: Vec<LogLine>,
}

impl LogPump {
    fn new(job_id: JobId, spool: Spool, outbox: mpsc::Sender<Frame>) -> LogPump {
        LogPump {
            job_id,
            spool,
            outbox,
            next_seq: 1,
            pending: Vec::new(),
        }
    }

    pub(crate) fn line(&mut self, stream: LogStreamKind, text: String) {
        self.pending.push(LogLine {
            seq: self.next_seq,
            ts: Utc::now(),
            stream,
            text,
        });
        self.next_seq += 1;
        if self.pending.len() >= LOG_BATCH_LINES {
            self.flush();
        }
    }

    /// Progress is live-only: dropped rather than waited for when the
    /// outbox is full.
    fn progress(&self, progress: JobProgress) {
        let _ = self.outbox.try_send(Frame::new(progress));
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending);
        let frame = Frame::new(LogStream {
            job_id: self.job_id.to_string(),
            lines,
        });
        self.spool.append(self.job_id, &frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_protocol::JobKind;

    const JOB: &str = "01J0000000000000000000000J";
    const A: &str = "01J0000000000000000000000A";
    const B: &str = "01J0000000000000000000000B";

    fn run(job_id: &str) -> Run {
        Run {
            job_id: job_id.parse().unwrap(),
            kind: JobKind::Snapshots,
            params: Value::Null,
            repository: Some(RepositoryConfig {
                url: "/nonexistent/repo".into(),
                password: "pw".into(),
                env: Default::default(),
                copy_to: None,
            }),
        }
    }

    fn runner(dir: &tempfile::TempDir, restic: &str) -> (JobRunner, mpsc::Receiver<Frame>) {
        let (tx, outbox) = mpsc::channel(OUTBOX);
        let spool = Spool::open(dir.path()).unwrap();
        let runner = JobRunner::new(restic.into(), dir.path().join("cache"), None, tx, spool);
        (runner, outbox)
    }

    /// A "restic" that takes a while to answer even `version`.
    fn slow_restic(dir: &tempfile::TempDir) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("slow-restic");
        std::fs::write(&path, "#!/bin/sh\nsleep 5\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    async fn spooled_end(spool: &Spool) -> JobFinished {
        let mut reader = spool.reader();
        for _ in 0..200 {
            for frame in reader.next_frames().await {
                if let Message::JobFinished(end) = frame.message {
                    return end;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no job.finished in the spool");
    }

    #[tokio::test]
    async fn restic_version_runs_once_per_binary_until_the_binary_changes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let bin = dir.path().join("counting-restic");
        let script = |version: &str| {
            format!(
                "#!/bin/sh\necho x >> {}\necho 'restic {version} compiled with go1.22 on linux/amd64'\n",
                calls.display()
            )
        };
        std::fs::write(&bin, script("0.17.0")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (runner, _outbox) = runner(&dir, &bin.display().to_string());
        let count = || std::fs::read_to_string(&calls).unwrap().lines().count();
        assert_eq!(
            runner.restic().await.unwrap().version(),
            ResticVersion::new(0, 17, 0)
        );
        runner.restic().await.unwrap();
        assert_eq!(count(), 1, "detected once");
        // An upgrade (another file: another size) is detected again.
        std::fs::write(&bin, script("0.18.10")).unwrap();
        assert_eq!(
            runner.restic().await.unwrap().version(),
            ResticVersion::new(0, 18, 10)
        );
        assert_eq!(count(), 2);
    }

    #[tokio::test]
    async fn a_jobs_reports_stay_spooled_until_the_server_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let (runner, _outbox) = runner(&dir, "/nonexistent/restic");
        let accepted = runner.start(run(JOB), None);
        assert!(matches!(accepted.message, Message::CommandResult(ref r) if r.accepted));

        // restic is missing, so the job ends at once with a clear error…
        let end = spooled_end(runner.spool()).await;
        assert_eq!(end.status, JobOutcome::Failed);
        assert!(end
            .error
            .as_deref()
            .unwrap_or("")
            .contains("restic is not usable"));
        // …and stays in the spool (so in `hello.spooled_jobs`) until the
        // server acknowledges all of it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(runner.running().is_empty());
        assert_eq!(runner.spool().jobs(), vec![JOB.parse::<JobId>().unwrap()]);
        runner.spool().ack(
            JOB.parse().unwrap(),
            &rm_protocol::JobAck {
                job_id: JOB.into(),
                done: true,
                ..Default::default()
            },
        );
        assert!(runner.spool().jobs().is_empty());
    }

    #[tokio::test]
    async fn a_job_whose_reports_cannot_be_spooled_ends_failed_saying_why() {
        let disk = match rm_testkit::SmallDisk::mount(1) {
            Ok(disk) => disk,
            Err(e) => {
                eprintln!("skipping the full-disk test: {e}");
                return;
            }
        };
        let state = disk.path().join("state");
        let (tx, _outbox) = mpsc::channel(OUTBOX);
        let spool = Spool::open(&state).unwrap();
        let runner = JobRunner::new(
            "/nonexistent/restic".into(),
            state.join("cache"),
            None,
            tx,
            spool,
        );
        assert!(disk.fill().unwrap() > 0);
        let accepted = runner.start(run(A), None);
        assert!(matches!(accepted.message, Message::CommandResult(ref r) if r.accepted));
        let end = spooled_end(runner.spool()).await;
        assert_eq!(end.status, JobOutcome::Failed);
        let error = end.error.unwrap_or_default();
        let expected = format!(
            "the agent could not keep this job's reports: {} is full (No space left on device); \
             1 log line, the job's start, this end could not be written to its spool",
            state.display()
        );
        assert!(error.starts_with(&expected), "{error}");
        assert!(
            error.contains("What restic itself reported: failed (restic is not usable"),
            "{error}"
        );

        // Space back: the next job runs and reports normally, no restart.
        disk.free().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let accepted = runner.start(run(B), None);
        assert!(matches!(accepted.message, Message::CommandResult(ref r) if r.accepted));
        runner.spool().ack(
            A.parse().unwrap(),
            &rm_protocol::JobAck {
                job_id: A.into(),
                done: true,
                ..Default::default()
            },
        );
        let end = spooled_end(runner.spool()).await;
        assert_eq!(end.job_id, B);
        let error = end.error.unwrap_or_default();
        assert!(error.starts_with("restic is not usable"), "{error}");
        assert!(state.join(format!("spool/{B}.jsonl")).exists());
    }

    #[tokio::test]
    async fn a_second_job_is_refused_as_busy_and_a_repeat_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        // A restic that is slow to answer keeps the first job going.
        let restic = slow_restic(&dir);
        let (runner, _outbox) = runner(&dir, &restic);
        assert!(
            matches!(runner.start(run(A), None).message, Message::CommandResult(ref r) if r.accepted)
        );
        let again = runner.start(run(A), None);
        assert!(matches!(again.message, Message::CommandResult(ref r) if r.accepted));
        let other = runner.start(run(B), None);
        match other.message {
            Message::CommandResult(r) => {
                assert!(!r.accepted);
                assert_eq!(r.reason, Some(RejectReason::Busy));
            }
            other => panic!("{other:?}"),
        }
    }
}
