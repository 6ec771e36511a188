//! Restore drills end to end (DESIGN §10): the real server, the real agent
//! binary and the real restic against a real local repository. A drill on
//! a healthy repository verifies its sample file by file (checked against
//! the files themselves); a live file changed behind an unchanged size and
//! mtime is a mismatch; the same drill after bytes of a pack were
//! overwritten fails, names the file (and, on restic 0.18+, the pack), and
//! fires `drill_failed` to a real webhook; the API, the fleet view, the
//! metric, schedules and policies; a drill cancelled, or whose agent is
//! killed or stopped, mid-restore leaves no scratch files once the agent is
//! back; and the web UI in Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::{corrupt_packs, make_tree, noise, sha256_hex};
use rm_testkit::{wait_until, Browser, HttpReceiver, ADMIN_PASSWORD};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "drills-e2e-Pa55";
const ALERT_LIMIT: Duration = Duration::from_secs(120);

/// A host whose agent restores drills under `drill_dir`.
async fn host(drill_dir: &Path) -> Host {
    let dir = drill_dir.display().to_string();
    Host::start(
        Path::new(BIN),
        "drills",
        &rm_testkit::restic::binary(),
        &[("RM_DRILL_DIR", dir.as_str())],
    )
    .await
}

/// The entries of the drill folder (the scratch folders left).
fn leftovers(drill_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(drill_dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// An RFC 3339 time as Unix seconds.
fn chrono_seconds(rfc3339: &str) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    at.timestamp_millis() as f64 / 1000.0
}

/// SHA-256 of `bytes`, hex, as the evidence writes it.
fn sha256_hex_of(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    sha256_hex(file.path())
}

async fn get(host: &Host, path: &str) -> Value {
    let (status, body) = host.admin.get(path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn a_drill_verifies_its_sample_and_a_damaged_pack_fails_it_naming_the_file() {
    let drill_dir = tempfile::tempdir().unwrap();
    let host = host(drill_dir.path()).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let receiver = HttpReceiver::start().await.unwrap();
    host.admin
        .create_channel(json!({
            "name": "drills",
            "kind": "webhook",
            "config": {"url": receiver.url("/hook")},
            "kinds": ["drill_failed"],
        }))
        .await
        .unwrap();

    let src = host.scratch().join("src");
    make_tree(&src);
    // Sizes across the classes the sampler draws from.
    for (i, size) in [100usize, 5_000, 70_000, 1_200_000].into_iter().enumerate() {
        std::fs::write(
            src.join(format!("sized-{i}.bin")),
            noise(size, i as u64 + 3),
        )
        .unwrap();
    }
    let src_path = src.display().to_string();
    let snapshot = host.backed_up(&src, 1).await;

    // Refused params name the field.
    let (status, body) = host.post_job("drill", json!({"sample_files": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("params.sample_files"), "{body}");

    // A healthy repository: every sampled file verified, and its evidence
    // is the file's own checksum, compared with the unchanged live file.
    let drill = host.run("drill", json!({"sample_files": 6})).await;
    succeeded(&drill);
    let stats = &drill["stats"];
    assert_eq!(stats["snapshot_id"], snapshot, "{stats:#}");
    assert_eq!(stats["files_sampled"], 6, "{stats:#}");
    assert_eq!(stats["files_verified"], 6, "{stats:#}");
    assert_eq!(stats["files_in_snapshot"], 9, "{stats:#}");
    assert_eq!(stats["mismatches"], json!([]), "{stats:#}");
    let evidence = stats["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 6);
    let mut sizes = Vec::new();
    for file in evidence {
        let path = PathBuf::from(file["path"].as_str().unwrap());
        assert!(path.starts_with(&src), "{file}");
        assert_eq!(file["result"], "ok", "{file}");
        assert_eq!(file["verified_by"], "restic_verify+live", "{file}");
        assert_eq!(file["sha256"], sha256_hex(&path), "{file}");
        assert_eq!(
            file["size"],
            std::fs::metadata(&path).unwrap().len(),
            "{file}"
        );
        sizes.push(file["size"].as_u64().unwrap());
    }
    // Weighted by size class: small and big files both appear.
    assert!(sizes.iter().any(|s| *s < 4096), "{sizes:?}");
    assert!(sizes.iter().any(|s| *s >= 1 << 20), "{sizes:?}");
    let bytes: u64 = sizes.iter().sum();
    assert_eq!(stats["bytes_verified"], bytes);
    assert!(
        stats["restore_seconds"].as_f64().unwrap() > 0.0,
        "{stats:#}"
    );
    assert!(
        stats["restore_bytes_per_second"].as_f64().unwrap() > 0.0,
        "{stats:#}"
    );
    println!(
        "healthy drill: {} bytes in {:.2} s = {:.0} bytes/s",
        bytes,
        stats["restore_seconds"].as_f64().unwrap(),
        stats["restore_bytes_per_second"].as_f64().unwrap()
    );
    assert!(leftovers(drill_dir.path()).is_empty());

    // A budget smaller than every big file keeps them out.
    let small = host
        .run("drill", json!({"sample_files": 20, "max_bytes": 20_000}))
        .await;
    succeeded(&small);
    assert!(small["stats"]["bytes_verified"].as_u64().unwrap() <= 20_000);
    assert_eq!(small["stats"]["files_sampled"], 6, "{:#}", small["stats"]);

    // Damage the pack holding the files' contents.
    let repo = host.scratch().join("repo");
    let changed = corrupt_packs(&repo, 1 << 20, 64);
    assert!(
        !changed.is_empty(),
        "no pack over 1 MiB in {}",
        repo.display()
    );
    let broken = host
        .run(
            "drill",
            json!({"snapshot_id": &snapshot[..8], "sample_files": 1000}),
        )
        .await;
    assert_eq!(broken["status"], "failed", "{broken:#}");
    // Which file's blobs sit mid-pack is restic's choice: whichever it
    // is, the drill names it, as unreadable, with restic's reason.
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains("did not verify"), "{error}");
    let mismatches = broken["stats"]["mismatches"].as_array().unwrap();
    assert!(!mismatches.is_empty(), "{broken:#}");
    for m in mismatches {
        let path = m["path"].as_str().unwrap();
        assert!(path.starts_with(&src_path), "{m}");
        assert!(error.contains(path), "{path} not named in: {error}");
        assert_eq!(m["result"], "unreadable", "{m}");
        assert!(!m["error"].as_str().unwrap().is_empty(), "{m}");
    }
    let damaged = mismatches[0]["path"].as_str().unwrap().to_owned();
    // restic 0.18 and newer also name the pack the blob came from.
    if rm_testkit::restic::version().has_exit_error_json() {
        assert!(
            changed.iter().any(|pack| {
                let name = pack.file_name().unwrap().to_string_lossy();
                error.contains(&name[..8])
            }),
            "no damaged pack ({changed:?}) named in: {error}"
        );
    }
    println!("damaged pack: {error}");
    assert_eq!(broken["stats"]["files_sampled"], 9);
    assert!(leftovers(drill_dir.path()).is_empty());

    // drill_failed fires, and reaches the channel that asked for it.
    let query = format!(
        "/api/v1/alerts?state=firing&host_id={}&kind=drill_failed",
        host.id
    );
    wait_until(ALERT_LIMIT, "drill_failed to fire", || async {
        !get(&host, &query).await.as_array().unwrap().is_empty()
    })
    .await
    .unwrap();
    let alert = &get(&host, &query).await[0];
    assert!(
        alert["message"].as_str().unwrap().contains(&damaged),
        "{alert}"
    );
    wait_until(ALERT_LIMIT, "the webhook to get drill_failed", || async {
        receiver.requests().iter().any(|r| {
            r.path == "/hook"
                && r.json().is_ok_and(|b| {
                    b["event"] == "alert.firing" && b["alert"]["kind"] == "drill_failed"
                })
        })
    })
    .await
    .unwrap();

    // A live file whose bytes changed behind an unchanged size and mtime
    // (bit rot, or a tool that keeps the mtime) differs from its restored
    // copy: a mismatch, found by the comparison with the live file. The
    // budget keeps the damaged big files out of this sample.
    let live = src.join("nested/a.txt");
    let mtime = std::fs::metadata(&live).unwrap().modified().unwrap();
    std::fs::write(&live, b"b\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&live)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let rotten = host
        .run("drill", json!({"sample_files": 20, "max_bytes": 20_000}))
        .await;
    assert_eq!(rotten["status"], "failed", "{rotten:#}");
    let live_path = live.display().to_string();
    assert_eq!(
        rotten["stats"]["mismatches"],
        json!([{"path": live_path, "result": "mismatch",
                "error": rotten["stats"]["mismatches"][0]["error"]}]),
        "{rotten:#}"
    );
    let why = rotten["stats"]["mismatches"][0]["error"].as_str().unwrap();
    assert!(why.contains("differs from the live file"), "{why}");
    assert!(rotten["error"].as_str().unwrap().contains(&live_path));
    let evidence = rotten["stats"]["evidence"].as_array().unwrap();
    let rotten_file = evidence.iter().find(|e| e["path"] == live_path).unwrap();
    assert_eq!(rotten_file["verified_by"], "restic_verify+live");
    assert_eq!(rotten_file["sha256"], sha256_hex_of(b"a\n"));
    assert!(leftovers(drill_dir.path()).is_empty());

    // The host's drills, newest first, with their evidence; paged.
    let drills = get(&host, &format!("/api/v1/hosts/{}/drills", host.id)).await;
    let drills = drills.as_array().unwrap();
    assert_eq!(drills.len(), 4, "{drills:#?}");
    assert_eq!(drills[0]["job"]["id"], rotten["id"]);
    assert_eq!(drills[1]["job"]["id"], broken["id"]);
    assert_eq!(drills[1]["job"]["status"], "failed");
    assert_eq!(drills[3]["job"]["id"], drill["id"]);
    assert_eq!(drills[3]["drill"]["files_verified"], 6);
    assert_eq!(drills[3]["drill"]["evidence"].as_array().unwrap().len(), 6);
    assert_eq!(
        drills[3]["job"]["stats"],
        Value::Null,
        "sent once, as `drill`"
    );
    let page = get(
        &host,
        &format!(
            "/api/v1/hosts/{}/drills?limit=1&before={}",
            host.id,
            drills[1]["job"]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["job"]["id"], small["id"]);
    let (status, body) = host
        .admin
        .get(&format!("/api/v1/hosts/{}/drills?limit=0", host.id))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The fleet view: the last successful drill counts, the failed one
    // does not replace it.
    let fleet = get(&host, "/api/v1/drills?within_days=7").await;
    assert_eq!(fleet["within_days"], 7);
    assert_eq!(fleet["drilled"], 1, "{fleet:#}");
    assert_eq!(fleet["hosts"][0]["host_id"], host.id);
    assert_eq!(fleet["hosts"][0]["drilled"], true);
    assert_eq!(fleet["hosts"][0]["last_success_job_id"], small["id"]);
    // And Prometheus sees when the host last proved a restore.
    let metrics = reqwest::get(format!("{}/metrics", host.server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = rm_testkit::prometheus::Page::parse(&metrics).unwrap();
    let last = metrics
        .value(
            "rm_host_last_drill_success_timestamp_seconds",
            &[("host_id", host.id.as_str()), ("host", "drills")],
        )
        .unwrap();
    let finished = chrono_seconds(small["finished_at"].as_str().unwrap());
    assert!((last - finished).abs() < 1.0, "{last} vs {finished}");
    assert_eq!(
        metrics.value("rm_alerts_firing", &[("kind", "drill_failed")]),
        Some(1.0)
    );
    let (status, body) = host
        .admin
        .get("/api/v1/drills?within_days=0")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("within_days"), "{body}");

    // The web UI: the host page shows the evidence, the fleet page the host.
    let page = host.page(&format!("/hosts/{}", host.id)).await;
    assert!(page.contains("id=\"drills\""), "{page}");
    assert!(page.contains(&damaged), "the evidence names the files");
    let fleet_page = host.page("/drills?within_days=7").await;
    assert!(fleet_page.contains(&host.id), "{fleet_page}");

    // Drills can be scheduled, on the host and in a policy.
    let (status, body) = host
        .admin
        .post(
            &format!("/api/v1/hosts/{}/schedules", host.id),
            json!({"kind": "drill", "cron": "0 4 * * 0", "params": {"sample_files": 50}}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "drill");
    let (status, body) = host
        .admin
        .post(
            "/api/v1/policies",
            json!({"name": "drilled", "selector": {"env": "prod"},
                   "schedules": [{"kind": "drill", "cron": "0 5 * * 0",
                                  "params": {"max_bytes": 1000000}}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = host
        .admin
        .post(
            "/api/v1/policies",
            json!({"name": "bad", "selector": {},
                   "schedules": [{"kind": "drill", "cron": "0 5 * * 0",
                                  "params": {"sample_files": 5000}}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("sample_files"), "{body}");
    host.stop().await;
}

/// A drill slowed down enough to be caught mid-restore: one 6 MiB file
/// restored at 64 KiB/s takes over a minute.
async fn slow_drill(host: &Host, drill_dir: &Path) -> String {
    let job = host
        .start_job("drill", json!({"limit_download_kib": 64}))
        .await;
    wait_until(
        Duration::from_secs(120),
        "the drill's scratch folder",
        || async {
            leftovers(drill_dir)
                .iter()
                .any(|name| name == &format!("drill-{job}"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", host.agent.process.log()));
    // Restoring now: the folder is made right before restic starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(host.job(&job).await["status"], "running");
    job
}

#[tokio::test]
async fn a_cancelled_drill_and_a_killed_or_stopped_agents_drill_leave_no_scratch_files() {
    let drill_dir = tempfile::tempdir().unwrap();
    let dir = drill_dir.path().display().to_string();
    let env = [("RM_DRILL_DIR", dir.as_str())];
    let mut host = host(drill_dir.path()).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let src = host.scratch().join("slow");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("large.bin"), noise(6 << 20, 5)).unwrap();
    host.backed_up(&src, 1).await;

    // Cancelled mid-restore: the job ends cancelled, the folder is gone.
    let job = slow_drill(&host, drill_dir.path()).await;
    let (status, body) = host
        .admin
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await
        .unwrap();
    assert!(status.is_success(), "{status}: {body}");
    let ended = host.finished(&job).await;
    assert_eq!(ended["status"], "cancelled", "{ended:#}");
    assert!(
        leftovers(drill_dir.path()).is_empty(),
        "{:?}",
        leftovers(drill_dir.path())
    );

    // The agent killed mid-restore (no chance to clean up): the scratch
    // folder is still there until the agent starts again and sweeps it.
    let job = slow_drill(&host, drill_dir.path()).await;
    host.kill_and_restart_agent(&env).await;
    let log = host.agent.process.log();
    assert!(
        log.contains("removed a drill's leftover scratch folder"),
        "the restarted agent swept the killed drill's folder:\n{log}"
    );
    assert!(
        leftovers(drill_dir.path()).is_empty(),
        "{:?}\nagent log:\n{}",
        leftovers(drill_dir.path()),
        host.agent.process.log()
    );
    let ended = host.finished(&job).await;
    assert_ne!(ended["status"], "succeeded", "{ended:#}");

    // Stopped the ordinary way (SIGTERM) mid-restore, the agent cancels the
    // drill and removes its folder itself: the next start finds nothing to
    // sweep.
    let job = slow_drill(&host, drill_dir.path()).await;
    host.restart_agent(&env).await;
    let log = host.agent.process.log();
    assert!(
        !log.contains("removed a drill's leftover scratch folder"),
        "{log}"
    );
    assert!(leftovers(drill_dir.path()).is_empty());
    let ended = host.finished(&job).await;
    assert_eq!(ended["status"], "cancelled", "{ended:#}");
    host.stop().await;
}

#[tokio::test]
async fn an_operator_runs_a_drill_from_the_host_page_and_sees_its_evidence_and_the_fleet_view() {
    const WAIT: Duration = Duration::from_secs(10);
    let drill_dir = tempfile::tempdir().unwrap();
    let host = host(drill_dir.path()).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let src = host.scratch().join("documents");
    make_tree(&src);
    host.backed_up(&src, 1).await;

    let origin = host.server.url.clone();
    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.wait_for("nav", WAIT).await.unwrap();
    browser.client().set_window_size(1280, 900).await.unwrap();
    browser
        .goto(&format!("{origin}/hosts/{}", host.id))
        .await
        .unwrap();
    browser
        .wait_for_text("#drills", "No restore drill yet", WAIT)
        .await
        .unwrap();
    // The button starts a drill and shows its job, live, to its end.
    browser.click("#drill-now").await.unwrap();
    browser.wait_for("#job", WAIT).await.unwrap();
    browser
        .wait_for_text("#job-status", "succeeded", Duration::from_secs(120))
        .await
        .unwrap();
    browser
        .wait_for_text("#log", "drill passed", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#job-stats", "5 files (listed with their checksums", WAIT)
        .await
        .unwrap();

    // The host page lists it with the evidence, file by file.
    browser
        .goto(&format!("{origin}/hosts/{}", host.id))
        .await
        .unwrap();
    browser
        .wait_for_text("#drills-table", "5 of 5 files verified", WAIT)
        .await
        .unwrap();
    browser
        .click("#drills-table details summary")
        .await
        .unwrap();
    let big = format!("{}/big.bin", src.display());
    browser
        .wait_for_text("#drills-table", &big, WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#drills-table", &sha256_hex(Path::new(&big)), WAIT)
        .await
        .unwrap();
    browser
        .client()
        .execute(
            "document.getElementById('drills').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    browser.screenshot("host-drills").await.unwrap();

    // A drill schedule from the host's schedule form.
    browser
        .wait_for("#schedule-kind", WAIT)
        .await
        .unwrap()
        .select_by_value("drill")
        .await
        .unwrap();
    browser.fill("#schedule-cron", "0 4 * * 0").await.unwrap();
    browser.fill("#schedule-sample-files", "7").await.unwrap();
    browser.click("#schedule-add").await.unwrap();
    let schedules_path = format!("/api/v1/hosts/{}/schedules", host.id);
    wait_until(WAIT, "the drill schedule to be stored", || async {
        !get(&host, &schedules_path)
            .await
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await
    .unwrap();
    let stored = get(&host, &schedules_path).await;
    assert_eq!(stored[0]["kind"], "drill", "{stored:#}");
    assert_eq!(
        stored[0]["params"],
        json!({"sample_files": 7}),
        "{stored:#}"
    );

    // The fleet view, from the navigation.
    browser.click("#nav-drills").await.unwrap();
    browser
        .wait_for_text(
            "#drills-summary",
            "1 hosts proved a restore within 30 days",
            WAIT,
        )
        .await
        .unwrap();
    browser
        .wait_for_text("#drills-table", "drills", WAIT)
        .await
        .unwrap();
    assert_eq!(browser.table_rows("#drills-table").await.unwrap(), 1);
    browser.screenshot("fleet-drills").await.unwrap();
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close().await.unwrap();
    host.stop().await;
}
