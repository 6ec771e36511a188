//! The notification channels page in Debian's headless Chromium against
//! the real server and real receivers (an HTTP receiver, an SMTP server on
//! 127.0.0.1): a webhook channel added through the form (a bad URL first:
//! refused at the field, nothing stored), tested from the list (the
//! receiver gets it, signed; the row shows ok and the status), edited with
//! its secret left empty (kept: the next test's signature verifies with
//! the original secret, computed here) and then removed with its box;
//! an email channel added and tested
//! (the message arrives); a webhook whose receiver answers 500 shows the
//! failed test and, after a real delivery failed, "Failing since" with the
//! error; a channel deleted after a confirmation. Over plain HTTP, the
//! form refuses a missing CSRF token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use rm_protocol::api::AlertView;
use rm_server::notify::{self, AlertEvent, AlertNotice, NoticeHost};
use rm_testkit::{
    wait_until, webhook_signature, Api, Browser, HttpReceiver, SmtpReceiver, TestServer,
    WebSession, ADMIN_PASSWORD,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
const CHANNELS: &str = "/api/v1/notification-channels";

async fn channels(admin: &Api) -> Vec<Value> {
    let (status, list) = admin.get(CHANNELS).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().unwrap().clone()
}

/// The channel named `name`, as the API shows it.
async fn channel_named(admin: &Api, name: &str) -> Value {
    channels(admin)
        .await
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel named {name}"))
}

/// Clicks the row's "Send test" and waits for its answer to show.
async fn send_test(browser: &Browser, id: &str, expect: &str) {
    let row = format!("tr[data-channel=\"{id}\"]");
    browser
        .click(&format!("{row} .channel-test"))
        .await
        .unwrap();
    browser
        .wait_for_text(&format!("#test-{id}"), expect, WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_operator_adds_tests_edits_and_deletes_channels_through_the_page() {
    let server = TestServer::start().await.unwrap();
    let origin = server.url.clone();
    let admin = server.admin().await.unwrap();
    let hook = HttpReceiver::start().await.unwrap();
    let smtp = SmtpReceiver::start().await.unwrap();

    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&server.url, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.click("nav a[href=\"/channels\"]").await.unwrap();
    browser.wait_for("#no-channels", WAIT).await.unwrap();
    browser.click("#channel-new").await.unwrap();
    browser.wait_for("#channel-form", WAIT).await.unwrap();

    // Only the chosen kind's fields show (a webhook to begin with).
    let email_fields = browser.wait_for("#fields-email", WAIT).await.unwrap();
    assert!(!email_fields.is_displayed().await.unwrap());
    assert!(browser
        .wait_for("#webhook-url", WAIT)
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());

    // A bad URL: refused next to the field, nothing stored.
    browser.fill("#channel-name", "ops hook").await.unwrap();
    browser.fill("#channel-selector", "env=prod").await.unwrap();
    browser.fill("#webhook-url", "not a url").await.unwrap();
    browser.fill("#webhook-secret", "s3cret").await.unwrap();
    browser.click("#kind-backup_stale").await.unwrap();
    browser.click("#channel-submit").await.unwrap();
    browser
        .wait_for_text("[data-error-for=\"webhook.url\"]", "`config.url`", WAIT)
        .await
        .unwrap();
    browser.screenshot("channel-refused").await.unwrap();
    assert!(channels(&admin).await.is_empty());
    // What was typed stays, the secret excepted (never written back).
    let typed = |css: &'static str| {
        let browser = &browser;
        async move {
            browser
                .wait_for(css, WAIT)
                .await
                .unwrap()
                .prop("value")
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    assert_eq!(typed("#channel-name").await, "ops hook");
    assert_eq!(typed("#webhook-secret").await, "");

    browser
        .fill("#webhook-url", &hook.url("/ops"))
        .await
        .unwrap();
    browser.fill("#webhook-secret", "s3cret").await.unwrap();
    browser.click("#channel-submit").await.unwrap();
    browser.wait_for("#channel-saved", WAIT).await.unwrap();
    let ops = channel_named(&admin, "ops hook").await;
    let ops_id = ops["id"].as_str().unwrap().to_owned();
    assert_eq!(ops["kind"], "webhook");
    assert_eq!(ops["config"]["url"], hook.url("/ops"));
    assert_eq!(ops["config"]["secret"], "<set>");
    assert_eq!(ops["selector"]["env"], "prod");
    assert_eq!(ops["kinds"], serde_json::json!(["backup_stale"]));

    // Send test: the receiver gets it, signed; the row says what it answered.
    send_test(&browser, &ops_id, "ok").await;
    browser
        .wait_for_text(&format!("#test-{ops_id}"), "status 200", WAIT)
        .await
        .unwrap();
    let got = hook.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        got[0].header("x-rm-signature").unwrap(),
        webhook_signature("s3cret", &got[0].body)
    );
    browser.screenshot("channel-tested").await.unwrap();

    // Edit: the secret is not shown; left empty it is kept.
    browser
        .click(&format!("tr[data-channel=\"{ops_id}\"] .channel-edit"))
        .await
        .unwrap();
    browser.wait_for("#channel-form", WAIT).await.unwrap();
    assert_eq!(typed("#webhook-secret").await, "");
    assert_eq!(typed("#webhook-url").await, hook.url("/ops"));
    assert_eq!(typed("#channel-selector").await, "env=prod");
    browser
        .wait_for_text(
            "#fields-webhook",
            "leave empty to keep the stored one",
            WAIT,
        )
        .await
        .unwrap();
    browser.fill("#channel-name", "ops hook 2").await.unwrap();
    browser.click("#channel-submit").await.unwrap();
    browser.wait_for("#channel-saved", WAIT).await.unwrap();
    let edited = admin.channel(&ops_id).await.unwrap();
    assert_eq!(edited["name"], "ops hook 2");
    assert_eq!(edited["config"]["secret"], "<set>");
    send_test(&browser, &ops_id, "status 200").await;
    let got = hook.wait_for(2, WAIT).await.unwrap();
    assert_eq!(
        got[1].header("x-rm-signature").unwrap(),
        webhook_signature("s3cret", &got[1].body),
        "the secret left empty was kept"
    );
    // Ticking "remove" drops it: the API shows none.
    browser
        .click(&format!("tr[data-channel=\"{ops_id}\"] .channel-edit"))
        .await
        .unwrap();
    browser
        .wait_for("#webhook-secret-clear", WAIT)
        .await
        .unwrap();
    browser.click("#webhook-secret-clear").await.unwrap();
    browser.click("#channel-submit").await.unwrap();
    browser.wait_for("#channel-saved", WAIT).await.unwrap();
    let unsigned = admin.channel(&ops_id).await.unwrap();
    assert!(unsigned["config"].get("secret").is_none(), "{unsigned}");

    // An email channel to a real SMTP server.
    browser
        .goto(&format!("{origin}/channels/new"))
        .await
        .unwrap();
    browser.wait_for("#channel-form", WAIT).await.unwrap();
    browser
        .click("#channel-kind option[value=\"email\"]")
        .await
        .unwrap();
    assert!(browser
        .wait_for("#email-smtp-host", WAIT)
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    browser.fill("#channel-name", "mail").await.unwrap();
    browser.fill("#email-smtp-host", "127.0.0.1").await.unwrap();
    browser
        .fill("#email-smtp-port", &smtp.port.to_string())
        .await
        .unwrap();
    browser
        .click("#email-tls option[value=\"none\"]")
        .await
        .unwrap();
    browser
        .fill("#email-from", "Backups <backups@example.com>")
        .await
        .unwrap();
    browser
        .fill("#email-to", "ops@example.com, oncall@example.com")
        .await
        .unwrap();
    browser.screenshot("channel-email").await.unwrap();
    browser.click("#channel-submit").await.unwrap();
    browser.wait_for("#channel-saved", WAIT).await.unwrap();
    let mail = channel_named(&admin, "mail").await;
    let mail_id = mail["id"].as_str().unwrap().to_owned();
    assert_eq!(
        mail["config"]["to"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(mail["config"]["tls"], "none");
    send_test(&browser, &mail_id, "status 250").await;
    let messages = smtp.wait_for(1, WAIT).await.unwrap();
    assert!(
        messages[0].contains("This is a test notification"),
        "{}",
        messages[0]
    );

    // A receiver that answers 500: the failed test shows, and after a real
    // delivery failed the row shows since when and why.
    let broken = HttpReceiver::start().await.unwrap();
    broken.answer_with(500);
    let down = admin
        .create_channel(serde_json::json!({"name": "down", "kind": "webhook",
            "config": {"url": broken.url("/down")}, "selector": {"env": "dev"}}))
        .await
        .unwrap();
    let down_id = down["id"].as_str().unwrap().to_owned();
    browser.goto(&format!("{origin}/channels")).await.unwrap();
    browser.wait_for("#channels-table", WAIT).await.unwrap();
    send_test(&browser, &down_id, "failed").await;
    browser
        .wait_for_text(&format!("#test-{down_id}"), "status 500", WAIT)
        .await
        .unwrap();
    let host = NoticeHost {
        id: rm_core::HostId::new().to_string(),
        name: String::from("dev-1"),
        labels: BTreeMap::from([(String::from("env"), String::from("dev"))]),
    };
    let notice = AlertNotice {
        event: AlertEvent::Firing,
        repeat: false,
        alert: AlertView {
            id: rm_core::AlertId::new().to_string(),
            kind: String::from("host_offline"),
            host_id: host.id.clone(),
            host_name: host.name.clone(),
            state: String::from("firing"),
            subject: String::new(),
            message: String::from("dev-1 has been offline for 2 h"),
            job_id: None,
            started_at: Utc::now(),
            resolved_at: None,
            resolved_message: None,
            acknowledged_by: None,
            acknowledged_at: None,
            notified_at: None,
            notifications: 0,
        },
        host,
    };
    assert_eq!(
        notify::enqueue_alert(&server.state, &notice).await.unwrap(),
        2,
        "the dev channel and the mail channel (every host) take a dev host's alert; the prod one not"
    );
    wait_until(WAIT, "a failed delivery at the broken receiver", || {
        let admin = admin.clone();
        let id = down_id.clone();
        async move { admin.channel(&id).await.unwrap()["failing_since"].is_string() }
    })
    .await
    .unwrap();
    browser.goto(&format!("{origin}/channels")).await.unwrap();
    let down_row = format!("tr[data-channel=\"{down_id}\"]");
    browser
        .wait_for_text(
            &format!("{down_row} .channel-failing"),
            "Failing since",
            WAIT,
        )
        .await
        .unwrap();
    browser
        .wait_for_text(&format!("{down_row} .last-error"), "500", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(&format!("{down_row} .queued"), "1 queued", WAIT)
        .await
        .unwrap();
    let ops_row = format!("tr[data-channel=\"{ops_id}\"]");
    let ops_failing = browser
        .client()
        .find_all(fantoccini::Locator::Css(&format!(
            "{ops_row} .channel-failing"
        )))
        .await
        .unwrap();
    assert!(ops_failing.is_empty(), "a healthy channel shows no failure");
    browser.screenshot("channels-failing").await.unwrap();

    // Delete, after a confirmation.
    browser.accept_confirms().await.unwrap();
    browser
        .click(&format!("{down_row} .channel-delete"))
        .await
        .unwrap();
    browser.wait_for("#channel-deleted", WAIT).await.unwrap();
    let left: Vec<String> = channels(&admin)
        .await
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["mail", "ops hook 2"]);

    // The page asked nothing of another origin.
    for url in browser.requested_urls().await.unwrap() {
        assert!(url.starts_with(&origin), "{url} is not the server's");
    }
    // The one console error is the refused form's 400, which Chromium logs.
    let errors = browser.console_errors().await.unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("status of 400") && e.contains("/channels/new")),
        "console errors: {errors:#?}"
    );
    browser.close().await.unwrap();

    // The audit log has the page's changes, by the admin; no secret in it.
    let (_, audit) = admin.get("/api/v1/audit?limit=100").await.unwrap();
    let audit = audit.to_string();
    for action in [
        "channel.create",
        "channel.update",
        "channel.test",
        "channel.delete",
    ] {
        assert!(audit.contains(action), "{action} missing: {audit}");
    }
    assert!(!audit.contains("s3cret"));

    // Plain HTTP: no CSRF token, no change.
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let (status, _, _) = web
        .form(
            "/channels/new",
            &[
                ("name", "sneaky"),
                ("kind", "webhook"),
                ("webhook.url", "http://127.0.0.1:9/"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(channels(&admin).await.len(), 2);
}
