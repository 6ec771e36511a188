//! Agent token rotation and revocation against the real server: with the
//! real agent binary (the new token lands in agent.json, the old one stops
//! working, the agent stays and comes back online) and with a hand-played
//! agent (no confirmation: both tokens work; connecting with the new one
//! completes the rotation; revocation closes with 4001 and keeps the host).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use rm_protocol::{close_code, Frame, Message, TokenRotated};
use rm_testkit::{wait_until, AgentProcess, Api, RawAgent, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const LIMIT: Duration = Duration::from_secs(15);

fn agent_token(state_dir: &Path) -> String {
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state_dir.join("agent.json")).unwrap())
            .unwrap();
    state["agent_token"].as_str().unwrap().to_owned()
}

async fn rotate(admin: &Api, host_id: &str) -> (StatusCode, Value) {
    admin
        .post(&format!("/api/v1/hosts/{host_id}/token/rotate"), json!({}))
        .await
        .unwrap()
}

async fn revoke(admin: &Api, host_id: &str) -> (StatusCode, Value) {
    admin
        .post(&format!("/api/v1/hosts/{host_id}/token/revoke"), json!({}))
        .await
        .unwrap()
}

/// The HTTP status the upgrade gets with `token` (101 when accepted).
async fn upgrade_status(server: &TestServer, token: &str) -> u16 {
    match RawAgent::connect(&server.ws_url(), Some(&format!("Bearer {token}")))
        .await
        .unwrap()
    {
        Ok(agent) => {
            drop(agent);
            101
        }
        Err((status, _)) => status,
    }
}

/// Receives frames until a `token.rotate`, returning its token.
async fn next_rotation(agent: &mut RawAgent) -> String {
    loop {
        if let Message::TokenRotate(rotate) = agent.recv().await.unwrap().message {
            return rotate.token;
        }
    }
}

#[tokio::test]
async fn a_real_agent_saves_the_rotated_token_and_the_old_one_stops_working() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let agent = server
        .enrolled_agent(
            Path::new(BIN),
            "rotating",
            &rm_testkit::restic::binary(),
            &[],
        )
        .await
        .unwrap();
    let old = agent_token(&agent.state_dir);

    let (status, body) = rotate(&admin, &agent.host_id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let token_id = body["token_id"].as_str().unwrap().to_owned();

    wait_until(LIMIT, "the agent to confirm its new token", || async {
        let host = admin.host(&agent.host_id).await.unwrap();
        !host.token_rotation_pending && host.token_rotated_at.is_some()
    })
    .await
    .unwrap();
    let new = agent_token(&agent.state_dir);
    assert_ne!(new, old);
    assert!(new.starts_with(&format!("rma.{token_id}.")), "{token_id}");
    assert_eq!(upgrade_status(&server, &old).await, 401);
    assert!(server.host_online(&agent.host_id).await);
    // Neither token reaches the agent's log.
    let log = agent.process.log();
    assert!(!log.contains(&new) && !log.contains(&old), "{log}");

    // A restarted agent connects with the token it saved.
    agent.process.terminate(LIMIT).await.unwrap();
    wait_until(LIMIT, "the host to go offline", || async {
        !server.host_online(&agent.host_id).await
    })
    .await
    .unwrap();
    let again = AgentProcess::spawn(
        Path::new(BIN),
        &agent.state_dir,
        &rm_testkit::restic::binary(),
        &[],
    )
    .unwrap();
    wait_until(LIMIT, "the restarted agent to connect", || {
        server.host_online(&agent.host_id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", again.log()));
}

#[tokio::test]
async fn without_a_confirmation_both_tokens_work_until_the_new_one_is_used() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, old) = server.enrolled_host("raw").await.unwrap();

    // Offline: nothing can carry a new token.
    let (status, body) = rotate(&admin, &host_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("offline"));

    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &old)
        .await
        .unwrap();
    assert_eq!(rotate(&admin, &host_id).await.0, StatusCode::ACCEPTED);
    let new = next_rotation(&mut agent).await;
    assert_ne!(new, old);
    assert!(admin.host(&host_id).await.unwrap().token_rotation_pending);

    // No `token.rotated`: the old token still works, and the rotation waits.
    assert_eq!(upgrade_status(&server, &old).await, 101);
    assert!(admin.host(&host_id).await.unwrap().token_rotation_pending);
    // Connecting with the new token proves the agent has it: promoted.
    assert_eq!(upgrade_status(&server, &new).await, 101);
    let host = admin.host(&host_id).await.unwrap();
    assert!(!host.token_rotation_pending);
    assert!(host.token_rotated_at.is_some());
    assert_eq!(upgrade_status(&server, &old).await, 401);
    assert_eq!(upgrade_status(&server, &new).await, 101);
}

