//! `copy` to a second repository end to end (3-2-1): the real server, the
//! real agent binary and the real restic copy a host's snapshots from its
//! repository to its `copy_to`, a local folder and then a REST repository
//! served by `rclone serve restic`. What the job reports is checked
//! against restic itself on the destination, opened with its own password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use reqwest::{Method, StatusCode};
use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::make_tree;
use rm_testkit::rclone::RcloneServer;
use rm_testkit::restic::{binary, on_repository, on_repository_ok};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const PASSWORD: &str = "copy-e2e-primary-password";
const COPY_PASSWORD: &str = "copy-e2e-second-password";

async fn start(name: &str) -> Host {
    Host::start(Path::new(BIN), name, &binary(), &[]).await
}

/// `PUT /repository` with `body` as it is; returns the status and body.
async fn put_repository(host: &Host, body: Value) -> (StatusCode, Value) {
    host.admin
        .send(
            Method::PUT,
            &format!("/api/v1/hosts/{}/repository", host.id),
            Some(body),
        )
        .await
        .unwrap()
}

/// `GET /repository`.
async fn repository(host: &Host) -> Value {
    let (status, body) = host
        .admin
        .get(&format!("/api/v1/hosts/{}/repository", host.id))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// How many jobs the host has.
async fn job_count(host: &Host) -> usize {
    let (_, jobs) = host
        .admin
        .get(&format!("/api/v1/jobs?host_id={}&limit=500", host.id))
        .await
        .unwrap();
    jobs.as_array().unwrap().len()
}

/// `restic snapshots --json` of a repository, opened with `password`.
async fn snapshots_of(repo: &str, password: &str) -> Vec<Value> {
    let out = on_repository_ok(&binary(), repo, password, &["snapshots", "--json"]).await;
    serde_json::from_slice(&out).unwrap()
}

/// The chunker polynomial of a repository (`restic cat config`).
async fn chunker_of(repo: &str, password: &str) -> String {
    let out = on_repository_ok(&binary(), repo, password, &["cat", "config"]).await;
    let config: Value = serde_json::from_slice(&out).unwrap();
    config["chunker_polynomial"].as_str().unwrap().to_owned()
}

/// Every log line of a job, joined.
async fn log_text(host: &Host, job: &Value) -> String {
    host.logs(job["id"].as_str().unwrap())
        .await
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ids(snapshots: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = snapshots
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_the_hosts_snapshots_to_a_local_and_a_rest_repository() {
    let host = start("copy-e2e").await;
    let primary = host.scratch().join("primary").display().to_string();
    succeeded(&host.set_repository(&primary, PASSWORD).await);
    let src = host.scratch().join("src");
    make_tree(&src);
    let src_path = src.display().to_string();
    let backup = host.run("backup", json!({"paths": [src_path]})).await;
    succeeded(&backup);
    let own = host.wait_snapshots(1).await;
    let hostname = own[0]["hostname"].as_str().unwrap().to_owned();
    // Another host's snapshot in the same repository (shared repositories
    // hold several): a copy of this host's must leave it where it is.
    let other = on_repository(
        &binary(),
        &primary,
        PASSWORD,
        &["backup", "--host=someone-else", "--json", "--", &src_path],
    )
    .await;
    assert!(other.status.success(), "{other:?}");

    // The second repository, given with the first; the copy job makes it.
    let second = host.scratch().join("second").display().to_string();
    let (status, body) = put_repository(
        &host,
        json!({"url": primary, "password": PASSWORD, "copy_to": {"url": second, "password": COPY_PASSWORD}}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let shown = repository(&host).await;
    assert_eq!(
        shown["copy_to"],
        json!({"url": second, "env_keys": []}),
        "{shown}"
    );
    assert!(!shown.to_string().contains(COPY_PASSWORD), "{shown}");

    let copy = host.run("copy", json!({})).await;
    succeeded(&copy);
    assert_eq!(copy["stats"]["snapshots_copied"], 1, "{copy:#}");
    assert_eq!(copy["stats"]["destination_initialized"], true, "{copy:#}");
    let log = log_text(&host, &copy).await;
    assert!(log.contains("--copy-chunker-params"), "{log}");
    assert!(
        !log.contains(PASSWORD) && !log.contains(COPY_PASSWORD),
        "{log}"
    );
    let copied = snapshots_of(&second, COPY_PASSWORD).await;
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(copied[0]["hostname"], hostname.as_str());
    assert_eq!(copied[0]["paths"], json!([src_path]));
    assert_eq!(copied[0]["original"], own[0]["id"], "{copied:?}");
    // Same chunker: what is copied deduplicates as it did at the source.
    assert_eq!(
        chunker_of(&second, COPY_PASSWORD).await,
        chunker_of(&primary, PASSWORD).await
    );
    // The host's own list stays its primary repository's.
    assert_eq!(ids(&host.snapshots().await), ids(&own));

    // Again: nothing new.
    let again = host.run("copy", json!({})).await;
    succeeded(&again);
    assert_eq!(again["stats"]["snapshots_copied"], 0, "{again:#}");
    assert_eq!(again["stats"]["destination_initialized"], false);
    assert!(log_text(&host, &again)
        .await
        .contains("nothing new to copy"));
    assert_eq!(snapshots_of(&second, COPY_PASSWORD).await.len(), 1);

    // Only what the params name: a tagged backup, copied by its tag.
    let tagged = host
        .run("backup", json!({"paths": [src_path], "tags": ["weekly"]}))
        .await;
    succeeded(&tagged);
    let by_tag = host.run("copy", json!({"tags": ["weekly"]})).await;
    succeeded(&by_tag);
    assert_eq!(by_tag["stats"]["snapshots_copied"], 1, "{by_tag:#}");
    let copied = snapshots_of(&second, COPY_PASSWORD).await;
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied.iter().all(|s| s["hostname"] == hostname.as_str()));

    // An id of another host's snapshot is refused: restic would copy it
    // (it ignores --host for named snapshots).
    let everything = snapshots_of(&primary, PASSWORD).await;
    let foreign = everything
        .iter()
        .find(|s| s["hostname"] == "someone-else")
        .unwrap();
    let refused = host
        .run(
            "copy",
            json!({"snapshot_ids": [foreign["short_id"].as_str().unwrap()]}),
        )
        .await;
    assert_eq!(refused["status"], "failed", "{refused:#}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("is not one of this host's"),
        "{refused:#}"
    );
    assert_eq!(snapshots_of(&second, COPY_PASSWORD).await.len(), 2);

    // The wrong password for the destination: nothing is copied or made.
    let (status, body) = put_repository(
        &host,
        json!({"url": primary, "password": PASSWORD, "copy_to": {"url": second, "password": "not-its-password"}}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let wrong = host.run("copy", json!({})).await;
    assert_eq!(wrong["status"], "failed", "{wrong:#}");
    let error = wrong["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("could not open the copy destination {second}")),
        "{error}"
    );
    assert_eq!(snapshots_of(&second, COPY_PASSWORD).await.len(), 2);

    // A REST repository as the destination (given without `env`, with a
    // sub-path rclone makes on init).
    let rest_dir = host.scratch().join("rest");
    std::fs::create_dir_all(&rest_dir).unwrap();
    let rclone = RcloneServer::start(&rest_dir);
    let rest = format!("{}offsite/", rclone.url);
    let (status, body) = put_repository(
        &host,
        json!({"url": primary, "password": PASSWORD, "copy_to": {"url": rest, "password": COPY_PASSWORD}}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let to_rest = host.run("copy", json!({"limit_upload_kib": 100000})).await;
    succeeded(&to_rest);
    assert_eq!(to_rest["stats"]["snapshots_copied"], 2, "{to_rest:#}");
    assert_eq!(to_rest["stats"]["destination_initialized"], true);
    let copied = snapshots_of(&rest, COPY_PASSWORD).await;
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied.iter().all(|s| s["hostname"] == hostname.as_str()));
    assert_eq!(
        chunker_of(&rest, COPY_PASSWORD).await,
        chunker_of(&primary, PASSWORD).await
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_copy_to_is_refused_naming_the_field_and_changes_nothing() {
    let host = start("copy-bad").await;
    let primary = host.scratch().join("primary").display().to_string();
    succeeded(&host.set_repository(&primary, PASSWORD).await);

    // No copy_to: the server says so (409, like a job without a repository).
    let (status, body) = host.post_job("copy", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`copy_to`"), "{message}");

    let jobs = job_count(&host).await;
    let second = host.scratch().join("second").display().to_string();
    let cases = [
        (json!({"url": "-o=x", "password": "pw"}), "`copy_to.url`"),
        (json!({"url": primary, "password": "pw"}), "`copy_to.url`"),
        (
            json!({"url": format!("{primary}/"), "password": "pw"}),
            "`copy_to.url`",
        ),
        (json!({"url": second, "password": ""}), "`copy_to.password`"),
        (
            json!({"url": second, "password": "pw", "env": {"PATH": "/tmp/evil"}}),
            "`copy_to.env.PATH`",
        ),
        (
            json!({"url": "rest:http://u:***@127.0.0.1:1/", "password": "pw"}),
            "`copy_to.url`",
        ),
        (json!({"url": second, "password": "pw", "to": "x"}), "`to`"),
    ];
    for (copy_to, field) in cases {
        let (status, body) = put_repository(
            &host,
            json!({"url": primary, "password": PASSWORD, "copy_to": copy_to}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{copy_to}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{copy_to}: {message}");
        assert!(repository(&host).await.get("copy_to").is_none());
    }
    assert_eq!(job_count(&host).await, jobs, "a refused PUT queues nothing");

    // Set, kept when left out, removed with null.
    let set = json!({"url": primary, "password": PASSWORD, "copy_to": {"url": second, "password": COPY_PASSWORD, "env": {"RESTIC_COMPRESSION": "max"}}});
    assert_eq!(put_repository(&host, set).await.0, StatusCode::NO_CONTENT);
    let kept = json!({"url": primary, "password": PASSWORD});
    assert_eq!(put_repository(&host, kept).await.0, StatusCode::NO_CONTENT);
    // The audit log names the second repository, never its secrets.
    let (_, audit) = host
        .admin
        .get("/api/v1/audit?action=repository.set&limit=2")
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    for entry in entries {
        assert_eq!(
            entry["details"]["copy_to"],
            json!({"url": second, "env_keys": ["RESTIC_COMPRESSION"]}),
            "{entry}"
        );
    }
    assert!(!audit.to_string().contains(COPY_PASSWORD), "{audit}");
    assert_eq!(
        repository(&host).await["copy_to"],
        json!({"url": second, "env_keys": ["RESTIC_COMPRESSION"]})
    );
    let (status, schedule) = host
        .admin
        .post(
            &format!("/api/v1/hosts/{}/schedules", host.id),
            json!({"kind": "copy", "cron": "0 3 * * *", "params": {"tags": ["daily"]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let removed = json!({"url": primary, "password": PASSWORD, "copy_to": null});
    assert_eq!(
        put_repository(&host, removed).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(repository(&host).await.get("copy_to").is_none());
    let (status, _) = host.post_job("copy", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    host.stop().await;
}
