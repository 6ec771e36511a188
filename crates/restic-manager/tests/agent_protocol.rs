//! The agent WebSocket endpoint, driven frame by frame: authentication
//! before the upgrade, the `hello` handshake, what happens to bad frames,
//! and the reconnect race.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rm_protocol::{
    close_code, ErrorCode, Frame, Heartbeat, Message, CURRENT_PROTOCOL_VERSION, MAX_FRAME_BYTES,
};
use rm_testkit::{hello, wait_until, RawAgent, TestServer};

const LIMIT: Duration = Duration::from_secs(5);

/// Every refused upgrade must look exactly like this.
async fn assert_uniform_401(server: &TestServer, authorization: Option<&str>) {
    match RawAgent::connect(&server.ws_url(), authorization)
        .await
        .unwrap()
    {
        Ok(_) => panic!("upgrade with {authorization:?} was accepted"),
        Err((status, body)) => {
            assert_eq!(status, 401, "status for {authorization:?}");
            assert_eq!(body, "unauthorized", "body for {authorization:?}");
        }
    }
}

#[tokio::test]
async fn every_bad_credential_gets_the_same_bare_401() {
    let server = TestServer::start().await.unwrap();
    let (host_id, agent_token) = server.enrolled_host("web-01").await.unwrap();
    let (_, other_token) = server.enrolled_host("web-02").await.unwrap();

    assert_uniform_401(&server, None).await;
    assert_uniform_401(&server, Some("Basic dXNlcjpwYXNz")).await;
    assert_uniform_401(&server, Some("Bearer")).await;
    assert_uniform_401(&server, Some("Bearer not-a-token")).await;
    // Well-formed but unknown: a fresh token that was never stored.
    let unknown = rm_core::token::IssuedToken::generate(rm_core::token::TokenKind::Agent).unwrap();
    assert_uniform_401(&server, Some(&format!("Bearer {}", unknown.token))).await;
    // A real token with its secret changed.
    let forged = format!("{}x", &agent_token[..agent_token.len() - 1]);
    assert_uniform_401(&server, Some(&format!("Bearer {forged}"))).await;
    // An operator's session token is not an agent token.
    let admin_session = server.admin().await.unwrap();
    let (_, session_body) = admin_session
        .post(
            "/api/v1/auth/login",
            serde_json::json!({"username": "admin", "password": rm_testkit::ADMIN_PASSWORD}),
        )
        .await
        .unwrap();
    let session_token = session_body["token"].as_str().unwrap().to_owned();
    assert_uniform_401(&server, Some(&format!("Bearer {session_token}"))).await;

    // Revoked: delete the host, and its once-valid token is refused the same way.
    let admin = server.admin().await.unwrap();
    let (status, _) = admin
        .delete(&format!("/api/v1/hosts/{host_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_uniform_401(&server, Some(&format!("Bearer {agent_token}"))).await;

    // The other host's token still works.
    RawAgent::connect_and_hello(&server.ws_url(), &other_token)
        .await
        .unwrap();
}

#[tokio::test]
async fn hello_is_answered_with_config_then_schedules_and_the_host_goes_online() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("db-01").await.unwrap();
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent
        .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION)))
        .await
        .unwrap();

    let Message::ConfigUpdate(config) = agent.recv().await.unwrap().message else {
        panic!("first push must be config.update");
    };
    assert_eq!(config.settings.heartbeat_seconds, 1);
    assert!(config.repository.is_none());
    let Message::ScheduleSet(schedules) = agent.recv().await.unwrap().message else {
        panic!("second push must be schedule.set");
    };
    assert_eq!(schedules.version, 0);
    assert!(schedules.schedules.is_empty());

    let view = server.admin().await.unwrap().host(&host_id).await.unwrap();
    assert!(view.online);
    let (_, metrics) = server.anonymous().get("/metrics").await.unwrap();
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("rm_agents_connected 1\n"), "{metrics}");
    assert!(
        metrics.contains("rm_hosts{state=\"online\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("rm_hosts_not_backed_up 1\n"), "{metrics}");
    assert!(metrics.contains("rm_hosts_unconfigured 1\n"), "{metrics}");
    assert!(metrics.contains("rm_agent_hellos_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("rm_agent_frame_handling_seconds_count{kind=\"hello\"} 1\n"),
        "{metrics}"
    );
    // Every frame's handling is timed, by kind.
    agent.send(Frame::new(Heartbeat {})).await.unwrap();
    wait_until(LIMIT, "the heartbeat to be timed", || async {
        let (_, metrics) = server.anonymous().get("/metrics").await.unwrap();
        metrics
            .as_str()
            .unwrap()
            .contains("rm_agent_frame_handling_seconds_bucket{kind=\"heartbeat\",le=\"+Inf\"} 1\n")
    })
    .await
    .unwrap();
    assert_eq!(view.agent_version.as_deref(), Some("0.0.0-test"));
    assert_eq!(view.restic_version.as_deref(), Some("0.14.0"));
    assert_eq!(view.protocol_version, Some(CURRENT_PROTOCOL_VERSION));
    assert_eq!(view.os.as_deref(), Some("linux"));
    assert_eq!(view.arch.as_deref(), Some("x86_64"));
    assert_eq!(view.hostname, "raw-agent.test");

    agent.close().await.unwrap();
    wait_until(LIMIT, "host offline after close", || async {
        !server.host_online(&host_id).await
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_first_frame_other_than_hello_is_refused_and_closed() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("h").await.unwrap();
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send(Frame::new(Heartbeat {})).await.unwrap();
    let (frames, close) = agent.closed(LIMIT).await.unwrap();
    let Message::Error(error) = &frames[0].message else {
        panic!("expected an error frame, got {frames:?}");
    };
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.message.contains("hello"), "{}", error.message);
    assert!(error.message.contains("heartbeat"), "{}", error.message);
    assert_eq!(close.map(|c| u16::from(c.code)), Some(close_code::POLICY));
    assert!(!server.host_online(&host_id).await);

    // Bad JSON as the first frame is refused the same way.
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send_text("{not json").await.unwrap();
    let (frames, _) = agent.closed(LIMIT).await.unwrap();
    assert!(matches!(&frames[0].message, Message::Error(e) if e.code == ErrorCode::BadRequest));
}

#[tokio::test]
async fn a_too_old_protocol_is_refused_naming_both_versions_and_an_upgrade_url() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("old").await.unwrap();
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent.send(Frame::new(hello(0))).await.unwrap();
    let (frames, close) = agent.closed(LIMIT).await.unwrap();
    let Message::Error(error) = &frames[0].message else {
        panic!("expected an error frame, got {frames:?}");
    };
    assert_eq!(error.code, ErrorCode::ProtocolTooOld);
    assert!(error.message.contains("version 0"), "{}", error.message);
    assert!(
        error
            .message
            .contains(&CURRENT_PROTOCOL_VERSION.to_string()),
        "{}",
        error.message
    );
    let url = error.url.clone().expect("upgrade url");
    assert_eq!(url, format!("{}/docs/upgrading", server.url));
    assert!(close.is_some());
    assert!(!server.host_online(&host_id).await);

    // The upgrade URL really serves instructions.
    let page = rm_testkit::http::client().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Upgrading agents"));
}

#[tokio::test]
async fn a_newer_protocol_is_accepted() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("new").await.unwrap();
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    agent
        .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION + 5)))
        .await
        .unwrap();
    assert!(matches!(
        agent.recv().await.unwrap().message,
        Message::ConfigUpdate(_)
    ));
    assert!(server.host_online(&host_id).await);
    let view = server.admin().await.unwrap().host(&host_id).await.unwrap();
    assert_eq!(view.protocol_version, Some(CURRENT_PROTOCOL_VERSION + 5));
}

