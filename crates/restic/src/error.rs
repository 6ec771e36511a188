//! The one error type of this crate, worded for the operator who has to fix
//! the host (install restic, fix permissions) rather than for a developer.
//!
//! A restic run that *fails* is normally not an error here: [`crate::Restic::run`]
//! reports it as a [`crate::Finished`] with a status, because a failed backup
//! is a result the fleet must record. Errors are for "could not run restic at
//! all", for arguments refused before anything ran, and for the typed helpers
//! (`snapshots`, `stats`, …) whose callers want a value or a reason.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::outcome::{FailureKind, Status};

/// What can go wrong when running restic.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    /// The restic binary does not exist at the given path or on `PATH`.
    #[error(
        "restic was not found at `{}` (is it installed and on PATH? try `apt-get install restic`)",
        bin.display()
    )]
    NotFound {
        /// The binary that was looked for.
        bin: PathBuf,
    },
    /// The binary exists but could not be started (permissions, not an
    /// executable, …).
    #[error("could not run restic at `{}`: {source}", bin.display())]
    Spawn {
        /// The binary that was run.
        bin: PathBuf,
        /// Why the OS refused.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for restic or reading its output failed.
    #[error("lost contact with the restic process: {0}")]
    Io(#[source] std::io::Error),
    /// `restic version` ran and exited unsuccessfully.
    #[error("restic failed ({status}): {stderr}")]
    Failed {
        /// restic's exit status.
        status: ExitStatus,
        /// restic's standard error, trimmed.
        stderr: String,
    },
    /// `restic version` did not finish in time and was killed.
    #[error("restic did not finish within {}s and was killed", after.as_secs_f64())]
    TimedOut {
        /// How long it was given.
        after: Duration,
    },
    /// restic's output did not contain what we were looking for.
    #[error("could not understand restic's output: {output:?}")]
    Unparseable {
        /// The output, trimmed and cut to a readable length.
        output: String,
    },
    /// A caller-supplied value was refused before restic was started, so a
    /// snapshot id or path can never be read by restic as a flag.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Which argument (`snapshot_id`, `paths`, `tags`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A typed helper's restic command did not succeed. `message` is
    /// restic's own explanation when it gave one.
    #[error("restic {command} {status}: {message}")]
    Command {
        /// The restic subcommand (`snapshots`, `stats`, …).
        command: &'static str,
        /// How the run ended (never `Succeeded`).
        status: Status,
        /// What kind of failure restic reported, when recognised.
        kind: Option<FailureKind>,
        /// restic's exit code, if it exited on its own.
        exit_code: Option<i32>,
        /// restic's words, or what stopped it.
        message: String,
    },
    /// The directory asked for does not exist in the snapshot.
    #[error("`{path}` does not exist in snapshot {snapshot_id}")]
    PathNotFound {
        /// The snapshot that was listed.
        snapshot_id: String,
        /// The directory that was asked for.
        path: String,
    },
}

impl ResticError {
    /// Maps a failed spawn: a missing binary gets the install hint.
    pub(crate) fn spawn(bin: &std::path::Path, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => ResticError::NotFound {
                bin: bin.to_path_buf(),
            },
            _ => ResticError::Spawn {
                bin: bin.to_path_buf(),
                source,
            },
        }
    }

    /// The recognised failure kind of a [`ResticError::Command`], so callers
    /// can tell "wrong password" from "no repository" without matching text.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            ResticError::Command { kind, .. } => *kind,
            _ => None,
        }
    }
}
