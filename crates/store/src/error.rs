//! The one error type of the storage layer.

/// What can go wrong in a [`crate::Store`] call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule was broken (e.g. a user name is taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An enrolment token was already used or has expired.
    #[error("enrolment token is already used or expired")]
    TokenSpent,
    /// A stored value could not be read back (corrupt or hand-edited row).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database itself failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;
