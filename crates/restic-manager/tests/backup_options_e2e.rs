//! Backup options end to end (DESIGN §11): the real server, the real agent
//! binary and the real restic. Each exclude option is checked with `restic
//! ls` of the snapshot the agent made (against a control backup without
//! options, which holds every file); `skip_if_unchanged` with restic 0.18
//! and 0.19 (and ignored, saying so, with 0.14); the upload limit slowing a
//! backup to a REST repository; and the API refusing bad values naming the
//! field, storing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::noise;
use rm_testkit::rclone::RcloneServer;
use rm_testkit::restic::{release, SID, TRIXIE};
use rm_testkit::{RawAgent, SmallDisk, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "options-e2e-password";
/// A valid cache directory tag (<https://bford.info/cachedir/>).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n";

/// A host whose real agent runs `restic`, with its repository at `repo`.
async fn host(restic: &Path, repo: &str) -> Host {
    let host = Host::start(Path::new(BIN), "options", restic, &[]).await;
    succeeded(&host.set_repository(repo, PASSWORD).await);
    host
}

/// Runs a backup to its end; fails the test unless it succeeded.
async fn backup(host: &Host, params: Value) -> Value {
    let job = host.run("backup", params).await;
    succeeded(&job);
    job
}

async fn log_text(host: &Host, job: &Value) -> String {
    host.logs(job["id"].as_str().unwrap())
        .await
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in snapshot `id`, as `restic ls` lists it.
async fn snapshot_paths(host: &Host, id: &str) -> BTreeSet<String> {
    let listing = host.restic_ok(&["ls", "--json", "--", id]).await;
    String::from_utf8(listing)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["struct_type"] == "node" || v["message_type"] == "node")
        .filter_map(|v| v["path"].as_str().map(str::to_owned))
        .collect()
}

fn snapshot_of(job: &Value) -> String {
    job["stats"]["snapshot_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot id in {job:#}"))
        .to_owned()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn each_exclude_option_leaves_out_what_it_names() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    write(&src.join("keep.txt"), b"kept\n");
    write(&src.join("Photo.JPG"), b"iexcluded\n");
    write(&src.join("cache/CACHEDIR.TAG"), CACHEDIR_TAG.as_bytes());
    write(&src.join("cache/blob.bin"), b"cached\n");
    write(&src.join("notcache/CACHEDIR.TAG"), b"no signature here\n");
    write(&src.join("notcache/blob.bin"), b"not a cache\n");
    write(&src.join("private/.nobackup"), b"");
    write(&src.join("private/secret.txt"), b"left out\n");
    write(&src.join("big.bin"), &noise(2_000_000, 3));
    write(&src.join("small.bin"), &noise(1_000, 4));
    let mnt = src.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let tmpfs = SmallDisk::mount_on(&mnt, 4).unwrap_or_else(|e| {
        panic!("one_file_system needs a second file system under the source: {e}")
    });
    write(&tmpfs.path().join("on-tmpfs.txt"), b"another file system\n");

    let repo = scratch.path().join("repo").display().to_string();
    let host = host(&rm_testkit::restic::binary(), &repo).await;
    let s = src.display().to_string();
    let p = |rel: &str| format!("{s}/{rel}");

    // Without options every one of these files is in the snapshot, so each
    // absence below is the option's doing.
    let control = backup(&host, json!({"paths": [s]})).await;
    let all = snapshot_paths(&host, &snapshot_of(&control)).await;
    for rel in [
        "keep.txt",
        "Photo.JPG",
        "cache/blob.bin",
        "notcache/blob.bin",
        "private/secret.txt",
        "big.bin",
        "small.bin",
        "mnt/on-tmpfs.txt",
    ] {
        assert!(all.contains(&p(rel)), "{rel} missing from {all:#?}");
    }

    let job = backup(
        &host,
        json!({
            "paths": [s],
            "iexcludes": ["*.jpg"],
            "exclude_caches": true,
            "exclude_if_present": [".nobackup"],
            "exclude_larger_than": "1M",
            "one_file_system": true,
        }),
    )
    .await;
    let listed = snapshot_paths(&host, &snapshot_of(&job)).await;
    for (rel, option) in [
        ("Photo.JPG", "iexcludes matches case-insensitively"),
        ("cache/blob.bin", "exclude_caches"),
        ("private/secret.txt", "exclude_if_present"),
        ("big.bin", "exclude_larger_than"),
        ("mnt/on-tmpfs.txt", "one_file_system"),
    ] {
        assert!(!listed.contains(&p(rel)), "{option}: {rel} in {listed:#?}");
    }
    for rel in ["keep.txt", "notcache/blob.bin", "small.bin"] {
        assert!(listed.contains(&p(rel)), "{rel} missing from {listed:#?}");
    }
    host.stop().await;
    drop(tmpfs);
}

