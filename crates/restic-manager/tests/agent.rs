//! The real agent binary against the real server: enrolment writes a private
//! state directory, `agent run` connects and reports what it runs on, keeps
//! heartbeating, survives a server restart, understands being deleted, and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_testkit::{wait_until, AgentProcess, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const LIMIT: Duration = Duration::from_secs(15);

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// The restic under test (`RM_TEST_RESTIC`).
fn restic() -> PathBuf {
    rm_testkit::restic::binary()
}

/// Enrols a fresh host through the CLI and returns its id and state dir.
async fn enrol(server: &TestServer, dir: &Path, name: &str) -> (String, PathBuf) {
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_enrollment_token(Some(name), None)
        .await
        .unwrap();
    let state_dir = dir.join(name);
    let out = AgentProcess::enroll(bin(), &server.url, &created.token, &state_dir, &[])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "enrol failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = admin
        .hosts()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.name == name)
        .unwrap();
    (host.id, state_dir)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn an_enrolled_agent_connects_reports_its_versions_heartbeats_and_stops_on_sigterm() {
    let server = TestServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (host_id, state_dir) = enrol(&server, tmp.path(), "web-01").await;

    // The state directory is private, and so is every file in it.
    assert_eq!(mode(&state_dir), 0o700);
    for entry in std::fs::read_dir(&state_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // The agent token is on disk, not on the command line or in the output.
    let state = std::fs::read_to_string(state_dir.join("agent.json")).unwrap();
    assert!(state.contains("rma."));

    let agent = AgentProcess::spawn(bin(), &state_dir, &restic(), &[]).unwrap();
    wait_until(LIMIT, "the agent's host to come online", || {
        server.host_online(&host_id)
    })
    .await
    .unwrap();

    let admin = server.admin().await.unwrap();
    let view = admin.host(&host_id).await.unwrap();
    let expected_restic = rm_restic::detect_version(&restic())
        .await
        .unwrap()
        .to_string();
    assert_eq!(
        view.restic_version.as_deref(),
        Some(expected_restic.as_str())
    );
    assert_eq!(view.restic_error, None);
    assert_eq!(
        view.agent_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        view.protocol_version,
        Some(rm_protocol::CURRENT_PROTOCOL_VERSION)
    );
    assert_eq!(view.os.as_deref(), Some(std::env::consts::OS));
    assert_eq!(view.arch.as_deref(), Some(std::env::consts::ARCH));
    let hostname = rm_testkit::hostname();
    assert_eq!(view.hostname, hostname);

    // Heartbeats (one a second in tests) keep moving last_seen_at.
    let first_seen = view.last_seen_at.unwrap();
    wait_until(LIMIT, "a heartbeat to move last_seen_at", || {
        let admin = admin.clone();
        let host_id = host_id.clone();
        async move { admin.host(&host_id).await.unwrap().last_seen_at.unwrap() > first_seen }
    })
    .await
    .unwrap();
    // The agent acknowledged the (empty) schedule set by persisting it.
    assert!(state_dir.join("schedules.json").exists());

    let log = agent.log();
    let status = agent.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "agent exit {status:?}; log:\n{log}");
    wait_until(LIMIT, "the host to go offline", || async {
        !server.host_online(&host_id).await
    })
    .await
    .unwrap();
    assert!(!log.contains(state.trim()), "agent logged its state");
}

#[tokio::test]
async fn an_agent_without_restic_says_so_in_its_log_and_its_hello() {
    let server = TestServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (host_id, state_dir) = enrol(&server, tmp.path(), "no-restic").await;
    let missing = tmp.path().join("no-such-restic");
    let agent = AgentProcess::spawn(bin(), &state_dir, &missing, &[]).unwrap();
    wait_until(LIMIT, "the host to come online", || {
        server.host_online(&host_id)
    })
    .await
    .unwrap();
    let view = server.admin().await.unwrap().host(&host_id).await.unwrap();
    assert_eq!(view.restic_version, None);
    let error = view.restic_error.expect("restic_error reported");
    assert!(error.contains("not found"), "{error}");
    agent
        .wait_for_log("restic is not usable", Duration::from_secs(1))
        .await
        .unwrap();
    agent.terminate(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn an_agent_reconnects_after_a_server_restart() {
    let server = TestServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (host_id, state_dir) = enrol(&server, tmp.path(), "patient").await;
    let agent = AgentProcess::spawn(bin(), &state_dir, &restic(), &[]).unwrap();
    wait_until(LIMIT, "first connection", || server.host_online(&host_id))
        .await
        .unwrap();

    let server = server.restart().await.unwrap();
    agent
        .wait_for_log("server is shutting down", LIMIT)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the agent to reconnect", || {
        server.host_online(&host_id)
    })
    .await
    .unwrap();
    assert!(agent
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());
}

#[tokio::test]
async fn a_deleted_hosts_agent_is_told_why_and_stops_retrying_fast() {
    let server = TestServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (host_id, state_dir) = enrol(&server, tmp.path(), "retired").await;
    let agent = AgentProcess::spawn(bin(), &state_dir, &restic(), &[]).unwrap();
    wait_until(LIMIT, "connection", || server.host_online(&host_id))
        .await
        .unwrap();

    let admin = server.admin().await.unwrap();
    let (status, _) = admin
        .delete(&format!("/api/v1/hosts/{host_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    agent
        .wait_for_log("rejected this agent's token", LIMIT)
        .await
        .unwrap();
    assert!(agent.log().contains("Re-enrol this host"));

    // No reconnect storm: nothing more is attempted in the next seconds.
    let attempts =
        |log: &str| log.matches("connected to").count() + log.matches("could not connect").count();
    let before = attempts(&agent.log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(attempts(&agent.log()), before, "log:\n{}", agent.log());

    // SIGTERM still ends it promptly while it waits.
    assert!(agent
        .terminate(Duration::from_secs(10))
        .await
        .unwrap()
        .success());
}

#[tokio::test]
async fn enrolling_twice_into_one_state_directory_needs_force() {
    let server = TestServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (_, state_dir) = enrol(&server, tmp.path(), "twice").await;
    let admin = server.admin().await.unwrap();
    let token = admin
        .create_enrollment_token(None, None)
        .await
        .unwrap()
        .token;

    let out = AgentProcess::enroll(bin(), &server.url, &token, &state_dir, &[])
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--force"), "{stderr}");

    let out = AgentProcess::enroll(bin(), &server.url, &token, &state_dir, &["--force"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("rma."),
        "agent token printed"
    );
}

#[tokio::test]
async fn a_spent_enrolment_token_is_refused_with_the_servers_reason() {
    let server = TestServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let admin = server.admin().await.unwrap();
    let token = admin
        .create_enrollment_token(None, None)
        .await
        .unwrap()
        .token;
    let first = AgentProcess::enroll(bin(), &server.url, &token, &tmp.path().join("a"), &[])
        .await
        .unwrap();
    assert!(first.status.success());
    let second = AgentProcess::enroll(bin(), &server.url, &token, &tmp.path().join("b"), &[])
        .await
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already used"), "{stderr}");
    assert!(!tmp.path().join("b").join("agent.json").exists());
}
