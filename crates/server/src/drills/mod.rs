//! Restore drills on the server's side (DESIGN §10): a host's drills with
//! their evidence, and the fleet's view of which hosts proved a restore
//! recently.
//!
//! A drill is an ordinary job of kind `drill` (queued, dispatched,
//! scheduled and alerted on like any other); its `stats` are the agent's
//! [`DrillStats`]. This module only reads them back, typed, for the API
//! (`GET /api/v1/hosts/{id}/drills`, `GET /api/v1/drills`) and the web UI,
//! so both show the same thing.

use chrono::{DateTime, Duration, Utc};
use rm_core::{HostId, JobId, JobStatus, Selector};
use rm_protocol::drill::{DrillStats, DrillView, FleetDrillRow, FleetDrills};
use rm_store::{Job, JobFilter, StoreError};

use crate::state::AppState;

/// The job kind of a drill.
pub(crate) const KIND: &str = "drill";
/// The fleet view's window when none is asked for.
pub(crate) const DEFAULT_WITHIN_DAYS: u32 = 30;
/// The longest window the fleet view takes (ten years).
pub(crate) const MAX_WITHIN_DAYS: u32 = 3650;

/// A drill job as listed: the job and its typed statistics. The job's
/// own `stats` are left out once they are typed in `drill`: the evidence
/// of a large sample is not sent twice.
pub(crate) fn view(job: &Job) -> DrillView {
    let drill = stats(job);
    let mut view = crate::jobs::view(job);
    if drill.is_some() {
        view.stats = serde_json::Value::Null;
    }
    DrillView { job: view, drill }
}

/// A drill's statistics, when it ended with some.
pub(crate) fn stats(job: &Job) -> Option<DrillStats> {
    if job.stats.is_null() {
        return None;
    }
    serde_json::from_value(job.stats.clone()).ok()
}

/// `host`'s drills, newest first: `limit` of them older than `before`.
pub(crate) async fn of_host(
    state: &AppState,
    host: HostId,
    before: Option<JobId>,
    limit: u32,
) -> Result<Vec<DrillView>, StoreError> {
    let jobs = state
        .store()
        .list_jobs(&JobFilter {
            host_id: Some(host),
            kind: Some(String::from(KIND)),
            before,
            limit,
            ..JobFilter::default()
        })
        .await?;
    Ok(jobs.iter().map(view).collect())
}

/// Every host `scope` lets the caller see, each with its last successful
/// drill and whether that ended within `within_days` of `now`; hosts
/// without one first, then by name.
pub(crate) async fn fleet(
    state: &AppState,
    scope: Option<&Selector>,
    within_days: u32,
    now: DateTime<Utc>,
) -> Result<FleetDrills, StoreError> {
    let everything = Selector::default();
    let hosts = state
        .store()
        .hosts_matching(scope.unwrap_or(&everything))
        .await?;
    let latest = state
        .store()
        .latest_jobs_per_host(KIND, JobStatus::Succeeded)
        .await?;
    let since = now - Duration::days(i64::from(within_days));
    let mut rows: Vec<FleetDrillRow> = hosts
        .iter()
        .map(|host| {
            let last = latest.iter().find(|j| j.host_id == host.id);
            let stats = last.and_then(stats);
            let at = last.and_then(|j| j.finished_at);
            FleetDrillRow {
                host_id: host.id.to_string(),
                host_name: host.name.clone(),
                drilled: at.is_some_and(|at| at >= since),
                last_success_job_id: last.map(|j| j.id.to_string()),
                last_success_at: at,
                files_verified: stats.as_ref().map(|s| s.files_verified),
                restore_bytes_per_second: stats.as_ref().map(|s| s.restore_bytes_per_second),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        a.drilled
            .cmp(&b.drilled)
            .then_with(|| a.host_name.cmp(&b.host_name))
    });
    let drilled = rows.iter().filter(|r| r.drilled).count() as u64;
    Ok(FleetDrills {
        within_days,
        drilled,
        not_drilled: rows.len() as u64 - drilled,
        hosts: rows,
    })
}
