//! Rows of fleet policies.

use rm_core::Selector;
use rm_store::{
    PolicyCoverage, PolicyRecord, PolicyTarget, SealFormat, SealedRepository, StoreError,
};

use crate::{decode, JoinedRepositoryRow};

/// Columns selected for a [`PolicyRow`].
pub const POLICY_COLUMNS: &str = "id, name, selector, priority, repository_nonce, \
     repository_ciphertext, schedules, freshness_seconds, offline_seconds, created_at, updated_at";

/// A `policies` row.
#[derive(Debug, sqlx::FromRow)]
pub struct PolicyRow {
    /// Column `id`.
    pub id: String,
    /// Column `name`.
    pub name: String,
    /// Column `selector`.
    pub selector: String,
    /// Column `priority`.
    pub priority: i64,
    /// Column `repository_nonce`.
    pub repository_nonce: Option<Vec<u8>>,
    /// Column `repository_ciphertext`.
    pub repository_ciphertext: Option<Vec<u8>>,
    /// Column `schedules`.
    pub schedules: String,
    /// Column `freshness_seconds`.
    pub freshness_seconds: Option<i64>,
    /// Column `offline_seconds`.
    pub offline_seconds: Option<i64>,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `updated_at`.
    pub updated_at: i64,
}

impl TryFrom<PolicyRow> for PolicyRecord {
    type Error = StoreError;

    fn try_from(r: PolicyRow) -> Result<PolicyRecord, StoreError> {
        let updated_at = decode::time("updated_at", r.updated_at)?;
        Ok(PolicyRecord {
            id: decode::id("id", r.id)?,
            name: r.name,
            selector: Selector(decode::labels("selector", &r.selector)?),
            priority: decode::int("priority", r.priority)?,
            repository: match (r.repository_nonce, r.repository_ciphertext) {
                (Some(nonce), Some(ciphertext)) => Some(SealedRepository {
                    nonce,
                    ciphertext,
                    format: SealFormat::OwnerBound,
                    updated_at,
                }),
                _ => None,
            },
            schedules: decode::json("schedules", &r.schedules)?,
            freshness_seconds: decode::int_opt("freshness_seconds", r.freshness_seconds)?,
            offline_seconds: decode::int_opt("offline_seconds", r.offline_seconds)?,
            created_at: decode::time("created_at", r.created_at)?,
            updated_at,
        })
    }
}

/// What the policy reconciler reads of a live host (`hosts` `LEFT JOIN
/// host_repositories`): `host_id, name, labels, policy_id,
/// repository_policy_id` and the repository columns.
#[derive(Debug, sqlx::FromRow)]
pub struct PolicyTargetRow {
    /// Column `host_id`.
    pub host_id: String,
    /// Column `name`.
    pub name: String,
    /// Column `labels`.
    pub labels: String,
    /// Column `policy_id` (the host's policy).
    pub policy_id: Option<String>,
    /// Column `repository_policy_id` (the policy its settings came from).
    pub repository_policy_id: Option<String>,
    /// The joined settings' columns.
    #[sqlx(flatten)]
    pub repository: JoinedRepositoryRow,
}

impl TryFrom<PolicyTargetRow> for PolicyTarget {
    type Error = StoreError;

    /// The target without its schedules, which are read separately.
    fn try_from(r: PolicyTargetRow) -> Result<PolicyTarget, StoreError> {
        let repository = match r.repository.into_repository()? {
            Some(sealed) => Some((
                decode::id_opt("repository_policy_id", r.repository_policy_id)?,
                sealed,
            )),
            None => None,
        };
        Ok(PolicyTarget {
            host_id: decode::id("host_id", r.host_id)?,
            name: r.name,
            labels: decode::labels("labels", &r.labels)?,
            policy_id: decode::id_opt("policy_id", r.policy_id)?,
            repository,
            own_schedule_kinds: Vec::new(),
            policy_schedules: Vec::new(),
        })
    }
}

/// A row of `PolicyStore::policy_coverage`: a policy and two counts of its
/// live hosts (`COUNT`s, BIGINT on PostgreSQL, so `i64` on both).
#[derive(Debug, sqlx::FromRow)]
pub struct PolicyCoverageRow {
    /// Column `policy_id`.
    pub policy_id: String,
    /// Column `hosts`: how many live hosts it applies to.
    pub hosts: i64,
    /// Column `in_sync`: how many of them run the wanted schedule set.
    pub in_sync: i64,
}

impl TryFrom<PolicyCoverageRow> for PolicyCoverage {
    type Error = StoreError;

    fn try_from(r: PolicyCoverageRow) -> Result<PolicyCoverage, StoreError> {
        Ok(PolicyCoverage {
            policy_id: decode::id("policy_id", r.policy_id)?,
            hosts: decode::int("hosts", r.hosts)?,
            in_sync: decode::int("in_sync", r.in_sync)?,
        })
    }
}
