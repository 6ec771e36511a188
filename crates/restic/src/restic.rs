//! [`Restic`]: a detected restic binary and everything it can be asked.
//!
//! [`Restic::run`] is the general entry point (any [`Command`], streaming
//! events, never failing because restic failed). The typed helpers below it
//! are for callers that want a value: they run one command, insist it
//! succeeded and parse its output.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::sync::mpsc;

use crate::collect::Collector;
use crate::command::{Archive, Command, StatsMode, FROM_PASSWORD_FD, FROM_REPOSITORY_FD};
use crate::dump::Dump;
use crate::error::ResticError;
use crate::event::Event;
use crate::limits::Limits;
use crate::outcome::{FailureKind, Finished, Status};
use crate::parse::ls::{self, DirListing, Node, NodeType};
use crate::parse::snapshots::{self, Snapshot};
use crate::parse::stats::{self, Stats};
use crate::process::{self, Piped, Spec};
use crate::repository::Repository;
use crate::version::{detect_version, ResticVersion};

/// Longest stdout line kept for commands whose output is one big JSON line
/// (`snapshots` of a large repository, `forget`).
const DOCUMENT_LINE_CAP: usize = 256 * 1024 * 1024;
/// Longest stdout line kept for line-oriented commands; longer lines cannot
/// be JSON we understand and are logged truncated.
const LINE_CAP: usize = 1024 * 1024;

/// How much of one stdout line of `command` is kept.
pub(crate) fn stdout_line_cap(command: &Command) -> usize {
    match command {
        Command::Snapshots { .. } | Command::Forget { .. } | Command::Stats { .. } => {
            DOCUMENT_LINE_CAP
        }
        _ => LINE_CAP,
    }
}

/// Where restic reads the repository password: a pipe placed at this
/// descriptor (`--password-file=/dev/fd/3`, restic 0.14+).
const PASSWORD_FD: i32 = 3;
/// Where restic reads the repository URL, which may carry a REST
/// password (`--repository-file=/dev/fd/4`, restic 0.14+).
const REPOSITORY_FD: i32 = 4;

/// A restic binary of a known version, plus how to run it.
#[derive(Debug, Clone)]
pub struct Restic {
    bin: PathBuf,
    version: ResticVersion,
    cache_dir: Option<PathBuf>,
    working_dir: Option<PathBuf>,
}

impl Restic {
    /// Runs `<bin> version` and keeps the answer. `bin` may be a path or a
    /// name looked up on our own `PATH` (now, once: see
    /// [`crate::resolve_bin`]).
    pub async fn detect(bin: impl Into<PathBuf>) -> Result<Restic, ResticError> {
        let bin = process::resolve_bin(&bin.into())?;
        let version = detect_version(&bin).await?;
        Ok(Restic::new(bin, version))
    }

    /// A restic whose version is already known (no process is started). A
    /// bare name is looked up on our own `PATH` at each run.
    pub fn new(bin: impl Into<PathBuf>, version: ResticVersion) -> Self {
        Restic {
            bin: bin.into(),
            version,
            cache_dir: None,
            working_dir: None,
        }
    }

    /// Makes restic keep its cache in `dir` (`RESTIC_CACHE_DIR`) instead of
    /// the home directory, which a service user may not have.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Runs restic in `dir`, against which relative backup paths resolve.
    pub fn with_working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The detected version.
    pub fn version(&self) -> ResticVersion {
        self.version
    }

    /// The binary that is run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Runs one command, streaming what it prints to `events`, and returns
    /// how it ended.
    ///
    /// `Err` only when restic could not be started at all (or an argument
    /// was refused before starting); a failing restic is
    /// `Ok(Finished { status: Failed, .. })`. The caller must keep draining
    /// `events` (or drop its receiver): log lines wait for room in the
    /// channel, progress events are dropped when it is full.
    pub async fn run(
        &self,
        repo: &Repository,
        command: &Command,
        limits: &Limits,
        events: &mpsc::Sender<Event>,
    ) -> Result<Finished, ResticError> {
        self.run_inner(repo, command, limits, events, None).await
    }

    /// [`Restic::run`] with restic's standard input fed from `input`, the
    /// read end of a pipe whose write end the caller holds (for
    /// [`Command::BackupStdin`] with [`crate::StdinFrom::Pipe`]). restic
    /// stores the data when it reads end-of-file, so a caller whose source
    /// failed cancels `limits.cancel` *before* closing its write end: restic
    /// is interrupted and writes no snapshot. Create the pipe close-on-exec
    /// (`pipe2(O_CLOEXEC)`) so no other child inherits the write end and
    /// holds the end-of-file back.
    pub async fn run_with_input(
        &self,
        repo: &Repository,
        command: &Command,
        limits: &Limits,
        events: &mpsc::Sender<Event>,
        input: std::os::fd::OwnedFd,
    ) -> Result<Finished, ResticError> {
        self.run_inner(repo, command, limits, events, Some(input))
            .await
    }

