//! Newer restic releases for tests that need a feature restic 0.14 lacks
//! (`--skip-if-unchanged`, 0.17+): the static binaries kept in
//! `${RM_RESTIC_CACHE:-$HOME/.cache/restic-manager}/restic-<version>/restic`,
//! where `scripts/restic-releases` puts Debian's trixie and sid builds.

use std::path::PathBuf;

/// restic 0.18 (Debian trixie).
pub const TRIXIE: &str = "0.18.0";
/// restic 0.19 (Debian sid).
pub const SID: &str = "0.19.1";

/// The cached binary of restic `version`. Panics, saying how to fetch it,
/// when it is missing: a test that needs it must not pass without it.
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
