//! Backups end to end: the real server, the real agent binary and the real
//! restic, against a local folder repository and a REST repository served
//! by `rclone serve restic` on 127.0.0.1. What the API reports is checked
//! against what restic itself says about the repository.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::{assert_same_tree, make_tree};
use rm_testkit::rclone::{free_port, RcloneServer};
use rm_testkit::restic::version;
use rm_testkit::wait_until;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "e2e-repository-password";

async fn host_with_agent(restic_bin: &Path, extra_env: &[(&str, &str)]) -> Host {
    Host::start(Path::new(BIN), "e2e", restic_bin, extra_env).await
}

/// The ids restic itself lists, sorted.
async fn restic_snapshot_ids(host: &Host) -> Vec<String> {
    let mut ids: Vec<String> = host
        .restic_snapshots()
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The whole life of a repository, as an operator would drive it.
async fn scenario(host: &Host, repo: &str, scratch: &Path) {
    let init = host.set_repository(repo, PASSWORD).await;
    succeeded(&init);
    assert_eq!(init["trigger"], "system");

    let src = scratch.join("src");
    make_tree(&src);
    // A folder whose name looks like a flag is backed up as a folder.
    std::fs::create_dir_all(src.join("-x")).unwrap();
    std::fs::write(src.join("-x").join("flaglike.txt"), b"not a flag\n").unwrap();
    let src_path = src.display().to_string();

    let first = host
        .run("backup", json!({"paths": [src_path], "tags": ["e2e"]}))
        .await;
    succeeded(&first);
    assert!(
        first["stats"]["files_new"].as_u64().unwrap() >= 6,
        "{:#}",
        first["stats"]
    );
    let lines = host.logs(first["id"].as_str().unwrap()).await;
    assert!(!lines.is_empty(), "a backup logs at least its summary");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "log seqs are dense"
    );

    let stored = host.wait_snapshots(1).await;
    assert_eq!(stored[0]["paths"], json!([src_path]));
    assert_eq!(stored[0]["tags"], json!(["e2e"]));
    let ids: Vec<String> = stored
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, restic_snapshot_ids(host).await);

    let check = host.run("check", json!({})).await;
    succeeded(&check);
    assert_eq!(check["stats"]["errors"], false, "{check:#}");
    if version().has_check_json() {
        // 0.18+: restic's own summary.
        assert_eq!(check["stats"]["num_errors"], 0, "{check:#}");
    }

    std::fs::write(src.join("nested").join("new.txt"), b"second backup\n").unwrap();
    succeeded(&host.run("backup", json!({"paths": [src_path]})).await);
    host.wait_snapshots(2).await;

    let forget = host
        .run("forget", json!({"keep_last": 1, "prune": true}))
        .await;
    succeeded(&forget);
    assert!(
        forget["stats"]["forget"].is_object(),
        "{:#}",
        forget["stats"]
    );
    let remaining = host.wait_snapshots(1).await;
    let remaining_id = remaining[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(restic_snapshot_ids(host).await, vec![remaining_id.clone()]);

    let target = scratch.join("restore");
    let nested = format!("{src_path}/nested");
    let restore = host
        .run(
            "restore",
            json!({"snapshot_id": remaining_id, "include": [nested], "target": target.display().to_string()}),
        )
        .await;
    succeeded(&restore);
    // restic keeps the full path under the target.
    let restored: PathBuf = target.join(src.strip_prefix("/").unwrap()).join("nested");
    assert_same_tree(&src.join("nested"), &restored);
    if version().has_restore_json() {
        // 0.16+: the restore's summary is the job's stats, like a backup's.
        let bytes: u64 = std::fs::read_dir(&restored)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        assert!(
            restore["stats"]["files_restored"].as_u64() >= Some(2),
            "{restore:#}"
        );
        assert!(
            restore["stats"]["bytes_restored"].as_u64() >= Some(bytes),
            "{restore:#}"
        );
    } else {
        assert_eq!(restore["stats"], json!({}), "{restore:#}");
    }

    // The statistics are refreshed after the jobs that change the
    // repository, in the background (yielding to the restore): wait for
    // the refresh that knows of the prune.
    let repo_stats = || async {
        host.admin
            .get(&format!("/api/v1/hosts/{}/repo-stats", host.id))
            .await
            .unwrap()
            .1
    };
    wait_until(
        Duration::from_secs(60),
        "the statistics refreshed after the prune",
        || async { repo_stats().await["latest"]["last_prune_at"].is_string() },
    )
    .await
    .unwrap();
    let stats = repo_stats().await;
    assert_eq!(stats["latest"]["snapshot_count"], 1, "{stats:#}");
    assert_eq!(
        stats["latest"]["last_check_status"], "succeeded",
        "{stats:#}"
    );
    assert!(stats["latest"]["last_prune_at"].is_string(), "{stats:#}");
    assert!(
        stats["latest"]["last_prune_freed_bytes"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
    assert_eq!(stats["latest"]["lock_present"], false, "{stats:#}");
    assert!(
        stats["latest"]["raw_size_bytes"].as_u64().unwrap() > 3_000_000,
        "{stats:#}"
    );
    let view = host.admin.host(&host.id).await.unwrap();
    assert_eq!(view.last_backup_status.as_deref(), Some("succeeded"));
    assert!(view.repo_size_bytes.unwrap() > 3_000_000);
}

#[tokio::test]
async fn a_local_repository_goes_through_init_backup_check_forget_prune_and_restore() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo").display().to_string();
    scenario(&host, &repo, scratch.path()).await;
    host.stop().await;
}

#[tokio::test]
async fn a_rest_repository_served_by_rclone_goes_through_the_same() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("rest-data");
    std::fs::create_dir_all(&data).unwrap();
    let rclone = RcloneServer::start(&data);
    scenario(&host, &rclone.url, scratch.path()).await;
    host.stop().await;
}

