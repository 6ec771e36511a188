//! Rows of hosts' schedules.

use rm_store::{ScheduleRecord, StoreError};

use crate::{decode, Flag};

/// Columns selected for a [`ScheduleRow`].
pub const SCHEDULE_COLUMNS: &str = "id, host_id, kind, cron, timezone, params, enabled, \
     jitter_seconds, created_at, updated_at, policy_id, policy_schedule_id";

/// [`SCHEDULE_COLUMNS`] qualified by their table (for joins).
pub const SCHEDULE_COLUMNS_QUALIFIED: &str = "schedules.id AS id, \
     schedules.host_id AS host_id, schedules.kind AS kind, schedules.cron AS cron, \
     schedules.timezone AS timezone, schedules.params AS params, schedules.enabled AS enabled, \
     schedules.jitter_seconds AS jitter_seconds, schedules.created_at AS created_at, \
     schedules.updated_at AS updated_at, schedules.policy_id AS policy_id, \
     schedules.policy_schedule_id AS policy_schedule_id";

/// A `schedules` row.
#[derive(Debug, sqlx::FromRow)]
pub struct ScheduleRow {
    /// Column `id`.
    pub id: String,
    /// Column `host_id`.
    pub host_id: String,
    /// Column `kind`.
    pub kind: String,
    /// Column `cron`.
    pub cron: String,
    /// Column `timezone`.
    pub timezone: Option<String>,
    /// Column `params`.
    pub params: String,
    /// Column `enabled`.
    pub enabled: Flag,
    /// Column `jitter_seconds`.
    pub jitter_seconds: i64,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `updated_at`.
    pub updated_at: i64,
    /// Column `policy_id`.
    pub policy_id: Option<String>,
    /// Column `policy_schedule_id`.
    pub policy_schedule_id: Option<String>,
}

impl TryFrom<ScheduleRow> for ScheduleRecord {
    type Error = StoreError;

    fn try_from(r: ScheduleRow) -> Result<ScheduleRecord, StoreError> {
        Ok(ScheduleRecord {
            id: decode::id("id", r.id)?,
            host_id: decode::id("host_id", r.host_id)?,
            kind: r.kind,
            cron: r.cron,
            timezone: r.timezone,
            params: decode::json("params", &r.params)?,
            enabled: r.enabled.into(),
            jitter_seconds: decode::int("jitter_seconds", r.jitter_seconds)?,
            created_at: decode::time("created_at", r.created_at)?,
            updated_at: decode::time("updated_at", r.updated_at)?,
            policy: match (
                decode::id_opt("policy_id", r.policy_id)?,
                decode::id_opt("policy_schedule_id", r.policy_schedule_id)?,
            ) {
                (Some(policy), Some(schedule)) => Some((policy, schedule)),
                _ => None,
            },
        })
    }
}

/// A host with one of its schedule-set versions (`id`, `version`): the
/// version issued (`schedule_version AS version`) or the one the agent
/// acknowledged (`schedule_applied_version AS version`).
#[derive(Debug, sqlx::FromRow)]
pub struct HostVersionRow {
    /// Column `id` (the host's).
    pub id: String,
    /// The version, selected `AS version`.
    pub version: i64,
}

impl TryFrom<HostVersionRow> for (rm_core::HostId, u64) {
    type Error = StoreError;

    fn try_from(r: HostVersionRow) -> Result<(rm_core::HostId, u64), StoreError> {
        Ok((decode::id("id", r.id)?, decode::int("version", r.version)?))
    }
}
