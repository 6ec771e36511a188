//! A child process of ours (the real `restic-manager` binary) with its
//! output captured, for tests that stop, kill and restart real processes.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running child whose stdout and stderr are collected into one log.
pub struct LoggedChild {
    what: &'static str,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl LoggedChild {
    /// Starts `command` (stdin closed, output captured, killed on drop);
    /// `what` names it in errors ("the agent", "the server").
    pub fn spawn(what: &'static str, mut command: Command) -> anyhow::Result<LoggedChild> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {what}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(BufReader::new(stderr), log.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(BufReader::new(stdout), log.clone()));
        }
        Ok(LoggedChild { what, child, log })
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until its log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let log = self.log.clone();
        crate::wait_until(
            limit,
            &format!("{} log to contain {needle:?}", self.what),
            || {
                let found = log.lock().map(|l| l.contains(needle)).unwrap_or(false);
                async move { found }
            },
        )
        .await
        .with_context(|| format!("{} log so far:\n{}", self.what, self.log()))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM").await?;
        let exit = tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| {
                format!(
                    "{} did not exit within {limit:?}; log:\n{}",
                    self.what,
                    self.log()
                )
            })??;
        Ok(exit)
    }

    /// SIGKILL, as a crash or the OOM killer would: no chance to clean up.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.signal("KILL").await?;
        self.child.wait().await?;
        Ok(())
    }

    async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else {
            bail!("{} already exited", self.what);
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
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
