//! The repository password and URL never sit in restic's environment or
//! argv: the real restic reads them from pipes and still does its work, and
//! the program that runs is found on our own `PATH`, never on one the
//! repository's variables carry.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{limits, make_tree, ok, restic, PASSWORD};
use rm_restic::{Command, Event, Limits, Repository, Restic, ResticError, ResticVersion};
use tokio::sync::mpsc;

/// What `/proc/<pid>/{environ,cmdline}` of a running restic held, and
/// where its descriptor 3 pointed.
struct Seen {
    environ: String,
    cmdline: String,
    fd3: String,
    /// Where descriptors 5 and 6 (a copy's source password and URL) pointed.
    fd5_6: [String; 2],
}

/// Runs `command`, looking at the process as soon as it started.
async fn run_and_look(restic: &Restic, repo: &Repository, command: Command) -> Seen {
    let (events, mut receiver) = mpsc::channel(256);
    let runner = {
        let restic = restic.clone();
        let repo = repo.clone();
        tokio::spawn(async move { restic.run(&repo, &command, &limits(), &events).await })
    };
    let mut seen = None;
    while let Some(event) = receiver.recv().await {
        if let Event::Started { pid, .. } = event {
            // restic derives the key (scrypt) before anything else, so it
            // is still running here.
            let read = |what: &str| {
                std::fs::read(format!("/proc/{pid}/{what}"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
                    .unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e}"))
            };
            let fd = |n: u32| {
                std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            };
            seen = Some(Seen {
                environ: read("environ"),
                cmdline: read("cmdline"),
                fd3: fd(3),
                fd5_6: [fd(5), fd(6)],
            });
        }
    }
    let finished = ok(ok(runner.await, "join"), "run");
    assert!(finished.succeeded(), "{finished:?}");
    seen.unwrap_or_else(|| panic!("no Started event"))
}

#[tokio::test]
async fn restic_gets_the_password_and_url_on_pipes_and_works() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let restic = restic(&dir.path().join("cache")).await;
    let url = dir.path().join("repo").display().to_string();
    let repo = Repository::new(&url, PASSWORD);
    let source = dir.path().join("source");
    make_tree(&source);

    let looked = [
        run_and_look(&restic, &repo, Command::Init).await,
        run_and_look(
            &restic,
            &repo,
            Command::Backup {
                paths: vec![source.display().to_string()],
                excludes: vec![],
                tags: vec![],
                host: None,
                options: Default::default(),
            },
        )
        .await,
        run_and_look(&restic, &repo, Command::Snapshots { host: None }).await,
    ];
    for seen in &looked {
        assert!(!seen.environ.contains(PASSWORD), "{}", seen.environ);
        assert!(
            !seen.environ.contains("RESTIC_PASSWORD"),
            "{}",
            seen.environ
        );
        assert!(
            !seen.environ.contains("RESTIC_REPOSITORY"),
            "{}",
            seen.environ
        );
        assert!(!seen.cmdline.contains(PASSWORD), "{}", seen.cmdline);
        assert!(!seen.cmdline.contains(&url), "{}", seen.cmdline);
        assert!(
            seen.cmdline.contains("--password-file=/dev/fd/3"),
            "{}",
            seen.cmdline
        );
        assert!(seen.fd3.starts_with("pipe:"), "fd 3 is {}", seen.fd3);
    }
    // The work was done: one snapshot, and the typed helper still reads it.
    let snapshots = ok(restic.snapshots(&repo, None, &limits()).await, "snapshots");
    assert_eq!(snapshots.len(), 1);
    // A wrong password is still told apart (it came through the pipe).
    let wrong = Repository::new(&url, "not-the-password");
    let err = restic
        .snapshots(&wrong, None, &limits())
        .await
        .err()
        .unwrap_or_else(|| panic!("a wrong password worked"));
    assert_eq!(
        err.failure_kind(),
        Some(rm_restic::FailureKind::WrongPassword),
        "{err}"
    );
}

