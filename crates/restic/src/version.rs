//! Which restic is installed: runs `restic version` and parses its answer.
//!
//! Output formats and flags changed between 0.14 and newer releases, so the
//! rest of the system decides what it may ask restic by comparing a
//! [`ResticVersion`]. Both the text line every version prints and the JSON
//! object of `version --json` (0.17+) are understood, so callers can use
//! either command.

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use crate::error::ResticError;

/// How long `restic version` may take before it is killed. It prints a
/// constant string, so anything slow means a wedged binary or host.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest piece of restic output quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 500;

/// A restic release number, ordered so feature checks read naturally
/// (`version >= ResticVersion::new(0, 17, 0)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResticVersion {
    /// Major version (0 for every release so far).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ResticVersion {
    /// A version from its three numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ResticVersion {
            major,
            minor,
            patch,
        }
    }

    /// `backup --skip-if-unchanged` (0.17.0, changelog `issue-662`): no
    /// snapshot when nothing changed; the summary then has no `snapshot_id`.
    pub fn supports_skip_if_unchanged(self) -> bool {
        self >= Self::new(0, 17, 0)
    }

    /// `backup --stdin-from-command` (0.17.0, `issue-4251`): restic runs the
    /// command and fails the backup when it exits non-zero.
    pub fn supports_stdin_from_command(self) -> bool {
        self >= Self::new(0, 17, 0)
    }

    /// `restore --json` prints `status` and `summary` lines (0.16.0,
    /// `issue-426`); before, one text line.
    pub fn has_restore_json(self) -> bool {
        self >= Self::new(0, 16, 0)
    }

    /// Exit codes 10 (no repository) and 11 (locked) (0.17.0, `pull-4884`).
    pub fn has_exit_codes(self) -> bool {
        self >= Self::new(0, 17, 0)
    }

    /// Exit code 12 (wrong password) (0.17.1, `pull-4959`).
    pub fn has_wrong_password_exit_code(self) -> bool {
        self >= Self::new(0, 17, 1)
    }

    /// `ls --json` lines carry `message_type` (0.17.0, `pull-4664`); before,
    /// only `struct_type`.
    pub fn has_ls_message_type(self) -> bool {
        self >= Self::new(0, 17, 0)
    }

    /// `version --json` prints an object (0.17.0, `issue-4547`).
    pub fn has_version_json(self) -> bool {
        self >= Self::new(0, 17, 0)
    }

    /// Fatal errors end with an `exit_error` JSON line on stderr under
    /// `--json` (0.18.0, `issue-4948`).
    pub fn has_exit_error_json(self) -> bool {
        self >= Self::new(0, 18, 0)
    }

    /// `check --json` prints a `summary` (0.18.0, `issue-1378`); before, text.
    pub fn has_check_json(self) -> bool {
        self >= Self::new(0, 18, 0)
    }

    /// Snapshots carry a `summary` (files and bytes processed…) when made
    /// by 0.17.0 or newer (`issue-693`).
    pub fn has_snapshot_summary(self) -> bool {
        self >= Self::new(0, 17, 0)
    }

    /// `backup` exits 3 when a top-level source path is missing (0.19.0,
    /// `issue-4467`); before, 0 with a "does not exist, skipping" line.
    pub fn reports_missing_source_as_partial(self) -> bool {
        self >= Self::new(0, 19, 0)
    }

    /// SIGINT reliably exits 130. 0.14–0.16 do; 0.17 and 0.18 often exit 1
    /// (`issue-5258`, fixed in 0.19.0).
    pub fn interrupt_exits_130(self) -> bool {
        self < Self::new(0, 17, 0) || self >= Self::new(0, 19, 0)
    }

    /// Invalid `RESTIC_COMPRESSION`, `RESTIC_PACK_SIZE` or
    /// `RESTIC_READ_CONCURRENCY` values are fatal (0.19.0, `issue-4759`);
    /// before, ignored.
    pub fn rejects_bad_env_values(self) -> bool {
        self >= Self::new(0, 19, 0)
    }
}

