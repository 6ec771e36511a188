//! Set-up of the SQLite-only tests: a `SqliteStore` itself (not a `dyn
//! Store`) in a temporary directory, for what needs its pool or its file;
//! the fixtures are the store suite's (`rm-store-tests`).

#![allow(dead_code, unused_imports)]

use rm_store::prelude::*;
use rm_store_sqlite::SqliteStore;
pub use rm_store_tests::{
    backup_job, enrol, enrol_with_agent, enrollment, ids, job_id_at, new_host, schedule, t, user,
};
use tempfile::TempDir;

/// The URL of the database file `rm.db` in `dir`.
pub fn db_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("rm.db").display())
}

/// A fresh store in a new temporary directory; keep the directory alive.
pub async fn open_temp() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_url(&dir)).await.unwrap();
    (dir, store)
}
