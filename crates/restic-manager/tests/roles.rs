//! Roles and scopes over HTTP: the role matrix over every rule of the
//! access table (so a new route cannot skip it), that every rule names a
//! real route, API tokens narrower than their user, a demotion counting
//! from the next request, the audit of role changes, the last admin, and
//! what a scoped user's lists, pages and restore wizard show. The browser
//! tests of roles are in `ui_roles.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use reqwest::{Method, StatusCode};
use rm_core::Role;
use rm_server::access::{api_rules, Reach, Rule};
use rm_store::{NewAlert, NewJob};
use rm_testkit::{Api, TestServer};
use serde_json::{json, Value};

const PASSWORD: &str = "a-long-password-1";

/// Everything the matrix needs ids of: one of each inside the scoped
/// user's scope (`team=a`) and outside it (`team=b`).
struct World {
    server: TestServer,
    admin: Api,
    operator: Api,
    viewer: Api,
    scoped: Api,
    /// Host, job, schedule and alert of team a (`.0`) and team b (`.1`).
    hosts: (String, String),
    jobs: (String, String),
    schedules: (String, String),
    alerts: (String, String),
    policy: String,
    spare_user: String,
}

async fn job_on(server: &TestServer, host: &str) -> String {
    let job = server
        .store()
        .create_job(
            &NewJob {
                id: rm_core::JobId::new(),
                host_id: host.parse().unwrap(),
                kind: "check".into(),
                params: json!({}),
                trigger: rm_core::JobTrigger::Manual,
                schedule_id: None,
                status: rm_core::JobStatus::Queued,
                error: None,
                created_at: Utc::now(),
            },
            None,
        )
        .await
        .unwrap();
    job.id.to_string()
}

async fn alert_on(server: &TestServer, host: &str) -> String {
    let id = rm_core::AlertId::new();
    let fired = server
        .store()
        .fire_alert(
            &NewAlert {
                id,
                kind: "check_failed".into(),
                host_id: host.parse().unwrap(),
                subject: String::new(),
                message: "the check found errors".into(),
                job_id: None,
                started_at: Utc::now(),
            },
            None,
        )
        .await
        .unwrap();
    assert!(fired);
    id.to_string()
}

