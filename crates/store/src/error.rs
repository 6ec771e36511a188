//! The one error type of the storage layer.

use std::fmt;

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
    /// The database cannot be written (or read) because of the machine it
    /// lives on: a full disk, a read-only file, a failing disk, a lock held
    /// by another process. Nothing was changed, and the same call can work
    /// once the condition clears.
    #[error("the server cannot write its database: {fault}")]
    Unavailable {
        /// What is wrong, in an operator's words.
        fault: StorageFault,
        /// The database's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// What the change was decided from changed meanwhile (another server
    /// wrote first); nothing was written. Read again, decide again.
    #[error("changed meanwhile: {0}")]
    Stale(String),
    /// The database itself failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// The storage fault behind this error, if it is one.
    pub fn fault(&self) -> Option<StorageFault> {
        match self {
            StoreError::Unavailable { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

/// A condition of the machine that keeps the store from writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageFault {
    /// The file system holding the database has no space left.
    DiskFull,
    /// The database file, its journal or its folder is read-only, or (on
    /// PostgreSQL) the server only accepts reads: a standby, or
    /// `default_transaction_read_only`.
    ReadOnly,
    /// The disk or file system reported an I/O error.
    Io,
    /// Another process (a long reader, a backup tool copying the file) held
    /// the database's lock for longer than the store waits, or the disk is
    /// so slow that no connection came free in time.
    Busy,
    /// The database server (PostgreSQL) cannot be reached: the connection
    /// was refused or lost, or the server is shutting down or starting.
    Unreachable,
}

impl StorageFault {
    /// A short stable name, for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFault::DiskFull => "disk_full",
            StorageFault::ReadOnly => "read_only",
            StorageFault::Io => "io_error",
            StorageFault::Busy => "busy",
            StorageFault::Unreachable => "unreachable",
        }
    }

    /// Whether a failure seen as `other` is this fault seen less closely:
    /// a read-only file or a full disk reaches SQLite as a plain I/O error,
    /// and only some callers look at the file to tell which.
    pub fn explains(self, other: StorageFault) -> bool {
        matches!(
            (self, other),
            (
                StorageFault::ReadOnly | StorageFault::DiskFull,
                StorageFault::Io
            )
        )
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageFault::DiskFull => "the disk holding the database is full",
            StorageFault::ReadOnly => {
                "the database is read-only (its file or folder, or a PostgreSQL standby)"
            }
            StorageFault::Io => "the disk reported an I/O error",
            StorageFault::Busy => {
                "the database stayed locked by another process or the disk is too slow"
            }
            StorageFault::Unreachable => {
                "the database server cannot be reached or closed the connection"
            }
        })
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;
