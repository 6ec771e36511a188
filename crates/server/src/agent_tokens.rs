//! Agent token rotation and revocation.
//!
//! Rotation: the server stores a new token as the host's pending one and
//! sends it over the agent's authenticated socket (`token.rotate`). Both
//! tokens work until the agent confirms it saved the new one
//! (`token.rotated`) or connects with it — whichever the server sees first
//! promotes it, and the old token stops working. So an agent whose
//! confirmation was lost still gets in, and one that never saved the new
//! token keeps the old. Revocation ends every token of the host at once and
//! closes its connection; the host and its history stay, marked revoked.

use chrono::Utc;
use rm_core::token::{IssuedToken, TokenKind};
use rm_core::{HostId, TokenId};
use rm_protocol::{close_code, Frame, TokenRotate, TokenRotated};
use rm_store::{AgentToken, NewAuditEntry, StoreError};

use crate::audit::EntryFor;

use crate::cluster::bus::{self, Signal};
use crate::jobs::ReportError;
use crate::state::AppState;

/// Why a rotation or revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No such (undeleted) host.
    #[error("host `{0}` not found")]
    NotFound(HostId),
    /// The host's agent was revoked; nothing can be rotated any more.
    #[error("the agent of host `{0}` was revoked; enrol the machine again to get a new host")]
    Revoked(HostId),
    /// A new token can only travel over the agent's live connection.
    #[error("host `{0}` is offline: its agent must be connected to receive a new token")]
    Offline(HostId),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Randomness failed.
    #[error(transparent)]
    Core(#[from] rm_core::CoreError),
    /// The token could not be sealed for the server holding the agent.
    #[error("the new token could not be sealed for the server holding the agent: {0}")]
    Sealing(String),
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        TokenError::Store(e)
    }
}

/// Starts a rotation for `host`'s connected agent; returns the new token's
/// public id. `audit` builds the audit entry written with the new token,
/// given its id; it stays if the rotation is withdrawn because the agent
/// went away meanwhile (the token was stored, then revoked).
pub async fn rotate(
    state: &AppState,
    host: HostId,
    audit: Option<EntryFor<'_, TokenId>>,
) -> Result<TokenId, TokenError> {
    let record = state
        .store()
        .host(host)
        .await?
        .ok_or(TokenError::NotFound(host))?;
    if record.agent_revoked_at.is_some() {
        return Err(TokenError::Revoked(host));
    }
    let conn = state.hub().get(host);
    if conn.is_none() && !crate::cluster::agent_connected(state, host).await? {
        return Err(TokenError::Offline(host));
    }
    let issued = IssuedToken::generate(TokenKind::Agent)?;
    let now = Utc::now();
    let pending = AgentToken {
        id: issued.id,
        host_id: host,
        token_hash: issued.hash,
        created_at: now,
        pending: true,
    };
    let entry = audit.map(|entry_for| entry_for(&pending.id));
    match state
        .store()
        .begin_token_rotation(&pending, entry.as_ref())
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(TokenError::Revoked(host)),
        Err(StoreError::NotFound(_)) => return Err(TokenError::NotFound(host)),
        Err(e) => return Err(e.into()),
    }
    let Some(conn) = conn else {
        // Another server holds the agent's connection: it gets the token
        // sealed with the key every server shares, and withdraws it if
        // the agent is gone by then.
        let sealed = seal_token(state, host, &issued.token)?;
        bus::send(
            state,
            Signal::RotateToken {
                host,
                token_id: issued.id.to_string(),
                sealed,
            },
        );
        tracing::info!(host_id = %host, token_id = %issued.id, "agent token rotation started through another server");
        state.fleet_changed();
        return Ok(issued.id);
    };
    let frame = Frame::new(TokenRotate {
        token: issued.token,
    });
    if conn.send(frame).is_err() {
        // Nobody holds the new token: withdraw it rather than leave a
        // rotation pending that can never complete.
        state.store().revoke_agent_token(issued.id, now).await?;
        return Err(TokenError::Offline(host));
    }
    tracing::info!(host_id = %host, token_id = %issued.id, "agent token rotation started");
    state.fleet_changed();
    Ok(issued.id)
}

/// What a sealed token is bound to: it opens only as `host`'s.
fn token_owner(host: HostId) -> String {
    format!("agent-token:{host}")
}

