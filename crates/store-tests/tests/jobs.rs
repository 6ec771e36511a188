//! The job side of every store (`RM_TEST_STORE`): the job state machine and
//! dispatch order, listing and paging, log storage (idempotence, mixed and
//! unknown jobs, throughput), command results, snapshots, repository
//! statistics, sealed repository settings and the host summary columns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, JobId, JobStatus, JobTrigger};
use rm_store::{
    CommandResultRecord, Job, JobEnd, JobFilter, LogLineRecord, NewJob, RepoStatsRecord,
    SealFormat, SealedRepository, SnapshotRecord, Store, StoreError,
};
use rm_store_tests::{enrol, ids, job_id_at, open_temp_store, t};
use serde_json::json;
use ulid::Ulid;

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

async fn create(store: &dyn Store, host: HostId, kind: &str, created: i64) -> Job {
    store
        .create_job(&new_job(host, kind, created), None)
        .await
        .unwrap()
}

fn end(status: JobStatus, at: i64) -> JobEnd {
    JobEnd {
        status,
        exit_code: Some(0),
        stats: json!({ "files_new": 3, "data_added": 1024 }),
        error: None,
        finished_at: t(at),
        provisional: false,
    }
}

fn line(job: JobId, seq: u64) -> LogLineRecord {
    LogLineRecord {
        job_id: job,
        seq,
        ts: t(i64::try_from(seq).unwrap()),
        stream: if seq.is_multiple_of(2) {
            "stderr"
        } else {
            "stdout"
        }
        .to_owned(),
        text: format!("line {seq} of {job}"),
    }
}

fn lines(job: JobId, seqs: std::ops::RangeInclusive<u64>) -> Vec<LogLineRecord> {
    seqs.map(|s| line(job, s)).collect()
}

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
    let job = create(&*store, host, "check", 1).await;

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
    let job = create(&*store, host, "backup", 1).await;
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
    let first = create(&*store, host, "backup", 10).await;
    let second = create(&*store, host, "forget", 20).await;
    let elsewhere = create(&*store, other, "backup", 5).await;

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
        all.push(create(&*store, host, "backup", i * 10).await);
    }
    // Two jobs created in the same millisecond: the id breaks the tie.
    let twin_1 = create(&*store, a, "check", 100).await;
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
        create(&*store, host, "check", i).await;
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
    let check = create(&*store, host, "check", 1).await;
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

    let backup = create(&*store, host, "backup", 10).await;
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
    let old = create(&*store, host, "backup", 20).await;
    assert!(store
        .finish_job(old.id, &end(JobStatus::Failed, 50), None)
        .await
        .unwrap());
    let h = store.host(host).await.unwrap().unwrap();
    assert_eq!(h.last_backup_at, Some(t(100)));
    assert_eq!(h.last_backup_status, Some(JobStatus::Partial));

    // A newer one does.
    let newer = create(&*store, host, "backup", 30).await;
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
    let good = create(&*store, backed_up, "backup", 10).await;
    for (to, at) in [(JobStatus::Dispatched, 15), (JobStatus::Running, 20)] {
        assert!(store.advance_job(good.id, to, t(at)).await.unwrap());
    }
    let stats = JobEnd {
        stats: json!({ "total_bytes_processed": 5000, "data_added": 700, "total_duration": 1.5 }),
        ..end(JobStatus::Succeeded, 80)
    };
    assert!(store.finish_job(good.id, &stats, None).await.unwrap());
    let failed = create(&*store, backed_up, "backup", 90).await;
    assert!(store
        .finish_job(failed.id, &end(JobStatus::Failed, 95), None)
        .await
        .unwrap());
    // Many later non-backup jobs do not hide it.
    for n in 0..20 {
        let check = create(&*store, backed_up, "check", 100 + n).await;
        assert!(store
            .finish_job(check.id, &end(JobStatus::Failed, 200 + n), None)
            .await
            .unwrap());
    }
    // A host whose only backup failed has no success.
    let fails = create(&*store, never, "backup", 10).await;
    assert!(store
        .finish_job(fails.id, &end(JobStatus::Failed, 30), None)
        .await
        .unwrap());
    let partial = create(&*store, deleted, "backup", 10).await;
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
    let bare = create(&*store, never, "backup", 300).await;
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

