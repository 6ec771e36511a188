//! Agent upgrades (DESIGN §8): `POST /api/v1/agents/upgrade` sends
//! `agent.upgrade` to the matching connected agents older than this server
//! and records the request for the offline ones, which get it at their next
//! `hello`; the agents' `agent.upgrade.status` reports are kept per host.
//!
//! The binary is always one this server offers (`crate::downloads`) for
//! the agent's own platform, at this server's own URL: an API caller picks
//! hosts, never what they run.

use chrono::Utc;
use rm_core::{HostId, Labels, Selector};
use rm_protocol::api::{AgentUpgradeRequest, AgentUpgradeResult, SkippedHost, UpgradeSent};
use rm_protocol::upgrade::{is_older, is_platform};
use rm_protocol::{AgentUpgrade, AgentUpgradeStatus, Frame, Hello, UpgradeState};
use rm_store::{NewAuditEntry, StoreError};

use crate::downloads::DownloadError;
use crate::jobs::ReportError;
use crate::state::AppState;

/// Longest upgrade error text kept from an agent.
const MAX_ERROR_CHARS: usize = 1000;

/// Why an upgrade request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request is not usable; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such host (or none the caller may see: the same words).
    #[error("{0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An agent binary could not be read.
    #[error(transparent)]
    Download(#[from] DownloadError),
}

/// The version agents are upgraded to: this server's.
pub fn server_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Whether an agent reporting `version` is older than this server.
pub fn outdated(version: Option<&str>) -> bool {
    version.is_some_and(|v| is_older(v, server_version()))
}

/// How many hosts of `versions` (as [`rm_store::HostStore::agent_versions`]
/// gives them) run an agent older than this server.
pub fn outdated_count(versions: &[(String, u64)]) -> u64 {
    versions
        .iter()
        .filter(|(version, _)| outdated(Some(version)))
        .map(|(_, hosts)| hosts)
        .sum()
}

/// The `agent.upgrade` for an agent on `platform`, when this server has a
/// binary for it.
async fn offer(state: &AppState, platform: &str) -> Result<Option<AgentUpgrade>, DownloadError> {
    if !is_platform(platform) {
        return Ok(None);
    }
    let Some(binary) = state.downloads().get(platform).await? else {
        return Ok(None);
    };
    Ok(Some(AgentUpgrade {
        version: server_version().to_owned(),
        url: format!("{}/download/agent/{platform}", state.config().public_url),
        sha256: binary.sha256,
    }))
}

/// `POST /api/v1/agents/upgrade`, for a caller limited to `scope` (a
/// scoped user's selection is cut to it, as bulk jobs are: hosts outside it
/// are neither upgraded nor named; one named by `host_id` is not found).
/// `audit` builds the entry from how many agents were sent the upgrade and
/// how many wait for their reconnect.
pub async fn request(
    state: &AppState,
    req: &AgentUpgradeRequest,
    scope: Option<&Selector>,
    audit: Option<&(dyn Fn(usize, usize) -> NewAuditEntry + Send + Sync)>,
) -> Result<AgentUpgradeResult, UpgradeError> {
    let hosts = match (&req.selector, &req.host_id) {
        (Some(selector), None) => {
            let selector = Labels::parse("selector", selector.clone())
                .map(Selector)
                .map_err(|e| UpgradeError::Invalid(e.to_string()))?;
            match scope {
                None => state.store().hosts_matching(&selector).await?,
                Some(scope) => match crate::access::intersect(scope, &selector) {
                    Some(both) => state.store().hosts_matching(&both).await?,
                    None => Vec::new(),
                },
            }
        }
        (None, Some(id)) => {
            let id: HostId = id.parse().map_err(|_| {
                UpgradeError::Invalid(format!("`host_id` `{id}` is not a host id (a ULID)"))
            })?;
            match state.store().host(id).await? {
                Some(host) if scope.is_none_or(|scope| scope.matches(&host.labels)) => {
                    vec![host]
                }
                _ => return Err(UpgradeError::NotFound(format!("host `{id}`"))),
            }
        }
        _ => {
            return Err(UpgradeError::Invalid(String::from(
                "give exactly one of `selector` (labels; `{}` for every host) and `host_id`",
            )))
        }
    };
    let version = server_version();
    let mut send = Vec::new();
    let mut elsewhere = Vec::new();
    let mut pending: Vec<HostId> = Vec::new();
    let mut skipped = Vec::new();
    let mut offers: std::collections::HashMap<String, Option<AgentUpgrade>> =
        std::collections::HashMap::new();
    for host in hosts {
        let skip = |reason: String| SkippedHost {
            host_id: host.id.to_string(),
            name: host.name.clone(),
            reason,
        };
        let Some(from) = host.agent_version.clone() else {
            skipped.push(skip(String::from("its agent has never connected")));
            continue;
        };
        if host.agent_revoked_at.is_some() {
            skipped.push(skip(String::from("its agent was revoked")));
            continue;
        }
        if !is_older(&from, version) {
            skipped.push(skip(format!(
                "already current (agent {from}, server {version})"
            )));
            continue;
        }
        let Some(platform) = host.platform.clone() else {
            skipped.push(skip(format!(
                "platform unknown: agent {from} is too old to upgrade itself; upgrade it by hand or with the installer"
            )));
            continue;
        };
        // One offer per platform, not one file check per host.
        let upgrade = match offers.get(&platform) {
            Some(upgrade) => upgrade.clone(),
            None => {
                let upgrade = offer(state, &platform).await?;
                offers.insert(platform.clone(), upgrade.clone());
                upgrade
            }
        };
        let Some(upgrade) = upgrade else {
            skipped.push(skip(format!(
                "no agent binary for {platform} on this server (see --agent-binaries)"
            )));
            continue;
        };
        if state.hub().is_connected(host.id) {
            send.push((host.id, host.name.clone(), from, upgrade));
        } else if host.online && crate::cluster::bus::running(state) {
            // Online through another server, which is asked to send it
            // once the request is stored.
            elsewhere.push((host.id, host.name.clone(), from));
        } else {
            pending.push(host.id);
            skipped.push(skip(String::from(
                "offline: it is sent the upgrade when it reconnects",
            )));
        }
    }
    let mut ids: Vec<HostId> = send.iter().map(|(id, ..)| *id).collect();
    ids.extend(elsewhere.iter().map(|(id, ..)| *id));
    ids.extend(&pending);
    let entry = audit.map(|entry_for| entry_for(send.len() + elsewhere.len(), pending.len()));
    if !ids.is_empty() || entry.is_some() {
        state
            .store()
            .request_agent_upgrade(&ids, version, Utc::now(), entry.as_ref())
            .await?;
    }
    let mut sent = Vec::new();
    for (host_id, name, from) in elsewhere {
        crate::cluster::bus::send(
            state,
            crate::cluster::bus::Signal::Push {
                host: host_id,
                what: crate::cluster::bus::Pushed::Upgrade,
            },
        );
        sent.push(UpgradeSent {
            host_id: host_id.to_string(),
            name,
            from,
        });
    }
    for (host_id, name, from, upgrade) in send {
        // Gone since the check: it gets the upgrade at its next hello.
        let delivered = state
            .hub()
            .get(host_id)
            .is_some_and(|conn| conn.send(Frame::new(upgrade)).is_ok());
        if delivered {
            sent.push(UpgradeSent {
                host_id: host_id.to_string(),
                name,
                from,
            });
        } else {
            skipped.push(SkippedHost {
                host_id: host_id.to_string(),
                name,
                reason: String::from("offline: it is sent the upgrade when it reconnects"),
            });
        }
    }
    tracing::info!(%version, sent = sent.len(), skipped = skipped.len(), "agent upgrade requested");
    state.fleet_changed();
    Ok(AgentUpgradeResult {
        version: version.to_owned(),
        sent,
        skipped,
    })
}

