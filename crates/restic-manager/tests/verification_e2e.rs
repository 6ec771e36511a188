//! Rotating verification end to end (DESIGN §10, docs/verification.md):
//! the real server, real agents (the `restic-manager` binary) and the real
//! restic, behind a wrapper that logs each command line so the test sees
//! which `--read-data-subset` and `--limit-download` the agent asked for.
//!
//! Three rotating checks with `cycle: 3` read subsets 1/3, 2/3 and 3/3 and
//! reach 100 % coverage; a second host on the same repository shares the
//! record; a corrupted pack fails its subset, which keeps its place and
//! fires `check_failed`; and the agent's own cursor (for runs while the
//! server is away) survives an agent restart. In headless Chromium, a
//! rotating check schedule is made from the host page's form and the page
//! shows the coverage and the full cycle it makes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_testkit::e2e::{succeeded, Host, JOB_LIMIT};
use rm_testkit::fixtures::{make_tree, noise};
use rm_testkit::restic::{recorded_checks, recording};
use rm_testkit::wait_until;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "verification-e2e-password";

/// A host whose agent runs the real restic through the recording wrapper,
/// with a local repository holding one backup. Returns the host, the
/// wrapper's log and the source folder.
async fn host_with_backup(name: &str, wrappers: &Path) -> (Host, PathBuf, PathBuf) {
    let (restic, log) = recording(&rm_testkit::restic::binary(), wrappers);
    let host = Host::start(Path::new(BIN), name, &restic, &[]).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let src = host.scratch().join("src");
    make_tree(&src);
    // Random data in several files, so there are data packs to read.
    for i in 0..4u64 {
        std::fs::write(src.join(format!("random-{i}.bin")), noise(1 << 20, i)).unwrap();
    }
    succeeded(
        &host
            .run("backup", json!({"paths": [src.display().to_string()]}))
            .await,
    );
    (host, log, src)
}

