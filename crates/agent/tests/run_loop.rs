//! The agent's run loop against a stand-in WebSocket server on a real
//! socket: the authenticated hello, heartbeats at the server's interval,
//! replies to server messages, clean shutdown, the slow retry after the
//! server rejects the token, and prompt cancellation while waiting.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rm_agent::{run, AgentError, RunOptions};
use rm_protocol::{
    close_code, AgentSettings, AgentUpgrade, CommandRun, ConfigUpdate, Frame, JobKind, Message,
    RejectReason, RepositoryConfig, ScheduleSet, TreeList, UpgradeState, CURRENT_PROTOCOL_VERSION,
};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use support::{accept, listener, next_frame, next_non_heartbeat, within, ServerWs, TOKEN};

const JOB: &str = "01J0000000000000000000000J";
const RPC: &str = "01J0000000000000000000000R";

fn start(opts: RunOptions) -> (CancellationToken, JoinHandle<Result<(), AgentError>>) {
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(opts, shutdown.clone()));
    (shutdown, handle)
}

async fn stopped(handle: JoinHandle<Result<(), AgentError>>, secs: f64) {
    match within(secs, "the agent to stop", handle).await {
        Ok(Ok(())) => {}
        other => panic!("agent did not stop cleanly: {other:?}"),
    }
}

async fn send(ws: &mut ServerWs, frame: Frame) {
    ws.send(WsMessage::text(frame.encode()))
        .await
        .unwrap_or_else(|e| panic!("sending to the agent: {e}"));
}

