//! The operator API: logging in, bearer tokens, enrolment tokens and the
//! enrolment exchange, and the host listing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration as ChronoDuration, Utc};
use rm_core::token::{IssuedToken, TokenKind};
use rm_protocol::api::HostView;
use rm_store::EnrollmentToken;
use rm_testkit::{Api, TestServer, ADMIN_PASSWORD};
use serde_json::json;

#[tokio::test]
async fn health_needs_no_login() {
    let server = TestServer::start().await.unwrap();
    let (status, body) = server.anonymous().get("/healthz").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, json!("ok"));
}

#[tokio::test]
async fn login_gives_a_bearer_token_and_wrong_passwords_do_not() {
    let server = TestServer::start().await.unwrap();
    let anon = server.anonymous();

    let (status, body) = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body["token"].as_str().unwrap().starts_with("rms."));
    assert!(body["expires_at"].as_str().is_some());

    for (username, password) in [("admin", "wrong"), ("nobody", ADMIN_PASSWORD)] {
        let (status, body) = anon
            .post(
                "/api/v1/auth/login",
                json!({"username": username, "password": password}),
            )
            .await
            .unwrap();
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(body["error"]["message"], "invalid user name or password");
    }

    // A missing field is named.
    let (status, body) = anon
        .post("/api/v1/auth/login", json!({"username": "admin"}))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{body}"
    );
}

