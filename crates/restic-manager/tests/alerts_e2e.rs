//! Alerts end to end on a real server with real agents and the real
//! restic, and their notifications at a real HTTP receiver: a backup that
//! fails because the repository password changed fires `job_failed`
//! (sent, signed, repeated until acknowledged) and the next success
//! resolves it (sent); healthchecks pings follow every backup; a host whose
//! agent is killed goes offline and stale, and one that never backs up goes
//! stale — decided by the server alone — and their notifications reach a
//! receiver that was down, across a server restart, the silenced host's
//! only once its silence ends; silences and filters are checked like every
//! input; every change is in the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use rm_testkit::{wait_until, webhook_signature, Api, HttpReceiver, SmtpReceiver, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "alerts-e2e-Pa55";
const JOB_LIMIT: Duration = Duration::from_secs(180);
/// The shortest thresholds the API takes, plus what the server needs to
/// notice (a killed agent's connection closes at once).
const FIRE_LIMIT: Duration = Duration::from_secs(150);

const SECRET: &str = "webhook-secret-for-alerts";
/// How often a firing alert nobody acknowledged is sent again here.
const REPEAT: Duration = Duration::from_secs(3);

/// A server that gives hosts no grace after it starts (tests start it
/// just before enrolling) and repeats alerts every [`REPEAT`].
async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.alert_grace = Duration::ZERO;
        config.alert_repeat = REPEAT;
    })
    .await
    .unwrap()
}

/// A webhook channel (signed with [`SECRET`]) to `receiver`.
async fn webhook(admin: &Api, receiver: &HttpReceiver) -> Value {
    admin
        .create_channel(json!({
            "name": "ops-webhook",
            "kind": "webhook",
            "config": {"url": receiver.url("/hook"), "secret": SECRET},
        }))
        .await
        .unwrap()
}

