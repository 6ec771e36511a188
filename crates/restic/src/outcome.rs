//! How a restic run ended, and the one function that maps exit codes and
//! stderr text to that ending.
//!
//! restic's exit codes grew over time (0.14 has only 0, 1 and 3; 0.17 added
//! 10 and 11, 0.17.1 added 12), so the meaning of a failure is taken from the
//! code where the version has one and from restic's well-known messages
//! otherwise. Keeping this in [`classify`] means the rest of the crate never
//! compares exit codes or greps stderr itself.

use std::fmt;

use crate::command::Command;
use crate::version::ResticVersion;

/// The end state of one restic run, in the words of the job list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// restic exited 0.
    Succeeded,
    /// `backup` made a snapshot but some source data could not be read
    /// (exit 3), or a source path was missing.
    Partial,
    /// restic exited with an error, or was killed by someone else.
    Failed,
    /// The caller cancelled the run.
    Cancelled,
    /// The run took longer than its time limit.
    TimedOut,
}

impl Status {
    /// The lower-case name used on the wire and in logs (`succeeded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::TimedOut => "timed out",
            other => other.as_str(),
        })
    }
}

/// A failure restic reports in a recognisable way, so callers can act on it
/// (treat `init` of an existing repository as done, show "wrong password"
/// instead of a generic error, retry later when locked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The password does not open any key of the repository.
    WrongPassword,
    /// There is no repository at the URL (its config file is missing).
    NoRepository,
    /// Another process holds a conflicting lock.
    Locked,
    /// `init` found a repository already there.
    AlreadyInitialized,
    /// The backend could not be reached (connection refused, DNS, timeout).
    Unreachable,
    /// A snapshot id matched no snapshot.
    SnapshotNotFound,
    /// `backup` found none of its source paths.
    SourceNotFound,
}

impl FailureKind {
    /// A short snake_case name for logs and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::WrongPassword => "wrong_password",
            FailureKind::NoRepository => "no_repository",
            FailureKind::Locked => "locked",
            FailureKind::AlreadyInitialized => "already_initialized",
            FailureKind::Unreachable => "unreachable",
            FailureKind::SnapshotNotFound => "snapshot_not_found",
            FailureKind::SourceNotFound => "source_not_found",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a caller learns from one finished restic run.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// How it ended.
    pub status: Status,
    /// The recognised kind of failure, if any (also set for cancelled or
    /// timed-out runs when restic had already said why it was stuck).
    pub kind: Option<FailureKind>,
    /// restic's exit code; `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    /// restic's own words on failure: a 0.18+ `exit_error` message, else the
    /// `Fatal: …` lines, else the last stderr lines (bounded). For
    /// cancelled and timed-out runs, which of the two happened. For
    /// partial backups, the warning. `None` on success.
    pub error: Option<String>,
    /// A command-specific JSON object: backup → restic's summary; restore →
    /// its summary (0.16+); forget → `{"removed": n, "kept": n}`; check →
    /// `{"errors": bool}` plus the 0.18+ summary fields; stats → the stats
    /// object; otherwise `{}`.
    pub stats: serde_json::Value,
    /// The id of the snapshot a backup saved, as restic gives it (0.14:
    /// the 8-character short id; 0.15+: the full id).
    pub snapshot_id: Option<String>,
    /// For single-document commands (snapshots, stats, forget, cat config)
    /// the JSON document; for ls the JSON lines; for `list locks` the lock
    /// ids, one per line. The typed helpers parse it.
    pub output: Option<String>,
}

impl Finished {
    /// Whether restic did what was asked (fully).
    pub fn succeeded(&self) -> bool {
        self.status == Status::Succeeded
    }
}

/// Maps one exit to a [`Status`] and, for failures, a [`FailureKind`].
///
/// `exit_code` is `None` when restic died from a signal. `stderr` is what
/// restic printed on stderr (any JSON `exit_error` message included). Runs we
/// stopped ourselves are not classified here: the runner reports them as
/// cancelled or timed out.
pub fn classify(
    command: &Command,
    version: ResticVersion,
    exit_code: Option<i32>,
    stderr: &str,
) -> (Status, Option<FailureKind>) {
    match exit_code {
        Some(0) => (Status::Succeeded, None),
        // Only backup documents 3 as "snapshot made, some data unreadable";
        // on other commands (0.19 forget) it is a failure.
        Some(3)
            if matches!(
                command,
                Command::Backup { .. } | Command::BackupStdin { .. }
            ) =>
        {
            (Status::Partial, None)
        }
        code => (Status::Failed, failure_kind(version, code, stderr)),
    }
}

/// Which failure a non-zero exit stands for. Exit codes win where the
/// version defines them; otherwise restic's messages, which every version
/// since 0.14 prints, decide.
fn failure_kind(version: ResticVersion, code: Option<i32>, stderr: &str) -> Option<FailureKind> {
    if version.has_exit_codes() {
        match code {
            Some(10) => return Some(FailureKind::NoRepository),
            Some(11) => return Some(FailureKind::Locked),
            Some(12) if version.has_wrong_password_exit_code() => {
                return Some(FailureKind::WrongPassword)
            }
            _ => {}
        }
    }
    kind_from_text(stderr)
}

