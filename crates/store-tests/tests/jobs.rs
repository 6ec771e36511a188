//! The job side of every store (`RM_TEST_STORE`): the job state machine and
//! dispatch order, listing and paging, bulk and once-only creation, races
//! between servers, and the host summary columns. Logs and command results
//! are in `logs.rs`; snapshots, statistics and repository settings in
//! `snapshots.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, JobId, JobStatus, JobTrigger};
use rm_store::{Job, JobEnd, JobFilter, NewJob, StoreError};
use rm_store_tests::{create_job, end, enrol, ids, job_id_at, new_job, open_temp_store, t};
use serde_json::json;
use ulid::Ulid;

// ── jobs ───────────────────────────────────────────────────────────────

#[tokio::test]
async fn a_job_goes_queued_dispatched_running_succeeded() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let new = NewJob {
        trigger: JobTrigger::Schedule,
        ..new_job(host, "backup", 10)
    };
    let job = store.create_job(&new, None).await.unwrap();
    assert_eq!(
        job,
        Job {
            id: new.id,
            host_id: host,
            kind: "backup".to_owned(),
            params: new.params.clone(),
            status: JobStatus::Queued,
            trigger: JobTrigger::Schedule,
            schedule_id: None,
            exit_code: None,
            stats: serde_json::Value::Null,
            error: None,
            created_at: t(10),
            dispatched_at: None,
            started_at: None,
            finished_at: None,
        }
    );
    assert_eq!(store.job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(store.job(JobId::new()).await.unwrap(), None);

    assert!(store
        .advance_job(job.id, JobStatus::Dispatched, t(20))
        .await
        .unwrap());
    assert_eq!(ids(&store.active_jobs(host).await.unwrap()), vec![job.id]);
    assert!(store
        .advance_job(job.id, JobStatus::Running, t(30))
        .await
        .unwrap());
    assert!(store
        .finish_job(job.id, &end(JobStatus::Succeeded, 40), None)
        .await
        .unwrap());

    let done = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.dispatched_at, Some(t(20)));
    assert_eq!(done.started_at, Some(t(30)));
    assert_eq!(done.finished_at, Some(t(40)));
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.stats, json!({ "files_new": 3, "data_added": 1024 }));
    assert_eq!(done.error, None);
    assert!(store.active_jobs(host).await.unwrap().is_empty());
}

