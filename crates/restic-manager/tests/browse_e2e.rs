//! Browsing a snapshot folder by folder, as the restore wizard does: each
//! folder is one `tree.list` call to the real agent (real restic), cached
//! per session; then a file picked from the tree is restored and matches
//! the original.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::make_tree;
use rm_testkit::{wait_until, Api};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

async fn tree(admin: &Api, host: &str, snapshot: &str, path: &str) -> (u16, Value) {
    let (status, body) = admin
        .get(&format!(
            "/api/v1/hosts/{host}/snapshots/{snapshot}/tree?path={}",
            rm_testkit::http::query_value(path)
        ))
        .await
        .unwrap();
    (status.as_u16(), body)
}

fn names(listing: &Value) -> Vec<String> {
    let mut names: Vec<String> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_tree_is_browsed_one_folder_at_a_time_and_a_picked_file_restores() {
    let host = Host::start(Path::new(BIN), "browse", &rm_testkit::restic::binary(), &[]).await;
    succeeded(&host.set_local_repository("browse-password").await);
    let scratch = host.scratch();
    let src = scratch.join("src");
    make_tree(&src);
    succeeded(
        &host
            .run("backup", json!({"paths": [src.display().to_string()]}))
            .await,
    );
    let snapshots = host.wait_snapshots(1).await;
    let snapshot = snapshots[0]["short_id"].as_str().unwrap().to_owned();

    // Walk down from the root, one level per call.
    let mut path = String::from("/");
    for component in src.strip_prefix("/").unwrap().components() {
        let (status, listing) = tree(&host.admin, &host.id, &snapshot, &path).await;
        assert_eq!(status, 200, "{path}: {listing}");
        let name = component.as_os_str().to_str().unwrap();
        let entry = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not under {path}: {listing}"));
        assert_eq!(entry["type"], "dir");
        path = entry["path"].as_str().unwrap().to_owned();
    }
    let (status, listing) = tree(&host.admin, &host.id, &snapshot, &path).await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&listing),
        ["big.bin", "café-ü.txt", "empty", "nested"]
    );
    let big = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "big.bin")
        .unwrap();
    assert_eq!(big["type"], "file");
    assert_eq!(big["size"], 3_000_000);
    assert!(big["mtime"].is_string());
    let (_, nested) = tree(&host.admin, &host.id, &snapshot, &format!("{path}/nested")).await;
    assert_eq!(names(&nested), ["a.txt", "deeper"], "only direct children");

    // Bad input is refused before any agent is asked.
    assert_eq!(tree(&host.admin, &host.id, "not-hex!", "/").await.0, 400);
    assert_eq!(
        tree(&host.admin, &host.id, &snapshot, "relative").await.0,
        400
    );
    // A path that is not in the snapshot: the agent's error, not cached.
    let (status, body) = tree(&host.admin, &host.id, &snapshot, "/no/such/folder").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/folder"),
        "{body}"
    );

    // Restore the file picked in the tree, and compare it.
    let target = scratch.join("restored");
    let file = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "café-ü.txt")
        .unwrap();
    succeeded(
        &host
            .run(
                "restore",
                json!({"snapshot_id": snapshot, "include": [file["path"]], "target": target.display().to_string()}),
            )
            .await,
    );
    let restored = target
        .join(src.strip_prefix("/").unwrap())
        .join("café-ü.txt");
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(src.join("café-ü.txt")).unwrap()
    );

    // With the agent gone, what this session already saw still comes from
    // the cache; anything new needs the agent.
    host.agent
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "offline", || async {
        !host.server.host_online(&host.id).await
    })
    .await
    .unwrap();
    assert_eq!(
        tree(&host.admin, &host.id, &snapshot, &path).await.0,
        200,
        "cached listing"
    );
    let (status, body) = tree(&host.admin, &host.id, &snapshot, &format!("{path}/empty")).await;
    assert_eq!(status, 409, "{body}");
    // Another session has its own cache.
    let other = host.server.admin().await.unwrap();
    assert_eq!(tree(&other, &host.id, &snapshot, &path).await.0, 409);
}
