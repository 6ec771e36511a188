//! The one error type of this crate, worded for the operator who has to fix
//! the host (install restic, fix permissions) rather than for a developer.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

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
    /// restic ran and exited unsuccessfully.
    #[error("restic failed ({status}): {stderr}")]
    Failed {
        /// restic's exit status.
        status: ExitStatus,
        /// restic's standard error, trimmed.
        stderr: String,
    },
    /// restic did not finish in time and was killed.
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
}
