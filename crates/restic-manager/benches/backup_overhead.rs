//! What restic-manager adds to a backup: the same backups through the
//! real server and agent (release binaries, child processes on
//! 127.0.0.1) and with plain `restic`, alternating, on the same data.
//!
//! Three measurements, each the median (with min and max) of
//! `RM_BENCH_RUNS` runs (default 5) per side:
//!
//! 1. **unchanged re-backup** of `/etc` plus a generated source tree
//!    (`RM_BENCH_TREE_FILES`, default 3,000 small files) into one local
//!    repository: from `POST /api/v1/hosts/{id}/jobs` to the API showing
//!    the job finished, against the wall time of `restic backup PATHS` run
//!    as a user would (repository and password in the environment, its
//!    cache in the user's cache folder, kept between runs). Target ≤ 1.10.
//! 2. **first backup** of `RM_BENCH_FIRST_MB` (400) MB of incompressible
//!    data in `RM_BENCH_FIRST_FILES` (5,000) files into a fresh repository
//!    each run (initialised beforehand, outside the timing, on both
//!    sides). Target ≤ 1.03.
//! 3. **first listing** of a folder of the latest snapshot through
//!    `GET …/snapshots/{id}/tree?path=` (a fresh login each run, so the
//!    server's per-session cache is empty) against `restic ls SNAPSHOT
//!    FOLDER`, target ≤ 1.2; and the second, cached listing.
//!
//! After each restic-manager run the bench waits until the agent's
//! repository statistics for it are stored (the agent may gather them after
//! the job's end) and the machine is quiet, so the plain run that follows
//! does not share the cores with work the agent is still doing.
//!
//! Run with `cargo bench -p restic-manager --bench backup_overhead`.
//! `RM_BENCH_RESTIC` picks the restic binary (default: `restic` on `PATH`),
//! `RM_BENCH_BIN` the restic-manager binary (default: this build's), e.g.
//! to measure an older build against the same data.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use rm_testkit::fixtures::many_files;
use rm_testkit::{wait_until, Api, RunningAgent, ServerProcess};
use serde_json::{json, Value};
use tokio::time::Instant;

const PASSWORD: &str = "bench-repository-password";
const JOB_LIMIT: Duration = Duration::from_secs(600);

