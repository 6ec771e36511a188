//! What only SQLite has on the schedule side: undecodable rows reported as
//! corrupt, a deleted host's schedule rows kept, and the upgrade of a
//! database created by migrations 0001–0002 (the `jobs` table rebuild must
//! keep every job, log line and command result). (The schedule side itself
//! is tested on every store in `rm-store-tests`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{backup_job, db_url, enrol, job_id_at, open_temp, schedule, t};
use rm_core::{HostId, JobStatus, JobTrigger};
use rm_store::prelude::*;
use rm_store::{CommandResultRecord, Job, LogLineRecord, NewJob, StoreError};
use rm_store_sqlite::SqliteStore;
use serde_json::json;

async fn version_of(store: &SqliteStore, host: HostId) -> (u64, Option<u64>) {
    let h = store.host(host).await.unwrap().unwrap();
    (h.schedule_version, h.schedule_applied_version)
}

// ── schema ─────────────────────────────────────────────────────────────

/// The store suite sees a deleted host's schedules hidden; here, that
/// hiding keeps the rows (jobs and audit entries may still name them).
#[tokio::test]
async fn a_deleted_hosts_schedule_rows_stay() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let s = schedule(host, "backup", 2);
    assert_eq!(store.create_schedule(&s, None).await.unwrap(), 1);
    assert!(store.delete_host(host, t(100), None).await.unwrap());
    assert_eq!(store.schedule(s.id).await.unwrap(), None);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedules WHERE host_id = ?")
        .bind(host.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn undecodable_schedule_rows_are_reported_as_corrupt() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let s = schedule(host, "backup", 1);
    store.create_schedule(&s, None).await.unwrap();
    for (column, value, expected) in [
        ("params", "'{not json'", "`params`"),
        ("jitter_seconds", "4294967296", "`jitter_seconds`"),
        ("enabled", "2", "`enabled`"),
        ("created_at", "'soon'", "`created_at`"),
    ] {
        // Bypass the CHECK constraints the way a hand edit of the file would.
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA ignore_check_constraints = ON")
            .execute(&mut *conn)
            .await
            .unwrap();
        let sql = format!("UPDATE schedules SET {column} = {value} WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(s.id.to_string())
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        match store.schedule_set(host).await {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains(expected), "{msg}"),
            other => panic!("expected Corrupt for {column}, got {other:?}"),
        }
        match store.schedule(s.id).await {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains(expected), "{msg}"),
            other => panic!("expected Corrupt for {column}, got {other:?}"),
        }
        // Restore a valid row for the next case.
        sqlx::query(
            "UPDATE schedules SET params = '{}', jitter_seconds = 0, enabled = 1, \
             created_at = ? WHERE id = ?",
        )
        .bind(s.created_at.timestamp_millis())
        .bind(s.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
        store.schedule(s.id).await.unwrap().unwrap();
    }

    for (column, value) in [
        ("schedule_version", "-1"),
        ("schedule_applied_version", "-2"),
    ] {
        let sql = format!("UPDATE hosts SET {column} = {value} WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(host.to_string())
            .execute(store.pool())
            .await
            .unwrap();
        match store.host(host).await {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains(column), "{msg}"),
            other => panic!("expected Corrupt for {column}, got {other:?}"),
        }
        sqlx::query(
            "UPDATE hosts SET schedule_version = 1, schedule_applied_version = NULL \
             WHERE id = ?",
        )
        .bind(host.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert_eq!(version_of(&store, host).await, (1, None));
}

/// A table's foreign keys: (parent table, column, ON DELETE action).
async fn foreign_keys_of(store: &SqliteStore, table: &str) -> Vec<(String, String, String)> {
    let sql = format!(
        "SELECT \"table\", \"from\", on_delete FROM pragma_foreign_key_list('{table}') ORDER BY id"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// A table's explicitly created indexes, by name.
async fn indexes_of(store: &SqliteStore, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ? \
         AND sql IS NOT NULL ORDER BY name",
    )
    .bind(table)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_database_from_0002_upgrades_keeping_jobs_logs_and_command_results() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the previous release left it: 0001 and 0002 applied.
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["0001_foundation.sql", "0002_jobs.sql"] {
        std::fs::copy(
            manifest.join("migrations").join(file),
            old_migrations.join(file),
        )
        .unwrap();
    }
    let url = db_url(&dir);
    let host = HostId::new();
    let finished = job_id_at(10);
    let queued = job_id_at(20);
    let logs: Vec<LogLineRecord> = (1..=50)
        .map(|seq| LogLineRecord {
            job_id: if seq <= 40 { finished } else { queued },
            seq,
            ts: t(100 + i64::try_from(seq).unwrap()),
            stream: if seq % 2 == 0 { "stderr" } else { "stdout" }.to_owned(),
            text: format!("line {seq}"),
        })
        .collect();
    {
        // Foreign keys ON (sqlx's default), as the old release ran.
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
            "INSERT INTO hosts (id, name, hostname, enrolled_at, online, last_backup_at, \
             last_backup_status) VALUES (?, 'old', 'old.example', 0, 0, ?, 'succeeded')",
        )
        .bind(host.to_string())
        .bind(t(50).timestamp_millis())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, host_id, kind, params, status, \"trigger\", exit_code, stats, \
             error, created_at, dispatched_at, started_at, finished_at) VALUES \
             (?, ?, 'backup', '{\"paths\":[\"/etc\"]}', 'succeeded', 'schedule', 0, \
              '{\"files_new\":3}', NULL, ?, ?, ?, ?), \
             (?, ?, 'check', '{}', 'queued', 'manual', NULL, NULL, NULL, ?, NULL, NULL, NULL)",
        )
        .bind(finished.to_string())
        .bind(host.to_string())
        .bind(t(10).timestamp_millis())
        .bind(t(11).timestamp_millis())
        .bind(t(12).timestamp_millis())
        .bind(t(50).timestamp_millis())
        .bind(queued.to_string())
        .bind(host.to_string())
        .bind(t(20).timestamp_millis())
        .execute(&pool)
        .await
        .unwrap();
        for line in &logs {
            sqlx::query(
                "INSERT INTO job_logs (job_id, seq, ts, stream, text) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(line.job_id.to_string())
            .bind(i64::try_from(line.seq).unwrap())
            .bind(line.ts.timestamp_millis())
            .bind(&line.stream)
            .bind(&line.text)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO command_results (job_id, accepted, reason, message, received_at) \
             VALUES (?, 0, 'busy', 'another job runs', ?), (?, 1, NULL, NULL, ?)",
        )
        .bind(queued.to_string())
        .bind(t(21).timestamp_millis())
        .bind(finished.to_string())
        .bind(t(11).timestamp_millis())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    let store = SqliteStore::open(&url).await.unwrap();

    // Every job, log line and command result is still there, unchanged.
    let old = store.job(finished).await.unwrap().unwrap();
    assert_eq!(
        old,
        Job {
            id: finished,
            host_id: host,
            kind: "backup".to_owned(),
            params: json!({ "paths": ["/etc"] }),
            status: JobStatus::Succeeded,
            trigger: JobTrigger::Schedule,
            schedule_id: None,
            exit_code: Some(0),
            stats: json!({ "files_new": 3 }),
            error: None,
            created_at: t(10),
            dispatched_at: Some(t(11)),
            started_at: Some(t(12)),
            finished_at: Some(t(50)),
        }
    );
    let waiting = store.job(queued).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Queued);
    assert_eq!(
        store.next_dispatchable_job(host).await.unwrap(),
        Some(waiting)
    );
    assert_eq!(store.logs(finished, 0, 1000).await.unwrap(), logs[..40]);
    assert_eq!(store.logs(queued, 0, 1000).await.unwrap(), logs[40..]);
    assert_eq!(
        store.command_result(queued).await.unwrap(),
        Some(CommandResultRecord {
            job_id: queued,
            accepted: false,
            reason: Some("busy".to_owned()),
            message: Some("another job runs".to_owned()),
            received_at: t(21),
        })
    );
    assert_eq!(
        store
            .command_result(finished)
            .await
            .unwrap()
            .map(|r| r.accepted),
        Some(true)
    );
    let h = store.host(host).await.unwrap().unwrap();
    assert_eq!((h.schedule_version, h.schedule_applied_version), (0, None));
    assert_eq!(h.last_backup_status, Some(JobStatus::Succeeded));

    // The rebuilt schema: children point at the new `jobs`, cascades kept,
    // every index back, nothing dangling.
    assert_eq!(
        foreign_keys_of(&store, "job_logs").await,
        vec![("jobs".to_owned(), "job_id".to_owned(), "CASCADE".to_owned())]
    );
    assert_eq!(
        foreign_keys_of(&store, "command_results").await,
        vec![("jobs".to_owned(), "job_id".to_owned(), "CASCADE".to_owned())]
    );
    let mut job_fks = foreign_keys_of(&store, "jobs").await;
    job_fks.sort();
    assert_eq!(
        job_fks,
        vec![
            (
                "hosts".to_owned(),
                "host_id".to_owned(),
                "NO ACTION".to_owned()
            ),
            (
                "schedules".to_owned(),
                "schedule_id".to_owned(),
                "SET NULL".to_owned()
            ),
        ]
    );
    assert_eq!(
        indexes_of(&store, "jobs").await,
        vec![
            "jobs_created",
            "jobs_host_created",
            "jobs_host_status",
            "jobs_kind_status_host",
            "jobs_schedule_status",
            "jobs_status"
        ]
    );
    let leftovers: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE name LIKE '%\\_new' ESCAPE '\\'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let dangling: Vec<String> =
        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_check")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(dangling.is_empty(), "{dangling:?}");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(integrity, "ok");

    // The new status and link work on the upgraded database.
    let s = schedule(host, "backup", 60);
    assert_eq!(store.create_schedule(&s, None).await.unwrap(), 1);
    let skipped = store
        .create_job(
            &NewJob {
                status: JobStatus::Skipped,
                error: Some("previous run still going".to_owned()),
                ..backup_job(host, Some(s.id), 70)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(skipped.status, JobStatus::Skipped);
    assert_eq!(skipped.schedule_id, Some(s.id));

    // And the cascade still works: removing a job takes its rows with it.
    sqlx::query("DELETE FROM jobs WHERE id = ?")
        .bind(finished.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.logs(finished, 0, 1000).await.unwrap().is_empty());
    assert_eq!(store.command_result(finished).await.unwrap(), None);
    assert_eq!(store.logs(queued, 0, 1000).await.unwrap().len(), 10);
}
