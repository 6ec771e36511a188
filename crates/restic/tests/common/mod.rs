//! Shared support for the integration tests: finding the real restic,
//! generating source trees, running `rclone serve restic`, collecting
//! events, and the end-to-end scenario both repository kinds go through.
//!
//! Source trees and the rclone server come from `rm-testkit`, shared with
//! the end-to-end tests. A missing restic or rclone fails the tests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::Path;
use std::time::{Duration, Instant};

use rm_restic::{
    Command, Event, FailureKind, Finished, Limits, Repository, Restic, ResticError,
    RetentionPolicy, StatsMode, Status,
};
#[allow(unused_imports)] // each test binary uses a different part
pub use rm_testkit::fixtures::{assert_same_tree, make_tree, noise};
#[allow(unused_imports)]
pub use rm_testkit::rclone::{free_port, RcloneServer};
use tokio::sync::mpsc;

pub const PASSWORD: &str = "integration-test-password";

/// Unwraps a result in test code with a readable panic.
pub fn ok<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The restic under test (`RM_TEST_RESTIC`, see `rm_testkit::restic`) with
/// its cache in `cache`. Panics, saying how to install it, when restic is
/// missing: these tests must not pass without it.
pub async fn restic(cache: &Path) -> Restic {
    let restic = ok(
        Restic::detect(rm_testkit::restic::binary()).await,
        "detect restic",
    );
    restic.with_cache_dir(cache)
}

/// A generous limit for ordinary steps.
pub fn limits() -> Limits {
    Limits::new(Duration::from_secs(60)).with_grace(Duration::from_secs(5))
}

/// Runs one command and collects every event.
pub async fn run(
    restic: &Restic,
    repo: &Repository,
    command: &Command,
    limits: &Limits,
) -> (Finished, Vec<Event>) {
    let (events, mut receiver) = mpsc::channel(256);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(event) = receiver.recv().await {
            all.push(event);
        }
        all
    });
    let finished = ok(
        restic.run(repo, command, limits, &events).await,
        command.name(),
    );
    drop(events);
    let events = ok(collector.await, "event collector");
    (finished, events)
}

/// Runs and insists on success, showing restic's words otherwise.
pub async fn run_ok(
    restic: &Restic,
    repo: &Repository,
    command: &Command,
) -> (Finished, Vec<Event>) {
    let (finished, events) = run(restic, repo, command, &limits()).await;
    assert_eq!(
        finished.status,
        Status::Succeeded,
        "{} failed: {:?}\n{}",
        command.name(),
        finished.error,
        log_text(&events)
    );
    (finished, events)
}

/// All log lines, for assertion messages.
pub fn log_text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Line { stream, text } => Some(format!("[{}] {text}", stream.as_str())),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Live (non-zombie) processes whose process group is `group`. Killed
/// processes linger as zombies until their new parent reaps them, which in
/// some containers takes seconds; they are dead all the same.
pub fn live_group_members(group: u32) -> Vec<u32> {
    rm_testkit::all_pids()
        .into_iter()
        .filter(|pid| rm_testkit::ProcStat::of(*pid).is_some_and(|s| s.alive() && s.pgrp == group))
        .collect()
}

