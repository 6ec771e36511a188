//! The dashboard's numbers after the job's end stopped waiting for them: a
//! job is reported finished when restic exits, the snapshot a backup saved
//! arrives with it (`snapshot.added`, restic ≥ 0.15), and the full list and
//! the repository statistics are refreshed afterwards, yielding to the next
//! job. Checked with the real server, agent and restic against what restic
//! itself says about the repository.
//!
//! `RM_TEST_RESTIC` picks the restic binary (see `rm_testkit::restic`);
//! scripts/test runs this file against every release.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_testkit::fixtures::make_tree;
use rm_testkit::{wait_until, Api, RunningAgent, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "report-repository-password";
const JOB_LIMIT: Duration = Duration::from_secs(120);
/// The refresh runs three restic commands after the job.
const REFRESH_LIMIT: Duration = Duration::from_secs(60);

fn restic_bin() -> PathBuf {
    rm_testkit::restic::binary()
}

struct Host {
    _server: TestServer,
    admin: Api,
    id: String,
    agent: RunningAgent,
    repo: String,
    restic: PathBuf,
}

async fn host(restic: &Path, repo: &Path) -> Host {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let agent = server
        .enrolled_agent(Path::new(BIN), "report", restic, &[])
        .await
        .unwrap();
    let host = Host {
        id: agent.host_id.clone(),
        _server: server,
        admin,
        agent,
        repo: repo.display().to_string(),
        restic: restic_bin(),
    };
    host.admin
        .set_repository(&host.id, &host.repo, PASSWORD)
        .await
        .unwrap();
    let (_, jobs) = host
        .admin
        .get(&format!("/api/v1/jobs?host_id={}&limit=1", host.id))
        .await
        .unwrap();
    let init = host.finished(jobs[0]["id"].as_str().unwrap()).await;
    assert_eq!(init["status"], "succeeded", "{init:#}");
    host
}

impl Host {
    async fn run(&self, kind: &str, params: Value) -> Value {
        let id = self.admin.start_job(&self.id, kind, params).await.unwrap();
        let job = self.finished(&id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        job
    }

    async fn finished(&self, id: &str) -> Value {
        self.admin
            .finished_job(id, JOB_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", self.agent.process.log()))
    }

    async fn host_view(&self) -> Value {
        self.admin
            .get(&format!("/api/v1/hosts/{}", self.id))
            .await
            .unwrap()
            .1
    }

    async fn listed_ids(&self) -> Vec<String> {
        let (_, list) = self
            .admin
            .get(&format!("/api/v1/hosts/{}/snapshots", self.id))
            .await
            .unwrap();
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// restic's own answer, run directly.
    async fn restic_json(&self, args: &[&str]) -> Value {
        let out = tokio::process::Command::new(&self.restic)
            .args(args)
            .env("RESTIC_REPOSITORY", &self.repo)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("RESTIC_CACHE_DIR", format!("{}-cache", self.repo))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn restic_ids(&self) -> Vec<String> {
        let list = self.restic_json(&["snapshots", "--json"]).await;
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Waits until the dashboard's numbers are restic's: the snapshot list
    /// (ids) and count, and the repository size (`stats --mode raw-data`).
    async fn wait_matching_restic(&self, what: &str) {
        let ids = self.restic_ids().await;
        let raw = self
            .restic_json(&["stats", "--json", "--mode", "raw-data"])
            .await["total_size"]
            .as_u64()
            .unwrap();
        let matched = wait_until(REFRESH_LIMIT, what, || async {
            let host = self.host_view().await;
            self.listed_ids().await == ids
                && host["snapshot_count"].as_u64() == Some(ids.len() as u64)
                && host["repo_size_bytes"].as_u64() == Some(raw)
        })
        .await;
        if let Err(e) = matched {
            panic!(
                "{e}: restic lists {ids:?} in {raw} bytes; the API shows {:?} and {:#}\nagent log:\n{}",
                self.listed_ids().await,
                self.host_view().await,
                self.agent.process.log()
            );
        }
    }
}

fn restic_version(restic: &Path) -> (u32, u32) {
    let out = std::process::Command::new(restic)
        .arg("version")
        .output()
        .unwrap();
    let version = rm_restic::parse_version_output(&String::from_utf8_lossy(&out.stdout)).unwrap();
    (version.major, version.minor)
}

#[tokio::test]
async fn the_dashboard_matches_restic_after_backups_forget_and_prune() {
    let scratch = tempfile::tempdir().unwrap();
    let restic = restic_bin();
    let repo = scratch.path().join("repo");
    let host = host(&restic, &repo).await;
    let src = scratch.path().join("src");
    make_tree(&src);
    let paths = json!([src.display().to_string()]);

    let mut backups = Vec::new();
    for round in 0..3 {
        std::fs::write(src.join("round.txt"), format!("round {round}\n")).unwrap();
        let job = host
            .run("backup", json!({"paths": paths, "tags": ["report"]}))
            .await;
        // From restic 0.15 the backup's own summary names the snapshot in
        // full, and the agent reports it before the job's end: it is listed
        // as soon as the job shows as finished, with no refresh yet.
        if restic_version(&restic) >= (0, 15) {
            let saved = job["stats"]["snapshot_id"].as_str().unwrap().to_owned();
            assert!(
                host.listed_ids().await.contains(&saved),
                "{saved} is not listed right after its backup"
            );
        }
        // The last backup time is the job's.
        let view = host.host_view().await;
        assert_eq!(view["last_backup_at"], job["finished_at"], "{view:#}");
        assert_eq!(view["last_backup_status"], "succeeded");
        backups.push(job);
        host.wait_matching_restic(&format!("the numbers after backup {round}"))
            .await;
    }
    // What the list shows of a snapshot is restic's (after the refresh).
    let (_, list) = host
        .admin
        .get(&format!("/api/v1/hosts/{}/snapshots", host.id))
        .await
        .unwrap();
    let restic_list = host.restic_json(&["snapshots", "--json"]).await;
    for shown in list.as_array().unwrap() {
        let theirs = restic_list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == shown["id"])
            .unwrap();
        assert_eq!(shown["paths"], theirs["paths"]);
        assert_eq!(shown["tags"], theirs["tags"]);
        assert_eq!(shown["hostname"], theirs["hostname"]);
        assert_eq!(
            shown["size_bytes"],
            theirs["summary"]["total_bytes_processed"]
        );
    }

    host.run("forget", json!({"keep_last": 1})).await;
    host.wait_matching_restic("the numbers after forget").await;
    assert_eq!(host.restic_ids().await.len(), 1);

    host.run("prune", json!({})).await;
    // The refresh after the prune carries it (raw-data counts only what
    // snapshots use, so the size may have matched since the forget).
    wait_until(REFRESH_LIMIT, "the refresh after the prune", || async {
        let (_, stats) = host
            .admin
            .get(&format!("/api/v1/hosts/{}/repo-stats", host.id))
            .await
            .unwrap();
        stats["latest"]["last_prune_at"].is_string()
    })
    .await
    .unwrap();
    host.wait_matching_restic("the numbers after prune").await;
    let (_, stats) = host
        .admin
        .get(&format!("/api/v1/hosts/{}/repo-stats", host.id))
        .await
        .unwrap();
    assert_eq!(stats["latest"]["snapshot_count"], 1, "{stats:#}");
}

/// A "restic" whose `stats` never ends on its own (until stopped), so a
/// refresh after a job runs until something stops it.
fn restic_with_endless_stats(dir: &Path, real: &Path) -> PathBuf {
    let path = dir.join("restic-endless-stats");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nfor arg; do [ \"$arg\" = stats ] && exec sleep 3600; done\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn the_next_job_is_not_held_up_by_a_refresh() {
    let scratch = tempfile::tempdir().unwrap();
    let restic = restic_with_endless_stats(scratch.path(), &restic_bin());
    let repo = scratch.path().join("repo");
    let host = host(&restic, &repo).await;
    let src = scratch.path().join("src");
    make_tree(&src);
    let paths = json!([src.display().to_string()]);

    // Each backup ends although the refresh after the job before it (and
    // after itself) never would: a job that waited for one would never
    // finish.
    for _ in 0..3 {
        host.run("backup", json!({"paths": paths})).await;
    }
    host.agent
        .process
        .wait_for_log("the repository refresh stops", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(host.restic_ids().await.len(), 3);
    // Stopping the agent stops its refresh too (and restic with it).
    let Host { agent, .. } = host;
    let status = agent
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
