//! Self-upgrade on `agent.upgrade`: download the server's binary, check its
//! SHA-256, try it (`--version`), wait until no job runs, swap it in
//! atomically (keeping `<exe>.previous`) and re-execute; and, in the new
//! process, go back to the previous binary when it cannot connect within
//! [`CONNECT_DEADLINE`].
//!
//! What is covered: the pre-flight catches a binary that does not run at
//! all (wrong architecture, truncated, a script that fails); the
//! `upgrade-pending.json` marker catches one that runs but cannot get a
//! connection to the server accepted. A binary that passes `--version` but
//! dies at start before it reads the marker is not rolled back by the agent
//! itself (the service manager restarts it; `<exe>.previous` is there for
//! the operator).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rm_protocol::upgrade::{is_older, own_platform};
use rm_protocol::{AgentUpgrade, AgentUpgradeStatus, Frame, UpgradeState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};

use crate::jobs::JobRunner;
use crate::server_url::ServerUrl;
use crate::tls::Trust;

/// Testing hook: the version the agent reports (in `hello` and when judging
/// an `agent.upgrade`) instead of its own. Removed from the environment on
/// re-execution, so the upgraded process reports its real version.
pub const REPORTED_VERSION_ENV: &str = "RM_AGENT_REPORTED_VERSION";

/// How long a freshly upgraded agent has to get a connection accepted
/// before it puts the previous binary back.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Testing hook: [`CONNECT_DEADLINE`] in seconds instead of 60, read when
/// the binary is swapped (so a rollback test need not wait a minute).
pub const DEADLINE_ENV: &str = "RM_AGENT_UPGRADE_DEADLINE_SECS";

fn connect_deadline() -> Duration {
    std::env::var(DEADLINE_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|secs| (1..=3600).contains(secs))
        .map_or(CONNECT_DEADLINE, Duration::from_secs)
}

/// The marker in the state directory between swapping the binary and the
/// new one's first accepted connection.
const MARKER: &str = "upgrade-pending.json";

/// Longest the download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Largest binary accepted: far above any release, low enough that a
/// misbehaving server cannot fill the disk.
const MAX_BINARY_BYTES: u64 = 512 * 1024 * 1024;

/// How long `<new> --version` may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the agent looks whether the running job has ended.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The version this agent reports: its own, or [`REPORTED_VERSION_ENV`].
pub(crate) fn reported_version() -> String {
    std::env::var(REPORTED_VERSION_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The offered version is not newer than this agent.
    #[error("this agent runs {current}, which is not older than the offered {offered}")]
    NotNewer {
        /// This agent's version.
        current: String,
        /// The offered one.
        offered: String,
    },
    /// The host's administrator turned self-upgrades off.
    #[error(
        "this agent does not upgrade itself (its administrator runs it with --no-self-upgrade)"
    )]
    Refused,
    /// A field of the `agent.upgrade` is unusable.
    #[error("`{field}` {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The download failed.
    #[error("could not download {url}: {detail}")]
    Download {
        /// From where.
        url: String,
        /// Why.
        detail: String,
    },
    /// The downloaded file is not the announced one.
    #[error("the downloaded binary's SHA-256 is {actual}, not the announced {expected}; refused and deleted")]
    Checksum {
        /// Announced.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The new binary did not pass `--version`.
    #[error("the new binary failed its pre-flight (`--version`): {0}; the current one stays")]
    Preflight(String),
    /// A file operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> UpgradeError + 'a {
    move |source| UpgradeError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What the state directory remembers across the re-execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// The kept previous binary.
    pub(crate) previous: PathBuf,
    /// The agent's executable.
    pub(crate) exe: PathBuf,
    /// The version that was running before.
    pub(crate) from_version: String,
    /// The version being installed.
    pub(crate) version: String,
    /// Unix seconds by which the new binary must have connected.
    pub(crate) deadline: i64,
    /// Set by a new binary that gave up and put the previous one back: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failed: Option<String>,
}