/// The alert notifications `receiver` got, each checked against its
/// signature: `(event, kind, host id, repeat)`.
fn alert_posts(receiver: &HttpReceiver) -> Vec<(String, String, String, bool)> {
    receiver
        .requests()
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| {
            let expected = webhook_signature(SECRET, &r.body);
            assert_eq!(r.header("x-rm-signature"), Some(expected.as_str()));
            let body = r.json().unwrap();
            (
                body["event"].as_str().unwrap().to_owned(),
                body["alert"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["host"]["id"].as_str().unwrap_or_default().to_owned(),
                body["repeat"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

fn count(posts: &[(String, String, String, bool)], event: &str, kind: &str, host: &str) -> usize {
    posts
        .iter()
        .filter(|(e, k, h, _)| e == event && k == kind && h == host)
        .count()
}

async fn wait_posts(
    receiver: &HttpReceiver,
    what: &str,
    done: impl Fn(&[(String, String, String, bool)]) -> bool,
) {
    wait_until(FIRE_LIMIT, what, || async { done(&alert_posts(receiver)) })
        .await
        .unwrap();
}

async fn alerts(admin: &Api, query: &str) -> Vec<Value> {
    let (status, body) = admin.get(&format!("/api/v1/alerts?{query}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

async fn wait_firing(admin: &Api, host: &str, kind: &str) -> Value {
    let query = format!("state=firing&host_id={host}&kind={kind}");
    wait_until(FIRE_LIMIT, &format!("{kind} to fire"), || async {
        !alerts(admin, &query).await.is_empty()
    })
    .await
    .unwrap();
    alerts(admin, &query).await.remove(0)
}

async fn finished(admin: &Api, job: &str) -> Value {
    admin.finished_job(job, JOB_LIMIT).await.unwrap()
}

async fn backup(admin: &Api, host: &str, src: &Path) -> Value {
    let job = admin
        .start_job(
            host,
            "backup",
            json!({"paths": [src.display().to_string()]}),
        )
        .await
        .unwrap();
    finished(admin, &job).await
}

#[tokio::test]
async fn a_backup_failing_on_a_changed_password_fires_job_failed_until_the_next_success() {
    let server = server().await;
    let agent = server
        .enrolled_agent(Path::new(BIN), "files", &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let host = agent.host_id.clone();
    let receiver = HttpReceiver::start().await.unwrap();
    webhook(&admin, &receiver).await;
    // Email, for job failures only.
    let smtp = SmtpReceiver::start().await.unwrap();
    admin
        .create_channel(
            json!({"name": "oncall-mail", "kind": "email", "kinds": ["job_failed"],
            "config": {"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "tls": "none",
                       "from": "backups@example.com", "to": ["oncall@example.com"]}}),
        )
        .await
        .unwrap();
    admin
        .create_channel(json!({
            "name": "dead-mans-switch",
            "kind": "healthchecks",
            "config": {"base_url": receiver.url("/hc")},
        }))
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo").display().to_string();
    let src = scratch.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "a\n").unwrap();

    admin.set_repository(&host, &repo, PASSWORD).await.unwrap();
    let init = admin.host_jobs(&host, 1).await.unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(finished(&admin, &init).await["status"], "succeeded");
    assert_eq!(backup(&admin, &host, &src).await["status"], "succeeded");
    assert!(alerts(&admin, "state=firing").await.is_empty());
    let pings = |path: &'static str| {
        let receiver = &receiver;
        move || {
            receiver
                .requests()
                .iter()
                .filter(|r| r.path == path)
                .count()
        }
    };
    wait_until(
        FIRE_LIMIT,
        "the healthchecks ping of the backup",
        || async { pings("/hc/files")() == 1 },
    )
    .await
    .unwrap();

    // Someone changed the repository's password: backups fail.
    admin
        .set_repository(&host, &repo, "not-the-password")
        .await
        .unwrap();
    let failed = backup(&admin, &host, &src).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let alert = wait_firing(&admin, &host, "job_failed").await;
    assert_eq!(alert["subject"], "backup:manual");
    assert_eq!(alert["job_id"], failed["id"]);
    assert_eq!(alert["host_name"], "files");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.starts_with("a backup started by hand failed"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    let id = alert["id"].as_str().unwrap().to_owned();
    wait_until(FIRE_LIMIT, "the failure's healthchecks ping", || async {
        pings("/hc/files/fail")() == 1
    })
    .await
    .unwrap();

    // Sent, then sent again while nobody acknowledges it.
    wait_posts(&receiver, "the alert and a repeat", |posts| {
        count(posts, "alert.firing", "job_failed", &host) >= 2
    })
    .await;
    let posts = alert_posts(&receiver);
    assert!(
        !posts[0].3 && posts[1].3,
        "the second is a repeat: {posts:?}"
    );

    let mail = smtp.wait_for(1, FIRE_LIMIT).await.unwrap().remove(0);
    assert!(
        mail.contains("Subject: [restic-manager] FIRING job_failed"),
        "{mail}"
    );
    assert!(mail.contains("oncall@example.com"), "{mail}");
    assert!(!mail.contains(PASSWORD), "{mail}");

    // Acknowledged: no more repeats; twice is a conflict.
    let (status, acked) = admin
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["acknowledged_by"], "admin");
    let (status, again) = admin
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(alerts(&admin, "state=acknowledged").await.len(), 1);
    let sent = count(&alert_posts(&receiver), "alert.firing", "job_failed", &host);
    tokio::time::sleep(REPEAT * 3).await;
    let after = count(&alert_posts(&receiver), "alert.firing", "job_failed", &host);
    assert!(
        after <= sent + 1,
        "repeats stopped ({sent} then {after}; one may have been on its way)"
    );

    // The password is put back: the next backup resolves the alert (right
    // after its end is stored, so a moment after the job shows it).
    admin.set_repository(&host, &repo, PASSWORD).await.unwrap();
    assert_eq!(backup(&admin, &host, &src).await["status"], "succeeded");
    wait_until(FIRE_LIMIT, "the success to resolve the alert", || async {
        matches!(admin.get(&format!("/api/v1/alerts/{id}")).await, Ok((_, a)) if a["state"] == "resolved")
    })
    .await
    .unwrap();
    let (_, resolved) = admin.get(&format!("/api/v1/alerts/{id}")).await.unwrap();
    assert_eq!(resolved["state"], "resolved", "{resolved:#}");
    assert!(resolved["resolved_message"]
        .as_str()
        .unwrap()
        .ends_with("succeeded"));
    assert_eq!(
        alerts(&admin, "state=resolved&kind=job_failed").await.len(),
        1
    );

    // Fired, acknowledged and resolved: each in the audit log.
    let (_, audit) = admin.get("/api/v1/audit?limit=200").await.unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .or(audit.as_array())
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["alert.fire", "alert.ack", "alert.resolve"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn the_server_alone_finds_dead_and_silent_hosts_and_tells_a_receiver_that_was_down() {
    let server = server().await;
    let admin = server.admin().await.unwrap();
    let mut receiver = HttpReceiver::start().await.unwrap();
    let channel = webhook(&admin, &receiver).await;
    let agent = server
        .enrolled_agent(Path::new(BIN), "doomed", &rm_testkit::restic::binary(), &[])
        .await
        .unwrap();
    // A second host whose agent never runs at all, in maintenance.
    let (never, _) = server.enrolled_host("never-ran").await.unwrap();
    for (host, labels) in [
        (&agent.host_id, json!({})),
        (&never, json!({"state": "maintenance"})),
    ] {
        let (status, body) = admin
            .patch(
                &format!("/api/v1/hosts/{host}"),
                json!({"freshness_seconds": 60, "offline_seconds": 60, "labels": labels}),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["offline_seconds"], 60);
        assert_eq!(body["offline_source"], "host");
    }
    let silence_ends = chrono::Utc::now() + chrono::Duration::seconds(100);
    let (status, silence) = admin
        .post(
            "/api/v1/silences",
            json!({"selector": {"state": "maintenance"}, "until": silence_ends.to_rfc3339(), "reason": "rebuilding it"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{silence}");
    // The receiver is down when the alerts fire.
    receiver.stop().await;
    let doomed = agent.host_id.clone();
    agent.process.kill9().await.unwrap();

    let offline = wait_firing(&admin, &doomed, "host_offline").await;
    assert!(offline["message"]
        .as_str()
        .unwrap()
        .starts_with("offline for"));
    let stale = wait_firing(&admin, &doomed, "backup_stale").await;
    assert!(stale["message"]
        .as_str()
        .unwrap()
        .starts_with("never backed up successfully"));
    wait_firing(&admin, &never, "backup_stale").await;
    wait_firing(&admin, &never, "host_offline").await;
    let host = admin.host(&doomed).await.unwrap();
    assert!(!host.protected);
    let id = channel["id"].as_str().unwrap();
    wait_until(FIRE_LIMIT, "a failed delivery", || async {
        admin.channel(id).await.unwrap()["failed"].as_u64() > Some(0)
    })
    .await
    .unwrap();

    // The server restarts, the receiver comes back: what was queued
    // arrives, the silenced host's only after its silence.
    let server = server.restart().await.unwrap();
    let admin = server.admin().await.unwrap();
    receiver.restart().await.unwrap();
    wait_posts(&receiver, "the dead agent's alerts", |posts| {
        count(posts, "alert.firing", "host_offline", &doomed) >= 1
            && count(posts, "alert.firing", "backup_stale", &doomed) >= 1
    })
    .await;
    if chrono::Utc::now() < silence_ends - chrono::Duration::seconds(2) {
        let posts = alert_posts(&receiver);
        assert_eq!(
            count(&posts, "alert.firing", "backup_stale", &never),
            0,
            "{posts:?}"
        );
    }
    wait_posts(
        &receiver,
        "the silenced host's alerts after the silence",
        |posts| {
            count(posts, "alert.firing", "host_offline", &never) >= 1
                && count(posts, "alert.firing", "backup_stale", &never) >= 1
        },
    )
    .await;
    assert!(chrono::Utc::now() >= silence_ends);

    // Filters: by host, by kind, by label; bad ones are named.
    assert_eq!(alerts(&admin, &format!("host_id={never}")).await.len(), 2);
    assert_eq!(alerts(&admin, "kind=host_offline").await.len(), 2);
    assert_eq!(alerts(&admin, "labels=state=maintenance").await.len(), 2);
    for (query, field) in [
        ("state=burning", "`state`"),
        ("kind=stale", "`kind`"),
        ("host_id=web-01", "`host_id`"),
        ("labels=Env=x", "labels"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = admin.get(&format!("/api/v1/alerts?{query}")).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
}

#[tokio::test]
async fn silences_are_checked_listed_and_ended() {
    let server = server().await;
    let admin = server.admin().await.unwrap();
    let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for (body, field) in [
        (
            json!({"selector": {"Env": "prod"}, "until": until, "reason": "x"}),
            "selector",
        ),
        (
            json!({"selector": {}, "until": past, "reason": "x"}),
            "`until`",
        ),
        (
            json!({"selector": {}, "until": until, "reason": "  "}),
            "`reason`",
        ),
        (
            json!({"selector": {}, "until": "tomorrow", "reason": "x"}),
            "until",
        ),
        (json!({"until": until, "reason": "x", "hosts": []}), "hosts"),
    ] {
        let (status, answer) = admin.post("/api/v1/silences", body.clone()).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer.to_string().contains(field), "{body}: {answer}");
    }
    let (_, none) = admin.get("/api/v1/silences?all=true").await.unwrap();
    assert_eq!(none, json!([]), "nothing stored by a refused silence");

    let (status, silence) = admin
        .post(
            "/api/v1/silences",
            json!({"selector": {"env": "prod"}, "until": until, "reason": "moving racks"}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{silence}");
    assert_eq!(silence["active"], true);
    assert_eq!(silence["created_by"], "admin");
    let (_, listed) = admin.get("/api/v1/silences").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let id = silence["id"].as_str().unwrap();
    let (status, _) = admin
        .delete(&format!("/api/v1/silences/{id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = admin.get("/api/v1/silences").await.unwrap();
    assert_eq!(listed, json!([]));
    // Ended, not forgotten: `all` still lists it, inactive.
    let (_, all) = admin.get("/api/v1/silences?all=true").await.unwrap();
    assert_eq!(all[0]["id"], id);
    assert_eq!(all[0]["active"], false);
    let (status, again) = admin
        .delete(&format!("/api/v1/silences/{id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let unknown = rm_core::SilenceId::new();
    let (status, _) = admin
        .delete(&format!("/api/v1/silences/{unknown}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}