impl fmt::Display for ResticVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for ResticVersion {
    type Err = ResticError;

    /// Parses `0.14.0`, also tolerating a leading `v` and a pre-release or
    /// build suffix (`0.16.4-dev`), which development builds print.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_triple(s).ok_or_else(|| unparseable(s))
    }
}

#[cfg(test)]
mod feature_tests {
    use super::ResticVersion;

    #[test]
    fn stdin_from_command_arrived_in_0_17() {
        assert!(!ResticVersion::new(0, 14, 0).supports_stdin_from_command());
        assert!(!ResticVersion::new(0, 16, 5).supports_stdin_from_command());
        assert!(ResticVersion::new(0, 17, 0).supports_stdin_from_command());
        assert!(ResticVersion::new(0, 19, 1).supports_stdin_from_command());
    }
}

fn parse_triple(s: &str) -> Option<ResticVersion> {
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let core = s.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let mut number = || -> Option<u32> {
        let part = parts.next()?;
        // `u32::from_str` accepts a leading `+`, which no version has.
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let version = ResticVersion::new(number()?, number()?, number()?);
    if parts.next().is_some() {
        return None;
    }
    Some(version)
}

/// The `version --json` object of restic 0.17+; other fields are ignored.
#[derive(Deserialize)]
struct VersionJson {
    #[serde(default)]
    message_type: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// Finds restic's version in the output of `restic version` (text, every
/// release: `restic 0.14.0 compiled with go1.19.8 on linux/amd64`) or of
/// `restic version --json` (0.17+: `{"message_type":"version","version":"0.17.0",…}`).
pub fn parse_version_output(output: &str) -> Result<ResticVersion, ResticError> {
    for line in output.lines().map(str::trim) {
        if line.starts_with('{') {
            if let Ok(json) = serde_json::from_str::<VersionJson>(line) {
                let is_version = json.message_type.as_deref().is_none_or(|t| t == "version");
                if let (true, Some(v)) = (is_version, json.version.as_deref()) {
                    if let Some(version) = parse_triple(v) {
                        return Ok(version);
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("restic ") {
            if let Some(version) = rest.split_whitespace().next().and_then(parse_triple) {
                return Ok(version);
            }
        }
    }
    Err(unparseable(output))
}

/// Runs `<restic_bin> version` and parses the answer, giving up after
/// [`VERSION_TIMEOUT`].
pub async fn detect_version(restic_bin: &Path) -> Result<ResticVersion, ResticError> {
    detect_version_with_timeout(restic_bin, VERSION_TIMEOUT).await
}

/// [`detect_version`] with a caller-chosen time limit.
pub async fn detect_version_with_timeout(
    restic_bin: &Path,
    timeout: Duration,
) -> Result<ResticVersion, ResticError> {
    let child = Command::new(restic_bin)
        .arg("version")
        // restic prompts for passwords on stdin; never let it wait on ours.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out wait drops the child; this makes dropping it kill it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ResticError::spawn(restic_bin, source))?;

    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ResticError::TimedOut { after: timeout })?
        .map_err(ResticError::Io)?;

    if !output.status.success() {
        return Err(ResticError::Failed {
            status: output.status,
            stderr: quote(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    parse_version_output(&String::from_utf8_lossy(&output.stdout))
}

fn unparseable(output: &str) -> ResticError {
    ResticError::Unparseable {
        output: quote(output),
    }
}

/// Trims and shortens output so an error message stays one readable line.
fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(output: &str) -> ResticVersion {
        match parse_version_output(output) {
            Ok(v) => v,
            Err(e) => panic!("{output:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_the_text_line_of_0_14() {
        let v = parsed("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n");
        assert_eq!(v, ResticVersion::new(0, 14, 0));
        assert_eq!(v.to_string(), "0.14.0");
    }

    #[test]
    fn parses_a_development_build() {
        let v =
            parsed("restic 0.16.4-dev (compiled manually) compiled with go1.21.5 on linux/amd64");
        assert_eq!(v, ResticVersion::new(0, 16, 4));
    }

    #[test]
    fn parses_the_json_object_of_0_17() {
        let v = parsed(
            r#"{"message_type":"version","version":"0.17.0","go_version":"go1.22.5","go_os":"linux","go_arch":"amd64"}"#,
        );
        assert_eq!(v, ResticVersion::new(0, 17, 0));
    }

    #[test]
    fn skips_noise_before_the_version_line() {
        let v =
            parsed("some warning on stdout\nrestic 0.18.1 compiled with go1.24 on linux/arm64\n");
        assert_eq!(v, ResticVersion::new(0, 18, 1));
    }

    #[test]
    fn rejects_garbage() {
        for output in [
            "",
            "hello world",
            "restic",
            "restic version",
            "restic 0.14 compiled with go",
            "restic 0.14.0.1 compiled with go",
            "restic a.b.c",
            "restic +1.2.3",
            r#"{"message_type":"status","version":"0.17.0"}"#,
            r#"{"message_type":"version","version":"latest"}"#,
            "{not json",
        ] {
            match parse_version_output(output) {
                Err(ResticError::Unparseable { .. }) => {}
                other => panic!("{output:?} should be unparseable, got {other:?}"),
            }
        }
    }

    #[test]
    fn unparseable_output_is_quoted_short() {
        let long = "x".repeat(10_000);
        match parse_version_output(&long) {
            Err(ResticError::Unparseable { output }) => {
                assert!(output.chars().count() <= MAX_QUOTED_CHARS + 1)
            }
            other => panic!("expected Unparseable, got {other:?}"),
        }
    }

    #[test]
    fn feature_predicates_follow_the_changelog() {
        let v = |minor, patch| ResticVersion::new(0, minor, patch);
        let (v14, v16, v17, v171, v18, v19) =
            (v(14, 0), v(16, 0), v(17, 0), v(17, 1), v(18, 0), v(19, 1));
        assert!(!v14.supports_skip_if_unchanged() && v17.supports_skip_if_unchanged());
        assert!(!v16.supports_stdin_from_command() && v17.supports_stdin_from_command());
        assert!(!v(15, 2).has_restore_json() && v16.has_restore_json());
        assert!(!v16.has_exit_codes() && v17.has_exit_codes());
        assert!(!v17.has_wrong_password_exit_code() && v171.has_wrong_password_exit_code());
        assert!(!v16.has_ls_message_type() && v17.has_ls_message_type());
        assert!(!v16.has_version_json() && v17.has_version_json());
        assert!(!v16.has_snapshot_summary() && v17.has_snapshot_summary());
        assert!(!v171.has_exit_error_json() && v18.has_exit_error_json());
        assert!(!v171.has_check_json() && v18.has_check_json());
        assert!(
            !v18.reports_missing_source_as_partial() && v19.reports_missing_source_as_partial()
        );
        assert!(v14.interrupt_exits_130() && v16.interrupt_exits_130());
        assert!(!v17.interrupt_exits_130() && !v18.interrupt_exits_130());
        assert!(v19.interrupt_exits_130());
        assert!(!v18.rejects_bad_env_values() && v19.rejects_bad_env_values());
    }

    #[test]
    fn orders_versions_numerically() {
        assert!(ResticVersion::new(0, 9, 0) < ResticVersion::new(0, 14, 0));
        assert!(ResticVersion::new(0, 17, 1) > ResticVersion::new(0, 17, 0));
        assert!(ResticVersion::new(1, 0, 0) > ResticVersion::new(0, 99, 99));
        assert_eq!(
            "v0.14.0".parse::<ResticVersion>().ok(),
            Some(ResticVersion::new(0, 14, 0))
        );
    }
}