/// Closes like a real server: send the close frame, read the agent's
/// reply, then drop the TCP connection (the server closes TCP first).
async fn close(mut ws: ServerWs, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.close(Some(frame)).await;
    within(3.0, "the close reply", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_full_session() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let (shutdown, handle) = start(RunOptions::new(state.path(), rm_testkit::restic::binary()));

    let (upgrade, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert_eq!(upgrade.path, "/ws/agent");
    assert_eq!(
        upgrade.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let hello = match next_frame(&mut ws).await.message {
        Message::Hello(hello) => hello,
        other => panic!("first frame must be hello, got {other:?}"),
    };
    assert_eq!(hello.protocol_version, CURRENT_PROTOCOL_VERSION);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.os, std::env::consts::OS);
    assert_eq!(hello.arch, std::env::consts::ARCH);
    assert!(!hello.hostname.is_empty());
    assert_eq!(
        hello.restic_version.as_deref(),
        Some(rm_testkit::restic::version().to_string().as_str()),
        "{hello:?}"
    );
    assert_eq!(hello.restic_error, None);

    // The server's usual opening: credentials, then schedules.
    send(
        &mut ws,
        Frame::new(ConfigUpdate {
            repository: Some(RepositoryConfig {
                url: "/srv/restic-repo".into(),
                password: "correct horse".into(),
                env: Default::default(),
                copy_to: None,
            }),
            settings: AgentSettings {
                heartbeat_seconds: 1,
            },
        }),
    )
    .await;
    send(
        &mut ws,
        Frame::new(ScheduleSet {
            version: 7,
            schedules: Vec::new(),
        }),
    )
    .await;
    match next_non_heartbeat(&mut ws).await.message {
        Message::ScheduleAck(ack) => assert_eq!(ack.version, 7),
        other => panic!("expected schedule.ack, got {other:?}"),
    }

    // Heartbeats now come every second.
    let since = Instant::now();
    for _ in 0..2 {
        match next_frame(&mut ws).await.message {
            Message::Heartbeat(_) => {}
            other => panic!("expected heartbeat, got {other:?}"),
        }
    }
    assert!(
        since.elapsed() < Duration::from_secs(4),
        "{:?}",
        since.elapsed()
    );

    // Garbage and unknown kinds are ignored; the session carries on.
    ws.send(WsMessage::text("{not json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ws.send(WsMessage::text(
        r#"{"type":"schedule.set","payload":{"version":"x"}}"#,
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    ws.send(WsMessage::text(
        r#"{"type":"future.kind","payload":{"a":1}}"#,
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    send(
        &mut ws,
        Frame::new(CommandRun {
            job_id: JOB.into(),
            kind: JobKind::Backup,
            params: serde_json::json!({"paths": ["relative/path"]}),
            repository: None,
        }),
    )
    .await;
    match next_non_heartbeat(&mut ws).await.message {
        Message::CommandResult(result) => {
            assert_eq!(result.job_id, JOB);
            // The agent checks params again before restic sees them.
            assert!(!result.accepted);
            assert_eq!(result.reason, Some(RejectReason::BadParams));
            assert!(result
                .message
                .unwrap_or_default()
                .contains("params.paths[0]"));
        }
        other => panic!("expected command.result, got {other:?}"),
    }

    send(
        &mut ws,
        Frame::with_id(
            RPC,
            TreeList {
                snapshot_id: "abcd1234".into(),
                path: "/".into(),
            },
        ),
    )
    .await;
    let reply = next_non_heartbeat(&mut ws).await;
    assert_eq!(reply.id.as_deref(), Some(RPC));
    match reply.message {
        Message::TreeListResult(result) => {
            assert!(result.entries.is_empty());
            assert!(result.error.is_some());
        }
        other => panic!("expected tree.list.result, got {other:?}"),
    }

    // What the server sent is cached privately for offline use.
    let config = state.path().join("config.json");
    let schedules = state.path().join("schedules.json");
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&schedules), 0o600);
    let cached = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    assert!(cached.contains("correct horse"));

    // Shutdown closes with 1000 and returns.
    shutdown.cancel();
    let closed = within(3.0, "the agent's close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    let closed = closed.unwrap_or_else(|| panic!("close frame without a code"));
    assert_eq!(closed.code, CloseCode::Normal);
    assert_eq!(closed.reason.as_str(), "agent shutting down");
    // Answer the close and hang up, as the server does; the agent must
    // then finish well within its 2 s grace period.
    let _ = ws.next().await;
    drop(ws);
    stopped(handle, 1.0).await;
}

#[tokio::test]
async fn a_missing_restic_is_reported_in_hello() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let (shutdown, handle) = start(RunOptions::new(state.path(), "/nonexistent/bin/restic"));

    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    match next_frame(&mut ws).await.message {
        Message::Hello(hello) => {
            assert_eq!(hello.restic_version, None);
            let error = hello.restic_error.unwrap_or_default();
            assert!(error.contains("not found"), "{error}");
        }
        other => panic!("expected hello, got {other:?}"),
    }
    shutdown.cancel();
    stopped(handle, 3.0).await;
}

#[tokio::test]
async fn going_away_reconnects_within_the_restart_spread() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let mut opts = RunOptions::new(state.path(), rm_testkit::restic::binary());
    opts.restart_spread = Duration::from_secs(2);
    let (shutdown, handle) = start(opts);

    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert_eq!(next_frame(&mut ws).await.message.kind(), "hello");
    close(ws, close_code::GOING_AWAY, "server restarting").await;
    let closed_at = Instant::now();

    // A restarting server: the reconnect is spread over [1 s, spread].
    let (_, ws) = accept(&listener, None).await;
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "reconnected too fast: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "reconnected too slowly: {waited:?}"
    );
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert_eq!(next_frame(&mut ws).await.message.kind(), "hello");

    shutdown.cancel();
    stopped(handle, 3.0).await;
}

#[tokio::test]
async fn unauthorized_upgrade_retries_slowly() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let mut opts = RunOptions::new(state.path(), rm_testkit::restic::binary());
    opts.revoked_retry = Duration::from_millis(2500);
    let (shutdown, handle) = start(opts);

    let (first, ws) = accept(&listener, Some(StatusCode::UNAUTHORIZED)).await;
    assert!(ws.is_none());
    assert!(first.authorization.is_some());
    let rejected_at = Instant::now();

    let (_, ws) = accept(&listener, Some(StatusCode::UNAUTHORIZED)).await;
    assert!(ws.is_none());
    let waited = rejected_at.elapsed();
    // Normal backoff would be at most 1 s here.
    assert!(
        waited >= Duration::from_millis(2300),
        "retried too soon: {waited:?}"
    );

    // Cancelling during the long wait returns at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cancelled_at = Instant::now();
    shutdown.cancel();
    stopped(handle, 1.0).await;
    assert!(cancelled_at.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn revoked_close_retries_slowly() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let mut opts = RunOptions::new(state.path(), rm_testkit::restic::binary());
    opts.revoked_retry = Duration::from_millis(2500);
    let (shutdown, handle) = start(opts);

    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert_eq!(next_frame(&mut ws).await.message.kind(), "hello");
    close(ws, close_code::REVOKED, "host deleted").await;
    let closed_at = Instant::now();

    let (_, ws) = accept(&listener, None).await;
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(2300),
        "retried too soon: {waited:?}"
    );
    assert!(ws.is_some());

    shutdown.cancel();
    stopped(handle, 3.0).await;
}

#[tokio::test]
async fn cancellation_interrupts_backoff_and_connecting() {
    // Backoff: nothing listens on the port, so every attempt is refused.
    let (refusing, url) = listener().await;
    drop(refusing);
    let state = support::enrolled_state(&url);
    let (shutdown, handle) = start(RunOptions::new(state.path(), "/nonexistent/restic"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    stopped(handle, 0.5).await;

    // Connecting: the port accepts TCP but never answers the upgrade.
    let (silent, url) = listener().await;
    let state = support::enrolled_state(&url);
    let (shutdown, handle) = start(RunOptions::new(state.path(), "/nonexistent/restic"));
    let (_stalled, _) = within(5.0, "the agent to connect", silent.accept())
        .await
        .unwrap_or_else(|e| panic!("accept: {e}"));
    shutdown.cancel();
    stopped(handle, 0.5).await;
}

#[tokio::test]
async fn run_without_enrolment_says_so() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    match run(
        RunOptions::new(tmp.path(), rm_testkit::restic::binary()),
        CancellationToken::new(),
    )
    .await
    {
        Err(e @ AgentError::NotEnrolled { .. }) => {
            assert!(e.to_string().contains("restic-manager agent enroll"), "{e}")
        }
        other => panic!("expected NotEnrolled, got {other:?}"),
    }
}

#[tokio::test]
async fn run_refuses_an_unreadable_ca_certificate_before_connecting() {
    let state = support::enrolled_state("https://backup.example.com");
    let mut options = RunOptions::new(state.path(), rm_testkit::restic::binary());
    options.trust.ca_cert = Some(state.path().join("missing-ca.pem"));
    let result = run(options, CancellationToken::new()).await;
    match result {
        Err(e @ AgentError::TlsSetup(_)) => {
            assert!(e.to_string().contains("missing-ca.pem"), "{e}")
        }
        other => panic!("expected TlsSetup, got {other:?}"),
    }
}

/// A forged `config.update` whose `env` carries `PATH` (as an old server or
/// a stolen agent connection could send): the agent neither applies nor
/// caches it, a job then fails with the reason, and the `restic` placed on
/// that PATH never runs.
#[tokio::test]
async fn a_forged_config_update_with_path_is_refused() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let evil = work.path().join("evil-bin");
    std::fs::create_dir(&evil).unwrap_or_else(|e| panic!("{e}"));
    let marker = work.path().join("marker");
    let fake = evil.join("restic");
    std::fs::write(&fake, format!("#!/bin/sh\ntouch {}\n", marker.display()))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    // A bare name, as `--restic-bin` defaults to: found on the agent's own PATH.
    let (shutdown, handle) = start(RunOptions::new(state.path(), "restic"));
    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert!(matches!(
        next_frame(&mut ws).await.message,
        Message::Hello(_)
    ));

    let forged = RepositoryConfig {
        url: work.path().join("repo").display().to_string(),
        password: "forged-password".into(),
        env: [("PATH".to_owned(), evil.display().to_string())].into(),
        copy_to: None,
    };
    send(
        &mut ws,
        Frame::new(ConfigUpdate {
            repository: Some(forged.clone()),
            settings: AgentSettings::default(),
        }),
    )
    .await;
    // A job on the host's repository, and one carrying the forged settings
    // itself (as a restore from another host's repository does).
    for (job_id, repository) in [
        ("01J000000000000000000000WN", None),
        ("01J0000000000000000000CARR", Some(forged.clone())),
    ] {
        send(
            &mut ws,
            Frame::new(CommandRun {
                job_id: job_id.into(),
                kind: JobKind::Snapshots,
                params: serde_json::Value::Null,
                repository,
            }),
        )
        .await;
        match next_non_heartbeat(&mut ws).await.message {
            Message::CommandResult(result) => {
                assert_eq!(result.job_id, job_id);
                assert!(!result.accepted);
                assert_eq!(result.reason, Some(RejectReason::NoCredentials));
                let message = result.message.unwrap_or_default();
                assert!(
                    message.starts_with("repository settings refused: `env.PATH`"),
                    "{message}"
                );
            }
            other => panic!("expected command.result, got {other:?}"),
        }
    }
    // The restore wizard's listing is refused the same way.
    send(
        &mut ws,
        Frame::with_id(
            "01J000000000000000000000RP",
            TreeList {
                snapshot_id: "abcd1234".into(),
                path: "/".into(),
            },
        ),
    )
    .await;
    match next_non_heartbeat(&mut ws).await.message {
        Message::TreeListResult(result) => {
            let error = result.error.unwrap_or_default();
            assert!(error.starts_with("repository settings refused"), "{error}");
        }
        other => panic!("expected tree.list.result, got {other:?}"),
    }
    // Nothing cached: no config.json, so no forged password on disk either.
    assert!(!state.path().join("config.json").exists());
    assert!(!marker.exists(), "restic ran from the pushed PATH");

    // Usable settings are taken again, and the job runs the real restic
    // (found on the agent's own PATH), which fails on the missing
    // repository; the fake never runs.
    let usable = RepositoryConfig {
        env: [("RESTIC_COMPRESSION".to_owned(), "auto".to_owned())].into(),
        ..forged
    };
    send(
        &mut ws,
        Frame::new(ConfigUpdate {
            repository: Some(usable),
            settings: AgentSettings::default(),
        }),
    )
    .await;
    send(
        &mut ws,
        Frame::new(CommandRun {
            job_id: "01J00000000000000000000SAB".into(),
            kind: JobKind::Snapshots,
            params: serde_json::Value::Null,
            repository: None,
        }),
    )
    .await;
    match next_non_heartbeat(&mut ws).await.message {
        Message::CommandResult(result) => assert!(result.accepted, "{result:?}"),
        other => panic!("expected command.result, got {other:?}"),
    }
    let end = within(30.0, "the job's end", async {
        loop {
            if let Message::JobFinished(end) = next_non_heartbeat(&mut ws).await.message {
                return end;
            }
        }
    })
    .await;
    assert_eq!(end.job_id, "01J00000000000000000000SAB");
    assert!(!marker.exists(), "restic ran from the pushed PATH");
    assert!(state.path().join("config.json").exists());

    shutdown.cancel();
    drop(ws);
    stopped(handle, 5.0).await;
}

#[tokio::test]
async fn a_copy_needs_a_usable_copy_to_whoever_sends_it() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let (shutdown, handle) = start(RunOptions::new(state.path(), "restic"));
    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert!(matches!(
        next_frame(&mut ws).await.message,
        Message::Hello(_)
    ));
    let without = RepositoryConfig {
        url: "/srv/restic-repo".into(),
        password: "pw".into(),
        env: Default::default(),
        copy_to: None,
    };
    // A forged `copy_to` (flag-like URL, the primary itself) is refused
    // like any other setting that breaks the rules.
    let flaglike = RepositoryConfig {
        copy_to: Some(rm_protocol::CopyTarget {
            url: "--repo=/etc".into(),
            password: "pw2".into(),
            env: Default::default(),
        }),
        ..without.clone()
    };
    let same = RepositoryConfig {
        copy_to: Some(rm_protocol::CopyTarget {
            url: "/srv/restic-repo".into(),
            password: "pw2".into(),
            env: Default::default(),
        }),
        ..without.clone()
    };
    for (job_id, config, expected) in [
        (
            "01J00000000000000000000CP1",
            without,
            "this host's repository has no `copy_to`",
        ),
        (
            "01J00000000000000000000CP2",
            flaglike,
            "repository settings refused: `copy_to.url` must not start with `-`",
        ),
        (
            "01J00000000000000000000CP3",
            same,
            "repository settings refused: `copy_to.url` must name another repository",
        ),
    ] {
        send(
            &mut ws,
            Frame::new(ConfigUpdate {
                repository: Some(config),
                settings: AgentSettings::default(),
            }),
        )
        .await;
        send(
            &mut ws,
            Frame::new(CommandRun {
                job_id: job_id.into(),
                kind: JobKind::Copy,
                params: serde_json::json!({}),
                repository: None,
            }),
        )
        .await;
        match next_non_heartbeat(&mut ws).await.message {
            Message::CommandResult(result) => {
                assert_eq!(result.job_id, job_id);
                assert!(!result.accepted);
                assert_eq!(result.reason, Some(RejectReason::NoCredentials));
                let message = result.message.unwrap_or_default();
                assert!(message.starts_with(expected), "{message}");
            }
            other => panic!("expected command.result, got {other:?}"),
        }
    }
    shutdown.cancel();
    drop(ws);
    stopped(handle, 5.0).await;
}

