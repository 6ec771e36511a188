//! What the child process gets: environment, arguments, the secrets on
//! pipes, stdin. A shell
//! script stands in for restic and reports what it received, because the
//! real restic would not tell.
//!
//! This binary holds a single test: it sets variables in its own
//! environment (as an operator's shell would), which is only safe while no
//! other test thread runs.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rm_restic::{Command, Event, Limits, Repository, Restic, ResticVersion, Status, Stream};
use tokio::sync::mpsc;

const SCRIPT: &str = r#"#!/bin/sh
echo "args: $*"
env | grep -E '^(RESTIC_|AWS_ACCESS_KEY_ID=)' | sort
echo "fd 3: $(cat /dev/fd/3)"
echo "fd 4: $(cat /dev/fd/4)"
echo "fd 3 again: $(cat /dev/fd/3)"
echo "stdin: $(readlink /proc/self/fd/0)"
echo "cwd: $(pwd)"
echo "pgid-is-pid: $(test "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" && echo yes || echo no)"
echo "some warning" >&2
exit 0
"#;

#[tokio::test]
async fn the_child_gets_only_what_we_configure() {
    // Inherited RESTIC_* variables must not reach restic.
    std::env::set_var("RESTIC_REPOSITORY", "/inherited/repo");
    std::env::set_var("RESTIC_PASSWORD_FILE", "/inherited/password");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let bin = dir.path().join("fake-restic");
    std::fs::write(&bin, SCRIPT).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));

    let restic = Restic::new(&bin, ResticVersion::new(0, 14, 0))
        .with_cache_dir(dir.path().join("cache"))
        .with_working_dir(dir.path());
    let repo = Repository::new("rest:http://u:secret-in-url@h/", "secret-password")
        .with_env("AWS_ACCESS_KEY_ID", "key-id")
        .with_env("RESTIC_COMPRESSION", "max");
    let backup = Command::Backup {
        paths: vec!["-x".into()],
        excludes: vec![],
        tags: vec![],
        host: None,
        options: Default::default(),
    };
    let (events, mut receiver) = mpsc::channel(64);
    let limits = Limits::new(Duration::from_secs(10));
    let finished = restic
        .run(&repo, &backup, &limits, &events)
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    drop(events);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(event) = receiver.recv().await {
        match event {
            Event::Line {
                stream: Stream::Stdout,
                text,
            } => stdout.push(text),
            Event::Line {
                stream: Stream::Stderr,
                text,
            } => stderr.push(text),
            _ => {}
        }
    }
    assert_eq!(finished.status, Status::Succeeded);
    let cwd = format!("cwd: {}", dir.path().display());
    let cache = format!("RESTIC_CACHE_DIR={}", dir.path().join("cache").display());
    assert_eq!(
        stdout,
        [
            "args: --repository-file=/dev/fd/4 --password-file=/dev/fd/3 backup --json -- -x",
            "AWS_ACCESS_KEY_ID=key-id",
            &cache,
            "RESTIC_COMPRESSION=max",
            "RESTIC_PROGRESS_FPS=1",
            // The secrets come on pipes, each readable once, then
            // end-of-file (the write end was closed before the start;
            // log lines lose trailing blanks).
            "fd 3: secret-password",
            "fd 4: rest:http://u:secret-in-url@h/",
            "fd 3 again:",
            "stdin: /dev/null",
            &cwd,
            "pgid-is-pid: yes",
        ]
    );
    assert_eq!(stderr, ["some warning"]);
}