#[tokio::test]
async fn init_on_an_existing_repository_is_a_no_op_and_a_wrong_password_fails_clearly() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    let scratch = host.scratch();
    let repo = scratch.join("repo").display().to_string();
    succeeded(&host.set_repository(&repo, PASSWORD).await);
    // Setting the same repository again initialises nothing.
    let again = host.set_repository(&repo, PASSWORD).await;
    succeeded(&again);
    assert_eq!(again["stats"]["already_initialized"], true);

    let wrong = host.set_repository(&repo, "not-the-password").await;
    assert_eq!(wrong["status"], "failed");
    let error = wrong["error"].as_str().unwrap();
    assert!(error.contains("wrong password"), "{error}");
    if version().has_exit_error_json() {
        // 0.18+: restic's exit_error message, not its JSON line.
        assert!(!error.contains("message_type"), "{error}");
    }
    let src = scratch.join("src");
    make_tree(&src);
    let backup = host
        .run("backup", json!({"paths": [src.display().to_string()]}))
        .await;
    assert_eq!(backup["status"], "failed");
    assert!(
        backup["error"].as_str().unwrap().contains("wrong password"),
        "{backup:#}"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_backup_with_a_missing_path_is_partial_on_every_release() {
    // 0.14–0.18 exit 0 and say "does not exist, skipping"; 0.19 exits 3.
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let scratch = host.scratch();
    let src = scratch.join("src");
    make_tree(&src);
    let missing = scratch.join("gone").display().to_string();
    let backup = host
        .run(
            "backup",
            json!({"paths": [src.display().to_string(), missing]}),
        )
        .await;
    assert_eq!(backup["status"], "partial", "{backup:#}");
    let error = backup["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{missing} does not exist, skipping")),
        "{error}"
    );
    // The snapshot of what was there is kept.
    assert_eq!(host.wait_snapshots(1).await.len(), 1);
    host.stop().await;
}

