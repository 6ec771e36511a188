//! A host's own settings — name, labels, freshness — changed in one place
//! for `PATCH /api/v1/hosts/{id}` and the host page's settings form, so
//! both check, audit, store and re-apply policies the same way.

use rm_core::{HostId, Labels};
use rm_protocol::api::PatchHost;
use rm_store::{Host, HostPatch, StoreError};

use crate::audit::{Action, Audit, Target};
use crate::policies::PolicyError;
use crate::state::AppState;

/// What can go wrong changing a host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The request breaks a rule; names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such (live) host.
    #[error("host `{0}` not found")]
    NotFound(HostId),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Applying the policies to the changed host failed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl From<StoreError> for HostError {
    fn from(e: StoreError) -> Self {
        HostError::Store(e)
    }
}

/// Checks `req` (nothing changes when a field is bad), stores it with its
/// audit entry by `by`, and — when the labels or the name changed, which
/// may change the winning policy or `{host}` in its repository template —
/// applies the policies to the host before returning it.
pub(crate) async fn patch(
    state: &AppState,
    id: HostId,
    req: &PatchHost,
    by: Option<&Audit>,
) -> Result<Host, HostError> {
    let name = req
        .name
        .as_deref()
        .map(|n| crate::enrollment::validate_label("name", n, crate::enrollment::MAX_NAME_CHARS))
        .transpose()
        .map_err(|e| HostError::Invalid(e.to_string()))?;
    let labels = req
        .labels
        .clone()
        .map(|l| Labels::parse("labels", l))
        .transpose()
        .map_err(|e| HostError::Invalid(e.to_string()))?;
    if let Some(Some(seconds)) = req.freshness_seconds {
        crate::policies::check_freshness("freshness_seconds", seconds)
            .map_err(HostError::Invalid)?;
    }
    if let Some(Some(seconds)) = req.offline_seconds {
        crate::policies::check_freshness("offline_seconds", seconds).map_err(HostError::Invalid)?;
    }
    let patch = HostPatch {
        name,
        labels,
        freshness_seconds: req.freshness_seconds,
        offline_seconds: req.offline_seconds,
    };
    let entry = by.map(|by| {
        by.entry(
            Action::HostUpdate,
            Some(Target::new("host", id)),
            serde_json::json!({
                "name": patch.name,
                "labels": patch.labels.as_ref().map(|l| l.to_string()),
                "freshness_seconds": patch.freshness_seconds,
                "offline_seconds": patch.offline_seconds,
            }),
        )
    });
    let host = match state.store().patch_host(id, &patch, entry.as_ref()).await {
        Err(StoreError::NotFound(_)) => return Err(HostError::NotFound(id)),
        other => other?,
    };
    crate::alerts::host_changed(state, id);
    let host = if patch.labels.is_some() || patch.name.is_some() {
        crate::policies::reconcile(state, Some(&[id]), None, None).await?;
        state.fleet_changed();
        state.store().host(id).await?.unwrap_or(host)
    } else {
        state.fleet_changed();
        host
    };
    Ok(host)
}
