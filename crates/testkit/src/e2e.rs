//! One host end to end, as the restic-facing tests drive it: the real
//! server, one host enrolled through the real `agent enroll`, its real
//! `agent run` with a chosen restic, and its repository. The backup,
//! hooks, backup-option and browse tests share it, so each test says only
//! what it checks.
//!
//! Its steps fail the test themselves (with the agent's log where that
//! helps): they are the test's own steps, not results to handle.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{wait_until, Api, RunningAgent, TestServer};

/// How long a job may take. Generous: restic's key derivation alone takes
/// about half a second per command on a small machine, and the newer
/// releases' first backups longer.
pub const JOB_LIMIT: Duration = Duration::from_secs(180);

/// How long the agent gets to stop on SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// A server with one enrolled host whose real agent is running.
pub struct Host {
    /// The server.
    pub server: TestServer,
    /// An API client logged in as the admin.
    pub admin: Api,
    /// The host's id.
    pub id: String,
    /// The agent process and its state directory.
    pub agent: RunningAgent,
    /// The restic the agent runs, and the one [`Host::restic`] runs.
    pub restic: PathBuf,
    binary: PathBuf,
    /// The repository last set, with its password.
    repository: Mutex<Option<(String, String)>>,
    scratch: tempfile::TempDir,
}

impl Host {
    /// Starts a server, enrols a host named `name` through the real `agent
    /// enroll` of `binary` (the `restic-manager` under test), and runs its
    /// agent with `restic` and the extra environment `env`.
    pub async fn start(binary: &Path, name: &str, restic: &Path, env: &[(&str, &str)]) -> Host {
        let server = TestServer::start().await.or_fail("start the test server");
        let admin = server.admin().await.or_fail("log in as the admin");
        let agent = server
            .enrolled_agent(binary, name, restic, env)
            .await
            .or_fail("enrol and start the real agent");
        Host {
            server,
            admin,
            id: agent.host_id.clone(),
            agent,
            restic: restic.to_path_buf(),
            binary: binary.to_path_buf(),
            repository: Mutex::new(None),
            scratch: tempfile::tempdir().or_fail("a scratch folder"),
        }
    }

