//! Login throttling and bearer-token failure limits against a real server:
//! parallel bursts are throttled like serial attempts, the per-user delay
//! follows a user across addresses, correct tokens are never held up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use rm_testkit::fleet::{scrape, scraped_value};
use rm_testkit::{Api, RawAgent, TestServer, ADMIN_PASSWORD};
use serde_json::{json, Value};

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// One login attempt's answer: status, `Retry-After` seconds, JSON body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

async fn login(client: &reqwest::Client, url: &str, password: &str) -> Answer {
    let response = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

/// `n` wrong passwords at once; returns (401s, 429s), checking every 429.
async fn burst(client: &reqwest::Client, url: &str, n: usize) -> (usize, Vec<Answer>) {
    let answers = join_all((0..n).map(|_| login(client, url, "wrong"))).await;
    let mut unauthorized = 0;
    let mut throttled = Vec::new();
    for answer in answers {
        match answer.status {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(
                    answer.body["error"]["code"], "rate_limited",
                    "{}",
                    answer.body
                );
                assert!(
                    answer.retry_after.is_some_and(|s| s >= 1),
                    "429 without Retry-After"
                );
                throttled.push(answer);
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    (unauthorized, throttled)
}

async fn password_checks(server: &TestServer) -> f64 {
    let text = scrape(&rm_testkit::http::client(), &server.url)
        .await
        .unwrap();
    scraped_value(&text, "rm_login_password_checks_total").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_are_throttled_like_serial_ones() {
    let server = TestServer::start().await.unwrap();
    let first = server.client_from(loopback(1)).unwrap();

    // 40 at once from one address: five are checked, 35 refused unchecked.
    let (unauthorized, throttled) = burst(&first, &server.url, 40).await;
    assert_eq!((unauthorized, throttled.len()), (5, 35));
    assert_eq!(password_checks(&server).await, 5.0);
    assert!(throttled.iter().all(|a| a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("from this address")));

    // The right password from that address waits out the window too.
    let answer = login(&first, &server.url, ADMIN_PASSWORD).await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(
        answer.retry_after.unwrap() > 14 * 60,
        "{:?}",
        answer.retry_after
    );

    // A second address gets its own five: the user has ten failures now.
    let second = server.client_from(loopback(2)).unwrap();
    let (unauthorized, _) = burst(&second, &server.url, 40).await;
    assert_eq!(unauthorized, 5);
    assert_eq!(password_checks(&server).await, 10.0);

    // From a third address the user-wide delay applies: one attempt at a
    // time, after an exponentially growing wait.
    let third = server.client_from(loopback(3)).unwrap();
    let (unauthorized, throttled) = burst(&third, &server.url, 40).await;
    assert!(unauthorized <= 1, "{unauthorized} checked during the delay");
    assert!(throttled.len() >= 39);
    for answer in &throttled {
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("too many failed logins for `admin`;"),
            "{message}"
        );
        assert!(answer.retry_after.unwrap() <= 4, "{:?}", answer.retry_after);
    }

    // The real admin, from yet another address, gets in after the wait
    // rather than being locked out.
    let fourth = server.client_from(loopback(4)).unwrap();
    let mut answer = login(&fourth, &server.url, ADMIN_PASSWORD).await;
    for _ in 0..3 {
        if answer.status != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_secs(answer.retry_after.unwrap())).await;
        answer = login(&fourth, &server.url, ADMIN_PASSWORD).await;
    }
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Only ever checked what the limits allowed.
    assert!(password_checks(&server).await <= 12.0);
    // The first address is still locked out for its window.
    assert_eq!(login(&first, &server.url, ADMIN_PASSWORD).await.status, 429);

    // Every refusal is audited as before.
    let admin = Api::with_client(fourth, &server.url, None)
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let (status, entries) = admin
        .get("/api/v1/audit?action=auth.login_failed&limit=500")
        .await
        .unwrap();
    assert_eq!(status, 200, "{entries}");
    let rate_limited = entries["entries"]
        .as_array()
        .or(entries.as_array())
        .unwrap()
        .iter()
        .filter(|e| e["details"]["reason"] == "rate_limited")
        .count();
    assert!(rate_limited >= 35 + 35 + 39, "{rate_limited} audited");
}

#[tokio::test]
async fn failed_bearer_tokens_get_429_after_a_burst_but_right_tokens_pass() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let (_, agent_token) = server.enrolled_host("web1").await.unwrap();
    let client = server.client_from(loopback(7)).unwrap();
    let wrong = "rmt.01J00000000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let get = |token: String| {
        let client = client.clone();
        let url = server.url.clone();
        async move {
            let response = client
                .get(format!("{url}/api/v1/hosts"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let retry = response.headers().get("retry-after").cloned();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry, body)
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(get(wrong.to_owned()).await.0.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 30);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 10);
    let (status, retry, body) = get(wrong.to_owned()).await;
    assert_eq!(status, 429);
    assert!(retry.is_some());
    assert_eq!(body["error"]["code"], "rate_limited");
    // A right token from the same address is not held up.
    let (status, _, _) = get(admin.token().unwrap().to_owned()).await;
    assert_eq!(status, 200);
    // Another address is not affected.
    let (status, _) = server
        .anonymous()
        .with_token(wrong)
        .get("/api/v1/hosts")
        .await
        .unwrap();
    assert_eq!(status, 401);

    // The agent endpoint counts the same way (from 127.0.0.1 here) and
    // still lets the right agent token in.
    let bad_agent =
        "Bearer rma.01J00000000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut refused = Vec::new();
    for _ in 0..35 {
        let Err((status, _)) = RawAgent::connect(&server.ws_url(), Some(bad_agent))
            .await
            .unwrap()
        else {
            panic!("a wrong agent token was accepted");
        };
        refused.push(status);
    }
    // One failure from 127.0.0.1 above (the anonymous 401).
    assert_eq!(refused.iter().filter(|s| **s == 401).count(), 29);
    assert_eq!(refused.iter().filter(|s| **s == 429).count(), 6);
    RawAgent::connect_and_hello(&server.ws_url(), &agent_token)
        .await
        .unwrap();
    let text = scrape(&rm_testkit::http::client(), &server.url)
        .await
        .unwrap();
    assert_eq!(
        scraped_value(&text, "rm_bearer_auth_throttled_total"),
        Some(17.0)
    );
}
