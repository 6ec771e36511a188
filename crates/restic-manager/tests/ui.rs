//! The web UI in Debian's headless Chromium, against the real server with a
//! real agent and the real restic: logging in, the dashboard, backing up
//! from the host page and watching the job finish live, editing schedules,
//! enrolling a host, and seeing it all in the audit log. Every page must load only from the server itself
//! and log no console errors. Screenshots land in `target/ui-screenshots`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rm_testkit::fixtures::make_tree;
use rm_testkit::{wait_until, Api, Browser, RunningAgent, TestServer, ADMIN_PASSWORD};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const WAIT: Duration = Duration::from_secs(10);

/// Asserts the page asked nothing of another host and logged no errors.
async fn assert_clean(browser: &Browser, origin: &str) {
    for url in browser.requested_urls().await.unwrap() {
        assert!(
            url.starts_with(origin) || url.starts_with("data:"),
            "the page requested {url}, not on {origin}"
        );
    }
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

async fn log_in(browser: &Browser, server: &TestServer, password: &str) {
    browser
        .goto(&format!("{}/login", server.url))
        .await
        .unwrap();
    browser.wait_for("#username", WAIT).await.unwrap();
    browser.fill("#username", "admin").await.unwrap();
    browser.fill("#password", password).await.unwrap();
    browser.click("#login-submit").await.unwrap();
}

/// A server, a real agent with an initialised local repository, and a
/// source tree to back up.
struct Setup {
    server: TestServer,
    agent: RunningAgent,
    admin: Api,
    scratch: tempfile::TempDir,
    src: std::path::PathBuf,
}

async fn setup(name: &str) -> Setup {
    let server = TestServer::start().await.unwrap();
    let agent = server
        .enrolled_agent(Path::new(BIN), name, &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("documents");
    make_tree(&src);
    let admin = server.admin().await.unwrap();
    let repo = scratch.path().join("repo").display().to_string();
    admin
        .set_repository(&agent.host_id, &repo, "ui-test")
        .await
        .unwrap();
    let (_, jobs) = admin.get("/api/v1/jobs").await.unwrap();
    let init = jobs[0]["id"].as_str().unwrap().to_owned();
    let init = admin
        .finished_job(&init, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(init["status"], "succeeded");
    Setup {
        server,
        agent,
        admin,
        scratch,
        src,
    }
}

#[tokio::test]
async fn an_operator_logs_in_backs_up_from_the_host_page_and_edits_schedules() {
    let Setup {
        server,
        agent,
        admin,
        scratch: _scratch,
        src,
    } = setup("web-01").await;
    let origin = server.url.clone();
    let browser = Browser::start().await.unwrap();

    // Pages need a login; a wrong password is refused with a message.
    browser.goto(&format!("{origin}/")).await.unwrap();
    browser.wait_for("#login-form", WAIT).await.unwrap();
    log_in(&browser, &server, "wrong-password").await;
    browser
        .wait_for_text("#login-error", "invalid user name or password", WAIT)
        .await
        .unwrap();
    browser.screenshot("login-refused").await.unwrap();
    log_in(&browser, &server, ADMIN_PASSWORD).await;

    // The dashboard shows the host online.
    browser.wait_for("#hosts-table", WAIT).await.unwrap();
    browser
        .wait_for_text(
            &format!("tr[data-host=\"{}\"]", agent.host_id),
            "online",
            WAIT,
        )
        .await
        .unwrap();
    browser
        .wait_for_text("#count-online", "1", WAIT)
        .await
        .unwrap();
    browser.screenshot("dashboard").await.unwrap();
    assert_clean(&browser, &origin).await;

    // It follows the fleet live: a job started elsewhere appears unasked.
    let (status, _) = admin
        .post(
            &format!("/api/v1/hosts/{}/jobs", agent.host_id),
            json!({"kind": "snapshots"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    browser
        .wait_for_text("#recent-jobs", "snapshots", WAIT)
        .await
        .unwrap();

    // And it fits a phone.
    browser.client().set_window_size(390, 844).await.unwrap();
    browser.screenshot("dashboard-phone").await.unwrap();
    browser.client().set_window_size(1280, 900).await.unwrap();

    // Back up from the host page and watch the job succeed, live.
    browser
        .goto(&format!("{origin}/hosts/{}", agent.host_id))
        .await
        .unwrap();
    browser.wait_for("#backup-paths", WAIT).await.unwrap();
    browser
        .fill("#backup-paths", &src.display().to_string())
        .await
        .unwrap();
    browser.screenshot("host").await.unwrap();
    browser.click("#backup-now").await.unwrap();
    browser.wait_for("#job", WAIT).await.unwrap();
    browser
        .wait_for_text("#job-status", "succeeded", Duration::from_secs(60))
        .await
        .unwrap();
    browser.wait_for_text("#log", "saved", WAIT).await.unwrap();
    browser
        .wait_for_text("#job-stats", "files new", WAIT)
        .await
        .unwrap();
    browser.screenshot("job").await.unwrap();
    assert_clean(&browser, &origin).await;

    // Schedules: add one through the form, see it described, delete it.
    browser
        .goto(&format!("{origin}/hosts/{}", agent.host_id))
        .await
        .unwrap();
    browser.wait_for("#schedule-form", WAIT).await.unwrap();
    browser.fill("#schedule-cron", "15 3 * * *").await.unwrap();
    browser.fill("#schedule-timezone", "UTC").await.unwrap();
    browser
        .fill("#schedule-paths", &src.display().to_string())
        .await
        .unwrap();
    browser.click("#schedule-add").await.unwrap();
    browser
        .wait_for_text("#schedules-table", "every day at 03:15", WAIT)
        .await
        .unwrap();
    browser.screenshot("host-with-schedule").await.unwrap();
    let (_, schedules) = admin
        .get(&format!("/api/v1/hosts/{}/schedules", agent.host_id))
        .await
        .unwrap();
    assert_eq!(schedules.as_array().unwrap().len(), 1);
    wait_until(WAIT, "the agent to acknowledge the schedule", || async {
        admin.host(&agent.host_id).await.unwrap().schedule_in_sync
    })
    .await
    .unwrap();
    // Disable it from the table: the agent gets the change too.
    browser
        .click("#schedules-table button[data-put]")
        .await
        .unwrap();
    browser
        .wait_for_text("#schedules-table", "disabled", WAIT)
        .await
        .unwrap();
    wait_until(
        WAIT,
        "the agent to acknowledge the disabled schedule",
        || async {
            let host = admin.host(&agent.host_id).await.unwrap();
            host.schedule_in_sync && host.schedule_version == 2
        },
    )
    .await
    .unwrap();
    // Deleting asks for confirmation first.
    browser
        .client()
        .execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    browser
        .click("#schedules-table button.danger")
        .await
        .unwrap();
    wait_until(WAIT, "the schedule to be deleted", || async {
        let (_, list) = admin
            .get(&format!("/api/v1/hosts/{}/schedules", agent.host_id))
            .await
            .unwrap();
        list.as_array().unwrap().is_empty()
    })
    .await
    .unwrap();
    assert_clean(&browser, &origin).await;

    // Enrolment: the token and the exact command to paste.
    browser.goto(&format!("{origin}/enroll")).await.unwrap();
    browser.wait_for("#enroll-form", WAIT).await.unwrap();
    browser.fill("#enroll-name", "db-02").await.unwrap();
    browser.click("#enroll-create").await.unwrap();
    browser
        .wait_for_text("#enroll-command", "/install.sh | sudo sh -s --", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(
            "#enroll-only-command",
            "restic-manager agent enroll --server",
            WAIT,
        )
        .await
        .unwrap();
    let command = browser
        .wait_for("#enroll-command", WAIT)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        command.contains(&origin)
            && command.contains("--token rme.")
            && command.contains("--name db-02"),
        "{command}"
    );
    browser.screenshot("enroll").await.unwrap();
    assert_clean(&browser, &origin).await;

    // The audit log lists what was just done, by whom, from here.
    browser
        .goto(&format!("{origin}/audit?action=schedule."))
        .await
        .unwrap();
    browser
        .wait_for_text("#audit-table", "schedule.delete", WAIT)
        .await
        .unwrap();
    let log = browser
        .wait_for("#audit-table", WAIT)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        log.contains("schedule.update") && log.contains("admin") && log.contains("127.0.0.1"),
        "{log}"
    );
    browser.screenshot("audit").await.unwrap();
    assert_clean(&browser, &origin).await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn backup_and_forget_schedules_are_made_from_form_fields_and_errors_show_by_their_field() {
    let Setup {
        server,
        agent,
        admin,
        scratch: _scratch,
        src,
    } = setup("form-01").await;
    let origin = server.url.clone();
    let schedules_path = format!("/api/v1/hosts/{}/schedules", agent.host_id);
    let browser = Browser::start().await.unwrap();
    log_in(&browser, &server, ADMIN_PASSWORD).await;
    browser.wait_for("#hosts-table", WAIT).await.unwrap();
    browser
        .goto(&format!("{origin}/hosts/{}", agent.host_id))
        .await
        .unwrap();
    browser.wait_for("#schedule-form", WAIT).await.unwrap();
    assert_clean(&browser, &origin).await;

    // A backup schedule with excludes and a bandwidth limit of 0: refused,
    // the message next to the limit, everything typed still there.
    let src = src.display().to_string();
    browser.fill("#schedule-cron", "0 1 * * *").await.unwrap();
    browser.fill("#schedule-paths", &src).await.unwrap();
    browser
        .fill("#schedule-excludes", "*.tmp\n*.bak")
        .await
        .unwrap();
    browser.fill("#schedule-iexcludes", "*.jpg").await.unwrap();
    browser.fill("#schedule-limit-upload", "0").await.unwrap();
    browser.click("#schedule-exclude-caches").await.unwrap();
    browser.click("#schedule-add").await.unwrap();
    browser
        .wait_for_text(
            "#schedule-form [data-error-for=\"limit_upload_kib\"]",
            "`params.limit_upload_kib` must be at least 1",
            WAIT,
        )
        .await
        .unwrap();
    browser.screenshot("schedule-form-error").await.unwrap();
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
    assert_eq!(value("#schedule-excludes").await, "*.tmp\n*.bak");
    assert_eq!(value("#schedule-paths").await, src);
    let (_, stored) = admin.get(&schedules_path).await.unwrap();
    assert_eq!(stored, json!([]), "a refused form stores nothing");

    browser.fill("#schedule-limit-upload", "512").await.unwrap();
    browser.click("#schedule-add").await.unwrap();
    browser
        .wait_for_text("#schedules-table", "every day at 01:00", WAIT)
        .await
        .unwrap();
    let (_, stored) = admin.get(&schedules_path).await.unwrap();
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored:#}");
    assert_eq!(stored[0]["kind"], "backup");
    assert_eq!(
        stored[0]["params"],
        json!({
            "paths": [src],
            "excludes": ["*.tmp", "*.bak"],
            "iexcludes": ["*.jpg"],
            "exclude_caches": true,
            "limit_upload_kib": 512,
        })
    );

    // A forget schedule: its own fields (retention), not the backup's.
    browser.wait_for("#schedule-form", WAIT).await.unwrap();
    browser
        .wait_for("#schedule-kind", WAIT)
        .await
        .unwrap()
        .select_by_value("forget")
        .await
        .unwrap();
    browser
        .wait_for("#schedule-retention", WAIT)
        .await
        .unwrap()
        .select_by_value("custom")
        .await
        .unwrap();
    browser.fill("#schedule-cron", "0 4 * * SUN").await.unwrap();
    browser.fill("#schedule-keep_daily", "5").await.unwrap();
    browser.fill("#schedule-keep_within", "1y6m").await.unwrap();
    browser.screenshot("schedule-form-forget").await.unwrap();
    browser.click("#schedule-add").await.unwrap();
    wait_until(WAIT, "the forget schedule to be stored", || async {
        admin
            .get(&schedules_path)
            .await
            .unwrap()
            .1
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await
    .unwrap();
    let (_, stored) = admin.get(&schedules_path).await.unwrap();
    let forget = stored
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "forget")
        .unwrap();
    assert_eq!(
        forget["params"],
        json!({"keep_daily": 5, "keep_within": "1y6m", "prune": true})
    );
    // The one console error is the refused form's 400, which Chromium logs.
    let errors = browser.console_errors().await.unwrap();
    assert!(
        errors.len() == 1
            && errors[0].contains(
                "/schedules - Failed to load resource: the server responded with a status of 400"
            ),
        "console errors: {errors:#?}"
    );
    for url in browser.requested_urls().await.unwrap() {
        assert!(url.starts_with(&origin), "the page requested {url}");
    }
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_restore_wizard_drills_down_folder_by_folder_and_restores_a_picked_file() {
    use fantoccini::Locator;

    let Setup {
        server,
        agent,
        admin,
        scratch,
        src,
    } = setup("files-01").await;
    let backup = admin
        .start_job(
            &agent.host_id,
            "backup",
            json!({"paths": [src.display().to_string()]}),
        )
        .await
        .unwrap();
    let job = admin
        .finished_job(&backup, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded");
    admin
        .wait_snapshots(&agent.host_id, 1, Duration::from_secs(60))
        .await
        .unwrap();

    let origin = server.url.clone();
    let browser = Browser::start().await.unwrap();
    log_in(&browser, &server, ADMIN_PASSWORD).await;
    browser.wait_for("#hosts-table", WAIT).await.unwrap();
    browser.goto(&format!("{origin}/restore")).await.unwrap();
    browser
        .wait_for("#restore-host", WAIT)
        .await
        .unwrap()
        .select_by_value(&agent.host_id)
        .await
        .unwrap();
    let snapshot_select = browser
        .wait_for("#restore-snapshot:not([disabled])", WAIT)
        .await
        .unwrap();
    let snapshot = snapshot_select
        .find(Locator::Css("option:nth-child(2)"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    snapshot_select.select_by_value(&snapshot).await.unwrap();
    browser.wait_for("#restore-tree li", WAIT).await.unwrap();
    browser.screenshot("restore-root").await.unwrap();

    // Open one folder at a time down to the backed-up folder.
    let mut path = String::new();
    for component in src.strip_prefix("/").unwrap().components() {
        path = format!("{path}/{}", component.as_os_str().to_str().unwrap());
        let toggle = format!("button.toggle[data-path=\"{path}\"]");
        browser.wait_for(&toggle, WAIT).await.unwrap();
        browser.click(&toggle).await.unwrap();
    }
    let file = format!("{path}/café-ü.txt");
    let checkbox = format!("input[type=checkbox][value=\"{file}\"]");
    browser.wait_for(&checkbox, WAIT).await.unwrap();
    browser.click(&checkbox).await.unwrap();
    let target = scratch.path().join("restored");
    browser
        .fill("#target-path", &target.display().to_string())
        .await
        .unwrap();
    browser
        .wait_for_text("#review-paths", "café-ü.txt", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#review-target", &target.display().to_string(), WAIT)
        .await
        .unwrap();
    browser.screenshot("restore-review").await.unwrap();
    browser.click("#restore-run").await.unwrap();
    browser
        .wait_for_text("#job-status", "succeeded", Duration::from_secs(60))
        .await
        .unwrap();
    browser.screenshot("restore-job").await.unwrap();
    let restored = target
        .join(src.strip_prefix("/").unwrap())
        .join("café-ü.txt");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(src.join("café-ü.txt")).unwrap(),
        "the restored file matches the original"
    );
    assert!(
        !target
            .join(src.strip_prefix("/").unwrap())
            .join("big.bin")
            .exists(),
        "only the picked file"
    );
    assert_clean(&browser, &origin).await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_host_page_opens_the_tree_at_a_snapshot_and_a_file_downloads_through_its_link() {
    let Setup {
        server,
        agent,
        admin,
        scratch: _scratch,
        src,
    } = setup("download-01").await;
    admin
        .back_up(&agent.host_id, &src, 0, Duration::from_secs(60))
        .await
        .unwrap();

    let origin = server.url.clone();
    let browser = Browser::start().await.unwrap();
    log_in(&browser, &server, ADMIN_PASSWORD).await;
    browser.wait_for("#hosts-table", WAIT).await.unwrap();
    // The host page's snapshot list leads straight to the tree.
    browser
        .goto(&format!("{origin}/hosts/{}", agent.host_id))
        .await
        .unwrap();
    browser
        .wait_for("#snapshots-table a.snapshot-restore", WAIT)
        .await
        .unwrap();
    browser
        .click("#snapshots-table a.snapshot-browse")
        .await
        .unwrap();
    browser.wait_for("#restore-tree li", WAIT).await.unwrap();
    // Open one folder at a time, down to `nested`.
    let mut path = String::new();
    for component in src.join("nested").strip_prefix("/").unwrap().components() {
        path = format!("{path}/{}", component.as_os_str().to_str().unwrap());
        let toggle = format!("button.toggle[data-path=\"{path}\"]");
        browser.wait_for(&toggle, WAIT).await.unwrap();
        browser.click(&toggle).await.unwrap();
    }
    let file = format!("{path}/a.txt");
    browser
        .wait_for(&format!("input[type=checkbox][value=\"{file}\"]"), WAIT)
        .await
        .unwrap();
    browser.screenshot("download-link").await.unwrap();
    // Clicking the file's link makes Chromium save the file itself.
    let link = browser
        .client()
        .execute(
            r#"const [file] = arguments;
               const link = document.querySelector(`input[value="${file}"]`).closest("li").querySelector("a.download");
               link.id = "download-under-test";
               return link.textContent;"#,
            vec![json!(file)],
        )
        .await
        .unwrap();
    assert_eq!(link, json!("download"));
    browser.click("#download-under-test").await.unwrap();
    let saved = browser
        .downloaded("a.txt", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(saved, std::fs::read(src.join("nested/a.txt")).unwrap());
    // The same link's answer, headers included, with the browser's session.
    let fetched = browser
        .client()
        .execute(
            r#"const [file] = arguments;
               const link = document.querySelector(`input[value="${file}"]`).closest("li").querySelector("a.download");
               return fetch(link.href).then(async (r) => [link.getAttribute("download"), r.status, r.headers.get("content-disposition"), await r.text()]);"#,
            vec![json!(file)],
        )
        .await
        .unwrap();
    assert_eq!(
        fetched,
        json!([
            "",
            200,
            "attachment; filename=\"a.txt\"; filename*=UTF-8''a.txt",
            std::fs::read_to_string(src.join("nested/a.txt")).unwrap()
        ])
    );
    // A folder's link gives its archive.
    let folder = browser
        .client()
        .execute(
            r#"const [dir] = arguments;
               const link = document.querySelector(`button.toggle[data-path="${dir}"]`).closest("li").querySelector("a.download");
               return [link.textContent, new URL(link.href).searchParams.get("path")];"#,
            vec![json!(path)],
        )
        .await
        .unwrap();
    assert_eq!(folder, json!(["download .tar", path]));
    assert_clean(&browser, &origin).await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn an_operator_rotates_then_revokes_an_agent_token_from_the_host_page() {
    let server = TestServer::start().await.unwrap();
    let agent = server
        .enrolled_agent(
            Path::new(BIN),
            "token-ui",
            &rm_testkit::restic::binary(),
            &[],
        )
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let origin = server.url.clone();
    let page = format!("{origin}/hosts/{}", agent.host_id);
    let browser = Browser::start().await.unwrap();
    log_in(&browser, &server, ADMIN_PASSWORD).await;
    browser.wait_for("nav", WAIT).await.unwrap();

    browser.goto(&page).await.unwrap();
    browser
        .wait_for_text("#agent-token-state", "as enrolled", WAIT)
        .await
        .unwrap();
    browser.click("#rotate-token").await.unwrap();
    wait_until(WAIT, "the agent to confirm its new token", || async {
        admin
            .host(&agent.host_id)
            .await
            .unwrap()
            .token_rotated_at
            .is_some()
    })
    .await
    .unwrap();
    browser.goto(&page).await.unwrap();
    browser
        .wait_for_text("#agent-token-state", "rotated", WAIT)
        .await
        .unwrap();

    // Revoking asks for confirmation first.
    browser
        .client()
        .execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    browser.click("#revoke-token").await.unwrap();
    wait_until(WAIT, "the agent to be revoked and offline", || async {
        let host = admin.host(&agent.host_id).await.unwrap();
        host.agent_revoked_at.is_some() && !host.online
    })
    .await
    .unwrap();
    browser.goto(&page).await.unwrap();
    browser
        .wait_for_text("#agent-token-state", "revoked", WAIT)
        .await
        .unwrap();
    let rotate = browser.wait_for("#rotate-token", WAIT).await.unwrap();
    assert!(rotate.attr("disabled").await.unwrap().is_some());
    browser.screenshot("host-token-revoked").await.unwrap();
    assert_clean(&browser, &origin).await;
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_pages_a_large_fleet_with_problems_first() {
    let server = TestServer::start().await.unwrap();
    let hosts = rm_testkit::fleet::enroll_hosts(server.store(), "fleet", 203)
        .await
        .unwrap();
    // One host online and freshly backed up: the only one that needs no
    // attention, so it comes last.
    let agent = rm_testkit::RawAgent::connect_and_hello(&server.ws_url(), &hosts[0].agent_token)
        .await
        .unwrap();
    let store = server.store();
    let now = chrono::Utc::now();
    let job = store
        .create_job(
            &rm_store::NewJob {
                id: rm_core::JobId::new(),
                host_id: hosts[0].host_id,
                kind: "backup".into(),
                params: json!({"paths": ["/srv"]}),
                trigger: rm_core::JobTrigger::Manual,
                schedule_id: None,
                status: rm_core::JobStatus::Dispatched,
                error: None,
                created_at: now,
            },
            None,
        )
        .await
        .unwrap();
    let end = rm_store::JobEnd {
        status: rm_core::JobStatus::Succeeded,
        exit_code: Some(0),
        stats: json!({}),
        error: None,
        finished_at: now,
        provisional: false,
    };
    assert!(store.finish_job(job.id, &end, None).await.unwrap());
    let admin = server.admin().await.unwrap();
    let cookie = format!("rm_session={}", admin.token().unwrap());
    let client = rm_testkit::http::client();
    let page = |n: &str| {
        let request = client
            .get(format!("{}/{n}", server.url))
            .header("cookie", &cookie)
            .send();
        async move { request.await.unwrap().text().await.unwrap() }
    };

    let first = page("").await;
    assert!(first.contains("id=\"count-online\">1<"), "{first}");
    assert!(first.contains("id=\"count-offline\">202<"));
    assert!(first.contains("id=\"count-stale\">202<"));
    assert!(first.contains("Hosts 1–200 of 203"));
    assert!(first.contains("href=\"/?page=2\" id=\"hosts-next\""));
    assert_eq!(first.matches("<tr data-host=").count(), 200);
    // Offline hosts need attention, so the online one comes last.
    assert!(!first.contains(&format!("data-host=\"{}\"", hosts[0].host_id)));

    let second = page("?page=2").await;
    assert!(second.contains("Hosts 201–203 of 203"));
    assert!(second.contains("href=\"/?page=1\" id=\"hosts-prev\""));
    assert!(!second.contains("id=\"hosts-next\""));
    assert_eq!(second.matches("<tr data-host=").count(), 3);
    assert!(second.contains(&format!("data-host=\"{}\"", hosts[0].host_id)));

    // A page number out of range or not a number shows the first page.
    for odd in ["?page=9", "?page=0", "?page=x"] {
        assert!(page(odd).await.contains("Hosts 1–200 of 203"), "{odd}");
    }
    agent.close().await.unwrap();
}

#[tokio::test]
async fn a_second_repository_is_set_from_the_host_page_and_copied_to() {
    let Setup {
        server,
        agent,
        admin,
        scratch,
        src,
    } = setup("copy-ui").await;
    let origin = server.url.clone();
    let host = agent.host_id.clone();
    let backup = admin
        .start_job(
            &host,
            "backup",
            json!({"paths": [src.display().to_string()]}),
        )
        .await
        .unwrap();
    let backup = admin
        .finished_job(&backup, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(backup["status"], "succeeded", "{backup:#}");
    let browser = Browser::start().await.unwrap();
    log_in(&browser, &server, ADMIN_PASSWORD).await;
    browser.wait_for("#hosts-table", WAIT).await.unwrap();
    browser
        .goto(&format!("{origin}/hosts/{host}"))
        .await
        .unwrap();
    browser.wait_for("#copy-to-url", WAIT).await.unwrap();
    // Nothing to copy to yet: the button says so by being off.
    let copy_now = browser.wait_for("#copy-now", WAIT).await.unwrap();
    assert!(copy_now.attr("disabled").await.unwrap().is_some());

    let second = scratch.path().join("second").display().to_string();
    browser.fill("#repo-password", "ui-test").await.unwrap();
    browser.fill("#copy-to-url", &second).await.unwrap();
    browser
        .fill("#copy-to-password", "second-pw")
        .await
        .unwrap();
    browser
        .click("#repository-form button[type=submit]")
        .await
        .unwrap();
    browser
        .wait_for_text("#copy-to-now", &second, WAIT)
        .await
        .unwrap();
    browser.screenshot("host-copy-to").await.unwrap();
    let (_, shown) = admin
        .get(&format!("/api/v1/hosts/{host}/repository"))
        .await
        .unwrap();
    assert_eq!(shown["copy_to"]["url"], second.as_str(), "{shown}");

    browser.click("#copy-now").await.unwrap();
    browser.wait_for("#job", WAIT).await.unwrap();
    browser
        .wait_for_text("#job-status", "succeeded", Duration::from_secs(60))
        .await
        .unwrap();
    browser
        .wait_for_text("#log", "copied 1 snapshots", WAIT)
        .await
        .unwrap();
    browser.screenshot("job-copy").await.unwrap();
    assert_clean(&browser, &origin).await;

    // Stop copying: the box removes it (the password is asked again, as
    // for any change of the repository).
    browser
        .goto(&format!("{origin}/hosts/{host}"))
        .await
        .unwrap();
    browser.wait_for("#copy-to-remove", WAIT).await.unwrap();
    browser.fill("#repo-password", "ui-test").await.unwrap();
    browser.click("#copy-to-remove").await.unwrap();
    browser
        .click("#repository-form button[type=submit]")
        .await
        .unwrap();
    wait_until(WAIT, "copy_to to be removed", || async {
        let (_, shown) = admin
            .get(&format!("/api/v1/hosts/{host}/repository"))
            .await
            .unwrap();
        shown.get("copy_to").is_none()
    })
    .await
    .unwrap();
    browser.close().await.unwrap();
}
