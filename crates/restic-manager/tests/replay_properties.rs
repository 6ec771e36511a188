//! Property: whatever order, repetition and reconnects a job's reports
//! arrive in — an agent replaying its spool after broken connections, lost
//! acks, a confused agent resending old batches — the store ends up
//! consistent once the agent has replayed everything: every log line
//! stored exactly once with no gap, and the job finished exactly once, with
//! the first end the server accepted.
//!
//! Runs against the real server and store over real WebSockets, one job
//! per generated case (`PROPTEST_CASES` raises the count).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rm_protocol::{Frame, JobFinished, JobOutcome, JobStarted, Message, CURRENT_PROTOCOL_VERSION};
use rm_testkit::{hello, log_batch, Api, RawAgent, TestServer};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);

/// One step of a delivery.
#[derive(Debug, Clone)]
enum Step {
    /// Send batch `i` (again, or out of order).
    Batch(usize),
    /// Send a `job.finished` with this outcome (again, or early).
    Finished(JobOutcome),
    /// Drop the connection and come back naming the job in the spool.
    Reconnect,
}

/// A job's lines cut into batches, and the mess they arrive in.
#[derive(Debug, Clone)]
struct Plan {
    batch_sizes: Vec<usize>,
    steps: Vec<Step>,
    final_outcome: JobOutcome,
}

fn outcome() -> impl Strategy<Value = JobOutcome> {
    prop_oneof![
        Just(JobOutcome::Succeeded),
        Just(JobOutcome::Partial),
        Just(JobOutcome::Failed),
        Just(JobOutcome::Cancelled),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    prop::collection::vec(1usize..=12, 1..=8).prop_flat_map(|batch_sizes| {
        let batches = batch_sizes.len();
        let step = prop_oneof![
            6 => (0..batches).prop_map(Step::Batch),
            1 => outcome().prop_map(Step::Finished),
            1 => Just(Step::Reconnect),
        ];
        (
            Just(batch_sizes),
            prop::collection::vec(step, 0..=24),
            outcome(),
        )
            .prop_map(|(batch_sizes, steps, final_outcome)| Plan {
                batch_sizes,
                steps,
                final_outcome,
            })
    })
}

/// The server, the host and its hand-driven agent, shared by every case.
struct Bench {
    server: TestServer,
    admin: Api,
    host_id: String,
    token: String,
    agent: Option<RawAgent>,
}

impl Bench {
    async fn new() -> Bench {
        let server = TestServer::start().await.unwrap();
        let admin = server.admin().await.unwrap();
        let (host_id, token) = server.enrolled_host("replayer").await.unwrap();
        admin
            .set_repository(&host_id, "/srv/restic", "property-password")
            .await
            .unwrap();
        let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
            .await
            .unwrap();
        let init = agent.next_run().await.unwrap();
        agent
            .run_to_end(&init.job_id, JobOutcome::Succeeded, &[])
            .await
            .unwrap();
        admin.finished_job(&init.job_id, LIMIT).await.unwrap();
        Bench {
            server,
            admin,
            host_id,
            token,
            agent: Some(agent),
        }
    }

    fn agent(&mut self) -> &mut RawAgent {
        self.agent.as_mut().unwrap()
    }

    async fn reconnect(&mut self, spooled: &str) {
        if let Some(agent) = self.agent.take() {
            agent.close().await.unwrap();
        }
        let mut back = hello(CURRENT_PROTOCOL_VERSION);
        back.spooled_jobs = vec![spooled.to_owned()];
        let mut agent = RawAgent::connect_as(&self.server.ws_url(), &self.token)
            .await
            .unwrap();
        agent.send(Frame::new(back)).await.unwrap();
        for _ in 0..2 {
            let push = agent.recv().await.unwrap();
            assert!(matches!(
                push.message,
                Message::ConfigUpdate(_) | Message::ScheduleSet(_)
            ));
        }
        self.agent = Some(agent);
    }

    /// Plays one plan on a fresh backup job and checks the store after.
    async fn play(&mut self, plan: &Plan) {
        let (status, body) = self
            .admin
            .post(
                &format!("/api/v1/hosts/{}/jobs", self.host_id),
                json!({"kind": "backup", "params": {"paths": ["/srv"]}}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        let job_id = self.agent().next_run().await.unwrap().job_id;
        self.agent()
            .send(Frame::new(JobStarted {
                job_id: job_id.clone(),
                started_at: Utc::now(),
            }))
            .await
            .unwrap();

        let texts: Vec<String> = (1..=plan.batch_sizes.iter().sum::<usize>())
            .map(|seq| format!("{job_id} line {seq}"))
            .collect();
        let mut firsts = Vec::new();
        let mut next = 1;
        for size in &plan.batch_sizes {
            firsts.push(next);
            next += size;
        }
        let batch = |i: usize| {
            let first = firsts[i];
            let lines: Vec<&str> = texts[first - 1..first - 1 + plan.batch_sizes[i]]
                .iter()
                .map(String::as_str)
                .collect();
            Frame::new(log_batch(&job_id, first as u64, &lines))
        };
        let end = |status: JobOutcome| {
            Frame::new(JobFinished {
                job_id: job_id.clone(),
                status,
                exit_code: Some(0),
                stats: json!({}),
                error: None,
                finished_at: Utc::now(),
            })
        };

        // The mess, then what a real agent does last: replay the spool,
        // every batch in order and the end.
        let mut first_end = None;
        for step in &plan.steps {
            match step {
                Step::Batch(i) => self.agent().send(batch(*i)).await.unwrap(),
                Step::Finished(status) => {
                    first_end.get_or_insert(*status);
                    self.agent().send(end(*status)).await.unwrap();
                }
                Step::Reconnect => self.reconnect(&job_id).await,
            }
        }
        self.reconnect(&job_id).await;
        for i in 0..plan.batch_sizes.len() {
            self.agent().send(batch(i)).await.unwrap();
        }
        self.agent().send(end(plan.final_outcome)).await.unwrap();
        let expected_status = first_end.unwrap_or(plan.final_outcome);
        let last_seq = texts.len() as u64;
        let id = job_id.clone();
        self.agent()
            .wait_for_ack(LIMIT, |a| a.job_id == id && a.log_seq == last_seq)
            .await
            .unwrap();
        self.agent()
            .wait_for_ack(LIMIT, |a| a.job_id == id && a.done)
            .await
            .unwrap();

        let job = self.admin.finished_job(&job_id, LIMIT).await.unwrap();
        let want = serde_json::to_value(expected_status).unwrap();
        assert_eq!(
            job["status"], want,
            "the first accepted end stays: {plan:?}"
        );
        let logs = self.admin.job_logs(&job_id).await.unwrap();
        let seqs: Vec<u64> = logs.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "{plan:?}");
        for (line, text) in logs.iter().zip(&texts) {
            assert_eq!(line["text"], text.as_str());
        }
    }
}

#[test]
fn any_delivery_of_a_jobs_reports_leaves_the_store_consistent() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bench = std::cell::RefCell::new(runtime.block_on(Bench::new()));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        // Each case is a real job on a real server: shrink briefly.
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&plan(), |plan| {
        runtime.block_on(bench.borrow_mut().play(&plan));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
