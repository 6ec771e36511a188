//! The policies page in Debian's headless Chromium and over plain HTTP,
//! against the real server with a connected agent (a raw WebSocket client
//! that acknowledges the schedule sets it is pushed, as an agent does):
//! a policy made through the form (no JSON) covers the host enrolled with
//! a token labelled `env=prod`, shows in sync once its agent acknowledged,
//! can be edited (the new cron's description shows) and deleted; a bad
//! cron is refused in the form, naming the field, and changes nothing; the
//! form's routes refuse a missing or wrong CSRF token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::StatusCode;
use rm_testkit::{wait_until, Api, Browser, RawAgent, TestServer, WebSession, ADMIN_PASSWORD};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

/// The next schedule-set version the agent acknowledged.
async fn next_ack(acks: &mut UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(WAIT, acks.recv())
        .await
        .expect("a schedule.set acknowledged within the wait")
        .expect("the agent is still connected")
}

/// Enrols a host with a token carrying `labels` and connects it as an
/// agent that stays connected and acknowledges the schedules it is pushed;
/// returns its id and the versions it acknowledges.
async fn labelled_host(
    server: &TestServer,
    admin: &Api,
    name: &str,
    labels: &[(&str, &str)],
) -> (String, UnboundedReceiver<u64>) {
    let token = admin.create_token_with_labels(labels).await.unwrap();
    let enrolled = server
        .anonymous()
        .enroll(&token.token, Some(name), &format!("{name}.test"))
        .await
        .unwrap();
    let agent = RawAgent::connect_and_hello(&server.ws_url(), &enrolled.agent_token)
        .await
        .unwrap();
    (enrolled.host_id, agent.acknowledge_schedules())
}

/// The only policy, as the API shows it.
async fn the_policy(admin: &Api) -> Value {
    let (status, list) = admin.get("/api/v1/policies").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    list[0].clone()
}

