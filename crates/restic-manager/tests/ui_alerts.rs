//! Alerts in the web UI, in Debian's headless Chromium against the real
//! server: a host given a one-minute offline threshold and freshness on
//! its page (its agent never runs) fires `host_offline` and
//! `backup_stale`, decided by the server alone; they lead the dashboard
//! (only under a label filter that matches the host), are acknowledged
//! there, are listed on /alerts by state and kind and on the host page; a
//! silence is added by the form and ended with "End now"; bad input is
//! refused naming the field. The API agrees with every page. One test
//! function, so the wait for the alerts to fire is paid once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rm_testkit::{wait_until, Api, Browser, TestServer, ADMIN_PASSWORD};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
/// The shortest thresholds the server takes (60 s), plus its evaluator's
/// round.
const FIRE_LIMIT: Duration = Duration::from_secs(150);

/// Enrols a host named `name` with a token carrying `labels`; returns its id.
async fn enrol(admin: &Api, name: &str, labels: &[(&str, &str)]) -> String {
    let token = admin.create_token_with_labels(labels).await.unwrap();
    admin
        .enroll(&token.token, Some(name), &format!("{name}.test"))
        .await
        .unwrap()
        .host_id
}

async fn get(admin: &Api, path: &str) -> Value {
    let (status, body) = admin.get(path).await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The rendered text of the element `css` (see [`Browser::text`]).
async fn text(browser: &Browser, css: &str) -> String {
    browser.text(css, WAIT).await.unwrap()
}

/// How many rows the element `css` has in its table bodies.
async fn rows(browser: &Browser, css: &str) -> u64 {
    browser.table_rows(css).await.unwrap()
}

#[tokio::test]
async fn firing_alerts_lead_the_dashboard_and_are_acknowledged_silenced_and_listed() {
    let server = TestServer::start_with(|config| config.alert_grace = Duration::ZERO)
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let origin = server.url.clone();
    let web = enrol(&admin, "web-01", &[("env", "prod")]).await;
    let db = enrol(&admin, "db-01", &[("env", "dev")]).await;
    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();

    // Nothing fires yet: the dashboard says so in one line, and the
    // navigation shows no count.
    browser.goto(&format!("{origin}/")).await.unwrap();
    assert_eq!(text(&browser, "#count-alerts").await, "0");
    // Hidden, so its text is read as the script set it (innerText of a
    // hidden element is its textContent).
    wait_until(WAIT, "the firing count in the navigation", || async {
        text(&browser, "#nav-alerts-count").await == "0"
    })
    .await
    .unwrap();
    let hidden = browser
        .client()
        .execute(
            "return document.getElementById('nav-alerts-count').hidden;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(hidden, true, "no badge while nothing fires");
    assert!(text(&browser, "#attention-none")
        .await
        .contains("No alert is firing"));

    // The host page sets web-01's thresholds to a minute; a bad one is
    // refused next to its field and changes nothing.
    browser
        .goto(&format!("{origin}/hosts/{web}"))
        .await
        .unwrap();
    assert!(text(&browser, "#effective-offline")
        .await
        .contains("1 h — the default"));
    browser.fill("#settings-offline", "1h").await.unwrap();
    browser.click("#settings-save").await.unwrap();
    browser
        .wait_for_text(
            "#settings-form [data-error-for=\"offline_seconds\"]",
            "`offline_seconds` must be a whole number",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        get(&admin, &format!("/api/v1/hosts/{web}")).await["offline_source"],
        "default"
    );
    browser.fill("#settings-offline", "60").await.unwrap();
    browser.fill("#settings-freshness", "60").await.unwrap();
    browser.click("#settings-save").await.unwrap();
    browser
        .wait_for_text("#effective-offline", "1 min — own", WAIT)
        .await
        .unwrap();
    let host = get(&admin, &format!("/api/v1/hosts/{web}")).await;
    assert_eq!(host["offline_seconds"], 60, "{host}");
    assert_eq!(host["offline_source"], "host", "{host}");
    assert_eq!(host["freshness_seconds"], 60, "{host}");
    let typed = browser
        .client()
        .execute(
            "return document.getElementById('settings-offline').value;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(typed, "60", "the form shows the saved threshold");

    // A silence from the form, while the alerts are on their way: a bad
    // selector is refused naming it; a good one is listed, the API agrees.
    browser.goto(&format!("{origin}/alerts")).await.unwrap();
    assert!(text(&browser, "#silences-none")
        .await
        .contains("No silence"));
    browser.fill("#silence-selector", "env=PROD").await.unwrap();
    browser
        .fill("#silence-reason", "maintenance of the web servers")
        .await
        .unwrap();
    browser.click("#silence-add").await.unwrap();
    browser
        .wait_for_text(
            "#silence-form [data-error-for=\"selector\"]",
            "`selector",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(get(&admin, "/api/v1/silences").await, json!([]));
    browser.fill("#silence-selector", "env=prod").await.unwrap();
    browser.fill("#silence-hours", "3").await.unwrap();
    browser.click("#silence-add").await.unwrap();
    browser
        .wait_for_text("#silences-table", "maintenance of the web servers", WAIT)
        .await
        .unwrap();
    assert!(text(&browser, "#silences-table").await.contains("env=prod"));
    let silences = get(&admin, "/api/v1/silences").await;
    let silence = &silences.as_array().unwrap()[0];
    assert_eq!(silence["selector"], json!({"env": "prod"}), "{silences}");
    assert_eq!(silence["created_by"], "admin");
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(silence["until"].clone()).unwrap();
    let hours = (until - chrono::Utc::now()).num_minutes();
    assert!((170..=180).contains(&hours), "ends in 3 h: {until}");
    browser.screenshot("alerts-silence-listed").await.unwrap();
    browser.accept_confirms().await.unwrap();
    browser.click(".silence-end").await.unwrap();
    browser
        .wait_for_text("#silences-none", "No silence", WAIT)
        .await
        .unwrap();
    assert_eq!(get(&admin, "/api/v1/silences").await, json!([]));
    // Ended early, kept as history.
    let all = get(&admin, "/api/v1/silences?all=true").await;
    assert_eq!(all[0]["active"], false, "{all}");

    // A bad filter on the alerts page names its field; the page renders.
    browser
        .goto(&format!("{origin}/alerts?labels=env"))
        .await
        .unwrap();
    assert!(text(&browser, "#alerts-filter-error")
        .await
        .contains("`labels"));
    browser
        .goto(&format!("{origin}/alerts?kind=disk_full"))
        .await
        .unwrap();
    assert!(text(&browser, "#alerts-filter-error")
        .await
        .contains("`kind`"));
    browser.wait_for("#silence-form", WAIT).await.unwrap();

    // Both alerts fire, decided by the server alone.
    wait_until(FIRE_LIMIT, "web-01's two alerts to fire", || async {
        get(
            &admin,
            &format!("/api/v1/alerts?state=firing&host_id={web}"),
        )
        .await
        .as_array()
        .unwrap()
        .len()
            == 2
    })
    .await
    .unwrap();
    let firing = get(&admin, "/api/v1/alerts?state=firing").await;
    let firing = firing.as_array().unwrap();
    assert_eq!(firing.len(), 2, "only web-01's: {firing:?}");
    let offline = firing.iter().find(|a| a["kind"] == "host_offline").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // They lead the dashboard, with the fleet's filter or one matching
    // web-01; another filter shows none.
    browser.goto(&format!("{origin}/")).await.unwrap();
    assert_eq!(text(&browser, "#count-alerts").await, "2");
    browser
        .wait_for_text("#nav-alerts-count", "2", WAIT)
        .await
        .unwrap();
    let attention = text(&browser, "#attention-alerts").await;
    for part in ["host_offline", "backup_stale", "web-01"] {
        assert!(attention.contains(part), "{attention}");
    }
    assert_eq!(rows(&browser, "#attention-alerts").await, 2);
    browser
        .goto(&format!("{origin}/?labels=env%3Ddev"))
        .await
        .unwrap();
    assert_eq!(text(&browser, "#count-alerts").await, "0");
    browser.wait_for("#attention-none", WAIT).await.unwrap();
    browser
        .goto(&format!("{origin}/?labels=env%3Dprod"))
        .await
        .unwrap();
    assert_eq!(text(&browser, "#count-alerts").await, "2");
    assert_eq!(rows(&browser, "#attention-alerts").await, 2);
    browser
        .screenshot("alerts-dashboard-attention")
        .await
        .unwrap();

    // Acknowledged from the dashboard: said so, and the API agrees.
    let row = format!("#attention-alerts tr[data-alert=\"{offline}\"]");
    browser.click(&format!("{row} .alert-ack")).await.unwrap();
    browser
        .wait_for_text(
            &format!("{row} .alert-state"),
            "acknowledged by admin",
            WAIT,
        )
        .await
        .unwrap();
    let alert = get(&admin, &format!("/api/v1/alerts/{offline}")).await;
    assert_eq!(alert["acknowledged_by"], "admin", "{alert}");
    assert_eq!(alert["state"], "firing", "{alert}");
    assert_eq!(
        browser
            .client()
            .execute(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![json!(format!("{row} .alert-ack"))],
            )
            .await
            .unwrap(),
        0,
        "no second Acknowledge"
    );

    // The alerts page: firing lists both, acknowledged the one, a kind
    // filter the other; nothing resolved yet.
    browser.goto(&format!("{origin}/alerts")).await.unwrap();
    assert_eq!(rows(&browser, "#alerts-list").await, 2);
    browser
        .goto(&format!("{origin}/alerts?state=acknowledged"))
        .await
        .unwrap();
    assert_eq!(rows(&browser, "#alerts-list").await, 1);
    assert!(text(&browser, "#alerts-list")
        .await
        .contains("host_offline"));
    browser.goto(&format!("{origin}/alerts")).await.unwrap();
    browser.wait_for("#alerts-kind", WAIT).await.unwrap();
    browser
        .client()
        .execute(
            "document.getElementById('alerts-kind').value = 'backup_stale';",
            Vec::new(),
        )
        .await
        .unwrap();
    browser.click("#alerts-filter-apply").await.unwrap();
    browser
        .wait_for_text("#alerts-filter-clear", "Clear", WAIT)
        .await
        .unwrap();
    assert_eq!(rows(&browser, "#alerts-list").await, 1);
    let listed = text(&browser, "#alerts-list").await;
    assert!(
        listed.contains("backup_stale") && listed.contains("web-01"),
        "{listed}"
    );
    browser.wait_for(".alert-ack", WAIT).await.unwrap();
    browser
        .goto(&format!("{origin}/alerts?state=resolved"))
        .await
        .unwrap();
    browser.wait_for("#alerts-none", WAIT).await.unwrap();
    browser.screenshot("alerts-page").await.unwrap();

    // The host page shows its firing alerts; db-01's shows none.
    browser
        .goto(&format!("{origin}/hosts/{web}"))
        .await
        .unwrap();
    assert_eq!(rows(&browser, "#host-alerts").await, 2);
    assert!(text(&browser, "#host-alerts")
        .await
        .contains("acknowledged by admin"));
    browser.screenshot("alerts-host-page").await.unwrap();
    browser.goto(&format!("{origin}/hosts/{db}")).await.unwrap();
    browser.wait_for("#effective-offline", WAIT).await.unwrap();
    assert!(browser
        .client()
        .find(fantoccini::Locator::Css("#host-alerts"))
        .await
        .is_err());

    // Nothing came from another host (the badge's count included), and
    // the console's only errors are the refusals asked for on purpose.
    for url in browser.requested_urls().await.unwrap() {
        assert!(url.starts_with(&origin), "the page requested {url}");
    }
    let errors = browser.console_errors().await.unwrap();
    assert!(
        errors.iter().all(|e| e.contains("status of 400")),
        "console errors: {errors:#?}"
    );

    browser.close().await.unwrap();
}
