//! What a repository's `env` may set, seen from the real server: variables
//! outside the allow-list are refused by `PUT` (400 naming `env.<NAME>`,
//! nothing stored or pushed), documented ones are taken, and settings
//! stored before the rule (inserted sealed straight into the store) are
//! kept but marked refused on the host, not pushed, and block jobs until
//! usable settings are set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_protocol::{Frame, Message, RepositoryConfig, CURRENT_PROTOCOL_VERSION};
use rm_testkit::{hello, RawAgent, TestServer};
use serde_json::json;

#[tokio::test]
async fn put_refuses_variables_outside_the_allow_list() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host_id, token) = server.enrolled_host("web-01").await.unwrap();
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
    assert!(config.repository.is_none());
    assert!(matches!(
        agent.recv().await.unwrap().message,
        Message::ScheduleSet(_)
    ));

    let path = format!("/api/v1/hosts/{host_id}/repository");
    for (name, why) in [
        ("PATH", "run another program"),
        ("LD_PRELOAD", "load other code"),
        ("HOME", "run another program"),
        ("GODEBUG", "Go runtime"),
        ("RCLONE_CONFIG", "run another program"),
        ("RCLONE_SFTP_SSH", "run another program"),
        ("NOT_A_RESTIC_VARIABLE", "allowed: "),
    ] {
        let (status, body) = admin
            .send(
                reqwest::Method::PUT,
                &path,
                Some(json!({
                    "url": "/srv/restic",
                    "password": "pw",
                    "env": {"AWS_ACCESS_KEY_ID": "AKIA", name: "/tmp/x"},
                })),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("`env.{name}` ")), "{message}");
        assert!(message.contains(why), "{message}");
    }
    // Nothing stored, nothing pushed.
    let (status, _) = admin.get(&path).await.unwrap();
    assert_eq!(status, 404);
    assert!(admin
        .host(&host_id)
        .await
        .unwrap()
        .repository_refused
        .is_none());

    // A documented variable is taken and pushed.
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({
                "url": "s3:s3.amazonaws.com/bucket",
                "password": "pw",
                "env": {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "HTTPS_PROXY": "http://proxy:3128"},
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let Message::ConfigUpdate(config) = agent.recv().await.unwrap().message else {
        panic!("expected config.update");
    };
    let pushed = config.repository.expect("pushed");
    assert_eq!(
        pushed.env.keys().collect::<Vec<_>>(),
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HTTPS_PROXY"]
    );
    server.stop().await.unwrap();
}

/// A page as the logged-in operator's browser gets it (the login
/// session's token is the session cookie).
async fn html(admin: &rm_testkit::Api, path: &str) -> String {
    let (status, html) = admin.page(path).await.unwrap();
    assert_eq!(status, 200, "{path}");
    html
}

/// Seals `config` with the server's key and stores it directly, as a
/// server from before the allow-list would have.
async fn store_unchecked(server: &TestServer, host_id: &str, config: &RepositoryConfig) {
    let key_file = server.data_dir().join(rm_server::KEY_FILE);
    let key = rm_server::sealing::unlock(server.store(), &key_file)
        .await
        .unwrap();
    let host = host_id.parse().unwrap();
    let sealed =
        rm_server::sealing::seal_repository(&key, host, &serde_json::to_vec(config).unwrap())
            .unwrap();
    server
        .store()
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn settings_stored_before_the_rule_are_kept_but_refused() {
    let server = TestServer::start().await.unwrap();
    let (host_id, token) = server.enrolled_host("old-01").await.unwrap();
    let (late_id, _) = server.enrolled_host("old-02").await.unwrap();
    let bad = RepositoryConfig {
        url: "/srv/restic".into(),
        password: "pw".into(),
        env: [
            ("AWS_ACCESS_KEY_ID".to_owned(), "AKIA".to_owned()),
            ("PATH".to_owned(), "/tmp/evil".to_owned()),
        ]
        .into(),
        copy_to: None,
    };
    store_unchecked(&server, &host_id, &bad).await;
    // The start-up check marks it.
    let server = server.restart().await.unwrap();
    let admin = server.admin().await.unwrap();
    let host = admin.host(&host_id).await.unwrap();
    let refused = host.repository_refused.expect("marked refused at start");
    assert!(refused.starts_with("`env.PATH` "), "{refused}");
    // Kept: still shown (names only), not deleted.
    let (status, view) = admin
        .get(&format!("/api/v1/hosts/{host_id}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(view["env_keys"], json!(["AWS_ACCESS_KEY_ID", "PATH"]));

    // Not pushed: the agent gets no repository.
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
    assert!(config.repository.is_none(), "refused settings were pushed");

    // Jobs are refused with the reason.
    let (status, body) = admin
        .post(
            &format!("/api/v1/hosts/{host_id}/jobs"),
            json!({"kind": "snapshots"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("repository settings refused: `env.PATH`"),
        "{message}"
    );

    // The host page and the dashboard say so.
    let page = html(&admin, &format!("/hosts/{host_id}")).await;
    assert!(page.contains(r#"id="repository-refused""#), "host page");
    assert!(page.contains("env.PATH"), "host page names the variable");
    let dashboard = html(&admin, "/").await;
    assert!(dashboard.contains("settings refused"), "dashboard");

    // Settings stored while the server runs are checked when read.
    store_unchecked(&server, &late_id, &bad).await;
    assert!(admin
        .host(&late_id)
        .await
        .unwrap()
        .repository_refused
        .is_none());
    let (status, _) = admin
        .get(&format!("/api/v1/hosts/{late_id}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(admin
        .host(&late_id)
        .await
        .unwrap()
        .repository_refused
        .is_some());

    // Leaving `env` out keeps the stored variables, so `PATH` with them:
    // refused, naming it. Usable settings clear the mark, and are pushed.
    let path = format!("/api/v1/hosts/{host_id}/repository");
    let (status, _) = admin
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"url": "/srv/restic", "password": "pw"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"url": "/srv/restic", "password": "pw", "env": {"AWS_ACCESS_KEY_ID": "AKIA"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    assert_eq!(admin.host(&host_id).await.unwrap().repository_refused, None);
    loop {
        if let Message::ConfigUpdate(config) = agent.recv().await.unwrap().message {
            assert!(config.repository.is_some());
            break;
        }
    }
    server.stop().await.unwrap();
}
