//! Connections that may have been left read-only by a fault, retired once
//! the database can be written again.
//!
//! When SQLite cannot open the database file (or, later, its WAL) for
//! writing — an immutable file, a file system remounted read-only — it
//! opens it read-only instead, and that connection stays read-only for
//! good: after the fault clears it still answers every write with "attempt
//! to write a readonly database". The pool opens connections whenever it
//! needs them, so a fault leaves such connections behind, and the first
//! writes after recovery would fail on them one by one. So the time of the
//! last sign of such a fault is kept — a connection opened, or a write
//! failed, while the file could not be written — and the pool retires every
//! connection at least that old before handing it out; but only once the
//! file can be written again, so that during the fault they still serve
//! reads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnectionMetadata;
use sqlx::sqlite::SqlitePoolOptions;

use crate::codec;

/// How far past a sign of a fault the connections it may have left
/// read-only are counted.
const STAMP_MARGIN: Duration = Duration::from_secs(1);

/// When a connection was last opened, or a write last failed, while the
/// database file could not be written.
#[derive(Debug)]
pub(crate) struct ReadOnlyOpens {
    file: PathBuf,
    last: Mutex<Option<Instant>>,
}

impl ReadOnlyOpens {
    /// A connection was opened, or a write on one failed: note it if the
    /// file cannot be written now, as that connection may be read-only.
    pub(crate) fn noted(&self) {
        if codec::cannot_write(&self.file) {
            // The pool stamps a new connection's creation just after this
            // runs (`after_connect`), so the mark reaches a little ahead:
            // a writable connection caught by it is only reopened once.
            let until = Instant::now() + STAMP_MARGIN;
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
        }
    }

    /// Whether a pooled connection of this `age` may still be used.
    fn usable(&self, age: Duration) -> bool {
        let Some(last) = *self.last.lock().unwrap_or_else(PoisonError::into_inner) else {
            return true;
        };
        let opened_after = Instant::now()
            .checked_sub(age)
            .is_some_and(|opened| opened > last);
        // An older connection may be read-only: retire it, unless the file
        // still cannot be written (then nothing could write, and it still
        // reads).
        opened_after || codec::cannot_write(&self.file)
    }
}

/// `options` for the pool of the database `file`, retiring the connections
/// that may have been left read-only once the file can be written again;
/// and the record failed writes are noted in ([`ReadOnlyOpens::noted`]).
pub(crate) fn retire_read_only_handles(
    options: SqlitePoolOptions,
    file: PathBuf,
) -> (SqlitePoolOptions, Arc<ReadOnlyOpens>) {
    let opens = Arc::new(ReadOnlyOpens {
        file,
        last: Mutex::new(None),
    });
    let on_open = Arc::clone(&opens);
    let on_acquire = Arc::clone(&opens);
    let options = options
        .after_connect(move |_, _: PoolConnectionMetadata| {
            on_open.noted();
            Box::pin(async { Ok(()) })
        })
        .before_acquire(move |_, meta: PoolConnectionMetadata| {
            let usable = on_acquire.usable(meta.age);
            Box::pin(async move { Ok(usable) })
        });
    (options, opens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opens(file: PathBuf) -> ReadOnlyOpens {
        ReadOnlyOpens {
            file,
            last: Mutex::new(None),
        }
    }

    #[test]
    fn every_connection_is_usable_when_none_was_opened_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let opens = opens(dir.path().join("db"));
        opens.noted();
        assert!(opens.usable(Duration::from_secs(3600)));
    }

    #[test]
    fn connections_as_old_as_a_read_only_open_are_retired_once_writable() {
        let dir = tempfile::tempdir().unwrap();
        let opens = opens(dir.path().join("db"));
        // A connection opened while the file could not be written.
        *opens.last.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        assert!(!opens.usable(Duration::from_millis(500)), "older: retired");
        assert!(opens.usable(Duration::from_millis(1)), "newer: kept");
    }

    #[test]
    fn a_connection_stamped_just_after_a_read_only_open_is_retired() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        std::fs::write(&file, b"").unwrap();
        let opens = opens(file.clone());
        // What `noted` records while the file cannot be written.
        *opens.last.lock().unwrap() = Some(Instant::now() + STAMP_MARGIN);
        // The pool stamps the connection a moment later.
        std::thread::sleep(Duration::from_millis(5));
        assert!(!opens.usable(Duration::ZERO));
    }
}
