//! How long one restic run may take and how to stop it early.
//!
//! restic 0.17+ retries an unreachable backend for up to 15 minutes, so every
//! run needs a limit of our own. Stopping is polite first (SIGINT lets restic
//! remove its lock), then forceful after a grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Time limit, cancellation and grace period for one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The run is interrupted when it has not finished after this long.
    pub timeout: Duration,
    /// Cancelling this token interrupts the run.
    pub cancel: CancellationToken,
    /// Time between SIGINT and SIGKILL when stopping a run.
    pub grace: Duration,
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
        }
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
