//! The real restic against a local folder repository: the full scenario,
//! flag-looking paths, cancellation, and the errors that come before any
//! restic runs.

mod common;

use std::time::{Duration, Instant};

use common::{ok, run, run_ok, PASSWORD};
use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use rm_restic::{Command, Event, Limits, Repository, Restic, ResticError, ResticVersion, Status};
use tokio::sync::mpsc;

fn local_repo(dir: &std::path::Path) -> Repository {
    Repository::new(dir.join("repo").display().to_string(), PASSWORD)
}

#[tokio::test]
async fn local_repository_scenario() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let repo = local_repo(scratch.path());
    common::scenario(&restic, &repo, scratch.path()).await;
}

#[tokio::test]
async fn backup_paths_that_look_like_flags_are_paths() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let work = scratch.path().join("work");
    for dir in ["-x", "--help"] {
        ok(std::fs::create_dir_all(work.join(dir)), "mkdir");
        ok(
            std::fs::write(work.join(dir).join("file.txt"), dir),
            "write",
        );
    }
    let restic = restic.with_working_dir(&work);
    let repo = local_repo(scratch.path());
    run_ok(&restic, &repo, &Command::Init).await;
    let backup = Command::Backup {
        paths: vec!["-x".into(), "--help".into()],
        excludes: vec!["--one-file-system".into()],
        tags: vec!["-t".into()],
        host: Some("-H".into()),
        options: Default::default(),
    };
    let (finished, _) = run_ok(&restic, &repo, &backup).await;
    assert!(finished.snapshot_id.is_some());
    let snapshots = ok(
        restic.snapshots(&repo, Some("-H"), &common::limits()).await,
        "snapshots",
    );
    assert_eq!(snapshots.len(), 1);
    let mut paths = snapshots[0].paths.clone();
    paths.sort();
    let expected = |d: &str| work.join(d).display().to_string();
    assert_eq!(paths, [expected("--help"), expected("-x")]);
    assert_eq!(snapshots[0].tags, ["-t"]);
    assert_eq!(snapshots[0].hostname, "-H");
}

