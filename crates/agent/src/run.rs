//! `restic-manager agent run`: stay connected to the server until told to
//! stop, reconnecting with jittered backoff, and backing right off when the
//! server says this agent's token is no longer valid.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rm_core::schedule::SystemClock;
use rm_protocol::{close_code, Hello, CURRENT_PROTOCOL_VERSION, DEFAULT_HEARTBEAT_SECS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{restart_delay, Backoff, RESTART_SPREAD};
use crate::error::AgentError;
use crate::handler::{heartbeat_interval, Handler};
use crate::hooks::Hooks;
use crate::jobs::{JobRunner, OUTBOX};
use crate::restore_guard::RestoreGuard;
use crate::rotation;
use crate::scheduler::Scheduler;
use crate::server_url::ServerUrl;
use crate::session::{self, ConnectError, SessionEnd};
use crate::spool::Spool;
use crate::state::StateDir;
use crate::tls::{Trust, TrustOptions};
use crate::upgrade::{reported_version, Upgrader};

/// How long to wait before trying again with a token the server rejected.
/// The token will not start working by itself, so hammering the server
/// helps nobody; the odd retry covers a server restored from backup.
pub const REVOKED_RETRY: Duration = Duration::from_secs(10 * 60);

/// A session that said hello and lasted this long counts as healthy, so the
/// next reconnect starts from the shortest delay again.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// How long shutdown waits for a running job to stop.
const JOB_STOP_GRACE: Duration = Duration::from_secs(15);

/// What `restic-manager agent run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The state directory written by `enroll`.
    pub state_dir: PathBuf,
    /// The restic binary (a path, or a name looked up on `PATH`).
    pub restic_bin: PathBuf,
    /// Wait before retrying after the server rejected the agent token
    /// ([`REVOKED_RETRY`] unless a test shortens it).
    pub revoked_retry: Duration,
    /// Limit for every restic command instead of the per-kind defaults
    /// (hours for backups, minutes for `init`).
    pub command_timeout: Option<Duration>,
    /// A schedule fire missed while the agent was down is run once at
    /// start-up if it was missed by less than this; `None` means the
    /// schedule's own period.
    pub catch_up_window: Option<Duration>,
    /// After the server closes with "going away" (it is restarting), the
    /// reconnect waits a uniformly random delay between 1 s and this
    /// ([`RESTART_SPREAD`] unless a test shortens it).
    pub restart_spread: Duration,
    /// Trust flags given to `run`, over those saved at enrolment.
    pub trust: TrustOptions,
    /// How long a `before`, `after` or `on_failure` hook may run
    /// ([`crate::DEFAULT_HOOK_TIMEOUT`] unless `--hook-timeout` says).
    pub hook_timeout: Duration,
    /// Let restores write onto `/` and into system folders (see
    /// `restore_guard`); `agent.json`'s `allow_restore_to_system_paths`
    /// allows it too. The state directory stays off limits either way.
    pub allow_restore_to_system_paths: bool,
    /// The host name the agent reports and restic records in snapshots
    /// (and `forget` keeps to); the machine's when `None`. Hosts that share
    /// a repository must have distinct ones.
    pub hostname: Option<String>,
    /// Take `agent.upgrade` offers (download, verify, replace this binary
    /// and re-execute); `false` refuses them (`--no-self-upgrade`).
    pub self_upgrade: bool,
    /// Where restore drills make their scratch folders
    /// ([`crate::DEFAULT_DRILL_DIR`] unless `--drill-dir` says); never
    /// inside the state directory.
    pub drill_dir: PathBuf,
}

impl RunOptions {
    /// Options with the default retry policy.
    pub fn new(state_dir: impl Into<PathBuf>, restic_bin: impl Into<PathBuf>) -> Self {
        RunOptions {
            state_dir: state_dir.into(),
            restic_bin: restic_bin.into(),
            revoked_retry: REVOKED_RETRY,
            command_timeout: None,
            catch_up_window: None,
            restart_spread: RESTART_SPREAD,
            trust: TrustOptions::default(),
            hook_timeout: crate::DEFAULT_HOOK_TIMEOUT,
            allow_restore_to_system_paths: false,
            hostname: None,
            self_upgrade: true,
            drill_dir: PathBuf::from(crate::DEFAULT_DRILL_DIR),
        }
    }
}

