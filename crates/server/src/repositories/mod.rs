//! Repository settings per host: sealed before they are stored, opened only
//! to hand them to an agent over its authenticated socket.
//!
//! Settings must pass `params::validate_repository` (the `env` allow-list)
//! to be stored. Settings stored before a rule existed stay stored, but are
//! checked at start-up and whenever they are opened for use: those that
//! break a rule are recorded as refused (shown on the host) and never
//! pushed or used, until an operator sets usable ones.
//!
//! A host's settings are its own (set here) or given by its policy (see
//! `crate::policies`); its own win. [`shared`] decides which jobs of the
//! hosts sharing one repository may run at once.

pub mod shared;

use rm_core::{HostId, JobId, JobTrigger};
use rm_protocol::api::{CopyTargetView, RepositoryView};
use rm_protocol::{AgentSettings, ConfigUpdate, Frame, JobKind, RepositoryConfig};

use crate::audit::EntryFor;
use crate::cluster::bus::{self, Pushed, Signal};
use crate::jobs::{self, JobError, JobRequest};
use crate::state::AppState;

/// Why settings could not be stored or read back.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The settings break a rule; names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such host.
    #[error("host `{0}` not found")]
    HostNotFound(HostId),
    /// Stored settings break the current rules (stored before the rule
    /// existed); they are not used until new settings are set.
    #[error("repository settings refused: {0}")]
    Refused(String),
    /// Stored settings could not be opened (the key file changed?).
    #[error("stored repository settings could not be opened: {0}")]
    Unsealable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] rm_store::StoreError),
    /// Queueing the initialisation job failed.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Stores `config` for `host`, pushes it to the agent if connected, and
/// queues an `init` job (a no-op when the repository already exists), so a
/// new repository is ready before the first backup.
///
/// `audit` builds the audit entry written with the settings, given the id
/// the `init` job will have. The job is the server's own follow-up, queued
/// after the settings are stored: should that fail, the settings and their
/// entry stand, and setting them again queues it.
pub async fn set(
    state: &AppState,
    host: HostId,
    config: &RepositoryConfig,
    audit: Option<EntryFor<'_, JobId>>,
) -> Result<JobId, RepositoryError> {
    rm_protocol::params::validate_repository(config)
        .map_err(|e| RepositoryError::Invalid(e.to_string()))?;
    if state.store().host(host).await?.is_none() {
        return Err(RepositoryError::HostNotFound(host));
    }
    let plaintext =
        serde_json::to_vec(config).map_err(|e| RepositoryError::Unsealable(e.to_string()))?;
    let sealed = crate::sealing::seal_repository(state.sealing_key(), host, &plaintext)
        .map_err(|e| RepositoryError::Unsealable(e.to_string()))?;
    let init_id = JobId::new();
    let entry = audit.map(|entry_for| entry_for(&init_id));
    let key = crate::policies::effective::repository_key(&config.url);
    state
        .store()
        .set_repository(host, &sealed, &key, entry.as_ref())
        .await?;
    {
        let _push = state.hub().push_lock(host).await;
        match state.hub().get(host) {
            Some(conn) => {
                if let Err(e) = conn.send(Frame::new(config_update(state, Some(config.clone())))) {
                    tracing::warn!(%host, error = %e, "could not push new repository settings; the agent gets them on reconnect");
                }
            }
            None => bus::send(
                state,
                Signal::Push {
                    host,
                    what: Pushed::Repository,
                },
            ),
        }
    }
    let request = JobRequest {
        id: init_id,
        host,
        kind: JobKind::Init,
        params: &serde_json::Value::Null,
        trigger: JobTrigger::System,
        schedule: None,
        scope: None,
    };
    let init = jobs::create(state, &request, None).await?;
    tracing::info!(%host, init_job = %init.id, "repository settings stored");
    Ok(init.id)
}

/// Removes the host's own settings; the repository its policy gives (if
/// any) then applies, and is pushed. Returns whether it had own settings.
pub async fn delete_own(
    state: &AppState,
    host: HostId,
    audit: Option<&rm_store::NewAuditEntry>,
) -> Result<bool, RepositoryError> {
    if state.store().host(host).await?.is_none() {
        return Err(RepositoryError::HostNotFound(host));
    }
    if !state.store().delete_own_repository(host, audit).await? {
        return Ok(false);
    }
    if let Err(e) = crate::policies::reconcile(state, Some(&[host]), None, None).await {
        tracing::error!(%host, "could not apply the host's policy after its own repository was removed: {e}");
    }
    push(state, host).await;
    Ok(true)
}

/// Sends the host's current settings (or none) to its agent, if connected
/// here; the server holding its connection is asked to otherwise.
pub(crate) async fn push(state: &AppState, host: HostId) {
    if !state.hub().is_connected(host) {
        bus::send(
            state,
            Signal::Push {
                host,
                what: Pushed::Repository,
            },
        );
        return;
    }
    let config = match usable(state, host).await {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(%host, "repository settings not pushed: {e}");
            None
        }
    };
    let _push = state.hub().push_lock(host).await;
    if let Some(conn) = state.hub().get(host) {
        if let Err(e) = conn.send(Frame::new(config_update(state, config))) {
            tracing::warn!(%host, error = %e, "could not push repository settings; the agent gets them on reconnect");
        }
    }
}

