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

    /// Whether `backup --stdin-from-command` exists (0.17.0+), which runs
    /// a command and backs up its output, failing without a snapshot when
    /// the command fails. Older releases only read `--stdin`.
    pub fn supports_stdin_from_command(self) -> bool {
        self >= ResticVersion::new(0, 17, 0)
    }
}

impl ResticVersion {
    /// `backup --skip-if-unchanged` exists (0.17.0+).
    pub fn supports_skip_if_unchanged(self) -> bool {
        self >= ResticVersion::new(0, 17, 0)
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
    fn skip_if_unchanged_needs_0_17() {
        assert!(!ResticVersion::new(0, 16, 4).supports_skip_if_unchanged());
        assert!(ResticVersion::new(0, 17, 0).supports_skip_if_unchanged());
        assert!(ResticVersion::new(0, 19, 1).supports_skip_if_unchanged());
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
