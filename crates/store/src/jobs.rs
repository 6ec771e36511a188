//! The store's part for jobs, bulk batches, job logs and command results.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{BatchId, HostId, JobId, JobStatus};

use crate::{
    CommandResultRecord, Job, JobEnd, JobFilter, LogLineRecord, NewAuditEntry, NewJob, StoreResult,
};

/// Jobs, bulk batches, job logs and command results. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates many jobs in one transaction (the server's own follow-ups
    /// to a fleet-wide change, such as initialising new repositories).
    async fn create_jobs(&self, jobs: &[NewJob]) -> StoreResult<Vec<Job>>;

    /// Creates the jobs of one bulk action in one transaction, all in
    /// batch `batch`, of which at most `max_parallel` run at a time per
    /// repository.
    async fn create_batch_jobs(
        &self,
        batch: BatchId,
        max_parallel: u32,
        jobs: &[NewJob],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<Job>>;

    /// Creates `job` unless a job was already created under `fire_key` (a
    /// shared repository's policy prune or check, fired by each of its
    /// hosts at once): returns the job that holds the key, and whether it
    /// is the one just made.
    async fn create_job_once(&self, job: &NewJob, fire_key: &str) -> StoreResult<(Job, bool)>;

    /// Creates a job in status `queued`. Creating the same id twice is a
    /// [`crate::StoreError::Conflict`]; an unknown host is [`crate::StoreError::NotFound`].
    async fn create_job(&self, job: &NewJob, audit: Option<&NewAuditEntry>) -> StoreResult<Job>;

    /// A job by id.
    async fn job(&self, id: JobId) -> StoreResult<Option<Job>>;

    /// Jobs matching `filter`, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;

    /// The newest job of `kind` in `status` of every host that has one
    /// (newest by `finished_at`, then id), by host id, in one query
    /// however many hosts there are (the fleet's last successful drills).
    async fn latest_jobs_per_host(&self, kind: &str, status: JobStatus) -> StoreResult<Vec<Job>>;

    /// The host's jobs that are dispatched or running.
    async fn active_jobs(&self, host: HostId) -> StoreResult<Vec<Job>>;

    /// The host's oldest queued job, but only when none of its jobs is
    /// dispatched or running (a host runs one job at a time, in order).
    async fn next_dispatchable_job(&self, host: HostId) -> StoreResult<Option<Job>>;

    /// Hosts that have queued jobs (for dispatch after a restart).
    async fn hosts_with_queued_jobs(&self) -> StoreResult<Vec<HostId>>;

    /// Hosts that have dispatched or running jobs (to watch for agents
    /// that do not come back after a restart).
    async fn hosts_with_active_jobs(&self) -> StoreResult<Vec<HostId>>;

    /// Moves job `id` to `to` (`dispatched` or `running`, setting
    /// `dispatched_at` / `started_at` to `at`; or back to `queued`, clearing
    /// `dispatched_at`) if its current status may become `to`
    /// ([`JobStatus::can_become`]). Returns whether it moved; a repeated or
    /// late move changes nothing.
    async fn advance_job(&self, id: JobId, to: JobStatus, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Records how job `id` ended, if it has not ended already (idempotent),
    /// or if its end so far is a provisional verdict and `end` is not (the
    /// agent's real end replacing the server's guess). For a finished
    /// `backup` job it also updates the host's last backup time and
    /// status. Returns whether it changed anything.
    async fn finish_job(
        &self,
        id: JobId,
        end: &JobEnd,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    /// Stores log lines of any number of jobs in one transaction. Lines
    /// already stored (same job and seq) are skipped, so a replay stores
    /// nothing twice. Returns how many were new.
    async fn append_logs(&self, lines: &[LogLineRecord]) -> StoreResult<u64>;

    /// A job's lines with `seq > after_seq`, in order, at most `limit`.
    async fn logs(&self, job: JobId, after_seq: u64, limit: u32)
        -> StoreResult<Vec<LogLineRecord>>;

    /// Stores an agent's answer to a `command.run` (the latest answer per
    /// job wins).
    async fn record_command_result(&self, result: &CommandResultRecord) -> StoreResult<()>;

    /// The stored answer for a job.
    async fn command_result(&self, job: JobId) -> StoreResult<Option<CommandResultRecord>>;
}
