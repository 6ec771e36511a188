//! Jobs from the server's side, with a hand-driven agent: validation, one
//! job at a time per host in creation order, reports stored once, cancel,
//! refusals, lost jobs after a reconnect, live events, and repository
//! settings that are sealed and never shown back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use rm_protocol::{
    CommandResult, Frame, JobFinished, JobOutcome, JobProgress, JobStarted, Message, RejectReason,
    RepoStats, SnapshotAdded, SnapshotInfo, SnapshotsReport, CURRENT_PROTOCOL_VERSION,
};
use rm_server::ServerConfig;
use rm_testkit::{hello, log_batch, wait_until, Api, RawAgent, TestServer};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(5);

/// A host with a repository set, and a raw agent connected for it that has
/// already taken (and finished) the automatic `init` job.
struct Fixture {
    server: TestServer,
    admin: Api,
    host_id: String,
    token: String,
    agent: RawAgent,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// [`fixture`] with adjusted server settings.
async fn fixture_with(configure: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let server = TestServer::start_with(configure).await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("web-01").await.unwrap();
    set_repository(&admin, &host_id).await;
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent
        .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION)))
        .await
        .unwrap();
    let Message::ConfigUpdate(config) = agent.recv().await.unwrap().message else {
        panic!("expected config.update");
    };
    let repository = config.repository.expect("repository pushed on hello");
    assert_eq!(repository.password, "hunter2-repo");
    assert!(matches!(
        agent.recv().await.unwrap().message,
        Message::ScheduleSet(_)
    ));
    let init = agent.next_run().await.unwrap();
    assert_eq!(init.kind.as_str(), "init");
    agent
        .run_to_end(&init.job_id, JobOutcome::Succeeded, &[])
        .await
        .unwrap();
    Fixture {
        server,
        admin,
        host_id,
        token,
        agent,
    }
}