/// Records the identity of stored settings that have none (stored before
/// identities existed), so shared repositories are known from the start.
pub async fn fill_keys(state: &AppState) -> Result<usize, RepositoryError> {
    let mut filled = 0;
    for host in state.store().list_hosts().await? {
        if !host.has_repository || host.repository_key.is_some() {
            continue;
        }
        match get(state, host.id).await {
            Ok(Some(config)) => {
                let key = crate::policies::effective::repository_key(&config.url);
                state.store().set_repository_key(host.id, &key).await?;
                filled += 1;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(host = %host.id, "repository identity unknown: {e}"),
        }
    }
    Ok(filled)
}

/// The host's settings, opened.
pub async fn get(
    state: &AppState,
    host: HostId,
) -> Result<Option<RepositoryConfig>, RepositoryError> {
    let Some(sealed) = state.store().repository(host).await? else {
        return Ok(None);
    };
    let plaintext = crate::sealing::open_repository(state.sealing_key(), host, &sealed)
        .map_err(|e| RepositoryError::Unsealable(e.to_string()))?;
    serde_json::from_slice(&plaintext)
        .map(Some)
        .map_err(|e| RepositoryError::Unsealable(e.to_string()))
}

/// The host's settings, opened and checked against the current rules:
/// settings that break them are recorded as refused (for the host's page)
/// and returned as [`RepositoryError::Refused`], never as settings to use.
pub async fn usable(
    state: &AppState,
    host: HostId,
) -> Result<Option<RepositoryConfig>, RepositoryError> {
    let Some(config) = get(state, host).await? else {
        return Ok(None);
    };
    match rm_protocol::params::validate_repository(&config) {
        Ok(()) => Ok(Some(config)),
        Err(e) => {
            let reason = e.to_string();
            record_refusal(state, host, Some(&reason)).await;
            Err(RepositoryError::Refused(reason))
        }
    }
}

/// Checks every stored repository against the current rules and records
/// the verdict (refused with the reason, or usable), so hosts show it from
/// the start. Settings that cannot be opened are logged and left alone.
/// Returns how many are refused.
pub async fn check_stored(state: &AppState) -> Result<usize, RepositoryError> {
    let mut refused = 0;
    for (host, sealed, recorded) in state.store().repositories().await? {
        let opened = crate::sealing::open_repository(state.sealing_key(), host, &sealed)
            .map_err(|e| e.to_string())
            .and_then(|plain| {
                serde_json::from_slice::<RepositoryConfig>(&plain).map_err(|e| e.to_string())
            });
        let config = match opened {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(%host, "stored repository settings could not be opened: {e}");
                continue;
            }
        };
        let verdict = rm_protocol::params::validate_repository(&config)
            .err()
            .map(|e| e.to_string());
        if let Some(reason) = &verdict {
            refused += 1;
            tracing::warn!(%host, "stored repository settings refused; set them again: {reason}");
        }
        if verdict != recorded {
            state
                .store()
                .set_repository_refused(host, verdict.as_deref())
                .await?;
        }
    }
    Ok(refused)
}

/// Records a refusal found while opening settings; a failure to record is
/// only logged (the settings are refused either way).
async fn record_refusal(state: &AppState, host: HostId, reason: Option<&str>) {
    if let Err(e) = state.store().set_repository_refused(host, reason).await {
        tracing::error!(%host, "could not record refused repository settings: {e}");
    }
}

/// The settings as shown back to operators: no password, no env values.
pub async fn view(
    state: &AppState,
    host: HostId,
) -> Result<Option<RepositoryView>, RepositoryError> {
    let Some(sealed) = state.store().repository(host).await? else {
        return Ok(None);
    };
    let updated_at = sealed.updated_at;
    let config = get(state, host).await?;
    if let Some(Err(e)) = config
        .as_ref()
        .map(rm_protocol::params::validate_repository)
    {
        record_refusal(state, host, Some(&e.to_string())).await;
    }
    let host_row = state.store().host(host).await?;
    let policy_id = host_row.and_then(|h| h.repository_policy_id);
    Ok(config.map(|c| RepositoryView {
        // A REST URL may carry a password; it is never shown back.
        url: rm_core::redact::redact_url(&c.url),
        env_keys: c.env.into_keys().collect(),
        copy_to: c.copy_to.map(|t| CopyTargetView {
            url: rm_core::redact::redact_url(&t.url),
            env_keys: t.env.into_keys().collect(),
        }),
        updated_at,
        source: String::from(if policy_id.is_some() {
            "policy"
        } else {
            "host"
        }),
        policy_id: policy_id.map(|p| p.to_string()),
    }))
}

/// Refuses a `copy` job for a host whose repository has no `copy_to`
/// (409, like a job on a host without a repository): the agent would
/// refuse it too, but the operator should learn it when asking.
pub async fn require_copy_target(state: &AppState, host: HostId) -> Result<(), JobError> {
    match get(state, host).await {
        Ok(Some(config)) if config.copy_to.is_some() => Ok(()),
        Ok(_) => Err(JobError::NoRepository(format!(
            "host `{host}` has no `copy_to` repository to copy to; PUT /api/v1/hosts/{host}/repository with `copy_to` first"
        ))),
        Err(RepositoryError::Store(e)) => Err(JobError::Store(e)),
        Err(e) => Err(JobError::NoRepository(e.to_string())),
    }
}

/// The `config.update` for a host: its repository (if any) and settings.
pub fn config_update(state: &AppState, repository: Option<RepositoryConfig>) -> ConfigUpdate {
    ConfigUpdate {
        repository,
        settings: AgentSettings {
            heartbeat_seconds: state.config().heartbeat_seconds,
        },
    }
}
