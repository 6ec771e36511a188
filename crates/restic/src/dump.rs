//! `restic dump` as a byte stream: the one command whose standard output
//! is data, not lines, so it cannot go through [`crate::Restic::run`]'s
//! line reader. The caller reads [`Dump`] like a file, at its own pace:
//! restic blocks on the full pipe when the reader is slow, so memory stays
//! bounded whatever the size of what is dumped.
//!
//! Dropping a [`Dump`] kills restic's whole process group at once (it runs
//! with `--no-lock`, so there is no lock to leave behind): a download that
//! was abandoned must not keep restic reading the repository.

use std::pin::Pin;
use std::task::{Context, Poll};

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;

use crate::command::Command;
use crate::error::ResticError;
use crate::outcome::{classify, Status};
use crate::process::GroupGuard;
use crate::version::ResticVersion;

/// Most of restic's standard error kept for the error message.
const STDERR_CAP: usize = 64 * 1024;

/// A running `restic dump`: read it for the data, then [`Dump::finish`].
pub struct Dump {
    command: Command,
    version: ResticVersion,
    pid: u32,
    child: Child,
    stdout: ChildStdout,
    stderr: JoinHandle<String>,
    group: GroupGuard,
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dump").field("pid", &self.pid).finish()
    }
}

impl Dump {
    pub(crate) fn new(
        command: Command,
        version: ResticVersion,
        spawned: crate::process::Spawned,
    ) -> Result<Dump, ResticError> {
        let crate::process::Spawned {
            mut child,
            pid,
            group,
        } = spawned;
        // From here on, dropping the dump stops the whole group.
        let guard = GroupGuard(Some(group));
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ResticError::Io(std::io::Error::other(
                "restic's output pipes were not set up",
            )));
        };
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            // Read to the end (restic must never block on a full stderr
            // pipe) but keep only the start.
            let mut buf = [0u8; 4096];
            let mut stderr = stderr;
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            String::from_utf8_lossy(&kept).into_owned()
        });
        Ok(Dump {
            command,
            version,
            pid,
            child,
            stdout,
            stderr,
            group: guard,
        })
    }

    /// restic's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for restic to exit after its output was read to the end: `Ok`
    /// when it succeeded, otherwise an error in restic's words
    /// ([`ResticError::PathNotFound`] for a path not in the snapshot).
    pub async fn finish(mut self) -> Result<(), ResticError> {
        let exit = self.child.wait().await.map_err(ResticError::Io)?;
        self.group.0 = None;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        let (status, kind) = classify(&self.command, self.version, exit.code(), &stderr);
        if status == Status::Succeeded {
            return Ok(());
        }
        let message = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("restic dump failed without a message")
            .to_owned();
        if let Command::Dump {
            snapshot_id, path, ..
        } = &self.command
        {
            if message.contains("not found in snapshot") {
                return Err(ResticError::PathNotFound {
                    snapshot_id: snapshot_id.clone(),
                    path: path.clone(),
                });
            }
        }
        Err(ResticError::Command {
            command: "dump",
            status,
            kind,
            exit_code: exit.code(),
            message,
        })
    }

    /// Stops restic now (SIGKILL to its group), as dropping it does.
    pub fn kill(mut self) {
        if let Some(group) = self.group.0.take() {
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        }
    }
}

impl AsyncRead for Dump {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}
