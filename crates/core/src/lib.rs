//! Domain building blocks shared by the server, the store and the CLI:
//! typed ids, secret tokens (generated, parsed, hashed, compared in constant
//! time), TLS certificate fingerprints, operator passwords (argon2id) and
//! host labels and the selectors that match them (fleet policies),
//! schedule-time logic (cron schedules, missed fires, jitter, an injectable
//! clock), and the rules of a rotating verification cycle.
//!
//! Nothing here does I/O beyond asking the OS for randomness (and, for
//! schedules in the machine's local zone, chrono reading the zone).

pub mod fingerprint;
pub mod ids;
pub mod job;
pub mod labels;
pub mod password;
pub mod redact;
pub mod role;
pub mod schedule;
pub mod sealing;
pub mod secret;
pub mod token;
pub mod verification;

pub use ids::{
    AlertId, BatchId, ChannelId, DownloadId, HostId, JobId, PolicyId, RequestId, ScheduleId,
    SilenceId, SnapshotId, SnapshotIdError, TokenId, UserId,
};
pub use job::{JobStatus, JobTrigger};
pub use labels::{LabelError, Labels, Selector};
pub use role::Role;
pub use schedule::{
    jittered, missed_fire, Clock, CronSchedule, ManualClock, ScheduleError, SystemClock,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The OS random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
}

/// Fills `buf` with OS randomness.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), CoreError> {
    getrandom::fill(buf).map_err(|e| CoreError::Random(e.to_string()))
}