#[tokio::test]
async fn no_hello_in_time_closes_the_connection() {
    let server = TestServer::start_with(|c| c.hello_timeout = Duration::from_millis(300))
        .await
        .unwrap();
    let (_, token) = server.enrolled_host("slow").await.unwrap();
    let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
        .await
        .unwrap();
    let (frames, close) = agent.closed(LIMIT).await.unwrap();
    assert!(frames.is_empty());
    assert_eq!(close.map(|c| u16::from(c.code)), Some(close_code::POLICY));
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_goes_on() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("h").await.unwrap();
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();

    // A known type with a malformed payload: the reply names the kind and field.
    agent
        .send_text(r#"{"type":"schedule.ack","id":"req-1","payload":{"version":"seven"}}"#)
        .await
        .unwrap();
    let reply = agent.recv().await.unwrap();
    assert_eq!(reply.id.as_deref(), Some("req-1"));
    let Message::Error(error) = reply.message else {
        panic!("expected error, got {reply:?}");
    };
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.message.contains("schedule.ack"), "{}", error.message);

    // Not JSON at all.
    agent.send_text("this is not json").await.unwrap();
    let Message::Error(error) = agent.recv().await.unwrap().message else {
        panic!("expected error");
    };
    assert_eq!(error.code, ErrorCode::BadRequest);

    // JSON but not an envelope.
    agent.send_text(r#"[1,2,3]"#).await.unwrap();
    assert!(matches!(
        agent.recv().await.unwrap().message,
        Message::Error(_)
    ));

    // A server-to-agent kind sent by an agent.
    agent
        .send_text(r#"{"type":"command.cancel","payload":{"job_id":"x"}}"#)
        .await
        .unwrap();
    let Message::Error(error) = agent.recv().await.unwrap().message else {
        panic!("expected error");
    };
    assert!(
        error.message.contains("sent by the server"),
        "{}",
        error.message
    );

    // An unknown type is ignored: no reply at all.
    agent
        .send_text(r#"{"type":"telemetry.future","payload":{"x":1}}"#)
        .await
        .unwrap();
    assert!(agent.silent_for(Duration::from_millis(300)).await);

    // And a valid heartbeat on the same connection still counts.
    let before = server
        .store()
        .host(host_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .last_seen_at;
    tokio::time::sleep(Duration::from_millis(20)).await;
    agent.send(Frame::new(Heartbeat {})).await.unwrap();
    wait_until(LIMIT, "heartbeat to move last_seen_at", || async {
        let now = server
            .store()
            .host(host_id.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .last_seen_at;
        now > before
    })
    .await
    .unwrap();
    assert!(server.host_online(&host_id).await);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let server = TestServer::start().await.unwrap();
    let (big_host, big_token) = server.enrolled_host("big").await.unwrap();
    let (calm_host, calm_token) = server.enrolled_host("calm").await.unwrap();
    let mut big = RawAgent::connect_and_hello(&server.ws_url(), &big_token)
        .await
        .unwrap();
    let mut calm = RawAgent::connect_and_hello(&server.ws_url(), &calm_token)
        .await
        .unwrap();

    let oversized = format!(
        r#"{{"type":"heartbeat","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(MAX_FRAME_BYTES + 1)
    );
    // The server may reset the socket while the frame is still being sent.
    let _ = big.send_text(&oversized).await;
    let _ = big.closed(Duration::from_secs(10)).await;
    wait_until(LIMIT, "the oversized sender to go offline", || async {
        !server.host_online(&big_host).await
    })
    .await
    .unwrap();

    // The server and the other agent carry on.
    assert_eq!(
        rm_testkit::http::client()
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    calm.send_text("not json").await.unwrap();
    assert!(matches!(
        calm.recv().await.unwrap().message,
        Message::Error(_)
    ));
    assert!(server.host_online(&calm_host).await);
}

#[tokio::test]
async fn a_late_close_of_the_old_socket_leaves_the_reconnected_host_online() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("flappy").await.unwrap();
    let mut old = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let new = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();

    // The server tells the replaced socket why it is being closed…
    let (_, close) = old.closed(LIMIT).await.unwrap();
    assert_eq!(close.map(|c| u16::from(c.code)), Some(close_code::REPLACED));
    // …and the old socket's exit must not take the host offline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.host_online(&host_id).await,
        "reconnected host went offline"
    );
    assert!(server.state.hub().is_connected(host_id.parse().unwrap()));

    new.close().await.unwrap();
    wait_until(
        LIMIT,
        "host offline after the new socket closes",
        || async { !server.host_online(&host_id).await },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_silent_agent_is_closed_after_three_missed_heartbeats() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("mute").await.unwrap();
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    // Heartbeat is 1 s in tests, so the idle limit is 3 × 1 + 5 = 8 s.
    let (_, close) = agent.closed(Duration::from_secs(15)).await.unwrap();
    assert_eq!(close.map(|c| u16::from(c.code)), Some(close_code::IDLE));
    wait_until(LIMIT, "idle host offline", || async {
        !server.host_online(&host_id).await
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn deleting_a_host_closes_its_connection_with_revoked() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("doomed").await.unwrap();
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let (status, _) = admin
        .delete(&format!("/api/v1/hosts/{host_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (_, close) = agent.closed(LIMIT).await.unwrap();
    assert_eq!(close.map(|c| u16::from(c.code)), Some(close_code::REVOKED));
    let (status, _) = admin
        .get(&format!("/api/v1/hosts/{host_id}"))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_repository_set_while_the_agent_connects_still_reaches_it() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("racer").await.unwrap();
    // Many tries at landing the change between the handshake reading the
    // settings and registering the connection.
    for attempt in 0..12 {
        let password = format!("repository-password-{attempt}");
        let connect = async {
            let mut agent = RawAgent::connect_as(&server.ws_url(), &token)
                .await
                .unwrap();
            agent
                .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION)))
                .await
                .unwrap();
            agent
        };
        let set = admin.set_repository(&host_id, "/srv/restic", &password);
        let (mut agent, set) = tokio::join!(connect, set);
        set.unwrap();
        // Whatever the interleaving, the new settings reach the agent (not
        // only on its next reconnect).
        loop {
            let frame = agent
                .recv()
                .await
                .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
            if let Message::ConfigUpdate(config) = frame.message {
                if config.repository.map(|r| r.password) == Some(password.clone()) {
                    break;
                }
            }
        }
        agent.close().await.unwrap();
    }
}
