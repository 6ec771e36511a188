//! The store's part for fleet policies and what they apply to.

use async_trait::async_trait;
use rm_core::{HostId, PolicyId};

use crate::{
    Host, HostPolicyChange, NewAuditEntry, PolicyCoverage, PolicyRecord, PolicyTarget, PolicyWrite,
    StoreResult,
};

/// Fleet policies and what they apply to. Part of [`crate::Store`], whose
/// rules (one transaction per method, audit entries written with the
/// change) hold for every method here.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Every policy, oldest first.
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>>;

    /// A policy by id.
    async fn policy(&self, id: PolicyId) -> StoreResult<Option<PolicyRecord>>;

    /// What the reconciler needs of `hosts` (every live host when `None`),
    /// in id order.
    async fn policy_targets(&self, hosts: Option<&[HostId]>) -> StoreResult<Vec<PolicyTarget>>;

    /// The policy generation: moved on by every
    /// [`PolicyStore::apply_policy_changes`]. A reconciler reads it before
    /// what it decides from, and writes only if it has not moved since.
    async fn policy_generation(&self) -> StoreResult<u64>;

    /// Writes `policy` (if any) and every host's change in one transaction,
    /// bumping the schedule version once for each host whose schedules
    /// change. Returns those hosts with their new versions.
    ///
    /// `generation` is the [`PolicyStore::policy_generation`] the changes
    /// were decided at: if another change was applied since (by another
    /// server), nothing is written and the answer is
    /// [`crate::StoreError::Stale`]. Of two applying at once, one waits for
    /// the other and then finds the generation moved.
    async fn apply_policy_changes(
        &self,
        generation: u64,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>>;

    /// The live hosts a policy applies to, by name.
    async fn hosts_of_policy(&self, id: PolicyId) -> StoreResult<Vec<Host>>;

    /// How many hosts each policy applies to, and how many are in sync.
    async fn policy_coverage(&self) -> StoreResult<Vec<PolicyCoverage>>;
}
