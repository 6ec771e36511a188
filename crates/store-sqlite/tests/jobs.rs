//! What only SQLite has on the job side: undecodable rows reported as
//! corrupt, and the upgrade of a database created by the first migration.
//! (The job side itself is tested on every store in `rm-store-tests`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{enrol, job_id_at, open_temp, t};
use rm_core::{HostId, JobStatus, JobTrigger};
use rm_store::prelude::*;
use rm_store::{Job, NewJob, StoreError};
use rm_store_sqlite::SqliteStore;
use serde_json::json;

fn new_job(host: HostId, kind: &str, created: i64) -> NewJob {
    NewJob {
        id: job_id_at(created),
        host_id: host,
        kind: kind.to_owned(),
        params: json!({ "paths": ["/etc", "/home"], "tags": ["nightly"] }),
        trigger: JobTrigger::Manual,
        schedule_id: None,
        status: JobStatus::Queued,
        error: None,
        created_at: t(created),
    }
}

async fn create(store: &SqliteStore, host: HostId, kind: &str, created: i64) -> Job {
    store
        .create_job(&new_job(host, kind, created), None)
        .await
        .unwrap()
}

// ── schema ─────────────────────────────────────────────────────────────

#[tokio::test]
async fn undecodable_job_rows_are_reported_as_corrupt() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let job = create(&store, host, "backup", 1).await;
    for (column, value, expected) in [
        ("status", "'done'", "`status`"),
        ("\"trigger\"", "'cron'", "`trigger`"),
        ("params", "'{not json'", "`params`"),
        ("stats", "'[1,'", "`stats`"),
        ("exit_code", "4294967296", "`exit_code`"),
    ] {
        // Bypass the CHECK constraints the way a hand edit of the file would.
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA ignore_check_constraints = ON")
            .execute(&mut *conn)
            .await
            .unwrap();
        let sql = format!("UPDATE jobs SET {column} = {value} WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job.id.to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        match store.job(job.id).await {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains(expected), "{msg}"),
            other => panic!("expected Corrupt for {column}, got {other:?}"),
        }
        // Restore a valid row for the next case.
        sqlx::query(
            "UPDATE jobs SET status = 'queued', \"trigger\" = 'manual', params = '{}', \
             stats = NULL, exit_code = NULL WHERE id = ?",
        )
        .bind(job.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
        store.job(job.id).await.unwrap().unwrap();
    }

    sqlx::query("UPDATE hosts SET repo_size_bytes = -1 WHERE id = ?")
        .bind(host.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    match store.host(host).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("`repo_size_bytes`"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_foundation_database_upgrades_with_its_hosts() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the previous release left it: only 0001 applied.
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        manifest.join("migrations/0001_foundation.sql"),
        old_migrations.join("0001_foundation.sql"),
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.path().join("rm.db").display());
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(old_migrations.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO hosts (id, name, hostname, enrolled_at, online) \
             VALUES (?, 'old', 'old.example', 0, 0)",
        )
        .bind(HostId::new().to_string())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    let store = SqliteStore::open(&url).await.unwrap();
    let hosts = store.list_hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    let h = &hosts[0];
    assert_eq!(h.name, "old");
    assert_eq!(h.last_backup_at, None);
    assert_eq!(h.last_backup_status, None);
    assert_eq!(h.repo_size_bytes, None);
    assert!(!h.has_repository);
    let job = create(&store, h.id, "backup", 1).await;
    assert_eq!(job.status, JobStatus::Queued);
}
