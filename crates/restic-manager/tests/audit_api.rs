//! The audit log over HTTP: real operator actions through the real server
//! appear in `GET /api/v1/audit` with who did them, what, to what and from
//! where; no secret ever reaches an entry; failed logins are recorded;
//! filters and paging work and bad queries are refused by name; and the
//! `/audit` page shows the same entries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::header::{COOKIE, SET_COOKIE, USER_AGENT};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use rm_testkit::{Api, RawAgent, TestServer, ADMIN_PASSWORD};
use serde_json::{json, Value};

const ALICE_PASSWORD: &str = "alice-password-1";
const REPO_PASSWORD: &str = "repo-secret-7f3a";
const URL_PASSWORD: &str = "url-secret-9c2e";
const ENV_SECRET: &str = "env-secret-5d1b";

/// Every audit entry, newest first (one page of up to 500).
async fn audit(api: &Api) -> Vec<Value> {
    let (status, body) = api.get("/api/v1/audit?limit=500").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().unwrap().clone()
}

/// The one entry with `action` and `target_id`.
fn entry<'a>(entries: &'a [Value], action: &str, target_id: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == action && e["target_id"] == target_id)
        .collect();
    assert_eq!(found.len(), 1, "{action} {target_id} in {entries:#?}");
    found[0]
}

/// Checks who did it (`kind` and user name) and that it came from here.
fn assert_by(e: &Value, kind: &str, username: Option<&str>) {
    assert_eq!(e["actor"]["kind"], kind, "{e}");
    assert_eq!(e["actor"]["username"].as_str(), username, "{e}");
    assert_eq!(e["ip"], "127.0.0.1", "{e}");
}

async fn put(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    api.send(Method::PUT, path, Some(body)).await.unwrap()
}