// ── logs ───────────────────────────────────────────────────────────────

#[tokio::test]
async fn append_logs_is_idempotent_on_job_and_seq() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "backup", 1).await;

    assert_eq!(store.append_logs(&[]).await.unwrap(), 0);
    let batch = lines(job.id, 1..=10);
    assert_eq!(store.append_logs(&batch).await.unwrap(), 10);
    assert_eq!(store.append_logs(&batch).await.unwrap(), 0);

    // Overlapping replay: only 11..=15 are new; stored 5..=10 keep their text.
    let mut overlap = lines(job.id, 5..=15);
    overlap[0].text = "changed on replay".to_owned();
    assert_eq!(store.append_logs(&overlap).await.unwrap(), 5);

    let stored = store.logs(job.id, 0, 100).await.unwrap();
    assert_eq!(stored, lines(job.id, 1..=15));
}

#[tokio::test]
async fn append_logs_stores_many_jobs_in_one_batch() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let a = create(&*store, host, "backup", 1).await;
    let b = create(&*store, host, "check", 2).await;

    // Interleaved, and odd sizes so every statement size is used.
    let mut batch = Vec::new();
    for seq in 1..=300 {
        batch.push(line(a.id, seq));
        if seq <= 77 {
            batch.push(line(b.id, seq));
        }
    }
    assert_eq!(store.append_logs(&batch).await.unwrap(), 377);
    assert_eq!(
        store.logs(a.id, 0, 10_000).await.unwrap(),
        lines(a.id, 1..=300)
    );
    assert_eq!(
        store.logs(b.id, 0, 10_000).await.unwrap(),
        lines(b.id, 1..=77)
    );
}

