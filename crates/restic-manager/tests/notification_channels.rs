//! Notification channels through the real server: every bad request
//! refused naming the field with nothing stored, secrets sealed and never
//! shown (nor in the audit log, nor in the database), `PUT` keeping a
//! secret left out, test messages to a real HTTP receiver in each kind's
//! shape (the webhook's signature checked with an HMAC computed here) and
//! to a real SMTP server, and alerts queued through `enqueue_alert` reaching
//! a receiver that was down, across a server restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rm_protocol::api::AlertView;
use rm_server::notify::{self, AlertEvent, AlertNotice, NoticeHost};
use rm_testkit::{wait_until, webhook_signature, Api, HttpReceiver, SmtpReceiver, TestServer};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(30);
const CHANNELS: &str = "/api/v1/notification-channels";

async fn channel_list(admin: &Api) -> Vec<Value> {
    let (status, list) = admin.get(CHANNELS).await.unwrap();
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

async fn audit_text(admin: &Api) -> String {
    let (_, body) = admin.get("/api/v1/audit?limit=500").await.unwrap();
    body.to_string()
}

fn id_of(view: &Value) -> String {
    view["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_channels_are_refused_naming_the_field_and_nothing_is_stored() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let email = |to: Value| {
        json!({"name": "mail", "kind": "email", "config": {
            "smtp_host": "127.0.0.1", "from": "backups@example.com", "to": to}})
    };
    let cases = [
        (
            json!({"name": "x", "kind": "pager", "config": {}}),
            "`kind`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {}}),
            "missing field `url`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {"url": "ftp://example.com/"}}),
            "`config.url`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {"url": "not a url"}}),
            "`config.url`",
        ),
        (
            json!({"name": "x", "kind": "webhook",
                   "config": {"url": "https://user:pw@example.com/"}}),
            "`config.url` must not carry credentials",
        ),
        (
            json!({"name": "x", "kind": "webhook",
                   "config": {"url": "https://example.com/", "colour": "red"}}),
            "unknown field `colour`",
        ),
        (
            json!({"name": "x", "kind": "ntfy", "config": {"url": "https://ntfy.sh/t", "token": 5}}),
            "`config.token`",
        ),
        (
            email(json!(["ops@example.com", "not an address"])),
            "`config.to[1]`",
        ),
        (email(json!([])), "`config.to`"),
        (
            json!({"name": "x", "kind": "email", "config": {
                "smtp_host": "127.0.0.1", "smtp_port": "x", "from": "a@example.com",
                "to": ["b@example.com"]}}),
            "`config.smtp_port`",
        ),
        (
            json!({"name": "x", "kind": "email", "config": {
                "smtp_host": "127.0.0.1", "tls": "ssl", "from": "a@example.com",
                "to": ["b@example.com"]}}),
            "`config.tls`",
        ),
        (
            json!({"name": "x", "kind": "slack", "config": {"webhook_url": "mailto:a@b"}}),
            "`config.webhook_url`",
        ),
        (
            json!({"name": "x", "kind": "healthchecks", "config": {}}),
            "missing field `base_url`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {"url": "https://example.com/"},
                   "kinds": ["backup_stale", "disk_full"]}),
            "`kinds[1]`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {"url": "https://example.com/"},
                   "selector": {"Env": "prod"}}),
            "`selector`",
        ),
        (
            json!({"name": " ", "kind": "webhook", "config": {"url": "https://example.com/"}}),
            "`name`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {"url": "https://example.com/"},
                   "priority": 3}),
            "unknown field `priority`",
        ),
        (
            json!({"name": "x", "kind": "webhook", "config": {"url": "https://example.com/",
                   "secret": "<set>"}}),
            "`config.secret`",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer) = admin.post(CHANNELS, body.clone()).await.unwrap();
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body} → {message}");
    }
    assert!(channel_list(&admin).await.is_empty());
    assert!(!audit_text(&admin).await.contains("channel.create"));

    // A PUT that is refused changes nothing either.
    let made = admin
        .create_channel(json!({"name": "hook", "kind": "webhook",
                               "config": {"url": "https://example.com/a"}}))
        .await
        .unwrap();
    let path = format!("{CHANNELS}/{}", id_of(&made));
    let (status, _) = admin
        .put(
            &path,
            json!({"name": "hook", "kind": "webhook", "config": {"url": "gopher://x"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(admin.channel(&id_of(&made)).await.unwrap(), made);
    let (status, _) = admin.get(&format!("{CHANNELS}/not-an-id")).await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = admin
        .get(&format!("{CHANNELS}/{}", rm_core::ChannelId::new()))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = server.anonymous().get(CHANNELS).await.unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn secrets_are_sealed_never_shown_and_kept_when_left_out() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let receiver = HttpReceiver::start().await.unwrap();
    let secrets = [
        "whsec-7d1c0a55e2",
        "tk_ntfy_94be7720",
        "smtp-pass-5a77c1",
        "SLACKSECRETb7f2",
        "DISCORDSECRETc91a",
        "HCPINGKEY6d20",
    ];
    let bodies = [
        json!({"name": "hook", "kind": "webhook",
               "config": {"url": receiver.url("/hook"), "secret": secrets[0]}}),
        json!({"name": "phone", "kind": "ntfy",
               "config": {"url": "https://ntfy.sh/backups", "token": secrets[1]}}),
        json!({"name": "mail", "kind": "email", "config": {
            "smtp_host": "smtp.example.com", "tls": "starttls", "username": "rm",
            "password": secrets[2], "from": "Backups <backups@example.com>",
            "to": ["ops@example.com"]}}),
        json!({"name": "slack", "kind": "slack", "config": {
            "webhook_url": format!("https://hooks.slack.com/services/T0/B0/{}", secrets[3])}}),
        json!({"name": "discord", "kind": "discord", "config": {
            "webhook_url": format!("https://discord.com/api/webhooks/1/{}", secrets[4])}}),
        json!({"name": "hc", "kind": "healthchecks", "config": {
            "base_url": format!("https://hc-ping.com/{}", secrets[5])}}),
    ];
    let secret_field = [
        "secret",
        "token",
        "password",
        "webhook_url",
        "webhook_url",
        "base_url",
    ];
    let mut ids = Vec::new();
    for (body, field) in bodies.iter().zip(secret_field) {
        let view = admin.create_channel(body.clone()).await.unwrap();
        assert_eq!(view["config"][field], "<set>", "{view}");
        ids.push(id_of(&view));
    }
    let mail = admin.channel(&ids[2]).await.unwrap();
    assert_eq!(mail["config"]["smtp_port"], 587, "{mail}");
    assert_eq!(mail["config"]["username"], "rm");
    assert_eq!(mail["config"]["tls"], "starttls");

    let shown = format!(
        "{}{}{}",
        json!(channel_list(&admin).await),
        json!(admin.channel(&ids[0]).await.unwrap()),
        audit_text(&admin).await
    );
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }

    // A stored secret goes nowhere else: moving the channel without
    // giving it again is refused, naming it; nothing changes.
    let (status, refused) = admin
        .put(
            &format!("{CHANNELS}/{}", ids[0]),
            json!({"name": "hook", "kind": "webhook", "config": {"url": receiver.url("/moved")}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("`config.secret`"), "{refused}");
    assert!(refused.to_string().contains("`config.url`"), "{refused}");
    let (_, unchanged) = admin.get(&format!("{CHANNELS}/{}", ids[0])).await.unwrap();
    assert_ne!(unchanged["config"]["url"], receiver.url("/moved"));
    admin
        .update_channel(
            &ids[0],
            json!({"name": "hook", "kind": "webhook",
                   "config": {"url": receiver.url("/moved"), "secret": secrets[0]}}),
        )
        .await
        .unwrap();
    // PUT without the secret, to the same place, keeps it: the signature
    // still uses it.
    let moved = admin
        .update_channel(
            &ids[0],
            json!({"name": "hook", "kind": "webhook", "config": {"url": receiver.url("/moved")}}),
        )
        .await
        .unwrap();
    assert_eq!(moved["config"]["secret"], "<set>");
    assert_eq!(moved["config"]["url"], receiver.url("/moved"));
    let answer = admin.test_channel(&ids[0]).await.unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let got = receiver.wait_for(1, LIMIT).await.unwrap();
    assert_eq!(got[0].path, "/moved");
    assert_eq!(
        got[0].header("x-rm-signature").unwrap(),
        webhook_signature(secrets[0], &got[0].body)
    );
    // "<set>" keeps it too; null removes it.
    admin
        .update_channel(
            &ids[0],
            json!({"name": "hook", "kind": "webhook",
                   "config": {"url": receiver.url("/moved"), "secret": "<set>"}}),
        )
        .await
        .unwrap();
    let cleared = admin
        .update_channel(
            &ids[0],
            json!({"name": "hook", "kind": "webhook",
                   "config": {"url": receiver.url("/moved"), "secret": null}}),
        )
        .await
        .unwrap();
    assert!(cleared["config"].get("secret").is_none(), "{cleared}");
    admin.test_channel(&ids[0]).await.unwrap();
    let got = receiver.wait_for(2, LIMIT).await.unwrap();
    assert!(got[1].header("x-rm-signature").is_none());

    // Names are unique.
    let (status, answer) = admin.post(CHANNELS, bodies[1].clone()).await.unwrap();
    assert_eq!(status, 409, "{answer}");
    let (status, _) = admin
        .put(
            &format!("{CHANNELS}/{}", ids[0]),
            json!({"name": "phone", "kind": "webhook", "config": {"url": receiver.url("/")}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409);

    // Not in the database in the clear either.
    let on_disk = server
        .database()
        .expect("a test server has a database")
        .contents()
        .await
        .unwrap();
    assert!(!on_disk.is_empty());
    let on_disk = String::from_utf8_lossy(&on_disk);
    for secret in secrets {
        assert!(!on_disk.contains(secret), "{secret} stored in the clear");
    }

    let (status, _) = admin
        .delete(&format!("{CHANNELS}/{}", ids[5]))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, _) = admin.get(&format!("{CHANNELS}/{}", ids[5])).await.unwrap();
    assert_eq!(status, 404);
    let audit = audit_text(&admin).await;
    for action in [
        "channel.create",
        "channel.update",
        "channel.delete",
        "channel.test",
    ] {
        assert!(audit.contains(action), "{action} missing from {audit}");
    }
}

#[tokio::test]
async fn test_messages_arrive_in_each_kinds_shape_with_what_the_receiver_said() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let receiver = HttpReceiver::start().await.unwrap();

    let hook = admin
        .create_channel(json!({"name": "hook", "kind": "webhook",
                               "config": {"url": receiver.url("/hook"), "secret": "k3y"}}))
        .await
        .unwrap();
    let answer = admin.test_channel(&id_of(&hook)).await.unwrap();
    assert_eq!(
        answer,
        json!({"ok": true, "status": 200, "response": "answered 200"})
    );
    let got = receiver.wait_for(1, LIMIT).await.unwrap();
    let request = &got[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/hook")
    );
    assert_eq!(
        request.header("x-rm-signature").unwrap(),
        webhook_signature("k3y", &request.body)
    );
    assert!(request
        .header("user-agent")
        .unwrap()
        .starts_with("restic-manager/"));
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    let body = request.json().unwrap();
    assert_eq!(body["event"], "test");
    assert_eq!(body["repeat"], false);
    assert_eq!(body["alert"]["kind"], "test");
    assert!(body["host"]["name"].is_string());

    let ntfy = admin
        .create_channel(json!({"name": "ntfy", "kind": "ntfy",
                               "config": {"url": receiver.url("/backups"), "token": "tk_1"}}))
        .await
        .unwrap();
    assert_eq!(admin.test_channel(&id_of(&ntfy)).await.unwrap()["ok"], true);
    let request = receiver.wait_for(2, LIMIT).await.unwrap()[1].clone();
    assert_eq!(request.path, "/backups");
    assert_eq!(request.header("authorization").unwrap(), "Bearer tk_1");
    assert_eq!(
        request.header("title").unwrap(),
        "TEST notification from restic-manager"
    );
    assert_eq!(request.header("priority").unwrap(), "default");
    assert!(request.header("tags").is_some());
    assert!(
        request.text().contains("test notification"),
        "{}",
        request.text()
    );

    let slack = admin
        .create_channel(json!({"name": "slack", "kind": "slack",
                               "config": {"webhook_url": receiver.url("/slack")}}))
        .await
        .unwrap();
    admin.test_channel(&id_of(&slack)).await.unwrap();
    let discord = admin
        .create_channel(json!({"name": "discord", "kind": "discord",
                               "config": {"webhook_url": receiver.url("/discord")}}))
        .await
        .unwrap();
    admin.test_channel(&id_of(&discord)).await.unwrap();
    let hc = admin
        .create_channel(json!({"name": "hc", "kind": "healthchecks",
                               "config": {"base_url": receiver.url("/ping/KEY/")}}))
        .await
        .unwrap();
    admin.test_channel(&id_of(&hc)).await.unwrap();
    let got = receiver.wait_for(5, LIMIT).await.unwrap();
    let slack_body = got[2].json().unwrap();
    assert_eq!(got[2].path, "/slack");
    assert!(slack_body["text"]
        .as_str()
        .unwrap()
        .contains("TEST notification"));
    assert_eq!(slack_body.as_object().unwrap().len(), 1);
    let discord_body = got[3].json().unwrap();
    assert_eq!(discord_body["allowed_mentions"], json!({"parse": []}));
    assert_eq!(got[3].path, "/discord");
    assert!(discord_body["content"]
        .as_str()
        .unwrap()
        .contains("TEST notification"));
    assert_eq!(
        (got[4].method.as_str(), got[4].path.as_str()),
        ("GET", "/ping/KEY/restic-manager-test")
    );

    // A receiver that fails: the answer says so, with its status and body.
    receiver.answer_with(500);
    let answer = admin.test_channel(&id_of(&hook)).await.unwrap();
    assert_eq!(
        answer,
        json!({"ok": false, "status": 500, "response": "answered 500"})
    );
    // Nobody listening: no status, the error.
    let gone = admin
        .create_channel(json!({"name": "gone", "kind": "webhook", "config": {
            "url": format!("http://127.0.0.1:{}/", rm_testkit::rclone::free_port())}}))
        .await
        .unwrap();
    let answer = admin.test_channel(&id_of(&gone)).await.unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["status"].is_null(), "{answer}");
    assert!(!answer["response"].as_str().unwrap().is_empty());
    // Tests are not deliveries: the counters stay.
    let view = admin.channel(&id_of(&hook)).await.unwrap();
    assert_eq!(
        (view["delivered"].as_u64(), view["failed"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn email_test_reaches_a_real_smtp_server() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let smtp = SmtpReceiver::start().await.unwrap();
    let mail = admin
        .create_channel(json!({"name": "mail", "kind": "email", "config": {
            "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "tls": "none",
            "from": "Backups <backups@example.com>",
            "to": ["ops@example.com", "oncall@example.com"]}}))
        .await
        .unwrap();
    let answer = admin.test_channel(&id_of(&mail)).await.unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["status"], 250, "{answer}");
    let messages = smtp.wait_for(1, LIMIT).await.unwrap();
    let message = &messages[0];
    assert!(
        message.contains("Subject: [restic-manager] TEST notification from restic-manager"),
        "{message}"
    );
    assert!(message.contains("backups@example.com"), "{message}");
    assert!(message.contains("ops@example.com") && message.contains("oncall@example.com"));
    assert!(message.contains("This is a test notification"), "{message}");

    // Nobody listening on the port: the error comes back.
    drop(smtp);
    let answer = admin.test_channel(&id_of(&mail)).await.unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
}

#[tokio::test]
async fn email_over_starttls_checks_the_servers_certificate() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let cert = rm_testkit::TestCert::generate().unwrap();
    let smtp = SmtpReceiver::start_starttls(&cert).await.unwrap();
    let mail = admin
        .create_channel(json!({"name": "mail", "kind": "email", "config": {
            "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "tls": "starttls",
            "from": "backups@example.com", "to": ["ops@example.com"]}}))
        .await
        .unwrap();
    // The self-signed certificate is refused: nothing is sent in the
    // clear instead, and the answer says why.
    let answer = admin.test_channel(&id_of(&mail)).await.unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    let why = answer["response"].as_str().unwrap().to_lowercase();
    assert!(
        why.contains("certificate") || why.contains("tls"),
        "{answer}"
    );
    assert!(smtp.messages().is_empty());
}

fn alert(kind: &str, host_id: &str, host: &str) -> AlertView {
    AlertView {
        id: rm_core::AlertId::new().to_string(),
        kind: kind.to_owned(),
        host_id: host_id.to_owned(),
        host_name: host.to_owned(),
        state: "firing".to_owned(),
        subject: String::new(),
        message: format!("{host} has not backed up for 27 h"),
        job_id: None,
        started_at: Utc::now(),
        resolved_at: None,
        resolved_message: None,
        acknowledged_by: None,
        acknowledged_at: None,
        notified_at: None,
        notifications: 0,
    }
}

fn notice_host(name: &str, env: &str) -> NoticeHost {
    NoticeHost {
        id: rm_core::HostId::new().to_string(),
        name: name.to_owned(),
        labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
    }
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_the_alert_after_a_server_restart() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.answer_with(503);
    let prod = admin
        .create_channel(json!({"name": "prod", "kind": "webhook",
            "config": {"url": receiver.url("/prod"), "secret": "s"},
            "selector": {"env": "prod"}, "kinds": ["backup_stale"]}))
        .await
        .unwrap();
    admin
        .create_channel(json!({"name": "dev", "kind": "webhook",
            "config": {"url": receiver.url("/dev")}, "selector": {"env": "dev"}}))
        .await
        .unwrap();
    admin
        .create_channel(json!({"name": "hc", "kind": "healthchecks",
            "config": {"base_url": receiver.url("/hc")}}))
        .await
        .unwrap();

    let web = notice_host("Web 01", "prod");
    let notice = |kind: &str| AlertNotice {
        event: AlertEvent::Firing,
        repeat: false,
        alert: alert(kind, &web.id, &web.name),
        host: web.clone(),
    };
    // Only the prod channel takes backup_stale of a prod host; nothing
    // takes its job_failed (prod wants one kind, dev another host).
    assert_eq!(
        notify::enqueue_alert(&server.state, &notice("job_failed"))
            .await
            .unwrap(),
        0
    );
    let stale = notice("backup_stale");
    assert_eq!(
        notify::enqueue_alert(&server.state, &stale).await.unwrap(),
        1
    );

    let prod_id = id_of(&prod);
    wait_until(LIMIT, "a failed attempt at the prod channel", || {
        let admin = admin.clone();
        let id = prod_id.clone();
        async move {
            let view = admin.channel(&id).await.unwrap();
            view["failed"].as_u64() >= Some(1)
        }
    })
    .await
    .unwrap();
    let failing = admin.channel(&prod_id).await.unwrap();
    assert!(
        failing["last_error"].as_str().unwrap().contains("503"),
        "{failing}"
    );
    assert!(failing["failing_since"].is_string());
    assert_eq!(failing["queued"], 1);
    assert_eq!(failing["delivered"], 0);

    let server = server.restart().await.unwrap();
    let admin = server.admin().await.unwrap();
    receiver.answer_with(200);
    wait_until(
        Duration::from_secs(90),
        "the alert delivered after the restart",
        || {
            let admin = admin.clone();
            let id = prod_id.clone();
            async move { admin.channel(&id).await.unwrap()["delivered"].as_u64() == Some(1) }
        },
    )
    .await
    .unwrap();
    let healthy = admin.channel(&prod_id).await.unwrap();
    assert!(healthy["failing_since"].is_null(), "{healthy}");
    assert_eq!(healthy["queued"], 0);
    let got = receiver.requests();
    assert!(got.iter().all(|r| r.path == "/prod"), "{got:#?}");
    let last = got.last().unwrap();
    assert_eq!(
        last.header("x-rm-signature").unwrap(),
        webhook_signature("s", &last.body)
    );
    let body = last.json().unwrap();
    assert_eq!(body["event"], "alert.firing");
    assert_eq!(body["repeat"], false);
    assert_eq!(body["alert"]["kind"], "backup_stale");
    assert_eq!(body["alert"]["id"], stale.alert.id.as_str());
    assert_eq!(
        body["host"],
        json!({"id": web.id, "name": "Web 01", "labels": {"env": "prod"}})
    );

    // healthchecks: a ping per backup, /fail for a failed one, by slug.
    let before = receiver.requests().len();
    let job = rm_core::JobId::new();
    assert_eq!(
        notify::backup_finished(&server.state, &web, job, true)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        notify::backup_finished(&server.state, &web, job, false)
            .await
            .unwrap(),
        1
    );
    let got = receiver.wait_for(before + 2, LIMIT).await.unwrap();
    let mut pings: Vec<(String, String)> = got[before..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    pings.sort();
    assert_eq!(
        pings,
        [
            ("GET".to_owned(), "/hc/web-01".to_owned()),
            ("GET".to_owned(), "/hc/web-01/fail".to_owned())
        ]
    );
}
