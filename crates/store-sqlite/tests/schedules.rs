//! Behaviour tests of `SqliteStore`'s schedule side against real database
//! files (WAL): the host's schedule version and its acknowledgement,
//! schedule sets, jobs fired by schedules (initial statuses, what happens to
//! them when their schedule goes), and the upgrade of a database created by
//! migrations 0001–0002 (the `jobs` table rebuild must keep every job, log
//! line and command result).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{db_url, enrol, ids, job_id_at, open_temp, t};
use rm_core::{HostId, JobStatus, JobTrigger, ScheduleId};
use rm_store::prelude::*;
use rm_store::{
    CommandResultRecord, Job, JobEnd, LogLineRecord, NewJob, ScheduleRecord, StoreError,
};
use rm_store_sqlite::SqliteStore;
use serde_json::json;

fn schedule(host: HostId, kind: &str, created: i64) -> ScheduleRecord {
    ScheduleRecord {
        id: ScheduleId::new(),
        host_id: host,
        kind: kind.to_owned(),
        cron: "0 3 * * *".to_owned(),
        timezone: Some("Europe/Berlin".to_owned()),
        params: json!({ "paths": ["/etc"], "tags": ["nightly"] }),
        enabled: true,
        jitter_seconds: 300,
        created_at: t(created),
        updated_at: t(created),
        policy: None,
    }
}

fn scheduled_job(host: HostId, schedule: Option<ScheduleId>, created: i64) -> NewJob {
    NewJob {
        id: job_id_at(created),
        host_id: host,
        kind: "backup".to_owned(),
        params: json!({ "paths": ["/etc"] }),
        trigger: JobTrigger::Schedule,
        schedule_id: schedule,
        status: JobStatus::Queued,
        error: None,
        created_at: t(created),
    }
}

async fn version_of(store: &SqliteStore, host: HostId) -> (u64, Option<u64>) {
    let h = store.host(host).await.unwrap().unwrap();
    (h.schedule_version, h.schedule_applied_version)
}

// ── versions and CRUD ──────────────────────────────────────────────────

#[tokio::test]
async fn every_schedule_change_bumps_the_host_version_by_one() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let other = enrol(&store).await;
    assert_eq!(version_of(&store, host).await, (0, None));
    assert_eq!(store.schedule_set(host).await.unwrap(), (0, vec![]));

    let a = schedule(host, "backup", 10);
    assert_eq!(store.create_schedule(&a, None).await.unwrap(), 1);
    assert_eq!(store.schedule(a.id).await.unwrap(), Some(a.clone()));
    let b = schedule(host, "forget", 20);
    assert_eq!(store.create_schedule(&b, None).await.unwrap(), 2);
    assert_eq!(version_of(&store, host).await, (2, None));
    // Another host's version is its own.
    assert_eq!(
        store
            .create_schedule(&schedule(other, "check", 5), None)
            .await
            .unwrap(),
        1
    );

    // Update: only the mutable fields change; host and creation time stay.
    let changed = ScheduleRecord {
        host_id: other,
        kind: "prune".to_owned(),
        cron: "*/15 * * * *".to_owned(),
        timezone: None,
        params: json!({ "max_unused": "5%" }),
        enabled: false,
        jitter_seconds: 0,
        created_at: t(999),
        updated_at: t(30),
        ..a.clone()
    };
    assert_eq!(store.update_schedule(&changed, None).await.unwrap(), 3);
    let stored = store.schedule(a.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        ScheduleRecord {
            host_id: host,
            created_at: t(10),
            ..changed.clone()
        }
    );
    assert_eq!(version_of(&store, other).await, (1, None));

    assert_eq!(store.delete_schedule(b.id, None).await.unwrap(), (host, 4));
    assert_eq!(store.schedule(b.id).await.unwrap(), None);
    let (version, set) = store.schedule_set(host).await.unwrap();
    assert_eq!(version, 4);
    assert_eq!(set, vec![stored]);
    assert_eq!(version_of(&store, host).await, (4, None));
}