#[tokio::test]
async fn a_confirmation_ends_the_old_token_and_a_newer_rotation_replaces_an_unconfirmed_one() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, old) = server.enrolled_host("acking").await.unwrap();
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &old)
        .await
        .unwrap();

    assert_eq!(rotate(&admin, &host_id).await.0, StatusCode::ACCEPTED);
    let first = next_rotation(&mut agent).await;
    assert_eq!(rotate(&admin, &host_id).await.0, StatusCode::ACCEPTED);
    let second = next_rotation(&mut agent).await;
    // The first new token was superseded before anyone confirmed it.
    assert_eq!(upgrade_status(&server, &first).await, 401);

    // A confirmation naming the superseded token changes nothing.
    let first_id = first.split('.').nth(1).unwrap().to_owned();
    agent
        .send(Frame::new(TokenRotated {
            token_id: Some(first_id),
        }))
        .await
        .unwrap();
    // A malformed id is answered, and changes nothing either.
    agent
        .send_text(r#"{"type":"token.rotated","payload":{"token_id":"nope"}}"#)
        .await
        .unwrap();
    let reply = agent.recv().await.unwrap();
    assert!(
        matches!(&reply.message, Message::Error(e) if e.message.contains("token_id")),
        "{reply:?}"
    );
    assert!(admin.host(&host_id).await.unwrap().token_rotation_pending);

    // `{}` confirms the pending (second) token.
    agent
        .send_text(r#"{"type":"token.rotated","payload":{}}"#)
        .await
        .unwrap();
    wait_until(LIMIT, "the rotation to complete", || async {
        !admin.host(&host_id).await.unwrap().token_rotation_pending
    })
    .await
    .unwrap();
    assert_eq!(upgrade_status(&server, &old).await, 401);
    assert_eq!(upgrade_status(&server, &second).await, 101);
}

#[tokio::test]
async fn revocation_closes_with_4001_ends_every_token_and_keeps_the_host() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, old) = server.enrolled_host("revoked").await.unwrap();
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &old)
        .await
        .unwrap();
    assert_eq!(rotate(&admin, &host_id).await.0, StatusCode::ACCEPTED);
    let pending = next_rotation(&mut agent).await;

    let (status, body) = revoke(&admin, &host_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, close) = agent.closed(LIMIT).await.unwrap();
    assert_eq!(close.map(|c| u16::from(c.code)), Some(close_code::REVOKED));
    assert_eq!(upgrade_status(&server, &old).await, 401);
    assert_eq!(upgrade_status(&server, &pending).await, 401);

    // Still listed, shown as revoked and offline.
    wait_until(LIMIT, "the host to be offline", || async {
        !server.host_online(&host_id).await
    })
    .await
    .unwrap();
    let host = admin.host(&host_id).await.unwrap();
    assert!(host.agent_revoked_at.is_some());
    assert!(!host.token_rotation_pending);
    assert!(admin.hosts().await.unwrap().iter().any(|h| h.id == host_id));

    // Revoking again is fine; rotating a revoked agent is not.
    assert_eq!(revoke(&admin, &host_id).await.0, StatusCode::NO_CONTENT);
    let (status, body) = rotate(&admin, &host_id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_host_ids_and_missing_credentials_are_refused() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    for action in ["rotate", "revoke"] {
        let (status, body) = admin
            .post(
                &format!("/api/v1/hosts/not-an-id/token/{action}"),
                json!({}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not-an-id"));
        let unknown = rm_core::HostId::new();
        let (status, _) = admin
            .post(
                &format!("/api/v1/hosts/{unknown}/token/{action}"),
                json!({}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = server
            .anonymous()
            .post(
                &format!("/api/v1/hosts/{unknown}/token/{action}"),
                json!({}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
