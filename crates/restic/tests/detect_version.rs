//! Runs `detect_version` against real processes: the restic installed on
//! this machine, a missing path, and small shell scripts standing in for a
//! broken restic, because the error paths only matter against real spawns.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rm_restic::{detect_version, detect_version_with_timeout, ResticError, ResticVersion};

#[tokio::test]
async fn detects_the_restic_under_test() {
    let bin = rm_testkit::restic::binary();
    let version = detect_version(&bin)
        .await
        .unwrap_or_else(|e| panic!("detecting {}: {e}", bin.display()));
    assert!(version >= ResticVersion::new(0, 14, 0), "got {version}");
    // The same answer as `version --json` where that exists (0.17+).
    if version.has_version_json() {
        let output = rm_testkit::restic::command()
            .args(["version", "--json"])
            .output()
            .await
            .unwrap_or_else(|e| panic!("restic version --json: {e}"));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.trim_start().starts_with('{'), "{text}");
        assert_eq!(rm_restic::parse_version_output(&text).ok(), Some(version));
    }
}

#[tokio::test]
async fn a_missing_binary_is_not_found_with_an_install_hint() {
    let bin = Path::new("/nonexistent/dir/restic");
    match detect_version(bin).await {
        Err(e @ ResticError::NotFound { .. }) => {
            let message = e.to_string();
            assert!(message.contains("/nonexistent/dir/restic"), "{message}");
            assert!(message.contains("apt-get install restic"), "{message}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bare_name_not_on_path_is_not_found() {
    let result = detect_version(Path::new("restic-manager-no-such-restic")).await;
    assert!(
        matches!(result, Err(ResticError::NotFound { .. })),
        "{result:?}"
    );
}

/// One test for every script-backed case: they run one after another so a
/// script is never executed while another thread still holds it open for
/// writing (which makes `exec` fail with "text file busy").
#[tokio::test]
async fn broken_restic_stand_ins() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));

    let failing = script(dir.path(), "failing", "echo 'Fatal: boom' >&2; exit 3");
    match detect(&failing, Duration::from_secs(10)).await {
        Err(ResticError::Failed { status, stderr }) => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr, "Fatal: boom");
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    let garbage = script(dir.path(), "garbage", "echo 'not restic at all'");
    match detect(&garbage, Duration::from_secs(10)).await {
        Err(ResticError::Unparseable { output }) => assert_eq!(output, "not restic at all"),
        other => panic!("expected Unparseable, got {other:?}"),
    }

    let json = script(
        dir.path(),
        "json",
        r#"echo '{"message_type":"version","version":"0.19.1","go_version":"go1.24.4"}'"#,
    );
    match detect(&json, Duration::from_secs(10)).await {
        Ok(v) => assert_eq!(v, ResticVersion::new(0, 19, 1)),
        other => panic!("expected 0.19.1, got {other:?}"),
    }

    let hanging = script(dir.path(), "hanging", "exec sleep 30");
    let started = Instant::now();
    match detect(&hanging, Duration::from_millis(300)).await {
        Err(e @ ResticError::TimedOut { .. }) => assert!(e.to_string().contains("0.3s"), "{e}"),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap_or_else(|e| panic!("write: {e}"));
    let result = detect(&not_executable, Duration::from_secs(10)).await;
    assert!(
        matches!(result, Err(ResticError::Spawn { .. })),
        "{result:?}"
    );
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    path
}

/// Retries the rare "text file busy" spawn failure caused by another test
/// thread forking while our script's write handle was still open.
async fn detect(bin: &Path, timeout: Duration) -> Result<ResticVersion, ResticError> {
    let mut attempts = 0;
    loop {
        match detect_version_with_timeout(bin, timeout).await {
            Err(ResticError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 20 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}