async fn set_repository(admin: &Api, host_id: &str) {
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/hosts/{host_id}/repository"),
            Some(json!({"url": "/srv/restic-repo", "password": "hunter2-repo", "env": {"AWS_ACCESS_KEY_ID": "AKIA123"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
}

async fn job(admin: &Api, id: &str) -> Value {
    let (status, body) = admin.get(&format!("/api/v1/jobs/{id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_status(admin: &Api, id: &str, want: &str) {
    wait_until(LIMIT, &format!("job {id} to be {want}"), || async {
        job(admin, id).await["status"] == want
    })
    .await
    .unwrap();
}

async fn post_job(admin: &Api, host_id: &str, body: Value) -> (u16, Value) {
    let (status, body) = admin
        .post(&format!("/api/v1/hosts/{host_id}/jobs"), body)
        .await
        .unwrap();
    (status.as_u16(), body)
}

#[tokio::test]
async fn a_job_needs_a_known_online_host_with_a_repository_and_valid_params() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("db-01").await.unwrap();
    let backup = json!({"kind": "backup", "params": {"paths": ["/srv"]}});

    // No repository yet.
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let (status, body) = post_job(&admin, &host_id, backup.clone()).await;
    assert_eq!(status, 409);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no repository"),
        "{body}"
    );

    // Bad repository settings name the field and store nothing.
    for (bad, field) in [
        (json!({"url": "", "password": "x"}), "url"),
        (json!({"url": "-x", "password": "x"}), "url"),
        (json!({"url": "/r", "password": ""}), "password"),
        (
            json!({"url": "/r", "password": "x", "env": {"RESTIC_PASSWORD": "y"}}),
            "env.RESTIC_PASSWORD",
        ),
        (json!({"url": "/r"}), "password"),
    ] {
        let (status, body) = admin
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/hosts/{host_id}/repository"),
                Some(bad.clone()),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{bad} → {body}"
        );
    }
    let (status, _) = admin
        .get(&format!("/api/v1/hosts/{host_id}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 404);

    // Setting it pushes it to the connected agent and queues an init job.
    set_repository(&admin, &host_id).await;
    let Message::ConfigUpdate(config) = agent.recv().await.unwrap().message else {
        panic!("expected config.update after PUT repository");
    };
    assert_eq!(config.repository.unwrap().url, "/srv/restic-repo");
    let init = agent.next_run().await.unwrap();
    assert_eq!(init.kind.as_str(), "init");
    let init_view = job(&admin, &init.job_id).await;
    assert_eq!(init_view["trigger"], "system");
    assert_eq!(init_view["status"], "dispatched");

    // Shown back without secrets.
    let (status, view) = admin
        .get(&format!("/api/v1/hosts/{host_id}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(view["url"], "/srv/restic-repo");
    assert_eq!(view["env_keys"], json!(["AWS_ACCESS_KEY_ID"]));
    assert!(!view.to_string().contains("hunter2"));
    assert!(!view.to_string().contains("AKIA123"));

    // A password inside a REST URL is masked too.
    let (status, _) = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/hosts/{host_id}/repository"),
            Some(json!({"url": "rest:http://alice:s3cr3t@127.0.0.1:8000/", "password": "hunter2-repo"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let Message::ConfigUpdate(config) = agent.recv().await.unwrap().message else {
        panic!("expected config.update");
    };
    assert!(
        config.repository.unwrap().url.contains("s3cr3t"),
        "the agent gets the real URL"
    );
    let (_, view) = admin
        .get(&format!("/api/v1/hosts/{host_id}/repository"))
        .await
        .unwrap();
    assert_eq!(view["url"], "rest:http://alice:***@127.0.0.1:8000/");
    assert_eq!(
        view["env_keys"],
        json!(["AWS_ACCESS_KEY_ID"]),
        "env left out is kept"
    );
    // Sending the masked URL back is refused rather than stored.
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/hosts/{host_id}/repository"),
            Some(json!({"url": "rest:http://alice:***@127.0.0.1:8000/", "password": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("masked"),
        "{body}"
    );

    for (body, status_code, phrase) in [
        (
            json!({"kind": "explode"}),
            400,
            "unknown job kind `explode`",
        ),
        (
            json!({"kind": "backup", "params": {"paths": ["relative/path"]}}),
            400,
            "params.paths[0]",
        ),
        (
            json!({"kind": "backup", "params": {"paths": ["/a"], "bogus": 1}}),
            400,
            "bogus",
        ),
        (json!({"kind": "forget", "params": {}}), 400, "keep_last"),
        (
            json!({"kind": "restore", "params": {"snapshot_id": "zz", "target": "/t"}}),
            400,
            "snapshot_id",
        ),
    ] {
        let (status, reply) = post_job(&admin, &host_id, body.clone()).await;
        assert_eq!(status, status_code, "{body}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(phrase),
            "{body} → {reply}"
        );
    }
    let missing = rm_core::HostId::new();
    assert_eq!(
        post_job(&admin, &missing.to_string(), backup.clone())
            .await
            .0,
        404
    );

    // Offline hosts get 409.
    agent.close().await.unwrap();
    wait_until(LIMIT, "offline", || async {
        !server.host_online(&host_id).await
    })
    .await
    .unwrap();
    let (status, body) = post_job(&admin, &host_id, backup).await;
    assert_eq!(status, 409);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("offline"));
    // Only the two init jobs (one per repository change) exist: nothing
    // bad was stored.
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={host_id}"))
        .await
        .unwrap();
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["init", "init"]);
}

#[tokio::test]
async fn a_host_runs_one_job_at_a_time_in_creation_order() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (status, first) = post_job(
        &admin,
        &host_id,
        json!({"kind": "backup", "params": {"paths": ["/a"]}}),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let (_, second) = post_job(&admin, &host_id, json!({"kind": "check"})).await;
    let (_, third) = post_job(&admin, &host_id, json!({"kind": "stats"})).await;
    assert_eq!(second["status"], "queued");
    assert_eq!(third["status"], "queued");

    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, first["id"].as_str().unwrap());
    assert_eq!(run.params, json!({"paths": ["/a"]}));
    assert!(
        agent.silent_for(Duration::from_millis(300)).await,
        "a second job was dispatched early"
    );
    wait_status(&admin, &run.job_id, "dispatched").await;

    agent
        .send(Frame::new(JobStarted {
            job_id: run.job_id.clone(),
            started_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_status(&admin, &run.job_id, "running").await;
    agent
        .run_to_end(&run.job_id, JobOutcome::Succeeded, &["done"])
        .await
        .unwrap();
    wait_status(&admin, &run.job_id, "succeeded").await;
    let finished = job(&admin, &run.job_id).await;
    assert_eq!(finished["stats"], json!({"files_new": 3}));
    assert!(finished["finished_at"].is_string());

    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, second["id"].as_str().unwrap());
    agent
        .run_to_end(&run.job_id, JobOutcome::Failed, &[])
        .await
        .unwrap();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, third["id"].as_str().unwrap());

    // Newest first, filterable.
    let (_, listed) = admin
        .get(&format!("/api/v1/jobs?host_id={host_id}&limit=2"))
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            third["id"].as_str().unwrap(),
            second["id"].as_str().unwrap()
        ]
    );
    let (_, failed) = admin.get("/api/v1/jobs?status=failed").await.unwrap();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let (status, body) = admin.get("/api/v1/jobs?status=exploded").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exploded"));

    // The host row shows the last backup.
    let host = admin.host(&host_id).await.unwrap();
    assert_eq!(host.last_backup_status.as_deref(), Some("succeeded"));
    assert!(host.last_backup_at.is_some());
}

#[tokio::test]
async fn log_lines_are_stored_once_in_order_and_paged_by_seq() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (_, created) = post_job(&admin, &host_id, json!({"kind": "check"})).await;
    let run = agent.next_run().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(run.job_id, id);
    agent
        .send(Frame::new(log_batch(id, 1, &["one", "two", "three"])))
        .await
        .unwrap();
    // A replay overlapping what was sent stores only the new line.
    agent
        .send(Frame::new(log_batch(id, 2, &["two", "three", "four"])))
        .await
        .unwrap();
    let long = "x".repeat(100_000);
    agent
        .send(Frame::new(log_batch(id, 5, &[long.as_str()])))
        .await
        .unwrap();
    agent
        .run_to_end(id, JobOutcome::Succeeded, &[])
        .await
        .unwrap();
    wait_status(&admin, id, "succeeded").await;

    let (_, lines) = admin.get(&format!("/api/v1/jobs/{id}/logs")).await.unwrap();
    let lines = lines.as_array().unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(lines[3]["text"], "four");
    let cut = lines[4]["text"].as_str().unwrap();
    assert!(
        cut.len() < 70_000 && cut.ends_with("bytes]"),
        "long line not cut with a marker"
    );
    let (_, after) = admin
        .get(&format!("/api/v1/jobs/{id}/logs?after_seq=3"))
        .await
        .unwrap();
    assert_eq!(after.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_agent_cannot_report_on_another_hosts_jobs() {
    let Fixture {
        server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (other_id, other_token) = server.enrolled_host("other").await.unwrap();
    let mut intruder = RawAgent::connect_and_hello(&server.ws_url(), &other_token)
        .await
        .unwrap();
    let (_, created) = post_job(&admin, &host_id, json!({"kind": "stats"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let _ = agent.next_run().await.unwrap();

    intruder
        .send(Frame::new(JobFinished {
            job_id: id.clone(),
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: Value::Null,
            error: None,
            finished_at: Utc::now(),
        }))
        .await
        .unwrap();
    let Message::Error(error) = intruder.recv().await.unwrap().message else {
        panic!("expected an error");
    };
    assert!(error.message.contains("not found"), "{}", error.message);
    intruder
        .send(Frame::new(log_batch("not-a-job-id", 1, &["x"])))
        .await
        .unwrap();
    let Message::Error(error) = intruder.recv().await.unwrap().message else {
        panic!("expected an error");
    };
    assert!(error.message.contains("job_id"), "{}", error.message);
    assert_eq!(job(&admin, &id).await["status"], "dispatched");
    let _ = other_id;
}

#[tokio::test]
async fn cancel_stops_queued_jobs_at_once_and_asks_the_agent_for_running_ones() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (_, running) = post_job(
        &admin,
        &host_id,
        json!({"kind": "backup", "params": {"paths": ["/a"]}}),
    )
    .await;
    let (_, queued) = post_job(&admin, &host_id, json!({"kind": "prune"})).await;
    let running_id = running["id"].as_str().unwrap();
    let queued_id = queued["id"].as_str().unwrap();
    let _ = agent.next_run().await.unwrap();
    agent
        .send(Frame::new(JobStarted {
            job_id: running_id.to_owned(),
            started_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_status(&admin, running_id, "running").await;

    let (status, body) = admin
        .post(&format!("/api/v1/jobs/{queued_id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "cancelled");

    let (status, _) = admin
        .post(&format!("/api/v1/jobs/{running_id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let Message::CommandCancel(cancel) = agent.recv().await.unwrap().message else {
        panic!("expected command.cancel");
    };
    assert_eq!(cancel.job_id, running_id);
    agent
        .send(Frame::new(JobFinished {
            job_id: running_id.to_owned(),
            status: JobOutcome::Cancelled,
            exit_code: Some(130),
            stats: Value::Null,
            error: Some("cancelled".into()),
            finished_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_status(&admin, running_id, "cancelled").await;
    // The cancelled queued job is never dispatched.
    assert!(agent.silent_for(Duration::from_millis(300)).await);

    let (status, body) = admin
        .post(&format!("/api/v1/jobs/{running_id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already finished"));
}

#[tokio::test]
async fn a_refused_job_fails_with_the_agents_reason_and_the_next_one_runs() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (_, first) = post_job(&admin, &host_id, json!({"kind": "unlock"})).await;
    let (_, second) = post_job(&admin, &host_id, json!({"kind": "snapshots"})).await;
    let run = agent.next_run().await.unwrap();
    agent
        .send(Frame::new(CommandResult {
            job_id: run.job_id.clone(),
            accepted: false,
            reason: Some(RejectReason::BadParams),
            message: Some("`params.paths[0]` must be an absolute path".into()),
        }))
        .await
        .unwrap();
    wait_status(&admin, first["id"].as_str().unwrap(), "failed").await;
    let refused = job(&admin, first["id"].as_str().unwrap()).await;
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("bad_params") && error.contains("must be an absolute path"),
        "{error}"
    );
    assert_eq!(
        agent.next_run().await.unwrap().job_id,
        second["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_busy_agent_gets_the_job_again_once_it_reports_the_end_of_what_it_runs() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (_, created) = post_job(&admin, &host_id, json!({"kind": "check"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, id);
    agent
        .send(Frame::new(CommandResult {
            job_id: id.clone(),
            accepted: false,
            reason: Some(RejectReason::Busy),
            message: Some("job 01OLD is still running".into()),
        }))
        .await
        .unwrap();
    wait_status(&admin, &id, "queued").await;
    assert!(job(&admin, &id).await["dispatched_at"].is_null());
    assert!(
        agent.silent_for(Duration::from_millis(300)).await,
        "no retry storm"
    );

    // The agent reports the end of the job it was busy with (one the
    // server had already closed): the waiting job goes out again.
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={host_id}&status=succeeded"))
        .await
        .unwrap();
    let old = jobs[0]["id"].as_str().unwrap().to_owned();
    agent
        .send(Frame::new(JobFinished {
            job_id: old,
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: Value::Null,
            error: None,
            finished_at: Utc::now(),
        }))
        .await
        .unwrap();
    assert_eq!(agent.next_run().await.unwrap().job_id, id);
}

#[tokio::test]
async fn a_job_the_agent_lost_fails_when_it_reconnects_without_it() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("crashy").await.unwrap();
    set_repository(&admin, &host_id).await;
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let init = agent.next_run().await.unwrap();
    agent
        .send(Frame::new(JobStarted {
            job_id: init.job_id.clone(),
            started_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_status(&admin, &init.job_id, "running").await;

    // Reconnecting while still running it keeps it running.
    let mut still = hello(CURRENT_PROTOCOL_VERSION);
    still.running_jobs = vec![init.job_id.clone()];
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send(Frame::new(still)).await.unwrap();
    agent.recv().await.unwrap();
    agent.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(job(&admin, &init.job_id).await["status"], "running");

    // Reconnecting without it means it was lost.
    agent.close().await.unwrap();
    let _agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    wait_status(&admin, &init.job_id, "failed").await;
    let lost = job(&admin, &init.job_id).await;
    assert!(lost["error"].as_str().unwrap().contains("interrupted"));
}

/// Starts a backup and plays it up to `job.started`; returns its id.
async fn running_backup(admin: &Api, host_id: &str, agent: &mut RawAgent) -> String {
    let (status, body) = post_job(
        admin,
        host_id,
        json!({"kind": "backup", "params": {"paths": ["/srv"]}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = agent.next_run().await.unwrap();
    agent
        .send(Frame::new(JobStarted {
            job_id: run.job_id.clone(),
            started_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_status(admin, &run.job_id, "running").await;
    run.job_id
}

fn finished(job_id: &str, status: JobOutcome) -> Frame {
    Frame::new(JobFinished {
        job_id: job_id.to_owned(),
        status,
        exit_code: Some(0),
        stats: json!({}),
        error: None,
        finished_at: Utc::now(),
    })
}

#[tokio::test]
async fn stored_reports_are_acknowledged_so_the_agent_can_drop_them() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let id = running_backup(&admin, &host_id, &mut agent).await;

    agent
        .send(Frame::new(log_batch(&id, 1, &["a", "b", "c"])))
        .await
        .unwrap();
    agent
        .wait_for_ack(LIMIT, |a| a.job_id == id && a.log_seq == 3)
        .await
        .unwrap();
    agent
        .send(Frame::new(log_batch(&id, 4, &["d", "e"])))
        .await
        .unwrap();
    agent
        .wait_for_ack(LIMIT, |a| a.job_id == id && a.log_seq == 5)
        .await
        .unwrap();
    agent
        .send(finished(&id, JobOutcome::Succeeded))
        .await
        .unwrap();
    let done = agent
        .wait_for_ack(LIMIT, |a| a.job_id == id && a.done)
        .await
        .unwrap();
    assert_eq!(done.error, None);
    wait_status(&admin, &id, "succeeded").await;

    // A replay of everything (the ack was lost) changes nothing, and is
    // acknowledged again.
    agent.take_acks();
    agent
        .send(Frame::new(log_batch(&id, 1, &["a", "b", "c", "d", "e"])))
        .await
        .unwrap();
    agent.send(finished(&id, JobOutcome::Failed)).await.unwrap();
    agent
        .wait_for_ack(LIMIT, |a| a.job_id == id && a.log_seq == 5)
        .await
        .unwrap();
    agent
        .wait_for_ack(LIMIT, |a| a.job_id == id && a.done)
        .await
        .unwrap();
    let stored = job(&admin, &id).await;
    assert_eq!(
        stored["status"], "succeeded",
        "a replayed end never moves a finished job"
    );
    let (_, lines) = admin.get(&format!("/api/v1/jobs/{id}/logs")).await.unwrap();
    assert_eq!(lines.as_array().unwrap().len(), 5);

    // Reports about a job the server does not know are refused for good,
    // so a spool does not replay them forever.
    let stranger = rm_core::JobId::new().to_string();
    agent
        .send(Frame::new(log_batch(&stranger, 1, &["?"])))
        .await
        .unwrap();
    let refused = agent
        .wait_for_ack(LIMIT, |a| a.job_id == stranger && a.done)
        .await
        .unwrap();
    assert!(refused.error.unwrap().contains("not found"));

    // Progress is live and lossy: for a job the server does not know yet
    // (an agent back in the middle of a job it started offline, whose
    // spool replay has not named it yet) it is dropped, never refused, so
    // the agent keeps the job's record.
    let Message::Error(stranger_refused) = agent.recv().await.unwrap().message else {
        panic!("the stranger's report is answered with an error");
    };
    assert!(stranger_refused.message.contains(&stranger));
    let early = rm_core::JobId::new().to_string();
    agent.take_acks();
    agent
        .send(Frame::new(JobProgress {
            job_id: early.clone(),
            percent: 10.0,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(
        agent.silent_for(Duration::from_millis(500)).await,
        "no error and no refusal for early progress"
    );
    assert!(agent.acks().iter().all(|a| a.job_id != early));
}

#[tokio::test]
async fn a_reconnect_that_names_a_job_in_its_spool_keeps_that_job_running() {
    let Fixture {
        server,
        admin,
        host_id,
        token,
        mut agent,
        ..
    } = fixture().await;
    let id = running_backup(&admin, &host_id, &mut agent).await;
    agent.close().await.unwrap();

    // The job ended while the agent was away; its end is in the spool.
    let mut back = hello(CURRENT_PROTOCOL_VERSION);
    back.spooled_jobs = vec![id.clone()];
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send(Frame::new(back)).await.unwrap();
    agent.recv().await.unwrap();
    agent.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job(&admin, &id).await["status"], "running");
    agent
        .send(Frame::new(log_batch(&id, 1, &["done"])))
        .await
        .unwrap();
    agent
        .send(finished(&id, JobOutcome::Succeeded))
        .await
        .unwrap();
    wait_status(&admin, &id, "succeeded").await;
}

#[tokio::test]
async fn a_job_whose_agent_never_returns_fails_and_the_agents_late_report_replaces_that() {
    let Fixture {
        server,
        admin,
        host_id,
        token,
        mut agent,
        ..
    } = fixture_with(|config| config.lost_agent_grace = Some(Duration::from_secs(1))).await;
    let id = running_backup(&admin, &host_id, &mut agent).await;
    agent.close().await.unwrap();

    wait_status(&admin, &id, "failed").await;
    let lost = job(&admin, &id).await;
    let error = lost["error"].as_str().unwrap();
    assert!(error.contains("agent was interrupted"), "{error}");
    assert!(error.contains("did not come back within 1 s"), "{error}");

    // The agent was only cut off: it comes back with the job's real end.
    let mut back = hello(CURRENT_PROTOCOL_VERSION);
    back.spooled_jobs = vec![id.clone()];
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send(Frame::new(back)).await.unwrap();
    agent
        .send(Frame::new(log_batch(&id, 1, &["snapshot 1234abcd saved"])))
        .await
        .unwrap();
    agent
        .send(finished(&id, JobOutcome::Succeeded))
        .await
        .unwrap();
    wait_status(&admin, &id, "succeeded").await;
    assert_eq!(job(&admin, &id).await["error"], Value::Null);
    let (_, host) = admin
        .get(&format!("/api/v1/hosts/{host_id}"))
        .await
        .unwrap();
    assert_eq!(host["last_backup_status"], "succeeded", "{host:#}");

    // Only once: the real end is final.
    agent.send(finished(&id, JobOutcome::Failed)).await.unwrap();
    agent
        .wait_for_ack(LIMIT, |a| a.job_id == id && a.done)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(job(&admin, &id).await["status"], "succeeded");
}

#[tokio::test]
async fn after_a_restart_the_jobs_of_an_agent_that_never_returns_fail() {
    let Fixture {
        server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture_with(|config| config.lost_agent_grace = Some(Duration::from_secs(1))).await;
    let id = running_backup(&admin, &host_id, &mut agent).await;
    // A graceful stop: the server has not lost anybody…
    let stopped = server.stop_keeping_data().await.unwrap();
    drop(agent);
    // …but after the restart this agent does not come back.
    let server = stopped.start().await.unwrap();
    let admin = server.admin().await.unwrap();
    wait_status(&admin, &id, "failed").await;
    let error = job(&admin, &id).await["error"].as_str().unwrap().to_owned();
    assert!(error.contains("the server restarted"), "{error}");
}

#[tokio::test]
async fn snapshots_and_statistics_reports_are_stored_and_served() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let snapshot = |id: &str, minutes: i64| SnapshotInfo {
        id: id.repeat(64 / id.len()),
        short_id: id.repeat(8 / id.len()),
        time: Utc::now() - chrono::Duration::minutes(minutes),
        hostname: "web-01".into(),
        paths: vec!["/srv".into()],
        tags: vec!["nightly".into()],
        size_bytes: Some(1000),
        file_count: Some(3),
    };
    agent
        .send(Frame::new(SnapshotsReport {
            snapshots: vec![snapshot("a", 10), snapshot("b", 5)],
        }))
        .await
        .unwrap();
    agent
        .send(Frame::new(SnapshotsReport {
            snapshots: vec![snapshot("b", 5), snapshot("c", 1)],
        }))
        .await
        .unwrap();
    agent
        .send(Frame::new(RepoStats {
            raw_size_bytes: Some(4096),
            snapshot_count: Some(2),
            ..Default::default()
        }))
        .await
        .unwrap();
    wait_until(LIMIT, "stats stored", || async {
        admin.host(&host_id).await.unwrap().repo_size_bytes == Some(4096)
    })
    .await
    .unwrap();
    let (_, snapshots) = admin
        .get(&format!("/api/v1/hosts/{host_id}/snapshots"))
        .await
        .unwrap();
    let short: Vec<&str> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap())
        .collect();
    assert_eq!(short, ["cccccccc", "bbbbbbbb"], "replaced, newest first");
    let (_, stats) = admin
        .get(&format!("/api/v1/hosts/{host_id}/repo-stats"))
        .await
        .unwrap();
    assert_eq!(stats["latest"]["raw_size_bytes"], 4096);
    assert_eq!(stats["history"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_snapshot_added_by_a_backup_is_listed_when_its_job_shows_finished() {
    let Fixture {
        server: _server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let snapshot = |id: &str| SnapshotInfo {
        id: id.repeat(64 / id.len()),
        short_id: id.repeat(8 / id.len()),
        time: Utc::now(),
        hostname: "web-01".into(),
        paths: vec!["/srv".into()],
        tags: Vec::new(),
        size_bytes: Some(1000),
        file_count: Some(3),
    };
    agent
        .send(Frame::new(SnapshotsReport {
            snapshots: vec![snapshot("a")],
        }))
        .await
        .unwrap();
    let id = running_backup(&admin, &host_id, &mut agent).await;
    let added = Frame::new(SnapshotAdded {
        job_id: id.clone(),
        snapshot: snapshot("b"),
    });
    // Sent twice, as a replay of the agent's spool would: stored once.
    agent.send(added.clone()).await.unwrap();
    agent.send(added).await.unwrap();
    agent
        .send(finished(&id, JobOutcome::Succeeded))
        .await
        .unwrap();
    wait_status(&admin, &id, "succeeded").await;
    // Frames of one connection are handled in order: no waiting here.
    let (_, snapshots) = admin
        .get(&format!("/api/v1/hosts/{host_id}/snapshots"))
        .await
        .unwrap();
    let short: Vec<&str> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap())
        .collect();
    assert_eq!(short, ["bbbbbbbb", "aaaaaaaa"], "added, newest first");
    assert_eq!(admin.host(&host_id).await.unwrap().snapshot_count, Some(2));

    // Not this host's job, or not a snapshot id: refused, nothing stored.
    agent
        .send(Frame::new(SnapshotAdded {
            job_id: "01J0000000000000000000000Z".into(),
            snapshot: snapshot("c"),
        }))
        .await
        .unwrap();
    match agent.recv().await.unwrap().message {
        Message::Error(e) => assert!(e.message.contains("not found"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
    let mut bad = snapshot("d");
    bad.id = String::from("--not-hex");
    agent
        .send(Frame::new(SnapshotAdded {
            job_id: id.clone(),
            snapshot: bad,
        }))
        .await
        .unwrap();
    match agent.recv().await.unwrap().message {
        Message::Error(e) => assert!(e.message.contains("snapshot.id"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(admin.host(&host_id).await.unwrap().snapshot_count, Some(2));
}

#[tokio::test]
async fn a_restore_from_another_host_carries_that_hosts_repository() {
    let Fixture {
        server,
        admin,
        host_id,
        ..
    } = fixture().await;
    let (target_id, target_token) = server.enrolled_host("target").await.unwrap();
    let mut target = RawAgent::connect_and_hello(&server.ws_url(), &target_token)
        .await
        .unwrap();
    let (status, body) = post_job(
        &admin,
        &target_id,
        json!({"kind": "restore", "params": {"snapshot_id": "1a2b3c4d", "source_host_id": host_id, "include": ["/srv/a"], "target": "/tmp/restore"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = target.next_run().await.unwrap();
    let repository = run.repository.expect("source repository sent with the job");
    assert_eq!(repository.url, "/srv/restic-repo");
    assert_eq!(repository.password, "hunter2-repo");
}

#[tokio::test]
async fn job_events_stream_status_logs_progress_and_the_end() {
    let Fixture {
        server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (_, created) = post_job(
        &admin,
        &host_id,
        json!({"kind": "backup", "params": {"paths": ["/a"]}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let _ = agent.next_run().await.unwrap();
    agent
        .send(Frame::new(JobStarted {
            job_id: id.clone(),
            started_at: Utc::now(),
        }))
        .await
        .unwrap();
    agent
        .send(Frame::new(log_batch(&id, 1, &["before subscribe"])))
        .await
        .unwrap();
    wait_status(&admin, &id, "running").await;

    let token = admin_token(&server).await;
    let response = rm_testkit::http::client()
        .get(format!("{}/api/v1/jobs/{id}/events", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = tokio::spawn(rm_testkit::http::read_sse(response));

    tokio::time::sleep(Duration::from_millis(200)).await;
    agent
        .send(Frame::new(JobProgress {
            job_id: id.clone(),
            percent: 50.0,
            files_done: 1,
            ..Default::default()
        }))
        .await
        .unwrap();
    agent
        .send(Frame::new(log_batch(&id, 2, &["after subscribe"])))
        .await
        .unwrap();
    agent
        .send(Frame::new(JobFinished {
            job_id: id.clone(),
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: json!({}),
            error: None,
            finished_at: Utc::now(),
        }))
        .await
        .unwrap();

    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"status"));
    assert_eq!(names.last(), Some(&"finished"));
    let logs: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "log")
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["before subscribe", "after subscribe"]);
    assert!(names.contains(&"progress"), "{names:?}");
    assert_eq!(events.last().unwrap().1["status"], "succeeded");
}

async fn admin_token(server: &TestServer) -> String {
    let (_, body) = server
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": rm_testkit::ADMIN_PASSWORD}),
        )
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// Opens an SSE stream at `path` with `token`; the reader task returns the
/// events once the server ends the stream.
async fn open_sse(
    server: &TestServer,
    path: &str,
    token: &str,
) -> tokio::task::JoinHandle<Vec<(String, Value)>> {
    let response = rm_testkit::http::client()
        .get(format!("{}{path}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    tokio::spawn(rm_testkit::http::read_sse(response))
}

/// Waits for a stream the server should end within a couple of seconds.
async fn ends_soon(reader: tokio::task::JoinHandle<Vec<(String, Value)>>, what: &str) {
    tokio::time::timeout(Duration::from_secs(3), reader)
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream was still open after 3 s"))
        .unwrap();
}

#[tokio::test]
async fn live_streams_end_when_their_session_or_token_ends() {
    let Fixture {
        server,
        admin,
        host_id,
        mut agent,
        ..
    } = fixture().await;
    let (_, created) = post_job(
        &admin,
        &host_id,
        json!({"kind": "backup", "params": {"paths": ["/a"]}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let _ = agent.next_run().await.unwrap();
    let job_events = format!("/api/v1/jobs/{id}/events");

    // A login session: logging out ends both kinds of stream.
    let session = admin_token(&server).await;
    let fleet = open_sse(&server, "/api/v1/events", &session).await;
    let job = open_sse(&server, &job_events, &session).await;
    // Streams of another session stay open.
    let other = open_sse(&server, "/api/v1/events", admin.token().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fleet.is_finished() && !job.is_finished());
    let (status, _) = admin
        .with_token(&session)
        .post("/api/v1/auth/logout", json!({}))
        .await
        .unwrap();
    assert_eq!(status, 204);
    ends_soon(fleet, "fleet events after logout").await;
    ends_soon(job, "job events after logout").await;
    assert!(!other.is_finished(), "another session's stream ended too");

    // An API token: revoking it ends its streams.
    let (status, body) = admin
        .post("/api/v1/api-tokens", json!({"name": "dash"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let token_id = body["id"].as_str().unwrap().to_owned();
    let fleet = open_sse(&server, "/api/v1/events", &token).await;
    let job = open_sse(&server, &job_events, &token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fleet.is_finished() && !job.is_finished());
    let (status, _) = admin
        .delete(&format!("/api/v1/api-tokens/{token_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    ends_soon(fleet, "fleet events after revocation").await;
    ends_soon(job, "job events after revocation").await;
    assert!(!other.is_finished(), "another session's stream ended too");

    // A deleted user's streams end, whatever they were opened with.
    let (status, body) = admin
        .post(
            "/api/v1/users",
            json!({"username": "bob", "password": "bob-password-1", "role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let bob_id = body["id"].as_str().unwrap().to_owned();
    let bob = server
        .anonymous()
        .login("bob", "bob-password-1")
        .await
        .unwrap();
    let fleet = open_sse(&server, "/api/v1/events", bob.token().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fleet.is_finished());
    let (status, _) = admin
        .delete(&format!("/api/v1/users/{bob_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    ends_soon(fleet, "fleet events after the user was deleted").await;

    // Changing your password ends your sessions' streams, this one's too.
    let (status, _) = admin
        .send(
            reqwest::Method::PUT,
            "/api/v1/users/me/password",
            Some(json!({
                "current_password": rm_testkit::ADMIN_PASSWORD,
                "new_password": "a-new-admin-password"
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    ends_soon(other, "fleet events after a password change").await;
}
