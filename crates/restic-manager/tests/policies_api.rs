//! Fleet policies from the server's side, with hand-driven agents: labels
//! from the enrolment token, a policy giving repositories and schedules to
//! the hosts it matches, precedence (priority, the host's own settings),
//! one version bump per host per edit, taking back exactly what a policy
//! gave, shared repositories' generated passwords, bulk jobs, and every
//! bad request refused naming the field with nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use rm_protocol::api::HostView;
use rm_protocol::{Frame, Message, ScheduleAck};
use rm_testkit::{wait_until, Api, RawAgent, TestServer};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(10);

/// Enrols a host with a token carrying `labels`; returns its id and agent
/// token.
async fn enrol_labelled(admin: &Api, name: &str, labels: &[(&str, &str)]) -> (String, String) {
    let token = admin.create_token_with_labels(labels).await.unwrap();
    let enrolled = admin
        .enroll(&token.token, Some(name), &format!("{name}.test"))
        .await
        .unwrap();
    (enrolled.host_id, enrolled.agent_token)
}

async fn host(admin: &Api, id: &str) -> HostView {
    admin.host(id).await.unwrap()
}

async fn schedules(admin: &Api, host: &str) -> Vec<Value> {
    let (_, list) = admin
        .get(&format!("/api/v1/hosts/{host}/schedules"))
        .await
        .unwrap();
    list.as_array().unwrap().clone()
}

async fn create_policy(admin: &Api, body: Value) -> Value {
    let (status, created) = admin.post("/api/v1/policies", body).await.unwrap();
    assert_eq!(status, 201, "{created}");
    created
}

fn prod_policy() -> Value {
    json!({
        "name": "prod",
        "selector": {"env": "prod"},
        "repository": {"url": "/srv/restic/{host}"},
        "schedules": [
            {"kind": "backup", "cron": "0 2 * * *", "params": {"paths": ["/etc"]}},
            {"kind": "forget", "cron": "0 3 * * 0", "params": {"preset": "standard", "prune": true}}
        ],
        "freshness_seconds": 7200
    })
}

/// Receives frames until a `schedule.set` with at least `version`.
async fn schedule_set(agent: &mut RawAgent, version: u64) -> rm_protocol::ScheduleSet {
    for _ in 0..50 {
        let frame = tokio::time::timeout(LIMIT, agent.recv())
            .await
            .expect("a frame in time")
            .unwrap();
        if let Message::ScheduleSet(set) = frame.message {
            if set.version >= version {
                return set;
            }
        }
    }
    panic!("no schedule.set with version {version}");
}