/// Runs the agent until `shutdown` fires. Returns an error only for
/// problems retrying cannot fix (not enrolled, unusable state file or URL);
/// everything on the network side is retried.
pub async fn run(mut opts: RunOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    let dir = StateDir::new(&opts.state_dir);
    let state = dir.load_agent()?;
    dir.warn_if_exposed();
    let server = ServerUrl::parse(&state.server_url)?;
    let (trust, _) = Trust::new(&server, &state.tls, &opts.trust)?;
    let ws_url = server.ws_url();
    let mut auth = session::bearer(&state.agent_token)?;
    tracing::info!(host_id = %state.host_id, server = %server, "agent starting");

    // Before anything runs: reports of jobs from before a restart are
    // picked up, and a job the agent died running is marked interrupted.
    // restic is found once, on the agent's own PATH, and run by absolute
    // path: no variable the server sends can choose another program. Not
    // installed yet, it is looked up (on the same PATH) at each use.
    let restic_bin = match rm_restic::resolve_bin(&opts.restic_bin) {
        Ok(bin) => {
            tracing::info!(restic = %bin.display(), "using restic");
            bin
        }
        Err(e) => {
            tracing::warn!("{e}; looking again at each job");
            opts.restic_bin.clone()
        }
    };
    opts.restic_bin = restic_bin.clone();
    let spool = Spool::open(&opts.state_dir)?;
    let (outbox_tx, mut outbox) = tokio::sync::mpsc::channel(OUTBOX);
    let outbox_tx_for_scheduler = outbox_tx.clone();
    let upgrade_outbox = outbox_tx.clone();
    let runner = JobRunner::new(
        restic_bin,
        opts.state_dir.join("cache"),
        opts.command_timeout,
        outbox_tx,
        spool,
    );
    let allow_system = opts.allow_restore_to_system_paths || state.allow_restore_to_system_paths;
    if allow_system {
        tracing::warn!("restores may write onto / and into system folders on this host");
    }
    runner.guard_restores(RestoreGuard::new(&opts.state_dir, allow_system));
    runner.keep_cursors_in(dir.clone());
    if let Some(hostname) = &opts.hostname {
        tracing::info!(%hostname, "recording snapshots under this host name");
        runner.use_hostname(hostname.clone());
    }
    // Before any job starts: scratch copies of drills an earlier run was
    // killed in the middle of go now.
    let swept = crate::jobs::sweep_drills(&opts.drill_dir);
    if swept > 0 {
        tracing::info!(swept, dir = %opts.drill_dir.display(), "removed scratch folders of interrupted drills");
    }
    runner.use_drill_dir(opts.drill_dir.clone(), opts.state_dir.clone());
    let hooks = Hooks::new(&opts.state_dir, opts.hook_timeout);
    hooks.create_dir();
    runner.use_hooks(hooks);
    let (schedules_tx, schedules_rx) =
        tokio::sync::watch::channel(dir.load_schedules().ok().flatten().unwrap_or_default());
    let connected = Arc::new(AtomicBool::new(false));
    let scheduler = Scheduler::new(
        Arc::new(SystemClock),
        dir.clone(),
        runner.clone(),
        outbox_tx_for_scheduler,
        connected.clone(),
        opts.catch_up_window
            .and_then(|w| chrono::Duration::from_std(w).ok()),
    );
    tokio::spawn(scheduler.run(schedules_rx, shutdown.clone()));
    let mut repository = cached_repository(&dir);
    if let Some(Err(refused)) = repository.as_ref().map(crate::jobs::check_repository) {
        // Cached by an agent from before these rules: not used.
        tracing::error!("the cached repository settings are not used: {refused}");
        runner.refuse_repository(Some(refused));
        repository = None;
    }
    let mut handler = Handler::new(
        dir.clone(),
        cached_heartbeat(&dir),
        repository,
        runner.clone(),
        schedules_tx,
    );
    let upgrader = Upgrader::new(
        server.clone(),
        trust.clone(),
        &opts.state_dir,
        runner.clone(),
        upgrade_outbox,
    );
    // Before the first connection: a marker from an upgrade says whether
    // this binary is on trial or an upgrade failed.
    upgrader.resume_after_restart();
    if !opts.self_upgrade {
        tracing::info!("self-upgrades are off: offers of a newer agent are refused");
        upgrader.refuse_offers();
    }
    handler.use_upgrader(upgrader.clone());
    handler.use_downloader(crate::download::Downloader::new(
        server.clone(),
        &trust,
        dir.clone(),
        auth.clone(),
        runner.clone(),
    ));
    let mut backoff = Backoff::default();

    loop {
        // A rotated token is in agent.json before the server forgets the old.
        auth = rotation::current_bearer(&dir, &auth);
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => {
                // Offline: stop a running job; its end is spooled and
                // reaches the server after the next start.
                runner.cancel_all(JOB_STOP_GRACE).await;
                return Ok(());
            }
            attempt = session::connect(&ws_url, &auth, &trust) => attempt,
        };
        let wait = match attempt {
            Ok(ws) => {
                tracing::info!("connected to {ws_url}");
                // Detected per connection, so a restic installed or upgraded
                // while the agent runs is reported without a restart.
                let mut hello = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    hello = build_hello(&opts) => hello,
                };
                hello.running_jobs = runner.running().iter().map(ToString::to_string).collect();
                hello.spooled_jobs = runner
                    .spool()
                    .jobs()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let started = Instant::now();
                // While connected, schedule fires go to the server; while
                // not, the scheduler runs the jobs here.
                connected.store(true, Ordering::SeqCst);
                let report =
                    session::run_session(ws, &hello, &mut handler, &mut outbox, &shutdown).await;
                connected.store(false, Ordering::SeqCst);
                if report.said_hello && started.elapsed() >= HEALTHY_SESSION {
                    backoff.reset();
                }
                match report.end {
                    SessionEnd::Shutdown => {
                        tracing::info!("disconnected: agent shutting down");
                        return Ok(());
                    }
                    SessionEnd::Upgrade => {
                        // Returns only when the restart failed; the failure
                        // is queued for the next connection.
                        upgrader.install();
                        Duration::ZERO
                    }
                    SessionEnd::Revoked => {
                        log_rejected_token(&server, "closed the connection", opts.revoked_retry);
                        opts.revoked_retry
                    }
                    SessionEnd::Replaced => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            "disconnected: another agent with this host's token connected and replaced this one \
                             (is this state directory copied to another machine?), reconnecting in {}",
                            seconds(delay)
                        );
                        delay
                    }
                    SessionEnd::Closed { code, reason } => {
                        // A server going away is usually restarting, and
                        // said so to every agent at once: spread the fleet's
                        // reconnects out instead of all knocking at 1 s.
                        let delay = if code == close_code::GOING_AWAY {
                            restart_delay(opts.restart_spread)
                        } else {
                            backoff.next_delay()
                        };
                        tracing::info!(
                            "disconnected: {}, reconnecting in {}",
                            describe_close(code, &reason),
                            seconds(delay)
                        );
                        delay
                    }
                    SessionEnd::Lost(reason) => {
                        let delay = backoff.next_delay();
                        tracing::info!(
                            "disconnected: {reason}, reconnecting in {}",
                            seconds(delay)
                        );
                        delay
                    }
                }
            }
            Err(ConnectError::Unauthorized) => {
                log_rejected_token(&server, "answered 401 Unauthorized", opts.revoked_retry);
                opts.revoked_retry
            }
            Err(ConnectError::Failed(reason)) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    "could not connect to {ws_url}: {reason}; retrying in {}",
                    seconds(delay)
                );
                delay
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Offline: stop a running job; its end is spooled and
                // reaches the server after the next start.
                runner.cancel_all(JOB_STOP_GRACE).await;
                return Ok(());
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The handshake, with restic's version as found now. A missing
/// or broken restic does not stop the agent: the server shows the reason
/// and the operator can fix the host.
async fn build_hello(opts: &RunOptions) -> Hello {
    let bin = &opts.restic_bin;
    let (restic_version, restic_error) = match rm_restic::detect_version(bin).await {
        Ok(version) => {
            tracing::info!(restic = %bin.display(), "found restic {version}");
            (Some(version.to_string()), None)
        }
        Err(e) => {
            tracing::warn!(
                "restic is not usable, so jobs cannot run on this host until it is fixed: {e}"
            );
            (None, Some(e.to_string()))
        }
    };
    // Listed per connection, so hooks added or fixed while the agent runs
    // show up at the next reconnect.
    let (hooks, hooks_refused) = Hooks::new(&opts.state_dir, opts.hook_timeout).list();
    for refused in &hooks_refused {
        tracing::warn!("hook `{}` is refused: {}", refused.name, refused.reason);
    }
    Hello {
        protocol_version: CURRENT_PROTOCOL_VERSION,
        agent_version: reported_version(),
        restic_version,
        restic_error,
        hostname: opts.hostname.clone().unwrap_or_else(crate::hostname),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        running_jobs: Vec::new(),
        spooled_jobs: Vec::new(),
        hooks,
        hooks_refused,
        platform: Some(rm_protocol::upgrade::own_platform()),
    }
}

