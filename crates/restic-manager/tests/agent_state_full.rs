//! When the agent's state directory fills up: the real agent binary with
//! its state directory on a small tmpfs, the real server and the real
//! restic backing up into a repository elsewhere. A backup that runs while
//! the disk is full must not be reported `succeeded`: its end says
//! `failed`, naming the full state directory, while every report still
//! reaches the server (held in memory and sent from there). What the spool
//! had before the disk filled stays whole, and once space is back the next
//! backup succeeds without restarting anything.
//!
//! Mounting the tmpfs needs root; elsewhere the test prints why and skips.
//! CI runs as root and takes the real path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_testkit::{SmallDisk, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "state-full-test-password";
const JOB_LIMIT: Duration = Duration::from_secs(120);

/// Unmounts a bind mount when dropped.
struct Unbind(PathBuf);

impl Drop for Unbind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Every line of a spool file is whole and valid JSON.
fn assert_whole_lines(bytes: &[u8], what: &str) {
    assert!(bytes.ends_with(b"\n"), "{what}: ends with a whole line");
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        serde_json::from_slice::<Value>(line)
            .unwrap_or_else(|e| panic!("{what}: a torn or unreadable line: {e}"));
    }
}

#[tokio::test]
async fn a_full_state_dir_fails_the_job_honestly_and_the_next_one_works() {
    let disk = match SmallDisk::mount(16) {
        Ok(disk) => disk,
        Err(e) => {
            eprintln!("skipping the full-state-dir test: {e}");
            return;
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let state_dir = disk.path().join("agent");
    let agent = server
        .enrolled_agent_in(
            Path::new(BIN),
            "state-full-01",
            &rm_testkit::restic::binary(),
            &[],
            &state_dir,
        )
        .await
        .unwrap();
    // restic's cache lives in the state directory too; on a full disk
    // restic stalls writing it, which is restic's affair, not the spool's.
    // It goes on a disk with room, so what is tested is the agent alone.
    let cache = state_dir.join("cache");
    let cache_elsewhere = scratch.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&cache_elsewhere).unwrap();
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&cache_elsewhere)
        .arg(&cache)
        .status()
        .unwrap();
    assert!(bound.success(), "mount --bind the restic cache");
    let _unbind = Unbind(cache);
    let host = agent.host_id.clone();
    let repo = scratch.path().join("repo");
    admin
        .set_repository(&host, &repo.display().to_string(), PASSWORD)
        .await
        .unwrap();
    let small = scratch.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("a.txt"), "a\n").unwrap();
    let backup_small = json!({"paths": [small.display().to_string()]});
    let first = admin
        .start_job(&host, "backup", backup_small.clone())
        .await
        .unwrap();
    let job = admin.finished_job(&first, JOB_LIMIT).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job:#}");

    // A backup runs; its start is spooled before the disk fills up.
    let slow = rm_testkit::fixtures::slow_source(scratch.path());
    let during = admin
        .start_job(
            &host,
            "backup",
            json!({"paths": [slow.display().to_string()]}),
        )
        .await
        .unwrap();
    admin
        .wait_job_status(&during, "running", Duration::from_secs(30))
        .await
        .unwrap();
    let spool_file = state_dir.join("spool").join(format!("{during}.jsonl"));
    let before = std::fs::read(&spool_file).unwrap();
    assert_whole_lines(&before, "the spool file before the fill");
    assert!(disk.fill().unwrap() > 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What it had is kept whole: nothing cut, nothing torn appended.
    if let Ok(mid) = std::fs::read(&spool_file) {
        assert!(mid.starts_with(&before), "the spool file kept what it had");
        assert_whole_lines(&mid, "the spool file while the disk is full");
    }

    // Whether that job's last reports still fit in the last page of its
    // file is chance; either it ends well with every line, or it says why
    // not. Never a success with something missing.
    let job = match admin.finished_job(&during, JOB_LIMIT).await {
        Ok(job) => job,
        Err(e) => panic!("{e}; the agent's log:\n{}", agent.process.log()),
    };
    let reason = format!(
        "the agent could not keep this job's reports: {} is full (No space left on device)",
        state_dir.display()
    );
    if job["status"] != "succeeded" {
        let error = job["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(&reason), "{job:#}");
    }
    admin.dense_log_count(&during).await.unwrap();

    // A backup that starts on the full disk cannot spool a thing: the
    // server hears the truth, failed and why, not succeeded. (Filled
    // again: the delivered job's file was deleted, which freed a little.)
    disk.fill().unwrap();
    let full = admin
        .start_job(&host, "backup", backup_small.clone())
        .await
        .unwrap();
    let job = match admin.finished_job(&full, JOB_LIMIT).await {
        Ok(job) => job,
        Err(e) => panic!("{e}; the agent's log:\n{}", agent.process.log()),
    };
    eprintln!("the job that ran on a full state dir: {job:#}");
    assert_eq!(job["status"], "failed", "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&reason), "{error}");
    assert!(error.contains("the job's start"), "{error}");
    assert!(
        error.contains("What restic itself reported: succeeded"),
        "{error}"
    );
    // restic did its part: the snapshot is there and the server knows it.
    assert!(job["stats"]["snapshot_id"].is_string(), "{job:#}");
    // Held in memory and sent from there: every line still arrived.
    assert!(admin.dense_log_count(&full).await.unwrap() > 0);
    let log = agent.process.log();
    let loud = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("job reports cannot be written to its spool"))
        .count();
    assert_eq!(loud, 1, "one ERROR for the episode:\n{log}");
    assert!(
        log.contains("free of 16.0 MiB"),
        "the free space is named:\n{log}"
    );

    // Space back: the next backup just works, without a restart.
    disk.free().unwrap();
    let after = admin
        .start_job(&host, "backup", backup_small.clone())
        .await
        .unwrap();
    let job = admin.finished_job(&after, JOB_LIMIT).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert!(job["error"].is_null(), "{job:#}");
    assert!(admin.dense_log_count(&after).await.unwrap() > 0);
    agent
        .process
        .wait_for_log("can be written again", Duration::from_secs(10))
        .await
        .unwrap();
    let pid = agent.process.pid();
    assert!(pid.is_some(), "the same agent process throughout");
    drop(agent);
    drop(server);
}
