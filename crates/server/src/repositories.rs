//! Repository settings per host: sealed before they are stored, opened only
//! to hand them to an agent over its authenticated socket.

use rm_core::{HostId, JobTrigger};
use rm_protocol::api::RepositoryView;
use rm_protocol::{AgentSettings, ConfigUpdate, Frame, JobKind, RepositoryConfig};

use crate::jobs::{self, JobError};
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
pub async fn set(
    state: &AppState,
    host: HostId,
    config: &RepositoryConfig,
) -> Result<rm_core::JobId, RepositoryError> {
    rm_protocol::params::validate_repository(config)
        .map_err(|e| RepositoryError::Invalid(e.to_string()))?;
    if state.store().host(host).await?.is_none() {
        return Err(RepositoryError::HostNotFound(host));
    }
    let plaintext =
        serde_json::to_vec(config).map_err(|e| RepositoryError::Unsealable(e.to_string()))?;
    let sealed = crate::sealing::seal_repository(state.sealing_key(), host, &plaintext)
        .map_err(|e| RepositoryError::Unsealable(e.to_string()))?;
    state.store().set_repository(host, &sealed).await?;
    {
        let _push = state.hub().push_lock(host).await;
        if let Some(conn) = state.hub().get(host) {
            if let Err(e) = conn.send(Frame::new(config_update(state, Some(config.clone())))) {
                tracing::warn!(%host, error = %e, "could not push new repository settings; the agent gets them on reconnect");
            }
        }
    }
    let init = jobs::create(
        state,
        host,
        JobKind::Init,
        &serde_json::Value::Null,
        JobTrigger::System,
        None,
    )
    .await?;
    tracing::info!(%host, init_job = %init.id, "repository settings stored");
    Ok(init.id)
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
    Ok(config.map(|c| RepositoryView {
        // A REST URL may carry a password; it is never shown back.
        url: rm_core::redact::redact_url(&c.url),
        env_keys: c.env.into_keys().collect(),
        updated_at,
    }))
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