#[tokio::test]
async fn lines_of_unknown_jobs_are_skipped_without_losing_the_others() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let known = create(&*store, host, "backup", 1).await;
    let ghost = JobId::new();

    let mut batch = lines(known.id, 1..=3);
    batch.extend(lines(ghost, 1..=4));
    batch.push(line(known.id, 4));
    assert_eq!(store.append_logs(&batch).await.unwrap(), 4);
    assert_eq!(
        store.logs(known.id, 0, 100).await.unwrap(),
        lines(known.id, 1..=4)
    );
    assert!(store.logs(ghost, 0, 100).await.unwrap().is_empty());

    // Nothing storable at all is still not an error (a retry would not help).
    assert_eq!(store.append_logs(&lines(ghost, 1..=2)).await.unwrap(), 0);
    assert!(store.logs(ghost, 0, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn append_logs_refuses_a_seq_beyond_i64() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "backup", 1).await;
    let mut batch = lines(job.id, 1..=2);
    batch.push(line(job.id, 3));
    batch[2].seq = u64::MAX;
    assert!(matches!(
        store.append_logs(&batch).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.logs(job.id, 0, 100).await.unwrap().is_empty());
    // The largest storable seq round-trips.
    let mut last = line(job.id, 1);
    last.seq = u64::try_from(i64::MAX).unwrap();
    assert_eq!(store.append_logs(&[last.clone()]).await.unwrap(), 1);
    assert_eq!(store.logs(job.id, 0, 10).await.unwrap(), vec![last]);
    assert!(store.logs(job.id, u64::MAX, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn logs_page_after_seq() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "backup", 1).await;
    store.append_logs(&lines(job.id, 1..=25)).await.unwrap();

    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store.logs(job.id, after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq;
        read.extend(page);
    }
    assert_eq!(read, lines(job.id, 1..=25));
    assert_eq!(
        store.logs(job.id, 20, 100).await.unwrap(),
        lines(job.id, 21..=25)
    );
    // Limit 0 is clamped up to one line.
    assert_eq!(
        store.logs(job.id, 0, 0).await.unwrap(),
        lines(job.id, 1..=1)
    );
    assert!(store.logs(JobId::new(), 0, 10).await.unwrap().is_empty());
}

/// Not a benchmark (nothing is asserted about time): prints the rate so a
/// regression is visible in `--nocapture` output.
#[tokio::test]
async fn append_logs_throughput() {
    const JOBS: usize = 10;
    const LINES: u64 = 100_000;
    const BATCH: usize = 500;
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        jobs.push(
            create(&*store, host, "backup", i64::try_from(i).unwrap())
                .await
                .id,
        );
    }
    // Each batch carries lines of every job, like a writer batching the
    // output of many agents.
    let per_job = LINES / JOBS as u64;
    let text = "repository 0a1b2c3d opened (version 2, compression level auto) \
                [0:01] 12.34% 1234 files 567.890 MiB, total 9876 files 4.321 GiB";
    let all: Vec<LogLineRecord> = (1..=per_job)
        .flat_map(|seq| {
            jobs.iter().map(move |job| LogLineRecord {
                job_id: *job,
                seq,
                ts: t(i64::try_from(seq).unwrap()),
                stream: "stdout".to_owned(),
                text: text.to_owned(),
            })
        })
        .collect();

    let started = std::time::Instant::now();
    let mut stored = 0;
    for batch in all.chunks(BATCH) {
        stored += store.append_logs(batch).await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(stored, LINES);
    println!(
        "append_logs: {LINES} lines in batches of {BATCH} across {JOBS} jobs: {:.0} lines/s ({took:?})",
        LINES as f64 / took.as_secs_f64()
    );
    assert_eq!(
        store.logs(jobs[3], 0, 10_000).await.unwrap().len() as u64,
        per_job
    );
}

/// A NUL in a line (restic or a hook can print one) does not cost the
/// batch: PostgreSQL's TEXT cannot hold it, so that store keeps the line
/// with the NUL replaced; SQLite keeps it as it is.
#[tokio::test]
async fn a_log_line_holding_nul_is_stored_with_its_batch() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "backup", 1).await.id;
    let mut batch = lines(job, 1..=3);
    batch[1].text = "before\0after".to_owned();
    assert_eq!(store.append_logs(&batch).await.unwrap(), 3);
    let stored = store.logs(job, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0], batch[0]);
    assert_eq!(stored[2], batch[2]);
    assert!(
        stored[1].text == "before\0after" || stored[1].text == "before\u{FFFD}after",
        "{:?}",
        stored[1].text
    );
    // A replay stores nothing twice.
    assert_eq!(store.append_logs(&batch).await.unwrap(), 0);
}