/// What a starting agent makes of a marker it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// This is the new binary on trial: it must connect by the deadline.
    Trial(Marker),
    /// An upgrade ended without this binary taking over: report it failed.
    Failed {
        /// The version that was being installed.
        version: String,
        /// Why.
        error: String,
    },
}

/// Judges a marker found at start by an agent reporting `running`.
pub(crate) fn resume(marker: Marker, running: &str) -> Resume {
    if let Some(error) = marker.failed {
        return Resume::Failed {
            version: marker.version,
            error,
        };
    }
    if running == marker.version {
        return Resume::Trial(marker);
    }
    Resume::Failed {
        error: format!(
            "the agent started as version {running} instead of {} after the upgrade",
            marker.version
        ),
        version: marker.version,
    }
}

/// A downloaded, checked binary waiting for the agent to go idle.
#[derive(Debug)]
struct Prepared {
    tmp: PathBuf,
    exe: PathBuf,
    version: String,
}

/// Runs upgrades for one agent process.
#[derive(Clone)]
pub(crate) struct Upgrader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrader")
            .field("server", &self.inner.server)
            .field("busy", &self.inner.busy.load(Ordering::SeqCst))
            .finish()
    }
}

struct Inner {
    server: ServerUrl,
    trust: Trust,
    state_dir: PathBuf,
    runner: JobRunner,
    outbox: mpsc::Sender<Frame>,
    busy: AtomicBool,
    refuse: AtomicBool,
    prepared: Mutex<Option<Prepared>>,
    ready: Notify,
    welcomed: Notify,
}

impl Upgrader {
    /// An upgrader downloading from `server` with `trust`, reporting
    /// through `outbox` (frames queued while disconnected go out after the
    /// next `hello`).
    pub(crate) fn new(
        server: ServerUrl,
        trust: Trust,
        state_dir: &Path,
        runner: JobRunner,
        outbox: mpsc::Sender<Frame>,
    ) -> Upgrader {
        Upgrader {
            inner: Arc::new(Inner {
                server,
                trust,
                state_dir: state_dir.to_owned(),
                runner,
                outbox,
                busy: AtomicBool::new(false),
                refuse: AtomicBool::new(false),
                prepared: Mutex::new(None),
                ready: Notify::new(),
                welcomed: Notify::new(),
            }),
        }
    }

    fn report(&self, version: &str, state: UpgradeState, error: Option<String>) {
        let frame = Frame::new(AgentUpgradeStatus {
            version: version.to_owned(),
            state,
            error,
        });
        if self.inner.outbox.try_send(frame).is_err() {
            tracing::warn!(
                state = state.as_str(),
                "could not queue an upgrade status report"
            );
        }
    }

    /// Refuses every offer from now on (`agent run --no-self-upgrade`).
    pub(crate) fn refuse_offers(&self) {
        self.inner.refuse.store(true, Ordering::SeqCst);
    }