/// The heartbeat interval from the last configuration the server sent, so
/// a restarted agent keeps the server's setting before it reconnects.
fn cached_heartbeat(dir: &StateDir) -> Duration {
    match dir.load_config() {
        Ok(Some(config)) => heartbeat_interval(&config.settings),
        Ok(None) => Duration::from_secs(u64::from(DEFAULT_HEARTBEAT_SECS)),
        Err(e) => {
            tracing::warn!("ignoring the cached configuration until the server resends it: {e}");
            Duration::from_secs(u64::from(DEFAULT_HEARTBEAT_SECS))
        }
    }
}

/// The repository from the last configuration the server sent, so jobs
/// can run before the server resends it.
fn cached_repository(dir: &StateDir) -> Option<rm_protocol::RepositoryConfig> {
    dir.load_config().ok().flatten().and_then(|c| c.repository)
}

fn log_rejected_token(server: &ServerUrl, how: &str, retry: Duration) {
    tracing::error!(
        "the server {how}: it rejected this agent's token, so the host was deleted or its token revoked. \
         Re-enrol this host with `restic-manager agent enroll --server {server} --token <new enrolment token> --force`. \
         Trying again in {}",
        seconds(retry)
    );
}

fn describe_close(code: u16, reason: &str) -> String {
    let meaning = match code {
        close_code::GOING_AWAY => "the server is shutting down",
        close_code::IDLE => "the server heard nothing from this agent for too long",
        close_code::POLICY => "the server refused this agent's messages",
        _ => "the server closed the connection",
    };
    if reason.is_empty() {
        format!("{meaning} (code {code})")
    } else {
        format!("{meaning} (code {code}: {reason})")
    }
}

/// `1.5s`, `600s`: short enough for a log line, precise enough for jitter.
fn seconds(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 10.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_a_ten_minute_revoked_retry() {
        let opts = RunOptions::new("/var/lib/x", "restic");
        assert_eq!(opts.revoked_retry, Duration::from_secs(600));
    }

    #[test]
    fn close_descriptions_name_the_cause() {
        assert!(describe_close(1001, "").contains("shutting down"));
        assert!(describe_close(4003, "idle").contains("code 4003: idle"));
    }

    #[test]
    fn seconds_are_readable() {
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(Duration::from_secs(600)), "600s");
    }

    #[test]
    fn heartbeat_comes_from_the_cached_config() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = StateDir::new(tmp.path());
        assert_eq!(cached_heartbeat(&dir), Duration::from_secs(30));
        let config = rm_protocol::ConfigUpdate {
            repository: None,
            settings: rm_protocol::AgentSettings {
                heartbeat_seconds: 7,
            },
        };
        dir.save_config(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cached_heartbeat(&dir), Duration::from_secs(7));
    }
}