#[tokio::test]
async fn create_jobs_keeps_order_and_creates_all_or_nothing() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| new_job(if i % 2 == 0 { host } else { other }, "check", 10 - i))
        .collect();
    let made = store.create_jobs(&jobs).await.unwrap();
    assert_eq!(
        ids(&made),
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        "returned in the order given, not by creation time"
    );
    assert!(made.iter().all(|j| j.status == JobStatus::Queued));

    // One job of an unknown host: none of the batch is created.
    let mut broken = vec![
        new_job(host, "check", 20),
        new_job(HostId::new(), "check", 21),
    ];
    assert!(matches!(
        store.create_jobs(&broken).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.job(broken[0].id).await.unwrap(), None);
    // An id given twice (or taken): a conflict, and again nothing created.
    broken[1] = new_job(host, "check", 22);
    broken[1].id = jobs[0].id;
    assert!(matches!(
        store.create_jobs(&broken).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.job(broken[0].id).await.unwrap(), None);
}

#[tokio::test]
async fn batch_jobs_are_created_together_and_audited() {
    let (_db, store) = open_temp_store().await.unwrap();
    let hosts = [enrol(&*store).await, enrol(&*store).await];
    let jobs: Vec<NewJob> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| new_job(*h, "prune", i64::try_from(i).unwrap()))
        .collect();
    let made = store
        .create_batch_jobs(rm_core::BatchId::new(), 0, &jobs, None)
        .await
        .unwrap();
    assert_eq!(ids(&made), jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    for job in &jobs {
        assert_eq!(
            store.job(job.id).await.unwrap().unwrap().host_id,
            job.host_id
        );
    }
    let late = [
        new_job(hosts[0], "prune", 9),
        new_job(HostId::new(), "prune", 10),
    ];
    assert!(matches!(
        store
            .create_batch_jobs(rm_core::BatchId::new(), 2, &late, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.job(late[0].id).await.unwrap(), None);
}

/// Many servers (here: tasks on several connections) fire one repository's
/// job under one key at once: exactly one job is created, and every caller
/// gets that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_job_once_creates_one_job_per_key_under_concurrency() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_job_once(&new_job(host, "prune", 100 + i), "repo-1:prune:slot")
                .await
                .unwrap()
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let created: Vec<&Job> = results
        .iter()
        .filter(|(_, new)| *new)
        .map(|(j, _)| j)
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    assert!(results.iter().all(|(j, _)| j.id == created[0].id));
    let all = store
        .list_jobs(&JobFilter {
            host_id: Some(host),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![created[0].id]);
    // Later fires of the key find it too; another key makes its own.
    let (again, new) = store
        .create_job_once(&new_job(host, "prune", 200), "repo-1:prune:slot")
        .await
        .unwrap();
    assert_eq!((again.id, new), (created[0].id, false));
    let (other, new) = store
        .create_job_once(&new_job(host, "prune", 201), "repo-1:prune:next")
        .await
        .unwrap();
    assert!(new);
    assert_ne!(other.id, created[0].id);
}

/// Servers racing to move or end one job (two dispatchers, a lost-agent
/// verdict against the agent's report): each move happens once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_moves_and_ends_once_when_servers_race() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "backup", 1).await.id;

    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .advance_job(job, JobStatus::Dispatched, t(10 + i))
                .await
                .unwrap()
        }));
    }
    let mut moved = 0;
    for task in tasks {
        moved += usize::from(task.await.unwrap());
    }
    assert_eq!(moved, 1);

    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let status = if i % 2 == 0 {
            JobStatus::Succeeded
        } else {
            JobStatus::Failed
        };
        tasks.push(tokio::spawn(async move {
            let ended = store
                .finish_job(job, &end(status, 100 + i), None)
                .await
                .unwrap();
            (ended, status, 100 + i)
        }));
    }
    let mut ends = Vec::new();
    for task in tasks {
        let (ended, status, at) = task.await.unwrap();
        if ended {
            ends.push((status, at));
        }
    }
    assert_eq!(ends.len(), 1, "{ends:?}");
    let (status, at) = ends[0];
    let stored = store.job(job).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.finished_at), (status, Some(t(at))));
    let host = store.host(host).await.unwrap().unwrap();
    assert_eq!(host.last_backup_at, Some(t(at)));
}

// ── command results ────────────────────────────────────────────────────

#[tokio::test]
async fn command_results_are_upserted_per_job() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "backup", 1).await;
    assert_eq!(store.command_result(job.id).await.unwrap(), None);

    let refused = CommandResultRecord {
        job_id: job.id,
        accepted: false,
        reason: Some("busy".to_owned()),
        message: Some("another job is running".to_owned()),
        received_at: t(2),
    };
    store.record_command_result(&refused).await.unwrap();
    assert_eq!(
        store.command_result(job.id).await.unwrap(),
        Some(refused.clone())
    );

    let accepted = CommandResultRecord {
        accepted: true,
        reason: None,
        message: None,
        received_at: t(3),
        ..refused
    };
    store.record_command_result(&accepted).await.unwrap();
    assert_eq!(
        store.command_result(job.id).await.unwrap(),
        Some(accepted.clone())
    );

    let orphan = CommandResultRecord {
        job_id: JobId::new(),
        ..accepted
    };
    assert!(matches!(
        store.record_command_result(&orphan).await,
        Err(StoreError::NotFound(_))
    ));
}

// ── repository contents ────────────────────────────────────────────────