/// Sends `host`'s agent, connected here, the upgrade requested for it, if
/// it is still older than this server: after its hello, or when another
/// server asks (the request was made there). A platform this server has
/// no binary for is recorded as the upgrade's failure.
pub(crate) async fn send_requested(state: &AppState, host_id: HostId) {
    let Some(conn) = state.hub().get(host_id) else {
        return;
    };
    let host = match state.store().host(host_id).await {
        Ok(Some(host)) => host,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(%host_id, error = %e, "could not read the host's requested upgrade");
            return;
        }
    };
    let (Some(platform), true) = (
        host.platform.as_deref(),
        host.upgrade.requested_version.is_some() && outdated(host.agent_version.as_deref()),
    ) else {
        return;
    };
    match offer(state, platform).await {
        Ok(Some(upgrade)) => {
            tracing::info!(%host_id, from = host.agent_version.as_deref().unwrap_or(""), to = %upgrade.version, "sending the requested agent upgrade");
            let _ = conn.send(Frame::new(upgrade));
        }
        Ok(None) => {
            let error = format!("no agent binary for {platform} on this server");
            tracing::warn!(%host_id, "not sending the requested upgrade: {error}");
            let _ = state
                .store()
                .record_agent_upgrade_status(
                    host_id,
                    server_version(),
                    UpgradeState::Failed.as_str(),
                    Some(&error),
                    Utc::now(),
                )
                .await;
        }
        Err(e) => tracing::error!(%host_id, error = %e, "could not read the agent binary to offer"),
    }
}

/// After an accepted `hello` (its version and platform stored): an agent
/// that is still older than the server and has an upgrade requested is
/// sent it now.
pub(crate) async fn after_hello(state: &AppState, host_id: HostId, hello: &Hello) {
    if hello.platform.is_some() && outdated(Some(&hello.agent_version)) {
        send_requested(state, host_id).await;
    }
}

/// `agent.upgrade.status` from an agent: kept on the host.
pub(crate) async fn on_status(
    state: &AppState,
    host_id: HostId,
    status: AgentUpgradeStatus,
) -> Result<(), ReportError> {
    if status.state == UpgradeState::Unknown {
        tracing::info!(%host_id, "ignoring an upgrade state this server does not know");
        return Ok(());
    }
    let printable = |text: &str, max: usize| -> String {
        text.chars()
            .take(max)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let version = printable(&status.version, 64);
    let error = status
        .error
        .as_deref()
        .map(|e| printable(e, MAX_ERROR_CHARS));
    match status.state {
        UpgradeState::Failed => {
            tracing::warn!(%host_id, %version, error = error.as_deref().unwrap_or(""), "agent upgrade failed")
        }
        state => tracing::info!(%host_id, %version, state = state.as_str(), "agent upgrade"),
    }
    state
        .store()
        .record_agent_upgrade_status(
            host_id,
            &version,
            status.state.as_str(),
            error.as_deref(),
            Utc::now(),
        )
        .await?;
    state.fleet_changed();
    Ok(())
}
