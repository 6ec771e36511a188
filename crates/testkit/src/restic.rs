//! Which restic the tests run: the one choice every test that starts restic
//! goes through, so CI can run the same tests against each release.
//!
//! `RM_TEST_RESTIC` names the binary (scripts/test sets it to the releases
//! `scripts/restic-releases` fetched); without it, Debian's `/usr/bin/restic`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rm_restic::ResticVersion;

/// The environment variable naming the restic binary the tests run.
pub const ENV: &str = "RM_TEST_RESTIC";

/// The binary used when [`ENV`] is not set: Debian's package.
pub const DEFAULT: &str = "/usr/bin/restic";

/// The restic binary under test, as an absolute path. Panics, saying how
/// to get one, when it does not exist: these tests must not pass without it.
pub fn binary() -> PathBuf {
    let bin = match std::env::var_os(ENV) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT),
    };
    assert!(
        bin.is_file(),
        "restic not found at {} ({ENV}={:?}): run scripts/test, apt-get install restic, \
         or set {ENV} to a restic binary (scripts/restic-releases fetches newer ones)",
        bin.display(),
        std::env::var_os(ENV).unwrap_or_default(),
    );
    // Relative names would be resolved against each child's working
    // directory; the agent runs restic by absolute path anyway.
    std::path::absolute(&bin).unwrap_or(bin)
}

/// The version of [`binary`], asked once per test process.
pub fn version() -> ResticVersion {
    static VERSION: OnceLock<ResticVersion> = OnceLock::new();
    *VERSION.get_or_init(|| version_of(&binary()))
}

/// The version of the restic binary `bin` (`restic version`).
pub fn version_of(bin: &Path) -> ResticVersion {
    let output = std::process::Command::new(bin)
        .arg("version")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running `{} version`: {e}", bin.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    rm_restic::parse_version_output(&text)
        .unwrap_or_else(|e| panic!("the version of {}: {e}", bin.display()))
}

/// A `tokio` command for [`binary`], for tests that run restic themselves
/// (to look at a repository the agent wrote, or to hold its lock).
pub fn command() -> tokio::process::Command {
    tokio::process::Command::new(binary())
}

/// The same as a `std` command, for synchronous tests.
pub fn std_command() -> std::process::Command {
    std::process::Command::new(binary())
}

/// restic 0.18 (Debian trixie), one of the releases `scripts/restic-releases`
/// caches.
pub const TRIXIE: &str = "0.18.0";
/// restic 0.19 (Debian sid), the other.
pub const SID: &str = "0.19.1";

/// The cached binary of restic `version`, for tests that need one release
/// whatever [`binary`] is (a feature 0.14 lacks, or every release in one
/// test). Panics, saying how to fetch it, when it is missing: a test that
/// needs it must not pass without it.
pub fn release(version: &str) -> PathBuf {
    let cache = match std::env::var_os("RM_RESTIC_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/restic-manager"),
    };
    let bin = cache.join(format!("restic-{version}")).join("restic");
    assert!(
        bin.is_file(),
        "restic {version} is not at {}: run scripts/restic-releases (or scripts/test), \
         which fetches Debian's builds into that folder",
        bin.display()
    );
    bin
}

/// Debian's `/usr/bin/restic` and every cached newer release, for a test
/// that must hold on each (a stdin backup goes through a pipe before 0.17
/// and `--stdin-from-command` after).
pub fn every_release() -> Vec<PathBuf> {
    vec![PathBuf::from(DEFAULT), release(TRIXIE), release(SID)]
}

/// Runs restic `bin` itself on the repository `repo` with `args`, the way a
/// test checks what the agent wrote: the password in restic's environment
/// (never on its command line), no stdin. Returns the output whatever the
/// exit; [`on_repository_ok`] is the one that must succeed.
pub async fn on_repository(
    bin: &Path,
    repo: &str,
    password: &str,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(bin)
        .args(args)
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", password)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", bin.display()))
}

/// [`on_repository`], failing the test with restic's stderr unless restic
/// succeeds; returns its stdout.
pub async fn on_repository_ok(bin: &Path, repo: &str, password: &str, args: &[&str]) -> Vec<u8> {
    let out = on_repository(bin, repo, password, args).await;
    assert!(
        out.status.success(),
        "restic {args:?} on {repo}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The real restic `bin` behind a wrapper that first appends its command
/// line to a log, so a test can see what the agent asked of restic (which
/// `--read-data-subset`, which `--limit-download`) while restic itself
/// does the work. Written into `dir`; returns the wrapper and the log.
/// Arguments are logged one command a line, joined by spaces (the agent
/// passes secrets through pipes, never arguments).
pub fn recording(bin: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("recording-restic");
    let log = dir.join("restic-argv.log");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        bin.display()
    );
    std::fs::write(&wrapper, script)
        .unwrap_or_else(|e| panic!("writing {}: {e}", wrapper.display()));
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", wrapper.display()));
    (wrapper, log)
}

/// The command lines [`recording`] logged so far that ran `restic check`.
pub fn recorded_checks(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split(' ').any(|arg| arg == "check"))
        .map(str::to_owned)
        .collect()
}