fn snapshot(id: &str, time: i64, size: Option<u64>) -> SnapshotRecord {
    SnapshotRecord {
        id: format!("{id}{}", "0".repeat(56)),
        short_id: id.to_owned(),
        time: t(time),
        hostname: "web-1.example".to_owned(),
        paths: vec!["/etc".to_owned(), "/home/ünïcode \"quoted\"".to_owned()],
        tags: if size.is_some() {
            vec!["nightly".to_owned()]
        } else {
            Vec::new()
        },
        size_bytes: size,
        file_count: size.map(|s| s / 100),
    }
}

#[tokio::test]
async fn snapshots_are_replaced_not_appended() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    assert!(store.snapshots(host).await.unwrap().is_empty());

    let s1 = snapshot("aaaa0001", 10, Some(1000));
    let s2 = snapshot("aaaa0002", 30, None);
    let s3 = snapshot("aaaa0003", 20, Some(3000));
    store
        .replace_snapshots(host, &[s1.clone(), s2.clone(), s3.clone()])
        .await
        .unwrap();
    store
        .replace_snapshots(other, std::slice::from_ref(&s1))
        .await
        .unwrap();
    assert_eq!(
        store.snapshots(host).await.unwrap(),
        vec![s2.clone(), s3.clone(), s1.clone()]
    );

    // After a forget: s1 gone, s4 new.
    let s4 = snapshot("aaaa0004", 40, Some(4000));
    store
        .replace_snapshots(host, &[s3.clone(), s4.clone(), s2.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.snapshots(host).await.unwrap(),
        vec![s4, s2.clone(), s3.clone()]
    );
    assert_eq!(store.snapshots(other).await.unwrap(), vec![s1]);

    // A broken list (an id twice) replaces nothing.
    assert!(matches!(
        store
            .replace_snapshots(host, &[s2.clone(), s2.clone()])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.snapshots(host).await.unwrap().len(), 3);

    store.replace_snapshots(host, &[]).await.unwrap();
    assert!(store.snapshots(host).await.unwrap().is_empty());

    assert!(matches!(
        store.replace_snapshots(HostId::new(), &[s3]).await,
        Err(StoreError::NotFound(_))
    ));
    let huge = snapshot("aaaa0005", 50, Some(u64::MAX));
    assert!(matches!(
        store.replace_snapshots(host, &[huge]).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Servers replacing and adding one host's snapshots at once never fail
/// each other and leave the count matching the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_snapshot_writes_keep_the_count_true() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let mut tasks = Vec::new();
    for i in 0..8_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let list: Vec<SnapshotRecord> = (0..=i)
                .map(|k| snapshot(&format!("bbbb{k:04}"), k, Some(10)))
                .collect();
            store.replace_snapshots(host, &list).await.unwrap();
            store
                .add_snapshot(host, &snapshot(&format!("cccc{i:04}"), 100 + i, None))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let listed = store.snapshots(host).await.unwrap();
    assert!(!listed.is_empty());
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        Some(u64::try_from(listed.len()).unwrap())
    );
}

#[tokio::test]
async fn repo_stats_keep_history_newest_first_and_size_the_host() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        None
    );

    let first = RepoStatsRecord {
        recorded_at: t(10),
        total_size_bytes: Some(10_000),
        raw_size_bytes: Some(4_000),
        unique_files: Some(120),
        snapshot_count: Some(3),
        last_check_at: Some(t(5)),
        last_check_status: Some("ok".to_owned()),
        lock_present: Some(false),
        last_prune_at: Some(t(6)),
        last_prune_freed_bytes: Some(512),
    };
    store.add_repo_stats(host, &first).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        Some(4_000)
    );

    // Without a raw size the host keeps the last known one.
    let partial = RepoStatsRecord {
        recorded_at: t(20),
        snapshot_count: Some(4),
        lock_present: Some(true),
        ..RepoStatsRecord::default()
    };
    store.add_repo_stats(host, &partial).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        Some(4_000)
    );

    let third = RepoStatsRecord {
        recorded_at: t(30),
        raw_size_bytes: Some(u64::try_from(i64::MAX).unwrap()),
        ..RepoStatsRecord::default()
    };
    store.add_repo_stats(host, &third).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        Some(u64::try_from(i64::MAX).unwrap())
    );

    assert_eq!(
        store.repo_stats(host, 10).await.unwrap(),
        vec![third.clone(), partial.clone(), first]
    );
    assert_eq!(
        store.repo_stats(host, 2).await.unwrap(),
        vec![third, partial]
    );
    assert!(store
        .repo_stats(HostId::new(), 10)
        .await
        .unwrap()
        .is_empty());

    let too_big = RepoStatsRecord {
        recorded_at: t(40),
        total_size_bytes: Some(u64::MAX),
        ..RepoStatsRecord::default()
    };
    assert!(matches!(
        store.add_repo_stats(host, &too_big).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.repo_stats(host, 10).await.unwrap().len(), 3);

    assert!(store.delete_host(host, t(50), None).await.unwrap());
    assert!(matches!(
        store
            .add_repo_stats(host, &RepoStatsRecord::default())
            .await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn repository_settings_set_replace_get() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    assert_eq!(store.repository(host).await.unwrap(), None);
    assert!(!store.host(host).await.unwrap().unwrap().has_repository);

    let sealed = SealedRepository {
        nonce: vec![1; 12],
        ciphertext: b"\x00sealed\xffbytes".to_vec(),
        format: SealFormat::OwnerBound,
        updated_at: t(10),
    };
    store
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(store.repository(host).await.unwrap(), Some(sealed.clone()));
    let listed = store.list_hosts().await.unwrap();
    let mut flags: Vec<(HostId, bool)> = listed.iter().map(|h| (h.id, h.has_repository)).collect();
    flags.sort();
    let mut expected = vec![(host, true), (other, false)];
    expected.sort();
    assert_eq!(flags, expected);

    let replaced = SealedRepository {
        nonce: vec![2; 12],
        ciphertext: b"other".to_vec(),
        format: SealFormat::Unbound,
        updated_at: t(20),
    };
    store
        .set_repository(host, &replaced, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(
        store.repository(host).await.unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(store.repository(other).await.unwrap(), None);

    let unknown = HostId::new();
    assert!(matches!(
        store
            .set_repository(unknown, &sealed, "/srv/restic", None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.repository(unknown).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(store.delete_host(host, t(30), None).await.unwrap());
    assert!(matches!(
        store
            .set_repository(host, &sealed, "/srv/restic", None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.repository(host).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn refused_repository_settings_are_recorded_and_cleared_by_new_ones() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let bare = enrol(&*store).await;
    let sealed = SealedRepository {
        nonce: vec![1; 12],
        ciphertext: b"sealed".to_vec(),
        format: SealFormat::OwnerBound,
        updated_at: t(10),
    };
    store
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(
        store.repositories().await.unwrap(),
        vec![(host, sealed.clone(), None)],
        "only hosts with settings are listed"
    );
    let refused = |h| {
        let store = &store;
        async move { store.host(h).await.unwrap().unwrap().repository_refused }
    };
    assert_eq!(refused(host).await, None);

    store
        .set_repository_refused(host, Some("`env.PATH` is not allowed"))
        .await
        .unwrap();
    assert_eq!(
        refused(host).await.as_deref(),
        Some("`env.PATH` is not allowed")
    );
    let listed = store.list_hosts().await.unwrap();
    assert!(listed
        .iter()
        .any(|h| h.id == host && h.repository_refused.is_some()));
    // A host without settings has nothing to refuse.
    store.set_repository_refused(bare, Some("x")).await.unwrap();
    assert_eq!(refused(bare).await, None);

    // New settings clear the refusal; so does an explicit `None`.
    store
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(refused(host).await, None);
    store
        .set_repository_refused(host, Some("again"))
        .await
        .unwrap();
    store.set_repository_refused(host, None).await.unwrap();
    assert_eq!(refused(host).await, None);
}

// ── schema ─────────────────────────────────────────────────────────────

#[tokio::test]
async fn a_dispatched_job_can_go_back_to_the_queue_but_a_running_one_cannot() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create(&*store, host, "check", 1).await;
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
