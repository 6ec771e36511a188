//! The records the server stores, as plain Rust values.

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{HostId, TokenId, UserId};

/// An operator account.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// When the account was made.
    pub created_at: DateTime<Utc>,
}

/// A login session; its token is `rms.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Token id.
    pub id: TokenId,
    /// Whose session.
    pub user_id: UserId,
    /// Hash of the session token.
    pub token_hash: TokenHash,
    /// Login time.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A long-lived API token; `rmt.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Token id.
    pub id: TokenId,
    /// Whose token (it acts as this user).
    pub user_id: UserId,
    /// What the operator called it.
    pub name: String,
    /// Hash of the token.
    pub token_hash: TokenHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set once revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A single-use enrolment token; `rme.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentToken {
    /// Token id.
    pub id: TokenId,
    /// Name for the host it will enrol, if the operator gave one.
    pub name: Option<String>,
    /// Hash of the token.
    pub token_hash: TokenHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// When it was spent.
    pub used_at: Option<DateTime<Utc>>,
    /// The host it enrolled.
    pub host_id: Option<HostId>,
}

/// An agent's credential; `rma.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentToken {
    /// Token id.
    pub id: TokenId,
    /// The host it authenticates.
    pub host_id: HostId,
    /// Hash of the token.
    pub token_hash: TokenHash,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// The fields of a host known at enrolment.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHost {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// The machine's host name.
    pub hostname: String,
}

/// A host (an enrolled machine and its agent).
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Id.
    pub id: HostId,
    /// Display name.
    pub name: String,
    /// The machine's host name (updated from each `hello`).
    pub hostname: String,
    /// Enrolment time.
    pub enrolled_at: DateTime<Utc>,
    /// Last frame from its agent.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Whether an agent connection owns it now.
    pub online: bool,
    /// Agent release version, from `hello`.
    pub agent_version: Option<String>,
    /// restic version, from `hello`.
    pub restic_version: Option<String>,
    /// Why the restic version is unknown, from `hello`.
    pub restic_error: Option<String>,
    /// Protocol version, from `hello`.
    pub protocol_version: Option<u32>,
    /// Operating system, from `hello`.
    pub os: Option<String>,
    /// CPU architecture, from `hello`.
    pub arch: Option<String>,
}

/// What an accepted `hello` records.
#[derive(Debug, Clone, PartialEq)]
pub struct HelloRecord {
    /// Id of the connection that now owns the host.
    pub connection_id: String,
    /// Agent release version.
    pub agent_version: String,
    /// restic version, if detected.
    pub restic_version: Option<String>,
    /// Why not, if not.
    pub restic_error: Option<String>,
    /// Protocol version spoken.
    pub protocol_version: u32,
    /// Host name reported.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// When the hello was accepted.
    pub at: DateTime<Utc>,
}
