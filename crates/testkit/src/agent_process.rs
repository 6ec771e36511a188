//! The real agent binary as a child process, with its log captured.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use crate::child::LoggedChild;

/// A running `restic-manager agent run`.
pub struct AgentProcess {
    child: LoggedChild,
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
        let mut command = Command::new(binary);
        command
            .args(["agent", "run", "--state-dir"])
            .arg(state_dir)
            .arg("--restic-bin")
            .arg(restic_bin)
            .env("RM_LOG", "info")
            .envs(env.iter().copied());
        Ok(AgentProcess {
            child: LoggedChild::spawn("the agent", command)?,
        })
    }

    /// Starts an agent from a whole command line as given, e.g. a systemd
    /// unit's `ExecStart=` split into words, with extra environment.
    pub fn spawn_command_line(
        argv: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let Some((program, args)) = argv.split_first() else {
            anyhow::bail!("an empty command line");
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RM_LOG", "info")
            .envs(env.iter().copied());
        Ok(AgentProcess {
            child: LoggedChild::spawn("the agent", command)?,
        })
    }

    /// Everything the agent printed so far.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// Waits until the agent's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        self.child.wait_for_log(needle, limit).await
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub async fn terminate(mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        self.child.terminate(limit).await
    }

    /// Sends SIGTERM, waits up to `limit` for the exit, then starts the
    /// agent again with the same arguments (`binary`, `state_dir`,
    /// `restic_bin`, `env` as for [`AgentProcess::spawn`]): the old one is
    /// gone before the new one connects, so the two never replace each
    /// other's connection.
    pub async fn restart(
        &mut self,
        limit: Duration,
        binary: &Path,
        state_dir: &Path,
        restic_bin: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.child.terminate(limit).await?;
        *self = AgentProcess::spawn(binary, state_dir, restic_bin, env)?;
        Ok(())
    }

    /// SIGKILL, then the agent started again with the same arguments (as
    /// for [`AgentProcess::restart`]): a crash mid-job and the restart
    /// after it.
    pub async fn kill9_and_restart(
        &mut self,
        binary: &Path,
        state_dir: &Path,
        restic_bin: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.child.kill9().await?;
        *self = AgentProcess::spawn(binary, state_dir, restic_bin, env)?;
        Ok(())
    }

    /// SIGKILL: the agent dies without a chance to clean up, as in a crash.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill9().await
    }
}