/// Two backups of an unchanged tree with `skip_if_unchanged`: the second
/// succeeds, says so, and restic holds one snapshot.
///
/// restic records the metadata of every folder above a source path too, so
/// the tree lives in a folder of its own directly under `/`: under `/tmp`,
/// any other test making a file there would change `/tmp`'s time between
/// the two backups, and restic would rightly see a change.
async fn second_unchanged_backup_makes_no_snapshot(restic: &Path) {
    let scratch = tempfile::Builder::new()
        .prefix("rm-skip-if-unchanged-")
        .tempdir_in("/")
        .unwrap();
    let src = scratch.path().join("src");
    write(&src.join("a.txt"), b"unchanged\n");
    let repo = scratch.path().join("repo").display().to_string();
    let host = host(restic, &repo).await;
    let params = json!({"paths": [src.display().to_string()], "skip_if_unchanged": true});
    let first = backup(&host, params.clone()).await;
    snapshot_of(&first);
    let second = backup(&host, params).await;
    assert_eq!(second["stats"]["snapshot_id"], Value::Null, "{second:#}");
    let log = log_text(&host, &second).await;
    assert!(
        log.contains("nothing changed since the last snapshot: no new snapshot was made"),
        "{log}"
    );
    assert_eq!(host.restic_snapshots().await.len(), 1);
    host.stop().await;
}

/// One after the other: each makes and removes its folder under `/`.
#[tokio::test]
async fn skip_if_unchanged_makes_no_snapshot_with_restic_0_18_and_0_19() {
    for version in [TRIXIE, SID] {
        second_unchanged_backup_makes_no_snapshot(&release(version)).await;
    }
}

#[tokio::test]
async fn skip_if_unchanged_is_ignored_saying_so_with_restic_0_14() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    write(&src.join("a.txt"), b"unchanged\n");
    let repo = scratch.path().join("repo").display().to_string();
    let host = host(Path::new(rm_testkit::restic::DEFAULT), &repo).await;
    let params = json!({"paths": [src.display().to_string()], "skip_if_unchanged": true});
    backup(&host, params.clone()).await;
    let second = backup(&host, params).await;
    snapshot_of(&second);
    let log = log_text(&host, &second).await;
    assert!(
        log.contains("skip_if_unchanged is ignored: restic 0.14.0 has no --skip-if-unchanged"),
        "{log}"
    );
    assert_eq!(host.restic_snapshots().await.len(), 2);
    host.stop().await;
}

#[tokio::test]
async fn an_upload_limit_slows_a_rest_backup() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    // Random, so compression cannot shrink it: 4 MiB at 512 KiB/s is 8 s.
    write(&src.join("random.bin"), &noise(4 << 20, 17));
    let data = scratch.path().join("rest-data");
    std::fs::create_dir_all(&data).unwrap();
    let rclone = RcloneServer::start(&data);
    let host = host(&rm_testkit::restic::binary(), &rclone.url).await;
    let job = backup(
        &host,
        json!({"paths": [src.display().to_string()], "limit_upload_kib": 512}),
    )
    .await;
    // restic's own measure of the backup; a lower bound only, which load
    // on the machine can only raise.
    let took = job["stats"]["total_duration"].as_f64().unwrap();
    assert!(
        took >= 6.0,
        "4 MiB at 512 KiB/s took only {took} s: {job:#}"
    );
    snapshot_of(&job);
    host.stop().await;
}

