//! Log ingestion through the real server: agents stream `log.stream`
//! batches over real WebSockets on 127.0.0.1 and the server stores them in
//! SQLite, then in PostgreSQL when `RM_TEST_POSTGRES_URL` names a test
//! cluster. Prints lines per second for 1 job and for 100 concurrent jobs
//! (one per host, as hosts run one job at a time), per store.
//!
//! Run with `cargo bench -p restic-manager --bench log_ingest`. The target
//! on a 2-core machine is at least 100,000 lines/s.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use chrono::Utc;
use rm_core::{JobId, JobStatus, JobTrigger};
use rm_protocol::{Frame, JobStarted, LogLine, LogStream, LogStreamKind};
use rm_store::NewJob;
use rm_testkit::{Backend, RawAgent, TestServer};

/// Lines per `log.stream` frame (what the agent batches up to).
const BATCH: usize = 200;

/// One agent streaming `lines` lines of one job.
async fn stream_job(mut agent: RawAgent, job_id: String, lines: usize) {
    agent
        .send(Frame::new(JobStarted {
            job_id: job_id.clone(),
            started_at: Utc::now(),
        }))
        .await
        .unwrap();
    let text = "processed /srv/data/projects/restic-manager/crates/server/src/jobs/log_writer.rs (12.3 KiB)";
    let mut seq = 1u64;
    while (seq as usize) <= lines {
        let end = (seq as usize + BATCH - 1).min(lines) as u64;
        let batch: Vec<LogLine> = (seq..=end)
            .map(|s| LogLine {
                seq: s,
                ts: Utc::now(),
                stream: LogStreamKind::Stdout,
                text: text.to_owned(),
            })
            .collect();
        agent
            .send(Frame::new(LogStream {
                job_id: job_id.clone(),
                lines: batch,
            }))
            .await
            .unwrap();
        seq = end + 1;
    }
    // Keep the connection open until the caller has measured.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(agent);
}

async fn run(server: &TestServer, jobs: usize, lines_per_job: usize) {
    let mut agents = Vec::new();
    for i in 0..jobs {
        let (host_id, token) = server
            .enrolled_host(&format!("bench-{jobs}-{i}"))
            .await
            .unwrap();
        let job = server
            .store()
            .create_job(
                &NewJob {
                    id: JobId::new(),
                    host_id: host_id.parse().unwrap(),
                    kind: "backup".into(),
                    params: serde_json::json!({"paths": ["/srv"]}),
                    trigger: JobTrigger::Manual,
                    schedule_id: None,
                    status: JobStatus::Dispatched,
                    error: None,
                    created_at: Utc::now(),
                },
                None,
            )
            .await
            .unwrap();
        let agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
            .await
            .unwrap();
        agents.push((agent, job.id));
    }
    let ids: Vec<JobId> = agents.iter().map(|(_, id)| *id).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (agent, id) in agents {
        tasks.push(tokio::spawn(stream_job(
            agent,
            id.to_string(),
            lines_per_job,
        )));
    }
    // Done when the last line of every job is stored.
    for id in &ids {
        loop {
            let last = server
                .store()
                .logs(*id, lines_per_job as u64 - 1, 1)
                .await
                .unwrap();
            if !last.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let elapsed = started.elapsed();
    let total = jobs * lines_per_job;
    println!(
        "log ingest, {jobs:>3} concurrent job(s): {total:>7} lines in {:>6.2} s = {:>9.0} lines/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for task in tasks {
        task.abort();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            if backend == Backend::Postgres && !Backend::postgres_configured() {
                println!(
                    "PostgreSQL: skipped (set RM_TEST_POSTGRES_URL, e.g. to what `scripts/postgres-temp start DIR` prints)"
                );
                continue;
            }
            println!("{backend:?}:");
            // The bench's agents send no heartbeats: a long interval keeps
            // the server from closing them as silent while hosts enrol.
            let server = TestServer::start_on_with(backend, |c| c.heartbeat_seconds = 60)
                .await
                .unwrap();
            // Warm up the connection pool and the statement cache.
            run(&server, 1, 10_000).await;
            run(&server, 1, 200_000).await;
            run(&server, 100, 2_000).await;
        }
    });
}
