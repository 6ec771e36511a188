//! Account management over HTTP: users (create, list, delete, change your
//! own password), API tokens (create with the secret shown once, list,
//! revoke, only your own), the CSRF rule for cookie-authenticated requests,
//! and the web UI's token form that shows a new secret once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration as ChronoDuration, Utc};
use reqwest::header::{CACHE_CONTROL, LOCATION};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use rm_testkit::{Api, TestServer, WebSession, ADMIN_PASSWORD};
use serde_json::{json, Value};

const ALICE_PASSWORD: &str = "alice-password-1";

/// The error message of an API error body.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// Creates user `name` as `by`; returns their id.
async fn create_user(by: &Api, name: &str, password: &str) -> String {
    let (status, body) = by
        .post(
            "/api/v1/users",
            json!({"username": name, "password": password, "role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Creates an API token as `by`; returns the whole created body.
async fn create_token(by: &Api, name: &str, ttl_days: Option<u32>) -> Value {
    let mut request = json!({"name": name});
    if let Some(days) = ttl_days {
        request["ttl_days"] = json!(days);
    }
    let (status, body) = by.post("/api/v1/api-tokens", request).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn put(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    api.send(Method::PUT, path, Some(body)).await.unwrap()
}

#[tokio::test]
async fn a_created_user_is_listed_and_can_log_in() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();

    let (status, body) = admin
        .post(
            "/api/v1/users",
            json!({"username": " alice ", "password": ALICE_PASSWORD, "role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["username"], "alice", "the name is trimmed");
    assert_eq!(body["id"].as_str().unwrap().len(), 26);
    assert!(body["created_at"].as_str().is_some());
    assert!(body.get("password_hash").is_none());

    let alice = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    create_user(&alice, "carol", "carol-password").await;

    let (status, users) = alice.get("/api/v1/users").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "carol"], "in name order");
    assert!(!users.to_string().contains("argon2"), "no hashes: {users}");
    for user in users.as_array().unwrap() {
        let mut keys: Vec<&str> = user
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "id", "role", "scope", "username"]);
    }
}

#[tokio::test]
async fn bad_new_users_are_refused_naming_the_field() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    create_user(&admin, "alice", ALICE_PASSWORD).await;

    let (status, body) = admin
        .post(
            "/api/v1/users",
            json!({"username": "alice", "password": "another-password", "role": "admin"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(message(&body).contains("alice"), "{body}");

    for (request, field) in [
        (
            json!({"username": "bob", "password": "short", "role": "admin"}),
            "password",
        ),
        (
            json!({"username": "bob", "password": "1234567", "role": "admin"}),
            "password",
        ),
        (json!({"username": "bob"}), "password"),
        (
            json!({"username": "", "password": "long-enough", "role": "admin"}),
            "username",
        ),
        (
            json!({"username": "   ", "password": "long-enough", "role": "admin"}),
            "username",
        ),
        (
            json!({"username": "bo b", "password": "long-enough", "role": "admin"}),
            "username",
        ),
        (
            json!({"username": "bob\u{7}", "password": "long-enough", "role": "admin"}),
            "username",
        ),
        (
            json!({"username": "b".repeat(65), "password": "long-enough", "role": "admin"}),
            "username",
        ),
        (json!({"password": "long-enough"}), "username"),
        (
            json!({"username": "bob", "password": "long-enough", "admin": true, "role": "admin"}),
            "admin",
        ),
    ] {
        let (status, body) = admin.post("/api/v1/users", request.clone()).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(message(&body).contains(field), "{request}: {body}");
    }

    // Exactly 8 characters and 64-character names are fine.
    create_user(&admin, &"b".repeat(64), "12345678").await;
    let (_, users) = admin.get("/api/v1/users").await.unwrap();
    assert_eq!(users.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_deleted_user_loses_logins_sessions_and_tokens() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let alice_id = create_user(&admin, "alice", ALICE_PASSWORD).await;
    let alice = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let web = WebSession::login(&server, "alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let token = create_token(&alice, "ci", None).await;
    let alice_token = alice.with_token(token["token"].as_str().unwrap());
    assert_eq!(alice_token.get("/api/v1/hosts").await.unwrap().0, 200);
    assert_eq!(web.page("/users").await.unwrap().0, StatusCode::OK);

    let (status, body) = admin
        .delete(&format!("/api/v1/users/{alice_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    assert_eq!(alice.get("/api/v1/hosts").await.unwrap().0, 401);
    assert_eq!(alice_token.get("/api/v1/hosts").await.unwrap().0, 401);
    let (status, _) = web.page("/users").await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER, "the web session went too");
    assert!(server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .is_err());
    let (_, users) = admin.get("/api/v1/users").await.unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1);

    // Gone is gone; a malformed id is named.
    let (status, _) = admin
        .delete(&format!("/api/v1/users/{alice_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = admin.delete("/api/v1/users/nope").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("nope"), "{body}");

    // The name can be used again, by a new account.
    let new_id = create_user(&admin, "alice", "a-new-password").await;
    assert_ne!(new_id, alice_id);
    assert_eq!(alice_token.get("/api/v1/hosts").await.unwrap().0, 401);
}

#[tokio::test]
async fn nobody_deletes_themselves() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (_, users) = admin.get("/api/v1/users").await.unwrap();
    let admin_id = users[0]["id"].as_str().unwrap().to_owned();

    let (status, body) = admin
        .delete(&format!("/api/v1/users/{admin_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(message(&body).contains("your own account"), "{body}");

    // Another user may, as long as one remains; then the last one stays.
    let alice_id = create_user(&admin, "alice", ALICE_PASSWORD).await;
    let alice = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        alice
            .delete(&format!("/api/v1/users/{admin_id}"))
            .await
            .unwrap()
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, _) = alice
        .delete(&format!("/api/v1/users/{alice_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(server.store().count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn changing_your_password_needs_the_current_one_and_ends_sessions() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    create_user(&admin, "alice", ALICE_PASSWORD).await;
    let alice = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let other_session = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let token = create_token(&alice, "ci", None).await;
    let alice_token = alice.with_token(token["token"].as_str().unwrap());
    const NEW: &str = "alice-new-password";

    for (request, status, field) in [
        (
            json!({"current_password": "wrong-password", "new_password": NEW}),
            StatusCode::BAD_REQUEST,
            "current_password",
        ),
        (
            json!({"current_password": ALICE_PASSWORD, "new_password": "short"}),
            StatusCode::BAD_REQUEST,
            "new_password",
        ),
        (
            json!({"current_password": ALICE_PASSWORD}),
            StatusCode::BAD_REQUEST,
            "new_password",
        ),
    ] {
        let (got, body) = put(&alice, "/api/v1/users/me/password", request.clone()).await;
        assert_eq!(got, status, "{request}: {body}");
        assert!(message(&body).contains(field), "{request}: {body}");
    }
    // Nothing changed so far.
    assert_eq!(alice.get("/api/v1/hosts").await.unwrap().0, 200);

    let (status, body) = put(
        &alice,
        "/api/v1/users/me/password",
        json!({"current_password": ALICE_PASSWORD, "new_password": NEW}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Every session ended, the caller's too; API tokens keep working.
    assert_eq!(alice.get("/api/v1/hosts").await.unwrap().0, 401);
    assert_eq!(other_session.get("/api/v1/hosts").await.unwrap().0, 401);
    assert_eq!(alice_token.get("/api/v1/hosts").await.unwrap().0, 200);
    assert!(server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .is_err());
    let again = server.anonymous().login("alice", NEW).await.unwrap();
    assert_eq!(again.get("/api/v1/hosts").await.unwrap().0, 200);
    // Only your own: the admin's password is untouched.
    server.admin().await.unwrap();

    // Anonymous callers get 401.
    let (status, _) = put(
        &server.anonymous(),
        "/api/v1/users/me/password",
        json!({"current_password": NEW, "new_password": "whatever-else"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_tokens_are_shown_once_work_as_bearer_and_stop_when_revoked() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();

    let forever = create_token(&admin, " ci deploy ", None).await;
    let secret = forever["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rmt."), "{forever}");
    assert_eq!(forever["name"], "ci deploy");
    assert!(forever["expires_at"].is_null());
    let id = forever["id"].as_str().unwrap().to_owned();
    assert!(secret.contains(&id));

    let monthly = create_token(&admin, "monthly", Some(30)).await;
    let expires: chrono::DateTime<Utc> =
        serde_json::from_value(monthly["expires_at"].clone()).unwrap();
    let ttl = expires - Utc::now();
    assert!(ttl > ChronoDuration::days(29) && ttl <= ChronoDuration::days(30));

    // Listed in creation order, never with a secret.
    let (status, list) = admin.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let tokens = list.as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["id"], id.as_str());
    assert_eq!(tokens[0]["name"], "ci deploy");
    assert_eq!(tokens[1]["name"], "monthly");
    assert!(tokens[0]["revoked_at"].is_null());
    for token in tokens {
        let mut keys: Vec<&str> = token
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "expires_at",
                "id",
                "name",
                "revoked_at",
                "role"
            ]
        );
    }
    let secret_part = secret.rsplit('.').next().unwrap();
    assert!(!list.to_string().contains(secret_part));

    // It acts as its user.
    let bearer = server.anonymous().with_token(&secret);
    assert_eq!(bearer.get("/api/v1/hosts").await.unwrap().0, 200);
    let (_, own) = bearer.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(own.as_array().unwrap().len(), 2);

    // Revoked: 401 from then on, still listed with the time; again is fine.
    let (status, body) = admin
        .delete(&format!("/api/v1/api-tokens/{id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = bearer.get("/api/v1/hosts").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (_, list) = admin.get("/api/v1/api-tokens").await.unwrap();
    let revoked_at = list[0]["revoked_at"].clone();
    assert!(revoked_at.is_string(), "{list}");
    assert!(list[1]["revoked_at"].is_null());
    assert_eq!(
        admin
            .delete(&format!("/api/v1/api-tokens/{id}"))
            .await
            .unwrap()
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = admin.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(list[0]["revoked_at"], revoked_at, "the first time stays");
}

#[tokio::test]
async fn api_tokens_are_private_to_their_user() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    create_user(&admin, "alice", ALICE_PASSWORD).await;
    let alice = server
        .anonymous()
        .login("alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let admins = create_token(&admin, "admin's", None).await;
    let admins_id = admins["id"].as_str().unwrap();

    let (_, list) = alice.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(list, json!([]), "alice sees none of the admin's tokens");

    let (status, body) = alice
        .delete(&format!("/api/v1/api-tokens/{admins_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let unknown = rm_core::TokenId::new();
    let (status, _) = alice
        .delete(&format!("/api/v1/api-tokens/{unknown}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = alice.delete("/api/v1/api-tokens/garbage").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The admin's token still works.
    let bearer = server
        .anonymous()
        .with_token(admins["token"].as_str().unwrap());
    assert_eq!(bearer.get("/api/v1/hosts").await.unwrap().0, 200);
}

#[tokio::test]
async fn bad_token_requests_are_refused_naming_the_field() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    for (request, field) in [
        (json!({}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "x".repeat(65)}), "name"),
        (json!({"name": "bad\u{7}"}), "name"),
        (json!({"name": "ci", "ttl_days": 0}), "ttl_days"),
        (json!({"name": "ci", "ttl_days": 3651}), "ttl_days"),
        (json!({"name": "ci", "ttl_days": -1}), "ttl_days"),
        (json!({"name": "ci", "token": "rmt.mine"}), "token"),
    ] {
        let (status, body) = admin
            .post("/api/v1/api-tokens", request.clone())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert!(message(&body).contains(field), "{request}: {body}");
    }
    let (_, list) = admin.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn cookie_requests_that_change_things_need_the_csrf_token() {
    let server = TestServer::start().await.unwrap();
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let csrf = web.csrf().await.unwrap();

    // Reading needs only the cookie.
    let (status, _) = web
        .api(Method::GET, "/api/v1/users", None, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let body = json!({"username": "alice", "password": ALICE_PASSWORD, "role": "admin"});
    for presented in [None, Some("0".repeat(64))] {
        let (status, error) = web
            .api(
                Method::POST,
                "/api/v1/users",
                Some(body.clone()),
                presented.as_deref(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert!(message(&error).contains("CSRF"), "{error}");
        let (status, _) = web
            .api(
                Method::POST,
                "/api/v1/api-tokens",
                Some(json!({"name": "ci"})),
                presented.as_deref(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = web
            .api(
                Method::PUT,
                "/api/v1/users/me/password",
                Some(
                    json!({"current_password": ADMIN_PASSWORD, "new_password": "changed-password"}),
                ),
                presented.as_deref(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(server.store().count_users().await.unwrap(), 1);

    // With the page's token it works.
    let (status, created) = web
        .api(Method::POST, "/api/v1/users", Some(body), Some(&csrf))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let alice_id = created["id"].as_str().unwrap();
    let (status, _) = web
        .api(
            Method::DELETE,
            &format!("/api/v1/users/{alice_id}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = web
        .api(
            Method::DELETE,
            &format!("/api/v1/users/{alice_id}"),
            None,
            Some(&csrf),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn changing_your_password_from_the_web_ends_the_cookie_session() {
    let server = TestServer::start().await.unwrap();
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let csrf = web.csrf().await.unwrap();
    let (status, body) = web
        .api(
            Method::PUT,
            "/api/v1/users/me/password",
            Some(json!({"current_password": ADMIN_PASSWORD, "new_password": "a-changed-password"})),
            Some(&csrf),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let response = web.request(Method::GET, "/users").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login");
    WebSession::login(&server, "admin", "a-changed-password")
        .await
        .unwrap();
}

#[tokio::test]
async fn the_pages_list_users_and_tokens() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    create_user(&admin, "alice", ALICE_PASSWORD).await;
    let created = create_token(&admin, "nightly <sync>", None).await;
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();

    let (status, html) = web.page("/users").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    for needle in [
        r#"id="users-table""#,
        r#"id="user-form""#,
        r#"id="new-username""#,
        r#"id="new-password""#,
        r#"id="password-form""#,
        r#"data-then="/login""#,
        "alice",
        r#"<a href="/users">Users</a>"#,
        r#"<a href="/tokens">API tokens</a>"#,
    ] {
        assert!(html.contains(needle), "/users lacks {needle}");
    }
    // One delete button: alice's, not the admin's own.
    assert_eq!(html.matches("data-delete=\"/api/v1/users/").count(), 1);

    let (status, html) = web.page("/tokens").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    for needle in [
        r#"id="tokens-table""#,
        r#"id="token-form""#,
        r#"id="token-name""#,
        "nightly &#60;sync&#62;",
        "active",
        created["id"].as_str().unwrap(),
    ] {
        assert!(html.contains(needle), "/tokens lacks {needle}");
    }
    assert!(!html.contains("<sync>"), "names are escaped");
    assert!(!html.contains(r#"id="new-token""#));
    assert!(!html.contains(created["token"].as_str().unwrap()));

    // Without a session the pages send you to log in.
    let anonymous = rm_testkit::http::client_builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for page in ["/users", "/tokens"] {
        let response = anonymous
            .get(format!("{}{page}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
    }
}

#[tokio::test]
async fn the_token_form_shows_the_secret_once() {
    let server = TestServer::start().await.unwrap();
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let csrf = web.csrf().await.unwrap();
    let form = |csrf: &str, name: &str, ttl: &str| {
        web.request(Method::POST, "/tokens").form(&[
            ("csrf", csrf),
            ("name", name),
            ("ttl_days", ttl),
        ])
    };

    // A wrong or missing CSRF token creates nothing.
    let response = form("wrong", "ci", "").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Bad input re-shows the form with the message and what was typed.
    let response = form(&csrf, "ci", "0").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"id="token-error""#), "{html}");
    assert!(html.contains("ttl_days"));
    let response = form(&csrf, "ci", "soon").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = form(&csrf, "  ", "").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("`name`"));
    let admin = server.admin().await.unwrap();
    let (_, list) = admin.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(list, json!([]));

    // A good one: the secret is on that page only, and the page is not cached.
    let response = form(&csrf, "from the web", "7").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let html = response.text().await.unwrap();
    let secret = html
        .split(r#"<pre class="command" id="new-token">"#)
        .nth(1)
        .expect("the new token is shown")
        .split("</pre>")
        .next()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("rmt."), "{secret}");
    assert!(html.contains("not shown again"));
    assert!(html.contains(r#"id="tokens-table""#));

    let bearer = server.anonymous().with_token(&secret);
    assert_eq!(bearer.get("/api/v1/hosts").await.unwrap().0, 200);
    let (_, list) = admin.get("/api/v1/api-tokens").await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "from the web");
    assert!(list[0]["expires_at"].is_string());

    let (status, html) = web.page("/tokens").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains(&secret), "shown only once");
    assert!(html.contains("from the web"));
}

/// Runs SQL on the server's real database from the outside, as a damaged
/// or tampered-with database would look to the running server.
async fn outside(server: &TestServer, sql: &str) {
    server
        .database()
        .expect("a test server has a database")
        .execute_outside(sql)
        .await
        .unwrap();
}

/// Asserts a page is the database-error page, not a page of empty lists.
async fn shows_store_error(web: &WebSession, path: &str, empty_looks_like: &str) {
    let (status, html) = web.page(path).await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {html}");
    assert!(
        html.contains("The server could not read its database"),
        "{path}: {html}"
    );
    assert!(!html.contains(empty_looks_like), "{path}: {html}");
}

#[tokio::test]
async fn ui_pages_say_the_database_failed_instead_of_showing_empty_lists() {
    let server = TestServer::start().await.unwrap();
    let (host_id, _) = server.enrolled_host("web-01").await.unwrap();
    let web = WebSession::login(&server, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let host_page = format!("/hosts/{host_id}");
    let (status, html) = web.page(&host_page).await.unwrap();
    assert_eq!(status, 200);
    assert!(html.contains("No snapshots reported yet."));

    // The host can be read, its snapshots cannot: the page must not claim
    // there are none.
    outside(&server, "ALTER TABLE snapshots RENAME TO snapshots_away;").await;
    shows_store_error(&web, &host_page, "No snapshots reported yet.").await;
    outside(&server, "ALTER TABLE snapshots_away RENAME TO snapshots;").await;
    assert_eq!(web.page(&host_page).await.unwrap().0, 200);

    // No hosts table: the dashboard and the restore wizard say so rather
    // than showing an empty fleet.
    outside(&server, "ALTER TABLE hosts RENAME TO hosts_away;").await;
    shows_store_error(&web, "/", "No hosts yet.").await;
    shows_store_error(&web, "/restore", "web-01").await;
    outside(&server, "ALTER TABLE hosts_away RENAME TO hosts;").await;

    outside(
        &server,
        "ALTER TABLE enrollment_tokens RENAME TO enrollment_tokens_away;",
    )
    .await;
    shows_store_error(&web, "/enroll", "(unnamed)").await;
    outside(
        &server,
        "ALTER TABLE enrollment_tokens_away RENAME TO enrollment_tokens;",
    )
    .await;

    // Back to normal once the database is.
    let (status, html) = web.page("/").await.unwrap();
    assert_eq!(status, 200);
    assert!(html.contains("web-01"));
}