/// Recognises restic's messages for the common failures.
fn kind_from_text(stderr: &str) -> Option<FailureKind> {
    let has = |needle: &str| stderr.contains(needle);
    if has("wrong password or no key found") {
        Some(FailureKind::WrongPassword)
    } else if has("config file already exists") {
        Some(FailureKind::AlreadyInitialized)
    } else if has("repository is already locked") {
        Some(FailureKind::Locked)
    } else if has("no matching ID found") || has("could not find snapshot") {
        Some(FailureKind::SnapshotNotFound)
    } else if has("directories/files do not exist") {
        // 0.14: "all target directories/files do not exist";
        // 0.19.1: "all source directories/files do not exist".
        Some(FailureKind::SourceNotFound)
    } else if looks_unreachable(stderr) {
        Some(FailureKind::Unreachable)
    } else if has("Is there a repository at the following location?")
        || has("unable to open config file")
    {
        // restic (≤0.16) prints this for *any* failure to stat the config
        // file, including a refused connection (handled above) and a
        // permission problem, which must not read as "no repository":
        // a caller would then try `init`.
        if has("permission denied")
            || has("Forbidden")
            || has("Unauthorized")
            || has("AccessDenied")
        {
            None
        } else {
            Some(FailureKind::NoRepository)
        }
    } else {
        None
    }
}

/// Transport-level failures: the repository may well exist.
fn looks_unreachable(stderr: &str) -> bool {
    [
        "connection refused",
        "no such host",
        "network is unreachable",
        "i/o timeout",
        "connection reset by peer",
        "TLS handshake timeout",
        "no route to host",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V14: ResticVersion = ResticVersion::new(0, 14, 0);
    const V17: ResticVersion = ResticVersion::new(0, 17, 0);
    const V171: ResticVersion = ResticVersion::new(0, 17, 1);

    fn backup() -> Command {
        Command::Backup {
            paths: vec!["/etc".into()],
            excludes: vec![],
            tags: vec![],
            host: None,
            options: Default::default(),
        }
    }

    #[test]
    fn zero_succeeds_and_backup_three_is_partial() {
        assert_eq!(
            classify(&backup(), V14, Some(0), ""),
            (Status::Succeeded, None)
        );
        assert_eq!(
            classify(
                &backup(),
                V14,
                Some(3),
                "Warning: at least one source file could not be read"
            ),
            (Status::Partial, None)
        );
        // 0.19 forget uses 3 for "could not remove": that is a failure.
        assert_eq!(
            classify(&Command::Prune, V14, Some(3), "").0,
            Status::Failed
        );
        // Unknown codes and signals are failures.
        assert_eq!(
            classify(&Command::Prune, V14, Some(2), "").0,
            Status::Failed
        );
        assert_eq!(classify(&Command::Prune, V14, None, "").0, Status::Failed);
    }

    #[test]
    fn recognises_messages_on_any_version() {
        let cases = [
            ("Fatal: wrong password or no key found", FailureKind::WrongPassword),
            (
                "Fatal: create repository at /r failed: config file already exists",
                FailureKind::AlreadyInitialized,
            ),
            (
                "unable to create lock in backend: repository is already locked by PID 1 on vm",
                FailureKind::Locked,
            ),
            (
                "Fatal: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r",
                FailureKind::NoRepository,
            ),
            (
                "Fatal: unable to open config file: <config/> does not exist\nIs there a repository at the following location?\nrest:http://h/",
                FailureKind::NoRepository,
            ),
            (
                "Fatal: unable to open config file: client.Head: Head \"http://127.0.0.1:1/config\": dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?",
                FailureKind::Unreachable,
            ),
            (
                "Fatal: all target directories/files do not exist",
                FailureKind::SourceNotFound,
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(
                classify(&Command::CatConfig, V14, Some(1), text),
                (Status::Failed, Some(kind)),
                "{text}"
            );
        }
        let denied = "Fatal: unable to open config file: stat /r/config: permission denied\nIs there a repository at the following location?";
        assert_eq!(classify(&Command::CatConfig, V14, Some(1), denied).1, None);
    }

    #[test]
    fn exit_codes_count_only_from_the_version_that_defines_them() {
        assert_eq!(
            classify(&Command::CatConfig, V17, Some(10), "").1,
            Some(FailureKind::NoRepository)
        );
        assert_eq!(
            classify(&Command::Prune, V17, Some(11), "").1,
            Some(FailureKind::Locked)
        );
        assert_eq!(
            classify(&Command::CatConfig, V171, Some(12), "").1,
            Some(FailureKind::WrongPassword)
        );
        // 12 means nothing on 0.17.0, 10 nothing on 0.14.
        assert_eq!(classify(&Command::CatConfig, V17, Some(12), "").1, None);
        assert_eq!(classify(&Command::CatConfig, V14, Some(10), "").1, None);
    }
}
