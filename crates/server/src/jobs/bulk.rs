//! Bulk actions: one job on every connected host a selector matches
//! (`POST /api/v1/jobs`), stored in one transaction as one batch, of which
//! at most `max_parallel` run at a time per repository (see
//! `crate::repositories::shared`). Hosts that cannot take the job now are
//! listed with the reason instead.

use rm_core::{BatchId, JobId, JobTrigger, Labels, Selector};
use rm_protocol::api::{BulkJobCreated, BulkJobRequest, SkippedHost};
use rm_protocol::params::JobParams;
use rm_protocol::JobKind;
use rm_store::NewAuditEntry;

use super::{prepare, view, JobError, JobRequest};
use crate::state::AppState;

/// Largest `max_parallel`; also the default (no limit beyond the
/// repository's own).
pub const MAX_PARALLEL: u32 = 1000;

/// Starts `req.kind` on every matching connected host (within `scope`,
/// when the caller has one). `audit` builds the
/// entry from the batch id and how many jobs it made.
pub async fn create(
    state: &AppState,
    req: &BulkJobRequest,
    scope: Option<&Selector>,
    audit: Option<&(dyn Fn(BatchId, usize) -> NewAuditEntry + Send + Sync)>,
) -> Result<BulkJobCreated, JobError> {
    let selector = Labels::parse("selector", req.selector.clone())
        .map(Selector)
        .map_err(|e| JobError::Invalid(e.to_string()))?;
    let kind: JobKind = req
        .kind
        .parse()
        .map_err(|e: String| JobError::Invalid(format!("`kind`: {e}")))?;
    if matches!(kind, JobKind::Restore) {
        return Err(JobError::Invalid(String::from(
            "`kind`: `restore` is started on one host (POST /api/v1/hosts/{id}/jobs), not on a selection",
        )));
    }
    JobParams::parse(kind, &req.params).map_err(|e| JobError::Invalid(e.to_string()))?;
    let max_parallel = req.max_parallel.unwrap_or(MAX_PARALLEL);
    if !(1..=MAX_PARALLEL).contains(&max_parallel) {
        return Err(JobError::Invalid(format!(
            "`max_parallel` must be from 1 to {MAX_PARALLEL}, not {max_parallel}"
        )));
    }
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    // A scoped user's selection is cut to their scope: hosts outside it
    // are neither started nor named among the skipped.
    let selected = match scope {
        None => state.store().hosts_matching(&selector).await?,
        Some(scope) => match crate::access::intersect(scope, &selector) {
            Some(both) => state.store().hosts_matching(&both).await?,
            None => Vec::new(),
        },
    };
    for host in selected {
        let reason = if host.agent_revoked_at.is_some() {
            Some(String::from("its agent was revoked"))
        } else if !crate::cluster::online(state, &host) {
            Some(String::from("offline"))
        } else {
            None
        };
        if let Some(reason) = reason {
            skipped.push(SkippedHost {
                host_id: host.id.to_string(),
                name: host.name,
                reason,
            });
            continue;
        }
        let request = JobRequest {
            id: JobId::new(),
            host: host.id,
            kind,
            params: &req.params,
            trigger: JobTrigger::Manual,
            schedule: None,
            scope: None,
        };
        match prepare(state, &request).await {
            Ok(job) => jobs.push(job),
            Err(JobError::Store(e)) => return Err(JobError::Store(e)),
            Err(e) => skipped.push(SkippedHost {
                host_id: host.id.to_string(),
                name: host.name,
                reason: e.to_string(),
            }),
        }
    }
    let batch = BatchId::new();
    let entry = audit.map(|entry_for| entry_for(batch, jobs.len()));
    let created = if jobs.is_empty() {
        Vec::new()
    } else {
        state
            .store()
            .create_batch_jobs(batch, max_parallel, &jobs, entry.as_ref())
            .await?
    };
    tracing::info!(%batch, kind = %kind, jobs = created.len(), skipped = skipped.len(), "bulk jobs queued");
    state.fleet_changed();
    // Dispatched in the background: a selection of thousands must not hold
    // the request.
    let hosts: Vec<_> = created.iter().map(|j| j.host_id).collect();
    let dispatcher = state.clone();
    tokio::spawn(async move {
        for host in hosts {
            super::dispatch_next(&dispatcher, host).await;
        }
    });
    Ok(BulkJobCreated {
        batch_id: batch.to_string(),
        jobs: created.iter().map(view).collect(),
        skipped,
    })
}
