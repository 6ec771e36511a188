//! The schedule side of every store (`RM_TEST_STORE`): the host's schedule
//! version and its acknowledgement, schedule sets, and jobs fired by
//! schedules (initial statuses, what happens to them when their schedule
//! goes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, JobStatus, JobTrigger, ScheduleId};
use rm_store::{Job, JobEnd, NewJob, ScheduleRecord, Store, StoreError};
use rm_store_tests::{backup_job, enrol, ids, open_temp_store, schedule, t};
use serde_json::json;

async fn version_of(store: &dyn Store, host: HostId) -> (u64, Option<u64>) {
    let h = store.host(host).await.unwrap().unwrap();
    (h.schedule_version, h.schedule_applied_version)
}

// ── versions and CRUD ──────────────────────────────────────────────────

#[tokio::test]
async fn every_schedule_change_bumps_the_host_version_by_one() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    assert_eq!(version_of(&*store, host).await, (0, None));
    assert_eq!(store.schedule_set(host).await.unwrap(), (0, vec![]));

    let a = schedule(host, "backup", 10);
    assert_eq!(store.create_schedule(&a, None).await.unwrap(), 1);
    assert_eq!(store.schedule(a.id).await.unwrap(), Some(a.clone()));
    let b = schedule(host, "forget", 20);
    assert_eq!(store.create_schedule(&b, None).await.unwrap(), 2);
    assert_eq!(version_of(&*store, host).await, (2, None));
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
    assert_eq!(version_of(&*store, other).await, (1, None));

    assert_eq!(store.delete_schedule(b.id, None).await.unwrap(), (host, 4));
    assert_eq!(store.schedule(b.id).await.unwrap(), None);
    let (version, set) = store.schedule_set(host).await.unwrap();
    assert_eq!(version, 4);
    assert_eq!(set, vec![stored]);
    assert_eq!(version_of(&*store, host).await, (4, None));
}

#[tokio::test]
async fn unknown_or_deleted_hosts_and_unknown_schedules_are_not_found() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;

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
    assert_eq!(version_of(&*store, host).await, (0, None));

    // A duplicate id is a conflict and does not bump the version.
    let s = schedule(host, "backup", 2);
    assert_eq!(store.create_schedule(&s, None).await.unwrap(), 1);
    assert!(matches!(
        store.create_schedule(&s, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(version_of(&*store, host).await, (1, None));

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
}

#[tokio::test]
async fn schedule_set_is_in_creation_order() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
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
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
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
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    // Version 0 (no schedules ever) can be acknowledged.
    assert!(store.record_schedule_ack(host, 0).await.unwrap());
    assert_eq!(version_of(&*store, host).await, (0, Some(0)));
    assert!(!store.record_schedule_ack(host, 0).await.unwrap());
    // Never issued yet: ignored.
    assert!(!store.record_schedule_ack(host, 1).await.unwrap());
    assert!(!store.record_schedule_ack(host, u64::MAX).await.unwrap());
    assert_eq!(version_of(&*store, host).await, (0, Some(0)));

    for i in 0..3 {
        store
            .create_schedule(&schedule(host, "backup", i), None)
            .await
            .unwrap();
    }
    assert!(store.record_schedule_ack(host, 2).await.unwrap());
    assert_eq!(version_of(&*store, host).await, (3, Some(2)));
    // A late ack of an older version does not move it back; a repeat is a
    // no-op.
    assert!(!store.record_schedule_ack(host, 1).await.unwrap());
    assert!(!store.record_schedule_ack(host, 2).await.unwrap());
    assert!(!store.record_schedule_ack(host, 4).await.unwrap());
    assert!(store.record_schedule_ack(host, 3).await.unwrap());
    assert_eq!(version_of(&*store, host).await, (3, Some(3)));

    assert!(!store.record_schedule_ack(HostId::new(), 0).await.unwrap());
}

#[tokio::test]
async fn acks_of_many_hosts_are_written_together_highest_version_first() {
    let (_db, store) = open_temp_store().await.unwrap();
    // More hosts than one statement holds.
    let mut hosts = Vec::new();
    for _ in 0..300 {
        let host = enrol(&*store).await;
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
        assert_eq!(version_of(&*store, *host).await, (2, Some(2)));
    }
    assert_eq!(version_of(&*store, first).await, (2, Some(2)));
    assert!(store.record_schedule_acks(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn schedule_sets_of_many_hosts_match_each_hosts_own() {
    let (_db, store) = open_temp_store().await.unwrap();
    let mut hosts = Vec::new();
    for n in 0..300 {
        let host = enrol(&*store).await;
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
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let s = schedule(host, "backup", 1);
    let keep = schedule(host, "check", 2);
    store.create_schedule(&s, None).await.unwrap();
    store.create_schedule(&keep, None).await.unwrap();
    let done = store
        .create_job(&backup_job(host, Some(s.id), 10), None)
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
        .create_job(&backup_job(host, Some(s.id), 20), None)
        .await
        .unwrap();
    let other = store
        .create_job(&backup_job(host, Some(keep.id), 30), None)
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
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let s = schedule(host, "backup", 1);
    let other = schedule(host, "check", 2);
    store.create_schedule(&s, None).await.unwrap();
    store.create_schedule(&other, None).await.unwrap();

    let running = store
        .create_job(&backup_job(host, Some(s.id), 10), None)
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
        .create_job(&backup_job(host, Some(s.id), 5), None)
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
                ..backup_job(host, Some(s.id), 15)
            },
            None,
        )
        .await
        .unwrap();
    // Created later but earlier in time: creation time decides the order.
    let queued = store
        .create_job(&backup_job(host, Some(s.id), 3), None)
        .await
        .unwrap();
    let offline = store
        .create_job(
            &NewJob {
                status: JobStatus::Dispatched,
                ..backup_job(host, Some(s.id), 20)
            },
            None,
        )
        .await
        .unwrap();
    let manual = store
        .create_job(&backup_job(host, None, 4), None)
        .await
        .unwrap();
    let elsewhere = store
        .create_job(&backup_job(host, Some(other.id), 8), None)
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
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let s = schedule(host, "backup", 1);
    store.create_schedule(&s, None).await.unwrap();

    // An agent's own (offline) run: dispatched since its creation.
    let new = NewJob {
        status: JobStatus::Dispatched,
        ..backup_job(host, Some(s.id), 10)
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
        ..backup_job(host, Some(s.id), 20)
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
            ..backup_job(host, Some(s.id), 30)
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
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    let foreign = schedule(other, "backup", 1);
    store.create_schedule(&foreign, None).await.unwrap();
    // The agent ran a schedule offline that was deleted meanwhile.
    let gone = store
        .create_job(
            &NewJob {
                status: JobStatus::Dispatched,
                ..backup_job(host, Some(ScheduleId::new()), 10)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(gone.schedule_id, None);
    assert_eq!(gone.status, JobStatus::Dispatched);
    let wrong_host = store
        .create_job(&backup_job(host, Some(foreign.id), 20), None)
        .await
        .unwrap();
    assert_eq!(wrong_host.schedule_id, None);
    assert!(store
        .active_jobs_of_schedule(foreign.id)
        .await
        .unwrap()
        .is_empty());
}
