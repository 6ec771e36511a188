//! The store's part for hosts' schedules, their versions and
//! acknowledgements.

use async_trait::async_trait;
use rm_core::{HostId, ScheduleId};

use crate::{Job, NewAuditEntry, ScheduleRecord, StoreError, StoreResult};

/// Hosts' schedules, their versions and acknowledgements. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Adds a schedule and bumps its host's schedule version, in one
    /// transaction. Returns the new version. Unknown or deleted host:
    /// [`StoreError::NotFound`].
    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64>;

    /// Replaces a schedule's fields (not its id, host or creation time) and
    /// bumps the host's schedule version. Returns the new version.
    async fn update_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64>;

    /// Deletes a schedule and bumps the host's version. Returns the host and
    /// the new version; [`StoreError::NotFound`] when there is no such
    /// schedule.
    async fn delete_schedule(
        &self,
        id: ScheduleId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<(HostId, u64)>;

    /// A schedule by id.
    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<ScheduleRecord>>;

    /// A host's schedule version and all its schedules (creation order),
    /// read together so they match. [`StoreError::NotFound`] for an unknown
    /// or deleted host.
    async fn schedule_set(&self, host: HostId) -> StoreResult<(u64, Vec<ScheduleRecord>)> {
        self.schedule_sets(&[host])
            .await?
            .into_iter()
            .next()
            .map(|(_, version, schedules)| (version, schedules))
            .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))
    }

    /// [`Self::schedule_set`] of many hosts at once, all read together
    /// (pushing a policy change to 10,000 agents); unknown or deleted hosts
    /// are left out.
    async fn schedule_sets(
        &self,
        hosts: &[HostId],
    ) -> StoreResult<Vec<(HostId, u64, Vec<ScheduleRecord>)>>;

    /// Records that the agent runs schedule-set `version` now. The applied
    /// version only moves forward. Returns whether it changed.
    async fn record_schedule_ack(&self, host: HostId, version: u64) -> StoreResult<bool> {
        Ok(!self
            .record_schedule_acks(&[(host, version)])
            .await?
            .is_empty())
    }

    /// [`Self::record_schedule_ack`] of many acknowledgements in one
    /// transaction, ending as if written one by one (of a host acknowledged
    /// twice, the highest version issued counts); returns the hosts whose
    /// applied version changed, with it.
    async fn record_schedule_acks(&self, acks: &[(HostId, u64)])
        -> StoreResult<Vec<(HostId, u64)>>;

    /// The schedule's jobs that are queued, dispatched or running.
    async fn active_jobs_of_schedule(&self, schedule: ScheduleId) -> StoreResult<Vec<Job>>;
}