    /// Handles an `agent.upgrade`: refused at once when it is not usable,
    /// otherwise prepared in the background.
    pub(crate) fn offer(&self, upgrade: AgentUpgrade) {
        let current = reported_version();
        let checked = if self.inner.refuse.load(Ordering::SeqCst) {
            Err(UpgradeError::Refused)
        } else {
            check_offer(&upgrade, &current, &self.inner.server)
        };
        if let Err(e) = checked {
            tracing::warn!(version = %upgrade.version, "refusing the upgrade: {e}");
            self.report(&upgrade.version, UpgradeState::Failed, Some(e.to_string()));
            return;
        }
        if self.inner.busy.swap(true, Ordering::SeqCst) {
            tracing::info!(version = %upgrade.version, "an upgrade is already under way; ignoring another");
            return;
        }
        tracing::info!(from = %current, to = %upgrade.version, "upgrading the agent");
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.prepare(&upgrade).await {
                tracing::error!(version = %upgrade.version, "upgrade failed: {e}");
                this.report(&upgrade.version, UpgradeState::Failed, Some(e.to_string()));
                this.inner.busy.store(false, Ordering::SeqCst);
            }
        });
    }

    /// Download, check, pre-flight, wait for idle; then tells the session
    /// to end so the run loop can [`Upgrader::install`].
    async fn prepare(&self, upgrade: &AgentUpgrade) -> Result<(), UpgradeError> {
        self.report(&upgrade.version, UpgradeState::Downloading, None);
        let exe =
            std::env::current_exe().map_err(io("find", Path::new("the agent's executable")))?;
        let tmp = temp_path(&exe);
        let result = async {
            download(&self.inner.trust, upgrade, &tmp).await?;
            preflight(&tmp, &upgrade.version).await
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.report(&upgrade.version, UpgradeState::Verified, None);
        if let Ok(mut prepared) = self.inner.prepared.lock() {
            *prepared = Some(Prepared {
                tmp,
                exe,
                version: upgrade.version.clone(),
            });
        }
        self.when_idle(&upgrade.version).await;
        Ok(())
    }

    /// Waits until no job runs (saying so once when one does), then tells
    /// the session the upgrade is ready. Jobs are not held meanwhile: while
    /// the agent is disconnected it keeps running its schedules.
    async fn when_idle(&self, version: &str) {
        let mut said_waiting = false;
        while self.inner.runner.busy() {
            if !said_waiting {
                tracing::info!(%version, "upgrade ready; waiting for the running job to end");
                self.report(version, UpgradeState::WaitingForJob, None);
                said_waiting = true;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
        self.inner.ready.notify_one();
    }

    /// Resolves once an upgrade is ready to be installed.
    pub(crate) async fn ready(&self) {
        self.inner.ready.notified().await;
    }

    /// Holds new jobs for the restart; when a job started after
    /// [`Upgrader::ready`] resolved, waits for it instead and returns
    /// false (`ready` resolves again once it ended).
    pub(crate) fn hold_for_restart(&self) -> bool {
        if self.inner.runner.hold(true) {
            return true;
        }
        let version = self
            .inner
            .prepared
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.version.clone()))
            .unwrap_or_default();
        let this = self.clone();
        tokio::spawn(async move { this.when_idle(&version).await });
        false
    }

    /// The server accepted this connection (its first frame arrived).
    pub(crate) fn welcomed(&self) {
        self.inner.welcomed.notify_one();
    }

    /// Swaps the prepared binary in and re-executes it. Returns only when
    /// that failed; the current binary is back in place then, the failure
    /// is queued for the server and jobs are released.
    pub(crate) fn install(&self) {
        let prepared = self.inner.prepared.lock().ok().and_then(|mut p| p.take());
        let Some(prepared) = prepared else {
            return;
        };
        let error = swap_and_exec(&self.inner.state_dir, &prepared);
        tracing::error!(version = %prepared.version, "could not restart into the upgraded binary: {error}");
        let _ = std::fs::remove_file(&prepared.tmp);
        let _ = std::fs::remove_file(self.inner.state_dir.join(MARKER));
        self.report(
            &prepared.version,
            UpgradeState::Failed,
            Some(error.to_string()),
        );
        self.inner.runner.hold(false);
        self.inner.busy.store(false, Ordering::SeqCst);
    }

    /// At start: acts on a marker left by an upgrade (see [`resume`]).
    pub(crate) fn resume_after_restart(&self) {
        let path = self.inner.state_dir.join(MARKER);
        let marker = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Marker>(&bytes) {
                Ok(marker) => marker,
                Err(e) => {
                    tracing::warn!("ignoring the unreadable {}: {e}", path.display());
                    let _ = std::fs::remove_file(&path);
                    return;
                }
            },
            Err(_) => return,
        };
        match resume(marker, &reported_version()) {
            Resume::Failed { version, error } => {
                tracing::error!(%version, "the upgrade did not take: {error}");
                // The marker stays until the server has accepted a
                // connection, so the failure reaches it across restarts.
                let this = self.clone();
                tokio::spawn(async move {
                    this.inner.welcomed.notified().await;
                    this.report(&version, UpgradeState::Failed, Some(error));
                    let _ = std::fs::remove_file(&path);
                });
            }
            Resume::Trial(marker) => {
                tracing::info!(version = %marker.version, "running the upgraded binary; it must connect to the server to stay");
                let this = self.clone();
                tokio::spawn(async move { this.trial(marker, path).await });
            }
        }
    }

    async fn trial(&self, marker: Marker, path: PathBuf) {
        let left = marker.deadline - Utc::now().timestamp();
        let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
        tokio::select! {
            _ = self.inner.welcomed.notified() => {
                tracing::info!(version = %marker.version, from = %marker.from_version, "agent upgraded");
                self.report(&marker.version, UpgradeState::Installed, None);
                let _ = std::fs::remove_file(&path);
            }
            _ = tokio::time::sleep(left) => {
                let error = roll_back(&path, marker);
                tracing::error!("could not go back to the previous agent binary: {error}");
            }
        }
    }
}

