//! Schedules from the server's side, with a hand-driven agent: validation,
//! one version bump per change, acknowledgement and drift, fires becoming
//! jobs, skipped fires, and jobs an agent ran on its own while offline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use rm_protocol::{
    Frame, JobFinished, JobOutcome, JobStarted, LogLine, LogStream, LogStreamKind, Message,
    ScheduleAck, ScheduleFire, CURRENT_PROTOCOL_VERSION,
};
use rm_testkit::{hello, wait_until, Api, RawAgent, TestServer};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(5);

async fn set_repository(admin: &Api, host_id: &str) {
    admin
        .set_repository(host_id, "/srv/repo", "pw")
        .await
        .unwrap();
}

/// The next frame of a kind, skipping the others.
async fn next_where(agent: &mut RawAgent, kind: &str) -> Frame {
    for _ in 0..20 {
        let frame = agent.recv().await.unwrap();
        if frame.message.kind() == kind {
            return frame;
        }
    }
    panic!("no {kind} frame");
}

async fn create_schedule(admin: &Api, host_id: &str, body: Value) -> (u16, Value) {
    let (status, body) = admin
        .post(&format!("/api/v1/hosts/{host_id}/schedules"), body)
        .await
        .unwrap();
    (status.as_u16(), body)
}

async fn jobs_of(admin: &Api, host_id: &str) -> Vec<Value> {
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={host_id}"))
        .await
        .unwrap();
    jobs.as_array().unwrap().clone()
}