#[tokio::test]
async fn cancelling_a_backup_stops_its_process_group() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let repo = local_repo(scratch.path());
    run_ok(&restic, &repo, &Command::Init).await;
    // A sparse file: seconds of reading for restic, no disk for us.
    let src = scratch.path().join("sparse");
    ok(std::fs::create_dir_all(&src), "mkdir");
    let file = ok(std::fs::File::create(src.join("zeros")), "create");
    ok(file.set_len(4 << 30), "set_len");

    let limits = Limits::new(Duration::from_secs(60)).with_grace(Duration::from_secs(5));
    let cancel = limits.cancel.clone();
    let (events, mut receiver) = mpsc::channel(64);
    let backup = Command::Backup {
        paths: vec![src.display().to_string()],
        excludes: vec![],
        tags: vec![],
        host: None,
        options: Default::default(),
    };
    let started = Instant::now();
    let task = {
        let (restic, repo) = (restic.clone(), repo.clone());
        tokio::spawn(async move { restic.run(&repo, &backup, &limits, &events).await })
    };
    let mut pid = None;
    while let Some(event) = receiver.recv().await {
        match event {
            Event::Started { pid: p, .. } => pid = Some(p),
            Event::Progress(_) | Event::Line { .. } => {
                cancel.cancel();
            }
            _ => {}
        }
    }
    let finished = ok(ok(task.await, "join"), "run");
    assert_eq!(finished.status, Status::Cancelled, "{finished:?}");
    assert_eq!(finished.error.as_deref(), Some("cancelled"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let pid = pid.unwrap_or_else(|| panic!("no Started event"));
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    assert_eq!(
        killpg(group, None),
        Err(Errno::ESRCH),
        "restic's process group is gone"
    );
    // SIGINT (not SIGKILL) let restic remove its lock.
    assert!(!ok(
        restic.locks_present(&repo, &common::limits()).await,
        "locks"
    ));
}

#[tokio::test]
async fn a_missing_binary_is_not_found() {
    let bin = "/nonexistent/dir/restic";
    assert!(matches!(
        Restic::detect(bin).await,
        Err(ResticError::NotFound { .. })
    ));
    let restic = Restic::new(bin, ResticVersion::new(0, 14, 0));
    let (events, _receiver) = mpsc::channel(8);
    let result = restic
        .run(
            &Repository::new("/tmp/x", "pw"),
            &Command::Init,
            &common::limits(),
            &events,
        )
        .await;
    match result {
        Err(e @ ResticError::NotFound { .. }) => assert!(e.to_string().contains(bin), "{e}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_arguments_and_early_cancels_never_start_restic() {
    // A binary that does not exist proves nothing was started.
    let restic = Restic::new("/nonexistent/dir/restic", ResticVersion::new(0, 14, 0));
    let repo = Repository::new("/tmp/x", "pw");
    let (events, _receiver) = mpsc::channel(8);
    let ls = Command::Ls {
        snapshot_id: "--help".into(),
        path: "/".into(),
    };
    match restic.run(&repo, &ls, &common::limits(), &events).await {
        Err(ResticError::InvalidArgument { field, .. }) => assert_eq!(field, "snapshot_id"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match restic.ls_dir(&repo, "latest", "/", &common::limits()).await {
        Err(ResticError::InvalidArgument { field, .. }) => assert_eq!(field, "snapshot_id"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let limits = common::limits();
    limits.cancel.cancel();
    let (finished, events) = run(&restic, &repo, &Command::Init, &limits).await;
    assert_eq!(finished.status, Status::Cancelled);
    assert!(events.is_empty());
}

#[tokio::test]
async fn restore_includes_name_files_literally() {
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let repo = local_repo(scratch.path());
    let src = scratch.path().join("src");
    ok(std::fs::create_dir_all(&src), "mkdir");
    ok(std::fs::write(src.join("a[1].txt"), "bracketed"), "write");
    ok(std::fs::write(src.join("a1.txt"), "plain"), "write");
    run_ok(&restic, &repo, &Command::Init).await;
    let (backup, _) = run_ok(
        &restic,
        &repo,
        &Command::Backup {
            paths: vec![src.display().to_string()],
            excludes: vec![],
            tags: vec![],
            host: None,
            options: Default::default(),
        },
    )
    .await;
    let snapshot = backup.snapshot_id.unwrap_or_default();
    let target = scratch.path().join("out");
    run_ok(
        &restic,
        &repo,
        &Command::Restore {
            snapshot_id: snapshot,
            include: vec![src.join("a[1].txt").display().to_string()],
            target: target.display().to_string(),
            verify: false,
        },
    )
    .await;
    let restored = target.join(src.strip_prefix("/").unwrap_or(&src));
    assert_eq!(
        ok(std::fs::read_to_string(restored.join("a[1].txt")), "read"),
        "bracketed"
    );
    assert!(
        !restored.join("a1.txt").exists(),
        "`[1]` was read as a pattern"
    );
}

#[tokio::test]
async fn dump_streams_a_file_a_folder_as_tar_and_stops_when_dropped() {
    use tokio::io::AsyncReadExt;
    let scratch = ok(tempfile::tempdir(), "tempdir");
    let restic = common::restic(&scratch.path().join("cache")).await;
    let repo = local_repo(scratch.path());
    let src = scratch.path().join("src");
    ok(std::fs::create_dir_all(src.join("sub")), "mkdir");
    let big: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ok(std::fs::write(src.join("big.bin"), &big), "write");
    ok(
        std::fs::write(src.join("sub").join("-x"), b"flag-like"),
        "write",
    );
    run_ok(&restic, &repo, &Command::Init).await;
    let backup = Command::Backup {
        paths: vec![src.display().to_string()],
        excludes: vec![],
        tags: vec![],
        host: None,
        options: Default::default(),
    };
    let (finished, _) = run_ok(&restic, &repo, &backup).await;
    let snapshot = finished
        .snapshot_id
        .unwrap_or_else(|| panic!("no snapshot id"));
    let limits = common::limits();
    let path = |p: &str| format!("{}/{p}", src.display());

    let node = ok(
        restic
            .node(&repo, &snapshot, &path("big.bin"), &limits)
            .await,
        "node",
    );
    assert_eq!(node.node_type, rm_restic::NodeType::File);
    assert_eq!(node.size, Some(big.len() as u64));
    let root = ok(restic.node(&repo, &snapshot, "/", &limits).await, "root");
    assert_eq!(root.node_type, rm_restic::NodeType::Dir);
    match restic.node(&repo, &snapshot, &path("nope"), &limits).await {
        Err(ResticError::PathNotFound { .. }) => {}
        other => panic!("expected PathNotFound, got {other:?}"),
    }

    // Everything restic printed, and how it ended.
    let dump_all = |name: &str| {
        let dump = restic.dump(
            &repo,
            &snapshot,
            &path(name),
            rm_restic::Archive::Tar,
            &limits,
        );
        async move {
            let mut dump = ok(dump, "dump");
            let mut bytes = Vec::new();
            ok(dump.read_to_end(&mut bytes).await, "read");
            (bytes, dump.finish().await)
        }
    };
    let (bytes, end) = dump_all("big.bin").await;
    ok(end, "finish");
    assert!(bytes == big, "the file came back changed");
    let (tar, end) = dump_all("sub").await;
    ok(end, "finish");
    assert!(tar.len() % 512 == 0 && tar.windows(9).any(|w| w == b"flag-like"));
    match dump_all("nope").await.1 {
        Err(ResticError::PathNotFound { path: missing, .. }) => assert_eq!(missing, path("nope")),
        other => panic!("expected PathNotFound, got {other:?}"),
    }

    // Read a little, then walk away: restic's whole group is gone.
    let mut dump = ok(
        restic.dump(
            &repo,
            &snapshot,
            &path("big.bin"),
            rm_restic::Archive::Tar,
            &limits,
        ),
        "dump",
    );
    let mut first = [0u8; 1024];
    ok(dump.read_exact(&mut first).await, "read");
    let group = dump.pid();
    drop(dump);
    common::assert_group_gone(group).await;
}