#[tokio::test]
async fn a_copy_gets_both_repositories_on_pipes_and_the_destinations_env_wins() {
    const SOURCE_PASSWORD: &str = "the-source-password";
    let dir = ok(tempfile::tempdir(), "tempdir");
    let restic = restic(&dir.path().join("cache")).await;
    let source_url = dir.path().join("source-repo").display().to_string();
    let target_url = dir.path().join("target-repo").display().to_string();
    // Variables local repositories ignore, to see which value restic gets.
    let source = Repository::new(&source_url, SOURCE_PASSWORD)
        .with_env("HTTP_PROXY", "http://source.invalid:1")
        .with_env("NO_PROXY", "from-source");
    let target =
        Repository::new(&target_url, PASSWORD).with_env("HTTP_PROXY", "http://target.invalid:1");
    let tree = dir.path().join("tree");
    make_tree(&tree);
    run_and_look(&restic, &source, Command::Init).await;
    run_and_look(
        &restic,
        &source,
        Command::Backup {
            paths: vec![tree.display().to_string()],
            excludes: vec![],
            tags: vec![],
            host: None,
            options: Default::default(),
        },
    )
    .await;
    let looked = [
        run_and_look(
            &restic,
            &target,
            Command::InitFrom {
                from: source.clone(),
            },
        )
        .await,
        run_and_look(
            &restic,
            &target,
            Command::Copy {
                from: source.clone(),
                host: None,
                tags: vec![],
                snapshot_ids: vec![],
            },
        )
        .await,
    ];
    for seen in &looked {
        for secret in [SOURCE_PASSWORD, PASSWORD, &source_url, &target_url] {
            assert!(!seen.environ.contains(secret), "{}", seen.environ);
            assert!(!seen.cmdline.contains(secret), "{}", seen.cmdline);
        }
        assert!(!seen.environ.contains("RESTIC_FROM_"), "{}", seen.environ);
        assert!(
            seen.cmdline.contains("--from-password-file=/dev/fd/5")
                && seen.cmdline.contains("--from-repository-file=/dev/fd/6"),
            "{}",
            seen.cmdline
        );
        assert!(
            seen.fd5_6.iter().all(|fd| fd.starts_with("pipe:")),
            "{:?}",
            seen.fd5_6
        );
        assert!(
            seen.environ.contains("HTTP_PROXY=http://target.invalid:1")
                && seen.environ.contains("NO_PROXY=from-source")
                && !seen.environ.contains("source.invalid"),
            "{}",
            seen.environ
        );
    }
    let copied = ok(
        restic.snapshots(&target, None, &limits()).await,
        "snapshots",
    );
    assert_eq!(copied.len(), 1);
}

#[tokio::test]
async fn a_path_in_the_repository_env_never_picks_the_program() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    // A "restic" where only a pushed PATH would find it.
    let evil = dir.path().join("evil-bin");
    ok(std::fs::create_dir(&evil), "mkdir");
    let marker = dir.path().join("marker");
    let fake = evil.join("restic-envlist-test");
    ok(
        std::fs::write(&fake, format!("#!/bin/sh\ntouch {}\n", marker.display())),
        "write",
    );
    ok(
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)),
        "chmod",
    );
    let repo = Repository::new("/nonexistent", "pw").with_env("PATH", evil.display().to_string());
    let restic = Restic::new("restic-envlist-test", ResticVersion::new(0, 14, 0));
    let (events, _receiver) = mpsc::channel(8);
    let result = restic
        .run(
            &repo,
            &Command::Snapshots { host: None },
            &Limits::new(Duration::from_secs(10)),
            &events,
        )
        .await;
    assert!(
        matches!(result, Err(ResticError::NotFound { .. })),
        "{result:?}"
    );
    assert!(!marker.exists(), "the program on the pushed PATH ran");
    // On our own PATH it is found, by absolute path.
    assert!(rm_restic::resolve_bin(std::path::Path::new("sh")).is_ok_and(|p| p.is_absolute()));
}
