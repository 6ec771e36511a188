//! Rows of agent tokens.

use rm_store::{AgentToken, StoreError};

use crate::{decode, Flag};

/// Columns selected for an [`AgentTokenRow`] (qualified: used in a join).
pub const AGENT_TOKEN_COLUMNS: &str = "agent_tokens.id, agent_tokens.host_id, \
     agent_tokens.token_hash, agent_tokens.created_at, agent_tokens.pending";

/// An `agent_tokens` row.
#[derive(Debug, sqlx::FromRow)]
pub struct AgentTokenRow {
    /// Column `id`.
    pub id: String,
    /// Column `host_id`.
    pub host_id: String,
    /// Column `token_hash`.
    pub token_hash: String,
    /// Column `created_at`.
    pub created_at: i64,
    /// Column `pending`.
    pub pending: Flag,
}

impl TryFrom<AgentTokenRow> for AgentToken {
    type Error = StoreError;

    fn try_from(r: AgentTokenRow) -> Result<AgentToken, StoreError> {
        Ok(AgentToken {
            id: decode::id("id", r.id)?,
            host_id: decode::id("host_id", r.host_id)?,
            token_hash: decode::hash("token_hash", r.token_hash)?,
            created_at: decode::time("created_at", r.created_at)?,
            pending: r.pending.into(),
        })
    }
}
