//! Two real `restic-manager server` processes on one PostgreSQL database
//! behind a TCP load balancer ([`TcpProxy`]), one real agent connected
//! through it, and the server holding the agent killed with SIGKILL (issue
//! 15): mid-backup, the agent comes back through the balancer to the other
//! server, its spooled reports replay, the job succeeds there with every
//! log line stored once, nothing is left queued or running, and the dead
//! server's registration and leases pass to the survivor, and the job
//! queued behind the backup on the dead server runs; idle, the agent moves
//! to the other server and a job made there runs, and back again once the
//! first is restarted and the second killed; with both servers up, an
//! agent the balancer moves mid-backup finishes its job on the other; and
//! an operator on the server that does not hold the agent starts a real
//! backup, watches it live to the end and browses its snapshot there.
//!
//! The backup is of a `stdin_from` hook's output, run by the real restic:
//! the hook writes numbered log lines and waits at gates the test opens,
//! so what happens before the kill, while the agent is connected nowhere,
//! and after it is back is decided by the test, not by timing.
//!
//! Needs `RM_TEST_POSTGRES_URL` (scripts/test starts a temporary cluster);
//! without it the tests skip with the reason printed, and fail under
//! `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use rm_server::cluster::{ALERTS_LEASE, LOST_AGENTS_LEASE};
use rm_store::Store;
use rm_testkit::{wait_until, Api, Backend, RunningAgent, ServerProcess, TcpProxy};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "failover-Pa55word";
/// Far more than any step takes on an idle machine; a busy one (two cores
/// shared with other builds) may be many times slower.
const LIMIT: Duration = Duration::from_secs(90);
/// Lines the hook writes in each of its three phases.
const PHASE: usize = 25;

/// Renewals every second, dead after three: a killed server's row and
/// leases pass within seconds.
const CLUSTER_FLAGS: [&str; 4] = [
    "--cluster-renew-seconds",
    "1",
    "--cluster-expiry-seconds",
    "3",
];

/// Whether PostgreSQL is there; prints why not, and fails under CI.
fn postgres(test: &str) -> bool {
    Backend::postgres_or_skip(test).is_some()
}

/// Two servers on one PostgreSQL database, a balancer in front of them,
/// and a real agent enrolled and connected through it, with a local
/// repository set up (its `init` job run).
struct Cluster {
    servers: [ServerProcess; 2],
    proxy: TcpProxy,
    agent: RunningAgent,
    scratch: tempfile::TempDir,
}

impl Cluster {
    /// With `extra` server flags besides [`CLUSTER_FLAGS`].
    async fn start(name: &str, extra: &[&str]) -> Cluster {
        let flags: Vec<&str> = CLUSTER_FLAGS.iter().chain(extra).copied().collect();
        let first = ServerProcess::start_on_postgres(Path::new(BIN), &flags)
            .await
            .unwrap();
        let second = first.start_beside(&flags).await.unwrap();
        assert_ne!(first.server_id(), second.server_id());
        let proxy = TcpProxy::start(&[first.addr, second.addr]).await.unwrap();
        let agent = first
            .enrolled_agent_through(
                &proxy.url(),
                Path::new(BIN),
                name,
                &rm_testkit::restic::binary(),
                &[],
            )
            .await
            .unwrap();
        let cluster = Cluster {
            servers: [first, second],
            proxy,
            agent,
            scratch: tempfile::tempdir().unwrap(),
        };
        let holder = cluster.holder().await.expect("the agent is held");
        let admin = cluster.servers[holder].admin().await.unwrap();
        let repo = cluster.scratch.path().join("repo");
        admin
            .set_repository(
                &cluster.agent.host_id,
                &repo.display().to_string(),
                PASSWORD,
            )
            .await
            .unwrap();
        let init = admin.host_jobs(&cluster.agent.host_id, 1).await.unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let init = admin.finished_job(&init, LIMIT).await.unwrap();
        assert_eq!(init["status"], "succeeded", "{init:#}");
        cluster
    }

    fn store(&self) -> &dyn Store {
        self.servers[0].store().unwrap()
    }

