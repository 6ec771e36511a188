//! Several servers on ONE PostgreSQL database (issue 15): whatever an
//! operator does on one server reaches an agent connected to another —
//! a job started, cancelled, a repository set, a folder listed, a token
//! rotated, a host deleted — and what that agent reports shows live on the
//! first server (job events over SSE, the dashboard's fleet stream).
//!
//! Two real servers in this process with their own ports, listeners and
//! hubs, sharing only the database; the agent is a protocol-level agent
//! (`RawAgent`) so each frame it receives is checked. The real agent and
//! real processes are in `cluster_failover.rs`.
//!
//! Needs `RM_TEST_POSTGRES_URL` (scripts/test starts a temporary cluster);
//! without it the tests skip with the reason printed, and fail under
//! `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rm_protocol::{
    CommandResult, EntryType, Frame, JobFinished, JobOutcome, JobStarted, Message, TreeEntry,
    TreeListResult,
};
use rm_testkit::{log_batch, wait_until, Backend, RawAgent, TestServer};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(20);

/// Whether PostgreSQL is there; prints why not, and fails under CI.
fn postgres(test: &str) -> bool {
    Backend::postgres_or_skip(test).is_some()
}

/// Two servers on one fresh database, and a host whose agent is connected
/// to the second, with a repository set through the first.
struct Pair {
    a: TestServer,
    b: TestServer,
    host: String,
    token: String,
    agent: RawAgent,
}

async fn pair() -> Pair {
    let a = TestServer::start_on(Backend::Postgres).await.unwrap();
    let b = a.start_beside(|_| {}).await.unwrap();
    let (host, token) = a.enrolled_host("web-1").await.unwrap();
    let mut agent = RawAgent::connect_and_hello(&b.ws_url(), &token)
        .await
        .unwrap();
    let admin = a.admin().await.unwrap();
    admin
        .set_repository(&host, "/srv/backup/web-1", "pw")
        .await
        .unwrap();
    // Set on A, pushed by B; then the init job A queued, dispatched by B.
    let pushed = agent.recv().await.unwrap();
    let Message::ConfigUpdate(update) = pushed.message else {
        panic!("expected config.update, got {pushed:?}");
    };
    assert_eq!(
        update.repository.map(|r| r.url).as_deref(),
        Some("/srv/backup/web-1")
    );
    let init = agent.next_run().await.unwrap();
    agent
        .run_to_end(&init.job_id, JobOutcome::Succeeded, &[])
        .await
        .unwrap();
    admin
        .wait_job_status(&init.job_id, "succeeded", LIMIT)
        .await
        .unwrap();
    Pair {
        a,
        b,
        host,
        token,
        agent,
    }
}

/// A backup started through `admin`'s server, accepted and started by
/// `agent` (connected to the other), once the API shows it running.
async fn running_backup(admin: &rm_testkit::Api, host: &str, agent: &mut RawAgent) -> String {
    let id = admin
        .start_job(host, "backup", json!({"paths": ["/etc"]}))
        .await
        .unwrap();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, id);
    agent
        .send(Frame::new(CommandResult {
            job_id: id.clone(),
            accepted: true,
            reason: None,
            message: None,
        }))
        .await
        .unwrap();
    agent
        .send(Frame::new(JobStarted {
            job_id: id.clone(),
            started_at: chrono::Utc::now(),
        }))
        .await
        .unwrap();
    admin.wait_job_status(&id, "running", LIMIT).await.unwrap();
    id
}

#[tokio::test]
async fn a_job_started_on_one_server_runs_on_an_agent_connected_to_the_other() {
    if !postgres("a_job_started_on_one_server_runs_on_an_agent_connected_to_the_other") {
        return;
    }
    let Pair {
        a,
        b,
        host,
        mut agent,
        ..
    } = pair().await;
    let admin = a.admin().await.unwrap();
    let id = admin
        .start_job(&host, "backup", json!({"paths": ["/etc"]}))
        .await
        .unwrap();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, id);
    agent
        .run_to_end(&id, JobOutcome::Succeeded, &["one", "two"])
        .await
        .unwrap();
    let job = admin
        .wait_job_status(&id, "succeeded", LIMIT)
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded");
    let texts: Vec<String> = a
        .admin()
        .await
        .unwrap()
        .job_logs(&id)
        .await
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["one", "two"]);
    drop(b);
}

