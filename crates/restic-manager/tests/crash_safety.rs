//! Nothing is lost when a process dies: the real server binary killed with
//! `kill -9` in the middle of a real backup, the real agent killed the same
//! way, both stopped with SIGTERM, and a restic killed so hard that it
//! leaves its lock behind. Everything here is the real binary and the real
//! restic against a local repository.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_testkit::{wait_until, AgentProcess, Api, ServerProcess, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
/// Easy to grep for: it must never show up in a log, an argv or an answer.
const PASSWORD: &str = "crash-test-Pa55word-7f3e91";
const JOB_LIMIT: Duration = Duration::from_secs(180);

/// A source tree whose backup keeps restic busy for a few seconds: one
/// large sparse file (zeros to read and chunk) and a few small files.
fn slow_source(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::File::create(src.join("disk.img"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join("docs").join(format!("note-{i}.txt")),
            format!("note {i}\n"),
        )
        .unwrap();
    }
    src
}

/// Starts a backup of a [`slow_source`] under `root` on `host_id` and
/// waits until restic runs it; returns the job's id.
async fn running_slow_backup(admin: &Api, host_id: &str, root: &Path) -> String {
    let src = slow_source(root);
    let job = admin
        .start_job(
            host_id,
            "backup",
            json!({"paths": [src.display().to_string()]}),
        )
        .await
        .unwrap();
    admin
        .wait_job_status(&job, "running", Duration::from_secs(30))
        .await
        .unwrap();
    job
}

fn small_source(root: &Path) -> PathBuf {
    let src = root.join("small");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "a\n").unwrap();
    src
}

/// Sets the repository and waits for the `init` job it queues.
async fn with_repository(admin: &Api, host_id: &str, repo: &Path) {
    admin
        .set_repository(host_id, &repo.display().to_string(), PASSWORD)
        .await
        .unwrap();
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={host_id}&limit=1"))
        .await
        .unwrap();
    let init = jobs[0]["id"].as_str().unwrap().to_owned();
    let job = admin.finished_job(&init, JOB_LIMIT).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job:#}");
}

/// The process ids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The restic process the agent `agent_pid` runs now.
async fn restic_child(agent_pid: u32) -> u32 {
    let mut found = None;
    wait_until(Duration::from_secs(30), "the agent to run restic", || {
        found = children_of(agent_pid).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "restic")
                .unwrap_or(false)
        });
        let seen = found.is_some();
        async move { seen }
    })
    .await
    .unwrap();
    found.unwrap()
}

/// The repository's locks as restic lists them (`list locks` takes none).
async fn restic_locks(repo: &Path) -> Vec<String> {
    let out = rm_testkit::restic::command()
        .args(["list", "locks", "--no-lock"])
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 64)
        .map(str::to_owned)
        .collect()
}

/// The process ids the repository's locks name (`restic cat lock`), so a
/// test can tell a lock of its own restic from one of the agent's
/// background refresh. A lock removed between listing and reading is left
/// out.
async fn lock_pids(repo: &Path) -> Vec<u64> {
    let mut pids = Vec::new();
    for id in restic_locks(repo).await {
        let out = rm_testkit::restic::command()
            .args(["cat", "lock", "--no-lock", "--", &id])
            .env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD", PASSWORD)
            .output()
            .await
            .unwrap();
        let lock: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        pids.extend(lock["pid"].as_u64());
    }
    pids
}

fn assert_dense_once(lines: &[Value]) {
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "log lines must be 1..N, each once, in order"
    );
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

