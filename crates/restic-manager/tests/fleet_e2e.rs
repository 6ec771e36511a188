//! Managing a fleet end to end, with real agents and the real restic:
//! hosts enrolled with a labelled token get their policy's repository and
//! schedules and back up on their own; a policy edit reaches every host;
//! label changes, a host's own settings and deleting the policy take back
//! exactly what the policy gave; a repository shared by two hosts runs its
//! exclusive jobs alone (and a policy's check once per fire), keeps each
//! host's `forget` to its own snapshots and has one password; bulk jobs
//! skip offline hosts and keep to `max_parallel`.
//!
//! Every agent runs on this machine, so each gets its own host name
//! (`agent run --hostname`, here `RM_HOSTNAME`): that is what restic
//! records in its snapshots and what its `forget` keeps to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rm_testkit::e2e::{succeeded, write_hook, JOB_LIMIT};
use rm_testkit::{wait_until, Api, RunningAgent, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

/// A server, its admin and a scratch folder for repositories and sources.
struct Fleet {
    server: TestServer,
    admin: Api,
    scratch: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Fleet {
        let server = TestServer::start().await.unwrap();
        let admin = server.admin().await.unwrap();
        Fleet {
            server,
            admin,
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> String {
        self.scratch.path().join(rel).display().to_string()
    }

    /// Enrols `name` with an enrolment token carrying `labels` and runs its
    /// real agent, which names itself `<name>.fleet.test` to restic.
    async fn enrol(&self, name: &str, labels: &[(&str, &str)]) -> RunningAgent {
        let hostname = hostname(name);
        self.server
            .enrolled_agent_labelled(
                Path::new(BIN),
                name,
                labels,
                &rm_testkit::restic::binary(),
                &[("RM_HOSTNAME", hostname.as_str())],
            )
            .await
            .unwrap()
    }

    async fn host(&self, id: &str) -> Value {
        let (status, host) = self
            .admin
            .get(&format!("/api/v1/hosts/{id}"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{host}");
        host
    }

    async fn jobs(&self, host: &str) -> Vec<Value> {
        self.admin.host_jobs(host, 500).await.unwrap()
    }

    /// Waits until one of the host's jobs passes `check`; returns it.
    async fn wait_job(&self, host: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let found = || async { self.jobs(host).await.into_iter().find(|j| check(j)) };
        if let Err(e) = wait_until(JOB_LIMIT, what, || async { found().await.is_some() }).await {
            panic!("{e}; jobs of {host}: {:#}", json!(self.jobs(host).await));
        }
        found().await.unwrap()
    }

    async fn schedules(&self, host: &str) -> Vec<Value> {
        let (status, list) = self
            .admin
            .get(&format!("/api/v1/hosts/{host}/schedules"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().clone()
    }

    async fn password(&self, host: &str) -> String {
        let (status, body) = self
            .admin
            .get(&format!("/api/v1/hosts/{host}/repository/password"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body["password"].as_str().unwrap().to_owned()
    }

    async fn run(&self, host: &str, kind: &str, params: Value) -> Value {
        let id = self.admin.start_job(host, kind, params).await.unwrap();
        self.admin.finished_job(&id, JOB_LIMIT).await.unwrap()
    }

    /// The snapshots restic itself lists in `repo`, as (host name, tags).
    async fn restic_snapshots(&self, repo: &str, password: &str) -> Vec<(String, Vec<String>)> {
        let out = rm_testkit::restic::on_repository_ok(
            &rm_testkit::restic::binary(),
            repo,
            password,
            &["snapshots", "--json"],
        )
        .await;
        let list: Vec<Value> = serde_json::from_slice(&out).unwrap();
        list.iter()
            .map(|s| {
                let tags = s["tags"]
                    .as_array()
                    .map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                (s["hostname"].as_str().unwrap().to_owned(), tags)
            })
            .collect()
    }
}

fn hostname(name: &str) -> String {
    format!("{name}.fleet.test")
}

fn time(job: &Value, field: &str) -> DateTime<Utc> {
    job[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {job:#}"))
        .parse()
        .unwrap()
}

fn is_finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "partial" | "failed" | "cancelled" | "skipped")
    )
}

/// A small source tree under `root`.
fn small_source(root: &str) -> String {
    let root = PathBuf::from(root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/app.conf"), b"threads = 4\n").unwrap();
    std::fs::write(root.join("notes.txt"), b"fleet\n").unwrap();
    root.display().to_string()
}

fn tagged(tag: &str) -> impl Fn(&Value) -> bool + '_ {
    move |j: &Value| {
        j["kind"] == "backup"
            && j["trigger"] == "schedule"
            && j["status"] == "succeeded"
            && j["params"]["tags"] == json!([tag])
    }
}

#[tokio::test]
async fn a_policy_configures_labelled_hosts_follows_edits_and_takes_back_what_it_gave() {
    let fleet = Fleet::start().await;
    let src = small_source(&fleet.path("src"));
    let policy_body = |cron: &str, tag: &str| {
        json!({
            "name": "prod",
            "selector": {"env": "prod"},
            "repository": {"url": fleet.path("repos/{host}")},
            "schedules": [{"kind": "backup", "cron": cron, "params": {"paths": [src], "tags": [tag]}}],
        })
    };
    // The policy exists before the hosts: enrolment alone must configure
    // them.
    let policy = fleet
        .admin
        .create_policy(policy_body("*/5 * * * * *", "v1"))
        .await
        .unwrap();
    let policy_id = policy["id"].as_str().unwrap().to_owned();

    let names = ["web-1", "web-2", "web-3"];
    let mut agents = Vec::new();
    for name in names {
        agents.push(fleet.enrol(name, &[("env", "prod"), ("tier", "web")]).await);
    }
    let ids: Vec<String> = agents.iter().map(|a| a.host_id.clone()).collect();

    // Each host: its own repository initialised, its first scheduled
    // backup made by the agent's clock, recorded under its own host name.
    for (id, name) in ids.iter().zip(names) {
        let init = fleet
            .wait_job(id, "the policy's init", |j| {
                j["kind"] == "init" && is_finished(j)
            })
            .await;
        succeeded(&init);
        assert_eq!(init["trigger"], "system", "{init:#}");
        fleet
            .wait_job(id, "a scheduled v1 backup", tagged("v1"))
            .await;
        let host = fleet.host(id).await;
        assert_eq!(host["policy_id"], policy_id.as_str(), "{host:#}");
        assert_eq!(host["repository_source"], "policy", "{host:#}");
        assert_eq!(host["repository_shared_with"], 0, "{host:#}");
        assert_eq!(host["unconfigured"], false, "{host:#}");
        assert_eq!(host["hostname"], hostname(name).as_str(), "{host:#}");
        let repo = fleet.path(&format!("repos/{name}"));
        let snapshots = fleet
            .restic_snapshots(&repo, &fleet.password(id).await)
            .await;
        assert!(!snapshots.is_empty());
        assert!(
            snapshots
                .iter()
                .all(|(h, tags)| h == &hostname(name) && tags == &["v1"]),
            "{name}: {snapshots:?}"
        );
    }
    let passwords = [fleet.password(&ids[0]).await, fleet.password(&ids[1]).await];
    let web3_password = fleet.password(&ids[2]).await;
    assert_ne!(
        passwords[0], passwords[1],
        "per-host repositories get a password each"
    );

    // An edit reaches all three: one version bump each, acknowledged, and
    // the agents run the new schedule.
    let mut before = BTreeMap::new();
    for id in &ids {
        let version = fleet
            .admin
            .wait_schedule_acked(id, 1, JOB_LIMIT)
            .await
            .unwrap();
        before.insert(id.clone(), version);
    }
    let edited = fleet
        .admin
        .update_policy(&policy_id, policy_body("*/4 * * * * *", "v2"))
        .await
        .unwrap();
    assert_eq!(edited["schedules"][0]["cron"], "*/4 * * * * *");
    for id in &ids {
        let version = fleet
            .admin
            .wait_schedule_acked(id, before[id] + 1, JOB_LIMIT)
            .await
            .unwrap();
        assert_eq!(version, before[id] + 1, "one bump per host and edit");
        fleet
            .wait_job(id, "a scheduled v2 backup", tagged("v2"))
            .await;
    }
    let (_, coverage) = fleet
        .admin
        .get(&format!("/api/v1/policies/{policy_id}/hosts"))
        .await
        .unwrap();
    let coverage = coverage.as_array().unwrap();
    assert_eq!(coverage.len(), 3, "{coverage:#?}");
    assert!(
        coverage.iter().all(|h| h["in_sync"] == true),
        "{coverage:#?}"
    );

    // Labels that no longer match take web-3 out: its schedules and its
    // repository go, and it says it is unconfigured.
    let (status, body) = fleet
        .admin
        .patch(
            &format!("/api/v1/hosts/{}", ids[2]),
            json!({"labels": {"env": "staging", "tier": "web"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let host = fleet.host(&ids[2]).await;
    assert_eq!(host["policy_id"], Value::Null, "{host:#}");
    assert_eq!(host["repository_source"], Value::Null, "{host:#}");
    assert_eq!(host["unconfigured"], true, "{host:#}");
    assert_eq!(fleet.schedules(&ids[2]).await, Vec::<Value>::new());
    let version = fleet.host(&ids[2]).await["schedule_version"]
        .as_u64()
        .unwrap();
    fleet
        .admin
        .wait_schedule_acked(&ids[2], version, JOB_LIMIT)
        .await
        .unwrap();

    // Back in `env=prod`, web-3 gets its repository again, with the
    // password it was made with (the repository is still there), and then
    // leaves again.
    let relabel = |env: &'static str| {
        let path = format!("/api/v1/hosts/{}", ids[2]);
        let admin = fleet.admin.clone();
        async move {
            let (status, body) = admin
                .patch(&path, json!({"labels": {"env": env, "tier": "web"}}))
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
        }
    };
    relabel("prod").await;
    assert_eq!(fleet.host(&ids[2]).await["repository_source"], "policy");
    assert_eq!(fleet.password(&ids[2]).await, web3_password);
    let backup = fleet.run(&ids[2], "backup", json!({"paths": [src]})).await;
    succeeded(&backup);
    relabel("staging").await;
    assert_eq!(fleet.host(&ids[2]).await["unconfigured"], true);

    // web-2's own backup schedule replaces the policy's.
    let (status, own) = fleet
        .admin
        .post(
            &format!("/api/v1/hosts/{}/schedules", ids[1]),
            json!({"kind": "backup", "cron": "0 3 * * *", "params": {"paths": [src]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{own}");
    let schedules = fleet.schedules(&ids[1]).await;
    assert_eq!(schedules.len(), 1, "{schedules:#?}");
    assert_eq!(schedules[0]["source"], "host", "{schedules:#?}");
    assert_eq!(schedules[0]["cron"], "0 3 * * *", "{schedules:#?}");
    assert_eq!(fleet.host(&ids[1]).await["repository_source"], "policy");

    // Bulk backup of `env=prod`: web-2 is offline and skipped, web-1 gets
    // a job, web-3 (staging now) nothing.
    let web2 = agents.remove(1);
    web2.process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "web-2 offline", || async {
        !fleet.server.host_online(&ids[1]).await
    })
    .await
    .unwrap();
    let (status, bulk) = fleet
        .admin
        .post(
            "/api/v1/jobs",
            json!({"selector": {"env": "prod"}, "kind": "backup", "params": {"paths": [src], "tags": ["bulk"]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{bulk}");
    let jobs = bulk["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{bulk:#}");
    assert_eq!(jobs[0]["host_id"], ids[0].as_str(), "{bulk:#}");
    assert_eq!(
        bulk["skipped"],
        json!([{"host_id": ids[1], "name": "web-2", "reason": "offline"}]),
        "{bulk:#}"
    );
    let job = fleet
        .admin
        .finished_job(jobs[0]["id"].as_str().unwrap(), JOB_LIMIT)
        .await
        .unwrap();
    succeeded(&job);
    for id in &ids[1..] {
        assert!(
            !fleet
                .jobs(id)
                .await
                .iter()
                .any(|j| j["params"]["tags"] == json!(["bulk"])),
            "no bulk job on {id}"
        );
    }

    // Without its own schedule web-2 has the policy's again.
    let (status, body) = fleet
        .admin
        .delete(&format!(
            "/api/v1/schedules/{}",
            own["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let schedules = fleet.schedules(&ids[1]).await;
    assert_eq!(schedules.len(), 1, "{schedules:#?}");
    assert_eq!(schedules[0]["source"], "policy", "{schedules:#?}");
    assert_eq!(schedules[0]["cron"], "*/4 * * * * *", "{schedules:#?}");

    // web-1 gets a repository of its own, then the policy goes: web-1
    // keeps its own repository and loses the policy's schedule; web-2
    // loses both the policy gave it and shows as unconfigured.
    let own_repo = fleet.path("own/web-1");
    fleet
        .admin
        .set_repository(&ids[0], &own_repo, "web-1-own-password")
        .await
        .unwrap();
    let (status, body) = fleet
        .admin
        .delete(&format!("/api/v1/policies/{policy_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let web1 = fleet.host(&ids[0]).await;
    assert_eq!(web1["policy_id"], Value::Null, "{web1:#}");
    assert_eq!(web1["repository_source"], "host", "{web1:#}");
    assert_eq!(web1["unconfigured"], false, "{web1:#}");
    assert_eq!(fleet.schedules(&ids[0]).await, Vec::<Value>::new());
    let web2_view = fleet.host(&ids[1]).await;
    assert_eq!(web2_view["policy_id"], Value::Null, "{web2_view:#}");
    assert_eq!(web2_view["repository_source"], Value::Null, "{web2_view:#}");
    assert_eq!(web2_view["unconfigured"], true, "{web2_view:#}");
    assert_eq!(fleet.schedules(&ids[1]).await, Vec::<Value>::new());
    let (status, _) = fleet
        .admin
        .get(&format!("/api/v1/hosts/{}/repository", ids[1]))
        .await
        .unwrap();
    assert_eq!(status, 404, "web-2 has no repository left");
    // Its own repository's init (its second; the first was the policy's).
    wait_until(JOB_LIMIT, "web-1's own init", || async {
        let jobs = fleet.jobs(&ids[0]).await;
        let inits: Vec<&Value> = jobs.iter().filter(|j| j["kind"] == "init").collect();
        inits.len() == 2 && inits.iter().all(|j| is_finished(j))
    })
    .await
    .unwrap();
    let version = fleet.host(&ids[0]).await["schedule_version"]
        .as_u64()
        .unwrap();
    fleet
        .admin
        .wait_schedule_acked(&ids[0], version, JOB_LIMIT)
        .await
        .unwrap();
    // After the ack web-1's agent fires nothing any more: a backup it
    // runs now goes to its own repository.
    let job = fleet.run(&ids[0], "backup", json!({"paths": [src]})).await;
    succeeded(&job);
    let own = fleet
        .restic_snapshots(&own_repo, "web-1-own-password")
        .await;
    assert!(own.iter().any(|(h, _)| h == &hostname("web-1")), "{own:?}");
}

#[tokio::test]
async fn a_shared_repository_runs_exclusive_jobs_alone_and_keeps_forget_to_each_host() {
    let fleet = Fleet::start().await;
    let shared = fleet.path("shared");
    // A check every 5 seconds, from both hosts' clocks.
    let policy = fleet
        .admin
        .create_policy(json!({
            "name": "pool",
            "selector": {"pool": "a"},
            "repository": {"url": shared},
            "schedules": [{"kind": "check", "cron": "*/5 * * * * *", "params": {}}],
        }))
        .await
        .unwrap();
    let policy_id = policy["id"].as_str().unwrap().to_owned();
    let alpha = fleet.enrol("alpha", &[("pool", "a")]).await;
    let beta = fleet.enrol("beta", &[("pool", "a")]).await;
    let (a, b) = (alpha.host_id.clone(), beta.host_id.clone());

    // Both inits end well (the second finds the repository there), and
    // both hosts know they share it.
    for id in [&a, &b] {
        let init = fleet
            .wait_job(id, "the init", |j| j["kind"] == "init" && is_finished(j))
            .await;
        succeeded(&init);
        let host = fleet.host(id).await;
        assert_eq!(host["repository_shared_with"], 1, "{host:#}");
    }
    assert_eq!(
        fleet.host(&a).await["repository_url"],
        fleet.host(&b).await["repository_url"]
    );

    // One generated password for both, shown on request and audited.
    let password = fleet.password(&a).await;
    assert_eq!(fleet.password(&b).await, password);
    let (_, audit) = fleet
        .admin
        .get("/api/v1/audit?action=repository.password_show&limit=50")
        .await
        .unwrap();
    let shown: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "repository.password_show")
        .map(|e| e["target_id"].as_str().unwrap())
        .collect();
    assert!(
        shown.contains(&a.as_str()) && shown.contains(&b.as_str()),
        "{audit:#}"
    );

    // The policy's check runs once per fire for the repository, not once
    // per host: both agents fire it every 5 s, and every fire time has one
    // job between them.
    let scheduled_checks = || async {
        let mut all = fleet.jobs(&a).await;
        all.extend(fleet.jobs(&b).await);
        all.retain(|j| {
            j["kind"] == "check" && j["trigger"] == "schedule" && j["status"] != "skipped"
        });
        all
    };
    let fire_of = |job: &Value| time(job, "created_at").timestamp() / 5;
    wait_until(JOB_LIMIT, "three fires of the policy's check", || async {
        let fires: std::collections::BTreeSet<i64> =
            scheduled_checks().await.iter().map(fire_of).collect();
        fires.len() >= 3
    })
    .await
    .unwrap();
    // Stop the schedule before counting, so no fire is half made.
    fleet
        .admin
        .update_policy(
            &policy_id,
            json!({"name": "pool", "selector": {"pool": "a"}, "repository": {"url": shared}}),
        )
        .await
        .unwrap();
    for id in [&a, &b] {
        let version = fleet.host(id).await["schedule_version"].as_u64().unwrap();
        fleet
            .admin
            .wait_schedule_acked(id, version, JOB_LIMIT)
            .await
            .unwrap();
    }
    let checks = scheduled_checks().await;
    let mut per_fire: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for job in &checks {
        per_fire.entry(fire_of(job)).or_default().push(job);
    }
    for (fire, jobs) in &per_fire {
        assert_eq!(jobs.len(), 1, "fire {fire}: {jobs:#?}");
    }
    for job in &checks {
        let job = fleet
            .admin
            .finished_job(job["id"].as_str().unwrap(), JOB_LIMIT)
            .await
            .unwrap();
        succeeded(&job);
    }

    // Both back up into it (with the one password); each host's snapshot
    // list is its own, and `forget` on alpha touches only alpha's.
    let src_a = fleet.path("src-a");
    rm_testkit::fixtures::make_tree(Path::new(&src_a));
    let src_b = small_source(&fleet.path("src-b"));
    for _ in 0..2 {
        succeeded(&fleet.run(&a, "backup", json!({"paths": [src_a]})).await);
    }
    succeeded(&fleet.run(&b, "backup", json!({"paths": [src_b]})).await);
    let count = |host: &str| {
        let host = hostname(host);
        move |list: &[(String, Vec<String>)]| list.iter().filter(|(h, _)| *h == host).count()
    };
    let listed = fleet.restic_snapshots(&shared, &password).await;
    assert_eq!(
        (count("alpha")(&listed), count("beta")(&listed)),
        (2, 1),
        "{listed:?}"
    );
    fleet.admin.wait_snapshots(&a, 2, JOB_LIMIT).await.unwrap();
    fleet.admin.wait_snapshots(&b, 1, JOB_LIMIT).await.unwrap();
    let forget = fleet.run(&a, "forget", json!({"keep_last": 1})).await;
    succeeded(&forget);
    let listed = fleet.restic_snapshots(&shared, &password).await;
    assert_eq!(
        (count("alpha")(&listed), count("beta")(&listed)),
        (1, 1),
        "{listed:?}"
    );

    // Retention from the policy, a forget that prunes every 5 s: at every
    // fire each host forgets its own snapshots, and the repository is
    // pruned once, by one of them.
    succeeded(&fleet.run(&a, "backup", json!({"paths": [src_a]})).await);
    succeeded(&fleet.run(&b, "backup", json!({"paths": [src_b]})).await);
    let pool = |schedules: Value| json!({"name": "pool", "selector": {"pool": "a"}, "repository": {"url": shared}, "schedules": schedules});
    fleet
        .admin
        .update_policy(
            &policy_id,
            pool(json!([{"kind": "forget", "cron": "*/5 * * * * *", "params": {"keep_last": 1, "prune": true}}])),
        )
        .await
        .unwrap();
    for id in [&a, &b] {
        let version = fleet.host(id).await["schedule_version"].as_u64().unwrap();
        fleet
            .admin
            .wait_schedule_acked(id, version, JOB_LIMIT)
            .await
            .unwrap();
    }
    // Fires from the next whole one on find both agents running the set.
    let first = Utc::now().timestamp() / 5 + 1;
    let scheduled_forgets = || async {
        let mut all = fleet.jobs(&a).await;
        all.extend(fleet.jobs(&b).await);
        all.retain(|j| j["kind"] == "forget" && j["trigger"] == "schedule");
        all
    };
    wait_until(JOB_LIMIT, "three fires of the policy's forget", || async {
        scheduled_forgets()
            .await
            .iter()
            .any(|j| fire_of(j) >= first + 2)
    })
    .await
    .unwrap();
    // Every fire before the current one is complete on both hosts.
    let last = Utc::now().timestamp() / 5 - 1;
    fleet
        .admin
        .update_policy(&policy_id, pool(json!([])))
        .await
        .unwrap();
    for id in [&a, &b] {
        let version = fleet.host(id).await["schedule_version"].as_u64().unwrap();
        fleet
            .admin
            .wait_schedule_acked(id, version, JOB_LIMIT)
            .await
            .unwrap();
    }
    let mut per_fire: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for job in scheduled_forgets().await {
        let job = fleet
            .admin
            .finished_job(job["id"].as_str().unwrap(), JOB_LIMIT)
            .await
            .unwrap();
        if job["status"] != "skipped" {
            succeeded(&job);
        }
        per_fire.entry(fire_of(&job)).or_default().push(job);
    }
    let checked: Vec<_> = per_fire.range(first..=last).collect();
    assert!(checked.len() >= 2, "{per_fire:#?}");
    for (fire, jobs) in checked {
        // One record per host (a job, or a fire skipped while its previous
        // one still ran), and at most one prune.
        let mut hosts: Vec<&str> = jobs
            .iter()
            .map(|j| j["host_id"].as_str().unwrap())
            .collect();
        hosts.sort_unstable();
        let mut both = vec![a.as_str(), b.as_str()];
        both.sort_unstable();
        assert_eq!(hosts, both, "fire {fire}: {jobs:#?}");
        let prunes = jobs
            .iter()
            .filter(|j| j["status"] != "skipped" && j["params"]["prune"] == true)
            .count();
        assert!(prunes <= 1, "fire {fire}: {jobs:#?}");
    }
    let listed = fleet.restic_snapshots(&shared, &password).await;
    assert_eq!(
        (count("alpha")(&listed), count("beta")(&listed)),
        (1, 1),
        "{listed:?}"
    );

    // A prune on beta waits while alpha's backup runs (held by its
    // `before` hook until the test lets it go), and starts after it ends;
    // so does a forget without prune (restic's forget takes the exclusive
    // lock too).
    let release = fleet.scratch.path().join("release");
    write_hook(
        &alpha.state_dir,
        "hold",
        &format!(
            "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.05; done\n",
            release.display()
        ),
        0o700,
    );
    for (kind, params) in [("prune", json!({})), ("forget", json!({"keep_last": 1}))] {
        if release.exists() {
            std::fs::remove_file(&release).unwrap();
        }
        let backup = fleet
            .admin
            .start_job(
                &a,
                "backup",
                json!({"paths": [src_a], "hooks": {"before": ["hold"]}}),
            )
            .await
            .unwrap();
        fleet
            .admin
            .wait_job_status(&backup, "running", JOB_LIMIT)
            .await
            .unwrap();
        let exclusive = fleet.admin.start_job(&b, kind, params).await.unwrap();
        let waiting = fleet.admin.job(&exclusive).await.unwrap();
        assert_eq!(waiting["status"], "queued", "{waiting:#}");
        // Still so once beta has nothing else to do, while the backup runs.
        assert_eq!(fleet.admin.job(&backup).await.unwrap()["status"], "running");
        assert_eq!(
            fleet.admin.job(&exclusive).await.unwrap()["status"],
            "queued"
        );
        std::fs::write(&release, b"").unwrap();
        let backup = fleet.admin.finished_job(&backup, JOB_LIMIT).await.unwrap();
        succeeded(&backup);
        let exclusive = fleet
            .admin
            .finished_job(&exclusive, JOB_LIMIT)
            .await
            .unwrap();
        succeeded(&exclusive);
        assert!(
            time(&exclusive, "started_at") >= time(&backup, "finished_at"),
            "{kind} {exclusive:#}\nbackup {backup:#}"
        );
    }

    // The opposite: a check on beta reading every pack (slowly) holds a
    // backup on alpha queued until it ends.
    let check = fleet
        .admin
        .start_job(
            &b,
            "check",
            json!({"read_data_subset": "100%", "limit_download_kib": 256}),
        )
        .await
        .unwrap();
    fleet
        .admin
        .wait_job_status(&check, "running", JOB_LIMIT)
        .await
        .unwrap();
    let backup = fleet
        .admin
        .start_job(&a, "backup", json!({"paths": [src_a]}))
        .await
        .unwrap();
    let waiting = fleet.admin.job(&backup).await.unwrap();
    assert_eq!(waiting["status"], "queued", "{waiting:#}");
    let check = fleet.admin.finished_job(&check, JOB_LIMIT).await.unwrap();
    succeeded(&check);
    let backup = fleet.admin.finished_job(&backup, JOB_LIMIT).await.unwrap();
    succeeded(&backup);
    assert!(
        time(&backup, "started_at") >= time(&check, "finished_at"),
        "backup {backup:#}\ncheck {check:#}"
    );

    // A bulk backup of both with `max_parallel: 1` runs one at a time in
    // their shared repository.
    let (status, bulk) = fleet
        .admin
        .post(
            "/api/v1/jobs",
            json!({"selector": {"pool": "a"}, "kind": "backup", "params": {"paths": [src_b]}, "max_parallel": 1}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{bulk}");
    assert_eq!(bulk["jobs"].as_array().unwrap().len(), 2, "{bulk:#}");
    let mut ran = Vec::new();
    for job in bulk["jobs"].as_array().unwrap() {
        let job = fleet
            .admin
            .finished_job(job["id"].as_str().unwrap(), JOB_LIMIT)
            .await
            .unwrap();
        succeeded(&job);
        ran.push((time(&job, "started_at"), time(&job, "finished_at")));
    }
    ran.sort();
    assert!(ran[1].0 >= ran[0].1, "they overlapped: {ran:?}");
}