/// Checks an `agent.upgrade` before anything is downloaded: newer, a
/// SHA-256, and a URL on this agent's own server for its own platform (the
/// server is input, not authority).
pub(crate) fn check_offer(
    upgrade: &AgentUpgrade,
    current: &str,
    server: &ServerUrl,
) -> Result<(), UpgradeError> {
    if !is_older(current, &upgrade.version) {
        return Err(UpgradeError::NotNewer {
            current: current.to_owned(),
            offered: upgrade.version.clone(),
        });
    }
    if upgrade.sha256.len() != 64
        || !upgrade
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(UpgradeError::Invalid {
            field: "sha256",
            problem: String::from("must be 64 lower-case hex digits"),
        });
    }
    let expected = server.download_url(&own_platform());
    let offered = reqwest::Url::parse(&upgrade.url).map_err(|e| UpgradeError::Invalid {
        field: "url",
        problem: format!("is not a URL: {e}"),
    })?;
    if offered.origin() != expected.origin() {
        return Err(UpgradeError::Invalid {
            field: "url",
            problem: format!(
                "is not on the server this agent is enrolled with ({}); upgrades are only taken from it",
                expected.origin().ascii_serialization()
            ),
        });
    }
    if offered.path() != expected.path() || offered.query().is_some() {
        return Err(UpgradeError::Invalid {
            field: "url",
            problem: format!("must be {expected}, this agent's platform on its server"),
        });
    }
    Ok(())
}

/// `.<name>.upgrade` beside the executable: same file system, so the
/// final rename is atomic.
fn temp_path(exe: &Path) -> PathBuf {
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| String::from("restic-manager"));
    exe.with_file_name(format!(".{name}.upgrade"))
}