#[tokio::test]
async fn a_server_killed_mid_backup_comes_back_to_the_whole_job() {
    let scratch = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(Path::new(BIN), &[]).await.unwrap();
    let agent = server
        .enrolled_agent(Path::new(BIN), "crashy", &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let repo = scratch.path().join("repo");
    with_repository(&admin, &agent.host_id, &repo).await;

    let job = running_slow_backup(&admin, &agent.host_id, scratch.path()).await;
    // No secret in restic's argv while it works.
    let restic = restic_child(agent.process.pid().unwrap()).await;
    let argv = std::fs::read(format!("/proc/{restic}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&argv).contains(PASSWORD),
        "the repository password is in restic's argv"
    );

    server.kill9().await.unwrap();
    // The backup goes on without the server, its reports going to the spool.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start_again().await.unwrap();

    let admin = server.admin().await.unwrap();
    let end = admin
        .finished_job(&job, JOB_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.process.log()));
    assert_eq!(
        end["status"],
        "succeeded",
        "{end:#}\n{}",
        agent.process.log()
    );
    assert!(end["stats"]["snapshot_id"].is_string(), "{end:#}");
    let lines = admin.job_logs(&job).await.unwrap();
    assert_dense_once(&lines);
    assert!(
        lines
            .iter()
            .any(|l| l["text"].as_str().unwrap_or("").contains("snapshot")),
        "restic's summary line is stored: {lines:#?}"
    );
    // Everything acknowledged: the agent's spool is empty again.
    wait_until(Duration::from_secs(20), "the spool to drain", || {
        let empty = spool_files(&agent.state_dir).is_empty();
        async move { empty }
    })
    .await
    .unwrap();

    // The password is nowhere: not in the server's log (both runs), the
    // agent's, any job log, or an API answer.
    let (_, repository) = admin
        .get(&format!("/api/v1/hosts/{}/repository", agent.host_id))
        .await
        .unwrap();
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={}", agent.host_id))
        .await
        .unwrap();
    let mut job_logs = String::new();
    for listed in jobs.as_array().unwrap() {
        let id = listed["id"].as_str().unwrap();
        job_logs.push_str(&serde_json::to_string(&admin.job_logs(id).await.unwrap()).unwrap());
    }
    for (what, text) in [
        ("server log", server.log()),
        ("agent log", agent.process.log()),
        ("job logs", job_logs),
        ("repository API answer", repository.to_string()),
        ("jobs API answer", jobs.to_string()),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password leaked into the {what}"
        );
    }
    agent
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agent_killed_mid_backup_leaves_a_failed_job_and_the_next_backup_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|config| {
        config.lost_agent_grace = Some(Duration::from_secs(2));
    })
    .await
    .unwrap();
    let admin = server.admin().await.unwrap();
    let agent = server
        .enrolled_agent(Path::new(BIN), "killed", &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    let repo = scratch.path().join("repo");
    with_repository(&admin, &agent.host_id, &repo).await;

    let job = running_slow_backup(&admin, &agent.host_id, scratch.path()).await;
    let restic = restic_child(agent.process.pid().unwrap()).await;
    let (host_id, state_dir) = (agent.host_id.clone(), agent.state_dir.clone());
    agent.process.kill9().await.unwrap();

    // restic dies with its agent instead of running on unsupervised.
    wait_until(
        Duration::from_secs(15),
        "restic to exit with its agent",
        || {
            let gone = !alive(restic);
            async move { gone }
        },
    )
    .await
    .unwrap();

    // The agent never comes back (within the grace): the job does not stay
    // running; it fails, saying the agent was interrupted.
    let failed = admin
        .wait_job_status(&job, "failed", Duration::from_secs(40))
        .await
        .unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("agent was interrupted"), "{error}");
    assert!(error.contains("did not come back"), "{error}");

    // It does come back later: its spool says the job was cut short, and
    // that word replaces the server's guess.
    let agent = AgentProcess::spawn(
        Path::new(BIN),
        &state_dir,
        &rm_testkit::restic::binary(),
        &[],
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "the agent to reconnect", || {
        server.host_online(&host_id)
    })
    .await
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the agent's own report",
        || async {
            let job = admin.job(&job).await.unwrap();
            job["error"]
                .as_str()
                .is_some_and(|e| e.contains("stopped, killed or crashed"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let replaced = admin.job(&job).await.unwrap();
    assert_eq!(replaced["status"], "failed");
    assert_dense_once(&admin.job_logs(&job).await.unwrap());
    wait_until(Duration::from_secs(20), "the spool to drain", || {
        let empty = spool_files(&state_dir).is_empty();
        async move { empty }
    })
    .await
    .unwrap();

    // The next backup runs normally.
    let small = small_source(scratch.path());
    let next = admin
        .start_job(
            &host_id,
            "backup",
            json!({"paths": [small.display().to_string()]}),
        )
        .await
        .unwrap();
    let next = admin.finished_job(&next, JOB_LIMIT).await.unwrap();
    assert_eq!(next["status"], "succeeded", "{next:#}\n{}", agent.log());
    agent.terminate(Duration::from_secs(20)).await.unwrap();
}

#[tokio::test]
async fn a_stale_lock_left_by_a_killed_restic_is_cleared_before_check() {
    let scratch = tempfile::tempdir().unwrap();
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let agent = server
        .enrolled_agent(Path::new(BIN), "locked", &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    let repo = scratch.path().join("repo");
    with_repository(&admin, &agent.host_id, &repo).await;
    // The agent refreshes its repository report after `init`; a restic
    // starting its backup while a refresh's lock comes and goes can fail
    // to lock (0.14 gives up when a lock it reads vanishes), so start once
    // the report is stored and the repository is quiet.
    wait_until(JOB_LIMIT, "the repository report after init", || async {
        admin.repo_stats_rows(&agent.host_id).await.unwrap_or(0) > 0
    })
    .await
    .unwrap();

    // A restic of this host killed with SIGKILL mid-backup leaves its lock.
    let src = slow_source(scratch.path());
    let mut restic = rm_testkit::restic::command()
        .args(["backup", "--quiet", "--"])
        .arg(&src)
        .env("RESTIC_REPOSITORY", &repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .spawn()
        .unwrap();
    // (Told apart by its pid: the agent's refresh after `init` may hold a
    // lock of its own for a moment.)
    let pid = u64::from(restic.id().unwrap());
    wait_until(
        Duration::from_secs(30),
        "restic to take its lock",
        || async { lock_pids(&repo).await.contains(&pid) },
    )
    .await
    .unwrap();
    restic.kill().await.unwrap();
    assert!(lock_pids(&repo).await.contains(&pid), "a stale lock");

    // `check` needs the repository to itself; the stale lock is removed first.
    let check = admin
        .start_job(&agent.host_id, "check", json!({}))
        .await
        .unwrap();
    let check = admin.finished_job(&check, JOB_LIMIT).await.unwrap();
    assert_eq!(check["status"], "succeeded", "{check:#}");
    let lines = admin.job_logs(check["id"].as_str().unwrap()).await.unwrap();
    assert!(
        lines.iter().any(|l| l["text"]
            .as_str()
            .unwrap_or("")
            .contains("removing stale locks")),
        "{lines:#?}"
    );
    // restic removed the stale lock, then its own (the agent's refresh
    // after the check may take and drop a shared lock of its own).
    assert!(!lock_pids(&repo).await.contains(&pid), "{lines:#?}");
    wait_until(Duration::from_secs(60), "no lock left", || async {
        restic_locks(&repo).await.is_empty()
    })
    .await
    .unwrap();
    agent
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_stops_both_sides_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(Path::new(BIN), &[]).await.unwrap();
    let agent = server
        .enrolled_agent(
            Path::new(BIN),
            "polite",
            &rm_testkit::restic::binary(),
            &[("RM_RESTART_SPREAD", "2")],
        )
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    with_repository(&admin, &agent.host_id, &scratch.path().join("repo")).await;

    // The server: stops, telling the agent it is going away; the agent
    // comes back (within its restart spread) once it is up again.
    let status = server.terminate(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{status:?}\n{}", server.log());
    agent
        .process
        .wait_for_log("the server is shutting down", Duration::from_secs(10))
        .await
        .unwrap();
    server.start_again().await.unwrap();
    let admin = server.admin().await.unwrap();
    wait_until(
        Duration::from_secs(20),
        "the agent to reconnect",
        || async { matches!(admin.host(&agent.host_id).await, Ok(h) if h.online) },
    )
    .await
    .unwrap();

    // The agent: cancels the running backup and reports it cancelled.
    let job = running_slow_backup(&admin, &agent.host_id, scratch.path()).await;
    let restic = restic_child(agent.process.pid().unwrap()).await;
    let state_dir = agent.state_dir.clone();
    let exit = agent
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!alive(restic), "restic was stopped");
    let end = admin
        .wait_job_status(&job, "cancelled", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(end["error"], "cancelled", "{end:#}");
    assert_dense_once(&admin.job_logs(&job).await.unwrap());
    // The end reached the server before the agent closed; the ack may not
    // have, so at most that job is left to replay on the next start.
    assert!(spool_files(&state_dir).len() <= 1);
}