#[tokio::test]
async fn illegal_moves_return_false_and_change_nothing() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create_job(&*store, host, "check", 1).await;

    // queued → running skips dispatch; finishing as succeeded needs a run.
    assert!(!store
        .advance_job(job.id, JobStatus::Running, t(2))
        .await
        .unwrap());
    assert!(!store
        .finish_job(job.id, &end(JobStatus::Succeeded, 2), None)
        .await
        .unwrap());
    assert_eq!(store.job(job.id).await.unwrap(), Some(job.clone()));

    assert!(store
        .advance_job(job.id, JobStatus::Dispatched, t(3))
        .await
        .unwrap());
    // A repeated dispatch does not move the timestamp.
    assert!(!store
        .advance_job(job.id, JobStatus::Dispatched, t(4))
        .await
        .unwrap());
    assert!(store
        .advance_job(job.id, JobStatus::Running, t(5))
        .await
        .unwrap());
    // running → dispatched goes backwards.
    assert!(!store
        .advance_job(job.id, JobStatus::Dispatched, t(6))
        .await
        .unwrap());
    let running = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.dispatched_at, Some(t(3)));
    assert_eq!(running.started_at, Some(t(5)));

    let failed = JobEnd {
        status: JobStatus::Failed,
        exit_code: Some(1),
        stats: serde_json::Value::Null,
        error: Some("Fatal: unable to open repository".to_owned()),
        finished_at: t(7),
        provisional: false,
    };
    assert!(store.finish_job(job.id, &failed, None).await.unwrap());
    let first = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(first.stats, serde_json::Value::Null);

    // Finished jobs never change: a second finish, late starts, anything.
    assert!(!store
        .finish_job(job.id, &end(JobStatus::Succeeded, 8), None)
        .await
        .unwrap());
    assert!(!store
        .finish_job(job.id, &end(JobStatus::Cancelled, 9), None)
        .await
        .unwrap());
    for to in [JobStatus::Queued, JobStatus::Dispatched, JobStatus::Running] {
        assert!(!store.advance_job(job.id, to, t(10)).await.unwrap());
    }
    assert_eq!(store.job(job.id).await.unwrap(), Some(first.clone()));
    assert_eq!(first.status, JobStatus::Failed);
    assert_eq!(first.exit_code, Some(1));
    assert_eq!(first.finished_at, Some(t(7)));

    // Wrong method for the status: a caller bug, reported as Conflict.
    for to in [JobStatus::Succeeded, JobStatus::Cancelled] {
        assert!(matches!(
            store.advance_job(job.id, to, t(11)).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(matches!(
        store
            .finish_job(job.id, &end(JobStatus::Running, 11), None)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Unknown jobs just do not move.
    assert!(!store
        .advance_job(JobId::new(), JobStatus::Dispatched, t(12))
        .await
        .unwrap());
    assert!(!store
        .finish_job(JobId::new(), &end(JobStatus::Failed, 12), None)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_queued_job_can_be_cancelled_without_running() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create_job(&*store, host, "backup", 1).await;
    let cancelled = JobEnd {
        exit_code: None,
        ..end(JobStatus::Cancelled, 2)
    };
    assert!(store.finish_job(job.id, &cancelled, None).await.unwrap());
    let stored = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Cancelled);
    assert_eq!(stored.dispatched_at, None);
    assert_eq!(stored.exit_code, None);
}

#[tokio::test]
async fn create_job_refuses_duplicates_and_unknown_or_deleted_hosts() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let new = new_job(host, "backup", 1);
    store.create_job(&new, None).await.unwrap();
    assert!(matches!(
        store.create_job(&new, None).await,
        Err(StoreError::Conflict(_))
    ));

    let unknown = HostId::new();
    match store.create_job(&new_job(unknown, "backup", 2), None).await {
        Err(StoreError::NotFound(what)) => assert_eq!(what, format!("host `{unknown}`")),
        other => panic!("expected NotFound, got {other:?}"),
    }

    let deleted = enrol(&*store).await;
    assert!(store.delete_host(deleted, t(3), None).await.unwrap());
    let orphan = new_job(deleted, "backup", 4);
    assert!(matches!(
        store.create_job(&orphan, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.job(orphan.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_host_runs_one_job_at_a_time_in_creation_order() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    assert_eq!(store.next_dispatchable_job(host).await.unwrap(), None);

    // Created out of id order: `created_at` decides, not the id.
    let third = store
        .create_job(
            &NewJob {
                id: job_id_at(1),
                ..new_job(host, "check", 30)
            },
            None,
        )
        .await
        .unwrap();
    let first = create_job(&*store, host, "backup", 10).await;
    let second = create_job(&*store, host, "forget", 20).await;
    let elsewhere = create_job(&*store, other, "backup", 5).await;

    let mut queued_hosts = store.hosts_with_queued_jobs().await.unwrap();
    queued_hosts.sort();
    let mut expected = vec![host, other];
    expected.sort();
    assert_eq!(queued_hosts, expected);

    let next = store.next_dispatchable_job(host).await.unwrap().unwrap();
    assert_eq!(next.id, first.id);
    assert!(store
        .advance_job(first.id, JobStatus::Dispatched, t(40))
        .await
        .unwrap());
    assert_eq!(store.next_dispatchable_job(host).await.unwrap(), None);
    assert!(store
        .advance_job(first.id, JobStatus::Running, t(41))
        .await
        .unwrap());
    assert_eq!(store.next_dispatchable_job(host).await.unwrap(), None);
    // Another host is not held up.
    assert_eq!(
        store
            .next_dispatchable_job(other)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(elsewhere.id)
    );

    assert!(store
        .finish_job(first.id, &end(JobStatus::Partial, 42), None)
        .await
        .unwrap());
    assert_eq!(
        store
            .next_dispatchable_job(host)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(second.id)
    );
    assert!(store
        .advance_job(second.id, JobStatus::Dispatched, t(43))
        .await
        .unwrap());
    assert!(store
        .finish_job(second.id, &end(JobStatus::Failed, 44), None)
        .await
        .unwrap());
    assert_eq!(
        store
            .next_dispatchable_job(host)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(third.id)
    );

    // Deleted hosts are no longer offered for dispatch after a restart.
    assert!(store.delete_host(other, t(50), None).await.unwrap());
    assert_eq!(store.hosts_with_queued_jobs().await.unwrap(), vec![host]);
    assert!(store
        .finish_job(third.id, &end(JobStatus::Cancelled, 51), None)
        .await
        .unwrap());
    assert!(store.hosts_with_queued_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn list_jobs_filters_orders_newest_first_and_pages() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = enrol(&*store).await;
    let b = enrol(&*store).await;
    let mut all = Vec::new();
    for i in 0..10 {
        let host = if i % 2 == 0 { a } else { b };
        all.push(create_job(&*store, host, "backup", i * 10).await);
    }
    // Two jobs created in the same millisecond: the id breaks the tie.
    let twin_1 = create_job(&*store, a, "check", 100).await;
    let twin_2 = store
        .create_job(
            &NewJob {
                id: JobId(Ulid::from_parts(
                    twin_1.id.0.timestamp_ms(),
                    twin_1.id.0.random() + 1,
                )),
                ..new_job(a, "check", 100)
            },
            None,
        )
        .await
        .unwrap();
    all.push(twin_1.clone());
    all.push(twin_2.clone());
    let newest_first: Vec<JobId> = all.iter().rev().map(|j| j.id).collect();

    let everything = store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(ids(&everything), newest_first);

    // Paging with `before`, three at a time, walks the same order.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_jobs(&JobFilter {
                before,
                limit: 3,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        before = page.last().map(|j| j.id);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, newest_first);

    // Host filter.
    let of_b = store
        .list_jobs(&JobFilter {
            host_id: Some(b),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let expected_b: Vec<JobId> = all
        .iter()
        .rev()
        .filter(|j| j.host_id == b)
        .map(|j| j.id)
        .collect();
    assert_eq!(ids(&of_b), expected_b);

    // Status filter, alone and with host and paging.
    assert!(store
        .advance_job(all[2].id, JobStatus::Dispatched, t(200))
        .await
        .unwrap());
    assert!(store
        .advance_job(all[4].id, JobStatus::Dispatched, t(201))
        .await
        .unwrap());
    assert!(store
        .advance_job(all[5].id, JobStatus::Dispatched, t(202))
        .await
        .unwrap());
    let dispatched = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Dispatched),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&dispatched), vec![all[5].id, all[4].id, all[2].id]);
    let dispatched_a_before = store
        .list_jobs(&JobFilter {
            host_id: Some(a),
            status: Some(JobStatus::Dispatched),
            before: Some(all[4].id),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&dispatched_a_before), vec![all[2].id]);

    // `before` a job that is not stored pages by its ULID time.
    let ghost = job_id_at(55);
    let older = store
        .list_jobs(&JobFilter {
            before: Some(ghost),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let expected_older: Vec<JobId> = all[..6].iter().rev().map(|j| j.id).collect();
    assert_eq!(ids(&older), expected_older);

    // Limits: 1 is one, a huge one is capped, 0 is the default page.
    let one = store
        .list_jobs(&JobFilter {
            limit: 1,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&one), vec![twin_2.id]);
    let huge = store
        .list_jobs(&JobFilter {
            limit: u32::MAX,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(huge.len(), all.len());
}

#[tokio::test]
async fn list_jobs_default_page_is_fifty() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    for i in 0..60 {
        create_job(&*store, host, "check", i).await;
    }
    let page = store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(page.len(), 50);
}

#[tokio::test]
async fn finishing_a_backup_updates_the_host_summary() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let fresh = store.host(host).await.unwrap().unwrap();
    assert_eq!(fresh.last_backup_at, None);
    assert_eq!(fresh.last_backup_status, None);

    // A non-backup job leaves the summary alone.
    let check = create_job(&*store, host, "check", 1).await;
    store
        .advance_job(check.id, JobStatus::Dispatched, t(2))
        .await
        .unwrap();
    assert!(store
        .finish_job(check.id, &end(JobStatus::Failed, 3), None)
        .await
        .unwrap());
    let h = store.host(host).await.unwrap().unwrap();
    assert_eq!((h.last_backup_at, h.last_backup_status), (None, None));

    let backup = create_job(&*store, host, "backup", 10).await;
    store
        .advance_job(backup.id, JobStatus::Dispatched, t(11))
        .await
        .unwrap();
    store
        .advance_job(backup.id, JobStatus::Running, t(12))
        .await
        .unwrap();
    assert!(store
        .finish_job(backup.id, &end(JobStatus::Partial, 100), None)
        .await
        .unwrap());
    let h = store.host(host).await.unwrap().unwrap();
    assert_eq!(h.last_backup_at, Some(t(100)));
    assert_eq!(h.last_backup_status, Some(JobStatus::Partial));
    assert_eq!(store.list_hosts().await.unwrap(), vec![h.clone()]);

    // A second finish of the same job changes nothing on the host either.
    assert!(!store
        .finish_job(backup.id, &end(JobStatus::Succeeded, 200), None)
        .await
        .unwrap());
    assert_eq!(store.host(host).await.unwrap(), Some(h));

    // A late report of an older backup does not hide the newer one.
    let old = create_job(&*store, host, "backup", 20).await;
    assert!(store
        .finish_job(old.id, &end(JobStatus::Failed, 50), None)
        .await
        .unwrap());
    let h = store.host(host).await.unwrap().unwrap();
    assert_eq!(h.last_backup_at, Some(t(100)));
    assert_eq!(h.last_backup_status, Some(JobStatus::Partial));

    // A newer one does.
    let newer = create_job(&*store, host, "backup", 30).await;
    assert!(store
        .finish_job(newer.id, &end(JobStatus::Cancelled, 300), None)
        .await
        .unwrap());
    let h = store.host(host).await.unwrap().unwrap();
    assert_eq!(h.last_backup_at, Some(t(300)));
    assert_eq!(h.last_backup_status, Some(JobStatus::Cancelled));
}

#[tokio::test]
async fn backup_summaries_name_each_hosts_last_successful_backup_job() {
    let (_db, store) = open_temp_store().await.unwrap();
    let backed_up = enrol(&*store).await;
    let never = enrol(&*store).await;
    let deleted = enrol(&*store).await;

    // Succeeded, then a later failure: the summary keeps the success.
    let good = create_job(&*store, backed_up, "backup", 10).await;
    for (to, at) in [(JobStatus::Dispatched, 15), (JobStatus::Running, 20)] {
        assert!(store.advance_job(good.id, to, t(at)).await.unwrap());
    }
    let stats = JobEnd {
        stats: json!({ "total_bytes_processed": 5000, "data_added": 700, "total_duration": 1.5 }),
        ..end(JobStatus::Succeeded, 80)
    };
    assert!(store.finish_job(good.id, &stats, None).await.unwrap());
    let failed = create_job(&*store, backed_up, "backup", 90).await;
    assert!(store
        .finish_job(failed.id, &end(JobStatus::Failed, 95), None)
        .await
        .unwrap());
    // Many later non-backup jobs do not hide it.
    for n in 0..20 {
        let check = create_job(&*store, backed_up, "check", 100 + n).await;
        assert!(store
            .finish_job(check.id, &end(JobStatus::Failed, 200 + n), None)
            .await
            .unwrap());
    }
    // A host whose only backup failed has no success.
    let fails = create_job(&*store, never, "backup", 10).await;
    assert!(store
        .finish_job(fails.id, &end(JobStatus::Failed, 30), None)
        .await
        .unwrap());
    let partial = create_job(&*store, deleted, "backup", 10).await;
    assert!(store
        .advance_job(partial.id, JobStatus::Dispatched, t(20))
        .await
        .unwrap());
    assert!(store
        .finish_job(partial.id, &end(JobStatus::Partial, 30), None)
        .await
        .unwrap());
    assert!(store.delete_host(deleted, t(40), None).await.unwrap());

    let summaries = store.host_backup_summaries().await.unwrap();
    let mut expected_ids = vec![backed_up, never];
    expected_ids.sort();
    assert_eq!(
        summaries.iter().map(|s| s.id).collect::<Vec<_>>(),
        expected_ids,
        "deleted hosts are left out, the rest in id order"
    );
    let of = |id: HostId| summaries.iter().find(|s| s.id == id).unwrap();
    let ok = of(backed_up);
    assert_eq!(ok.last_backup_success_at, Some(t(80)));
    assert_eq!(
        ok.last_backup,
        Some(rm_store::LastBackupRun {
            started_at: Some(t(20)),
            finished_at: t(80),
            bytes_processed: Some(5000),
            bytes_added: Some(700),
        })
    );
    assert!(!ok.online);
    assert_eq!((ok.policy_id, ok.freshness_seconds), (None, None));
    let none = of(never);
    assert_eq!(
        (none.last_backup_success_at, none.last_backup),
        (None, None)
    );

    // A job whose stats lack the byte counts still gives its times.
    let bare = create_job(&*store, never, "backup", 300).await;
    assert!(store
        .advance_job(bare.id, JobStatus::Dispatched, t(310))
        .await
        .unwrap());
    assert!(store
        .finish_job(bare.id, &end(JobStatus::Partial, 400), None)
        .await
        .unwrap());
    let summaries = store.host_backup_summaries().await.unwrap();
    let run = summaries
        .iter()
        .find(|s| s.id == never)
        .unwrap()
        .last_backup
        .unwrap();
    assert_eq!(run.finished_at, t(400));
    assert_eq!(run.started_at, None);
    assert_eq!(run.bytes_processed, None);
    assert_eq!(run.bytes_added, Some(1024));
}

// ── schema ─────────────────────────────────────────────────────────────

#[tokio::test]
async fn a_dispatched_job_can_go_back_to_the_queue_but_a_running_one_cannot() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create_job(&*store, host, "check", 1).await;
    assert!(store
        .advance_job(job.id, JobStatus::Dispatched, t(2))
        .await
        .unwrap());
    assert!(store
        .advance_job(job.id, JobStatus::Queued, t(3))
        .await
        .unwrap());
    let requeued = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(requeued.status, JobStatus::Queued);
    assert_eq!(requeued.dispatched_at, None);
    assert_eq!(
        store
            .next_dispatchable_job(host)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(job.id)
    );
    assert!(store
        .advance_job(job.id, JobStatus::Dispatched, t(4))
        .await
        .unwrap());
    assert!(store
        .advance_job(job.id, JobStatus::Running, t(5))
        .await
        .unwrap());
    assert!(!store
        .advance_job(job.id, JobStatus::Queued, t(6))
        .await
        .unwrap());
}

/// Runs `job` through dispatch and start to an end in `status` at `t(at)`.
async fn run_to_end(store: &dyn rm_store::Store, job: JobId, status: JobStatus, at: i64) {
    assert!(store
        .advance_job(job, JobStatus::Dispatched, t(at - 2))
        .await
        .unwrap());
    assert!(store
        .advance_job(job, JobStatus::Running, t(at - 1))
        .await
        .unwrap());
    assert!(store.finish_job(job, &end(status, at), None).await.unwrap());
}

#[tokio::test]
async fn list_jobs_filters_by_kind_and_latest_per_host_finds_each_hosts_newest() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = enrol(&*store).await;
    let b = enrol(&*store).await;
    let c = enrol(&*store).await;
    let a_old = create_job(&*store, a, "drill", 10).await;
    let a_backup = create_job(&*store, a, "backup", 20).await;
    let a_new = create_job(&*store, a, "drill", 30).await;
    let a_failed = create_job(&*store, a, "drill", 40).await;
    let b_only = create_job(&*store, b, "drill", 50).await;
    let c_queued = create_job(&*store, c, "drill", 60).await;
    // Finished out of creation order: the newest end wins.
    run_to_end(&*store, a_new.id, JobStatus::Succeeded, 100).await;
    run_to_end(&*store, a_old.id, JobStatus::Succeeded, 90).await;
    run_to_end(&*store, a_backup.id, JobStatus::Succeeded, 120).await;
    run_to_end(&*store, a_failed.id, JobStatus::Failed, 130).await;
    run_to_end(&*store, b_only.id, JobStatus::Succeeded, 110).await;

    let drills = store
        .list_jobs(&JobFilter {
            kind: Some("drill".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&drills),
        vec![c_queued.id, b_only.id, a_failed.id, a_new.id, a_old.id]
    );
    let a_drills = store
        .list_jobs(&JobFilter {
            host_id: Some(a),
            kind: Some("drill".into()),
            status: Some(JobStatus::Succeeded),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&a_drills), vec![a_new.id, a_old.id]);

    let mut latest = store
        .latest_jobs_per_host("drill", JobStatus::Succeeded)
        .await
        .unwrap();
    latest.sort_by_key(|j| j.host_id.to_string());
    let mut expected = vec![a_new.clone(), b_only.clone()];
    expected.sort_by_key(|j| j.host_id.to_string());
    assert_eq!(ids(&latest), ids(&expected));
    assert_eq!(
        latest
            .iter()
            .find(|j| j.id == a_new.id)
            .unwrap()
            .finished_at,
        Some(t(100))
    );
    let failed = store
        .latest_jobs_per_host("drill", JobStatus::Failed)
        .await
        .unwrap();
    assert_eq!(ids(&failed), vec![a_failed.id]);
    assert!(store
        .latest_jobs_per_host("prune", JobStatus::Succeeded)
        .await
        .unwrap()
        .is_empty());
}