/// The server is input, not authority: an `agent.upgrade` for a version
/// that is not newer, or from anywhere but the agent's own server and
/// platform, is refused before anything is downloaded, said so in an
/// `agent.upgrade.status`, and the session goes on.
#[tokio::test]
async fn upgrade_offers_off_the_own_server_or_not_newer_are_refused() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let (shutdown, handle) = start(RunOptions::new(state.path(), rm_testkit::restic::binary()));
    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    let hello = match next_frame(&mut ws).await.message {
        Message::Hello(hello) => hello,
        other => panic!("first frame must be hello, got {other:?}"),
    };
    let platform = rm_protocol::upgrade::own_platform();
    assert_eq!(hello.platform.as_deref(), Some(platform.as_str()));
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let offers = [
        (
            AgentUpgrade {
                version: "999.0.0".into(),
                url: format!("http://evil.example.com/download/agent/{platform}"),
                sha256: sha.into(),
            },
            "`url` is not on the server this agent is enrolled with",
        ),
        (
            AgentUpgrade {
                version: "999.0.0".into(),
                url: format!("{url}/download/agent/../../etc/passwd"),
                sha256: sha.into(),
            },
            "`url` must be",
        ),
        (
            AgentUpgrade {
                version: env!("CARGO_PKG_VERSION").into(),
                url: format!("{url}/download/agent/{platform}"),
                sha256: sha.into(),
            },
            "which is not older than the offered",
        ),
    ];
    for (offer, refusal) in offers {
        send(&mut ws, Frame::new(offer.clone())).await;
        match next_non_heartbeat(&mut ws).await.message {
            Message::AgentUpgradeStatus(status) => {
                assert_eq!(status.version, offer.version);
                assert_eq!(status.state, UpgradeState::Failed);
                let error = status.error.unwrap_or_default();
                assert!(error.contains(refusal), "{error}");
            }
            other => panic!("expected agent.upgrade.status, got {other:?}"),
        }
    }
    // Still the same session, still answering.
    send(
        &mut ws,
        Frame::new(ScheduleSet {
            version: 3,
            schedules: Vec::new(),
        }),
    )
    .await;
    match next_non_heartbeat(&mut ws).await.message {
        Message::ScheduleAck(ack) => assert_eq!(ack.version, 3),
        other => panic!("expected schedule.ack, got {other:?}"),
    }
    shutdown.cancel();
    drop(ws);
    stopped(handle, 5.0).await;
}

/// The host decides: with `--no-self-upgrade` even a valid offer from the
/// agent's own server is refused, saying why.
#[tokio::test]
async fn an_agent_run_without_self_upgrades_refuses_every_offer() {
    let (listener, url) = listener().await;
    let state = support::enrolled_state(&url);
    let mut opts = RunOptions::new(state.path(), rm_testkit::restic::binary());
    opts.self_upgrade = false;
    let (shutdown, handle) = start(opts);
    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert!(matches!(
        next_frame(&mut ws).await.message,
        Message::Hello(_)
    ));
    let platform = rm_protocol::upgrade::own_platform();
    send(
        &mut ws,
        Frame::new(AgentUpgrade {
            version: "999.0.0".into(),
            url: format!("{url}/download/agent/{platform}"),
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        }),
    )
    .await;
    match next_non_heartbeat(&mut ws).await.message {
        Message::AgentUpgradeStatus(status) => {
            assert_eq!(status.state, UpgradeState::Failed);
            let error = status.error.unwrap_or_default();
            assert!(error.contains("--no-self-upgrade"), "{error}");
        }
        other => panic!("expected agent.upgrade.status, got {other:?}"),
    }
    shutdown.cancel();
    drop(ws);
    stopped(handle, 5.0).await;
}
