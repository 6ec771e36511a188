//! The job state machine: which statuses a job passes through and which
//! moves between them are allowed.
//!
//! ```text
//! queued ──▶ dispatched ──▶ running ──▶ succeeded | partial | failed | cancelled
//!    ▲  │         │  │
//!    │  │         │  └──▶ succeeded | … (ended before `job.started` was stored)
//!    │  └─────────┴─────▶ cancelled / failed (never reached the agent, or refused)
//!    └────────────┘ back in the queue when the agent said it was busy
//! ```
//!
//! Every move is checked here, and the store applies it with a conditional
//! update, so a late or repeated message can never move a finished job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Created, waiting for the host's previous job or for the agent.
    Queued,
    /// Sent to the agent, not yet started.
    Dispatched,
    /// restic is running.
    Running,
    /// restic exited 0.
    Succeeded,
    /// A snapshot was made but some files could not be read.
    Partial,
    /// Anything else went wrong.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// A schedule fired while its previous run was still going; nothing ran.
    Skipped,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Queued,
        JobStatus::Dispatched,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Partial,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Skipped,
    ];

    /// The statuses a job can still leave.
    pub const ACTIVE: [JobStatus; 3] =
        [JobStatus::Queued, JobStatus::Dispatched, JobStatus::Running];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Dispatched => "dispatched",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Partial => "partial",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Skipped => "skipped",
        }
    }

    /// True once the job can no longer change.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::Partial
                | JobStatus::Failed
                | JobStatus::Cancelled
                | JobStatus::Skipped
        )
    }

    /// Whether a job may move from `self` to `next`.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        match (self, next) {
            (Queued, Dispatched | Cancelled | Failed) => true,
            // Skipped jobs are created finished; nothing becomes skipped.
            (_, Skipped) => false,
            // The agent was busy with a job the server did not know it was
            // still running: the job waits its turn again.
            (Dispatched, Queued) => true,
            // Dispatched jobs may finish without a `job.started` (the agent
            // refused it, or it ended before the start message was stored).
            (Dispatched, Running) => true,
            (Dispatched | Running, s) => s.is_finished(),
            _ => false,
        }
    }

    /// The statuses from which `next` may be reached.
    pub fn sources_of(next: JobStatus) -> Vec<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .filter(|s| s.can_become(next))
            .collect()
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is not one of [`JobStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status `{0}` (expected one of queued, dispatched, running, succeeded, partial, failed, cancelled, skipped)")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTrigger {
    /// An operator (or API client) asked for it.
    Manual,
    /// A schedule fired.
    Schedule,
    /// A schedule's fire was missed while the agent was down, and run once
    /// when it started again.
    CatchUp,
    /// The server made it (e.g. initialising a newly set repository).
    System,
}

impl JobTrigger {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobTrigger::Manual => "manual",
            JobTrigger::Schedule => "schedule",
            JobTrigger::CatchUp => "catch_up",
            JobTrigger::System => "system",
        }
    }
}

impl FromStr for JobTrigger {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(JobTrigger::Manual),
            "schedule" => Ok(JobTrigger::Schedule),
            "catch_up" => Ok(JobTrigger::CatchUp),
            "system" => Ok(JobTrigger::System),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    #[test]
    fn the_happy_path_is_allowed() {
        assert!(Queued.can_become(Dispatched));
        assert!(Dispatched.can_become(Running));
        assert!(Running.can_become(Succeeded));
        assert!(Running.can_become(Partial));
    }

    #[test]
    fn finished_jobs_never_change() {
        for done in [Succeeded, Partial, Failed, Cancelled, Skipped] {
            for next in JobStatus::ALL {
                assert!(!done.can_become(next), "{done} → {next}");
            }
        }
    }

    #[test]
    fn jobs_do_not_go_backwards_or_skip_dispatch_to_run() {
        assert!(!Running.can_become(Queued));
        assert!(!Running.can_become(Dispatched));
        assert!(!Running.can_become(Queued));
        assert!(!Queued.can_become(Running));
        assert!(!Queued.can_become(Succeeded));
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn sources_list_every_allowed_predecessor() {
        assert_eq!(JobStatus::sources_of(Running), vec![Dispatched]);
        assert_eq!(
            JobStatus::sources_of(Cancelled),
            vec![Queued, Dispatched, Running]
        );
        assert_eq!(JobStatus::sources_of(Queued), vec![Dispatched]);
    }
}
