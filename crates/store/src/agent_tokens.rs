//! The store's part for agent tokens: validity, rotation and revocation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, TokenId};

use crate::{AgentToken, NewAuditEntry, StoreResult};

/// Agent tokens: validity, rotation and revocation. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait AgentTokenStore: Send + Sync {
    /// The agent token `id` if it is still valid: not revoked, and its host
    /// not deleted.
    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>>;

    /// Stores `token` (marked pending) as the new token of its host, beside
    /// the current one, revoking an earlier rotation's unconfirmed token.
    /// [`crate::StoreError::NotFound`] for an unknown or deleted host;
    /// [`crate::StoreError::Conflict`] when the host's agent was revoked.
    async fn begin_token_rotation(
        &self,
        token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// Makes the host's pending token `id` its only token: the others are
    /// revoked and the rotation time recorded, in one transaction. Returns
    /// false when `id` is not a valid pending token of `host` (already
    /// promoted, replaced by a newer rotation, or revoked).
    async fn promote_agent_token(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// The host's valid pending token, if a rotation waits for the agent.
    async fn pending_agent_token(&self, host: HostId) -> StoreResult<Option<AgentToken>>;

    /// Revokes one agent token (a rotation whose token never reached the
    /// agent). Returns whether it was valid before.
    async fn revoke_agent_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Revokes every token of the host's agent and marks the host revoked
    /// and offline; the host and its history stay. Revoking again keeps the
    /// first time. Returns false for an unknown or deleted host.
    async fn revoke_agent(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;
}