    async fn run_inner(
        &self,
        repo: &Repository,
        command: &Command,
        limits: &Limits,
        events: &mpsc::Sender<Event>,
        input: Option<std::os::fd::OwnedFd>,
    ) -> Result<Finished, ResticError> {
        let (args, piped) = self.argv(repo, command, limits)?;
        if limits.cancel.is_cancelled() {
            return Ok(not_started(Status::Cancelled));
        }
        let spec = Spec {
            bin: &self.bin,
            args: &args,
            env: self.env(repo, command),
            piped,
            working_dir: self.working_dir.as_deref(),
            stdout_line_cap: stdout_line_cap(command),
            stdin: input,
        };
        let mut collector = Collector::new(command, self.version);
        let ended = process::run(
            spec,
            limits,
            |stream, line| collector.on_line(stream, line),
            events,
        )
        .await?;
        Ok(collector.finish(ended, limits))
    }

    /// The whole argument vector of `command` (global options first: where
    /// the secrets are, the limits, `--no-lock`) and the secrets restic
    /// reads from pipes, after checking every value.
    fn argv<'r>(
        &self,
        repo: &'r Repository,
        command: &'r Command,
        limits: &Limits,
    ) -> Result<(Vec<String>, Vec<Piped<'r>>), ResticError> {
        let mut args = command.args()?;
        if let Command::Backup { options, .. } = command {
            if options.skip_if_unchanged && !self.version.supports_skip_if_unchanged() {
                return Err(ResticError::InvalidArgument {
                    field: "skip_if_unchanged",
                    reason: format!(
                        "needs restic 0.17 or newer; this is restic {}",
                        self.version
                    ),
                });
            }
        }
        let from = command.source_repository();
        for (field, password) in std::iter::once(("password", &repo.password))
            .chain(from.map(|f| ("from.password", &f.password)))
        {
            if password.trim() != password {
                // restic trims what it reads from a password file; the
                // password it would use is not this one.
                return Err(ResticError::InvalidArgument {
                    field,
                    reason: String::from(
                        "starts or ends with white space, which restic would trim when reading it",
                    ),
                });
            }
        }
        // Global options go before the subcommand: where the secrets are.
        let mut global = vec![format!("--repository-file=/dev/fd/{REPOSITORY_FD}")];
        let mut piped = vec![Piped {
            fd: REPOSITORY_FD,
            data: repo.url.as_bytes(),
        }];
        if !repo.password.is_empty() {
            global.push(format!("--password-file=/dev/fd/{PASSWORD_FD}"));
            piped.push(Piped {
                fd: PASSWORD_FD,
                data: repo.password.as_bytes(),
            });
        }
        if let Some(from) = from {
            // The command's `--from-*-file` flags name these descriptors.
            piped.push(Piped {
                fd: FROM_REPOSITORY_FD,
                data: from.url.as_bytes(),
            });
            piped.push(Piped {
                fd: FROM_PASSWORD_FD,
                data: from.password.as_bytes(),
            });
        }
        global.extend(limits.bandwidth.flags()?);
        if limits.no_lock {
            if !command.reads_only() {
                return Err(ResticError::InvalidArgument {
                    field: "no_lock",
                    reason: format!(
                        "`{}` changes the repository and must hold its lock",
                        command.name()
                    ),
                });
            }
            global.push(String::from("--no-lock"));
        }
        global.append(&mut args);
        if let Some(dir) = &self.working_dir {
            if !dir.is_dir() {
                return Err(ResticError::InvalidArgument {
                    field: "working_dir",
                    reason: format!("{} is not a directory", dir.display()),
                });
            }
        }
        Ok((global, piped))
    }

    /// The child's environment on top of ours (minus `RESTIC_*`): the
    /// repository's extra variables, then ours, so the cache folder and the
    /// progress rate are always ours. The URL and password are not in it:
    /// they go on pipes (see [`Restic::run`]).
    ///
    /// A command reading a second repository (`copy`) gets the source's
    /// variables first and the destination's after, so the destination's
    /// value wins where both set one: restic has one set of backend
    /// variables per process, not one per repository.
    fn env(&self, repo: &Repository, command: &Command) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = command
            .source_repository()
            .into_iter()
            .flat_map(|from| from.env.iter())
            .chain(repo.env.iter())
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        if let Some(dir) = &self.cache_dir {
            env.push(("RESTIC_CACHE_DIR".into(), dir.into()));
        }
        if command.emits_progress() {
            // One status line a second is plenty and keeps logs small.
            env.push(("RESTIC_PROGRESS_FPS".into(), "1".into()));
        }
        env
    }

    /// Runs a helper's command without anyone listening to events.
    async fn run_quiet(
        &self,
        repo: &Repository,
        command: &Command,
        limits: &Limits,
    ) -> Result<Finished, ResticError> {
        // A closed channel makes every send return at once.
        let (events, receiver) = mpsc::channel(1);
        drop(receiver);
        self.run(repo, command, limits, &events).await
    }

    /// Runs `command` and insists that it succeeded.
    async fn run_ok(
        &self,
        repo: &Repository,
        command: &Command,
        limits: &Limits,
    ) -> Result<Finished, ResticError> {
        let finished = self.run_quiet(repo, command, limits).await?;
        if finished.succeeded() {
            Ok(finished)
        } else {
            Err(command_error(command, finished))
        }
    }

    /// All snapshots of the repository, or of one host.
    pub async fn snapshots(
        &self,
        repo: &Repository,
        host: Option<&str>,
        limits: &Limits,
    ) -> Result<Vec<Snapshot>, ResticError> {
        let command = Command::Snapshots {
            host: host.map(str::to_owned),
        };
        let finished = self.run_ok(repo, &command, limits).await?;
        snapshots::parse_snapshots(document(&finished)?)
    }

    /// Repository statistics in one mode.
    pub async fn stats(
        &self,
        repo: &Repository,
        mode: StatsMode,
        limits: &Limits,
    ) -> Result<Stats, ResticError> {
        let finished = self.run_ok(repo, &Command::Stats { mode }, limits).await?;
        stats::parse_stats(document(&finished)?)
    }

    /// The direct children of `dir` in a snapshot.
    pub async fn ls_dir(
        &self,
        repo: &Repository,
        snapshot_id: &str,
        dir: &str,
        limits: &Limits,
    ) -> Result<Vec<Node>, ResticError> {
        let (dir, listing) = self.ls(repo, snapshot_id, dir, limits).await?;
        match ls::direct_children(listing, &dir) {
            DirListing::Children(children) => Ok(children),
            DirListing::Missing => Err(ResticError::PathNotFound {
                snapshot_id: snapshot_id.to_owned(),
                path: dir,
            }),
            DirListing::NotADirectory => Err(ResticError::InvalidArgument {
                field: "dir",
                reason: format!("{dir} is not a directory in snapshot {snapshot_id}"),
            }),
        }
    }

    /// `restic ls` of `path` (normalised; returned with the listing), an
    /// error when the snapshot does not exist (restic 0.14 then still
    /// exits 0, printing nothing).
    async fn ls(
        &self,
        repo: &Repository,
        snapshot_id: &str,
        path: &str,
        limits: &Limits,
    ) -> Result<(String, ls::Listing), ResticError> {
        let path = ls::normalise_dir(path);
        let command = Command::Ls {
            snapshot_id: snapshot_id.to_owned(),
            path: path.clone(),
        };
        let finished = self.run_ok(repo, &command, limits).await?;
        let listing = ls::parse_ls(finished.output.as_deref().unwrap_or_default());
        if listing.snapshot.is_none() {
            return Err(ResticError::Command {
                command: command.name(),
                status: Status::Failed,
                kind: Some(FailureKind::SnapshotNotFound),
                exit_code: finished.exit_code,
                message: format!("no snapshot {snapshot_id} in the repository"),
            });
        }
        Ok((path, listing))
    }

    /// The node at `path` in a snapshot (a file, folder, …), from `restic
    /// ls` of that path. `/` is the snapshot's root, which restic does not
    /// print: it is reported as a folder named `/`.
    pub async fn node(
        &self,
        repo: &Repository,
        snapshot_id: &str,
        path: &str,
        limits: &Limits,
    ) -> Result<Node, ResticError> {
        let (path, listing) = self.ls(repo, snapshot_id, path, limits).await?;
        if path == "/" {
            return Ok(Node {
                name: path.clone(),
                node_type: NodeType::Dir,
                path,
                ..Node::default()
            });
        }
        listing
            .nodes
            .into_iter()
            .find(|node| node.path == path)
            .ok_or(ResticError::PathNotFound {
                snapshot_id: snapshot_id.to_owned(),
                path,
            })
    }

    /// Starts `restic dump` of `path` in a snapshot (a folder packed as
    /// `archive`) and returns it for reading: see [`Dump`]. Runs without
    /// the repository lock (a download is no job), whatever `limits` say;
    /// their time limit and cancel token do not apply: the reader decides
    /// how long it lasts, and dropping the [`Dump`] stops restic.
    pub fn dump(
        &self,
        repo: &Repository,
        snapshot_id: &str,
        path: &str,
        archive: Archive,
        limits: &Limits,
    ) -> Result<Dump, ResticError> {
        let command = Command::Dump {
            snapshot_id: snapshot_id.to_owned(),
            path: path.to_owned(),
            archive,
        };
        let limits = limits.clone().without_lock();
        let (args, piped) = self.argv(repo, &command, &limits)?;
        let mut spec = Spec {
            bin: &self.bin,
            args: &args,
            env: self.env(repo, &command),
            piped,
            working_dir: self.working_dir.as_deref(),
            stdout_line_cap: LINE_CAP,
            stdin: None,
        };
        let spawned = process::spawn(&mut spec)?;
        Dump::new(command.clone(), self.version, spawned)
    }

    /// Whether a repository exists at `repo.url` (`restic cat config`).
    /// A wrong password, an unreachable backend and other failures are
    /// errors, not `false`: only "there is no repository" is.
    pub async fn repository_exists(
        &self,
        repo: &Repository,
        limits: &Limits,
    ) -> Result<bool, ResticError> {
        let command = Command::CatConfig;
        let finished = self.run_quiet(repo, &command, limits).await?;
        match (finished.status, finished.kind) {
            (Status::Succeeded, _) => Ok(true),
            (Status::Failed, Some(FailureKind::NoRepository)) => Ok(false),
            _ => Err(command_error(&command, finished)),
        }
    }

    /// Whether any lock files exist (`restic list locks`, which takes no
    /// lock itself). Stale locks count: they still block prune and check.
    pub async fn locks_present(
        &self,
        repo: &Repository,
        limits: &Limits,
    ) -> Result<bool, ResticError> {
        let finished = self.run_ok(repo, &Command::ListLocks, limits).await?;
        Ok(finished
            .output
            .as_deref()
            .is_some_and(|ids| ids.lines().any(|l| !l.trim().is_empty())))
    }
}