    /// A folder that lives as long as the host, for repositories and
    /// sources.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Sets the host's repository, waits for the `init` job that follows
    /// and returns it (whatever its end: a test of a wrong password wants
    /// the failure).
    pub async fn set_repository(&self, url: &str, password: &str) -> Value {
        self.admin
            .set_repository(&self.id, url, password)
            .await
            .or_fail("set the repository");
        *self.repository.lock().or_fail("the repository lock") =
            Some((url.to_owned(), password.to_owned()));
        let (_, jobs) = self
            .admin
            .get(&format!("/api/v1/jobs?host_id={}&limit=1", self.id))
            .await
            .or_fail("list the host's jobs");
        let init = jobs[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no init job in {jobs}"))
            .to_owned();
        self.finished(&init).await
    }

    /// Sets a repository in a folder of [`Host::scratch`] with `password`,
    /// and returns the `init` job that follows.
    pub async fn set_local_repository(&self, password: &str) -> Value {
        let repo = self.scratch().join("repo").display().to_string();
        self.set_repository(&repo, password).await
    }

    /// Posts a job of `kind` with `params`; returns the status and body, for
    /// tests of what the API refuses.
    pub async fn post_job(&self, kind: &str, params: Value) -> (StatusCode, Value) {
        self.admin
            .post(
                &format!("/api/v1/hosts/{}/jobs", self.id),
                json!({"kind": kind, "params": params}),
            )
            .await
            .or_fail("POST a job")
    }

    /// Starts a job; fails the test unless the server says 201. Returns its
    /// id.
    pub async fn start_job(&self, kind: &str, params: Value) -> String {
        self.admin
            .start_job(&self.id, kind, params)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a job to its end and returns it, however it ended.
    pub async fn run(&self, kind: &str, params: Value) -> Value {
        let id = self.start_job(kind, params).await;
        self.finished(&id).await
    }

    /// Job `id` as the API shows it now.
    pub async fn job(&self, id: &str) -> Value {
        self.admin.job(id).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for job `id` to end and returns it; fails the test with the
    /// agent's log if it does not end within [`JOB_LIMIT`].
    pub async fn finished(&self, id: &str) -> Value {
        self.admin
            .finished_job(id, JOB_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", self.agent.process.log()))
    }

    /// Every stored log line of job `id`, in order.
    pub async fn logs(&self, id: &str) -> Vec<Value> {
        self.admin
            .job_logs(id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The snapshots the server stores for the host.
    pub async fn snapshots(&self) -> Vec<Value> {
        let (status, list) = self
            .admin
            .get(&format!("/api/v1/hosts/{}/snapshots", self.id))
            .await
            .or_fail("GET the snapshots");
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .unwrap_or_else(|| panic!("not a snapshot list: {list}"))
            .clone()
    }

    /// Waits until the stored snapshot list has `count` entries (the agent
    /// reports it after the job's end) and returns it.
    pub async fn wait_snapshots(&self, count: usize) -> Vec<Value> {
        wait_until(
            Duration::from_secs(30),
            &format!("{count} snapshots reported"),
            || async { self.snapshots().await.len() == count },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        self.snapshots().await
    }

    /// Backs up `src` (one absolute folder) as a job, fails the test
    /// unless it succeeds, waits until the stored list has `snapshots`
    /// entries and returns the newest one's full id.
    pub async fn backed_up(&self, src: &Path, snapshots: usize) -> String {
        let job = self
            .run("backup", json!({"paths": [src.display().to_string()]}))
            .await;
        succeeded(&job);
        let list = self.wait_snapshots(snapshots).await;
        list.iter()
            .max_by_key(|s| s["time"].as_str().unwrap_or_default().to_owned())
            .and_then(|s| s["id"].as_str())
            .unwrap_or_else(|| panic!("no snapshot id in {list:?}"))
            .to_owned()
    }

    /// Runs restic itself on the repository last set, with its password
    /// ([`crate::restic::on_repository`]); returns the output whatever the
    /// exit.
    pub async fn restic(&self, args: &[&str]) -> std::process::Output {
        let (repo, password) = self.repository();
        crate::restic::on_repository(&self.restic, &repo, &password, args).await
    }

    /// [`Host::restic`], failing the test unless restic succeeds; returns
    /// its stdout.
    pub async fn restic_ok(&self, args: &[&str]) -> Vec<u8> {
        let (repo, password) = self.repository();
        crate::restic::on_repository_ok(&self.restic, &repo, &password, args).await
    }

    /// What `restic snapshots --json` lists in the repository.
    pub async fn restic_snapshots(&self) -> Vec<Value> {
        serde_json::from_slice(&self.restic_ok(&["snapshots", "--json"]).await)
            .or_fail("restic's snapshot list")
    }

    fn repository(&self) -> (String, String) {
        self.repository
            .lock()
            .or_fail("the repository lock")
            .clone()
            .unwrap_or_else(|| panic!("no repository set: call Host::set_repository first"))
    }

    /// Writes the hook `<state-dir>/hooks/<name>` with `body` and file
    /// `mode` (see [`write_hook`]).
    pub fn hook(&self, name: &str, body: &str, mode: u32) {
        write_hook(&self.agent.state_dir, name, body, mode);
    }

    /// Restarts the agent with the environment `env` and waits until the
    /// server lists it online again (so its `hello` says what is on the
    /// host now).
    pub async fn restart_agent(&mut self, env: &[(&str, &str)]) {
        let state_dir = self.agent.state_dir.clone();
        self.agent
            .process
            .restart(STOP_LIMIT, &self.binary, &state_dir, &self.restic, env)
            .await
            .or_fail("restart the agent");
        self.wait_reconnected().await;
    }

    /// Kills the agent with SIGKILL (no chance to clean up, as in a crash),
    /// starts it again with the environment `env` and waits until the
    /// server lists it online again.
    pub async fn kill_and_restart_agent(&mut self, env: &[(&str, &str)]) {
        let state_dir = self.agent.state_dir.clone();
        self.agent
            .process
            .kill9_and_restart(&self.binary, &state_dir, &self.restic, env)
            .await
            .or_fail("kill and restart the agent");
        self.wait_reconnected().await;
    }

    async fn wait_reconnected(&self) {
        self.agent
            .process
            .wait_for_log("connected to", Duration::from_secs(30))
            .await
            .or_fail("the agent to connect");
        wait_until(
            Duration::from_secs(30),
            "the agent to reconnect",
            || async { matches!(self.admin.host(&self.id).await, Ok(host) if host.online) },
        )
        .await
        .or_fail("the agent to reconnect");
    }

    /// A page of the web UI as the admin sees it; fails the test unless
    /// it is 200.
    pub async fn page(&self, path: &str) -> String {
        let (status, html) = self.admin.page(path).await.or_fail("GET the page");
        assert_eq!(status, 200, "{path}: {html}");
        html
    }

    /// Stops the agent (SIGTERM) and then the server.
    pub async fn stop(self) {
        self.agent
            .process
            .terminate(STOP_LIMIT)
            .await
            .or_fail("stop the agent");
    }
}

/// Writes the hook `<state_dir>/hooks/<name>` of an agent with `body` and
/// file `mode` (the folder itself owner-only, as the agent wants it).
pub fn write_hook(state_dir: &Path, name: &str, body: &str, mode: u32) {
    let dir = state_dir.join("hooks");
    std::fs::create_dir_all(&dir).or_fail("make the hooks folder");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .or_fail("chmod the hooks folder");
    let path = dir.join(name);
    std::fs::write(&path, body).or_fail("write the hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .or_fail("chmod the hook");
}

/// Fails the test unless `job` succeeded with restic's exit code 0.
pub fn succeeded(job: &Value) {
    assert_eq!(job["status"], "succeeded", "job did not succeed: {job:#}");
    assert_eq!(job["exit_code"], 0, "{job:#}");
}

/// A step's value, or a panic naming the step (with the error's whole
/// chain): the harness fails the test itself.
trait OrFail<T> {
    fn or_fail(self, step: &str) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, step: &str) -> T {
        self.unwrap_or_else(|e| panic!("{step}: {e:#}"))
    }
}