/// Waits briefly for every process of `group` to be gone.
pub async fn assert_group_gone(group: u32) {
    let started = Instant::now();
    loop {
        let alive = live_group_members(group);
        if alive.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "process group {group} still has {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn line_texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Line { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn backup_of(path: &Path) -> Command {
    Command::Backup {
        paths: vec![path.display().to_string()],
        excludes: vec!["*.skipme".into()],
        tags: vec!["it".into()],
        host: None,
        options: Default::default(),
    }
}

/// The life of a repository, start to end, as the agent will drive it.
pub async fn scenario(restic: &Restic, repo: &Repository, scratch: &Path) {
    let limits = limits();

    // Nothing there yet.
    assert!(!ok(
        restic.repository_exists(repo, &limits).await,
        "exists before"
    ));
    run_ok(restic, repo, &Command::Init).await;
    assert!(ok(
        restic.repository_exists(repo, &limits).await,
        "exists after"
    ));

    // A second plain init fails in a way callers can treat as "done".
    let (again, _) = run(restic, repo, &Command::Init, &limits).await;
    assert_eq!(again.status, Status::Failed);
    assert_eq!(
        again.kind,
        Some(FailureKind::AlreadyInitialized),
        "{:?}",
        again.error
    );

    // First backup.
    let src = scratch.join("src");
    make_tree(&src);
    ok(std::fs::write(src.join("ignored.skipme"), b"x"), "write");
    let (first, events) = run_ok(restic, repo, &backup_of(&src)).await;
    let first_id = first.snapshot_id.clone().unwrap_or_default();
    assert!(first_id.len() >= 8, "snapshot id {first_id:?}");
    assert_eq!(
        first.stats["files_new"],
        serde_json::json!(5),
        "{}",
        first.stats
    );
    let lines = line_texts(&events);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("snapshot {} saved: 5 new files", &first_id[..8]))),
        "{lines:?}"
    );
    assert!(matches!(events.first(), Some(Event::Started { .. })));
    // 0.14 prints a status line as it starts; later releases only on their
    // ticker (RESTIC_PROGRESS_FPS=1), which a sub-second backup never reaches.
    let saw_progress = events.iter().any(|e| matches!(e, Event::Progress(_)));
    let took = first.stats["total_duration"].as_f64().unwrap_or(0.0);
    if restic.version() < rm_restic::ResticVersion::new(0, 15, 0) || took >= 1.5 {
        assert!(
            saw_progress,
            "restic {} took {took}s and printed no status line",
            restic.version()
        );
    }

    // It is listed with the right paths and tags.
    let snapshots = ok(restic.snapshots(repo, None, &limits).await, "snapshots");
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].id.starts_with(&first_id));
    assert_eq!(snapshots[0].paths, [src.display().to_string()]);
    assert_eq!(snapshots[0].tags, ["it"]);
    let host = snapshots[0].hostname.clone();
    assert_eq!(
        ok(
            restic.snapshots(repo, Some(&host), &limits).await,
            "by host"
        )
        .len(),
        1
    );
    assert!(ok(
        restic.snapshots(repo, Some("no-such-host"), &limits).await,
        "other host"
    )
    .is_empty());

    // Statistics in both modes.
    let restore_size = ok(
        restic.stats(repo, StatsMode::RestoreSize, &limits).await,
        "stats",
    );
    assert!(restore_size.total_size >= 3_000_000, "{restore_size:?}");
    assert_eq!(restore_size.snapshots_count, 1);
    assert!(restore_size.total_file_count >= 5, "{restore_size:?}");
    let raw = ok(
        restic.stats(repo, StatsMode::RawData, &limits).await,
        "raw stats",
    );
    assert!(raw.total_blob_count > 0 && raw.total_size > 0, "{raw:?}");

    // Browsing: direct children only, non-ASCII names intact.
    let full_id = snapshots[0].id.clone();
    let names = |nodes: Vec<rm_restic::Node>| nodes.into_iter().map(|n| n.name).collect::<Vec<_>>();
    let top = ok(
        restic
            .ls_dir(repo, &full_id, &src.display().to_string(), &limits)
            .await,
        "ls src",
    );
    assert_eq!(names(top), ["big.bin", "café-ü.txt", "empty", "nested"]);
    let nested = ok(
        restic
            .ls_dir(
                repo,
                &first_id,
                &format!("{}/nested/", src.display()),
                &limits,
            )
            .await,
        "ls nested",
    );
    assert_eq!(names(nested), ["a.txt", "deeper"]);
    match restic.ls_dir(repo, &full_id, "/no/such/dir", &limits).await {
        Err(ResticError::PathNotFound { .. }) => {}
        other => panic!("expected PathNotFound, got {other:?}"),
    }

    // Second backup after a change.
    ok(
        std::fs::write(src.join("nested/a.txt"), b"changed\n"),
        "write",
    );
    let (second, _) = run_ok(restic, repo, &backup_of(&src)).await;
    assert_ne!(second.snapshot_id, first.snapshot_id);
    assert_eq!(
        second.stats["files_changed"],
        serde_json::json!(1),
        "{}",
        second.stats
    );

    // Retention, then prune as its own command.
    let forget = Command::Forget {
        policy: RetentionPolicy::keep_last(1),
        host: None,
    };
    let (forgot, _) = run_ok(restic, repo, &forget).await;
    assert_eq!(forgot.stats, serde_json::json!({"removed": 1, "kept": 1}));
    run_ok(restic, repo, &Command::Prune).await;
    let snapshots = ok(
        restic.snapshots(repo, None, &limits).await,
        "snapshots after forget",
    );
    assert_eq!(snapshots.len(), 1);
    let last_id = snapshots[0].id.clone();
    assert!(last_id.starts_with(second.snapshot_id.as_deref().unwrap_or("?")));

    // A healthy repository.
    let (checked, _) = run_ok(
        restic,
        repo,
        &Command::Check {
            read_data_subset: Some("100%".into()),
        },
    )
    .await;
    assert_eq!(checked.stats["errors"], serde_json::json!(false));

    // Restore a subfolder elsewhere, byte for byte.
    let target = scratch.join("restored");
    let restore = Command::Restore {
        snapshot_id: last_id.clone(),
        include: vec![format!("{}/nested", src.display())],
        target: target.display().to_string(),
        verify: false,
    };
    run_ok(restic, repo, &restore).await;
    let restored_src = target.join(src.strip_prefix("/").unwrap_or(&src));
    assert_same_tree(&src.join("nested"), &restored_src.join("nested"));
    assert!(
        !restored_src.join("big.bin").exists(),
        "include restored too much"
    );

    // No lock is left behind.
    assert!(!ok(restic.locks_present(repo, &limits).await, "locks"));
    run_ok(restic, repo, &Command::Unlock).await;

    // The wrong password is reported as such.
    let wrong = Repository {
        password: "not-the-password".into(),
        ..repo.clone()
    };
    let (failed, _) = run(restic, &wrong, &Command::Snapshots { host: None }, &limits).await;
    assert_eq!(
        (failed.status, failed.kind),
        (Status::Failed, Some(FailureKind::WrongPassword))
    );
    assert!(
        failed
            .error
            .clone()
            .unwrap_or_default()
            .contains("wrong password"),
        "{:?}",
        failed.error
    );
    match restic.snapshots(&wrong, None, &limits).await {
        Err(e @ ResticError::Command { .. }) => {
            assert_eq!(e.failure_kind(), Some(FailureKind::WrongPassword));
            assert!(e.to_string().contains("wrong password"), "{e}");
        }
        other => panic!("expected a Command error, got {other:?}"),
    }
    match restic.repository_exists(&wrong, &limits).await {
        Err(e) => assert_eq!(e.failure_kind(), Some(FailureKind::WrongPassword)),
        Ok(exists) => panic!("a wrong password must not read as exists={exists}"),
    }
}