#[tokio::test]
async fn an_unreachable_rest_repository_fails_within_the_timeout() {
    let host = host_with_agent(
        &rm_testkit::restic::binary(),
        &[("RM_COMMAND_TIMEOUT", "20")],
    )
    .await;
    let url = format!("rest:http://127.0.0.1:{}/", free_port());
    let started = std::time::Instant::now();
    let init = host.set_repository(&url, PASSWORD).await;
    assert_eq!(init["status"], "failed", "{init:#}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        init["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{init:#}"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_running_backup_can_be_cancelled() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let scratch = host.scratch();
    // A large sparse file keeps restic busy long enough to cancel it.
    let src = scratch.join("big");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::File::create(src.join("sparse.img"))
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let id = host
        .start_job("backup", json!({"paths": [src.display().to_string()]}))
        .await;
    wait_until(Duration::from_secs(30), "the backup to run", || async {
        host.job(&id).await["status"] == "running"
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = host
        .admin
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let job = host.finished(&id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    // The host is free again: the next job runs.
    succeeded(&host.run("snapshots", json!({})).await);
    host.stop().await;
}

#[tokio::test]
async fn paths_that_look_like_flags_are_refused_before_restic_sees_them() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    for bad in ["--password-file=/etc/shadow", "-r", "relative"] {
        let (status, body) = host.post_job("backup", json!({"paths": [bad]})).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("params.paths[0]"));
    }
    host.stop().await;
}

#[tokio::test]
async fn a_host_without_restic_fails_its_jobs_with_a_clear_error() {
    let missing = PathBuf::from("/nonexistent/restic");
    let host = host_with_agent(&missing, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo").display().to_string();
    let init = host.set_repository(&repo, PASSWORD).await;
    assert_eq!(init["status"], "failed");
    let error = init["error"].as_str().unwrap();
    assert!(
        error.contains("restic is not usable") && error.contains("not found"),
        "{error}"
    );
    host.stop().await;
}

/// The names directly in `dir` and the bytes of `agent.json`: what a
/// restore into the state directory would have changed.
fn state_dir_snapshot(dir: &Path) -> (Vec<String>, Vec<u8>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (names, std::fs::read(dir.join("agent.json")).unwrap())
}

#[tokio::test]
async fn restores_into_the_state_dir_are_refused_even_with_the_opt_in_and_write_nothing() {
    // Even with the opt-in for system folders, the state dir is off limits.
    let host = host_with_agent(
        &rm_testkit::restic::binary(),
        &[("RM_ALLOW_RESTORE_TO_SYSTEM_PATHS", "true")],
    )
    .await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let scratch = host.scratch();
    let src = scratch.join("src");
    make_tree(&src);
    let src_path = src.display().to_string();
    succeeded(&host.run("backup", json!({"paths": [src_path]})).await);
    let snapshot = host.wait_snapshots(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let state_dir = host.agent.state_dir.clone();
    let before = state_dir_snapshot(&state_dir);
    let state = state_dir.display().to_string();
    let inside = state_dir.join("restored").display().to_string();
    let above = state_dir.parent().unwrap().display().to_string();
    for (target, include) in [
        (state.as_str(), json!([])),
        (inside.as_str(), json!([format!("{src_path}/nested")])),
        // The state dir's parent: the whole snapshot would land around it.
        (above.as_str(), json!([])),
    ] {
        let job = host
            .run(
                "restore",
                json!({"snapshot_id": snapshot, "include": include, "target": target}),
            )
            .await;
        assert_eq!(job["status"], "failed", "{job:#}");
        let error = job["error"].as_str().unwrap();
        assert!(
            error.contains("bad_params") && error.contains("state directory"),
            "{error}"
        );
        assert_eq!(
            job["started_at"],
            Value::Null,
            "restic never started: {job:#}"
        );
    }
    assert_eq!(state_dir_snapshot(&state_dir), before);
    assert!(!state_dir.join("restored").exists());
    assert!(!state_dir.join(src.strip_prefix("/").unwrap()).exists());

    // A restore elsewhere still works.
    let target = scratch.join("restore");
    succeeded(
        &host
            .run(
                "restore",
                json!({"snapshot_id": snapshot, "target": target.display().to_string()}),
            )
            .await,
    );
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    host.stop().await;
}

#[tokio::test]
async fn restores_into_system_folders_need_the_hosts_opt_in() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let scratch = host.scratch();
    let src = scratch.join("src");
    make_tree(&src);
    succeeded(
        &host
            .run("backup", json!({"paths": [src.display().to_string()]}))
            .await,
    );
    let snapshot = host.wait_snapshots(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Chosen so that even a restic that ran anyway would write nothing
    // outside the scratch folder: the includes name no path in the
    // snapshot, and the whole snapshot onto `/` rewrites only its source.
    let never = "/etc/restic-manager-test-never-written";
    for (target, include, says) in [
        ("/etc", json!([never]), "protected folder `/etc`"),
        ("/", json!([never]), "protected folder `/etc`"),
        ("/", json!([]), "onto `/`"),
    ] {
        let job = host
            .run(
                "restore",
                json!({"snapshot_id": snapshot, "include": include, "target": target}),
            )
            .await;
        assert_eq!(job["status"], "failed", "{job:#}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(says), "{error}");
        assert!(error.contains("--allow-restore-to-system-paths"), "{error}");
    }
    assert!(!Path::new(never).exists());
    assert!(!Path::new("/etc")
        .join(never.trim_start_matches('/'))
        .exists());
    host.stop().await;
}

/// Bytes, length and modification time: enough to see a file rewritten.
fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    let meta = std::fs::metadata(path).unwrap();
    (std::fs::read(path).unwrap(), meta.modified().unwrap())
}

#[tokio::test]
async fn restores_into_root_spool_ssh_folders_or_the_agent_itself_are_refused_and_write_nothing() {
    let host = host_with_agent(&rm_testkit::restic::binary(), &[]).await;
    succeeded(&host.set_local_repository(PASSWORD).await);
    let scratch = host.scratch();
    // A home folder whose snapshot copy holds login keys.
    let src = scratch.join("src");
    make_tree(&src);
    let alice = src.join("home/alice");
    std::fs::create_dir_all(alice.join(".ssh")).unwrap();
    std::fs::write(
        alice.join(".ssh/authorized_keys"),
        "ssh-ed25519 AAAA attacker\n",
    )
    .unwrap();
    std::fs::write(alice.join("notes.txt"), "alice's notes\n").unwrap();
    let src_path = src.display().to_string();
    succeeded(&host.run("backup", json!({"paths": [src_path]})).await);
    let snapshot = host.wait_snapshots(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // What a restore let through would write: the keys changed back, the
    // notes recreated.
    std::fs::write(
        alice.join(".ssh/authorized_keys"),
        "ssh-ed25519 AAAA alice\n",
    )
    .unwrap();
    std::fs::remove_file(alice.join("notes.txt")).unwrap();
    let keys_before = fingerprint(&alice.join(".ssh/authorized_keys"));

    let never = "/restic-manager-test-never-written";
    let root_target = format!("/root{never}");
    let spool_target = format!("/var/spool{never}");
    let ssh_target = scratch.join("restore/.ssh").display().to_string();
    let alice_path = alice.display().to_string();
    let scratch_target = scratch.join("restore").display().to_string();
    let agent_binary = std::fs::canonicalize(BIN).unwrap();
    let binary_before = fingerprint(&agent_binary);
    let binary = agent_binary.display().to_string();
    // (target, include, what the refusal names, whether the guard refused
    // from the listing, i.e. after restic ls ran)
    let cases = [
        (
            root_target.as_str(),
            json!([never]),
            format!("`{root_target}{never}`, inside the protected folder `/root`"),
            false,
        ),
        (
            spool_target.as_str(),
            json!([]),
            format!("`{spool_target}`, inside the protected folder `/var/spool`"),
            false,
        ),
        (
            ssh_target.as_str(),
            json!([]),
            format!("`{ssh_target}`, inside a `.ssh` folder"),
            false,
        ),
        // In place: only the listing shows the `.ssh` folder below the include.
        (
            "/",
            json!([alice_path]),
            format!("`{alice_path}/.ssh`, inside a `.ssh` folder"),
            true,
        ),
        // Into a scratch folder: `.ssh` folders are protected wherever they are.
        (
            scratch_target.as_str(),
            json!([]),
            format!("`{scratch_target}{alice_path}/.ssh`, inside a `.ssh` folder"),
            true,
        ),
        (
            "/",
            json!([binary]),
            format!("`{binary}`, this agent's own program"),
            false,
        ),
    ];
    for (target, include, says, listed) in cases {
        let job = host
            .run(
                "restore",
                json!({"snapshot_id": snapshot, "include": include, "target": target}),
            )
            .await;
        assert_eq!(job["status"], "failed", "{target}: {job:#}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains("the restore guard refused"), "{error}");
        assert!(
            error.contains(&says),
            "{target}: expected {says} in {error}"
        );
        if listed {
            let logs = host.logs(job["id"].as_str().unwrap()).await;
            let text: Vec<&str> = logs.iter().filter_map(|l| l["text"].as_str()).collect();
            assert!(
                text.iter().any(|l| l.contains("checking every path")),
                "{text:?}"
            );
            assert!(!text.iter().any(|l| l.contains("let all")), "{text:?}");
        } else {
            assert!(error.contains("bad_params"), "{error}");
            assert_eq!(
                job["started_at"],
                Value::Null,
                "restic never started: {job:#}"
            );
        }
    }
    assert!(!Path::new(&root_target).exists());
    assert!(!Path::new(&spool_target).exists());
    assert!(!scratch.join("restore").exists());
    assert_eq!(
        fingerprint(&alice.join(".ssh/authorized_keys")),
        keys_before
    );
    assert!(
        !alice.join("notes.txt").exists(),
        "restic restore never ran"
    );
    assert_eq!(fingerprint(&agent_binary), binary_before);

    // Parts without a `.ssh` folder restore, in place too.
    let nested = src.join("nested").display().to_string();
    std::fs::remove_file(src.join("nested/a.txt")).unwrap();
    succeeded(
        &host
            .run(
                "restore",
                json!({"snapshot_id": snapshot, "include": [nested], "target": "/"}),
            )
            .await,
    );
    assert_eq!(std::fs::read(src.join("nested/a.txt")).unwrap(), b"a\n");
    host.stop().await;
}