#[tokio::test]
async fn a_cancel_on_one_server_reaches_the_agent_on_the_other() {
    if !postgres("a_cancel_on_one_server_reaches_the_agent_on_the_other") {
        return;
    }
    let Pair {
        a,
        b: _b,
        host,
        mut agent,
        ..
    } = pair().await;
    let admin = a.admin().await.unwrap();
    let id = running_backup(&admin, &host, &mut agent).await;
    let (status, body) = admin
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await
        .unwrap();
    assert!(status.is_success(), "{status}: {body}");
    let frame = agent.recv().await.unwrap();
    let Message::CommandCancel(cancel) = frame.message else {
        panic!("expected command.cancel, got {frame:?}");
    };
    assert_eq!(cancel.job_id, id);
}

#[tokio::test]
async fn a_folder_is_listed_through_the_server_holding_the_agent() {
    if !postgres("a_folder_is_listed_through_the_server_holding_the_agent") {
        return;
    }
    let Pair {
        a,
        b: _b,
        host,
        mut agent,
        ..
    } = pair().await;
    let admin = a.admin().await.unwrap();
    let listing = tokio::spawn({
        let admin = admin.clone();
        let host = host.clone();
        async move {
            admin
                .get(&format!(
                    "/api/v1/hosts/{host}/snapshots/1a2b3c4d/tree?path=/etc"
                ))
                .await
                .unwrap()
        }
    });
    let frame = agent.recv().await.unwrap();
    let Message::TreeList(request) = &frame.message else {
        panic!("expected tree.list, got {frame:?}");
    };
    assert_eq!(request.path, "/etc");
    // Many entries: the answer is far longer than one signal may be.
    let entries: Vec<TreeEntry> = (0..500)
        .map(|i| TreeEntry {
            name: format!("file-{i:04}.conf"),
            path: format!("/etc/file-{i:04}.conf"),
            entry_type: EntryType::File,
            size: Some(i),
            mtime: None,
            mode: None,
        })
        .collect();
    agent
        .send(Frame::with_id(
            frame.id.clone().unwrap(),
            TreeListResult {
                entries,
                error: None,
            },
        ))
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(LIMIT, listing).await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 500);
    assert_eq!(names[499], "file-0499.conf");
}

#[tokio::test]
async fn sse_on_one_server_shows_a_job_of_an_agent_on_the_other() {
    if !postgres("sse_on_one_server_shows_a_job_of_an_agent_on_the_other") {
        return;
    }
    let Pair {
        a,
        b: _b,
        host,
        mut agent,
        ..
    } = pair().await;
    let admin = a.admin().await.unwrap();
    let id = running_backup(&admin, &host, &mut agent).await;
    let token = admin.token().unwrap().to_owned();
    let response = rm_testkit::http::client()
        .get(format!("{}/api/v1/jobs/{id}/events", a.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reader = tokio::spawn(rm_testkit::http::read_sse(response));
    // The stream is open once its first event (the status) is sent; lines
    // sent after that reach it live, through the other server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent
        .send(Frame::new(log_batch(&id, 1, &["first", "second"])))
        .await
        .unwrap();
    agent
        .send(Frame::new(log_batch(&id, 3, &["third"])))
        .await
        .unwrap();
    agent
        .send(Frame::new(JobFinished {
            job_id: id.clone(),
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: json!({}),
            error: None,
            finished_at: chrono::Utc::now(),
        }))
        .await
        .unwrap();
    let events = tokio::time::timeout(LIMIT, reader).await.unwrap().unwrap();
    let logs: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "log")
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["first", "second", "third"]);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "finished");
    assert_eq!(last["status"], "succeeded");
}