async fn schedule_on(admin: &Api, host: &str) -> String {
    let (status, body) = admin
        .post(
            &format!("/api/v1/hosts/{host}/schedules"),
            json!({"kind": "check", "cron": "@daily", "params": {}}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A user of `role` (and `scope`), acting through an API token.
async fn user(
    server: &TestServer,
    admin: &Api,
    name: &str,
    role: &str,
    scope: Option<Value>,
) -> Api {
    admin
        .create_user(name, PASSWORD, role, scope)
        .await
        .unwrap();
    let session = server.anonymous().login(name, PASSWORD).await.unwrap();
    session
        .api_token(&format!("{name}-token"), None)
        .await
        .unwrap()
}

async fn world() -> World {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let a = server
        .enrolled_host_labelled("web-a", &[("team", "a")])
        .await
        .unwrap()
        .0;
    let b = server
        .enrolled_host_labelled("web-b", &[("team", "b")])
        .await
        .unwrap()
        .0;
    let jobs = (job_on(&server, &a).await, job_on(&server, &b).await);
    let alerts = (alert_on(&server, &a).await, alert_on(&server, &b).await);
    let schedules = (schedule_on(&admin, &a).await, schedule_on(&admin, &b).await);
    let policy = admin
        .create_policy(json!({"name": "everything"}))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spare_user = admin
        .create_user("spare", PASSWORD, "viewer", None)
        .await
        .unwrap();
    let operator = user(&server, &admin, "olga", "operator", None).await;
    let viewer = user(&server, &admin, "victor", "viewer", None).await;
    let scoped = user(
        &server,
        &admin,
        "sam",
        "operator",
        Some(json!({"team": "a"})),
    )
    .await;
    // A token, like the others: the matrix's logout would end a session.
    let admin = admin.api_token("admin-token", None).await.unwrap();
    World {
        server,
        admin,
        operator,
        viewer,
        scoped,
        hosts: (a, b),
        jobs,
        schedules,
        alerts,
        policy,
        spare_user,
    }
}

impl World {
    /// `rule`'s path with real ids: those of team a, or team b when
    /// `outside`.
    fn path(&self, rule: &Rule, outside: bool) -> String {
        let pick = |pair: &(String, String)| {
            if outside {
                pair.1.clone()
            } else {
                pair.0.clone()
            }
        };
        let id = match rule.reach {
            Reach::Host => pick(&self.hosts),
            Reach::Job => pick(&self.jobs),
            Reach::Schedule => pick(&self.schedules),
            Reach::Alert => pick(&self.alerts),
            Reach::Global | Reach::Filtered | Reach::Fleet => {
                if rule.path.starts_with("/policies/") {
                    self.policy.clone()
                } else if rule.path.starts_with("/users/") {
                    self.spare_user.clone()
                } else if rule.path.starts_with("/silences/") {
                    rm_core::SilenceId::new().to_string()
                } else if rule.path.starts_with("/notification-channels/") {
                    rm_core::ChannelId::new().to_string()
                } else {
                    rm_core::TokenId::new().to_string()
                }
            }
        };
        let path = rule
            .path
            .replace("{id}", &id)
            .replace("{snapshot_id}", &"ab".repeat(32));
        format!("/api/v1{path}")
    }
}

/// Calls `path` as `api` (a bearer token, or none) and returns the status
/// and the error message. Event streams answer with their headers and are
/// not read further; every body sent has an unknown field, so whatever a
/// handler validates is refused (400) before it changes anything.
async fn call(
    server: &TestServer,
    api: Option<&Api>,
    method: &Method,
    path: &str,
) -> (StatusCode, String) {
    let client = rm_testkit::http::client();
    let mut request = client.request(method.clone(), format!("{}{}", server.url, path));
    if let Some(token) = api.and_then(Api::token) {
        request = request.bearer_auth(token);
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        request = request.json(&json!({"role_matrix_probe": true}));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if stream {
        return (status, String::new());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, message)
}

/// What a route's path says it reaches: one host's things are scoped by
/// that host, whatever the table says (so a rule cannot skip the check).
fn reach_of_path(path: &str) -> Option<Reach> {
    [
        ("/hosts/{id}", Reach::Host),
        ("/jobs/{id}", Reach::Job),
        ("/schedules/{id}", Reach::Schedule),
        ("/alerts/{id}", Reach::Alert),
    ]
    .into_iter()
    .find(|(prefix, _)| path.starts_with(prefix))
    .map(|(_, reach)| reach)
}

#[test]
fn the_table_keeps_viewers_to_reading_and_scopes_every_per_host_route() {
    // A viewer may change only their own session, password and tokens.
    let own = [
        "/auth/logout",
        "/users/me/password",
        "/api-tokens",
        "/api-tokens/{id}",
    ];
    for rule in api_rules()
        .iter()
        .chain(rm_server::access::ui_rules().iter())
    {
        if let Some(reach) = reach_of_path(rule.path) {
            assert_eq!(rule.reach, reach, "{} {}", rule.method, rule.path);
        }
        let reads = rule.method == Method::GET;
        if rule.role == Some(Role::Viewer) && !reads {
            assert!(
                own.contains(&rule.path) || ["/logout", "/tokens"].contains(&rule.path),
                "{} {} lets a viewer change something",
                rule.method,
                rule.path
            );
        }
    }
}

/// Destructive rules last (deleting a host would take its ids from the
/// rules after it), and within them the host itself at the very end.
fn ordered(mut rules: Vec<Rule>) -> Vec<Rule> {
    rules.sort_by_key(|r| (r.method == Method::DELETE, r.path == "/hosts/{id}"));
    rules
}

#[tokio::test]
async fn every_route_of_the_access_table_answers_each_role_as_the_table_says() {
    let w = world().await;
    // Least first, so a refused caller runs before an allowed one deletes.
    let callers: [(&str, &Api, Role, bool); 4] = [
        ("viewer", &w.viewer, Role::Viewer, false),
        ("scoped operator", &w.scoped, Role::Operator, true),
        ("operator", &w.operator, Role::Operator, false),
        ("admin", &w.admin, Role::Admin, false),
    ];
    let rules = ordered(api_rules());
    assert!(rules.len() > 50, "the table lists every API route");
    let mut checked = 0;
    for rule in &rules {
        let Some(needed) = rule.role else {
            // Public: no login asked; a bad body is the handler's 400.
            let (status, body) = call(&w.server, None, &rule.method, &w.path(rule, false)).await;
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{} {}: anonymous got {status} {body}",
                rule.method,
                rule.path
            );
            // Without any credential the guarded routes are 401.
            continue;
        };
        // Nobody unauthenticated gets through.
        let (status, _) = call(&w.server, None, &rule.method, &w.path(rule, false)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{} {} anonymous",
            rule.method,
            rule.path
        );
        for (who, api, role, scoped) in &callers {
            let denied = *role < needed;
            let fleet = *scoped && rule.reach == Reach::Fleet;
            let per_host = matches!(
                rule.reach,
                Reach::Host | Reach::Job | Reach::Schedule | Reach::Alert
            );
            if *scoped && per_host && !denied {
                // Outside the scope: exactly a missing thing's 404.
                let (status, message) =
                    call(&w.server, Some(api), &rule.method, &w.path(rule, true)).await;
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{} {} as {who} outside the scope: {message}",
                    rule.method,
                    rule.path
                );
                assert!(message.ends_with("not found"), "{message}");
            }
            let (status, message) =
                call(&w.server, Some(api), &rule.method, &w.path(rule, false)).await;
            let context = format!("{} {} as {who}: {status} {message}", rule.method, rule.path);
            if denied || fleet {
                assert_eq!(status, StatusCode::FORBIDDEN, "{context}");
                if denied {
                    assert!(message.contains(&format!("`{needed}` role")), "{context}");
                }
            } else {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{context}"
                );
                // The rule names a real route and method of the router.
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{context}");
                assert_ne!(message, "no such API route", "{context}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4 * 50, "{checked} calls");
    w.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_method_without_a_rule_is_405_and_unknown_paths_stay_404() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    // A method the table has no rule for on a known route: 405 naming the
    // methods it has, before any handler.
    let (status, body) = admin
        .send(Method::PATCH, "/api/v1/policies", Some(json!({})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(body.to_string().contains("allowed: GET, POST"), "{body}");
    let (status, body) = admin.get("/api/v1/no-such-thing").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_are_never_wider_than_their_user_and_a_demotion_counts_at_once() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host, _) = server.enrolled_host("web").await.unwrap();
    let olga_id = admin
        .create_user("olga", PASSWORD, "operator", None)
        .await
        .unwrap();
    let olga = server.anonymous().login("olga", PASSWORD).await.unwrap();

    // Wider than hers: 400 naming `role`; an unknown role too.
    for role in ["admin", "root"] {
        let (status, body) = olga
            .post("/api/v1/api-tokens", json!({"name": "x", "role": role}))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`role`"),
            "{body}"
        );
    }
    let full = olga.api_token("full", None).await.unwrap();
    let read_only = olga.api_token("read", Some("viewer")).await.unwrap();
    let (_, tokens) = olga.get("/api/v1/api-tokens").await.unwrap();
    let roles: Vec<&Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["role"])
        .collect();
    assert_eq!(roles, [&Value::Null, &json!("viewer")]);

    // The narrower token reads but cannot act.
    let start = format!("/api/v1/hosts/{host}/schedules");
    let schedule = json!({"kind": "check", "cron": "@daily", "params": {}});
    let (status, _) = read_only.get(&start).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, body) = read_only.post(&start, schedule.clone()).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`operator` role"),
        "{body}"
    );
    let (_, me) = read_only.get("/api/v1/auth/me").await.unwrap();
    assert_eq!(me["role"], "viewer", "{me}");
    assert_eq!(me["user_role"], "operator", "{me}");
    assert_eq!(me["api_token"], true);
    let (status, body) = full.post(&start, schedule.clone()).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Demoted: her session and her full token are viewers from the next
    // request on, and her open stream ends (a reconnect is checked anew).
    let stream = rm_testkit::http::client()
        .get(format!("{}/api/v1/events", server.url))
        .bearer_auth(full.token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let reader = tokio::spawn(async move { stream.bytes().await });
    let (status, body) = admin
        .patch(
            &format!("/api/v1/users/{olga_id}"),
            json!({"role": "viewer"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "viewer");
    for api in [&full, &olga] {
        let (status, body) = api.post(&start, schedule.clone()).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("the demoted user's stream ended")
        .unwrap()
        .ok();
    let (_, me) = olga.get("/api/v1/auth/me").await.unwrap();
    assert_eq!(me["role"], "viewer", "{me}");

    // The audit log has the change with old and new.
    let (_, entries) = admin
        .get("/api/v1/audit?action=user.role_change")
        .await
        .unwrap();
    let entry = entries["entries"]
        .as_array()
        .or(entries.as_array())
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.role_change")
        .cloned()
        .unwrap_or_else(|| panic!("no user.role_change entry: {entries}"));
    assert_eq!(entry["details"]["old"]["role"], "operator", "{entry}");
    assert_eq!(entry["details"]["new"]["role"], "viewer", "{entry}");
    assert_eq!(entry["target_id"], olga_id.as_str(), "{entry}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn roles_and_scopes_are_checked_and_the_last_admin_stays() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (_, me) = admin.get("/api/v1/auth/me").await.unwrap();
    let admin_id = me["id"].as_str().unwrap().to_owned();
    assert_eq!(me["role"], "admin");

    for (body, field) in [
        (json!({"username": "x", "password": PASSWORD}), "`role`"),
        (
            json!({"username": "x", "password": PASSWORD, "role": "boss"}),
            "`role`",
        ),
        (
            json!({"username": "x", "password": PASSWORD, "role": "admin", "scope": {"team": "a"}}),
            "`scope`",
        ),
        (
            json!({"username": "x", "password": PASSWORD, "role": "viewer", "scope": {}}),
            "`scope`",
        ),
        (
            json!({"username": "x", "password": PASSWORD, "role": "viewer", "scope": {"Team!": "a"}}),
            "scope",
        ),
    ] {
        let (status, reply) = admin.post("/api/v1/users", body.clone()).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(
        server.store().count_users().await.unwrap(),
        1,
        "nothing was made"
    );

    // The only admin cannot be demoted or deleted.
    let (status, body) = admin
        .patch(
            &format!("/api/v1/users/{admin_id}"),
            json!({"role": "operator"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("last admin"));
    // With a second admin, the first may step down.
    let second = admin
        .create_user("root2", PASSWORD, "admin", None)
        .await
        .unwrap();
    let (status, body) = admin
        .patch(
            &format!("/api/v1/users/{admin_id}"),
            json!({"role": "viewer", "scope": {"team": "a"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], json!({"team": "a"}));
    let root2 = server.anonymous().login("root2", PASSWORD).await.unwrap();
    let (status, body) = root2
        .delete(&format!("/api/v1/users/{second}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "yourself: {body}");
    let (status, body) = root2
        .patch(
            &format!("/api/v1/users/{second}"),
            json!({"role": "viewer"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Made admin again, the scope goes with it.
    let (status, body) = root2
        .patch(
            &format!("/api/v1/users/{admin_id}"),
            json!({"role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], Value::Null, "{body}");
    let (_, users) = root2.get("/api/v1/users").await.unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["role"] == "admin"),
        "{users}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_scoped_user_sees_and_acts_on_their_hosts_only() {
    let w = world().await;
    let (a, b) = w.hosts.clone();
    let ids = |body: &Value, key: &str| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|v| v[key].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, hosts) = w.scoped.get("/api/v1/hosts").await.unwrap();
    assert_eq!(ids(&hosts, "id"), [a.as_str()]);
    let (_, hosts) = w.operator.get("/api/v1/hosts").await.unwrap();
    assert_eq!(ids(&hosts, "id").len(), 2);
    let (_, jobs) = w.scoped.get("/api/v1/jobs").await.unwrap();
    assert_eq!(ids(&jobs, "id"), [w.jobs.0.as_str()]);
    let (_, jobs) = w
        .scoped
        .get(&format!("/api/v1/jobs?host_id={b}"))
        .await
        .unwrap();
    assert_eq!(jobs, json!([]));
    let (_, alerts) = w.scoped.get("/api/v1/alerts").await.unwrap();
    assert_eq!(ids(&alerts, "id"), [w.alerts.0.as_str()]);
    let (_, alerts) = w.scoped.get("/api/v1/alerts?labels=team=b").await.unwrap();
    assert_eq!(alerts, json!([]));
    let (_, hosts) = w
        .scoped
        .get(&format!("/api/v1/policies/{}/hosts", w.policy))
        .await
        .unwrap();
    assert_eq!(ids(&hosts, "host_id"), [a.as_str()]);

    // A bulk job over every host reaches theirs only (none is online, so
    // both are skipped — but only theirs is named).
    let (status, created) = w
        .scoped
        .post("/api/v1/jobs", json!({"selector": {}, "kind": "check"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains(&b), "{created}");
    assert!(created.to_string().contains(&a), "{created}");

    // So are agent upgrades: by selector only their host is named (neither
    // agent ever connected, so both are skipped); another team's host by
    // id is the 404 of a missing one.
    let (status, upgraded) = w
        .scoped
        .post("/api/v1/agents/upgrade", json!({"selector": {}}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{upgraded}");
    assert!(!upgraded.to_string().contains(&b), "{upgraded}");
    assert!(upgraded.to_string().contains(&a), "{upgraded}");
    let (status, body) = w
        .scoped
        .post("/api/v1/agents/upgrade", json!({"host_id": b}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["message"], format!("host `{b}` not found"));
    let (status, body) = w
        .scoped
        .post("/api/v1/agents/upgrade", json!({"host_id": a}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    // Relabelling their host out of their scope is refused.
    let (status, body) = w
        .scoped
        .patch(
            &format!("/api/v1/hosts/{a}"),
            json!({"labels": {"team": "b"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`labels`"));

    // Pages: the dashboard and the restore wizard list their host only;
    // another team's host page is a 404.
    let session = w.server.anonymous().login("sam", PASSWORD).await.unwrap();
    let (status, dashboard) = session.page("/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        dashboard.contains(&format!("data-host=\"{a}\"")),
        "{dashboard}"
    );
    assert!(!dashboard.contains(&b) && !dashboard.contains("web-b"));
    let (_, wizard) = session.page("/restore").await.unwrap();
    assert!(
        wizard.contains("web-a") && !wizard.contains("web-b"),
        "{wizard}"
    );
    let (_, wizard) = session.page(&format!("/restore?host={b}")).await.unwrap();
    assert!(!wizard.contains("web-b"), "{wizard}");
    let (status, _) = session.page(&format!("/hosts/{b}")).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = session.page(&format!("/jobs/{}", w.jobs.1)).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    w.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_viewers_pages_offer_no_actions_and_their_forms_are_refused() {
    let w = world().await;
    let a = &w.hosts.0;
    let session = w
        .server
        .anonymous()
        .login("victor", PASSWORD)
        .await
        .unwrap();
    let (status, page) = session.page(&format!("/hosts/{a}")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    for action in [
        "id=\"host-actions\"",
        "id=\"backup-now\"",
        "id=\"settings-save\"",
        "id=\"schedule-add\"",
        "/jobs\"",
    ] {
        assert!(!page.contains(action), "{action} on a viewer's host page");
    }
    let (_, alerts) = session.page("/alerts").await.unwrap();
    assert!(alerts.contains("web-a"), "{alerts}");
    assert!(!alerts.contains("alert-ack") && !alerts.contains("silence-form"));
    let (_, policies) = session.page("/policies").await.unwrap();
    assert!(!policies.contains("policy-new"));
    let (_, policy) = session
        .page(&format!("/policies/{}", w.policy))
        .await
        .unwrap();
    assert!(policy.contains("everything") && !policy.contains("policy-submit"));
    // A scoped operator acknowledges their alerts but adds no silences.
    let sam = w.server.anonymous().login("sam", PASSWORD).await.unwrap();
    let (_, alerts) = sam.page("/alerts").await.unwrap();
    assert!(alerts.contains("alert-ack") && !alerts.contains("silence-form"));
    assert!(!alerts.contains("web-b"), "{alerts}");
    let (_, dashboard) = session.page("/").await.unwrap();
    assert!(!dashboard.contains("id=\"bulk\""));
    assert!(!dashboard.contains("href=\"/restore\""));
    for (path, status) in [
        ("/restore", 403),
        ("/audit", 403),
        ("/channels", 403),
        ("/enroll", 403),
        ("/users", 200),
    ] {
        assert_eq!(
            session.page(path).await.unwrap().0.as_u16(),
            status,
            "{path}"
        );
    }
    // The UI's own form routes go through the same table.
    let response = rm_testkit::http::client()
        .post(format!("{}/hosts/{a}/backup", w.server.url))
        .header("cookie", format!("rm_session={}", session.token().unwrap()))
        .form(&[("paths", "/etc")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("`operator` role"));
    w.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_restore_from_another_teams_host_is_refused_like_a_missing_host() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (a, agent_token) = server
        .enrolled_host_labelled("web-a", &[("team", "a")])
        .await
        .unwrap();
    let (b, _) = server
        .enrolled_host_labelled("web-b", &[("team", "b")])
        .await
        .unwrap();
    let agent = rm_testkit::RawAgent::connect_and_hello(&server.ws_url(), &agent_token)
        .await
        .unwrap();
    let sam = user(
        &server,
        &admin,
        "sam",
        "operator",
        Some(json!({"team": "a"})),
    )
    .await;
    let restore_from = |source: &str| {
        json!({"kind": "restore", "params": {
            "snapshot_id": "ab".repeat(32),
            "target": "/tmp/restored",
            "source_host_id": source,
        }})
    };
    let missing = rm_core::HostId::new().to_string();
    let (status, gone) = sam
        .post(&format!("/api/v1/hosts/{a}/jobs"), restore_from(&missing))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{gone}");
    let (status, hidden) = sam
        .post(&format!("/api/v1/hosts/{a}/jobs"), restore_from(&b))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{hidden}");
    assert_eq!(
        hidden["error"]["message"].as_str().unwrap(),
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&missing, &b),
        "the same words as for a missing host"
    );
    // Unscoped, the same request gets past that check (b has no repository).
    let (_, body) = admin
        .post(&format!("/api/v1/hosts/{a}/jobs"), restore_from(&b))
        .await
        .unwrap();
    assert!(
        !body.to_string().contains("not found"),
        "an unscoped operator sees host b: {body}"
    );
    agent.close().await.unwrap();
    server.stop().await.unwrap();
}