#[tokio::test]
async fn an_operator_creates_edits_and_deletes_a_policy_through_the_form() {
    let server = TestServer::start().await.unwrap();
    let origin = server.url.clone();
    let admin = server.admin().await.unwrap();
    let (prod_id, mut prod) =
        labelled_host(&server, &admin, "web-prod-1", &[("env", "prod")]).await;
    // A host the selector does not match: never covered.
    let (dev_id, _dev) = labelled_host(&server, &admin, "web-dev-1", &[("env", "dev")]).await;

    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&server.url, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();

    // The page is in the navigation; no policies yet.
    browser.click("nav a[href=\"/policies\"]").await.unwrap();
    browser.wait_for("#no-policies", WAIT).await.unwrap();
    browser.click("#policy-new").await.unwrap();
    browser.wait_for("#policy-form", WAIT).await.unwrap();

    // The form: a name, the selector as label pairs, a backup row (the
    // first row starts as one), nothing typed as JSON.
    browser.fill("#policy-name", "prod servers").await.unwrap();
    browser.fill("#policy-selector", "env=prod").await.unwrap();
    browser.fill("#policy-freshness", "30").await.unwrap();
    browser.fill("#s0-cron", "15 3 * * *").await.unwrap();
    browser.fill("#s0-paths", "/etc\n/srv/www").await.unwrap();
    browser.fill("#s0-excludes", "*.tmp").await.unwrap();
    // The forget row's fields are hidden while the row is a backup.
    let forget_fields = browser
        .wait_for("#s0 fieldset[data-kinds=\"forget\"]", WAIT)
        .await
        .unwrap();
    assert!(!forget_fields.is_displayed().await.unwrap());
    browser.screenshot("policy-new").await.unwrap();
    browser.click("#policy-submit").await.unwrap();
    browser.wait_for("#policy-saved", WAIT).await.unwrap();
    let first_version = next_ack(&mut prod).await;

    let policy = the_policy(&admin).await;
    let id = policy["id"].as_str().unwrap().to_owned();
    assert_eq!(policy["selector"], json!({"env": "prod"}));
    assert_eq!(policy["freshness_seconds"], 30 * 3600);
    assert_eq!(
        policy["schedules"].as_array().unwrap().len(),
        1,
        "{policy:#}"
    );
    assert_eq!(policy["schedules"][0]["kind"], "backup");
    assert_eq!(policy["schedules"][0]["cron"], "15 3 * * *");
    assert_eq!(
        policy["schedules"][0]["params"],
        json!({"paths": ["/etc", "/srv/www"], "excludes": ["*.tmp"]})
    );
    let schedule_id = policy["schedules"][0]["id"].clone();
    wait_until(WAIT, "the agent's acknowledgement to be stored", || async {
        let (_, hosts) = admin
            .get(&format!("/api/v1/policies/{id}/hosts"))
            .await
            .unwrap();
        hosts[0]["in_sync"] == true
    })
    .await
    .unwrap();

    // The list: covered hosts, in sync, none drifted.
    browser.goto(&format!("{origin}/policies")).await.unwrap();
    let row = format!("tr[data-policy=\"{id}\"]");
    browser
        .wait_for_text(&format!("{row} .hosts"), "1", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(&format!("{row} .in-sync"), "1", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(&format!("{row} .drifted"), "0", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(&row, "backup: every day at 03:15", WAIT)
        .await
        .unwrap();
    browser.wait_for_text(&row, "env=prod", WAIT).await.unwrap();
    browser.screenshot("policies").await.unwrap();

    // Its coverage: the prod host, in sync; the dev host is not there.
    browser
        .click(&format!("{row} a[href=\"/policies/{id}#coverage\"]"))
        .await
        .unwrap();
    browser
        .wait_for_text(
            &format!("#coverage-table tr[data-host=\"{prod_id}\"]"),
            "in sync",
            WAIT,
        )
        .await
        .unwrap();
    let coverage = browser
        .wait_for("#coverage-table", WAIT)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        coverage.contains("web-prod-1") && !coverage.contains("web-dev-1"),
        "{coverage}"
    );
    // The saved schedule shows its description and next fires.
    browser
        .wait_for_text("#s0 legend", "every day at 03:15", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#s0 .next-fires", "03:15", WAIT)
        .await
        .unwrap();

    // The host has the schedule from the policy, and says so.
    let host = admin.host(&prod_id).await.unwrap();
    assert_eq!(host.policy_id.as_deref(), Some(id.as_str()));
    assert_eq!(host.policy_name.as_deref(), Some("prod servers"));
    assert_eq!(host.freshness_source, "policy");
    assert!(admin.host(&dev_id).await.unwrap().policy_id.is_none());
    browser
        .goto(&format!("{origin}/hosts/{prod_id}"))
        .await
        .unwrap();
    browser
        .wait_for_text("#schedules-table", "every day at 03:15", WAIT)
        .await
        .unwrap();

    // Edit: the form holds what is saved; a new cron is saved and shown
    // described, on the same policy schedule.
    browser
        .goto(&format!("{origin}/policies/{id}"))
        .await
        .unwrap();
    let value = |css: &'static str| {
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
    assert_eq!(value("#policy-selector").await, "env=prod");
    assert_eq!(value("#s0-cron").await, "15 3 * * *");
    assert_eq!(value("#s0-paths").await, "/etc\n/srv/www");
    browser.fill("#s0-cron", "45 4 * * *").await.unwrap();
    browser.click("#policy-submit").await.unwrap();
    browser.wait_for("#policy-saved", WAIT).await.unwrap();
    browser
        .wait_for_text("#s0 legend", "every day at 04:45", WAIT)
        .await
        .unwrap();
    let second_version = next_ack(&mut prod).await;
    assert!(second_version > first_version);
    wait_until(WAIT, "the edit to be acknowledged", || async {
        the_policy(&admin).await["hosts_in_sync"] == 1
    })
    .await
    .unwrap();
    let policy = the_policy(&admin).await;
    assert_eq!(policy["schedules"][0]["cron"], "45 4 * * *");
    assert_eq!(
        policy["schedules"][0]["id"], schedule_id,
        "the same schedule"
    );
    browser.screenshot("policy-edited").await.unwrap();

    // A bad cron: refused in the form, naming the field, the typed text
    // kept, nothing changed.
    let version_before = admin.host(&prod_id).await.unwrap().schedule_version;
    browser.fill("#s0-cron", "nonsense").await.unwrap();
    browser.click("#policy-submit").await.unwrap();
    browser
        .wait_for_text("#policy-error", "`schedules[0]`: `cron`", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#s0 [data-error-for=\"s0.cron\"]", "cron", WAIT)
        .await
        .unwrap();
    assert_eq!(value("#s0-cron").await, "nonsense");
    let invalid = browser
        .wait_for("#s0-cron", WAIT)
        .await
        .unwrap()
        .attr("aria-invalid")
        .await
        .unwrap();
    assert_eq!(invalid.as_deref(), Some("true"));
    browser.screenshot("policy-refused").await.unwrap();
    assert_eq!(the_policy(&admin).await, policy, "nothing changed");
    assert_eq!(
        admin.host(&prod_id).await.unwrap().schedule_version,
        version_before
    );

    // Delete: asked first, then gone, and what it gave is taken back.
    browser
        .goto(&format!("{origin}/policies/{id}"))
        .await
        .unwrap();
    browser.wait_for("#policy-delete", WAIT).await.unwrap();
    browser
        .client()
        .execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    browser.click("#policy-delete").await.unwrap();
    browser.wait_for("#policy-deleted", WAIT).await.unwrap();
    browser.wait_for("#no-policies", WAIT).await.unwrap();
    next_ack(&mut prod).await;
    let host = admin.host(&prod_id).await.unwrap();
    assert!(host.policy_id.is_none());
    let (_, schedules) = admin
        .get(&format!("/api/v1/hosts/{prod_id}/schedules"))
        .await
        .unwrap();
    assert_eq!(schedules, json!([]));

    // Everything came from the server itself; the one console error is the
    // refused form's 400, which Chromium logs.
    for url in browser.requested_urls().await.unwrap() {
        assert!(
            url.starts_with(&origin) || url.starts_with("data:"),
            "the page requested {url}"
        );
    }
    let errors = browser.console_errors().await.unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("status of 400") && e.contains(&format!("/policies/{id}"))),
        "console errors: {errors:#?}"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_policy_form_routes_need_the_csrf_token_and_refuse_bad_input_unchanged() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let csrf = web.csrf().await.unwrap();
    let fields = |csrf: &'static str, cron: &'static str| {
        vec![
            ("csrf", csrf),
            ("name", "nightly"),
            ("selector", "env=prod"),
            ("s0.kind", "backup"),
            ("s0.cron", cron),
            ("s0.enabled", "on"),
            ("s0.paths", "/etc"),
            ("s1.kind", ""),
            ("s1.cron", "30 2 * * *"),
        ]
    };
    let no_policies = || async {
        let (_, list) = admin.get("/api/v1/policies").await.unwrap();
        list == json!([])
    };

    // No token, or a wrong one: refused, nothing made.
    let mut without: Vec<(&str, &str)> = fields("", "0 1 * * *");
    without.remove(0);
    let (status, _, _) = web.form("/policies/new", &without).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = web
        .form("/policies/new", &fields("wrong", "0 1 * * *"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(no_policies().await);

    // Bad input: 400, the form again with the message and what was typed.
    let mut bad = fields("", "nonsense");
    bad[0].1 = &csrf;
    let (status, _, html) = web.form("/policies/new", &bad).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains(r#"id="policy-error""#), "{html}");
    assert!(html.contains("`schedules[0]`: `cron`"), "{html}");
    assert!(html.contains(r#"value="nonsense""#));
    assert!(html.contains(r#"data-error-for="s0.cron""#));
    let mut bad_selector = fields("", "0 1 * * *");
    bad_selector[0].1 = &csrf;
    bad_selector[2].1 = "env=PROD";
    let (status, _, html) = web.form("/policies/new", &bad_selector).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("`selector"), "{html}");
    assert!(no_policies().await);

    // Good: saved, and the browser is sent to its page.
    let mut good = fields("", "0 1 * * *");
    good[0].1 = &csrf;
    let (status, location, _) = web.form("/policies/new", &good).await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    let id = location
        .strip_prefix("/policies/")
        .and_then(|rest| rest.strip_suffix("?saved=1"))
        .unwrap_or_else(|| panic!("redirected to {location}"))
        .to_owned();
    let (status, html) = web.page(&location).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("every day at 01:00"), "{html}");
    // Its name is taken now.
    let (status, _, html) = web.form("/policies/new", &good).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("already exists"), "{html}");

    // Editing and deleting need the token too.
    let path = format!("/policies/{id}");
    let (status, _, _) = web
        .form(&path, &fields("wrong", "0 5 * * *"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = web
        .form(&format!("{path}/delete"), &[("csrf", "wrong")])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, policy) = admin.get(&format!("/api/v1{path}")).await.unwrap();
    assert_eq!(policy["schedules"][0]["cron"], "0 1 * * *");

    // The repository fields: a template with a password left empty gets
    // one generated per repository; a password typed once is kept by
    // later saves that leave the field empty (it is never shown).
    let with_repository = |password: &'static str| {
        let mut f = fields("", "0 5 * * *");
        f.push(("repository_url", "/srv/restic/{host}"));
        f.push(("repository_password", password));
        f.push(("repository_env", "RESTIC_COMPRESSION=max"));
        f
    };
    for (typed, shown) in [("", "generated"), ("s3cret pass", "given"), ("", "given")] {
        let mut f = with_repository(typed);
        f[0].1 = &csrf;
        let (status, _, html) = web.form(&path, &f).await.unwrap();
        assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
        let (_, policy) = admin.get(&format!("/api/v1{path}")).await.unwrap();
        assert_eq!(policy["repository"]["url"], "/srv/restic/{host}");
        assert_eq!(policy["repository"]["password"], shown, "after {typed:?}");
        assert_eq!(
            policy["repository"]["env_keys"],
            json!(["RESTIC_COMPRESSION"])
        );
        assert_eq!(policy["schedules"][0]["cron"], "0 5 * * *");
    }
    let (_, html) = web.page(&path).await.unwrap();
    assert!(
        html.contains("one is set; leave empty to keep it"),
        "{html}"
    );
    assert!(!html.contains("s3cret"), "the password is never shown");

    let (status, location, _) = web
        .form(&format!("{path}/delete"), &[("csrf", &csrf)])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/policies?deleted=1");
    assert!(no_policies().await);

    // Done by admin, from the form, as the audit log says.
    let (_, audit) = admin.get("/api/v1/audit?action=policy.").await.unwrap();
    let text = audit.to_string();
    for action in ["policy.create", "policy.delete"] {
        assert!(text.contains(action), "{action} in {audit:#}");
    }
}
