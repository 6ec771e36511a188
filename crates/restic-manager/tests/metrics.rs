//! `/metrics` end to end: the per-host series after a real backup by the
//! real agent and restic, a rename to a name with a quote and a backslash,
//! the agent going away and the host being deleted; the page read by a
//! strict parser every time (a malformed page fails the test); and the
//! `--metrics-token` guard, set in the server's settings and through the
//! real binary's flags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rm_server::MetricsToken;
use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::make_tree;
use rm_testkit::prometheus::Page;
use rm_testkit::{wait_until, ServerProcess, TestServer};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "metrics-repository-password";
const LIMIT: Duration = Duration::from_secs(30);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` at `url` (with `token` as the bearer, if any): the
/// status, and the page when it is 200 (read strictly).
async fn scrape(url: &str, token: Option<&str>) -> (u16, Option<Page>, reqwest::header::HeaderMap) {
    let mut request = rm_testkit::http::client().get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let page = (status == 200).then(|| {
        assert_eq!(headers[reqwest::header::CONTENT_TYPE], CONTENT_TYPE);
        Page::parse(&text).unwrap_or_else(|e| panic!("malformed page: {e:#}\n{text}"))
    });
    (status, page, headers)
}

async fn page(url: &str) -> Page {
    let (status, page, _) = scrape(url, None).await;
    assert_eq!(status, 200);
    page.unwrap()
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn per_host_series_follow_a_backup_a_rename_and_the_agent_going_away() {
    let host = Host::start(
        Path::new(BIN),
        "metrics-e2e",
        &rm_testkit::restic::binary(),
        &[],
    )
    .await;
    let url = host.server.url.clone();
    let id = host.id.clone();
    let labels =
        |name: &str| [("host_id", id.as_str()), ("host", name)].map(|(k, v)| (k, v.to_owned()));
    let value = |page: &Page, series: &str, name: &str| {
        let l = labels(name);
        page.value(
            series,
            &[(l[0].0, l[0].1.as_str()), (l[1].0, l[1].1.as_str())],
        )
    };

    // Enrolled and online, never backed up.
    let before = page(&url).await;
    assert_eq!(value(&before, "rm_host_online", "metrics-e2e"), Some(1.0));
    assert_eq!(
        value(&before, "rm_host_protected", "metrics-e2e"),
        Some(0.0)
    );
    for series in [
        "rm_host_last_backup_success_timestamp_seconds",
        "rm_host_last_backup_duration_seconds",
        "rm_host_last_backup_size_bytes",
    ] {
        assert_eq!(value(&before, series, "metrics-e2e"), None, "{series}");
    }
    for kind in [
        "backup_stale",
        "job_failed",
        "host_offline",
        "check_failed",
        "drill_failed",
    ] {
        assert_eq!(
            before.value("rm_alerts_firing", &[("kind", kind)]),
            Some(0.0),
            "{kind}"
        );
    }
    assert_eq!(before.types["rm_host_online"], "gauge");
    assert_eq!(before.value("rm_agents_connected", &[]), Some(1.0));

    // A real backup.
    succeeded(&host.set_local_repository(PASSWORD).await);
    let src = host.scratch().join("src");
    make_tree(&src);
    let job = host
        .run("backup", json!({"paths": [src.display().to_string()]}))
        .await;
    succeeded(&job);
    let after = page(&url).await;
    let finished = time(&job["finished_at"]);
    let started = time(&job["started_at"]);
    let at = value(
        &after,
        "rm_host_last_backup_success_timestamp_seconds",
        "metrics-e2e",
    )
    .unwrap();
    assert!(
        (at - finished.timestamp_millis() as f64 / 1000.0).abs() < 1e-6,
        "{at} vs {finished}"
    );
    let took = value(
        &after,
        "rm_host_last_backup_duration_seconds",
        "metrics-e2e",
    )
    .unwrap();
    let expected = (finished - started).num_milliseconds() as f64 / 1000.0;
    assert!((took - expected).abs() < 1e-6, "{took} vs {expected}");
    let processed = job["stats"]["total_bytes_processed"].as_f64().unwrap();
    assert!(processed > 0.0, "{job:#}");
    assert_eq!(
        value(&after, "rm_host_last_backup_size_bytes", "metrics-e2e"),
        Some(processed)
    );
    assert_eq!(
        value(&after, "rm_host_last_backup_added_bytes", "metrics-e2e"),
        job["stats"]["data_added"].as_f64()
    );
    assert_eq!(value(&after, "rm_host_protected", "metrics-e2e"), Some(1.0));

    // A name with a quote and a backslash (what names may hold; control
    // characters are refused) comes back exactly, and the page still reads.
    let name = "web \"prod\" \\ east";
    let (status, reply) = host
        .admin
        .patch(&format!("/api/v1/hosts/{id}"), json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    let (_, raw) = host.server.anonymous().page("/metrics").await.unwrap();
    assert!(
        raw.contains(&format!(
            "rm_host_online{{host_id=\"{id}\",host=\"web \\\"prod\\\" \\\\ east\"}} 1\n"
        )),
        "{raw}"
    );
    let renamed = page(&url).await;
    assert_eq!(value(&renamed, "rm_host_online", name), Some(1.0));
    assert_eq!(value(&renamed, "rm_host_online", "metrics-e2e"), None);
    assert_eq!(value(&renamed, "rm_host_protected", name), Some(1.0));

    // The agent goes away: offline, still protected by its backup.
    host.agent.process.terminate(LIMIT).await.unwrap();
    wait_until(LIMIT, "rm_host_online to drop to 0", || async {
        value(&page(&url).await, "rm_host_online", name) == Some(0.0)
    })
    .await
    .unwrap();
    let offline = page(&url).await;
    assert_eq!(value(&offline, "rm_host_protected", name), Some(1.0));
    assert_eq!(offline.value("rm_agents_connected", &[]), Some(0.0));

    // Deleted: its series are gone.
    let (status, _) = host
        .admin
        .delete(&format!("/api/v1/hosts/{id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let gone = page(&url).await;
    assert!(
        !gone
            .samples
            .iter()
            .any(|s| s.labels.get("host_id") == Some(&id)),
        "{:?}",
        gone.samples
    );
}

#[tokio::test]
async fn the_metrics_token_guards_the_page() {
    let token = "scrape-Secret-1";
    let server =
        TestServer::start_with(|c| c.metrics_token = Some(MetricsToken::new(token).unwrap()))
            .await
            .unwrap();
    let (status, _, headers) = scrape(&server.url, None).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"metrics\"");
    for wrong in ["scrape-Secret-2", "scrape-Secret-1x", "x"] {
        let (status, _, _) = scrape(&server.url, Some(wrong)).await;
        assert_eq!(status, 401, "{wrong}");
    }
    // Another scheme with the right secret is no bearer token.
    let basic = rm_testkit::http::client()
        .get(format!("{}/metrics", server.url))
        .header("Authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let (status, page, _) = scrape(&server.url, Some(token)).await;
    assert_eq!(status, 200);
    assert!(page.unwrap().value("rm_store_writable", &[]) == Some(1.0));
    // The rest of the monitoring endpoints stay open.
    let (status, _) = server.anonymous().page("/healthz").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_a_token_the_page_is_open() {
    let server = TestServer::start().await.unwrap();
    let (status, page, _) = scrape(&server.url, None).await;
    assert_eq!(status, 200);
    let page = page.unwrap();
    // A bearer token of any kind is ignored, not refused.
    let (status, _, _) = scrape(&server.url, Some("anything")).await;
    assert_eq!(status, 200);
    // Every series the server had before prometheus-client, same names
    // and types.
    for (family, kind) in [
        ("rm_build_info", "gauge"),
        ("rm_agents_connected", "gauge"),
        ("rm_hosts", "gauge"),
        ("rm_hosts_not_backed_up", "gauge"),
        ("rm_hosts_unconfigured", "gauge"),
        ("rm_store_writable", "gauge"),
        ("rm_store_write_failures_total", "counter"),
        ("rm_login_password_checks_total", "counter"),
        ("rm_login_throttled_total", "counter"),
        ("rm_bearer_auth_throttled_total", "counter"),
        ("rm_agent_hellos_total", "counter"),
        ("rm_agent_frame_handling_seconds", "histogram"),
        ("rm_last_seen_flush_seconds", "histogram"),
        ("rm_last_seen_written_total", "counter"),
        ("rm_alerts_firing", "gauge"),
        ("rm_notifications_delivered_total", "counter"),
        ("rm_notifications_failed_total", "counter"),
        ("rm_notification_channel_failing", "gauge"),
        ("rm_host_online", "gauge"),
        ("rm_host_protected", "gauge"),
        ("rm_host_last_backup_success_timestamp_seconds", "gauge"),
        ("rm_host_last_backup_duration_seconds", "gauge"),
        ("rm_host_last_backup_size_bytes", "gauge"),
        ("rm_host_last_backup_added_bytes", "gauge"),
    ] {
        assert_eq!(
            page.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert_eq!(page.value("rm_hosts", &[("state", "online")]), Some(0.0));
    the_docs_name_exactly_these_series(&page);
}

/// Every `rm_…` name in `text`.
fn series_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("rm_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not the tail of a longer word (`perm_x`).
        let before = rest[..at].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// docs/monitoring.md documents every family the page has, and it, the
/// alert rules and the Grafana dashboard (valid JSON) use no name the page
/// lacks.
fn the_docs_name_exactly_these_series(page: &Page) {
    let doc = include_str!("../../../docs/monitoring.md");
    let rules = include_str!("../../../docs/prometheus-alerts.yml");
    let dashboard = include_str!("../../../docs/grafana-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(dashboard).unwrap();
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let known = |name: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| page.types.get(*b).map(String::as_str) == Some("histogram"))
            .unwrap_or(name);
        page.types.contains_key(base)
    };
    for (file, text) in [
        ("docs/monitoring.md", doc),
        ("docs/prometheus-alerts.yml", rules),
        ("docs/grafana-dashboard.json", dashboard),
    ] {
        let names = series_names(text);
        assert!(!names.is_empty(), "{file} names no series");
        for name in names {
            assert!(known(&name), "{file} names `{name}`, which /metrics lacks");
        }
    }
    let documented = series_names(doc);
    for family in page.types.keys() {
        assert!(
            documented.contains(family),
            "docs/monitoring.md does not document `{family}`"
        );
    }
}

#[tokio::test]
async fn the_server_takes_its_token_from_a_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics-token");
    std::fs::write(&file, "from-a-file-42\n").unwrap();
    let file_arg = file.display().to_string();
    let server = ServerProcess::start(Path::new(BIN), &["--metrics-token-file", &file_arg])
        .await
        .unwrap();
    let (status, _, _) = scrape(&server.url, None).await;
    assert_eq!(status, 401);
    let (status, page, _) = scrape(&server.url, Some("from-a-file-42")).await;
    assert_eq!(status, 200);
    assert!(page.is_some());
    assert!(
        !server.log().contains("from-a-file-42"),
        "the token is never logged"
    );

    // A token that cannot work stops the server before it starts, naming
    // the flag and not the value.
    let output = tokio::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--metrics-token", "two words"])
        .env("RM_ADMIN_PASSWORD", "unused-password-1")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--metrics-token may hold only"), "{stderr}");
    assert!(!stderr.contains("two words"), "{stderr}");
}
