//! Stopping misbehaving processes: shell scripts stand in for a restic that
//! ignores SIGINT, one that leaves a child holding its output pipes, and one
//! that floods output nobody reads. The real restic behaves, so only
//! stand-ins can show that the escalation and the group kill work.
//!
//! One test function, run in order: every script is written before the
//! first one is started, so no exec ever meets a file still open for
//! writing ("text file busy").

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rm_restic::{Command, Event, Finished, Limits, Repository, Restic, ResticVersion, Status};
use tokio::sync::mpsc;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    path
}

/// Runs `bin` as restic; returns the result, the pid and the time taken.
/// With `drain` false, events are never read (the receiver is kept alive).
async fn run(bin: &Path, limits: &Limits, drain: bool) -> (Finished, u32, Duration) {
    let restic = Restic::new(bin, ResticVersion::new(0, 14, 0));
    let repo = Repository::new("/nonexistent", "pw");
    let (events, mut receiver) = mpsc::channel(1);
    let started = Instant::now();
    let pid = if drain {
        let reader = tokio::spawn(async move {
            let mut pid = 0;
            while let Some(event) = receiver.recv().await {
                if let Event::Started { pid: p, .. } = event {
                    pid = p;
                }
            }
            pid
        });
        let finished = restic.run(&repo, &Command::Unlock, limits, &events).await;
        drop(events);
        let pid = reader.await.unwrap_or_else(|e| panic!("join: {e}"));
        let finished = finished.unwrap_or_else(|e| panic!("run: {e}"));
        return (finished, pid, started.elapsed());
    } else {
        0
    };
    let finished = restic
        .run(&repo, &Command::Unlock, limits, &events)
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    let elapsed = started.elapsed();
    // The one event that fit: Started.
    let pid = match receiver.try_recv() {
        Ok(Event::Started { pid: p, .. }) => p,
        other => panic!("expected Started first, got {other:?} (pid {pid})"),
    };
    (finished, pid, elapsed)
}

#[tokio::test]
async fn stubborn_processes_are_stopped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ignores_sigint = script(
        dir.path(),
        "ignores-sigint",
        "trap '' INT\nsleep 300 &\nwait",
    );
    let leaves_a_child = script(
        dir.path(),
        "leaves-a-child",
        "sleep 300 &\necho started\nexit 0",
    );
    let floods = script(dir.path(), "floods", "while :; do echo flood; done");

    // SIGINT is ignored: SIGKILL after the grace period ends the whole group.
    let limits = Limits::new(Duration::from_millis(500)).with_grace(Duration::from_millis(500));
    let (finished, pid, elapsed) = run(&ignores_sigint, &limits, true).await;
    assert_eq!(finished.status, Status::TimedOut, "{finished:?}");
    assert_eq!(finished.error.as_deref(), Some("timed out after 0.5s"));
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    common::assert_group_gone(pid).await;

    // restic exits but something it started keeps the pipes open.
    let limits = Limits::new(Duration::from_secs(30));
    let (finished, pid, elapsed) = run(&leaves_a_child, &limits, true).await;
    assert_eq!(finished.status, Status::Succeeded, "{finished:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    common::assert_group_gone(pid).await;

    // Nobody reads the events: the time limit still works, and the run
    // returns.
    let limits = Limits::new(Duration::from_millis(500)).with_grace(Duration::from_millis(500));
    let (finished, pid, elapsed) = run(&floods, &limits, false).await;
    assert_eq!(finished.status, Status::TimedOut, "{finished:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    common::assert_group_gone(pid).await;
}
