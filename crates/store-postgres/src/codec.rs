//! The mapping of sqlx's PostgreSQL errors onto [`StoreError`]: conditions
//! of the machine (a full disk, a read-only server, a lost connection)
//! become [`StoreError::Unavailable`], broken uniqueness and foreign keys
//! are told apart for the callers that turn them into `Conflict` and
//! `NotFound`, everything else is [`StoreError::Backend`].
//!
//! Public so the tests can check it against a real server's errors; the
//! store's own modules are its callers.

use rm_store::{StorageFault, StoreError};

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE `foreign_key_violation`.
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// Wraps a database failure, telling a condition of the machine from a
/// fault of the query, so callers can say what is wrong and that it will
/// pass.
pub fn backend(e: sqlx::Error) -> StoreError {
    match storage_fault(&e) {
        Some(fault) => StoreError::Unavailable {
            fault,
            source: Box::new(e),
        },
        None => StoreError::Backend(Box::new(e)),
    }
}

/// The storage fault behind `e`, if any, from PostgreSQL's SQLSTATE or
/// from what kept sqlx from talking to the server at all.
pub fn storage_fault(e: &sqlx::Error) -> Option<StorageFault> {
    match e {
        sqlx::Error::Database(db) => sqlstate_fault(&db.code()?),
        // On PostgreSQL an I/O error is the socket's (refused, reset, timed
        // out, a name that does not resolve), never a disk's: the server's
        // disk errors arrive as SQLSTATEs. Except that rustls reports an
        // untrusted or wrong certificate as invalid data: a setting to fix,
        // not a condition that passes.
        sqlx::Error::Io(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) =>
        {
            Some(StorageFault::Unreachable)
        }
        // Every pooled connection stayed busy (or the server took too long
        // to accept a new one) for the whole acquire timeout.
        sqlx::Error::PoolTimedOut => Some(StorageFault::Busy),
        _ => None,
    }
}

/// The storage fault a SQLSTATE stands for, if any.
fn sqlstate_fault(code: &str) -> Option<StorageFault> {
    match code {
        // disk_full
        "53100" => Some(StorageFault::DiskFull),
        // read_only_sql_transaction: a hot standby (a failover that left
        // this server on the old primary) or default_transaction_read_only
        "25006" => Some(StorageFault::ReadOnly),
        // io_error: the server's own disk failed a read or write
        "58030" => Some(StorageFault::Io),
        // too_many_connections (max_connections reached by all servers'
        // pools together), lock_not_available (lock_timeout)
        "53300" | "55P03" => Some(StorageFault::Busy),
        // admin_shutdown, crash_shutdown, cannot_connect_now (starting up,
        // shutting down, in recovery)
        "57P01" | "57P02" | "57P03" => Some(StorageFault::Unreachable),
        // protocol_violation: a fault of the request (a bug), not of the
        // connection, though SQLSTATE files it under class 08
        "08P01" => None,
        // connection_exception and its subclasses
        _ if code.starts_with("08") => Some(StorageFault::Unreachable),
        _ => None,
    }
}

/// The SQLSTATE of a database error, if `e` is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// True when `e` is a UNIQUE / PRIMARY KEY violation (SQLSTATE 23505).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some(UNIQUE_VIOLATION)
}

/// True when `e` is a FOREIGN KEY violation (SQLSTATE 23503).
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some(FOREIGN_KEY_VIOLATION)
}

/// The message of a database error, or empty. PostgreSQL names the
/// constraint in it (`duplicate key value violates unique constraint
/// "users_username_unique"`), so the checks the SQLite store makes on its
/// message (`contains("username")`) hold here too; [`constraint`] is the
/// exact name.
pub fn db_message(e: &sqlx::Error) -> String {
    e.as_database_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

/// The name of the constraint a database error broke, if it names one.
pub fn constraint(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.constraint())
        .map(str::to_owned)
}

/// `text` as a TEXT column can hold it: PostgreSQL refuses NUL (U+0000),
/// which agents' output may carry and SQLite stores, so each NUL becomes
/// U+FFFD (the replacement character). Borrowed when there is none.
pub fn pg_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_text_replaces_nul_and_borrows_otherwise() {
        assert_eq!(pg_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert!(matches!(
            pg_text("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn sqlstates_of_the_machine_are_storage_faults() {
        assert_eq!(sqlstate_fault("53100"), Some(StorageFault::DiskFull));
        assert_eq!(sqlstate_fault("25006"), Some(StorageFault::ReadOnly));
        assert_eq!(sqlstate_fault("58030"), Some(StorageFault::Io));
        assert_eq!(sqlstate_fault("53300"), Some(StorageFault::Busy));
        assert_eq!(sqlstate_fault("55P03"), Some(StorageFault::Busy));
        for code in [
            "08000", "08003", "08006", "08001", "57P01", "57P02", "57P03",
        ] {
            assert_eq!(
                sqlstate_fault(code),
                Some(StorageFault::Unreachable),
                "{code}"
            );
        }
    }

    #[test]
    fn sqlstates_of_the_query_are_not() {
        // unique, foreign key, check, not null, syntax, serialization,
        // deadlock, protocol violation: the query's or the caller's, not
        // the machine's.
        for code in [
            "23505", "23503", "23514", "23502", "42601", "40001", "40P01", "08P01",
        ] {
            assert_eq!(sqlstate_fault(code), None, "{code}");
        }
    }

    #[test]
    fn lost_connections_and_pool_timeouts_are_storage_faults() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(storage_fault(&refused), Some(StorageFault::Unreachable));
        let untrusted = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(storage_fault(&untrusted), None);
        assert_eq!(
            storage_fault(&sqlx::Error::PoolTimedOut),
            Some(StorageFault::Busy)
        );
        assert_eq!(storage_fault(&sqlx::Error::RowNotFound), None);
        assert!(matches!(
            backend(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable {
                fault: StorageFault::Busy,
                ..
            }
        ));
        assert!(matches!(
            backend(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }
}
