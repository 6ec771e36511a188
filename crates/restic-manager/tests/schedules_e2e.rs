//! Schedules end to end with the real agent and the real restic: the set is
//! acknowledged by version, fires on the agent's clock become successful
//! backups with trigger `schedule`, backups keep happening while the server
//! is down and reach it with their logs afterwards, and disabling or
//! deleting schedules stops them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rm_testkit::fixtures::make_tree;
use rm_testkit::{wait_until, Api, RunningAgent, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "schedule-e2e-password";

struct Setup {
    admin: Api,
    agent: RunningAgent,
    repo: String,
    src: String,
    _scratch: tempfile::TempDir,
}

/// A server, a real agent, a local repository (initialised) and a source tree.
async fn setup(server: &TestServer) -> Setup {
    let admin = server.admin().await.unwrap();
    let agent = server
        .enrolled_agent(Path::new(BIN), "sched", &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo").display().to_string();
    let src = scratch.path().join("src");
    make_tree(&src);
    let (status, _) = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/hosts/{}/repository", agent.host_id),
            Some(json!({"url": repo, "password": PASSWORD})),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let setup = Setup {
        admin,
        agent,
        repo,
        src: src.display().to_string(),
        _scratch: scratch,
    };
    wait_for_jobs(&setup, "the init job", |jobs| {
        jobs.iter()
            .any(|j| j["kind"] == "init" && j["status"] == "succeeded")
    })
    .await;
    setup
}

async fn jobs(setup: &Setup) -> Vec<Value> {
    let (_, jobs) = setup
        .admin
        .get(&format!(
            "/api/v1/jobs?host_id={}&limit=500",
            setup.agent.host_id
        ))
        .await
        .unwrap();
    jobs.as_array().cloned().unwrap_or_default()
}

async fn wait_for_jobs(setup: &Setup, what: &str, check: impl Fn(&[Value]) -> bool) {
    wait_for_jobs_within(setup, Duration::from_secs(60), what, check).await;
}

async fn wait_for_jobs_within(
    setup: &Setup,
    limit: Duration,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) {
    wait_until(limit, what, || async { check(&jobs(setup).await) })
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", setup.agent.process.log()));
}

async fn schedule(setup: &Setup, body: Value) -> String {
    let (status, created) = setup
        .admin
        .post(
            &format!("/api/v1/hosts/{}/schedules", setup.agent.host_id),
            body,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn wait_in_sync(setup: &Setup) {
    wait_until(
        Duration::from_secs(15),
        "the agent to acknowledge the schedule set",
        || async {
            setup
                .admin
                .host(&setup.agent.host_id)
                .await
                .unwrap()
                .schedule_in_sync
        },
    )
    .await
    .unwrap();
}

fn scheduled_backups(jobs: &[Value]) -> Vec<&Value> {
    jobs.iter()
        .filter(|j| j["kind"] == "backup" && j["trigger"] == "schedule")
        .collect()
}

async fn restic_snapshot_count(repo: &str) -> usize {
    let out = rm_testkit::restic::command()
        .args(["snapshots", "--json"])
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    if !out.status.success() {
        return 0; // locked by a running backup, say; ask again
    }
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .map(|v| v.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_schedule_fires_on_the_agent_and_disabling_or_deleting_it_stops_it() {
    let server = TestServer::start().await.unwrap();
    let setup = setup(&server).await;
    let id = schedule(
        &setup,
        json!({"kind": "backup", "cron": "*/5 * * * * *", "timezone": "UTC", "params": {"paths": [setup.src]}}),
    )
    .await;
    wait_in_sync(&setup).await;
    wait_for_jobs(&setup, "a scheduled backup to succeed", |jobs| {
        scheduled_backups(jobs)
            .iter()
            .any(|j| j["status"] == "succeeded" && j["schedule_id"] == id.as_str())
    })
    .await;

    // Disabled: acknowledged, and no new fire after that.
    let (status, _) = setup
        .admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/schedules/{id}"),
            Some(json!({"kind": "backup", "cron": "*/5 * * * * *", "timezone": "UTC", "params": {"paths": [setup.src]}, "enabled": false})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    wait_in_sync(&setup).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = scheduled_backups(&jobs(&setup).await).len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        scheduled_backups(&jobs(&setup).await).len(),
        before,
        "a disabled schedule fired"
    );

    // Deleted: the agent is left with none.
    assert_eq!(
        setup
            .admin
            .delete(&format!("/api/v1/schedules/{id}"))
            .await
            .unwrap()
            .0,
        204
    );
    wait_in_sync(&setup).await;
    let cached: Value = serde_json::from_slice(
        &std::fs::read(setup.agent.state_dir.join("schedules.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cached["schedules"], json!([]), "{cached}");
    assert_eq!(
        cached["version"].as_u64(),
        Some(
            setup
                .admin
                .host(&setup.agent.host_id)
                .await
                .unwrap()
                .schedule_version
        )
    );
}

#[tokio::test]
async fn with_the_server_down_the_agent_still_backs_up_and_reports_it_afterwards() {
    let server = TestServer::start().await.unwrap();
    let setup = setup(&server).await;
    let id = schedule(
        &setup,
        json!({"kind": "backup", "cron": "*/4 * * * * *", "timezone": "UTC", "params": {"paths": [setup.src]}}),
    )
    .await;
    wait_in_sync(&setup).await;
    let known_before: Vec<String> = jobs(&setup)
        .await
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();

    let stopped = server.stop_keeping_data().await.unwrap();
    let snapshots_at_stop = restic_snapshot_count(&setup.repo).await;
    wait_until(
        Duration::from_secs(60),
        "restic to show a backup made while the server was down",
        || async { restic_snapshot_count(&setup.repo).await > snapshots_at_stop },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", setup.agent.process.log()));

    let server = stopped.start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let setup = Setup { admin, ..setup };
    // The agent reconnects and reports the jobs it ran on its own. It may
    // be inside a backoff of up to a minute (`rm_agent::backoff::CAP`) when
    // the server was down long, as on a loaded machine; give it that.
    wait_for_jobs_within(
        &setup,
        rm_agent::backoff::CAP + Duration::from_secs(60),
        "an offline scheduled backup to be reported",
        |jobs| {
            scheduled_backups(jobs).iter().any(|j| {
                j["status"] == "succeeded"
                    && j["schedule_id"] == id.as_str()
                    && !known_before.iter().any(|k| j["id"] == k.as_str())
            })
        },
    )
    .await;
    let all = jobs(&setup).await;
    let offline = scheduled_backups(&all)
        .into_iter()
        .find(|j| j["status"] == "succeeded" && !known_before.iter().any(|k| j["id"] == k.as_str()))
        .unwrap()
        .clone();
    let (_, lines) = setup
        .admin
        .get(&format!(
            "/api/v1/jobs/{}/logs",
            offline["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let lines = lines.as_array().unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "complete, dense logs"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["text"].as_str().unwrap_or("").contains("saved")),
        "the backup summary reached the server: {lines:#?}"
    );
    assert_eq!(
        setup
            .admin
            .delete(&format!("/api/v1/schedules/{id}"))
            .await
            .unwrap()
            .0,
        204
    );
    drop(server);
}