#[tokio::test]
async fn unknown_or_deleted_hosts_and_unknown_schedules_are_not_found() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;

    let nobody = HostId::new();
    match store
        .create_schedule(&schedule(nobody, "backup", 1), None)
        .await
    {
        Err(StoreError::NotFound(msg)) => assert!(msg.contains(&nobody.to_string()), "{msg}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.schedule_set(nobody).await,
        Err(StoreError::NotFound(_))
    ));

    let ghost = schedule(host, "backup", 1);
    match store.update_schedule(&ghost, None).await {
        Err(StoreError::NotFound(msg)) => {
            assert_eq!(msg, format!("schedule `{}`", ghost.id));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    match store.delete_schedule(ghost.id, None).await {
        Err(StoreError::NotFound(msg)) => {
            assert_eq!(msg, format!("schedule `{}`", ghost.id));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.schedule(ghost.id).await.unwrap(), None);
    // Failed calls changed nothing.
    assert_eq!(version_of(&store, host).await, (0, None));

    // A duplicate id is a conflict and does not bump the version.
    let s = schedule(host, "backup", 2);
    assert_eq!(store.create_schedule(&s, None).await.unwrap(), 1);
    assert!(matches!(
        store.create_schedule(&s, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(version_of(&store, host).await, (1, None));

    // A deleted host hides its schedules (the rows stay).
    assert!(store.delete_host(host, t(100), None).await.unwrap());
    assert!(matches!(
        store.schedule_set(host).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .create_schedule(&schedule(host, "check", 3), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.schedule(s.id).await.unwrap(), None);
    assert!(matches!(
        store.update_schedule(&s, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_schedule(s.id, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!store.record_schedule_ack(host, 1).await.unwrap());
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedules WHERE host_id = ?")
        .bind(host.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn schedule_set_is_in_creation_order() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let other = enrol(&store).await;
    // Created out of id order: `created_at` decides, then the id.
    let late = schedule(host, "check", 30);
    let early = schedule(host, "backup", 10);
    let mut twin_1 = schedule(host, "forget", 20);
    let mut twin_2 = schedule(host, "prune", 20);
    if twin_2.id < twin_1.id {
        std::mem::swap(&mut twin_1.id, &mut twin_2.id);
    }
    for s in [&late, &twin_2, &early, &twin_1] {
        store.create_schedule(s, None).await.unwrap();
    }
    store
        .create_schedule(&schedule(other, "backup", 1), None)
        .await
        .unwrap();
    let (version, set) = store.schedule_set(host).await.unwrap();
    assert_eq!(version, 4);
    assert_eq!(set, vec![early, twin_1, twin_2, late]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_set_reads_version_and_schedules_together() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    // Only creations: in every consistent view, version == number of
    // schedules. A torn read (version and list from different moments)
    // breaks that equality.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .create_schedule(&schedule(host, "backup", i), None)
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let (version, set) = store.schedule_set(host).await.unwrap();
        assert_eq!(version, u64::try_from(set.len()).unwrap());
        reads += 1;
    }
    writer.await.unwrap();
    let (version, set) = store.schedule_set(host).await.unwrap();
    assert_eq!((version, set.len()), (200, 200));
    assert!(reads > 0);
}

// ── acknowledgements ───────────────────────────────────────────────────

#[tokio::test]
async fn acks_move_forward_only_and_never_past_the_issued_version() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    // Version 0 (no schedules ever) can be acknowledged.
    assert!(store.record_schedule_ack(host, 0).await.unwrap());
    assert_eq!(version_of(&store, host).await, (0, Some(0)));
    assert!(!store.record_schedule_ack(host, 0).await.unwrap());
    // Never issued yet: ignored.
    assert!(!store.record_schedule_ack(host, 1).await.unwrap());
    assert!(!store.record_schedule_ack(host, u64::MAX).await.unwrap());
    assert_eq!(version_of(&store, host).await, (0, Some(0)));

    for i in 0..3 {
        store
            .create_schedule(&schedule(host, "backup", i), None)
            .await
            .unwrap();
    }
    assert!(store.record_schedule_ack(host, 2).await.unwrap());
    assert_eq!(version_of(&store, host).await, (3, Some(2)));
    // A late ack of an older version does not move it back; a repeat is a
    // no-op.
    assert!(!store.record_schedule_ack(host, 1).await.unwrap());
    assert!(!store.record_schedule_ack(host, 2).await.unwrap());
    assert!(!store.record_schedule_ack(host, 4).await.unwrap());
    assert!(store.record_schedule_ack(host, 3).await.unwrap());
    assert_eq!(version_of(&store, host).await, (3, Some(3)));

    assert!(!store.record_schedule_ack(HostId::new(), 0).await.unwrap());
}

#[tokio::test]
async fn acks_of_many_hosts_are_written_together_highest_version_first() {
    let (_dir, store) = open_temp().await;
    // More hosts than one statement holds.
    let mut hosts = Vec::new();
    for _ in 0..300 {
        let host = enrol(&store).await;
        for i in 0..2 {
            store
                .create_schedule(&schedule(host, "backup", i), None)
                .await
                .unwrap();
        }
        hosts.push(host);
    }
    let (first, second, deleted) = (hosts[0], hosts[1], hosts[2]);
    assert!(store.record_schedule_ack(second, 2).await.unwrap());
    assert!(store.delete_host(deleted, t(50), None).await.unwrap());
    let mut acks: Vec<(HostId, u64)> = hosts[3..].iter().map(|h| (*h, 2)).collect();
    // Twice in one batch: the higher version counts.
    acks.extend([(first, 1), (first, 2), (first, 1)]);
    // Already there, deleted, never issued, unknown: nothing changes (an
    // unissued version next to an issued one leaves the issued one).
    acks.extend([
        (second, 2),
        (deleted, 2),
        (hosts[3], 3),
        (hosts[4], u64::MAX),
        (HostId::new(), 0),
    ]);
    let mut recorded = store.record_schedule_acks(&acks).await.unwrap();
    recorded.sort();
    let mut expected: Vec<(HostId, u64)> = hosts[3..].iter().map(|h| (*h, 2)).collect();
    expected.push((first, 2));
    expected.sort();
    assert_eq!(recorded, expected);
    for host in &hosts[3..] {
        assert_eq!(version_of(&store, *host).await, (2, Some(2)));
    }
    assert_eq!(version_of(&store, first).await, (2, Some(2)));
    assert!(store.record_schedule_acks(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn schedule_sets_of_many_hosts_match_each_hosts_own() {
    let (_dir, store) = open_temp().await;
    let mut hosts = Vec::new();
    for n in 0..300 {
        let host = enrol(&store).await;
        for i in 0..(n % 3) {
            store
                .create_schedule(&schedule(host, "backup", i64::from(i)), None)
                .await
                .unwrap();
        }
        hosts.push(host);
    }
    let deleted = hosts[5];
    assert!(store.delete_host(deleted, t(50), None).await.unwrap());
    let mut asked = hosts.clone();
    asked.push(HostId::new());
    let sets = store.schedule_sets(&asked).await.unwrap();
    assert_eq!(
        sets.len(),
        hosts.len() - 1,
        "deleted and unknown hosts are left out"
    );
    for (host, version, set) in sets {
        assert_ne!(host, deleted);
        assert_eq!(store.schedule_set(host).await.unwrap(), (version, set));
    }
    assert!(store.schedule_sets(&[]).await.unwrap().is_empty());
}

// ── jobs of schedules ──────────────────────────────────────────────────

#[tokio::test]
async fn deleting_a_schedule_keeps_its_jobs_without_the_link() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let s = schedule(host, "backup", 1);
    let keep = schedule(host, "check", 2);
    store.create_schedule(&s, None).await.unwrap();
    store.create_schedule(&keep, None).await.unwrap();
    let done = store
        .create_job(&scheduled_job(host, Some(s.id), 10), None)
        .await
        .unwrap();
    assert_eq!(done.schedule_id, Some(s.id));
    assert!(store
        .advance_job(done.id, JobStatus::Dispatched, t(11))
        .await
        .unwrap());
    assert!(store
        .advance_job(done.id, JobStatus::Running, t(12))
        .await
        .unwrap());
    assert!(store
        .finish_job(
            done.id,
            &JobEnd {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
                stats: json!({ "files_new": 1 }),
                error: None,
                finished_at: t(13),
                provisional: false,
            },
            None,
        )
        .await
        .unwrap());
    let queued = store
        .create_job(&scheduled_job(host, Some(s.id), 20), None)
        .await
        .unwrap();
    let other = store
        .create_job(&scheduled_job(host, Some(keep.id), 30), None)
        .await
        .unwrap();

    let done_before = store.job(done.id).await.unwrap().unwrap();
    assert_eq!(store.delete_schedule(s.id, None).await.unwrap(), (host, 3));
    let done_after = store.job(done.id).await.unwrap().unwrap();
    assert_eq!(
        done_after,
        Job {
            schedule_id: None,
            ..done_before
        }
    );
    assert_eq!(done_after.status, JobStatus::Succeeded);
    assert_eq!(done_after.finished_at, Some(t(13)));
    let queued_after = store.job(queued.id).await.unwrap().unwrap();
    assert_eq!(
        queued_after,
        Job {
            schedule_id: None,
            ..queued
        }
    );
    assert_eq!(store.job(other.id).await.unwrap().unwrap(), other);
    assert!(store
        .active_jobs_of_schedule(s.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&store.active_jobs_of_schedule(keep.id).await.unwrap()),
        vec![other.id]
    );
}

#[tokio::test]
async fn active_jobs_of_a_schedule_are_its_unfinished_ones_in_creation_order() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let s = schedule(host, "backup", 1);
    let other = schedule(host, "check", 2);
    store.create_schedule(&s, None).await.unwrap();
    store.create_schedule(&other, None).await.unwrap();

    let running = store
        .create_job(&scheduled_job(host, Some(s.id), 10), None)
        .await
        .unwrap();
    store
        .advance_job(running.id, JobStatus::Dispatched, t(11))
        .await
        .unwrap();
    store
        .advance_job(running.id, JobStatus::Running, t(12))
        .await
        .unwrap();
    let finished = store
        .create_job(&scheduled_job(host, Some(s.id), 5), None)
        .await
        .unwrap();
    store
        .finish_job(
            finished.id,
            &JobEnd {
                status: JobStatus::Cancelled,
                exit_code: None,
                stats: serde_json::Value::Null,
                error: None,
                finished_at: t(6),
                provisional: false,
            },
            None,
        )
        .await
        .unwrap();
    let skipped = store
        .create_job(
            &NewJob {
                status: JobStatus::Skipped,
                error: Some("previous run still going".to_owned()),
                ..scheduled_job(host, Some(s.id), 15)
            },
            None,
        )
        .await
        .unwrap();
    // Created later but earlier in time: creation time decides the order.
    let queued = store
        .create_job(&scheduled_job(host, Some(s.id), 3), None)
        .await
        .unwrap();
    let offline = store
        .create_job(
            &NewJob {
                status: JobStatus::Dispatched,
                ..scheduled_job(host, Some(s.id), 20)
            },
            None,
        )
        .await
        .unwrap();
    let manual = store
        .create_job(&scheduled_job(host, None, 4), None)
        .await
        .unwrap();
    let elsewhere = store
        .create_job(&scheduled_job(host, Some(other.id), 8), None)
        .await
        .unwrap();

    assert_eq!(
        ids(&store.active_jobs_of_schedule(s.id).await.unwrap()),
        vec![queued.id, running.id, offline.id]
    );
    assert_eq!(
        ids(&store.active_jobs_of_schedule(other.id).await.unwrap()),
        vec![elsewhere.id]
    );
    assert!(store
        .active_jobs_of_schedule(ScheduleId::new())
        .await
        .unwrap()
        .is_empty());
    let _ = (skipped, manual);
}

#[tokio::test]
async fn jobs_can_start_dispatched_or_skipped_but_nothing_else() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let s = schedule(host, "backup", 1);
    store.create_schedule(&s, None).await.unwrap();

    // An agent's own (offline) run: dispatched since its creation.
    let new = NewJob {
        status: JobStatus::Dispatched,
        ..scheduled_job(host, Some(s.id), 10)
    };
    let offline = store.create_job(&new, None).await.unwrap();
    assert_eq!(
        offline,
        Job {
            id: new.id,
            host_id: host,
            kind: "backup".to_owned(),
            params: new.params.clone(),
            status: JobStatus::Dispatched,
            trigger: JobTrigger::Schedule,
            schedule_id: Some(s.id),
            exit_code: None,
            stats: serde_json::Value::Null,
            error: None,
            created_at: t(10),
            dispatched_at: Some(t(10)),
            started_at: None,
            finished_at: None,
        }
    );
    assert_eq!(store.job(offline.id).await.unwrap(), Some(offline.clone()));
    assert_eq!(
        ids(&store.active_jobs(host).await.unwrap()),
        vec![offline.id]
    );
    assert!(store
        .advance_job(offline.id, JobStatus::Running, t(11))
        .await
        .unwrap());

    // A skipped fire: finished at once, with its reason.
    let new = NewJob {
        status: JobStatus::Skipped,
        error: Some("previous run still going".to_owned()),
        ..scheduled_job(host, Some(s.id), 20)
    };
    let skipped = store.create_job(&new, None).await.unwrap();
    assert_eq!(
        skipped,
        Job {
            id: new.id,
            host_id: host,
            kind: "backup".to_owned(),
            params: new.params.clone(),
            status: JobStatus::Skipped,
            trigger: JobTrigger::Schedule,
            schedule_id: Some(s.id),
            exit_code: None,
            stats: serde_json::Value::Null,
            error: Some("previous run still going".to_owned()),
            created_at: t(20),
            dispatched_at: None,
            started_at: None,
            finished_at: Some(t(20)),
        }
    );
    // Finished jobs never move.
    for to in [JobStatus::Queued, JobStatus::Dispatched, JobStatus::Running] {
        assert!(!store.advance_job(skipped.id, to, t(21)).await.unwrap());
    }
    assert!(!store
        .finish_job(
            skipped.id,
            &JobEnd {
                status: JobStatus::Failed,
                exit_code: Some(1),
                stats: serde_json::Value::Null,
                error: None,
                finished_at: t(22),
                provisional: false,
            },
            None,
        )
        .await
        .unwrap());
    assert_eq!(store.job(skipped.id).await.unwrap(), Some(skipped.clone()));
    assert_eq!(
        ids(&store.active_jobs_of_schedule(s.id).await.unwrap()),
        vec![offline.id]
    );
    // Nothing can be finished *as* skipped.
    assert!(matches!(
        store
            .finish_job(
                offline.id,
                &JobEnd {
                    status: JobStatus::Skipped,
                    exit_code: None,
                    stats: serde_json::Value::Null,
                    error: None,
                    finished_at: t(23),
                    provisional: false,
                },
                None,
            )
            .await,
        Ok(false)
    ));

    // Any other initial status is a caller bug, named in the error.
    for status in [
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Partial,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let new = NewJob {
            status,
            ..scheduled_job(host, Some(s.id), 30)
        };
        match store.create_job(&new, None).await {
            Err(StoreError::Conflict(msg)) => {
                assert!(msg.contains(&format!("`{status}`")), "{msg}");
            }
            other => panic!("expected Conflict for {status}, got {other:?}"),
        }
        assert_eq!(store.job(new.id).await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_job_of_a_vanished_or_foreign_schedule_is_kept_without_the_link() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let other = enrol(&store).await;
    let foreign = schedule(other, "backup", 1);
    store.create_schedule(&foreign, None).await.unwrap();
    // The agent ran a schedule offline that was deleted meanwhile.
    let gone = store
        .create_job(
            &NewJob {
                status: JobStatus::Dispatched,
                ..scheduled_job(host, Some(ScheduleId::new()), 10)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(gone.schedule_id, None);
    assert_eq!(gone.status, JobStatus::Dispatched);
    let wrong_host = store
        .create_job(&scheduled_job(host, Some(foreign.id), 20), None)
        .await
        .unwrap();
    assert_eq!(wrong_host.schedule_id, None);
    assert!(store
        .active_jobs_of_schedule(foreign.id)
        .await
        .unwrap()
        .is_empty());
}

// ── schema ─────────────────────────────────────────────────────────────

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
                ..scheduled_job(host, Some(s.id), 70)
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
