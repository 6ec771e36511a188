//! The fleet in the web UI, in Debian's headless Chromium against the real
//! server: an enrolment token with labels made on the enrol page, the
//! dashboard filtered by label (counts, list, unconfigured hosts, shared
//! repositories) with a bulk "back up now" on exactly the filtered hosts
//! (simulated agents, `rm_testkit::fleet`, run the jobs), and the host page's effective
//! settings with where each comes from, its labels edited so its policy
//! no longer applies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::Locator;
use rm_testkit::fleet::{run_agent, FleetConfig, FleetHost, FleetStats};
use rm_testkit::{wait_until, Api, Browser, TestServer, ADMIN_PASSWORD};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Enrols a host named `name` with a token carrying `labels`; returns its
/// id and agent token.
async fn enrol(admin: &Api, name: &str, labels: &[(&str, &str)]) -> (String, String) {
    let token = admin.create_token_with_labels(labels).await.unwrap();
    let enrolled = admin
        .enroll(&token.token, Some(name), &format!("{name}.test"))
        .await
        .unwrap();
    (enrolled.host_id, enrolled.agent_token)
}

async fn create_policy(admin: &Api, body: Value) -> String {
    let (status, created) = admin.post("/api/v1/policies", body).await.unwrap();
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// The names of the hosts a policy applies to.
async fn coverage(admin: &Api, policy: &str) -> Vec<String> {
    let (status, hosts) = admin
        .get(&format!("/api/v1/policies/{policy}/hosts"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{hosts}");
    let mut names: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// A host's jobs of `kind`.
async fn jobs_of(admin: &Api, host: &str, kind: &str) -> Vec<Value> {
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={host}"))
        .await
        .unwrap();
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == kind)
        .cloned()
        .collect()
}

/// The rendered text of the element `css` (see [`Browser::text`]).
async fn text(browser: &Browser, css: &str) -> String {
    browser.text(css, WAIT).await.unwrap()
}

/// The page loaded nothing from another host, and the console's only
/// errors are the refused requests the test made on purpose (`expected`:
/// parts of those messages, one per refusal).
async fn assert_clean(browser: &Browser, origin: &str, expected: &[&str]) {
    for url in browser.requested_urls().await.unwrap() {
        assert!(url.starts_with(origin), "the page requested {url}");
    }
    let errors = browser.console_errors().await.unwrap();
    assert_eq!(errors.len(), expected.len(), "console errors: {errors:#?}");
    for (error, part) in errors.iter().zip(expected) {
        assert!(error.contains(part), "console errors: {errors:#?}");
    }
}

#[tokio::test]
async fn the_enrol_page_makes_a_token_whose_host_gets_the_labels() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let origin = server.url.clone();
    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.goto(&format!("{origin}/enroll")).await.unwrap();
    browser.wait_for("#enroll-form", WAIT).await.unwrap();

    // Bad labels: the message is next to the field, and no token is made.
    browser.fill("#enroll-name", "web-07").await.unwrap();
    browser.fill("#enroll-labels", "env=PROD").await.unwrap();
    browser.click("#enroll-create").await.unwrap();
    browser
        .wait_for_text(
            "#enroll-form [data-error-for=\"labels\"]",
            "`labels.env` value",
            WAIT,
        )
        .await
        .unwrap();
    browser.screenshot("enroll-labels-refused").await.unwrap();
    let (_, pending) = admin.get("/api/v1/enrollment-tokens").await.unwrap();
    assert_eq!(pending, json!([]), "a refused form makes no token");

    browser
        .fill("#enroll-labels", " env=prod , role=web")
        .await
        .unwrap();
    browser.click("#enroll-create").await.unwrap();
    browser
        .wait_for_text("#enroll-command", "--token rme.", WAIT)
        .await
        .unwrap();
    let command = text(&browser, "#enroll-command").await;
    let token = command
        .split_whitespace()
        .skip_while(|word| *word != "--token")
        .nth(1)
        .unwrap()
        .to_owned();
    browser.screenshot("enroll-labels").await.unwrap();
    // The pending token shows the labels its host will get.
    browser.goto(&format!("{origin}/enroll")).await.unwrap();
    browser
        .wait_for_text("#pending-tokens", "env=prod,role=web", WAIT)
        .await
        .unwrap();
    assert_clean(
        &browser,
        &origin,
        &["/enroll - Failed to load resource: the server responded with a status of 400"],
    )
    .await;

    // The host enrolled with the shown token carries the labels.
    let enrolled = server
        .anonymous()
        .enroll(&token, None, "web-07.test")
        .await
        .unwrap();
    let host = admin.host(&enrolled.host_id).await.unwrap();
    assert_eq!(host.name, "web-07");
    assert_eq!(
        host.labels,
        BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("role".to_owned(), "web".to_owned())
        ])
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_filters_by_label_and_backs_up_exactly_the_filtered_online_hosts() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let repos = tempfile::tempdir().unwrap();
    create_policy(
        &admin,
        json!({
            "name": "prod",
            "selector": {"env": "prod"},
            "repository": {"url": format!("{}/{{host}}", repos.path().display())},
            "schedules": [{"kind": "backup", "cron": "0 2 * * *", "params": {"paths": ["/etc"]}}],
        }),
    )
    .await;
    let (web1, web1_token) = enrol(&admin, "web1", &[("env", "prod"), ("role", "web")]).await;
    let (web2, _) = enrol(&admin, "web2", &[("env", "prod")]).await;
    let (lab1, lab1_token) = enrol(&admin, "lab1", &[("env", "lab")]).await;
    // Agents that heartbeat (the browser part outlasts a silent
    // connection's idle limit) and answer every job as done.
    let fleet = Arc::new(FleetConfig {
        ws_url: server.ws_url(),
        backup_log_lines: 1,
        restart_spread: Duration::from_secs(1),
    });
    let stats = Arc::new(FleetStats::default());
    let shutdown = CancellationToken::new();
    for (id, agent_token) in [(&web1, web1_token), (&lab1, lab1_token)] {
        let host = FleetHost {
            host_id: id.parse().unwrap(),
            agent_token,
        };
        tokio::spawn(run_agent(
            fleet.clone(),
            host,
            stats.clone(),
            shutdown.clone(),
        ));
    }
    wait_until(WAIT, "web1 and lab1 online", || async {
        admin.host(&web1).await.unwrap().online && admin.host(&lab1).await.unwrap().online
    })
    .await
    .unwrap();

    let origin = server.url.clone();
    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.goto(&format!("{origin}/")).await.unwrap();
    browser.wait_for("#hosts-table", WAIT).await.unwrap();
    // The whole fleet: lab1 has no policy and nothing of its own.
    browser
        .wait_for_text("#count-total", "3", WAIT)
        .await
        .unwrap();
    assert_eq!(text(&browser, "#count-unconfigured").await, "1");
    let lab_row = text(&browser, &format!("tr[data-host=\"{lab1}\"]")).await;
    assert!(
        lab_row.contains("env=lab") && lab_row.contains("unconfigured"),
        "{lab_row}"
    );
    let web_row = text(&browser, &format!("tr[data-host=\"{web1}\"]")).await;
    assert!(
        web_row.contains("env=prod")
            && web_row.contains("role=web")
            && web_row.contains("policy prod"),
        "{web_row}"
    );
    assert!(
        !web_row.contains("unconfigured") && !web_row.contains("shared"),
        "{web_row}"
    );

    // Filtered by env=prod: counts and list cover those two hosts only.
    browser
        .fill("#labels-filter-input", "env=prod")
        .await
        .unwrap();
    browser.click("#labels-filter-apply").await.unwrap();
    browser
        .wait_for_text("#fleet-filter", "env=prod", WAIT)
        .await
        .unwrap();
    assert_eq!(text(&browser, "#count-total").await, "2");
    assert_eq!(text(&browser, "#count-online").await, "1");
    assert_eq!(text(&browser, "#count-offline").await, "1");
    assert_eq!(text(&browser, "#count-unconfigured").await, "0");
    let shown = browser
        .client()
        .execute(
            "return [...document.querySelectorAll('#hosts-table tbody tr')].map((r) => r.dataset.host);",
            vec![],
        )
        .await
        .unwrap();
    let mut shown: Vec<String> = serde_json::from_value(shown).unwrap();
    shown.sort();
    let mut expected = vec![web1.clone(), web2.clone()];
    expected.sort();
    assert_eq!(shown, expected);
    let url = browser.client().current_url().await.unwrap();
    assert_eq!(url.query(), Some("labels=env%3Dprod"));
    browser.screenshot("dashboard-filtered").await.unwrap();

    // A bad filter says why and offers no bulk action.
    browser
        .fill("#labels-filter-input", "env=PROD")
        .await
        .unwrap();
    browser.click("#labels-filter-apply").await.unwrap();
    browser
        .wait_for_text("#labels-filter-error", "`labels.env` value", WAIT)
        .await
        .unwrap();
    assert!(browser
        .client()
        .find(Locator::Css("#bulk-backup"))
        .await
        .is_err());

    // Back up now on env=prod: a bad path is refused by its field first.
    browser
        .goto(&format!("{origin}/?labels=env%3Dprod"))
        .await
        .unwrap();
    browser.wait_for("#bulk-backup", WAIT).await.unwrap();
    browser.accept_confirms().await.unwrap();
    browser.fill("#bulk-paths", "relative").await.unwrap();
    browser.click("#bulk-backup-now").await.unwrap();
    browser
        .wait_for_text(
            "#bulk-backup [data-error-for=\"paths\"]",
            "`params.paths[0]`",
            WAIT,
        )
        .await
        .unwrap();
    assert!(jobs_of(&admin, &web1, "backup").await.is_empty());
    browser.fill("#bulk-paths", "/etc").await.unwrap();
    browser.click("#bulk-backup-now").await.unwrap();
    browser
        .wait_for_text("#bulk-summary", "1 job started, 1 host skipped.", WAIT)
        .await
        .unwrap();
    assert_eq!(text(&browser, "#bulk-started").await, "backup on web1");
    assert_eq!(text(&browser, "#bulk-skipped").await, "web2: offline");
    assert_eq!(
        browser.confirmations().await.unwrap(),
        vec!["Back up the 2 hosts with env=prod now? Offline hosts are skipped."; 2]
    );
    browser.screenshot("dashboard-bulk-backup").await.unwrap();

    // One backup, on web1 only, run by its agent (after the init its new
    // repository needed).
    let backups = jobs_of(&admin, &web1, "backup").await;
    assert_eq!(backups.len(), 1, "{backups:#?}");
    assert_eq!(backups[0]["params"], json!({"paths": ["/etc"]}));
    assert_eq!(backups[0]["trigger"], "manual");
    assert!(jobs_of(&admin, &web2, "backup").await.is_empty());
    assert!(jobs_of(&admin, &lab1, "backup").await.is_empty());
    let backup = admin
        .finished_job(backups[0]["id"].as_str().unwrap(), WAIT)
        .await
        .unwrap();
    assert_eq!(backup["status"], "succeeded", "{backup:#}");
    let init = &jobs_of(&admin, &web1, "init").await[0];
    let at =
        |v: &Value| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(v.clone()).unwrap();
    assert!(
        at(&init["finished_at"]) <= at(&backup["started_at"]),
        "the backup waited for the init: {init:#} {backup:#}"
    );

    // The bulk form needs the page's CSRF token like every UI action: a
    // request with only the session cookie starts nothing.
    let response = rm_testkit::http::client()
        .post(format!("{origin}/bulk"))
        .header("cookie", format!("rm_session={}", admin.token().unwrap()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("labels=env%3Dprod&kind=check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(jobs_of(&admin, &web1, "check").await.is_empty());

    assert_clean(
        &browser,
        &origin,
        &[
            "/?labels=env%3DPROD - Failed to load resource: the server responded with a status of 400",
            "/bulk - Failed to load resource: the server responded with a status of 400",
        ],
    )
    .await;
    browser.close().await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn the_host_page_shows_where_each_setting_comes_from_and_edits_labels() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let repos = tempfile::tempdir().unwrap();
    let policy = create_policy(
        &admin,
        json!({
            "name": "nightly",
            "selector": {"env": "prod"},
            "repository": {"url": format!("{}/shared", repos.path().display())},
            "schedules": [{"kind": "backup", "cron": "0 2 * * *", "params": {"paths": ["/etc"]}}],
            "freshness_seconds": 7200,
        }),
    )
    .await;
    // Matches the same hosts at a lower priority: outranked.
    create_policy(
        &admin,
        json!({"name": "fallback", "selector": {"env": "prod"}, "priority": -5}),
    )
    .await;
    let (a1, _) = enrol(&admin, "a1", &[("env", "prod")]).await;
    let (a2, _) = enrol(&admin, "a2", &[("env", "prod")]).await;
    assert_eq!(coverage(&admin, &policy).await, ["a1", "a2"]);

    let origin = server.url.clone();
    let page = format!("{origin}/hosts/{a1}");
    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    // The dashboard says the two hosts share a repository.
    browser.goto(&format!("{origin}/")).await.unwrap();
    browser
        .wait_for_text(
            &format!("tr[data-host=\"{a2}\"] .shared"),
            "shared with 1",
            WAIT,
        )
        .await
        .unwrap();

    browser.goto(&page).await.unwrap();
    browser
        .wait_for_text("#host-labels", "env=prod", WAIT)
        .await
        .unwrap();
    let policy_text = text(&browser, "#effective-policy").await;
    assert!(
        policy_text.starts_with("nightly")
            && policy_text.ends_with("Also matching, outranked: fallback"),
        "{policy_text}"
    );
    let repository = text(&browser, "#effective-repository").await;
    assert!(
        repository.contains(&format!(
            "{}/shared — from policy nightly",
            repos.path().display()
        )) && repository.contains("Shared with 1 other host: a2"),
        "{repository}"
    );
    assert_eq!(
        text(&browser, "#effective-freshness").await,
        "a backup at least every 2 h — from policy nightly"
    );
    assert!(text(&browser, "#effective-protected")
        .await
        .starts_with("no"));
    assert_eq!(
        text(&browser, "#schedules-table .schedule-source").await,
        "from policy nightly"
    );
    assert!(browser
        .client()
        .find(Locator::Css("#repository-use-policy"))
        .await
        .is_err());
    browser
        .client()
        .execute(
            "document.getElementById('effective').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    browser.screenshot("host-effective-settings").await.unwrap();

    // A repository of its own wins; removing it goes back to the policy's.
    admin
        .set_repository(&a1, &format!("{}/own", repos.path().display()), "pw")
        .await
        .unwrap();
    browser.goto(&page).await.unwrap();
    browser
        .wait_for_text("#effective-repository", "— own", WAIT)
        .await
        .unwrap();
    browser.accept_confirms().await.unwrap();
    browser.click("#repository-use-policy").await.unwrap();
    browser
        .wait_for_text("#effective-repository", "from policy nightly", WAIT)
        .await
        .unwrap();
    assert_eq!(
        admin.host(&a1).await.unwrap().repository_source.as_deref(),
        Some("policy")
    );

    // Bad labels: refused by their field, nothing changes.
    browser.wait_for("#settings-form", WAIT).await.unwrap();
    browser
        .fill("#settings-labels", "env=prod,Team=ops")
        .await
        .unwrap();
    browser.click("#settings-save").await.unwrap();
    browser
        .wait_for_text(
            "#settings-form [data-error-for=\"labels\"]",
            "`labels` key \"Team\"",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        admin.host(&a1).await.unwrap().labels,
        BTreeMap::from([("env".to_owned(), "prod".to_owned())])
    );

    // New labels and an own freshness: the policy no longer applies, takes
    // back what it gave, and the host is unconfigured.
    browser
        .fill("#settings-labels", "env=lab, team=ops")
        .await
        .unwrap();
    browser.fill("#settings-freshness", "3600").await.unwrap();
    browser.click("#settings-save").await.unwrap();
    browser
        .wait_for_text("#host-labels", "team=ops", WAIT)
        .await
        .unwrap();
    assert!(text(&browser, "#effective-policy")
        .await
        .contains("none matches"));
    assert_eq!(
        text(&browser, "#effective-freshness").await,
        "a backup at least every 1 h — own"
    );
    assert!(text(&browser, "#effective-unconfigured")
        .await
        .contains("unconfigured"));
    browser
        .client()
        .execute(
            "document.getElementById('effective').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    browser.screenshot("host-labels-edited").await.unwrap();
    assert_eq!(coverage(&admin, &policy).await, ["a2"]);
    let host = admin.host(&a1).await.unwrap();
    assert_eq!(host.policy_id, None);
    assert_eq!(host.freshness_seconds, 3600);
    assert_eq!(host.freshness_source, "host");
    assert!(host.unconfigured);
    let (_, schedules) = admin
        .get(&format!("/api/v1/hosts/{a1}/schedules"))
        .await
        .unwrap();
    assert_eq!(schedules, json!([]));

    browser.goto(&format!("{origin}/")).await.unwrap();
    browser
        .wait_for_text("#count-unconfigured", "1", WAIT)
        .await
        .unwrap();
    assert_clean(
        &browser,
        &origin,
        &["/settings - Failed to load resource: the server responded with a status of 400"],
    )
    .await;
    browser.close().await.unwrap();
}