#[tokio::test]
async fn bad_option_values_are_refused_naming_the_field_and_store_nothing() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host, token) = server.enrolled_host("bad-values").await.unwrap();
    // Online, so a refusal can only be the params' doing.
    let _agent = RawAgent::connect_and_hello(&server.ws_url(), &token)
        .await
        .unwrap();
    let backup = |extra: Value| {
        let mut params = json!({"paths": ["/srv"]});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        params
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "backup",
            backup(json!({"iexcludes": ["*.tmp", ""]})),
            "`params.iexcludes[1]`",
        ),
        (
            "backup",
            backup(json!({"exclude_if_present": [".nobackup", "a/b"]})),
            "`params.exclude_if_present[1]`",
        ),
        (
            "backup",
            backup(json!({"exclude_larger_than": "500MB"})),
            "`params.exclude_larger_than`",
        ),
        (
            "backup",
            backup(json!({"exclude_larger_than": "--help"})),
            "`params.exclude_larger_than`",
        ),
        (
            "backup",
            backup(json!({"exclude_caches": "yes"})),
            "`params.exclude_caches`",
        ),
        (
            "backup",
            backup(json!({"one_file_system": 1})),
            "`params.one_file_system`",
        ),
        (
            "backup",
            backup(json!({"skip_if_unchanged": "true"})),
            "`params.skip_if_unchanged`",
        ),
        (
            "backup",
            backup(json!({"limit_upload_kib": 0})),
            "`params.limit_upload_kib`",
        ),
        (
            "backup",
            backup(json!({"limit_download_kib": -1})),
            "`params.limit_download_kib`",
        ),
        (
            "restore",
            json!({"snapshot_id": "1a2b3c4d", "target": "/tmp/r", "limit_download_kib": 0}),
            "`params.limit_download_kib`",
        ),
        (
            "check",
            json!({"limit_upload_kib": "fast"}),
            "`params.limit_upload_kib`",
        ),
        (
            "prune",
            json!({"limit_upload_kib": 0}),
            "`params.limit_upload_kib`",
        ),
        (
            "forget",
            json!({"keep_last": 1, "limit_download_kib": 0}),
            "`params.limit_download_kib`",
        ),
    ];
    for (kind, params, field) in &cases {
        for (path, request) in [
            (
                format!("/api/v1/hosts/{host}/jobs"),
                json!({"kind": kind, "params": params}),
            ),
            (
                format!("/api/v1/hosts/{host}/schedules"),
                json!({"kind": kind, "cron": "@daily", "params": params}),
            ),
        ] {
            if *kind == "restore" && path.ends_with("schedules") {
                continue;
            }
            let (status, body) = admin.post(&path, request).await.unwrap();
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(status, 400, "{path} {kind} {params}: {body}");
            assert!(
                message.starts_with(field),
                "{path} {kind} {params}: {message}"
            );
        }
    }
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={host}"))
        .await
        .unwrap();
    assert_eq!(jobs, json!([]));
    let (_, schedules) = admin
        .get(&format!("/api/v1/hosts/{host}/schedules"))
        .await
        .unwrap();
    assert_eq!(schedules, json!([]));
    // The good values are taken, for jobs and schedules alike.
    let (status, body) = admin
        .post(
            &format!("/api/v1/hosts/{host}/schedules"),
            json!({"kind": "prune", "cron": "@daily", "params": {"limit_upload_kib": 256}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["params"], json!({"limit_upload_kib": 256}));
}
