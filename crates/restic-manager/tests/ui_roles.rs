//! Roles in the browser: a viewer's pages offer no run or restore
//! actions, a scoped operator's dashboard lists their hosts only, and an
//! admin changes a user's role and scope on the users page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_testkit::{Api, Browser, TestServer, ADMIN_PASSWORD};
use serde_json::json;

const PASSWORD: &str = "a-long-password-1";

/// A server with a host of team a and one of team b, a viewer `victor`
/// and an operator `sam` scoped to team a.
async fn teams() -> (TestServer, Api, String) {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (a, _) = server
        .enrolled_host_labelled("web-a", &[("team", "a")])
        .await
        .unwrap();
    server
        .enrolled_host_labelled("web-b", &[("team", "b")])
        .await
        .unwrap();
    admin
        .create_user("victor", PASSWORD, "viewer", None)
        .await
        .unwrap();
    admin
        .create_user("sam", PASSWORD, "operator", Some(json!({"team": "a"})))
        .await
        .unwrap();
    (server, admin, a)
}

#[tokio::test]
async fn in_the_browser_a_viewer_has_no_run_or_restore_buttons_and_a_scoped_dashboard_shows_their_hosts(
) {
    let (server, _admin, host_a) = teams().await;
    let origin = server.url.clone();
    let count = |browser: &Browser, css: &'static str| {
        let client = browser.client().clone();
        async move {
            client
                .execute(
                    "return document.querySelectorAll(arguments[0]).length;",
                    vec![json!(css)],
                )
                .await
                .unwrap()
                .as_u64()
                .unwrap()
        }
    };
    let wait = std::time::Duration::from_secs(10);

    let browser = Browser::start().await.unwrap();
    browser.log_in(&origin, "victor", PASSWORD).await.unwrap();
    browser
        .goto(&format!("{origin}/hosts/{host_a}"))
        .await
        .unwrap();
    browser.wait_for("#host-live", wait).await.unwrap();
    assert!(browser.text("h1", wait).await.unwrap().contains("web-a"));
    for css in [
        "#host-actions",
        "#backup-now",
        "#schedule-add",
        "#nav-restore",
        "[data-post]",
    ] {
        assert_eq!(count(&browser, css).await, 0, "{css} on a viewer's page");
    }
    assert_eq!(
        browser.text("#nav-user .badge", wait).await.unwrap(),
        "viewer"
    );
    browser.goto(&format!("{origin}/")).await.unwrap();
    browser.wait_for("#hosts-table", wait).await.unwrap();
    assert_eq!(count(&browser, "#bulk").await, 0);
    assert_eq!(browser.table_rows("#hosts-table").await.unwrap(), 2);
    browser.close().await.unwrap();

    let browser = Browser::start().await.unwrap();
    browser.log_in(&origin, "sam", PASSWORD).await.unwrap();
    browser.goto(&format!("{origin}/")).await.unwrap();
    browser.wait_for("#hosts-table", wait).await.unwrap();
    assert_eq!(browser.table_rows("#hosts-table").await.unwrap(), 1);
    let table = browser.text("#hosts-table", wait).await.unwrap();
    assert!(
        table.contains("web-a") && !table.contains("web-b"),
        "{table}"
    );
    // An operator in scope still has the actions.
    assert_eq!(count(&browser, "#bulk").await, 1);
    assert_eq!(count(&browser, "#nav-restore").await, 1);
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_admin_changes_a_role_and_scope_on_the_users_page() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let victor = admin
        .create_user("victor", PASSWORD, "viewer", None)
        .await
        .unwrap();
    let origin = server.url.clone();
    let wait = std::time::Duration::from_secs(10);
    let browser = Browser::start().await.unwrap();
    browser
        .log_in(&origin, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.goto(&format!("{origin}/users")).await.unwrap();
    let form = format!("#access-{victor}");
    browser.wait_for(&form, wait).await.unwrap();
    browser
        .client()
        .execute(
            "document.querySelector(arguments[0] + ' select[name=role]').value = 'operator';",
            vec![json!(form)],
        )
        .await
        .unwrap();
    browser
        .fill(&format!("{form} input[name=scope]"), "team=web, env=prod")
        .await
        .unwrap();
    browser
        .click(&format!("{form} button[type=submit]"))
        .await
        .unwrap();
    let user_of = || async {
        let (_, users) = admin.get("/api/v1/users").await.unwrap();
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == victor.as_str())
            .cloned()
            .unwrap()
    };
    rm_testkit::wait_until(wait, "victor to become an operator", || async {
        user_of().await["role"] == "operator"
    })
    .await
    .unwrap();
    assert_eq!(
        user_of().await["scope"],
        json!({"team": "web", "env": "prod"})
    );
    // Emptied, the scope goes.
    browser.goto(&format!("{origin}/users")).await.unwrap();
    browser.wait_for(&form, wait).await.unwrap();
    browser
        .fill(&format!("{form} input[name=scope]"), "")
        .await
        .unwrap();
    browser
        .click(&format!("{form} button[type=submit]"))
        .await
        .unwrap();
    rm_testkit::wait_until(wait, "victor's scope to go", || async {
        user_of().await["scope"].is_null()
    })
    .await
    .unwrap();
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close().await.unwrap();
    server.stop().await.unwrap();
}