    /// Which of the servers holds the agent's connection, as the store
    /// says (`hosts.server_id` of an online host).
    async fn holder(&self) -> Option<usize> {
        let host = self.agent.host_id.parse().unwrap();
        let id = self.store().host_holder(host).await.unwrap()?;
        self.servers
            .iter()
            .position(|s| s.server_id() == Some(id.as_str()))
    }

    /// Waits until server `index` holds the agent.
    async fn wait_holder(&self, index: usize) {
        wait_until(LIMIT, "the agent to connect to the survivor", || async {
            self.holder().await == Some(index)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", self.agent.process.log()));
    }

    /// After server `dead` died: the survivor alone is alive and holds
    /// both leases, the host is online, and none of its jobs is left
    /// queued, dispatched or running.
    async fn assert_survivor_alone(&self, dead: usize) {
        let survivor = &self.servers[1 - dead];
        let survivor_id = survivor.server_id().unwrap();
        wait_until(LIMIT, "the dead server's row to expire", || async {
            let live = self.store().live_servers(Utc::now()).await.unwrap();
            live.len() == 1 && live[0].id == survivor_id
        })
        .await
        .unwrap();
        for lease in [ALERTS_LEASE, LOST_AGENTS_LEASE] {
            wait_until(LIMIT, &format!("the survivor to hold {lease}"), || async {
                self.store()
                    .lease_holder(lease, Utc::now())
                    .await
                    .unwrap()
                    .as_deref()
                    == Some(survivor_id)
            })
            .await
            .unwrap();
        }
        let admin = survivor.admin().await.unwrap();
        assert!(admin.host(&self.agent.host_id).await.unwrap().online);
        let jobs = admin.host_jobs(&self.agent.host_id, 100).await.unwrap();
        for job in &jobs {
            assert!(
                !matches!(
                    job["status"].as_str(),
                    Some("queued" | "dispatched" | "running")
                ),
                "a job is stuck: {job:#}"
            );
        }
        // Everything the agent spooled was acknowledged.
        wait_until(LIMIT, "the agent's spool to drain", || {
            let empty = spool_files(&self.agent.state_dir).is_empty();
            async move { empty }
        })
        .await
        .unwrap();
    }

    fn gate(&self, name: &str) -> std::path::PathBuf {
        self.scratch.path().join(name)
    }
}

fn spool_files(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("spool"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A `stdin_from` hook for restic to back up: [`PHASE`] numbered lines
/// (with some data for restic between them), then waits for `open1`,
/// [`PHASE`] more, touches `done2`, waits for `open2`, and [`PHASE`] more.
fn gated_dump(cluster: &Cluster) -> String {
    let phase = |from: usize, word: &str| {
        format!(
            "i={from}\nwhile [ $i -lt {to} ]; do\n  i=$((i + 1))\n  echo \"{word} $i\" >&2\n  \
             head -c 65536 /dev/urandom\n  sleep 0.02\ndone\n",
            to = from + PHASE
        )
    };
    let wait = |gate: &Path| format!("while [ ! -e '{}' ]; do sleep 0.05; done\n", gate.display());
    format!(
        "#!/bin/sh\nset -e\n{}{}{}touch '{}'\n{}{}",
        phase(0, "before"),
        wait(&cluster.gate("open1")),
        phase(PHASE, "outage"),
        cluster.gate("done2").display(),
        wait(&cluster.gate("open2")),
        phase(2 * PHASE, "after"),
    )
}

/// The log lines' texts, once they are checked to be `1..=n` by `seq`,
/// each once, in order.
fn dense_texts(lines: &[Value]) -> Vec<String> {
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "log lines must be 1..N, each once, in order"
    );
    lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn touch(path: &Path) {
    tokio::fs::write(path, b"").await.unwrap();
}

/// A backup of [`gated_dump`] running on the agent, started through the
/// server holding it, and a second backup queued behind it there.
struct GatedBackup {
    job: String,
    next: String,
}

impl Cluster {
    /// Starts a [`GatedBackup`] through server `holder` and waits until
    /// the hook's first phase is stored.
    async fn gated_backup(&self, holder: usize) -> GatedBackup {
        rm_testkit::e2e::write_hook(&self.agent.state_dir, "dump", &gated_dump(self), 0o700);
        let admin = self.servers[holder].admin().await.unwrap();
        let host = &self.agent.host_id;
        let job = admin
            .start_job(
                host,
                "backup",
                json!({"stdin_from": "dump", "stdin_filename": "dump.bin"}),
            )
            .await
            .unwrap();
        let before_last = format!("[dump] before {PHASE}");
        wait_until(LIMIT, "the first lines to be stored", || async {
            matches!(admin.job_logs(&job).await, Ok(lines)
                if lines.iter().any(|l| l["text"] == before_last.as_str()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", self.agent.process.log()));
        assert_eq!(admin.job(&job).await.unwrap()["status"], "running");
        // One job at a time per agent: the next waits in the queue, for
        // whichever server sees the first end.
        let next = admin
            .start_job(host, "backup", small_backup(self))
            .await
            .unwrap();
        assert_eq!(admin.job(&next).await.unwrap()["status"], "queued");
        GatedBackup { job, next }
    }

    /// Kills server `dead` with no server reachable through the balancer,
    /// and lets the hook write its second phase, which can only go to the
    /// agent's spool.
    async fn kill_and_spool(&mut self, dead: usize) {
        self.proxy.set_upstreams(&[]);
        self.servers[dead].kill9().await.unwrap();
        touch(&self.gate("open1")).await;
        wait_until(LIMIT, "the hook's second phase", || {
            let done = self.gate("done2").exists();
            async move { done }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", self.agent.process.log()));
    }

    /// Both servers behind the balancer again: the dead one refuses, the
    /// survivor takes the agent; then the hook's last phase.
    async fn come_back(&self, survivor: usize) {
        let (a, b) = (self.servers[0].addr, self.servers[1].addr);
        self.proxy.set_upstreams(&[a, b]);
        self.wait_holder(survivor).await;
        touch(&self.gate("open2")).await;
    }

    /// The gated backup succeeded on the survivor with every line once,
    /// the queued one after it, and the survivor is alone.
    async fn assert_backups_done(&self, backup: &GatedBackup, dead: usize) {
        self.assert_backups_finished_on(backup, 1 - dead).await;
        self.assert_survivor_alone(dead).await;
    }

    /// The gated backup succeeded, as server `survivor` tells, with every
    /// line once, and the queued one after it; the agent came back
    /// through the balancer to `survivor`.
    async fn assert_backups_finished_on(&self, backup: &GatedBackup, survivor: usize) {
        let admin = self.servers[survivor].admin().await.unwrap();
        let end = finished(&admin, &backup.job, self).await;
        assert_eq!(end["status"], "succeeded", "{end:#}\n{}", self.logs());
        let texts = dense_texts(&admin.job_logs(&backup.job).await.unwrap());
        // Every line the hook wrote, once, in order: those stored before
        // the kill, those spooled while no server answered, those after.
        let dumped: Vec<&str> = texts
            .iter()
            .map(String::as_str)
            .filter(|t| t.starts_with("[dump] "))
            .collect();
        let expected: Vec<String> = (1..=3 * PHASE)
            .map(|i| {
                let word = ["before", "outage", "after"][(i - 1) / PHASE];
                format!("[dump] {word} {i}")
            })
            .collect();
        assert_eq!(dumped, expected, "all lines: {texts:#?}");
        assert!(
            texts.iter().any(|t| t.contains("snapshot")),
            "restic's summary line is stored: {texts:#?}"
        );
        let end = finished(&admin, &backup.next, self).await;
        assert_eq!(end["status"], "succeeded", "{end:#}");
        assert!(self.proxy.connections_to(self.servers[survivor].addr) >= 1);
    }

    fn logs(&self) -> String {
        format!(
            "agent log:\n{}\nservers' logs:\n{}\n---\n{}",
            self.agent.process.log(),
            self.servers[0].log(),
            self.servers[1].log()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holding_an_agent_killed_mid_backup_its_job_finishes_on_the_other() {
    if !postgres("the_server_holding_an_agent_killed_mid_backup_its_job_finishes_on_the_other") {
        return;
    }
    let mut cluster = Cluster::start("failover", &[]).await;
    let dead = cluster.holder().await.unwrap();
    let backup = cluster.gated_backup(dead).await;
    cluster.kill_and_spool(dead).await;
    cluster.come_back(1 - dead).await;
    cluster.assert_backups_done(&backup, dead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_after_its_lost_job_failed_replaces_the_failure_with_its_report() {
    if !postgres("an_agent_back_after_its_lost_job_failed_replaces_the_failure_with_its_report") {
        return;
    }
    // A grace shorter than the outage: the survivor gives the dead
    // server's job up before the agent is back.
    let mut cluster = Cluster::start("late", &["--lost-agent-grace", "1"]).await;
    let dead = cluster.holder().await.unwrap();
    let survivor = 1 - dead;
    let backup = cluster.gated_backup(dead).await;
    cluster.kill_and_spool(dead).await;
    let admin = cluster.servers[survivor].admin().await.unwrap();
    let failed = admin
        .wait_job_status(&backup.job, "failed", LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("did not come back"),
        "{failed:#}"
    );
    assert!(
        !admin.host(&cluster.agent.host_id).await.unwrap().online,
        "the dead server's host was swept offline"
    );
    cluster.come_back(survivor).await;
    admin
        .wait_job_status(&backup.job, "succeeded", LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    // Given up once: the sweep that found the host and the look for jobs
    // whose agent is connected nowhere must not both watch it (a second
    // watch would have ended by now, a grace after the first).
    let given_up = format!("failing its job job_id={}", backup.job);
    let log = cluster.servers[survivor].log();
    assert_eq!(log.matches(&given_up).count(), 1, "{log}");
    cluster.assert_backups_done(&backup, dead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_the_balancer_moves_mid_backup_finishes_its_job_on_the_other_server() {
    if !postgres("an_agent_the_balancer_moves_mid_backup_finishes_its_job_on_the_other_server") {
        return;
    }
    // Both servers stay up. The first server's watch over the agent that
    // left it ends while the job still runs, with the agent connected to
    // the other server by then: a grace long enough for the agent to
    // reconnect on a loaded machine (one second was not, once in CI).
    const GRACE: Duration = Duration::from_secs(8);
    let grace = GRACE.as_secs().to_string();
    let cluster = Cluster::start("moved", &["--lost-agent-grace", &grace]).await;
    let first = cluster.holder().await.unwrap();
    let other = 1 - first;
    let backup = cluster.gated_backup(first).await;
    // The balancer reloads with only the other server behind it.
    cluster.proxy.set_upstreams(&[cluster.servers[other].addr]);
    let left = tokio::time::Instant::now();
    cluster.proxy.disconnect_all();
    touch(&cluster.gate("open1")).await;
    cluster.wait_holder(other).await;
    assert!(
        left.elapsed() < GRACE,
        "the agent took {:?} to reach the other server, longer than the grace this test needs",
        left.elapsed()
    );
    wait_until(LIMIT, "the first server to see the agent go", || {
        let gone = cluster.servers[first].log().contains("agent disconnected");
        async move { gone }
    })
    .await
    .unwrap();
    // Not an assertion: time for the first server's grace to end while the
    // job runs, so a wrong verdict would show below.
    tokio::time::sleep_until(left + GRACE + Duration::from_secs(2)).await;
    touch(&cluster.gate("open2")).await;
    cluster.assert_backups_finished_on(&backup, other).await;
    let log = cluster.servers[first].log();
    assert!(
        !log.contains("failing its job"),
        "the first server failed a job of an agent connected to the other: {log}"
    );
    let host = cluster.agent.host_id.parse().unwrap();
    assert_eq!(
        cluster.store().host_holder(host).await.unwrap().as_deref(),
        cluster.servers[other].server_id()
    );
    assert_eq!(
        cluster
            .store()
            .live_servers(Utc::now())
            .await
            .unwrap()
            .len(),
        2
    );
    let admin = cluster.servers[first].admin().await.unwrap();
    assert!(admin.host(&cluster.agent.host_id).await.unwrap().online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holding_an_idle_agent_killed_a_job_made_on_the_other_runs() {
    if !postgres("the_server_holding_an_idle_agent_killed_a_job_made_on_the_other_runs") {
        return;
    }
    let mut cluster = Cluster::start("idle", &[]).await;
    let dead = cluster.holder().await.unwrap();
    let survivor = 1 - dead;
    cluster.servers[dead].kill9().await.unwrap();
    cluster.wait_holder(survivor).await;
    cluster.backup_through(survivor).await;
    cluster.assert_survivor_alone(dead).await;

    // The dead one back (a new registration at its old address), and the
    // other killed in turn: the agent goes back to it.
    cluster.servers[dead].start_again().await.unwrap();
    cluster.servers[survivor].kill9().await.unwrap();
    cluster.wait_holder(dead).await;
    cluster.backup_through(dead).await;
    cluster.assert_survivor_alone(survivor).await;
}

impl Cluster {
    /// Runs a small backup through server `index`; it must succeed.
    async fn backup_through(&self, index: usize) {
        let admin = self.servers[index].admin().await.unwrap();
        let job = admin
            .start_job(&self.agent.host_id, "backup", small_backup(self))
            .await
            .unwrap();
        let end = finished(&admin, &job, self).await;
        assert_eq!(end["status"], "succeeded", "{end:#}");
    }
}

/// The parameters of a backup of a small folder in the cluster's scratch.
fn small_backup(cluster: &Cluster) -> Value {
    let source = cluster.scratch.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("a.txt"), "a\n").unwrap();
    json!({"paths": [source.display().to_string()]})
}

async fn finished(admin: &Api, job: &str, cluster: &Cluster) -> Value {
    admin
        .finished_job(job, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
}

#[tokio::test]
async fn operators_on_the_other_server_back_up_watch_and_browse_an_agent_held_by_one() {
    if !postgres("operators_on_the_other_server_back_up_watch_and_browse_an_agent_held_by_one") {
        return;
    }
    let cluster = Cluster::start("elsewhere", &[]).await;
    let holder = cluster.holder().await.expect("the agent is held");
    let other = &cluster.servers[1 - holder];
    let admin = other.admin().await.unwrap();
    let host = cluster.agent.host_id.clone();
    let data = cluster.scratch.path().join("data");
    rm_testkit::fixtures::make_tree(&data);

    // A backup started on the server that does not hold the agent, watched
    // live there: its events come from the other server.
    let id = admin
        .start_job(
            &host,
            "backup",
            json!({"paths": [data.display().to_string()]}),
        )
        .await
        .unwrap();
    let response = rm_testkit::http::client()
        .get(format!("{}/api/v1/jobs/{id}/events", other.url))
        .bearer_auth(admin.token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = tokio::time::timeout(LIMIT, rm_testkit::http::read_sse(response))
        .await
        .expect("the job's stream ends with the job");
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "finished", "{events:?}");
    assert_eq!(last["status"], "succeeded", "{last:#}");
    let streamed: Vec<u64> = events
        .iter()
        .filter(|(name, _)| name == "log")
        .map(|(_, line)| line["seq"].as_u64().unwrap())
        .collect();
    let stored: Vec<u64> = admin
        .job_logs(&id)
        .await
        .unwrap()
        .iter()
        .map(|line| line["seq"].as_u64().unwrap())
        .collect();
    assert!(!stored.is_empty());
    assert_eq!(
        streamed, stored,
        "the stream shows every stored line once, in order"
    );

    // The snapshot browsed through the same server: each folder is a
    // `tree.list` the holder relays to its agent.
    let snapshots = admin.wait_snapshots(&host, 1, LIMIT).await.unwrap();
    let snapshot = snapshots[0]["id"].as_str().unwrap();
    let (status, listing) = admin
        .get(&format!(
            "/api/v1/hosts/{host}/snapshots/{snapshot}/tree?path={}/nested",
            data.display()
        ))
        .await
        .unwrap();
    assert_eq!(status, 200, "{listing}");
    let mut names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["a.txt", "deeper"]);
}