/// `token` sealed for `host`, as hex (`nonce:ciphertext`).
fn seal_token(state: &AppState, host: HostId, token: &str) -> Result<String, TokenError> {
    let sealed = state
        .sealing_key()
        .seal(token.as_bytes(), token_owner(host).as_bytes())
        .map_err(|e| TokenError::Sealing(e.to_string()))?;
    Ok(format!(
        "{}:{}",
        hex::encode(&sealed.nonce),
        hex::encode(&sealed.ciphertext)
    ))
}

/// Sends `host`'s agent, connected here, the token another server made for
/// it; withdraws the token if the agent is not here or cannot take it.
pub(crate) async fn deliver_sealed(state: &AppState, host: HostId, token_id: &str, sealed: &str) {
    let Ok(id) = token_id.parse::<TokenId>() else {
        tracing::warn!(host_id = %host, "a token rotation with a malformed token id was ignored");
        return;
    };
    let Some(conn) = state.hub().get(host) else {
        // Maybe the agent moved to a third server; if it holds the token
        // nobody sent, the rotation is withdrawn when the operator retries.
        return;
    };
    let opened = sealed
        .split_once(':')
        .and_then(|(nonce, ciphertext)| {
            Some((hex::decode(nonce).ok()?, hex::decode(ciphertext).ok()?))
        })
        .and_then(|(nonce, ciphertext)| {
            state
                .sealing_key()
                .open(
                    &rm_core::sealing::Sealed { nonce, ciphertext },
                    token_owner(host).as_bytes(),
                )
                .ok()
        })
        .and_then(|token| String::from_utf8(token).ok());
    let delivered = match opened {
        Some(token) => conn.send(Frame::new(TokenRotate { token })).is_ok(),
        None => {
            tracing::error!(host_id = %host, "a token rotation from another server does not open with this server's key (do all servers share one --secret-key-file?)");
            false
        }
    };
    if delivered {
        tracing::info!(host_id = %host, token_id = %id, "agent token rotation started (asked by another server)");
    } else if let Err(e) = state.store().revoke_agent_token(id, Utc::now()).await {
        tracing::error!(host_id = %host, error = %e, "could not withdraw an undeliverable agent token");
    }
}

/// Revokes every token of `host`'s agent and closes its connection with
/// [`close_code::REVOKED`]. Revoking a revoked host again is not an error.
/// `audit` is the audit entry written with the revocation.
pub async fn revoke(
    state: &AppState,
    host: HostId,
    audit: Option<&NewAuditEntry>,
) -> Result<(), TokenError> {
    if !state.store().revoke_agent(host, Utc::now(), audit).await? {
        return Err(TokenError::NotFound(host));
    }
    crate::cluster::disconnect(state, host, close_code::REVOKED, "agent token revoked");
    tracing::info!(host_id = %host, "agent token revoked");
    state.fleet_changed();
    Ok(())
}

/// `token.rotated`: the agent saved its new token, so the old one ends.
pub(crate) async fn on_rotated(
    state: &AppState,
    host: HostId,
    ack: TokenRotated,
) -> Result<(), ReportError> {
    let id = match ack.token_id {
        Some(raw) => raw.parse::<TokenId>().map_err(|_| {
            ReportError::BadId(format!(
                "`token_id` `{raw}` is not a token id (the 26-character ULID in `rma.<id>.…`)"
            ))
        })?,
        None => match state.store().pending_agent_token(host).await? {
            Some(pending) => pending.id,
            None => {
                tracing::debug!(host_id = %host, "token.rotated with no rotation pending");
                return Ok(());
            }
        },
    };
    promote(state, host, id, "the agent confirmed it").await?;
    Ok(())
}

/// Called for every accepted agent token: connecting with a pending token
/// proves the agent saved it, which completes the rotation even if its
/// `token.rotated` was lost.
pub(crate) async fn on_connect(state: &AppState, token: &AgentToken) {
    if !token.pending {
        return;
    }
    if let Err(e) = promote(
        state,
        token.host_id,
        token.id,
        "the agent connected with it",
    )
    .await
    {
        tracing::error!(host_id = %token.host_id, error = %e, "could not complete an agent token rotation");
    }
}

async fn promote(state: &AppState, host: HostId, id: TokenId, why: &str) -> Result<(), StoreError> {
    if state
        .store()
        .promote_agent_token(host, id, Utc::now())
        .await?
    {
        tracing::info!(host_id = %host, token_id = %id, "agent token rotated ({why}); the old token no longer works");
        state.fleet_changed();
    } else {
        tracing::debug!(host_id = %host, token_id = %id, "no pending agent token to confirm (late or repeated)");
    }
    Ok(())
}
