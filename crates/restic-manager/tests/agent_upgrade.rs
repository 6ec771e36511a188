//! Agent upgrades end to end: a copy of the real binary, told to report an
//! old version (`RM_AGENT_REPORTED_VERSION`), runs as an agent of a real
//! server that serves the real binary; `POST /api/v1/agents/upgrade` makes
//! it download, verify, try and swap in the served binary and re-execute
//! itself. Also: a broken binary refused at pre-flight, a checksum
//! mismatch, an agent busy with a job waiting for it, an offline host
//! upgraded when it returns, and an agent from before upgrades left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_protocol::api::HostView;
use rm_protocol::{Frame, Message};
use rm_testkit::{
    wait_until, AgentProcess, Api, RawAgent, RunningAgent, TestServer, WebSession, ADMIN_PASSWORD,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const OLD: &str = "0.0.1";
/// Downloading and hashing a debug build, then the re-exec and reconnect.
const LIMIT: Duration = Duration::from_secs(120);

fn restic() -> PathBuf {
    rm_testkit::restic::binary()
}

/// A copy of the real binary in its own folder, with bytes appended so it
/// differs from the served one (an ELF runs the same with a tail).
fn agent_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let copy = bin.join("restic-manager");
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.extend_from_slice(b"\nthe old agent's copy\n");
    std::fs::write(&copy, bytes).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn old_env() -> [(&'static str, &'static str); 1] {
    [("RM_AGENT_REPORTED_VERSION", OLD)]
}

async fn server_serving(binary: &Path) -> TestServer {
    let binary = binary.to_owned();
    let server = TestServer::start_with(move |config| config.agent_binary = Some(binary))
        .await
        .unwrap();
    // Once the sums are served the binary's hash is known: no request of
    // the test waits on hashing it while a raw agent (which sends no
    // heartbeats) sits idle towards the server's idle timeout.
    let (status, sums) = server
        .anonymous()
        .page("/download/agent/SHA256SUMS")
        .await
        .unwrap();
    assert_eq!(status, 200, "{sums}");
    server
}

async fn upgrade(admin: &Api, selector: Value) -> Value {
    let (status, body) = admin
        .post("/api/v1/agents/upgrade", json!({ "selector": selector }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the host's last upgrade report is `state`; returns the host.
async fn upgrade_state(admin: &Api, host_id: &str, state: &str, agent: &AgentProcess) -> HostView {
    let reached = wait_until(LIMIT, &format!("the upgrade to be {state}"), || async {
        admin
            .host(host_id)
            .await
            .is_ok_and(|h| h.agent_upgrade.state.as_deref() == Some(state))
    })
    .await;
    if let Err(e) = reached {
        let view = admin.host(host_id).await.unwrap();
        panic!(
            "{e}; host: {:?}; agent log:\n{}",
            view.agent_upgrade,
            agent.log()
        );
    }
    admin.host(host_id).await.unwrap()
}

async fn online_as(server: &TestServer, admin: &Api, host_id: &str, version: &str) {
    wait_until(LIMIT, &format!("the host online as {version}"), || async {
        server.host_online(host_id).await
            && admin
                .host(host_id)
                .await
                .is_ok_and(|h| h.agent_version.as_deref() == Some(version))
    })
    .await
    .unwrap();
}

async fn old_agent(server: &TestServer, copy: &Path, name: &str) -> RunningAgent {
    let agent = server
        .enrolled_agent(copy, name, &restic(), &old_env())
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let view = admin.host(&agent.host_id).await.unwrap();
    assert_eq!(view.agent_version.as_deref(), Some(OLD));
    assert_eq!(
        view.platform.as_deref(),
        Some(rm_protocol::upgrade::own_platform().as_str())
    );
    assert!(view.agent_outdated);
    agent
}

#[tokio::test]
async fn an_old_agent_is_replaced_by_the_served_binary_and_reexecutes() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = agent_copy(tmp.path());
    let original = std::fs::read(&copy).unwrap();
    let server = server_serving(Path::new(BIN)).await;
    let admin = server.admin().await.unwrap();
    let agent = old_agent(&server, &copy, "web-01").await;
    let pid = agent.process.pid();
    // The dashboard counts it, the host page offers the button.
    let (_, dashboard) = admin.page("/").await.unwrap();
    assert!(
        dashboard.contains(r#"id="count-outdated">1<"#),
        "{dashboard}"
    );
    let host_page = format!("/hosts/{}", agent.host_id);
    let (_, html) = admin.page(&host_page).await.unwrap();
    assert!(html.contains(r#"id="upgrade-agent""#), "{html}");

    let answer = upgrade(&admin, json!({})).await;
    assert_eq!(answer["version"], VERSION, "{answer:#}");
    assert_eq!(
        answer["sent"][0]["host_id"],
        agent.host_id.as_str(),
        "{answer:#}"
    );
    assert_eq!(answer["sent"][0]["from"], OLD, "{answer:#}");

    let view = upgrade_state(&admin, &agent.host_id, "installed", &agent.process).await;
    online_as(&server, &admin, &agent.host_id, VERSION).await;
    assert_eq!(view.agent_upgrade.version.as_deref(), Some(VERSION));
    assert_eq!(view.agent_upgrade.error, None);
    assert_eq!(
        view.agent_upgrade.requested_version, None,
        "the request is done"
    );
    assert!(!admin.host(&agent.host_id).await.unwrap().agent_outdated);
    let (_, dashboard) = admin.page("/").await.unwrap();
    assert!(
        dashboard.contains(r#"id="count-outdated">0<"#),
        "{dashboard}"
    );
    let (_, html) = admin.page(&host_page).await.unwrap();
    assert!(!html.contains(r#"id="upgrade-agent""#), "{html}");
    assert!(html.contains("installed"), "{html}");
    // Byte for byte the served binary; the old one kept beside it; the
    // same process (re-executed, not restarted by anyone else); no marker.
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(BIN).unwrap());
    let previous = copy.with_file_name("restic-manager.previous");
    assert!(std::fs::read(&previous).unwrap() == original);
    assert_eq!(agent.process.pid(), pid);
    assert!(!agent.state_dir.join("upgrade-pending.json").exists());
    assert!(!copy.with_file_name(".restic-manager.upgrade").exists());

    // The operator's request is in the audit log.
    let (_, audit) = admin
        .get("/api/v1/audit?action=agent.upgrade")
        .await
        .unwrap();
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "agent.upgrade", "{audit:#}");
    assert_eq!(entry["details"]["sent"], 1, "{audit:#}");

    // Now current: asking again sends nothing.
    let again = upgrade(&admin, json!({})).await;
    assert_eq!(again["sent"], json!([]), "{again:#}");
    let reason = again["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("already current"), "{again:#}");
}

#[tokio::test]
async fn a_binary_that_fails_its_preflight_is_refused_and_the_old_one_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken");
    std::fs::write(&broken, "#!/bin/sh\necho broken >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = agent_copy(tmp.path());
    let original = std::fs::read(&copy).unwrap();
    let server = server_serving(&broken).await;
    let admin = server.admin().await.unwrap();
    let agent = old_agent(&server, &copy, "web-02").await;

    let answer = upgrade(&admin, json!({})).await;
    assert_eq!(
        answer["sent"][0]["host_id"],
        agent.host_id.as_str(),
        "{answer:#}"
    );
    let view = upgrade_state(&admin, &agent.host_id, "failed", &agent.process).await;
    let error = view.agent_upgrade.error.unwrap_or_default();
    assert!(error.contains("pre-flight"), "{error}");
    assert!(error.contains("broken"), "{error}");
    // Still the old binary, still connected, nothing left behind.
    assert!(std::fs::read(&copy).unwrap() == original);
    assert!(!copy.with_file_name("restic-manager.previous").exists());
    assert!(!copy.with_file_name(".restic-manager.upgrade").exists());
    assert!(server.host_online(&agent.host_id).await);
    let view = admin.host(&agent.host_id).await.unwrap();
    assert_eq!(view.agent_version.as_deref(), Some(OLD));
    assert_eq!(view.agent_upgrade.requested_version, None, "not retried");
    // The host page says so.
    let (_, html) = admin
        .page(&format!("/hosts/{}", agent.host_id))
        .await
        .unwrap();
    assert!(html.contains("pre-flight"), "{html}");
}

/// The marker's rollback: the served "binary" passes its pre-flight (it is
/// the real one behind a wrapper) but, run as the agent, pins a wrong TLS
/// fingerprint, so it cannot connect. Within the deadline (shortened by
/// `RM_AGENT_UPGRADE_DEADLINE_SECS`) it puts the previous binary back and
/// re-executes it; that one inherits the same environment, so the test
/// restarts it cleanly, and it reports the failure.
#[tokio::test]
async fn an_upgraded_agent_that_cannot_connect_puts_the_previous_binary_back() {
    let tmp = tempfile::tempdir().unwrap();
    let other = rm_testkit::TestCert::generate()
        .unwrap()
        .fingerprint
        .to_string();
    let wrapper = tmp.path().join("wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {BIN} --version;; esac\n\
             RM_SERVER_FINGERPRINT={other} exec {BIN} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = agent_copy(tmp.path());
    let original = std::fs::read(&copy).unwrap();
    let served = wrapper.clone();
    let server = TestServer::start_tls_with(move |config| config.agent_binary = Some(served))
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let fingerprint = server.tls_cert().unwrap().fingerprint.to_string();
    let env = [
        ("RM_AGENT_REPORTED_VERSION", OLD),
        ("RM_AGENT_UPGRADE_DEADLINE_SECS", "3"),
    ];
    let agent = server
        .enrolled_agent_with(
            &copy,
            "web-06",
            &restic(),
            &env,
            &["--server-fingerprint", &fingerprint],
        )
        .await
        .unwrap();
    let marker = agent.state_dir.join("upgrade-pending.json");
    let answer = upgrade(&admin, json!({})).await;
    assert_eq!(
        answer["sent"][0]["host_id"],
        agent.host_id.as_str(),
        "{answer:#}"
    );

    // Swapped in, could not connect, swapped back; the marker says why.
    let rolled_back = wait_until(LIMIT, "the previous binary to be back", || async {
        std::fs::read(&copy).is_ok_and(|b| b == original)
            && std::fs::read_to_string(&marker).is_ok_and(|m| m.contains("could not connect"))
    })
    .await;
    if let Err(e) = rolled_back {
        panic!("{e}; agent log:\n{}", agent.process.log());
    }
    assert!(!copy.with_file_name("restic-manager.previous").exists());
    let view = admin.host(&agent.host_id).await.unwrap();
    assert_ne!(view.agent_upgrade.state.as_deref(), Some("installed"));
    assert_ne!(view.agent_version.as_deref(), Some(VERSION));

    // Started again as its service would be: it reports the failure.
    agent
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    let process = AgentProcess::spawn(&copy, &agent.state_dir, &restic(), &[]).unwrap();
    let view = upgrade_state(&admin, &agent.host_id, "failed", &process).await;
    let error = view.agent_upgrade.error.unwrap_or_default();
    assert!(
        error.contains("could not connect to the server within 3s"),
        "{error}"
    );
    assert!(error.contains(&format!("rolled back to {OLD}")), "{error}");
    assert!(!marker.exists());
    process.terminate(Duration::from_secs(20)).await.unwrap();
}

#[tokio::test]
async fn a_download_that_does_not_match_its_checksum_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::copy(BIN, &served).unwrap();
    let copy = agent_copy(tmp.path());
    let original = std::fs::read(&copy).unwrap();
    let server = server_serving(&served).await;
    let admin = server.admin().await.unwrap();
    let agent = old_agent(&server, &copy, "web-03").await;

    // The server hashes the file once per size and modification time; the
    // file changes under it with both kept, so it announces the old hash
    // and serves other bytes.
    let (status, _) = admin.get("/download/agent/SHA256SUMS").await.unwrap();
    assert_eq!(status, 200);
    let modified = std::fs::metadata(&served).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&served).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&served, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&served)
        .unwrap()
        .set_modified(modified)
        .unwrap();

    upgrade(&admin, json!({})).await;
    let view = upgrade_state(&admin, &agent.host_id, "failed", &agent.process).await;
    let error = view.agent_upgrade.error.unwrap_or_default();
    assert!(error.contains("SHA-256"), "{error}");
    assert!(std::fs::read(&copy).unwrap() == original);
    assert!(!copy.with_file_name(".restic-manager.upgrade").exists());
    assert!(!copy.with_file_name("restic-manager.previous").exists());
}

#[tokio::test]
async fn an_agent_busy_with_a_job_waits_for_it_then_upgrades() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = agent_copy(tmp.path());
    let server = server_serving(Path::new(BIN)).await;
    let admin = server.admin().await.unwrap();
    let mut agent = old_agent(&server, &copy, "web-04").await;
    // A before-hook that holds the backup until the test lets it go.
    let release = tmp.path().join("release");
    rm_testkit::e2e::write_hook(
        &agent.state_dir,
        "hold",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
            release.display()
        ),
        0o700,
    );
    agent
        .process
        .restart(
            Duration::from_secs(20),
            &copy,
            &agent.state_dir,
            &restic(),
            &old_env(),
        )
        .await
        .unwrap();
    wait_until(LIMIT, "the agent to list its hook", || async {
        admin
            .host(&agent.host_id)
            .await
            .is_ok_and(|h| h.online && h.hooks == ["hold"])
    })
    .await
    .unwrap();
    let repo = tmp.path().join("repo").display().to_string();
    admin
        .set_repository(&agent.host_id, &repo, "upgrade-test-password")
        .await
        .unwrap();
    let init = admin.host_jobs(&agent.host_id, 1).await.unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = admin.finished_job(&init, LIMIT).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let source = tmp.path().join("source");
    rm_testkit::fixtures::make_tree(&source);
    let backup = admin
        .start_job(
            &agent.host_id,
            "backup",
            json!({"paths": [source.display().to_string()], "hooks": {"before": ["hold"]}}),
        )
        .await
        .unwrap();
    admin
        .wait_job_status(&backup, "running", LIMIT)
        .await
        .unwrap();

    upgrade(&admin, json!({})).await;
    // Ready, but the job runs: the agent says it waits, and does.
    let view = upgrade_state(&admin, &agent.host_id, "waiting_for_job", &agent.process).await;
    assert_eq!(view.agent_version.as_deref(), Some(OLD));
    assert_eq!(admin.job(&backup).await.unwrap()["status"], "running");
    assert!(std::fs::read(&copy).unwrap() != std::fs::read(BIN).unwrap());

    std::fs::write(&release, "go").unwrap();
    let job = admin.finished_job(&backup, LIMIT).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job:#}");
    upgrade_state(&admin, &agent.host_id, "installed", &agent.process).await;
    online_as(&server, &admin, &agent.host_id, VERSION).await;
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(BIN).unwrap());
}

#[tokio::test]
async fn an_offline_host_is_upgraded_when_it_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = agent_copy(tmp.path());
    let server = server_serving(Path::new(BIN)).await;
    let admin = server.admin().await.unwrap();
    let agent = old_agent(&server, &copy, "web-05").await;
    let RunningAgent {
        host_id,
        process,
        state_dir,
        ..
    } = agent;
    process.terminate(Duration::from_secs(20)).await.unwrap();
    wait_until(LIMIT, "the host to go offline", || async {
        !server.host_online(&host_id).await
    })
    .await
    .unwrap();

    // Through the dashboard's "Upgrade agents" form this time.
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let csrf = web.csrf().await.unwrap();
    let response = web
        .request(reqwest::Method::POST, "/bulk/upgrade")
        .header("x-csrf-token", &csrf)
        .form(&[("labels", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["sent"], json!([]), "{answer:#}");
    let reason = answer["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("offline"), "{answer:#}");
    let view = admin.host(&host_id).await.unwrap();
    assert_eq!(
        view.agent_upgrade.requested_version.as_deref(),
        Some(VERSION)
    );

    let process = AgentProcess::spawn(&copy, &state_dir, &restic(), &old_env()).unwrap();
    upgrade_state(&admin, &host_id, "installed", &process).await;
    online_as(&server, &admin, &host_id, VERSION).await;
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(BIN).unwrap());
    process.terminate(Duration::from_secs(20)).await.unwrap();
}

/// Compatibility: an agent from before upgrades says no `platform` in its
/// hello; it is never sent `agent.upgrade` (it would not understand it),
/// and the answer says why. One that reports its platform gets the
/// server's own URL and the served binary's hash.
#[tokio::test]
async fn agents_that_do_not_report_a_platform_are_not_sent_upgrades() {
    let server = server_serving(Path::new(BIN)).await;
    let admin = server.admin().await.unwrap();
    let (old_id, old_token) = server.enrolled_host("old").await.unwrap();
    let mut old = RawAgent::connect_and_hello(&server.ws_url(), &old_token)
        .await
        .unwrap();
    let answer = upgrade(&admin, json!({})).await;
    assert_eq!(answer["sent"], json!([]), "{answer:#}");
    assert_eq!(answer["skipped"][0]["host_id"], old_id.as_str());
    let reason = answer["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("platform unknown"), "{answer:#}");
    assert!(old.silent_for(Duration::from_secs(2)).await);
    // Its page says it cannot upgrade itself, and offers no button.
    let (_, html) = admin.page(&format!("/hosts/{old_id}")).await.unwrap();
    assert!(html.contains(r#"id="agent-too-old""#), "{html}");
    assert!(!html.contains(r#"id="upgrade-agent""#), "{html}");

    let (new_id, new_token) = server.enrolled_host("new").await.unwrap();
    let mut new = RawAgent::connect_as(&server.ws_url(), &new_token)
        .await
        .unwrap();
    let platform = rm_protocol::upgrade::own_platform();
    let mut hello = rm_testkit::hello(rm_protocol::CURRENT_PROTOCOL_VERSION);
    hello.platform = Some(platform.clone());
    new.send(Frame::new(hello)).await.unwrap();
    // The server's first pushes say the handshake is done (the host online).
    for _ in 0..2 {
        let frame = new.recv().await.unwrap();
        assert!(
            matches!(
                frame.message,
                Message::ConfigUpdate(_) | Message::ScheduleSet(_)
            ),
            "{frame:?}"
        );
    }
    let answer = upgrade(&admin, json!({"nothing": "matches"})).await;
    assert_eq!(answer["sent"], json!([]), "a selector limits the hosts");
    assert_eq!(answer["skipped"], json!([]), "{answer:#}");
    let answer = upgrade(&admin, json!({})).await;
    assert_eq!(answer["sent"][0]["host_id"], new_id.as_str(), "{answer:#}");
    let offer = loop {
        let frame = new.recv().await.unwrap();
        if let Message::AgentUpgrade(offer) = frame.message {
            break offer;
        }
    };
    assert_eq!(offer.version, VERSION);
    assert_eq!(
        offer.url,
        format!("{}/download/agent/{platform}", server.url)
    );
    let (_, sums) = admin.page("/download/agent/SHA256SUMS").await.unwrap();
    assert!(
        sums.contains(&format!("{}  {platform}", offer.sha256)),
        "{sums}"
    );

    // A selector that is not labels is refused, naming the field.
    let (status, body) = admin
        .post("/api/v1/agents/upgrade", json!({"selector": {"": "x"}}))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin
        .post("/api/v1/agents/upgrade", json!({}))
        .await
        .unwrap();
    assert_eq!(status, 400, "`selector` is required: {body}");
    assert!(body.to_string().contains("selector"), "{body}");
}