#[tokio::test]
async fn the_dashboard_stream_of_one_server_hears_changes_made_through_the_other() {
    if !postgres("the_dashboard_stream_of_one_server_hears_changes_made_through_the_other") {
        return;
    }
    let Pair {
        a,
        b,
        host,
        mut agent,
        ..
    } = pair().await;
    let token = a.admin().await.unwrap().token().unwrap().to_owned();
    let mut response = rm_testkit::http::client()
        .get(format!("{}/api/v1/events", a.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Whatever the stream says first, drain it, then change the fleet
    // through B only: a job started there, run by B's agent.
    let _ = tokio::time::timeout(Duration::from_millis(500), response.chunk()).await;
    let admin_b = b.admin().await.unwrap();
    let id = admin_b.start_job(&host, "check", json!({})).await.unwrap();
    agent.next_run().await.unwrap();
    agent
        .run_to_end(&id, JobOutcome::Succeeded, &[])
        .await
        .unwrap();
    let chunk = tokio::time::timeout(LIMIT, response.chunk())
        .await
        .expect("A's fleet stream hears a change made on B")
        .unwrap()
        .unwrap();
    assert!(!chunk.is_empty());
}

#[tokio::test]
async fn a_rotated_token_reaches_the_agent_through_the_other_server_and_works() {
    if !postgres("a_rotated_token_reaches_the_agent_through_the_other_server_and_works") {
        return;
    }
    let Pair {
        a,
        b,
        host,
        token,
        mut agent,
    } = pair().await;
    let admin = a.admin().await.unwrap();
    let (status, body) = admin
        .post(&format!("/api/v1/hosts/{host}/token/rotate"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let frame = agent.recv().await.unwrap();
    let Message::TokenRotate(rotate) = frame.message else {
        panic!("expected token.rotate, got {frame:?}");
    };
    assert_ne!(rotate.token, token);
    drop(agent);
    // The new token connects (to either server) and completes the
    // rotation; the old one stops working.
    let _fresh = RawAgent::connect_and_hello(&a.ws_url(), &rotate.token)
        .await
        .unwrap();
    let refused = RawAgent::connect(&b.ws_url(), Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert!(refused.is_err(), "the old token still works");
}

#[tokio::test]
async fn a_host_deleted_on_one_server_is_disconnected_from_the_other() {
    if !postgres("a_host_deleted_on_one_server_is_disconnected_from_the_other") {
        return;
    }
    let Pair {
        a,
        b: _b,
        host,
        mut agent,
        ..
    } = pair().await;
    let admin = a.admin().await.unwrap();
    let (status, body) = admin
        .delete(&format!("/api/v1/hosts/{host}"))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let (_, close) = agent.closed(LIMIT).await.unwrap();
    assert_eq!(
        close.map(|c| u16::from(c.code)),
        Some(rm_protocol::close_code::REVOKED)
    );
}

#[tokio::test]
async fn a_job_for_an_agent_connected_nowhere_is_refused_on_both() {
    if !postgres("a_job_for_an_agent_connected_nowhere_is_refused_on_both") {
        return;
    }
    let Pair {
        a, b, host, agent, ..
    } = pair().await;
    agent.close().await.unwrap();
    wait_until(LIMIT, "the host to go offline", || async {
        !b.host_online(&host).await
    })
    .await
    .unwrap();
    for server in [&a, &b] {
        let (status, body) = server
            .admin()
            .await
            .unwrap()
            .post(
                &format!("/api/v1/hosts/{host}/jobs"),
                json!({"kind": "check", "params": {}}),
            )
            .await
            .unwrap();
        assert_eq!(status, 409, "{body}");
    }
}

#[tokio::test]
async fn an_upgrade_requested_on_one_server_is_sent_by_the_other() {
    if !postgres("an_upgrade_requested_on_one_server_is_sent_by_the_other") {
        return;
    }
    let a = TestServer::start_on(Backend::Postgres).await.unwrap();
    let b = a.start_beside(|_| {}).await.unwrap();
    let (host, token) = a.enrolled_host("old-1").await.unwrap();
    let mut agent = RawAgent::connect_as(&b.ws_url(), &token).await.unwrap();
    let mut hello = rm_testkit::hello(rm_protocol::CURRENT_PROTOCOL_VERSION);
    hello.platform = Some(rm_protocol::upgrade::own_platform());
    agent.send(Frame::new(hello)).await.unwrap();
    for _ in 0..2 {
        let frame = agent.recv().await.unwrap();
        assert!(
            matches!(
                frame.message,
                Message::ConfigUpdate(_) | Message::ScheduleSet(_)
            ),
            "{frame:?}"
        );
    }
    let admin = a.admin().await.unwrap();
    let (status, answer) = admin
        .post("/api/v1/agents/upgrade", json!({ "host_id": host }))
        .await
        .unwrap();
    assert!(status.is_success(), "{status}: {answer}");
    assert_eq!(answer["sent"][0]["host_id"], host.as_str(), "{answer:#}");
    let frame = agent.recv().await.unwrap();
    let Message::AgentUpgrade(upgrade) = frame.message else {
        panic!("expected agent.upgrade, got {frame:?}");
    };
    assert_eq!(upgrade.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn policies_changed_on_two_servers_at_once_both_reach_every_host() {
    if !postgres("policies_changed_on_two_servers_at_once_both_reach_every_host") {
        return;
    }
    let a = TestServer::start_on(Backend::Postgres).await.unwrap();
    let b = a.start_beside(|_| {}).await.unwrap();
    let labels = rm_core::Labels::parse_pairs("labels", "env=prod").unwrap();
    for i in 0..40 {
        rm_testkit::store::enrol_host(
            a.store(),
            &format!("h{i}"),
            labels.clone(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let (admin_a, admin_b) = (a.admin().await.unwrap(), b.admin().await.unwrap());
    for round in 0..4 {
        let body = |name: String, priority: u32| {
            json!({
                "name": name,
                "selector": {"env": "prod"},
                "priority": priority,
                "schedules": [{"kind": "backup", "cron": "0 2 * * *", "params": {"paths": ["/etc"]}}],
            })
        };
        // Each server decides from what it read; whichever writes second
        // must decide again with the other's policy in view.
        let (on_a, on_b) = tokio::join!(
            admin_a.post("/api/v1/policies", body(format!("a{round}"), 2 * round + 1)),
            admin_b.post("/api/v1/policies", body(format!("b{round}"), 2 * round + 2)),
        );
        let (status, _) = on_a.unwrap();
        assert_eq!(status, 201);
        let (status, winner) = on_b.unwrap();
        assert_eq!(status, 201, "{winner}");
        let winner: rm_core::PolicyId = winner["id"].as_str().unwrap().parse().unwrap();
        let hosts = a.store().hosts_of_policy(winner).await.unwrap();
        assert_eq!(
            hosts.len(),
            40,
            "round {round}: the top policy holds every host"
        );
    }
}

#[tokio::test]
async fn hosts_of_one_repository_on_two_servers_take_turns() {
    if !postgres("hosts_of_one_repository_on_two_servers_take_turns") {
        return;
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let one_at_a_time = |config: &mut rm_server::ServerConfig| config.backups_per_repository = 1;
    let a = TestServer::start_on_with(Backend::Postgres, one_at_a_time)
        .await
        .unwrap();
    let b = a.start_beside(one_at_a_time).await.unwrap();
    let (admin_a, admin_b) = (a.admin().await.unwrap(), b.admin().await.unwrap());
    // Six hosts of one repository, three agents on each server; each
    // agent runs its jobs for a while and counts how many run at once
    // across all of them.
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut hosts = Vec::new();
    let mut agents = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let (host, token) = a.enrolled_host(&format!("shared-{i}")).await.unwrap();
        let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
            .await
            .unwrap();
        let (running, most) = (running.clone(), most.clone());
        agents.push(tokio::spawn(async move {
            let mut backups = 0;
            while backups < 1 {
                // Twelve jobs of one repository run one at a time: a
                // host's may wait for all the others'.
                let run = agent
                    .next_run_within(Duration::from_secs(60))
                    .await
                    .unwrap();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                agent
                    .run_to_end(&run.job_id, JobOutcome::Succeeded, &[])
                    .await
                    .unwrap();
                if run.kind == rm_protocol::JobKind::Backup {
                    backups += 1;
                }
            }
            agent
        }));
        hosts.push(host);
    }
    for host in &hosts {
        admin_a
            .set_repository(host, "/srv/backup/shared", "pw")
            .await
            .unwrap();
    }
    // Everyone's backup at once, half through each server.
    let started = futures_util::future::join_all(hosts.iter().enumerate().map(|(i, host)| {
        let admin = if i % 2 == 0 { &admin_a } else { &admin_b };
        admin.start_job(host, "backup", json!({"paths": ["/etc"]}))
    }))
    .await;
    for (id, host) in started.into_iter().zip(&hosts) {
        let id = id.unwrap();
        admin_a
            .wait_job_status(&id, "succeeded", Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    for agent in agents {
        tokio::time::timeout(LIMIT, agent).await.unwrap().unwrap();
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "jobs of one repository ran at once"
    );
}