#[tokio::test]
async fn schedules_are_validated_versioned_pushed_and_acknowledged() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("web").await.unwrap();

    for (body, phrase) in [
        (
            json!({"kind": "backup", "cron": "61 * * * *", "params": {"paths": ["/a"]}}),
            "cron",
        ),
        (
            json!({"kind": "backup", "cron": "* * *", "params": {"paths": ["/a"]}}),
            "cron",
        ),
        (
            json!({"kind": "backup", "cron": "@daily", "timezone": "Mars/Olympus", "params": {"paths": ["/a"]}}),
            "Mars/Olympus",
        ),
        (
            json!({"kind": "restore", "cron": "@daily", "params": {}}),
            "cannot be scheduled",
        ),
        (
            json!({"kind": "explode", "cron": "@daily"}),
            "unknown job kind",
        ),
        (
            json!({"kind": "backup", "cron": "@daily", "params": {"paths": ["rel"]}}),
            "params.paths[0]",
        ),
        (
            json!({"kind": "forget", "cron": "@daily", "params": {"preset": "forever"}}),
            "not a preset",
        ),
        (
            json!({"kind": "backup", "cron": "@daily", "params": {"paths": ["/a"]}, "jitter_seconds": 999999}),
            "jitter_seconds",
        ),
        (
            json!({"kind": "backup", "cron": "@daily", "params": {"paths": ["/a"]}, "colour": "red"}),
            "colour",
        ),
    ] {
        let (status, reply) = create_schedule(&admin, &host_id, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(phrase), "{body} → {message}");
    }
    let host = admin.host(&host_id).await.unwrap();
    assert_eq!(host.schedule_version, 0, "bad requests changed nothing");
    assert!(host.schedule_in_sync);

    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let (status, created) = create_schedule(
        &admin,
        &host_id,
        json!({"kind": "backup", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "params": {"paths": ["/srv"]}, "jitter_seconds": 300}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["description"], "every day at 02:30");
    assert!(created["next_fire_at"].is_string());
    let Message::ScheduleSet(set) = next_where(&mut agent, "schedule.set").await.message else {
        unreachable!()
    };
    assert_eq!(set.version, 1);
    assert_eq!(set.schedules.len(), 1);
    assert_eq!(set.schedules[0].jitter_seconds, 300);
    let host = admin.host(&host_id).await.unwrap();
    assert_eq!(
        (host.schedule_version, host.schedule_applied_version),
        (1, None)
    );
    assert!(!host.schedule_in_sync, "not acknowledged yet: drifted");

    agent
        .send(Frame::new(ScheduleAck {
            version: 1,
            applied_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_until(LIMIT, "the ack to be recorded", || async {
        admin.host(&host_id).await.unwrap().schedule_in_sync
    })
    .await
    .unwrap();

    // A preset-based forget schedule; each change bumps the version once.
    let (_, forget) = create_schedule(
        &admin,
        &host_id,
        json!({"kind": "forget", "cron": "@weekly", "params": {"preset": "standard", "prune": true}}),
    )
    .await;
    assert_eq!(
        forget["params"],
        json!({"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "prune": true})
    );
    let id = created["id"].as_str().unwrap();
    let (status, updated) = admin
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/schedules/{id}"),
            Some(json!({"kind": "backup", "cron": "0 3 * * *", "params": {"paths": ["/srv"]}, "enabled": false})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{updated}");
    assert!(
        updated["next_fire_at"].is_null(),
        "a disabled schedule never fires"
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/schedules/{id}"))
            .await
            .unwrap()
            .0,
        204
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/schedules/{id}"))
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(admin.host(&host_id).await.unwrap().schedule_version, 4);
    let (_, listed) = admin
        .get(&format!("/api/v1/hosts/{host_id}/schedules"))
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // An ack for a version the server never issued is ignored.
    agent
        .send(Frame::new(ScheduleAck {
            version: 99,
            applied_at: Utc::now(),
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        admin.host(&host_id).await.unwrap().schedule_applied_version,
        Some(1)
    );

    let (_, presets) = admin.get("/api/v1/retention-presets").await.unwrap();
    assert!(presets
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "standard"));

    // A reconnecting agent gets the current set in its hello pushes.
    agent.close().await.unwrap();
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent
        .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION)))
        .await
        .unwrap();
    let Message::ScheduleSet(set) = next_where(&mut agent, "schedule.set").await.message else {
        unreachable!()
    };
    assert_eq!(set.version, 4);
    assert_eq!(set.schedules.len(), 1);
}

#[tokio::test]
async fn a_fire_becomes_a_scheduled_job_and_a_fire_during_it_is_skipped() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("db").await.unwrap();
    set_repository(&admin, &host_id).await;
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let init = next_where(&mut agent, "command.run").await;
    let Message::CommandRun(init) = init.message else {
        unreachable!()
    };
    agent
        .send(Frame::new(JobFinished {
            job_id: init.job_id,
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: Value::Null,
            error: None,
            finished_at: Utc::now(),
        }))
        .await
        .unwrap();
    let (_, schedule) = create_schedule(
        &admin,
        &host_id,
        json!({"kind": "backup", "cron": "@hourly", "params": {"paths": ["/srv"]}}),
    )
    .await;
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();

    let fire = |catch_up| ScheduleFire {
        schedule_id: schedule_id.clone(),
        scheduled_at: Utc::now(),
        job_id: None,
        skipped: false,
        catch_up,
    };
    agent.send(Frame::new(fire(false))).await.unwrap();
    let Message::CommandRun(run) = next_where(&mut agent, "command.run").await.message else {
        unreachable!()
    };
    assert_eq!(run.params, json!({"paths": ["/srv"]}));
    let (_, job) = admin
        .get(&format!("/api/v1/jobs/{}", run.job_id))
        .await
        .unwrap();
    assert_eq!(job["trigger"], "schedule");
    assert_eq!(job["schedule_id"], schedule_id.as_str());

    // It is still dispatched: the next fire is recorded as skipped.
    agent.send(Frame::new(fire(false))).await.unwrap();
    wait_until(LIMIT, "a skipped job", || async {
        jobs_of(&admin, &host_id)
            .await
            .iter()
            .any(|j| j["status"] == "skipped")
    })
    .await
    .unwrap();
    let skipped = jobs_of(&admin, &host_id)
        .await
        .into_iter()
        .find(|j| j["status"] == "skipped")
        .unwrap();
    assert!(
        skipped["error"].as_str().unwrap().contains(&run.job_id),
        "{skipped}"
    );
    assert!(
        agent.silent_for(Duration::from_millis(300)).await,
        "a skipped fire dispatches nothing"
    );

    // A fire for a schedule of another host is refused.
    let (_, other_token) = server.enrolled_host("other").await.unwrap();
    let mut other = RawAgent::connect_and_hello(&server.ws_url(), &other_token)
        .await
        .unwrap();
    other.send(Frame::new(fire(false))).await.unwrap();
    let Message::Error(error) = next_where(&mut other, "error").await.message else {
        unreachable!()
    };
    assert!(error.message.contains("not found"), "{}", error.message);
}

#[tokio::test]
async fn a_job_an_agent_ran_while_offline_is_recorded_with_its_reports_once() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("laptop").await.unwrap();
    set_repository(&admin, &host_id).await;
    let (_, schedule) = create_schedule(
        &admin,
        &host_id,
        json!({"kind": "backup", "cron": "@daily", "params": {"paths": ["/home"]}}),
    )
    .await;
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();
    let job_id = rm_core::JobId::new().to_string();
    let scheduled_at = Utc::now() - chrono::Duration::minutes(30);

    // What the agent queued while the server was away, sent on reconnect
    // (twice, as after a second reconnect).
    let mut still_running = hello(CURRENT_PROTOCOL_VERSION);
    still_running.running_jobs = vec![job_id.clone()];
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send(Frame::new(still_running)).await.unwrap();
    for _ in 0..2 {
        agent
            .send(Frame::new(ScheduleFire {
                schedule_id: schedule_id.clone(),
                scheduled_at,
                job_id: Some(job_id.clone()),
                skipped: false,
                catch_up: true,
            }))
            .await
            .unwrap();
        agent
            .send(Frame::new(JobStarted {
                job_id: job_id.clone(),
                started_at: scheduled_at,
            }))
            .await
            .unwrap();
        agent
            .send(Frame::new(LogStream {
                job_id: job_id.clone(),
                lines: (1..=3)
                    .map(|seq| LogLine {
                        seq,
                        ts: scheduled_at,
                        stream: LogStreamKind::Stdout,
                        text: format!("line {seq}"),
                    })
                    .collect(),
            }))
            .await
            .unwrap();
        agent
            .send(Frame::new(JobFinished {
                job_id: job_id.clone(),
                status: JobOutcome::Succeeded,
                exit_code: Some(0),
                stats: json!({"files_new": 1}),
                error: None,
                finished_at: scheduled_at + chrono::Duration::minutes(1),
            }))
            .await
            .unwrap();
    }
    wait_until(LIMIT, "the offline job to be recorded", || async {
        let (status, job) = admin.get(&format!("/api/v1/jobs/{job_id}")).await.unwrap();
        status == 200 && job["status"] == "succeeded"
    })
    .await
    .unwrap();
    let (_, job) = admin.get(&format!("/api/v1/jobs/{job_id}")).await.unwrap();
    assert_eq!(job["trigger"], "catch_up");
    assert_eq!(job["schedule_id"], schedule_id.as_str());
    let (_, logs) = admin
        .get(&format!("/api/v1/jobs/{job_id}/logs"))
        .await
        .unwrap();
    assert_eq!(
        logs.as_array().unwrap().len(),
        3,
        "replayed lines are stored once"
    );
    let kinds: Vec<Value> = jobs_of(&admin, &host_id)
        .await
        .iter()
        .map(|j| j["kind"].clone())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "backup").count(),
        1,
        "the replayed fire made no second job"
    );
}