/// `<exe>.previous`.
fn previous_path(exe: &Path) -> PathBuf {
    let mut name = exe.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

async fn download(trust: &Trust, upgrade: &AgentUpgrade, to: &Path) -> Result<(), UpgradeError> {
    let failed = |detail: String| UpgradeError::Download {
        url: upgrade.url.clone(),
        detail,
    };
    // No redirects: the checked URL is the only place a binary comes from.
    let client = trust
        .http_client(reqwest::Client::builder().timeout(DOWNLOAD_TIMEOUT))
        .map_err(failed)?;
    let mut response = client
        .get(&upgrade.url)
        .send()
        .await
        .map_err(|e| failed(crate::tls::describe(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!(
            "the server answered HTTP {}",
            response.status()
        )));
    }
    // Async file writes: an agent mid-download keeps answering its server.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(to)
        .await
        .map_err(io("create", to))?;
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(crate::tls::describe(&e)))?
    {
        len += chunk.len() as u64;
        if len > MAX_BINARY_BYTES {
            return Err(failed(format!(
                "it is larger than {} MiB",
                MAX_BINARY_BYTES / 1024 / 1024
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io("write", to))?;
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != upgrade.sha256 {
        return Err(UpgradeError::Checksum {
            expected: upgrade.sha256.clone(),
            actual,
        });
    }
    file.sync_all().await.map_err(io("write", to))?;
    drop(file);
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(io("make executable", to))?;
    Ok(())
}

/// Runs `<binary> --version`: it must succeed and print `version`.
async fn preflight(binary: &Path, version: &str) -> Result<(), UpgradeError> {
    let run = tokio::process::Command::new(binary)
        .arg("--version")
        .env_remove(REPORTED_VERSION_ENV)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(PREFLIGHT_TIMEOUT, run).await {
        Err(_) => {
            return Err(UpgradeError::Preflight(format!(
                "no answer within {}s",
                PREFLIGHT_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(UpgradeError::Preflight(format!("could not run it: {e}"))),
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr.trim().chars().take(300).collect();
        let status = match output.status.code() {
            Some(code) => format!("it exited with code {code}"),
            None => String::from("it was killed by a signal"),
        };
        return Err(UpgradeError::Preflight(if tail.is_empty() {
            status
        } else {
            format!("{status}: {tail}")
        }));
    }
    if !stdout.split_whitespace().any(|word| word == version) {
        let shown: String = stdout.trim().chars().take(100).collect();
        return Err(UpgradeError::Preflight(format!(
            "it printed `{shown}`, not version {version}"
        )));
    }
    Ok(())
}

/// Keeps `<exe>.previous`, writes the marker, renames the new binary over
/// `<exe>` and re-executes it. Returns only on failure, with the old
/// binary back in place.
fn swap_and_exec(state_dir: &Path, prepared: &Prepared) -> UpgradeError {
    let exe = &prepared.exe;
    let previous = previous_path(exe);
    let previous_tmp = previous.with_extension("previous.tmp");
    if let Err(e) = std::fs::copy(exe, &previous_tmp)
        .map_err(io("copy the running binary to", &previous_tmp))
        .and_then(|_| {
            std::fs::rename(&previous_tmp, &previous)
                .map_err(io("keep the previous binary as", &previous))
        })
    {
        let _ = std::fs::remove_file(&previous_tmp);
        return e;
    }
    let marker = Marker {
        previous: previous.clone(),
        exe: exe.clone(),
        from_version: reported_version(),
        version: prepared.version.clone(),
        deadline: Utc::now()
            .timestamp()
            .saturating_add(i64::try_from(connect_deadline().as_secs()).unwrap_or(60)),
        failed: None,
    };
    let marker_path = state_dir.join(MARKER);
    if let Err(e) = write_marker(&marker_path, &marker) {
        return e;
    }
    if let Err(e) = std::fs::rename(&prepared.tmp, exe).map_err(io("move the new binary over", exe))
    {
        return e;
    }
    sync_dir(exe);
    tracing::info!(version = %prepared.version, "restarting into the upgraded agent");
    let error = reexec(exe);
    // The new binary is in place but cannot be started: put the old back.
    if let Err(e) = std::fs::rename(&previous, exe) {
        tracing::error!(
            "could not put the previous binary back at {}: {e}",
            exe.display()
        );
    }
    UpgradeError::Io {
        action: "execute",
        path: exe.clone(),
        source: error,
    }
}

fn write_marker(path: &Path, marker: &Marker) -> Result<(), UpgradeError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(marker).map_err(|e| UpgradeError::Io {
        action: "encode",
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    let mut file = std::fs::File::create(&tmp).map_err(io("write", &tmp))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write", path))?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename in `path`'s directory durable.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
}

/// Replaces this process with `exe`, same arguments and environment less
/// the reported-version hook. Returns only on failure.
fn reexec(exe: &Path) -> std::io::Error {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.as_os_str().to_owned());
    std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env_remove(REPORTED_VERSION_ENV)
        .exec()
}

/// The new binary could not connect in time: records why in the marker,
/// moves `<exe>.previous` back over `<exe>` and re-executes it (which then
/// reports the failure). Returns only when that failed.
fn roll_back(path: &Path, mut marker: Marker) -> UpgradeError {
    let why = format!(
        "version {} could not connect to the server within {}s; rolled back to {}",
        marker.version,
        connect_deadline().as_secs(),
        marker.from_version
    );
    tracing::error!("{why}");
    marker.failed = Some(why);
    if let Err(e) = write_marker(path, &marker) {
        return e;
    }
    if let Err(e) =
        std::fs::rename(&marker.previous, &marker.exe).map_err(io("put back", &marker.previous))
    {
        return e;
    }
    sync_dir(&marker.exe);
    UpgradeError::Io {
        action: "execute",
        path: marker.exe.clone(),
        source: reexec(&marker.exe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(version: &str, url: &str, sha256: &str) -> AgentUpgrade {
        AgentUpgrade {
            version: version.into(),
            url: url.into(),
            sha256: sha256.into(),
        }
    }

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn only_newer_versions_from_the_own_server_and_platform_are_taken() {
        let server = ServerUrl::parse("https://backup.example.com:8443/rm").unwrap();
        let url = format!(
            "https://backup.example.com:8443/rm/download/agent/{}",
            own_platform()
        );
        assert!(check_offer(&offer("1.0.0", &url, SHA), "0.9.0", &server).is_ok());
        let refused = |o: AgentUpgrade, current: &str| {
            check_offer(&o, current, &server)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(refused(offer("1.0.0", &url, SHA), "1.0.0").contains("not older"));
        assert!(refused(offer("0.9.0", &url, SHA), "1.0.0").contains("not older"));
        assert!(refused(offer("1.0.0", &url, "ABC"), "0.9.0").starts_with("`sha256`"));
        let evil = format!(
            "https://evil.example.com:8443/rm/download/agent/{}",
            own_platform()
        );
        assert!(
            refused(offer("1.0.0", &evil, SHA), "0.9.0").starts_with("`url` is not on the server")
        );
        let http = url.replace("https://", "http://");
        assert!(
            refused(offer("1.0.0", &http, SHA), "0.9.0").starts_with("`url` is not on the server")
        );
        let other = "https://backup.example.com:8443/rm/download/agent/linux-sparc";
        assert!(refused(offer("1.0.0", other, SHA), "0.9.0").starts_with("`url` must be"));
        let path = "https://backup.example.com:8443/etc/passwd";
        assert!(refused(offer("1.0.0", path, SHA), "0.9.0").starts_with("`url` must be"));
    }

    fn marker(failed: Option<&str>) -> Marker {
        Marker {
            previous: "/usr/local/bin/restic-manager.previous".into(),
            exe: "/usr/local/bin/restic-manager".into(),
            from_version: "0.1.0".into(),
            version: "0.2.0".into(),
            deadline: 0,
            failed: failed.map(str::to_owned),
        }
    }

    #[test]
    fn a_marker_puts_the_new_binary_on_trial_and_reports_the_rest_failed() {
        assert_eq!(resume(marker(None), "0.2.0"), Resume::Trial(marker(None)));
        match resume(marker(Some("could not connect")), "0.1.0") {
            Resume::Failed { version, error } => {
                assert_eq!(version, "0.2.0");
                assert_eq!(error, "could not connect");
            }
            other => panic!("{other:?}"),
        }
        match resume(marker(None), "0.1.0") {
            Resume::Failed { error, .. } => assert!(error.contains("instead of 0.2.0"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn previous_and_temp_files_sit_beside_the_binary() {
        let exe = Path::new("/usr/local/bin/restic-manager");
        assert_eq!(
            previous_path(exe),
            Path::new("/usr/local/bin/restic-manager.previous")
        );
        assert_eq!(
            temp_path(exe),
            Path::new("/usr/local/bin/.restic-manager.upgrade")
        );
    }

    #[tokio::test]
    async fn preflight_refuses_a_binary_that_fails_or_prints_another_version() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken");
        std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = preflight(&broken, "1.0.0").await.unwrap_err().to_string();
        assert!(e.contains("exited with code 1"), "{e}");
        let other = dir.path().join("other");
        std::fs::write(&other, "#!/bin/sh\necho restic-manager 0.9.0\n").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = preflight(&other, "1.0.0").await.unwrap_err().to_string();
        assert!(e.contains("not version 1.0.0"), "{e}");
        assert!(preflight(&other, "0.9.0").await.is_ok());
    }
}
