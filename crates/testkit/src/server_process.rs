//! The real `restic-manager server` binary as a child process, for tests
//! that kill it without warning (`kill -9`) or stop it with SIGTERM, and
//! start it again on the same port and database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;

use crate::api::Api;
use crate::child::LoggedChild;
use crate::server::{enrol_real_agent, RunningAgent, ADMIN_PASSWORD};

/// A `restic-manager server` process with its own data directory.
pub struct ServerProcess {
    binary: PathBuf,
    data_dir: TempDir,
    args: Vec<String>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Option<LoggedChild>,
    /// What earlier runs printed, so a test can read the whole history.
    earlier_logs: String,
}

impl ServerProcess {
    /// Starts `<binary> server` on a free port of 127.0.0.1 with one
    /// heartbeat a second, the test admin password, and `extra` flags.
    pub async fn start(binary: &Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let mut server = ServerProcess {
            binary: binary.to_owned(),
            data_dir: tempfile::tempdir()?,
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            addr,
            url: format!("http://{addr}"),
            child: None,
            earlier_logs: String::new(),
        };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("server")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--heartbeat-seconds")
            .arg("1")
            .args(&self.args)
            .env("RM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RM_LOG", "info");
        self.child = Some(LoggedChild::spawn("the server", command)?);
        let client = reqwest::Client::new();
        let url = format!("{}/healthz", self.url);
        crate::wait_until(
            Duration::from_secs(15),
            "the server to answer /healthz",
            || {
                let request = client.get(&url).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            },
        )
        .await
        .with_context(|| format!("server log:\n{}", self.log()))
    }

    /// Everything every run of the server printed so far.
    pub fn log(&self) -> String {
        let current = self
            .child
            .as_ref()
            .map(LoggedChild::log)
            .unwrap_or_default();
        format!("{}{current}", self.earlier_logs)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The running process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(LoggedChild::pid)
    }

    /// SIGKILL: the server dies mid-whatever, as in a crash.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the server is not running")?;
        child.kill9().await?;
        self.earlier_logs.push_str(&child.log());
        Ok(())
    }

    /// SIGTERM, and waits up to `limit` for a clean exit.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the server is not running")?;
        let status = child.terminate(limit).await;
        self.earlier_logs.push_str(&child.log());
        status
    }

    /// Starts the server again on the same port with the same data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the server is still running");
        self.launch().await
    }

    /// An API client without credentials.
    pub fn anonymous(&self) -> Api {
        Api::new(&self.url, None)
    }

    /// An API client logged in as `admin`.
    pub async fn admin(&self) -> anyhow::Result<Api> {
        self.anonymous().login("admin", ADMIN_PASSWORD).await
    }

    /// Enrols a host with the real agent of `binary` and starts it, as
    /// [`crate::TestServer::enrolled_agent`] does.
    pub async fn enrolled_agent(
        &self,
        binary: &Path,
        name: &str,
        restic_bin: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningAgent> {
        let admin = self.admin().await?;
        enrol_real_agent(&admin, &self.url, binary, name, restic_bin, env, &[]).await
    }
}
