//! `restic-manager quickstart`, as a new user runs it: one command gives a
//! server, this machine enrolled with its agent running, a local repository
//! and a first backup; running it again carries on with the same setup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use rm_testkit::fixtures::make_tree;
use rm_testkit::{wait_until, Api};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

/// Starts quickstart and reads its output up to the end of its summary.
async fn quickstart(data: &std::path::Path, paths: &[&str]) -> (Child, String, String) {
    let mut command = Command::new(BIN);
    command
        .args(["quickstart", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if !paths.is_empty() {
        command.arg("--paths").args(paths);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    // Up to the end of the summary that follows "running at".
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        let mut url = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(running) = line.strip_prefix("restic-manager is running at ") {
                url = Some(running.trim().to_owned());
            }
            if line.starts_with("Stop with Ctrl-C") {
                if let Some(url) = url {
                    return url;
                }
            }
        }
        panic!("quickstart exited early:\n{printed}");
    })
    .await
    .unwrap();
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url, printed)
}

fn printed_value(printed: &str, label: &str) -> Option<String> {
    printed
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_owned())
}

async fn stop(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "quickstart exited with {status}");
}

#[tokio::test]
async fn quickstart_sets_up_everything_and_backs_up_the_given_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("documents");
    make_tree(&src);
    let (mut child, url, printed) = quickstart(&data, &[src.to_str().unwrap()]).await;

    let admin_password = printed_value(&printed, "password:").expect("admin password printed");
    let repo_password =
        printed_value(&printed, "repository password:").expect("repository password printed");
    assert!(printed.contains("KEEP THIS PASSWORD"), "{printed}");

    let admin = Api::new(&url, None)
        .login("admin", &admin_password)
        .await
        .unwrap();
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    let host = hosts[0].id.clone();
    wait_until(
        Duration::from_secs(120),
        "the first backup to succeed",
        || async {
            let (_, jobs) = admin
                .get(&format!("/api/v1/jobs?host_id={host}&status=succeeded"))
                .await
                .unwrap();
            jobs.as_array()
                .unwrap()
                .iter()
                .any(|j| j["kind"] == "backup")
        },
    )
    .await
    .unwrap();
    // The snapshot list is refreshed right after the job (restic 0.14
    // names the new snapshot by its short id only).
    wait_until(Duration::from_secs(60), "the snapshot listed", || async {
        let (_, snapshots) = admin
            .get(&format!("/api/v1/hosts/{host}/snapshots"))
            .await
            .unwrap();
        snapshots.as_array().is_some_and(|l| l.len() == 1)
    })
    .await
    .unwrap();

    // It ends protected: the default policy gives this machine a daily
    // backup, retention and a weekly check, and the first backup counts.
    let web = printed.find("web UI:").expect("the web UI is printed");
    let api = printed.find("JSON API:").expect("the API is printed");
    assert!(web < api, "the web UI comes first:\n{printed}");
    let (_, policies) = admin.get("/api/v1/policies").await.unwrap();
    let policy = &policies.as_array().unwrap()[0];
    assert_eq!(policy["name"], "quickstart", "{policies}");
    assert_eq!(policy["hosts"], 1, "{policies}");
    let kinds: Vec<&str> = policy["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["backup", "forget", "check"]);
    let (_, schedules) = admin
        .get(&format!("/api/v1/hosts/{host}/schedules"))
        .await
        .unwrap();
    let schedules = schedules.as_array().unwrap();
    assert_eq!(schedules.len(), 3, "{schedules:?}");
    assert!(schedules.iter().all(|s| s["source"] == "policy"));
    let kinds: Vec<&str> = schedules
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["backup", "forget", "check"],
        "in the policy's order"
    );
    assert_eq!(
        schedules[0]["params"]["paths"][0].as_str().unwrap(),
        src.to_str().unwrap()
    );
    let (_, view) = admin.get(&format!("/api/v1/hosts/{host}")).await.unwrap();
    assert_eq!(view["policy_name"], "quickstart", "{view}");
    assert_eq!(view["protected"], true, "{view}");
    assert_eq!(view["unconfigured"], false, "{view}");

    // The repository really is where it said, with the password it printed.
    let out = Command::new("restic")
        .args(["snapshots", "--json"])
        .env("RESTIC_REPOSITORY", data.join("repository"))
        .env("RESTIC_PASSWORD", &repo_password)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    stop(&mut child).await;

    // A second run reuses the same host, repository and admin, printing no
    // new secrets.
    let (mut child, url, printed) = quickstart(&data, &[]).await;
    assert!(printed_value(&printed, "password:").is_none(), "{printed}");
    assert!(
        printed_value(&printed, "repository password:").is_none(),
        "{printed}"
    );
    let admin = Api::new(&url, None)
        .login("admin", &admin_password)
        .await
        .unwrap();
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].id, host);
    wait_until(
        Duration::from_secs(20),
        "the agent to reconnect",
        || async { admin.host(&host).await.unwrap().online },
    )
    .await
    .unwrap();
    // The sealed repository settings still open with the kept key.
    let (status, repository) = admin
        .get(&format!("/api/v1/hosts/{host}/repository"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{repository}");
    stop(&mut child).await;

    // Without its key file a run refuses (the settings are sealed with
    // it) instead of making a new key, and says where the key belongs.
    let key = data.join("secret.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(["quickstart", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    assert!(stderr.contains("reset-sealed-secrets"), "{stderr}");
    assert!(!key.exists());
    std::fs::write(&key, saved).unwrap();
}