fn knob<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// Median, min and max of some durations.
struct Summary {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn summary(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    };
    Summary {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The host, its agent and what drives them.
struct Bench {
    server: ServerProcess,
    admin: Api,
    agent: RunningAgent,
    restic: PathBuf,
    scratch: tempfile::TempDir,
}

impl Bench {
    fn host(&self) -> &str {
        &self.agent.host_id
    }

    /// Plain restic as a user runs it: repository and password in the
    /// environment, the cache in the user's cache folder (kept across runs,
    /// under the bench's scratch folder so the machine's own stays clean).
    fn plain(&self, repo: &Path, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.restic);
        command
            .args(args)
            .env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("XDG_CACHE_HOME", self.scratch.path().join("user-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    async fn plain_ok(&self, repo: &Path, args: &[&str]) -> Duration {
        let started = Instant::now();
        let out = self.plain(repo, args).output().await.unwrap();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "restic {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    async fn plain_stdout(&self, repo: &Path, args: &[&str]) -> String {
        let out = self
            .plain(repo, args)
            .stdout(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "restic {args:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    async fn stats_rows(&self) -> usize {
        self.admin.repo_stats_rows(self.host()).await.unwrap()
    }

    async fn job(&self, id: &str) -> Value {
        self.admin.job(id).await.unwrap()
    }

    /// Sets the host's repository and waits for the `init` job it queues.
    async fn use_repository(&self, repo: &Path) {
        let rows = self.stats_rows().await;
        self.admin
            .set_repository(self.host(), &repo.display().to_string(), PASSWORD)
            .await
            .unwrap();
        let (_, jobs) = self
            .admin
            .get(&format!("/api/v1/jobs?host_id={}&limit=1", self.host()))
            .await
            .unwrap();
        let init = jobs[0]["id"].as_str().unwrap().to_owned();
        let done = self.admin.finished_job(&init, JOB_LIMIT).await.unwrap();
        assert_eq!(done["status"], "succeeded", "{done:#}");
        self.settle(rows).await;
    }

    /// One job through the API: the time from the POST to the API showing
    /// it finished.
    async fn timed_job(&self, kind: &str, params: Value) -> Duration {
        let rows = self.stats_rows().await;
        let started = Instant::now();
        let id = self
            .admin
            .start_job(self.host(), kind, params)
            .await
            .unwrap();
        // The job's event stream (`GET /api/v1/jobs/{id}/events`) ends when
        // the server has stored the job's end; then the API shows it. Asking
        // the API every few milliseconds instead would load the server on
        // the very cores restic is using, and count that against it.
        let mut events = rm_testkit::http::client()
            .get(format!("{}/api/v1/jobs/{id}/events", self.server.url))
            .bearer_auth(self.admin.token().unwrap())
            .send()
            .await
            .unwrap();
        assert!(events.status().is_success(), "{}", events.status());
        tokio::time::timeout(JOB_LIMIT, async {
            while events.chunk().await.unwrap().is_some() {}
        })
        .await
        .unwrap_or_else(|_| panic!("job {id} did not finish"));
        let job = self.job(&id).await;
        let took = started.elapsed();
        assert_eq!(job["status"], "succeeded", "{job:#}");
        self.settle(rows).await;
        took
    }

    /// Waits until the statistics gathered after a job are stored (a new
    /// history row beyond `rows`), then a little more, so the next timed
    /// run has the machine to itself.
    async fn settle(&self, rows: usize) {
        let waited = wait_until(
            Duration::from_secs(120),
            "the repository statistics after the job",
            || async { self.stats_rows().await > rows },
        )
        .await;
        if let Err(e) = waited {
            eprintln!("note: {e}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// `restic init` of a new repository (not timed).
    async fn fresh_repository(&self, name: &str) -> PathBuf {
        let repo = self.scratch.path().join(name);
        let _ = std::fs::remove_dir_all(&repo);
        self.plain_ok(&repo, &["init"]).await;
        repo
    }
}

struct Row {
    what: &'static str,
    ours: Summary,
    plain: Option<Summary>,
    target: Option<f64>,
}

fn print(rows: &[Row], runs: usize, restic_version: &str) {
    println!();
    println!("backup_overhead: {runs} runs per side, alternating; {restic_version}");
    println!(
        "| | restic-manager median (min–max) s | plain restic median (min–max) s | ratio | target |"
    );
    println!("|---|---|---|---|---|");
    for row in rows {
        let ours = format!(
            "{} ({}–{})",
            secs(row.ours.median),
            secs(row.ours.min),
            secs(row.ours.max)
        );
        let (plain, ratio) = match &row.plain {
            Some(p) => (
                format!("{} ({}–{})", secs(p.median), secs(p.min), secs(p.max)),
                format!(
                    "{:.2}",
                    row.ours.median.as_secs_f64() / p.median.as_secs_f64()
                ),
            ),
            None => (String::from("—"), String::from("—")),
        };
        let target = row
            .target
            .map_or_else(|| String::from(""), |t| format!("≤ {t:.2}"));
        println!("| {} | {ours} | {plain} | {ratio} | {target} |", row.what);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let runs = knob("RM_BENCH_RUNS", 5usize).max(1);
    let tree_files = knob("RM_BENCH_TREE_FILES", 3000usize);
    let first_mb = knob("RM_BENCH_FIRST_MB", 400u64);
    let first_files = knob("RM_BENCH_FIRST_FILES", 5000usize);
    let restic_name = knob("RM_BENCH_RESTIC", String::from("restic"));
    let restic = rm_restic::resolve_bin(Path::new(&restic_name)).unwrap();
    let version = std::process::Command::new(&restic)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let binary = knob(
        "RM_BENCH_BIN",
        PathBuf::from(env!("CARGO_BIN_EXE_restic-manager")),
    );

    let scratch = tempfile::tempdir().unwrap();
    eprintln!(
        "generating the source trees under {}",
        scratch.path().display()
    );
    let tree = scratch.path().join("tree");
    many_files(&tree, tree_files, tree_files as u64 * 2048, 1);
    let big = scratch.path().join("big");
    many_files(&big, first_files, first_mb * 1_000_000, 2);

    let server = ServerProcess::start(&binary, &[]).await.unwrap();
    let admin = server.admin().await.unwrap();
    let agent = server
        .enrolled_agent(&binary, "bench", &restic, &[])
        .await
        .unwrap();
    let bench = Bench {
        server,
        admin,
        agent,
        restic,
        scratch,
    };
    let mut rows = Vec::new();

    // 1. Unchanged re-backup, one repository for both sides (each side's
    // snapshots are the other's parents: same host, same paths).
    let repo = bench.fresh_repository("repo-unchanged").await;
    bench.use_repository(&repo).await;
    let tree_path = tree.display().to_string();
    let paths = ["/etc", tree_path.as_str()];
    let params = json!({"paths": paths});
    let mut plain_args = vec!["backup"];
    plain_args.extend(paths);
    eprintln!("unchanged re-backup: first backups (not timed)");
    bench.timed_job("backup", params.clone()).await;
    bench.plain_ok(&repo, &plain_args).await;
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for run in 0..runs {
        ours.push(bench.timed_job("backup", params.clone()).await);
        plain.push(bench.plain_ok(&repo, &plain_args).await);
        eprintln!(
            "  run {}: restic-manager {} s, restic {} s",
            run + 1,
            secs(ours[run]),
            secs(plain[run])
        );
    }
    rows.push(Row {
        what: "unchanged re-backup (/etc + source tree)",
        ours: summary(&ours),
        plain: Some(summary(&plain)),
        target: Some(1.10),
    });

    // 3. Listing a folder of the latest snapshot (of the same repository).
    let latest: Vec<Value> = serde_json::from_str(
        &bench
            .plain_stdout(&repo, &["snapshots", "--json", "latest"])
            .await,
    )
    .unwrap();
    let snapshot = latest[0]["id"].as_str().unwrap().to_owned();
    let folder = format!("{tree_path}/d0001");
    let (mut first, mut cached, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let session = bench.server.admin().await.unwrap();
        let path = format!(
            "/api/v1/hosts/{}/snapshots/{snapshot}/tree?path={folder}",
            bench.host()
        );
        let started = Instant::now();
        let (status, body) = session.get(&path).await.unwrap();
        first.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.as_array().map_or(0, Vec::len), 100, "{body}");
        let started = Instant::now();
        let (status, _) = session.get(&path).await.unwrap();
        cached.push(started.elapsed());
        assert_eq!(status, 200);
        plain.push(bench.plain_ok(&repo, &["ls", &snapshot, &folder]).await);
        eprintln!(
            "  listing run {}: first {} s, cached {} s, restic ls {} s",
            run + 1,
            secs(first[run]),
            secs(cached[run]),
            secs(plain[run])
        );
    }
    let plain_ls = summary(&plain);
    rows.push(Row {
        what: "first listing of a folder (tree.list vs restic ls)",
        ours: summary(&first),
        plain: Some(summary(&plain)),
        target: Some(1.2),
    });
    rows.push(Row {
        what: "second listing, cached",
        ours: summary(&cached),
        plain: Some(plain_ls),
        target: None,
    });

    // 2. First backup into a fresh repository each run.
    let big_path = big.display().to_string();
    let params = json!({"paths": [big_path]});
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let repo = bench.fresh_repository("repo-first-ours").await;
        bench.use_repository(&repo).await;
        ours.push(bench.timed_job("backup", params.clone()).await);
        let _ = std::fs::remove_dir_all(&repo);
        let repo = bench.fresh_repository("repo-first-plain").await;
        plain.push(bench.plain_ok(&repo, &["backup", &big_path]).await);
        let _ = std::fs::remove_dir_all(&repo);
        eprintln!(
            "  first backup run {}: restic-manager {} s, restic {} s",
            run + 1,
            secs(ours[run]),
            secs(plain[run])
        );
    }
    rows.push(Row {
        what: "first backup (fresh repository, incompressible)",
        ours: summary(&ours),
        plain: Some(summary(&plain)),
        target: Some(1.03),
    });
    // Printed in the order of the issue: re-backup, first backup, listing.
    rows.swap(1, 3);
    rows.swap(2, 3);
    print(&rows, runs, &version);
    println!(
        "(unchanged: /etc + {tree_files} files; first backup: {first_mb} MB in {first_files} files)"
    );
}
