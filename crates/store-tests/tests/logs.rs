//! Job logs on every store (`RM_TEST_STORE`): idempotent storage by job and
//! seq, mixed and unknown jobs in one batch, paging, NUL, throughput; and
//! the agents' command results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, JobId, JobStatus};
use rm_store::{CommandResultRecord, Job, JobFilter, LogLineRecord, NewJob, StoreError};
use rm_store_tests::{
    create_job, end, enrol, ids, log_line, log_lines, new_job, open_temp_store, t,
};

// ── logs ───────────────────────────────────────────────────────────────

#[tokio::test]
async fn append_logs_is_idempotent_on_job_and_seq() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create_job(&*store, host, "backup", 1).await;

    assert_eq!(store.append_logs(&[]).await.unwrap(), 0);
    let batch = log_lines(job.id, 1..=10);
    assert_eq!(store.append_logs(&batch).await.unwrap(), 10);
    assert_eq!(store.append_logs(&batch).await.unwrap(), 0);

    // Overlapping replay: only 11..=15 are new; stored 5..=10 keep their text.
    let mut overlap = log_lines(job.id, 5..=15);
    overlap[0].text = "changed on replay".to_owned();
    assert_eq!(store.append_logs(&overlap).await.unwrap(), 5);

    let stored = store.logs(job.id, 0, 100).await.unwrap();
    assert_eq!(stored, log_lines(job.id, 1..=15));
}

#[tokio::test]
async fn append_logs_stores_many_jobs_in_one_batch() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let a = create_job(&*store, host, "backup", 1).await;
    let b = create_job(&*store, host, "check", 2).await;

    // Interleaved, and odd sizes so every statement size is used.
    let mut batch = Vec::new();
    for seq in 1..=300 {
        batch.push(log_line(a.id, seq));
        if seq <= 77 {
            batch.push(log_line(b.id, seq));
        }
    }
    assert_eq!(store.append_logs(&batch).await.unwrap(), 377);
    assert_eq!(
        store.logs(a.id, 0, 10_000).await.unwrap(),
        log_lines(a.id, 1..=300)
    );
    assert_eq!(
        store.logs(b.id, 0, 10_000).await.unwrap(),
        log_lines(b.id, 1..=77)
    );
}

#[tokio::test]
async fn lines_of_unknown_jobs_are_skipped_without_losing_the_others() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let known = create_job(&*store, host, "backup", 1).await;
    let ghost = JobId::new();

    let mut batch = log_lines(known.id, 1..=3);
    batch.extend(log_lines(ghost, 1..=4));
    batch.push(log_line(known.id, 4));
    assert_eq!(store.append_logs(&batch).await.unwrap(), 4);
    assert_eq!(
        store.logs(known.id, 0, 100).await.unwrap(),
        log_lines(known.id, 1..=4)
    );
    assert!(store.logs(ghost, 0, 100).await.unwrap().is_empty());

    // Nothing storable at all is still not an error (a retry would not help).
    assert_eq!(
        store.append_logs(&log_lines(ghost, 1..=2)).await.unwrap(),
        0
    );
    assert!(store.logs(ghost, 0, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn append_logs_refuses_a_seq_beyond_i64() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create_job(&*store, host, "backup", 1).await;
    let mut batch = log_lines(job.id, 1..=2);
    batch.push(log_line(job.id, 3));
    batch[2].seq = u64::MAX;
    assert!(matches!(
        store.append_logs(&batch).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.logs(job.id, 0, 100).await.unwrap().is_empty());
    // The largest storable seq round-trips.
    let mut last = log_line(job.id, 1);
    last.seq = u64::try_from(i64::MAX).unwrap();
    assert_eq!(store.append_logs(&[last.clone()]).await.unwrap(), 1);
    assert_eq!(store.logs(job.id, 0, 10).await.unwrap(), vec![last]);
    assert!(store.logs(job.id, u64::MAX, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn logs_page_after_seq() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let job = create_job(&*store, host, "backup", 1).await;
    store.append_logs(&log_lines(job.id, 1..=25)).await.unwrap();

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
    assert_eq!(read, log_lines(job.id, 1..=25));
    assert_eq!(
        store.logs(job.id, 20, 100).await.unwrap(),
        log_lines(job.id, 21..=25)
    );
    // Limit 0 is clamped up to one line.
    assert_eq!(
        store.logs(job.id, 0, 0).await.unwrap(),
        log_lines(job.id, 1..=1)
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
            create_job(&*store, host, "backup", i64::try_from(i).unwrap())
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
    let job = create_job(&*store, host, "backup", 1).await.id;
    let mut batch = log_lines(job, 1..=3);
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
    let job = create_job(&*store, host, "backup", 1).await.id;

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
    let job = create_job(&*store, host, "backup", 1).await;
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
