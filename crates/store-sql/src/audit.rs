//! Rows of the audit log.

use rm_store::{AuditActor, AuditEntry, NewAuditEntry, StoreError};

use crate::decode;

/// Columns selected for an [`AuditRow`].
pub const AUDIT_COLUMNS: &str = "id, at, actor_kind, actor_user_id, actor_username, \
     actor_token_id, actor_token_name, action, target_type, target_id, details, ip, user_agent";

/// An `audit_log` row.
#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    /// Column `id`.
    pub id: i64,
    /// Column `at`.
    pub at: i64,
    /// Column `actor_kind`.
    pub actor_kind: String,
    /// Column `actor_user_id`.
    pub actor_user_id: Option<String>,
    /// Column `actor_username`.
    pub actor_username: Option<String>,
    /// Column `actor_token_id`.
    pub actor_token_id: Option<String>,
    /// Column `actor_token_name`.
    pub actor_token_name: Option<String>,
    /// Column `action`.
    pub action: String,
    /// Column `target_type`.
    pub target_type: Option<String>,
    /// Column `target_id`.
    pub target_id: Option<String>,
    /// Column `details`.
    pub details: String,
    /// Column `ip`.
    pub ip: Option<String>,
    /// Column `user_agent`.
    pub user_agent: Option<String>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(r: AuditRow) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            id: decode::int("id", r.id)?,
            entry: NewAuditEntry {
                at: decode::time("at", r.at)?,
                actor: AuditActor {
                    kind: decode::parsed("actor_kind", r.actor_kind)?,
                    user_id: decode::id_opt("actor_user_id", r.actor_user_id)?,
                    username: r.actor_username,
                    token_id: decode::id_opt("actor_token_id", r.actor_token_id)?,
                    token_name: r.actor_token_name,
                },
                action: r.action,
                target_type: r.target_type,
                target_id: r.target_id,
                details: decode::json("details", &r.details)?,
                ip: r.ip,
                user_agent: r.user_agent,
            },
        })
    }
}
