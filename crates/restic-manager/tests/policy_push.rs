//! A policy change pushed to a fleet of connected agents: more hosts than
//! one push batch, each gets the new schedule set exactly once per change
//! and its acknowledgement is recorded (written in groups), so the policy
//! shows every host in sync. Simulated agents (`rm_testkit::fleet`) on real
//! WebSockets against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rm_testkit::fleet::{self, FleetConfig, FleetStats};
use rm_testkit::{Api, TestServer};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// More than one push batch (256) and one ack statement (256).
const HOSTS: usize = 300;

const WAIT: Duration = Duration::from_secs(120);

fn policy(cron: &str) -> Value {
    json!({
        "name": "push",
        "selector": {"env": "push"},
        "schedules": [{"kind": "backup", "cron": cron, "params": {"paths": ["/srv"]}}],
    })
}

/// Waits until the policy covers `HOSTS` hosts, all in sync, and the
/// agents have sent `acks` acknowledgements; returns the policy view.
async fn in_sync(api: &Api, id: &str, stats: &FleetStats, acks: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, view) = api.get(&format!("/api/v1/policies/{id}")).await.unwrap();
        assert!(status.is_success(), "{status}: {view}");
        if view["hosts"] == HOSTS && view["hosts_in_sync"] == HOSTS && stats.schedule_acks() >= acks
        {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in sync: {view}, {} acks",
            stats.schedule_acks()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_reaches_every_connected_agent_once_and_is_acknowledged() {
    let server = TestServer::start().await.unwrap();
    let labels = BTreeMap::from([(String::from("env"), String::from("push"))]);
    let hosts = fleet::enroll_labelled_hosts(server.store(), "push", HOSTS, &labels)
        .await
        .unwrap();
    let config = Arc::new(FleetConfig {
        ws_url: server.ws_url(),
        backup_log_lines: 0,
        restart_spread: Duration::from_secs(1),
    });
    let stats = Arc::new(FleetStats::default());
    let shutdown = CancellationToken::new();
    for host in &hosts {
        tokio::spawn(fleet::run_agent(
            config.clone(),
            host.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
    }
    let api = server.admin().await.unwrap();
    let client = rm_testkit::http::client();
    let connected = fleet::wait_connected(&stats, &client, &server.url, HOSTS, WAIT).await;
    assert_eq!(connected as usize, HOSTS);
    // One ack per handshake so far.
    let handshakes = stats.schedule_acks();
    assert_eq!(handshakes, HOSTS as u64);

    let (status, created) = api
        .post("/api/v1/policies", policy("0 3 * * *"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    in_sync(&api, &id, &stats, handshakes + HOSTS as u64).await;

    let (status, changed) = api
        .send(
            Method::PUT,
            &format!("/api/v1/policies/{id}"),
            Some(policy("30 4 * * *")),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{changed}");
    in_sync(&api, &id, &stats, handshakes + 2 * HOSTS as u64).await;
    // Exactly one set per host per change (and no session lost, which
    // would bring a handshake's set): no host got a second push.
    assert_eq!(stats.sessions_lost(), 0);
    assert_eq!(stats.schedule_acks(), handshakes + 2 * HOSTS as u64);
    for host in [&hosts[0], &hosts[HOSTS / 2], &hosts[HOSTS - 1]] {
        let view = api.host(&host.host_id.to_string()).await.unwrap();
        assert_eq!(view.schedule_version, 2, "{view:?}");
        assert_eq!(view.schedule_applied_version, Some(2), "{view:?}");
        assert!(view.schedule_in_sync);
        let (_, schedules) = api
            .get(&format!("/api/v1/hosts/{}/schedules", host.host_id))
            .await
            .unwrap();
        assert_eq!(schedules[0]["cron"], "30 4 * * *", "{schedules}");
    }
    shutdown.cancel();
}
