//! An audited change and its audit entry commit together or not at all,
//! shown on the real server binary with its data directory on a small
//! tmpfs: while the disk is full, audited changes (a schedule, a user, an
//! enrolment, a host deletion, a login) answer 503 `storage_unavailable`;
//! once space is back, the data and the audit log agree — every change
//! has its entry, and nothing refused left a change or an entry behind.
//!
//! Mounting the tmpfs needs root; elsewhere the test prints why and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use rm_testkit::{wait_until, Api, ServerProcess, SmallDisk, ADMIN_PASSWORD};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

/// The audit entries whose action is `action`, newest first.
async fn entries(admin: &Api, action: &str) -> Vec<Value> {
    let (status, body) = admin
        .get(&format!("/api/v1/audit?action={action}&limit=500"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().unwrap().clone()
}

fn targets(entries: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = entries
        .iter()
        .map(|e| e["target_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn assert_storage_unavailable(what: &str, status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "storage_unavailable",
        "{what}: {body}"
    );
}

#[tokio::test]
async fn on_a_full_disk_no_change_is_made_without_its_audit_entry() {
    let disk = match SmallDisk::mount(32) {
        Ok(disk) => disk,
        Err(e) => {
            eprintln!("skipping the full-disk audit test: {e}");
            return;
        }
    };
    let server = ServerProcess::start_on_disk(Path::new(BIN), &disk, &[])
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let token = admin
        .create_enrollment_token(Some("kept"), None)
        .await
        .unwrap();
    let host = admin
        .enroll(&token.token, None, "kept.example")
        .await
        .unwrap()
        .host_id;
    let schedule = json!({"kind": "check", "cron": "0 4 * * *", "params": {}});
    let (status, body) = admin
        .post(&format!("/api/v1/hosts/{host}/schedules"), schedule.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Spent while the disk is full.
    let spare = admin.create_enrollment_token(None, None).await.unwrap();

    disk.fill().unwrap();
    let (status, body) = admin
        .post(&format!("/api/v1/hosts/{host}/schedules"), schedule.clone())
        .await
        .unwrap();
    assert_storage_unavailable("schedule.create", status, &body);
    let (status, body) = admin
        .post(
            "/api/v1/users",
            json!({"username": "bob", "password": "a long enough password", "role": "admin"}),
        )
        .await
        .unwrap();
    assert_storage_unavailable("user.create", status, &body);
    let (status, body) = server
        .anonymous()
        .post(
            "/api/v1/agents/enroll",
            json!({"token": spare.token, "hostname": "lost.example"}),
        )
        .await
        .unwrap();
    assert_storage_unavailable("host.enroll", status, &body);
    let (status, body) = admin
        .delete(&format!("/api/v1/hosts/{host}"))
        .await
        .unwrap();
    assert_storage_unavailable("host.delete", status, &body);
    let (status, body) = server
        .anonymous()
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await
        .unwrap();
    assert_storage_unavailable("auth.login", status, &body);

    disk.free().unwrap();
    wait_until(Duration::from_secs(15), "/readyz to say ready", || async {
        server.anonymous().get("/readyz").await.unwrap().0 == StatusCode::OK
    })
    .await
    .unwrap();

    // The data and the log agree: one schedule with one entry, no bob and
    // no entry for him, the host still there and not logged deleted, no
    // host enrolled with the spare token (which still works), and one login.
    let (status, schedules) = admin
        .get(&format!("/api/v1/hosts/{host}/schedules"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{schedules}");
    let ids: Vec<String> = schedules
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{schedules}");
    assert_eq!(targets(&entries(&admin, "schedule.create").await), ids);
    let (_, users) = admin.get("/api/v1/users").await.unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    assert!(entries(&admin, "user.create").await.is_empty());
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].id, host);
    assert!(entries(&admin, "host.delete").await.is_empty());
    assert_eq!(targets(&entries(&admin, "host.enroll").await), vec![host]);
    admin
        .enroll(&spare.token, None, "later.example")
        .await
        .unwrap();
    assert_eq!(entries(&admin, "host.enroll").await.len(), 2);
    // `server.admin()` logged in once; the refused login left nothing.
    assert_eq!(entries(&admin, "auth.login").await.len(), 1);
}
