//! The storage contract of the restic-manager server.
//!
//! [`Store`] is what the server needs from a database, expressed in domain
//! types; `rm-store-sqlite` (and later PostgreSQL) implement it. Nothing here
//! knows SQL or HTTP, so the server can be tested against any implementation
//! and the implementations against one shared scenario.

mod error;
mod models;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, TokenId, UserId};

pub use error::{StoreError, StoreResult};
pub use models::*;

/// Everything the server persists. Implementations must be safe to share
/// between tasks; every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ── operators ──────────────────────────────────────────────────────

    /// Adds a user. [`StoreError::Conflict`] when the name is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    /// Looks a user up by name.
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// Looks a user up by id.
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;
    /// Replaces a user's password hash and ends their sessions.
    /// [`StoreError::NotFound`] when there is no such user.
    async fn set_user_password(&self, username: &str, password_hash: &str) -> StoreResult<()>;
    /// How many users exist (zero on first start).
    async fn count_users(&self) -> StoreResult<u64>;

    /// Stores a login session.
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    /// A session by its token id.
    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>>;
    /// Ends a session (logout). Ending a missing session is not an error.
    async fn delete_session(&self, id: TokenId) -> StoreResult<()>;
    /// Removes sessions that expired before `now`; returns how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Stores an API token.
    async fn create_api_token(&self, token: &ApiToken) -> StoreResult<()>;
    /// An API token by its id (revoked ones included; callers check).
    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>>;

    // ── enrolment ──────────────────────────────────────────────────────

    /// Stores a new enrolment token.
    async fn create_enrollment_token(&self, token: &EnrollmentToken) -> StoreResult<()>;
    /// An enrolment token by its id, used or not.
    async fn enrollment_token(&self, id: TokenId) -> StoreResult<Option<EnrollmentToken>>;
    /// Tokens not yet used and not expired at `now`, newest first.
    async fn pending_enrollment_tokens(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<EnrollmentToken>>;
    /// Atomically spends enrolment token `token_id` and creates the host with
    /// its first agent token. [`StoreError::TokenSpent`] when the token was
    /// already used or expired at `now` — also when two enrolments race.
    async fn enroll_host(
        &self,
        token_id: TokenId,
        now: DateTime<Utc>,
        host: &NewHost,
        agent_token: &AgentToken,
    ) -> StoreResult<Host>;

    // ── hosts ──────────────────────────────────────────────────────────

    /// Every host that is not deleted, in enrolment order.
    async fn list_hosts(&self) -> StoreResult<Vec<Host>>;
    /// A host that is not deleted.
    async fn host(&self, id: HostId) -> StoreResult<Option<Host>>;
    /// The agent token `id` if it is still valid: not revoked, and its host
    /// not deleted.
    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>>;
    /// Records an accepted `hello`: versions, platform, the connection that
    /// now owns the host, online, last seen.
    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()>;
    /// Moves `last_seen_at` forward for many hosts in one transaction.
    async fn touch_hosts(&self, seen: &[(HostId, DateTime<Utc>)]) -> StoreResult<()>;
    /// Marks the host offline, but only if `connection_id` is still the
    /// connection that owns it (a fast reconnect must stay online). Returns
    /// whether it changed anything.
    async fn mark_host_offline(
        &self,
        host_id: HostId,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Marks every host offline (server start: no agent is connected yet).
    async fn mark_all_hosts_offline(&self) -> StoreResult<u64>;
    /// Deletes a host: hides it and revokes all of its agent tokens. Returns
    /// false when there was no such (undeleted) host.
    async fn delete_host(&self, id: HostId, at: DateTime<Utc>) -> StoreResult<bool>;
}
