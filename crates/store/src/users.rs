//! The store's part for users, login sessions and API tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{Role, Selector, TokenId, UserId};

use crate::{ApiToken, NewAuditEntry, Session, StoreResult, User};

/// Users, login sessions and API tokens. Part of [`crate::Store`], whose
/// rules (one transaction per method, audit entries written with the
/// change) hold for every method here.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Adds a user. [`crate::StoreError::Conflict`] when the name is taken.
    async fn create_user(&self, user: &User, audit: Option<&NewAuditEntry>) -> StoreResult<()>;

    /// Looks a user up by name.
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;

    /// Looks a user up by id.
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;

    /// Replaces a user's password hash and ends their sessions.
    /// [`crate::StoreError::NotFound`] when there is no such user.
    async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// How many users exist (zero on first start).
    async fn count_users(&self) -> StoreResult<u64>;

    /// Every user, in user-name order.
    async fn list_users(&self) -> StoreResult<Vec<User>>;

    /// Deletes a user for good (the name may be reused later) together with
    /// their sessions and API tokens, in one transaction, so no credential
    /// of theirs works afterwards (their tokens are removed, not merely
    /// marked revoked: nothing is left to list them under). [`crate::StoreError::NotFound`] when
    /// there is no such user; [`crate::StoreError::Conflict`] (`cannot delete the
    /// last user`) when they are the only user left, since nobody could log
    /// in afterwards (only the offline `admin create-user` could recover).
    async fn delete_user(&self, id: UserId, audit: Option<&NewAuditEntry>) -> StoreResult<()>;

    /// Sets a user's role and scope (`None`: every host) and returns the
    /// user as stored. [`crate::StoreError::NotFound`] when there is no such user;
    /// [`crate::StoreError::Conflict`] (`cannot demote the last admin`) when this
    /// would leave no admin. Deleting the last admin is refused the same
    /// way by [`Self::delete_user`].
    async fn set_user_access(
        &self,
        id: UserId,
        role: Role,
        scope: Option<&Selector>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<User>;

    /// Stores a login session.
    async fn create_session(
        &self,
        session: &Session,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// A session by its token id.
    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>>;

    /// Ends a session (logout). Ending a missing session is not an error.
    async fn delete_session(&self, id: TokenId, audit: Option<&NewAuditEntry>) -> StoreResult<()>;

    /// Removes sessions that expired before `now`; returns how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Stores an API token.
    async fn create_api_token(
        &self,
        token: &ApiToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()>;

    /// An API token by its id (revoked ones included; callers check).
    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>>;

    /// A user's API tokens in creation order, revoked and expired ones
    /// included.
    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiToken>>;

    /// Marks API token `id` revoked at `at`. Returns false when there is no
    /// such token or it was already revoked (its first revocation time is
    /// kept).
    async fn revoke_api_token(
        &self,
        id: TokenId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;
}
