//! The real agent binary as a child process, with its log captured.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `restic-manager agent run`.
pub struct AgentProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl AgentProcess {
    /// Runs `<binary> agent enroll` and waits for it; returns its output.
    pub async fn enroll(
        binary: &Path,
        server_url: &str,
        token: &str,
        state_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<std::process::Output> {
        let output = Command::new(binary)
            .args([
                "agent",
                "enroll",
                "--server",
                server_url,
                "--token",
                token,
                "--state-dir",
            ])
            .arg(state_dir)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .await
            .context("could not run agent enroll")?;
        Ok(output)
    }

    /// Starts `<binary> agent run --state-dir <dir>` with `restic_bin` and
    /// extra environment.
    pub fn spawn(
        binary: &Path,
        state_dir: &Path,
        restic_bin: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let mut child = Command::new(binary)
            .args(["agent", "run", "--state-dir"])
            .arg(state_dir)
            .arg("--restic-bin")
            .arg(restic_bin)
            .env("RM_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("could not start the agent")?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(BufReader::new(stderr), log.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(BufReader::new(stdout), log.clone()));
        }
        Ok(AgentProcess { child, log })
    }

    /// Everything the agent printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the agent's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let log = self.log.clone();
        crate::wait_until(limit, &format!("agent log to contain {needle:?}"), || {
            let found = log.lock().map(|l| l.contains(needle)).unwrap_or(false);
            async move { found }
        })
        .await
        .with_context(|| format!("agent log so far:\n{}", self.log()))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub async fn terminate(mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let Some(pid) = self.child.id() else {
            bail!("agent already exited");
        };
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let exit = tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| {
                format!("agent did not exit within {limit:?}; log:\n{}", self.log())
            })??;
        Ok(exit)
    }
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(reader: BufReader<R>, log: Arc<Mutex<String>>) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut log) = log.lock() {
            log.push_str(&line);
            log.push('\n');
        }
    }
}