#[tokio::test]
async fn operator_actions_are_audited_without_secrets() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let admin_id = admin.get("/api/v1/users").await.unwrap().1[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A failed login, with a browser-like User-Agent (kept, truncated).
    let long_agent = format!("Mozilla/5.0 {}", "x".repeat(400));
    let response = rm_testkit::http::client()
        .post(format!("{}/api/v1/auth/login", server.url))
        .header(USER_AGENT, &long_agent)
        .json(&json!({"username": "admin", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Enrolment: the token is made by admin and spent by the host.
    let enrolment = admin
        .create_enrollment_token(Some("web-01"), None)
        .await
        .unwrap();
    let enrolled = server
        .anonymous()
        .enroll(&enrolment.token, None, "web-01.test")
        .await
        .unwrap();
    let host_id = enrolled.host_id.clone();

    // Repository settings full of secrets.
    let url = format!("rest:https://backup:{URL_PASSWORD}@repo.example:8000/web-01");
    let (status, body) = put(
        &admin,
        &format!("/api/v1/hosts/{host_id}/repository"),
        json!({"url": url, "password": REPO_PASSWORD, "env": {"AWS_SECRET_ACCESS_KEY": ENV_SECRET}}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // A job started and cancelled (it waits behind the automatic init).
    let agent = RawAgent::connect_and_hello(&server.ws_url(), &enrolled.agent_token)
        .await
        .unwrap();
    let job_id = admin
        .start_job(&host_id, "backup", json!({"paths": ["/srv"]}))
        .await
        .unwrap();
    let (status, body) = admin
        .post(&format!("/api/v1/jobs/{job_id}/cancel"), json!({}))
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");

    // A schedule made, changed and deleted.
    let (status, schedule) = admin
        .post(
            &format!("/api/v1/hosts/{host_id}/schedules"),
            json!({"kind": "backup", "cron": "0 2 * * *", "params": {"paths": ["/srv"]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();
    let (status, body) = put(
        &admin,
        &format!("/api/v1/schedules/{schedule_id}"),
        json!({"kind": "backup", "cron": "30 3 * * *", "params": {"paths": ["/srv"]}, "enabled": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = admin
        .delete(&format!("/api/v1/schedules/{schedule_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A second operator, acting through an API token.
    let (status, body) = admin
        .post(
            "/api/v1/users",
            json!({"username": "alice", "password": ALICE_PASSWORD, "role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let alice_id = body["id"].as_str().unwrap().to_owned();
    let alice = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let (status, token) = alice
        .post("/api/v1/api-tokens", json!({"name": "ci"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let token_id = token["id"].as_str().unwrap().to_owned();
    let token_secret = token["token"].as_str().unwrap().to_owned();
    let via_token = server.anonymous().with_token(&token_secret);
    let by_token = via_token
        .create_enrollment_token(Some("db-01"), None)
        .await
        .unwrap();
    let (status, _) = alice
        .delete(&format!("/api/v1/api-tokens/{token_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = put(
        &alice,
        "/api/v1/users/me/password",
        json!({"current_password": ALICE_PASSWORD, "new_password": "alice-password-2"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = admin
        .delete(&format!("/api/v1/users/{alice_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The host goes; the admin's session ends.
    let (status, _) = admin
        .delete(&format!("/api/v1/hosts/{host_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.post("/api/v1/auth/logout", json!({})).await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop(agent);

    let reader = server.admin().await.unwrap();
    let entries = audit(&reader).await;

    let failed: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "auth.login_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{entries:#?}");
    assert_by(failed[0], "anonymous", None);
    assert_eq!(failed[0]["details"]["username"], "admin");
    assert_eq!(failed[0]["details"]["reason"], "invalid");
    let agent_seen = failed[0]["user_agent"].as_str().unwrap();
    assert!(agent_seen.starts_with("Mozilla/5.0 xxx"), "{agent_seen}");
    assert_eq!(agent_seen.chars().count(), 200);

    let logins = entries
        .iter()
        .filter(|e| e["action"] == "auth.login" && e["target_id"] == admin_id.as_str())
        .count();
    assert_eq!(logins, 2, "the first admin login and the reader's");

    let e = entry(&entries, "enrollment_token.create", &enrolment.id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["target_type"], "enrollment_token");
    assert_eq!(e["details"]["name"], "web-01");

    let e = entry(&entries, "host.enroll", &host_id);
    assert_eq!(e["actor"]["kind"], "enrollment_token");
    assert_eq!(e["actor"]["token_id"].as_str(), Some(enrolment.id.as_str()));
    assert_eq!(e["actor"]["token_name"], "web-01");
    assert_eq!(e["details"]["hostname"], "web-01.test");
    assert_eq!(e["ip"], "127.0.0.1");

    let e = entry(&entries, "repository.set", &host_id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["target_type"], "host");
    assert_eq!(
        e["details"]["url"],
        "rest:https://backup:***@repo.example:8000/web-01"
    );
    assert_eq!(e["details"]["env_keys"], json!(["AWS_SECRET_ACCESS_KEY"]));

    let e = entry(&entries, "job.create", &job_id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["details"]["kind"], "backup");
    assert_eq!(e["details"]["host_id"], host_id.as_str());
    let e = entry(&entries, "job.cancel", &job_id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["details"]["status"], "cancelled");

    for action in ["schedule.create", "schedule.update", "schedule.delete"] {
        let e = entry(&entries, action, &schedule_id);
        assert_by(e, "user", Some("admin"));
        assert_eq!(e["details"]["host_id"], host_id.as_str(), "{action}");
    }
    assert_eq!(
        entry(&entries, "schedule.update", &schedule_id)["details"]["cron"],
        "30 3 * * *"
    );

    let e = entry(&entries, "user.create", &alice_id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["details"]["username"], "alice");
    assert_by(
        entry(&entries, "auth.login", &alice_id),
        "user",
        Some("alice"),
    );
    let e = entry(&entries, "api_token.create", &token_id);
    assert_by(e, "user", Some("alice"));
    assert_eq!(e["details"]["name"], "ci");

    // Acting through the token names the token and its owner.
    let e = entry(&entries, "enrollment_token.create", &by_token.id);
    assert_by(e, "api_token", Some("alice"));
    assert_eq!(e["actor"]["token_id"].as_str(), Some(token_id.as_str()));
    assert_eq!(e["actor"]["token_name"], "ci");

    assert_by(
        entry(&entries, "api_token.revoke", &token_id),
        "user",
        Some("alice"),
    );
    assert_by(
        entry(&entries, "user.password_change", &alice_id),
        "user",
        Some("alice"),
    );
    // Deleted users stay named in the log.
    let e = entry(&entries, "user.delete", &alice_id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["details"]["username"], "alice");

    let e = entry(&entries, "host.delete", &host_id);
    assert_by(e, "user", Some("admin"));
    assert_eq!(e["details"]["name"], "web-01");
    assert_by(
        entry(&entries, "auth.logout", &admin_id),
        "user",
        Some("admin"),
    );

    // Newest first, ids growing with time.
    let ids: Vec<u64> = entries.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    // No secret anywhere in the log.
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [
        REPO_PASSWORD,
        URL_PASSWORD,
        ENV_SECRET,
        ALICE_PASSWORD,
        "alice-password-2",
        "not-the-password",
        ADMIN_PASSWORD,
        enrolment.token.as_str(),
        by_token.token.as_str(),
        token_secret.as_str(),
        enrolled.agent_token.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret leaked into the audit log");
    }
}

#[tokio::test]
async fn the_log_filters_and_pages_and_refuses_bad_queries() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let mut token_ids = Vec::new();
    for i in 0..7 {
        let created = admin
            .create_enrollment_token(Some(&format!("host-{i}")), None)
            .await
            .unwrap();
        token_ids.push(created.id);
    }
    for _ in 0..2 {
        let (status, _) = server
            .anonymous()
            .post(
                "/api/v1/auth/login",
                json!({"username": "mallory", "password": "guess-guess"}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let actions = |entries: &Value| -> Vec<String> {
        entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };

    // Action prefix.
    let (_, page) = admin
        .get("/api/v1/audit?action=enrollment_token.")
        .await
        .unwrap();
    assert_eq!(actions(&page), vec!["enrollment_token.create"; 7]);
    let (_, page) = admin.get("/api/v1/audit?action=auth.login").await.unwrap();
    assert_eq!(
        actions(&page),
        ["auth.login_failed", "auth.login_failed", "auth.login"]
    );
    // Actor (by name) and target.
    let (_, page) = admin.get("/api/v1/audit?actor=admin").await.unwrap();
    assert_eq!(actions(&page).len(), 8, "{page}");
    let (_, page) = admin
        .get(&format!("/api/v1/audit?target_id={}", token_ids[3]))
        .await
        .unwrap();
    assert_eq!(page["entries"][0]["details"]["name"], "host-3");
    assert_eq!(actions(&page).len(), 1);

    // Pages of 3 walk all 10 entries once, newest first.
    let (_, all) = admin.get("/api/v1/audit").await.unwrap();
    assert_eq!(all["next_before"], Value::Null);
    let all_ids: Vec<u64> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(all_ids.len(), 10);
    let mut walked = Vec::new();
    let mut path = String::from("/api/v1/audit?limit=3");
    loop {
        let (status, page) = admin.get(&path).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        walked.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap()),
        );
        match page["next_before"].as_u64() {
            Some(before) => path = format!("/api/v1/audit?limit=3&before={before}"),
            None => break,
        }
    }
    assert_eq!(walked, all_ids);

    // Bad queries are refused, naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("before=yesterday", "before"),
        ("action=Host.Delete", "action"),
        ("action=host%25", "action"),
    ] {
        let (status, body) = admin.get(&format!("/api/v1/audit?{query}")).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")),
            "{query}: {message}"
        );
    }

    // Only operators read it.
    let (status, _) = server.anonymous().get("/api/v1/audit").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .anonymous()
        .with_token("rmt.01ARZ3NDEKTSV4RRFFQ69G5FAV.nope")
        .get("/api/v1/audit")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn web_logins_and_logouts_are_audited_and_the_page_lists_them() {
    let server = TestServer::start().await.unwrap();
    let client = rm_testkit::http::client_builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let login = |password: &'static str| {
        client
            .post(format!("{}/login", server.url))
            .header(USER_AGENT, "audit-test-browser/1.0")
            .form(&[("username", "admin"), ("password", password)])
            .send()
    };
    // A wrong password re-shows the form (200) and is recorded.
    assert_eq!(
        login("wrong-password").await.unwrap().status(),
        StatusCode::OK
    );
    let response = login(ADMIN_PASSWORD).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let page = client
        .get(format!("{}/audit?action=auth.", server.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("href=\"/audit\">Audit log</a>"), "nav link");
    for expected in [
        "auth.login_failed",
        "data-action=\"auth.login\"",
        "127.0.0.1",
        "audit-test-browser/1.0",
        "<option value=\"auth.\" selected>",
    ] {
        assert!(html.contains(expected), "{expected} missing in:\n{html}");
    }
    // Filtering by another action hides them; bad filters are named.
    let html = client
        .get(format!("{}/audit?action=host.", server.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"audit-empty\""), "{html}");
    let bad = client
        .get(format!("{}/audit?limit=9999", server.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("`limit`"));

    // Logging out through the form is recorded too.
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let response = client
        .post(format!("{}/logout", server.url))
        .header(USER_AGENT, "audit-test-browser/1.0")
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let entries = audit(&server.admin().await.unwrap()).await;
    let logout = entries
        .iter()
        .find(|e| e["action"] == "auth.logout")
        .expect("the logout is recorded");
    assert_by(logout, "user", Some("admin"));
    assert_eq!(logout["user_agent"], "audit-test-browser/1.0");
}