#[tokio::test]
async fn bad_policies_are_refused_naming_the_field_and_change_nothing() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let schedule = json!({"kind": "backup", "cron": "@daily", "params": {"paths": ["/etc"]}});
    for (body, phrase) in [
        (
            json!({"name": "x", "selector": {"Env": "prod"}}),
            "`selector` key \"Env\"",
        ),
        (
            json!({"name": "x", "selector": {"env": "pr od"}}),
            "`selector.env` value",
        ),
        (json!({"name": "x", "priority": 5000}), "`priority`"),
        (json!({"name": "", "selector": {}}), "`name`"),
        (json!({"name": "x", "colour": "red"}), "colour"),
        (
            json!({"name": "x", "freshness_seconds": 5}),
            "`freshness_seconds`",
        ),
        (
            json!({"name": "x", "repository": {"url": "/srv/{hostname}"}}),
            "unknown placeholder `{hostname}`",
        ),
        (
            json!({"name": "x", "repository": {"url": "--repo=/x"}}),
            "`repository.url`",
        ),
        (
            json!({"name": "x", "repository": {"url": "/srv/{host}", "env": {"PATH": "/tmp"}}}),
            "`repository.env.PATH`",
        ),
        (
            json!({"name": "x", "repository": {"url": "/srv/{host}", "password": " padded "}}),
            "`repository.password`",
        ),
        (
            json!({"name": "x", "schedules": [schedule.clone(), {"kind": "backup", "cron": "61 * * * *", "params": {"paths": ["/a"]}}]}),
            "`schedules[1]`",
        ),
        (
            json!({"name": "x", "schedules": [{"kind": "restore", "cron": "@daily"}]}),
            "`schedules[0]`",
        ),
    ] {
        let (status, reply) = admin.post("/api/v1/policies", body.clone()).await.unwrap();
        assert_eq!(status, 400, "{body} → {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(phrase), "{body} → {message}");
    }
    let (_, list) = admin.get("/api/v1/policies").await.unwrap();
    assert_eq!(list, json!([]), "nothing was stored");

    // Two policies cannot share a name.
    create_policy(&admin, json!({"name": "one"})).await;
    let (status, reply) = admin
        .post("/api/v1/policies", json!({"name": "one"}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{reply}");
    let (status, _) = admin.get("/api/v1/policies/not-an-id").await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = admin
        .get(&format!("/api/v1/policies/{}", rm_core::PolicyId::new()))
        .await
        .unwrap();
    assert_eq!(status, 404);

    // Labels and freshness on a host are checked too.
    let (id, _) = server.enrolled_host("web").await.unwrap();
    for (body, phrase) in [
        (json!({"labels": {"env": "PROD"}}), "`labels.env` value"),
        (json!({"freshness_seconds": 1}), "`freshness_seconds`"),
        (json!({"name": ""}), "`name`"),
        (json!({"owner": "me"}), "owner"),
    ] {
        let (status, reply) = admin
            .patch(&format!("/api/v1/hosts/{id}"), body.clone())
            .await
            .unwrap();
        assert_eq!(status, 400, "{body} → {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(phrase),
            "{reply}"
        );
    }
    assert!(host(&admin, &id).await.labels.is_empty());
}

#[tokio::test]
async fn a_policy_configures_the_hosts_it_matches_and_takes_back_what_it_gave() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (web, web_token) = enrol_labelled(&admin, "web1", &[("env", "prod")]).await;
    let (lab, _) = enrol_labelled(&admin, "lab1", &[("env", "staging")]).await;
    assert_eq!(host(&admin, &web).await.labels["env"], "prod");
    assert!(host(&admin, &web).await.unconfigured);
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &web_token)
        .await
        .unwrap();

    let policy = create_policy(&admin, prod_policy()).await;
    let policy_id = policy["id"].as_str().unwrap().to_owned();
    assert_eq!(policy["hosts"], 1, "{policy}");
    assert_eq!(policy["repository"]["password"], "generated");
    assert_eq!(policy["schedules"][0]["description"], "every day at 02:00");
    assert_eq!(
        policy["schedules"][0]["next_fires"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The matching host got the repository and the schedules, marked as
    // the policy's; the other host nothing.
    let view = host(&admin, &web).await;
    assert_eq!(view.policy_id.as_deref(), Some(policy_id.as_str()));
    assert_eq!(view.policy_name.as_deref(), Some("prod"));
    assert_eq!(view.repository_source.as_deref(), Some("policy"));
    assert_eq!(view.repository_url.as_deref(), Some("/srv/restic/web1"));
    assert_eq!(
        (view.freshness_seconds, view.freshness_source.as_str()),
        (7200, "policy")
    );
    assert!(!view.unconfigured && !view.protected);
    let given = schedules(&admin, &web).await;
    assert_eq!(given.len(), 2);
    assert!(given
        .iter()
        .all(|s| s["source"] == "policy" && s["policy_id"] == policy_id.as_str()));
    assert!(host(&admin, &lab).await.policy_id.is_none());
    assert!(schedules(&admin, &lab).await.is_empty());
    // The new repository is initialised by a job the server queued.
    let (_, jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={web}"))
        .await
        .unwrap();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "init" && j["trigger"] == "system"),
        "{jobs}"
    );
    // A policy's schedule is changed on the policy, not on the host.
    let sid = given[0]["id"].as_str().unwrap();
    let (status, reply) = admin
        .put(
            &format!("/api/v1/schedules/{sid}"),
            json!({"kind": "backup", "cron": "@hourly", "params": {"paths": ["/etc"]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("policy"));

    // The connected agent got the set and acknowledges it: in sync.
    let version = host(&admin, &web).await.schedule_version;
    let set = schedule_set(&mut agent, version).await;
    assert_eq!(set.schedules.len(), 2);
    agent
        .send(Frame::new(ScheduleAck {
            version,
            applied_at: Utc::now(),
        }))
        .await
        .unwrap();
    wait_until(LIMIT, "the ack", || async {
        host(&admin, &web).await.schedule_in_sync
    })
    .await
    .unwrap();
    let (_, covered) = admin
        .get(&format!("/api/v1/policies/{policy_id}/hosts"))
        .await
        .unwrap();
    assert_eq!(covered[0]["host_id"], web.as_str());
    assert_eq!(covered[0]["in_sync"], true);

    // An edit bumps each covered host's version once and is pushed.
    let mut edited = prod_policy();
    edited["schedules"][0]["cron"] = json!("30 4 * * *");
    let (status, updated) = admin
        .put(&format!("/api/v1/policies/{policy_id}"), edited)
        .await
        .unwrap();
    assert_eq!(status, 200, "{updated}");
    let after = host(&admin, &web).await;
    assert_eq!(after.schedule_version, version + 1, "one bump per host");
    assert!(!after.schedule_in_sync, "drifted until the agent acks");
    let set = schedule_set(&mut agent, version + 1).await;
    assert!(set.schedules.iter().any(|s| s.cron == "30 4 * * *"));
    // The edited schedule kept its id on the host.
    assert_eq!(schedules(&admin, &web).await[0]["id"], given[0]["id"]);
    assert_eq!(host(&admin, &lab).await.schedule_version, 0, "untouched");

    // The host's own backup schedule replaces the policy's of that kind.
    let (status, own) = admin
        .post(
            &format!("/api/v1/hosts/{web}/schedules"),
            json!({"kind": "backup", "cron": "0 1 * * *", "params": {"paths": ["/home"]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{own}");
    let now: Vec<(String, String)> = schedules(&admin, &web)
        .await
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        now,
        [
            ("forget".to_owned(), "policy".to_owned()),
            ("backup".to_owned(), "host".to_owned())
        ]
    );

    // Removing the label takes the host out: exactly what the policy gave
    // goes (its repository too, since nothing else gives one); the host's
    // own schedule stays.
    let (status, patched) = admin
        .patch(
            &format!("/api/v1/hosts/{web}"),
            json!({"labels": {"env": "retired"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["policy_id"], Value::Null);
    assert_eq!(patched["repository_source"], Value::Null);
    let left = schedules(&admin, &web).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["source"], "host");
    let (status, _) = admin
        .get(&format!("/api/v1/hosts/{web}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 404, "no repository: nothing points nowhere");

    // Back in: the policy applies again; then deleting the policy takes it
    // back, and a host with nothing of its own is unconfigured.
    admin
        .patch(
            &format!("/api/v1/hosts/{lab}"),
            json!({"labels": {"env": "prod"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        host(&admin, &lab).await.policy_name.as_deref(),
        Some("prod")
    );
    assert_eq!(schedules(&admin, &lab).await.len(), 2);
    let (status, _) = admin
        .delete(&format!("/api/v1/policies/{policy_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let lab_view = host(&admin, &lab).await;
    assert!(
        lab_view.policy_id.is_none() && lab_view.unconfigured,
        "{lab_view:?}"
    );
    assert!(schedules(&admin, &lab).await.is_empty());

    // Every change is in the audit log.
    let (_, audit) = admin.get("/api/v1/audit?action=policy.").await.unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["policy.delete", "policy.update", "policy.create"]);
}

#[tokio::test]
async fn priority_and_the_hosts_own_settings_decide_which_settings_apply() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (db, _) = enrol_labelled(&admin, "db1", &[("env", "prod"), ("role", "db")]).await;
    let general = create_policy(&admin, prod_policy()).await;
    let special = create_policy(
        &admin,
        json!({
            "name": "prod-db",
            "selector": {"env": "prod", "role": "db"},
            "priority": 10,
            "repository": {"url": "/srv/db/{host_id}", "password": "db-secret"},
            "schedules": [{"kind": "check", "cron": "@weekly"}]
        }),
    )
    .await;
    let view = host(&admin, &db).await;
    assert_eq!(view.policy_name.as_deref(), Some("prod-db"));
    assert_eq!(view.policies_outranked, [general["id"].as_str().unwrap()]);
    assert_eq!(view.repository_url, Some(format!("/srv/db/{db}")));
    assert_eq!(
        (view.freshness_seconds, view.freshness_source.as_str()),
        (26 * 3600, "default")
    );
    let kinds: Vec<Value> = schedules(&admin, &db)
        .await
        .iter()
        .map(|s| s["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("check")]);
    let (_, password) = admin
        .get(&format!("/api/v1/hosts/{db}/repository/password"))
        .await
        .unwrap();
    assert_eq!(password["password"], "db-secret");

    // The host's own repository and freshness win; removing its own
    // repository hands it back to the policy.
    admin
        .set_repository(&db, "/srv/own", "own-secret")
        .await
        .unwrap();
    admin
        .patch(
            &format!("/api/v1/hosts/{db}"),
            json!({"freshness_seconds": 3600}),
        )
        .await
        .unwrap();
    let view = host(&admin, &db).await;
    assert_eq!(view.repository_source.as_deref(), Some("host"));
    assert_eq!(view.repository_url.as_deref(), Some("/srv/own"));
    assert_eq!(
        (view.freshness_seconds, view.freshness_source.as_str()),
        (3600, "host")
    );
    // A policy edit leaves the host's own repository alone.
    let mut edited = special.clone();
    for field in ["id", "hosts", "hosts_in_sync", "created_at", "updated_at"] {
        edited.as_object_mut().unwrap().remove(field);
    }
    edited["repository"] = json!({"url": "/srv/db2/{host}", "password": "db-secret"});
    edited["schedules"] = json!([{"kind": "check", "cron": "@weekly"}]);
    let (status, reply) = admin
        .put(
            &format!("/api/v1/policies/{}", special["id"].as_str().unwrap()),
            edited,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        host(&admin, &db).await.repository_url.as_deref(),
        Some("/srv/own")
    );
    let (status, _) = admin
        .delete(&format!("/api/v1/hosts/{db}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let view = host(&admin, &db).await;
    assert_eq!(view.repository_source.as_deref(), Some("policy"));
    assert_eq!(view.repository_url.as_deref(), Some("/srv/db2/db1"));
    let (status, _) = admin
        .delete(&format!("/api/v1/hosts/{db}/repository"))
        .await
        .unwrap();
    assert_eq!(
        status, 404,
        "a policy's repository is changed on the policy"
    );
}

#[tokio::test]
async fn hosts_of_one_shared_repository_get_one_generated_password() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (a, _) = enrol_labelled(&admin, "web1", &[("role", "web")]).await;
    create_policy(
        &admin,
        json!({"name": "web", "selector": {"role": "web"}, "repository": {"url": "/srv/restic/web-fleet/"}}),
    )
    .await;
    // A host enrolled later joins the same repository with its password.
    let (b, _) = enrol_labelled(&admin, "web2", &[("role", "web")]).await;
    let password = |id: String| {
        let admin = admin.clone();
        async move {
            let (status, body) = admin
                .get(&format!("/api/v1/hosts/{id}/repository/password"))
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            body["password"].as_str().unwrap().to_owned()
        }
    };
    let (pa, pb) = (password(a.clone()).await, password(b.clone()).await);
    assert!(pa.len() >= 16);
    assert_eq!(pa, pb, "one repository, one password");
    let va = host(&admin, &a).await;
    assert_eq!(va.repository_shared_with, 1);
    assert_eq!(va.repository_url, host(&admin, &b).await.repository_url);
    let (_, audit) = admin
        .get("/api/v1/audit?action=repository.password_show")
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_bulk_job_starts_on_every_matching_connected_host() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (on, on_token) = enrol_labelled(&admin, "web1", &[("env", "prod")]).await;
    let (off, _) = enrol_labelled(&admin, "web2", &[("env", "prod")]).await;
    let (other, other_token) = enrol_labelled(&admin, "lab1", &[("env", "lab")]).await;
    for id in [&on, &off, &other] {
        admin
            .set_repository(id, &format!("/srv/{id}"), "pw")
            .await
            .unwrap();
    }
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &on_token)
        .await
        .unwrap();
    let _lab = RawAgent::connect_and_hello(&server.ws_url(), &other_token)
        .await
        .unwrap();
    wait_until(LIMIT, "agents online", || async {
        host(&admin, &on).await.online && host(&admin, &other).await.online
    })
    .await
    .unwrap();

    for (body, phrase) in [
        (
            json!({"selector": {"env": "prod"}, "kind": "explode"}),
            "`kind`",
        ),
        (
            json!({"selector": {"env": "prod"}, "kind": "backup", "params": {"paths": ["rel"]}}),
            "params.paths[0]",
        ),
        (
            json!({"selector": {"ENV": "prod"}, "kind": "check"}),
            "`selector`",
        ),
        (
            json!({"selector": {}, "kind": "check", "max_parallel": 0}),
            "`max_parallel`",
        ),
        (
            json!({"selector": {}, "kind": "restore", "params": {}}),
            "restore",
        ),
    ] {
        let (status, reply) = admin.post("/api/v1/jobs", body.clone()).await.unwrap();
        assert_eq!(status, 400, "{body} → {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(phrase),
            "{reply}"
        );
    }

    let (status, created) = admin
        .post(
            "/api/v1/jobs",
            json!({"selector": {"env": "prod"}, "kind": "backup", "params": {"paths": ["/etc"]}, "max_parallel": 5}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let jobs = created["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["host_id"], on.as_str());
    assert_eq!(
        created["skipped"],
        json!([{"host_id": off, "name": "web2", "reason": "offline"}])
    );
    // Dispatched to the connected agent like any job, after the init the
    // repository setting queued.
    let init = agent.next_run().await.unwrap();
    assert_eq!(init.kind, rm_protocol::JobKind::Init);
    agent
        .run_to_end(&init.job_id, rm_protocol::JobOutcome::Succeeded, &[])
        .await
        .unwrap();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, jobs[0]["id"].as_str().unwrap());
    let (_, lab_jobs) = admin
        .get(&format!("/api/v1/jobs?host_id={other}"))
        .await
        .unwrap();
    assert!(
        lab_jobs
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] == "init"),
        "{lab_jobs}"
    );
}

#[tokio::test]
async fn a_policy_gives_a_second_repository_for_copies() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (a, _) = enrol_labelled(&admin, "web1", &[("role", "web")]).await;
    let (b, _) = enrol_labelled(&admin, "web2", &[("role", "web")]).await;
    // The copy target must not be the repository itself, nor a flag.
    for (copy_to, phrase) in [
        (json!({"url": "/srv/restic/{host}"}), "copy_to.url"),
        (json!({"url": "-x/{host}"}), "copy_to.url"),
        (json!({"url": "/srv/{nope}"}), "copy_to.url"),
    ] {
        let (status, reply) = admin
            .post(
                "/api/v1/policies",
                json!({"name": "web", "selector": {"role": "web"},
                       "repository": {"url": "/srv/restic/{host}", "copy_to": copy_to}}),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(phrase),
            "{reply}"
        );
    }
    let policy = create_policy(
        &admin,
        json!({"name": "web", "selector": {"role": "web"},
               "repository": {"url": "/srv/restic/{host}", "copy_to": {"url": "/mnt/offsite/web-fleet"}},
               "schedules": [{"kind": "copy", "cron": "0 6 * * *"}]}),
    )
    .await;
    assert_eq!(
        policy["repository"]["copy_to"]["password"], "generated",
        "{policy}"
    );
    for id in [&a, &b] {
        let (status, repo) = admin
            .get(&format!("/api/v1/hosts/{id}/repository"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{repo}");
        assert_eq!(repo["copy_to"]["url"], "/mnt/offsite/web-fleet", "{repo}");
        assert_eq!(repo["source"], "policy");
    }
    assert_eq!(schedules(&admin, &a).await[0]["kind"], "copy");
}
