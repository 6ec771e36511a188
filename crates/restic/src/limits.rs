//! How long one restic run may take and how to stop it early.
//!
//! restic 0.17+ retries an unreachable backend for up to 15 minutes, so every
//! run needs a limit of our own. Stopping is polite first (SIGINT lets restic
//! remove its lock), then forceful after a grace period. A run may also be
//! held to a bandwidth (restic's global `--limit-upload`/`--limit-download`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ResticError;

/// Time limit, cancellation and grace period for one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The run is interrupted when it has not finished after this long.
    pub timeout: Duration,
    /// Cancelling this token interrupts the run.
    pub cancel: CancellationToken,
    /// Time between SIGINT and SIGKILL when stopping a run.
    pub grace: Duration,
    /// How fast the run may talk to the repository.
    pub bandwidth: Bandwidth,
    /// `--no-lock`: the run reads without taking the repository's lock.
    /// Only for commands that only read ([`crate::Command::reads_only`]):
    /// an observer of a repository other hosts share must never be the
    /// lock that makes one host's `prune` or `check` fail.
    pub no_lock: bool,
}

/// Bandwidth caps in KiB/s (`None`: unlimited). They are restic's global
/// options, so they hold for any command: backup, restore, check, prune…
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// `--limit-upload=N`.
    pub upload_kib: Option<u32>,
    /// `--limit-download=N`.
    pub download_kib: Option<u32>,
}

impl Bandwidth {
    /// The flags; 0 is refused (restic reads it as "no limit", which is
    /// never what a caller setting a limit means).
    pub(crate) fn flags(&self) -> Result<Vec<String>, ResticError> {
        let mut flags = Vec::new();
        for (field, name, value) in [
            ("limit_upload_kib", "limit-upload", self.upload_kib),
            ("limit_download_kib", "limit-download", self.download_kib),
        ] {
            match value {
                Some(0) => {
                    return Err(ResticError::InvalidArgument {
                        field,
                        reason: String::from("must be at least 1 KiB/s (leave it unset for none)"),
                    })
                }
                Some(kib) => flags.push(format!("--{name}={kib}")),
                None => {}
            }
        }
        Ok(flags)
    }
}

impl Limits {
    /// The grace period of [`Limits::new`]: long enough for restic to remove
    /// its lock file on a slow backend.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

    /// A limit of `timeout` with a fresh token and the default grace period.
    pub fn new(timeout: Duration) -> Self {
        Limits {
            timeout,
            cancel: CancellationToken::new(),
            grace: Limits::DEFAULT_GRACE,
            bandwidth: Bandwidth::default(),
            no_lock: false,
        }
    }

    /// Holds the run to `bandwidth`.
    pub fn with_bandwidth(mut self, bandwidth: Bandwidth) -> Self {
        self.bandwidth = bandwidth;
        self
    }

    /// Runs without taking the repository's lock (see [`Limits::no_lock`]).
    pub fn without_lock(mut self) -> Self {
        self.no_lock = true;
        self
    }

    /// Uses `cancel` (typically a child of the job's token) to stop the run.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Sets the SIGINT → SIGKILL grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_becomes_global_flags() {
        assert!(Bandwidth::default().flags().unwrap().is_empty());
        let both = Bandwidth {
            upload_kib: Some(512),
            download_kib: Some(2048),
        };
        assert_eq!(
            both.flags().unwrap(),
            ["--limit-upload=512", "--limit-download=2048"]
        );
        let zero = Bandwidth {
            upload_kib: None,
            download_kib: Some(0),
        };
        assert!(matches!(
            zero.flags(),
            Err(ResticError::InvalidArgument {
                field: "limit_download_kib",
                ..
            })
        ));
    }
}