/// `GET /api/v1/hosts/{id}/verification` as the admin sees it.
async fn verification(host: &Host, id: &str) -> Value {
    let (status, body) = host
        .admin
        .get(&format!("/api/v1/hosts/{id}/verification"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The subset (`n/N`) a logged `restic check` command line read.
fn subset_of(line: &str) -> String {
    line.split(' ')
        .find_map(|arg| arg.strip_prefix("--read-data-subset="))
        .unwrap_or_else(|| panic!("a check without a subset: {line}"))
        .to_owned()
}

#[tokio::test]
async fn three_rotating_checks_of_a_cycle_of_three_read_everything_once() {
    let wrappers = tempfile::tempdir().unwrap();
    let (host, log, _src) = host_with_backup("rotating", wrappers.path()).await;

    // Nothing yet: a clear, empty answer.
    let empty = verification(&host, &host.id).await;
    assert_eq!(empty["cycle"], Value::Null, "{empty:#}");
    assert_eq!(empty["subsets_done"], json!([]));
    assert_eq!(empty["coverage"], 0.0);
    // An unknown host is a 404; bad rotating params a 400 naming the field.
    let (status, _) = host
        .admin
        .get("/api/v1/hosts/01J00000000000000000000000/verification")
        .await
        .unwrap();
    assert_eq!(status, 404);
    for (params, field) in [
        (json!({"read_data": "rotate", "cycle": 0}), "params.cycle"),
        (
            json!({"read_data": "rotate", "read_data_subset": "1/3"}),
            "params.read_data",
        ),
        (json!({"read_data": "everything"}), "params.read_data"),
    ] {
        let (status, body) = host.post_job("check", params).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }

    let params = json!({"read_data": "rotate", "cycle": 3, "limit_download_kib": 40960});
    let mut started = Vec::new();
    for n in 1..=3 {
        let job = host.run("check", params.clone()).await;
        succeeded(&job);
        assert_eq!(job["stats"]["subset"], n, "{job:#}");
        assert_eq!(job["stats"]["cycle"], 3, "{job:#}");
        assert_eq!(job["stats"]["read_data_subset"], format!("{n}/3"));
        started.push(job);
    }
    // restic was asked for each subset in turn, held to the job's limit.
    let checks = recorded_checks(&log);
    let subsets: Vec<String> = checks.iter().map(|c| subset_of(c)).collect();
    assert_eq!(subsets, ["1/3", "2/3", "3/3"], "{checks:#?}");
    for check in &checks {
        assert!(
            check.split(' ').any(|a| a == "--limit-download=40960"),
            "the bandwidth limit did not reach restic: {check}"
        );
    }

    let done = verification(&host, &host.id).await;
    assert_eq!(done["cycle"], 3, "{done:#}");
    assert_eq!(done["subsets_done"], json!([1, 2, 3]));
    assert_eq!(done["coverage"], 1.0);
    assert_eq!(done["coverage_percent"], 100);
    assert_eq!(done["last_error"], Value::Null);
    assert_eq!(done["cycle_started_at"], started[0]["finished_at"]);
    assert_eq!(
        done["summary"],
        "100 % of the data read and verified this cycle, full cycle every 3 runs"
    );
    let page = host.page(&format!("/hosts/{}", host.id)).await;
    assert!(
        page.contains("100 % of the data read and verified this cycle, full cycle every 3 runs"),
        "the host page does not show the coverage"
    );

    // A second host on the same repository sees the same record, and its
    // rotating check carries on the shared cycle (a new one, as this one
    // is complete): the repository is counted once, not per host.
    let other = host
        .server
        .enrolled_agent(Path::new(BIN), "rotating-too", &host.restic, &[])
        .await
        .unwrap();
    let repo = host.scratch().join("repo").display().to_string();
    host.admin
        .set_repository(&other.host_id, &repo, PASSWORD)
        .await
        .unwrap();
    let jobs = host.admin.host_jobs(&other.host_id, 1).await.unwrap();
    succeeded(
        &host
            .admin
            .finished_job(jobs[0]["id"].as_str().unwrap(), JOB_LIMIT)
            .await
            .unwrap(),
    );
    let shared = verification(&host, &other.host_id).await;
    assert_eq!(shared["subsets_done"], json!([1, 2, 3]), "{shared:#}");
    assert_eq!(shared["repository"], done["repository"]);
    let id = host
        .admin
        .start_job(&other.host_id, "check", params.clone())
        .await
        .unwrap();
    let job = host.admin.finished_job(&id, JOB_LIMIT).await.unwrap();
    succeeded(&job);
    assert_eq!(job["stats"]["read_data_subset"], "1/3", "{job:#}");
    for id in [&host.id, &other.host_id] {
        let view = verification(&host, id).await;
        assert_eq!(view["subsets_done"], json!([1]), "{view:#}");
        assert_eq!(view["coverage_percent"], 33);
        assert_eq!(view["next_subset"], 2);
    }
    other
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    host.stop().await;
}

/// A data pack of the repository at `repo` (one holding no tree), and the
/// subset of a cycle of `cycle` that reads it: restic puts pack `id` in
/// subset `id[0] % cycle + 1` (its first byte).
async fn data_pack(host: &Host, repo: &Path, cycle: u32) -> (PathBuf, u32) {
    let list = String::from_utf8(host.restic_ok(&["list", "index"]).await).unwrap();
    for index in list.lines().filter(|l| !l.is_empty()) {
        let json: Value =
            serde_json::from_slice(&host.restic_ok(&["cat", "index", index]).await).unwrap();
        for pack in json["packs"].as_array().unwrap() {
            let blobs = pack["blobs"].as_array().unwrap();
            if blobs.iter().all(|b| b["type"] == "data") {
                let id = pack["id"].as_str().unwrap();
                let first = u32::from_str_radix(&id[..2], 16).unwrap();
                let path = repo.join("data").join(&id[..2]).join(id);
                assert!(path.exists(), "{}", path.display());
                return (path, first % cycle + 1);
            }
        }
    }
    panic!("no data pack in the repository");
}

#[tokio::test]
async fn a_failed_subset_keeps_its_place_and_alerts() {
    use std::os::unix::fs::PermissionsExt;
    let wrappers = tempfile::tempdir().unwrap();
    let (host, log, _src) = host_with_backup("corrupt", wrappers.path()).await;
    let repo = host.scratch().join("repo");
    let (pack, bad) = data_pack(&host, &repo, 3).await;
    // Damage the pack's first blob: its hash no longer matches, which only
    // reading the data (the subset holding the pack) finds.
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    for b in bytes.iter_mut().skip(16).take(64) {
        *b = !*b;
    }
    std::fs::write(&pack, bytes).unwrap();

    let params = json!({"read_data": "rotate", "cycle": 3});
    for n in 1..bad {
        let job = host.run("check", params.clone()).await;
        succeeded(&job);
        assert_eq!(job["stats"]["subset"], n, "{job:#}");
    }
    // The subset holding the damaged pack fails, and fails again on the
    // next run: it keeps its place until it passes.
    for _ in 0..2 {
        let job = host.run("check", params.clone()).await;
        assert_eq!(job["status"], "failed", "{job:#}");
        assert_eq!(job["stats"]["subset"], bad, "{job:#}");
        assert_eq!(job["stats"]["errors"], true, "{job:#}");
    }
    let subsets: Vec<String> = recorded_checks(&log).iter().map(|c| subset_of(c)).collect();
    let mut expected: Vec<String> = (1..bad).map(|n| format!("{n}/3")).collect();
    expected.extend([format!("{bad}/3"), format!("{bad}/3")]);
    assert_eq!(subsets, expected);

    let view = verification(&host, &host.id).await;
    assert_eq!(
        view["subsets_done"],
        json!((1..bad).collect::<Vec<u32>>()),
        "{view:#}"
    );
    assert_eq!(view["failed_subset"], bad, "{view:#}");
    assert_eq!(view["next_subset"], bad, "{view:#}");
    assert!(
        view["last_error"].as_str().unwrap().contains("errors"),
        "{view:#}"
    );
    // …and it alerts, naming the subset.
    let (status, alerts) = host
        .admin
        .get(&format!(
            "/api/v1/alerts?host_id={}&kind=check_failed",
            host.id
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{alerts}");
    let firing: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] != "resolved")
        .collect();
    assert_eq!(firing.len(), 1, "{alerts:#}");
    assert!(
        firing[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("reading subset {bad}/3 of the data")),
        "{alerts:#}"
    );
    let page = host.page(&format!("/hosts/{}", host.id)).await;
    assert!(
        page.contains(&format!("subset {bad} failed")),
        "the host page does not show the failed subset"
    );
    host.stop().await;
}

#[tokio::test]
async fn the_agent_keeps_its_cursor_across_a_restart_while_the_server_is_away() {
    let wrappers = tempfile::tempdir().unwrap();
    let (host, log, _src) = host_with_backup("offline", wrappers.path()).await;
    let cursors = host.agent.state_dir.join("verification.json");
    let (status, body) = host
        .admin
        .post(
            &format!("/api/v1/hosts/{}/schedules", host.id),
            json!({"kind": "check", "cron": "*/3 * * * * *", "timezone": "UTC",
                   "params": {"read_data": "rotate", "cycle": 3}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let version = host.admin.host(&host.id).await.unwrap().schedule_version;
    host.admin
        .wait_schedule_acked(&host.id, version, Duration::from_secs(30))
        .await
        .unwrap();
    // The server goes away; the agent's schedule keeps firing and the
    // agent picks each subset from its own cursor.
    let server = host.server;
    let stopped = server.stop_keeping_data().await.unwrap();
    let checks_at_stop = recorded_checks(&log).len();
    let cursor = || -> Option<Value> {
        let text = std::fs::read_to_string(&cursors).ok()?;
        let map: Value = serde_json::from_str(&text).ok()?;
        map.as_object()?.values().next().cloned()
    };
    wait_until(
        Duration::from_secs(120),
        "an offline rotating check to pass",
        || async { recorded_checks(&log).len() > checks_at_stop && cursor().is_some() },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", host.agent.process.log()));
    // Restarted (still without its server), the agent goes on from where
    // its cursor stood when it stopped, not from the first subset.
    let state_dir = host.agent.state_dir.clone();
    host.agent
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    let stood = cursor().unwrap();
    assert_eq!(stood["cycle"], 3, "{stood}");
    let before_restart = recorded_checks(&log).len();
    let agent =
        rm_testkit::AgentProcess::spawn(Path::new(BIN), &state_dir, &host.restic, &[]).unwrap();
    wait_until(
        Duration::from_secs(60),
        "a rotating check by the restarted agent",
        || async { recorded_checks(&log).len() > before_restart },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
    let first_after = subset_of(&recorded_checks(&log)[before_restart]);
    assert_eq!(
        first_after,
        format!("{}/3", stood["next"]),
        "the restarted agent did not carry on from its cursor"
    );
    // Back online, the runs made offline are reported and counted.
    let server = stopped.start().await.unwrap();
    let admin = server.admin().await.unwrap();
    wait_until(
        rm_agent::backoff::CAP + Duration::from_secs(60),
        "the offline rotating checks to be recorded",
        || async {
            let (_, view) = admin
                .get(&format!("/api/v1/hosts/{}/verification", host.id))
                .await
                .unwrap();
            view["cycle"] == 3 && !view["subsets_done"].as_array().unwrap().is_empty()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
    agent.terminate(Duration::from_secs(20)).await.unwrap();
}

#[tokio::test]
async fn a_rotating_schedule_from_the_host_page_and_its_coverage_in_chromium() {
    let wrappers = tempfile::tempdir().unwrap();
    let (host, _log, _src) = host_with_backup("ui", wrappers.path()).await;
    let origin = host.server.url.clone();
    let browser = rm_testkit::Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", rm_testkit::ADMIN_PASSWORD)
        .await
        .unwrap();
    browser
        .goto(&format!("{origin}/hosts/{}", host.id))
        .await
        .unwrap();
    let wait = Duration::from_secs(10);
    // Before any rotating check, the page says so.
    browser
        .wait_for_text("#verification-summary", "no rotating check has run", wait)
        .await
        .unwrap();
    browser
        .wait_for("#schedule-kind", wait)
        .await
        .unwrap()
        .select_by_value("check")
        .await
        .unwrap();
    browser
        .wait_for("#schedule-read-data", wait)
        .await
        .unwrap()
        .select_by_value("rotate")
        .await
        .unwrap();
    browser.fill("#schedule-cycle", "3").await.unwrap();
    browser.fill("#schedule-cron", "0 4 * * *").await.unwrap();
    browser
        .fill("#schedule-limit-download", "20480")
        .await
        .unwrap();
    browser.click("#schedule-add").await.unwrap();
    browser
        .wait_for_text("#schedules-table", "every day at 04:00", wait)
        .await
        .unwrap();
    let (_, stored) = host
        .admin
        .get(&format!("/api/v1/hosts/{}/schedules", host.id))
        .await
        .unwrap();
    assert_eq!(
        stored[0]["params"],
        json!({"read_data": "rotate", "cycle": 3, "limit_download_kib": 20480}),
        "{stored:#}"
    );

    // Two of three subsets: 66 %, a full cycle every 3 days (the daily
    // schedule × 3).
    for _ in 0..2 {
        succeeded(
            &host
                .run("check", json!({"read_data": "rotate", "cycle": 3}))
                .await,
        );
    }
    browser
        .goto(&format!("{origin}/hosts/{}", host.id))
        .await
        .unwrap();
    browser
        .wait_for_text(
            "#verification-summary",
            "66 % of the data read and verified this cycle, full cycle every 3 days",
            wait,
        )
        .await
        .unwrap();
    browser.screenshot("host-verification").await.unwrap();
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    for url in browser.requested_urls().await.unwrap() {
        assert!(url.starts_with(&origin), "the page requested {url}");
    }
    browser.close().await.unwrap();
    host.stop().await;
}
