//! The real restic against REST repositories: one served by
//! `rclone serve restic` (the full scenario), one that refuses connections,
//! and one that accepts connections but never answers (the time limit).

mod common;

use std::time::{Duration, Instant};

use common::{ok, run, PASSWORD};
use rm_restic::{Command, FailureKind, Limits, Repository, Status};

#[tokio::test]
async fn rest_repository_scenario() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let served = scratch.path().join("served");
    ok(std::fs::create_dir_all(&served), "mkdir");
    let server = common::RcloneServer::start(&served);
    let repo = Repository::new(format!("{}fleet/host1/", server.url), PASSWORD);
    common::scenario(&restic, &repo, scratch.path()).await;
    assert!(served.join("fleet/host1/config").is_file());
}

#[tokio::test]
async fn an_unreachable_rest_server_fails_within_the_limit() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let repo = Repository::new(
        format!("rest:http://127.0.0.1:{}/", common::free_port()),
        PASSWORD,
    );
    let limits = Limits::new(Duration::from_secs(20)).with_grace(Duration::from_secs(2));
    let started = Instant::now();
    let (finished, _) = run(&restic, &repo, &Command::Snapshots { host: None }, &limits).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(20 + 2 + 5),
        "took {elapsed:?}"
    );
    match finished.status {
        // 0.14 gives up at once; 0.17+ retries until our limit.
        Status::Failed => assert_eq!(
            finished.kind,
            Some(FailureKind::Unreachable),
            "{finished:?}"
        ),
        Status::TimedOut => {}
        other => panic!("expected Failed or TimedOut, got {other:?}: {finished:?}"),
    }
    // Unreachable is not "no repository": callers must not try to init.
    assert!(restic.repository_exists(&repo, &limits).await.is_err());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    // Accepts connections and holds them open without a byte of reply.
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await, "bind");
    let port = ok(listener.local_addr(), "addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let repo = Repository::new(format!("rest:http://127.0.0.1:{port}/"), PASSWORD);
    let limits = Limits::new(Duration::from_secs(2)).with_grace(Duration::from_secs(2));
    let started = Instant::now();
    let (finished, _) = run(&restic, &repo, &Command::Snapshots { host: None }, &limits).await;
    let elapsed = started.elapsed();
    holder.abort();
    assert_eq!(finished.status, Status::TimedOut, "{finished:?}");
    assert_eq!(finished.error.as_deref(), Some("timed out after 2s"));
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2 + 2 + 3), "took {elapsed:?}");
}