#[tokio::test]
async fn the_api_refuses_requests_without_a_valid_bearer_token() {
    let server = TestServer::start().await.unwrap();
    let anon = server.anonymous();
    for api in [
        anon.clone(),
        anon.with_token("garbage"),
        anon.with_token(IssuedToken::generate(TokenKind::Session).unwrap().token),
        anon.with_token(IssuedToken::generate(TokenKind::Api).unwrap().token),
    ] {
        let (status, body) = api.get("/api/v1/hosts").await.unwrap();
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn logout_ends_the_session() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    assert_eq!(admin.get("/api/v1/hosts").await.unwrap().0, 200);
    assert_eq!(
        admin
            .post("/api/v1/auth/logout", json!({}))
            .await
            .unwrap()
            .0,
        204
    );
    assert_eq!(admin.get("/api/v1/hosts").await.unwrap().0, 401);
}

#[tokio::test]
async fn an_enrolment_token_enrols_exactly_one_host() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_enrollment_token(Some("web 01"), Some(600))
        .await
        .unwrap();
    assert!(created.token.starts_with("rme."));
    assert_eq!(
        created.command,
        format!(
            "curl -fsSL {}/install.sh | sudo sh -s -- --token {} --name 'web 01'",
            server.url, created.token
        )
    );
    assert_eq!(
        created.enroll_command,
        format!(
            "restic-manager agent enroll --server {} --token {} --name 'web 01'",
            server.url, created.token
        )
    );
    let ttl = created.expires_at - Utc::now();
    assert!(ttl > ChronoDuration::seconds(590) && ttl <= ChronoDuration::seconds(600));

    // Listed as pending, without the secret.
    let (_, pending) = admin.get("/api/v1/enrollment-tokens").await.unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["id"], created.id.as_str());
    assert!(pending[0].get("token").is_none());

    let anon = server.anonymous();
    let enrolled = anon
        .enroll(&created.token, None, "web01.example")
        .await
        .unwrap();
    assert!(enrolled.agent_token.starts_with("rma."));

    let host: HostView = admin.host(&enrolled.host_id).await.unwrap();
    assert_eq!(host.name, "web 01", "the token's name is used");
    assert_eq!(host.hostname, "web01.example");
    assert!(!host.online);
    assert_eq!(host.schedule_version, 0);

    // Single use.
    let (status, body) = anon
        .post(
            "/api/v1/agents/enroll",
            json!({"token": created.token, "hostname": "again"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "enrolment token is unknown, expired or already used"
    );
    let (_, pending) = admin.get("/api/v1/enrollment-tokens").await.unwrap();
    assert!(pending.as_array().unwrap().is_empty());
    assert_eq!(admin.hosts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_enrolling_host_may_add_labels_but_not_change_the_tokens() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_token_with_labels(&[("env", "prod")])
        .await
        .unwrap();
    let anon = server.anonymous();
    for (labels, says) in [
        (
            json!({"env": "dev"}),
            "`labels.env` is `prod` by the enrolment token",
        ),
        (json!({"Bad Key": "x"}), "labels"),
    ] {
        let (status, body) = anon
            .post(
                "/api/v1/agents/enroll",
                json!({"token": created.token, "hostname": "h", "labels": labels}),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    // Refusals spent nothing: the token still enrols, with both labels.
    let (status, body) = anon
        .post(
            "/api/v1/agents/enroll",
            json!({"token": created.token, "hostname": "h", "labels": {"env": "prod", "role": "db"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let host = admin.host(body["host_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(
        serde_json::to_value(&host.labels).unwrap(),
        json!({"env": "prod", "role": "db"})
    );
}

#[tokio::test]
async fn expired_and_forged_enrolment_tokens_are_refused_alike() {
    let server = TestServer::start().await.unwrap();
    let issued = IssuedToken::generate(TokenKind::Enrollment).unwrap();
    let now = Utc::now();
    server
        .store()
        .create_enrollment_token(
            &EnrollmentToken {
                id: issued.id,
                name: None,
                token_hash: issued.hash,
                created_at: now - ChronoDuration::hours(2),
                expires_at: now - ChronoDuration::hours(1),
                used_at: None,
                host_id: None,
                labels: Default::default(),
            },
            None,
        )
        .await
        .unwrap();
    let anon = server.anonymous();
    let forged = format!("{}A", &issued.token[..issued.token.len() - 1]);
    for token in [issued.token.as_str(), forged.as_str(), "rme.nonsense", ""] {
        let (status, body) = anon
            .post(
                "/api/v1/agents/enroll",
                json!({"token": token, "hostname": "h"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 401, "token {token:?}");
        assert_eq!(
            body["error"]["message"],
            "enrolment token is unknown, expired or already used"
        );
    }
    assert!(server.store().list_hosts().await.unwrap().is_empty());
}

#[tokio::test]
async fn enrolment_input_is_validated_and_changes_nothing() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();

    for (body, field) in [
        (json!({"ttl_seconds": 0}), "ttl_seconds"),
        (json!({"ttl_seconds": 99_999_999}), "ttl_seconds"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(200)}), "name"),
        (json!({"name": "bad\u{7}name"}), "name"),
        (json!({"ttl_seconds": "soon"}), "ttl_seconds"),
    ] {
        let (status, reply) = admin
            .post("/api/v1/enrollment-tokens", body.clone())
            .await
            .unwrap();
        assert_eq!(status, 400, "{body}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body} → {message}");
    }
    let (_, pending) = admin.get("/api/v1/enrollment-tokens").await.unwrap();
    assert!(pending.as_array().unwrap().is_empty());

    let created = admin.create_enrollment_token(None, None).await.unwrap();
    let anon = server.anonymous();
    for (body, field) in [
        (json!({"token": created.token, "hostname": ""}), "hostname"),
        (json!({"token": created.token}), "hostname"),
        (
            json!({"token": created.token, "hostname": "h", "name": "\n"}),
            "name",
        ),
    ] {
        let (status, reply) = anon
            .post("/api/v1/agents/enroll", body.clone())
            .await
            .unwrap();
        assert_eq!(status, 400, "{body}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body} → {message}");
    }
    // The token survived the bad attempts.
    anon.enroll(&created.token, Some("named"), "h")
        .await
        .unwrap();
}

#[tokio::test]
async fn hosts_can_be_listed_shown_and_deleted() {
    let server = TestServer::start().await.unwrap();
    let (a, _) = server.enrolled_host("alpha").await.unwrap();
    let (b, _) = server.enrolled_host("beta").await.unwrap();
    let admin = server.admin().await.unwrap();

    let hosts = admin.hosts().await.unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
    assert_eq!(admin.host(&a).await.unwrap().id, a);

    let (status, body) = admin.get("/api/v1/hosts/not-an-id").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not-an-id"));
    let missing = rm_core::HostId::new();
    let (status, body) = admin
        .get(&format!("/api/v1/hosts/{missing}"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    assert_eq!(
        admin.delete(&format!("/api/v1/hosts/{a}")).await.unwrap().0,
        204
    );
    assert_eq!(
        admin.delete(&format!("/api/v1/hosts/{a}")).await.unwrap().0,
        404
    );
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].id, b);
}

#[tokio::test]
async fn the_host_list_is_paged_with_a_cursor() {
    let server = TestServer::start().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(server.enrolled_host(&format!("web-{n}")).await.unwrap().0);
    }
    ids.sort();
    let admin = server.admin().await.unwrap();

    // Everything fits the default page: no next cursor.
    let (status, next, body) = admin.hosts_page("/api/v1/hosts").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(next, None);
    assert_eq!(body.as_array().unwrap().len(), 5);

    // A page that is full but last has no next cursor either.
    let (_, next, body) = admin.hosts_page("/api/v1/hosts?limit=5").await.unwrap();
    assert_eq!((next, body.as_array().unwrap().len()), (None, 5));
    let (_, next, _) = admin.hosts_page("/api/v1/hosts?limit=4").await.unwrap();
    assert_eq!(next.as_deref(), Some(ids[3].as_str()));

    // Pages of two follow the cursor, in id order, and the Link header
    // names the next page's URL.
    let client = rm_testkit::http::client();
    let token = admin.token().unwrap();
    let mut seen = Vec::new();
    let mut path = String::from("/api/v1/hosts?limit=2");
    loop {
        let response = client
            .get(format!("{}{path}", server.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let page: Vec<HostView> = response.json().await.unwrap();
        seen.extend(page.iter().map(|h| h.id.clone()));
        let Some(cursor) = headers.get("x-next-cursor") else {
            assert!(headers.get("link").is_none());
            break;
        };
        let cursor = cursor.to_str().unwrap();
        assert_eq!(cursor, page.last().unwrap().id);
        let next = format!("/api/v1/hosts?limit=2&after={cursor}");
        assert_eq!(
            headers.get("link").unwrap().to_str().unwrap(),
            format!("<{next}>; rel=\"next\"")
        );
        path = next;
    }
    assert_eq!(seen, ids);
    assert_eq!(
        admin
            .hosts()
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        ids
    );

    // Bad values are refused, naming the parameter.
    for (query, param) in [
        ("limit=0", "`limit`"),
        ("limit=1001", "`limit`"),
        ("limit=ten", "`limit`"),
        ("limit=-1", "`limit`"),
        ("after=not-a-cursor", "`after`"),
        ("after=", "`after`"),
    ] {
        let (status, body) = admin.get(&format!("/api/v1/hosts?{query}")).await.unwrap();
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(param), "{query}: {message}");
    }
}

#[tokio::test]
async fn an_api_token_made_offline_works_as_a_bearer_token() {
    let server = TestServer::start().await.unwrap();
    let admin_user = server.store().user_by_name("admin").await.unwrap().unwrap();
    let issued = IssuedToken::generate(TokenKind::Api).unwrap();
    server
        .store()
        .create_api_token(
            &rm_store::ApiToken {
                id: issued.id,
                user_id: admin_user.id,
                name: String::from("ci"),
                token_hash: issued.hash,
                created_at: Utc::now(),
                expires_at: None,
                revoked_at: None,
                role: None,
            },
            None,
        )
        .await
        .unwrap();
    let api = Api::new(&server.url, Some(issued.token));
    assert_eq!(api.get("/api/v1/hosts").await.unwrap().0, 200);
    // Logout is for sessions only, and says so.
    let (status, body) = api.post("/api/v1/auth/logout", json!({})).await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API token"));
}

#[tokio::test]
async fn unknown_api_routes_answer_json_404() {
    let server = TestServer::start().await.unwrap();
    let (status, body) = server.anonymous().get("/api/v1/nope").await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn repeated_failed_logins_lock_out_that_user_from_that_address() {
    let server = TestServer::start().await.unwrap();
    let anon = server.anonymous();
    let attempt = |password: &'static str| {
        let anon = anon.clone();
        async move {
            anon.post(
                "/api/v1/auth/login",
                json!({"username": "admin", "password": password}),
            )
            .await
            .unwrap()
        }
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong").await.0, 401);
    }
    let (status, body) = attempt(ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "even the right password waits: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("too many failed logins for `admin`") && message.contains("minute"),
        "{message}"
    );
    // Another user from the same address is not locked out.
    let (status, _) = anon
        .post(
            "/api/v1/auth/login",
            json!({"username": "somebody", "password": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_and_changes_nothing() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (before_status, before) = admin.get("/api/v1/enrollment-tokens").await.unwrap();
    assert_eq!(before_status, 200);
    let padding = "x".repeat(1024 * 1024 + 1);
    for path in ["/api/v1/enrollment-tokens", "/api/v1/auth/login"] {
        let (status, body) = admin
            .post(path, json!({"name": padding, "username": "admin"}))
            .await
            .unwrap();
        assert_eq!(status, 413, "{path}");
        assert_eq!(body["error"]["code"], "payload_too_large", "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1048576 bytes"),
            "{body}"
        );
    }
    let (_, after) = admin.get("/api/v1/enrollment-tokens").await.unwrap();
    assert_eq!(after, before, "no token was created");
    // Just under the limit is read (and judged on its content).
    let (status, body) = admin
        .post(
            "/api/v1/enrollment-tokens",
            json!({"name": "x".repeat(1000 * 1000)}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("name"));
}

/// Every API route that takes query parameters (from the handlers'
/// `ApiQuery<…>` types: hosts, tree, jobs, job logs, job events, audit),
/// with a bad value for each parameter: 400 in the JSON error shape, and
/// the message names the parameter. Path parameters answer the same shape.
#[tokio::test]
async fn bad_query_and_path_parameters_get_the_json_error_naming_them() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (host, _) = server.enrolled_host("web1").await.unwrap();
    let job = "01J00000000000000000000000";
    let routes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            String::from("/api/v1/hosts"),
            vec![("limit", "ten"), ("limit", "0"), ("after", "not-a-cursor")],
        ),
        (
            format!("/api/v1/hosts/{host}/snapshots/0123abcd/tree"),
            vec![("path", "relative/path")],
        ),
        (
            String::from("/api/v1/jobs"),
            vec![
                ("host_id", "nope"),
                ("status", "sleeping"),
                ("before", "nope"),
                ("limit", "ten"),
                ("limit", "-1"),
            ],
        ),
        (
            format!("/api/v1/jobs/{job}/logs"),
            vec![("after_seq", "-1"), ("limit", "ten")],
        ),
        (
            format!("/api/v1/jobs/{job}/events"),
            vec![("after_seq", "x"), ("limit", "ten")],
        ),
        (
            String::from("/api/v1/audit"),
            vec![
                ("action", "Host.Delete"),
                ("actor", "%01"),
                ("target_id", "%01"),
                ("before", "x"),
                ("limit", "ten"),
            ],
        ),
    ];
    for (route, params) in &routes {
        for (name, value) in params {
            let url = format!("{route}?{name}={value}");
            let (status, body) = admin.get(&url).await.unwrap();
            assert_eq!(status, 400, "{url}: {body}");
            assert_eq!(body["error"]["code"], "bad_request", "{url}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("`{name}`")), "{url}: {message}");
        }
    }
    // A repeated parameter is named too.
    let (status, body) = admin.get("/api/v1/jobs?limit=1&limit=2").await.unwrap();
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`limit`"));
    // The message axum would have given is gone.
    let (_, body) = admin.get("/api/v1/jobs?limit=ten").await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "query parameter `limit`: invalid digit found in string"
    );
    // Path parameters: ids that are not ids.
    for url in [
        "/api/v1/hosts/not-a-ulid",
        "/api/v1/hosts/not-a-ulid/snapshots",
        "/api/v1/jobs/not-a-ulid",
        "/api/v1/jobs/not-a-ulid/logs",
        "/api/v1/jobs/not-a-ulid/events",
    ] {
        let (status, body) = admin.get(url).await.unwrap();
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{url}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not-a-ulid"),
            "{url}: {body}"
        );
    }
    for (method, url) in [
        (reqwest::Method::DELETE, "/api/v1/schedules/not-a-ulid"),
        (reqwest::Method::DELETE, "/api/v1/users/not-a-ulid"),
        (reqwest::Method::DELETE, "/api/v1/api-tokens/not-a-ulid"),
    ] {
        let (status, body) = admin.send(method, url, None).await.unwrap();
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{url}: {body}");
    }
}