/// The result of a run that was cancelled before restic started.
fn not_started(status: Status) -> Finished {
    Finished {
        status,
        kind: None,
        exit_code: None,
        error: Some(status.to_string()),
        stats: json!({}),
        snapshot_id: None,
        output: None,
    }
}

fn command_error(command: &Command, finished: Finished) -> ResticError {
    ResticError::Command {
        command: command.name(),
        status: finished.status,
        kind: finished.kind,
        exit_code: finished.exit_code,
        message: finished
            .error
            .unwrap_or_else(|| format!("restic {} did not succeed", command.name())),
    }
}

fn document(finished: &Finished) -> Result<&str, ResticError> {
    finished
        .output
        .as_deref()
        .ok_or_else(|| ResticError::Unparseable {
            output: "restic printed no JSON document".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::command::BackupOptions;
    use crate::limits::Bandwidth;

    fn backup(skip_if_unchanged: bool) -> Command {
        Command::Backup {
            paths: vec!["/srv".into()],
            excludes: vec![],
            tags: vec![],
            host: None,
            options: BackupOptions {
                skip_if_unchanged,
                ..BackupOptions::default()
            },
        }
    }

    async fn refused(restic: &Restic, command: &Command, limits: &Limits) -> &'static str {
        let repo = Repository {
            url: "/nonexistent/repo".into(),
            password: "pw".into(),
            env: Default::default(),
        };
        let (events, _receiver) = mpsc::channel(8);
        match restic.run(&repo, command, limits, &events).await {
            Err(ResticError::InvalidArgument { field, .. }) => field,
            other => panic!("{command:?} should be refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn skip_if_unchanged_and_zero_limits_are_refused_before_restic_starts() {
        // The binary does not exist: a refusal proves nothing was started.
        let old = Restic::new("/nonexistent/restic", ResticVersion::new(0, 16, 4));
        let limits = Limits::new(Duration::from_secs(5));
        assert_eq!(
            refused(&old, &backup(true), &limits).await,
            "skip_if_unchanged"
        );
        let new = Restic::new("/nonexistent/restic", ResticVersion::new(0, 17, 0));
        let zero = limits.with_bandwidth(Bandwidth {
            upload_kib: Some(0),
            download_kib: None,
        });
        assert_eq!(
            refused(&new, &backup(true), &zero).await,
            "limit_upload_kib"
        );
        let unlocked = Limits::new(Duration::from_secs(5)).without_lock();
        assert_eq!(refused(&new, &Command::Prune, &unlocked).await, "no_lock");
        assert_eq!(refused(&new, &backup(false), &unlocked).await, "no_lock");
    }
}
