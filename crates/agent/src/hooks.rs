//! Agent-local hooks: the executables a host's administrator puts in
//! `<state-dir>/hooks/<name>`, which backup jobs name (`hooks.before`,
//! `hooks.after`, `hooks.on_failure`, `stdin_from`) but never carry.
//!
//! What a hook is allowed to be is decided here, on the host: a regular
//! file (not a symbolic link: a link could point anywhere, and checking its
//! target's folders would be a second, weaker rule), owned by root or by
//! the user the agent runs as, not writable by group or others, executable
//! by its owner, in a `hooks` folder that is itself a real directory with
//! the same owner and mode rules. Anything else is refused with the reason.
//!
//! A hook runs in a process group of its own with an environment made
//! from scratch (`PATH`, `HOME`, `RM_JOB_ID`, `RM_JOB_KIND`, `RM_HOST`,
//! `RM_JOB_STATUS` after the backup): never the agent's, so nothing the
//! agent or restic holds (the repository's password and backend keys)
//! reaches it. Its stdin is `/dev/null`; its output goes to the job log one
//! line at a time, prefixed `[name] `. On its time limit or a cancel the
//! whole group gets SIGTERM, then SIGKILL.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rm_protocol::params::{BackupParams, DEFAULT_STDIN_FILENAME};
use rm_protocol::{LogStreamKind, RefusedHook};
use rm_restic::{Command, Event, Finished, Status, StdinFrom, Stream};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::jobs::{finished_without_restic, Job};

/// How long a `before`, `after` or `on_failure` hook may run unless
/// `agent run --hook-timeout` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// SIGTERM to SIGKILL grace for a hook's group.
const HOOK_KILL_GRACE: Duration = Duration::from_secs(5);

/// How long to keep reading a hook's output after it exited, in case
/// something it started in the background still holds its pipes.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Longest hook output line kept; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// The `PATH` hooks get: the system's usual folders, never the agent's own
/// (which may come from a service manager or a shell).
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host's hooks folder and how long hooks may run.
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    dir: PathBuf,
    timeout: Duration,
    /// Who may own hooks besides root: the user the agent runs as.
    owner: u32,
}

impl Hooks {
    /// The hooks in `<state_dir>/hooks`, each limited to `timeout`.
    pub(crate) fn new(state_dir: &Path, timeout: Duration) -> Hooks {
        Hooks {
            dir: state_dir.join("hooks"),
            timeout,
            owner: nix::unistd::geteuid().as_raw(),
        }
    }

    /// The hooks folder.
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the hooks folder (mode 0700) if there is none, so the
    /// administrator finds where hooks go. Errors are only logged: the
    /// folder is optional.
    pub(crate) fn create_dir(&self) {
        if std::fs::symlink_metadata(&self.dir).is_ok() {
            return;
        }
        let made = std::fs::DirBuilder::new().mode(0o700).create(&self.dir);
        if let Err(e) = made {
            tracing::warn!(
                "could not create the hooks folder {}: {e}",
                self.dir.display()
            );
        }
    }

    /// The hook called `name` if the agent may run it, or why not (a
    /// sentence naming the hook).
    pub(crate) fn resolve(&self, name: &str) -> Result<PathBuf, String> {
        rm_protocol::params::hook_name(name).map_err(|problem| format!("hook name {problem}"))?;
        let path = self.dir.join(name);
        self.check_dir()
            .map_err(|why| format!("hook `{name}` is refused: the hooks folder {why}"))?;
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "hook `{name}` does not exist: there is no file {}",
                path.display()
            )),
            Err(e) => Err(format!(
                "hook `{name}` cannot be read ({}): {e}",
                path.display()
            )),
            Ok(meta) => match check_file(&meta, self.owner) {
                Ok(()) => Ok(path),
                Err(why) => Err(format!(
                    "hook `{name}` is refused: {} {why}",
                    path.display()
                )),
            },
        }
    }

    /// The usable hooks, by name, and the files the agent refuses to run
    /// with why, both sorted by name. A missing folder has none.
    pub(crate) fn list(&self) -> (Vec<String>, Vec<RefusedHook>) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
            Err(e) => {
                let refused = RefusedHook {
                    name: String::from("."),
                    reason: format!(
                        "the hooks folder {} cannot be read: {e}",
                        self.dir.display()
                    ),
                };
                return (Vec::new(), vec![refused]);
            }
        };
        let dir_problem = self.check_dir().err();
        let mut usable = Vec::new();
        let mut refused = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let reason = if let Err(problem) = rm_protocol::params::hook_name(&name) {
                Some(format!("its name {problem}"))
            } else if let Some(problem) = &dir_problem {
                Some(format!("the hooks folder {problem}"))
            } else {
                match std::fs::symlink_metadata(entry.path()) {
                    Ok(meta) => check_file(&meta, self.owner).err(),
                    Err(e) => Some(format!("cannot be read: {e}")),
                }
            };
            match reason {
                None => usable.push(name),
                Some(reason) => refused.push(RefusedHook { name, reason }),
            }
        }
        usable.sort();
        refused.sort_by(|a, b| a.name.cmp(&b.name));
        (usable, refused)
    }

    fn check_dir(&self) -> Result<(), String> {
        let meta = std::fs::symlink_metadata(&self.dir)
            .map_err(|e| format!("{} cannot be read: {e}", self.dir.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link", self.dir.display()));
        }
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", self.dir.display()));
        }
        check_owner_and_mode(&meta, self.owner)
            .map_err(|why| format!("{} {why}", self.dir.display()))
    }
}

/// Why a hooks folder entry may not run, if it may not.
fn check_file(meta: &std::fs::Metadata, owner: u32) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(String::from(
            "is a symbolic link; put the executable itself in the hooks folder",
        ));
    }
    if !kind.is_file() {
        return Err(String::from("is not a regular file"));
    }
    check_owner_and_mode(meta, owner)?;
    if meta.permissions().mode() & 0o100 == 0 {
        return Err(format!(
            "is not executable by its owner (mode {:04o}; `chmod 0700` it)",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// Owned by root or by `owner`, and not writable by group or others.
fn check_owner_and_mode(meta: &std::fs::Metadata, owner: u32) -> Result<(), String> {
    let uid = meta.uid();
    if uid != 0 && uid != owner {
        let allowed = if owner == 0 {
            String::from("root")
        } else {
            format!("root or uid {owner} (the agent's user)")
        };
        return Err(format!("is owned by uid {uid}, not {allowed}"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "is writable by group or others (mode {mode:04o}; `chmod go-w` it)"
        ));
    }
    Ok(())
}

/// What a hook's run is told and allowed.
pub(crate) struct HookRun<'a> {
    /// The hook's name, for the log prefix and messages.
    pub name: &'a str,
    /// Its file (from [`Hooks::resolve`]).
    pub path: &'a Path,
    /// Its environment, on top of nothing.
    pub env: Vec<(String, String)>,
    /// How long it may run.
    pub timeout: Duration,
}

/// Where a hook's standard output goes.
pub(crate) enum HookStdout<'a> {
    /// Into the job log, line by line.
    Log,
    /// Into restic's standard input (a stdin backup on restic < 0.17).
    Pipe(&'a mut tokio::net::unix::pipe::Sender),
}

/// How a hook ended: `Ok` when it exited 0, otherwise why not.
pub(crate) type HookEnd = Result<(), HookFailure>;

/// Why a hook did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookFailure {
    /// It ran and failed (a non-zero exit, a signal, its time limit, its
    /// output not ending); the text says which.
    Failed(String),
    /// It was stopped from outside (the job was cancelled).
    Stopped,
}

impl std::fmt::Display for HookFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookFailure::Failed(why) => f.write_str(why),
            HookFailure::Stopped => f.write_str("it was stopped (the job was cancelled)"),
        }
    }
}

/// The environment every hook gets: nothing of the agent's but `HOME`,
/// plus what the job is.
pub(crate) fn hook_env(
    job_id: &str,
    kind: &str,
    host: &str,
    status: Option<&str>,
) -> Vec<(String, String)> {
    let mut env = vec![
        (String::from("PATH"), String::from(HOOK_PATH)),
        (
            String::from("HOME"),
            std::env::var("HOME").unwrap_or_else(|_| String::from("/")),
        ),
        (String::from("RM_JOB_ID"), job_id.to_owned()),
        (String::from("RM_JOB_KIND"), kind.to_owned()),
        (String::from("RM_HOST"), host.to_owned()),
    ];
    if let Some(status) = status {
        env.push((String::from("RM_JOB_STATUS"), status.to_owned()));
    }
    env
}

/// Runs one hook to its end: output to `events` as `[name] …` lines (and
/// standard output to `stdout`), stopped on `stop` or its time limit.
pub(crate) async fn run_hook(
    run: &HookRun<'_>,
    stdout: HookStdout<'_>,
    stop: &CancellationToken,
    events: &mpsc::Sender<Event>,
) -> HookEnd {
    if stop.is_cancelled() {
        return Err(HookFailure::Stopped);
    }
    let mut command = tokio::process::Command::new(run.path);
    command
        .env_clear()
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command.spawn().map_err(|e| {
        HookFailure::Failed(format!(
            "could not be started ({}): {e}",
            run.path.display()
        ))
    })?;
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 0)
        .map(Pid::from_raw);
    let Some(group) = group else {
        return Err(HookFailure::Failed(String::from(
            "its process id is unknown",
        )));
    };
    let _guard = GroupGuard(group);
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(HookFailure::Failed(String::from(
            "its output pipes were not set up",
        )));
    };
    let piped = matches!(stdout, HookStdout::Pipe(_));
    let exited = CancellationToken::new();
    let broken = CancellationToken::new();
    let prefix = format!("[{}] ", run.name);
    let forward = async {
        let out = async {
            match stdout {
                HookStdout::Log => {
                    read_lines(out, &prefix, Stream::Stdout, events).await;
                    Ok(())
                }
                HookStdout::Pipe(sender) => {
                    let mut out = out;
                    let copied = tokio::io::copy(&mut out, sender).await;
                    if copied.is_err() {
                        // restic stopped reading: the hook would block.
                        broken.cancel();
                    }
                    copied.map(|_| ())
                }
            }
        };
        let err = read_lines(err, &prefix, Stream::Stderr, events);
        let (out, ()) = tokio::join!(out, err);
        out
    };
    let bounded = async {
        tokio::select! {
            forwarded = forward => Some(forwarded),
            () = async {
                exited.cancelled().await;
                tokio::time::sleep(DRAIN_AFTER_EXIT).await;
            } => None,
        }
    };
    let supervise = async {
        let deadline = tokio::time::sleep(run.timeout);
        tokio::pin!(deadline);
        let mut why: Option<HookFailure> = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = stop.cancelled(), if why.is_none() => {
                    why = Some(HookFailure::Stopped);
                    kill_at = terminate(group);
                }
                () = broken.cancelled(), if why.is_none() => {
                    why = Some(HookFailure::Failed(String::from(
                        "its output could not be passed on: restic stopped reading it",
                    )));
                    kill_at = terminate(group);
                }
                () = &mut deadline, if why.is_none() => {
                    why = Some(HookFailure::Failed(format!(
                        "it timed out after {} and was killed",
                        shown_duration(run.timeout)
                    )));
                    kill_at = terminate(group);
                }
                () = sleep_until(kill_at), if kill_at.is_some() => {
                    let _ = killpg(group, Signal::SIGKILL);
                    kill_at = None;
                }
            }
        };
        exited.cancel();
        (status, why)
    };
    let ((status, why), forwarded) = tokio::join!(supervise, bounded);
    if let Some(why) = why {
        return Err(why);
    }
    let status =
        status.map_err(|e| HookFailure::Failed(format!("could not be waited for: {e}")))?;
    if let Some(code) = status.code().filter(|c| *c != 0) {
        return Err(HookFailure::Failed(format!("it exited with code {code}")));
    }
    if let Some(signal) = status.signal() {
        return Err(HookFailure::Failed(format!(
            "it was killed by signal {signal}"
        )));
    }
    match forwarded {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(HookFailure::Failed(format!(
            "its output could not be passed on: {e}"
        ))),
        // Lines still coming from something the hook left running are
        // not its business; data still coming for restic would be cut.
        None if piped => Err(HookFailure::Failed(format!(
            "its output did not end within {} of its exit (something it started in the background still holds it)",
            shown_duration(DRAIN_AFTER_EXIT)
        ))),
        None => Ok(()),
    }
}

/// `300 ms`, `10 s`.
fn shown_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// SIGTERM to the group; returns when to send SIGKILL.
fn terminate(group: Pid) -> Option<tokio::time::Instant> {
    let _ = killpg(group, Signal::SIGTERM);
    tokio::time::Instant::now().checked_add(HOOK_KILL_GRACE)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Kills a hook's group when its run is abandoned (the job's future
/// dropped) or over: what it left running in the background has no owner.
struct GroupGuard(Pid);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

/// Sends each line of `reader` to `events` as `prefix` + line, lines capped
/// at [`MAX_LINE_BYTES`]. Read errors end the stream.
async fn read_lines(
    reader: impl AsyncRead + Unpin,
    prefix: &str,
    stream: Stream,
    events: &mpsc::Sender<Event>,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = Vec::new();
        let limit = MAX_LINE_BYTES as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut cut = false;
        if !line.ends_with(b"\n") && line.len() >= MAX_LINE_BYTES {
            cut = true;
            // Skip the rest of the line without keeping it.
            loop {
                let mut rest = Vec::new();
                match (&mut reader).take(limit).read_until(b'\n', &mut rest).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.ends_with(b"\n") => break,
                    Ok(_) => {}
                }
            }
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        let mut text = format!("{prefix}{}", String::from_utf8_lossy(&line));
        if cut {
            text.push_str(" […line cut]");
        }
        let _ = events.send(Event::Line { stream, text }).await;
    }
}

/// How a job's outcome reads in `RM_JOB_STATUS`.
fn status_word(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Partial => "partial",
        Status::Cancelled => "cancelled",
        Status::Failed | Status::TimedOut => "failed",
    }
}

/// A hook by name and file.
struct Resolved {
    name: String,
    path: PathBuf,
}

impl Job<'_> {
    /// A backup with its hooks: every named hook is checked first (none
    /// runs if one is missing or refused), then `before` in order (the
    /// first failure fails the job and restic is not run), restic (of
    /// `paths`, or of the `stdin_from` hook's output), `after` in order
    /// whatever happened, then `on_failure` if the job failed. A cancelled
    /// job starts no further hook.
    pub(crate) async fn backup(&mut self, params: &BackupParams) -> (Finished, Value) {
        let hooks = self.runner.hooks();
        let resolve = |names: &[String]| -> Result<Vec<Resolved>, String> {
            names
                .iter()
                .map(|name| {
                    hooks.resolve(name).map(|path| Resolved {
                        name: name.clone(),
                        path,
                    })
                })
                .collect()
        };
        let resolved = (|| {
            let stdin = match &params.stdin_from {
                Some(name) => resolve(std::slice::from_ref(name))?.pop(),
                None => None,
            };
            Ok::<_, String>((
                resolve(&params.hooks.before)?,
                stdin,
                resolve(&params.hooks.after)?,
                resolve(&params.hooks.on_failure)?,
            ))
        })();
        let (before, stdin, after, on_failure) = match resolved {
            Ok(all) => all,
            Err(why) => {
                let error = format!("{why}; nothing was run");
                self.log.line(LogStreamKind::Stderr, error.clone());
                return (
                    finished_without_restic(Status::Failed, Some(error)),
                    Value::Null,
                );
            }
        };

        let mut ran_restic = false;
        let mut finished = None;
        for hook in &before {
            if let Err(why) = self.hook(hook, None).await {
                let status = match why {
                    HookFailure::Stopped => Status::Cancelled,
                    HookFailure::Failed(_) => Status::Failed,
                };
                let error = format!(
                    "before hook `{}` failed: {why}; restic was not run",
                    hook.name
                );
                self.log.line(LogStreamKind::Stderr, error.clone());
                finished = Some(finished_without_restic(status, Some(error)));
                break;
            }
        }
        let mut finished = match finished {
            Some(finished) => finished,
            None => {
                ran_restic = true;
                match &stdin {
                    Some(hook) => self.backup_stdin(params, hook).await,
                    None => self.backup_paths(params).await,
                }
            }
        };
        let stats = if ran_restic {
            finished.stats.clone()
        } else {
            Value::Null
        };

        if finished.status != Status::Cancelled && !self.cancel.is_cancelled() {
            let word = status_word(finished.status);
            for hook in &after {
                if let Err(why) = self.hook(hook, Some(word)).await {
                    let note = format!("after hook `{}` failed: {why}", hook.name);
                    self.log.line(LogStreamKind::Stderr, note.clone());
                    finished = after_failed(finished, note);
                    if self.cancel.is_cancelled() {
                        break;
                    }
                }
            }
        }
        if matches!(finished.status, Status::Failed | Status::TimedOut)
            && !self.cancel.is_cancelled()
        {
            for hook in &on_failure {
                if let Err(why) = self.hook(hook, Some(status_word(Status::Failed))).await {
                    let note = format!("on_failure hook `{}` failed: {why}", hook.name);
                    self.log.line(LogStreamKind::Stderr, note.clone());
                    finished.error = Some(join_errors(finished.error.take(), note));
                    if self.cancel.is_cancelled() {
                        break;
                    }
                }
            }
        }
        (finished, stats)
    }

    /// Runs one `before`/`after`/`on_failure` hook with its output in the log.
    async fn hook(&mut self, hook: &Resolved, status: Option<&str>) -> HookEnd {
        let run = HookRun {
            name: &hook.name,
            path: &hook.path,
            env: hook_env(
                &self.log.job_id.to_string(),
                "backup",
                self.runner.hostname(),
                status,
            ),
            timeout: self.runner.hooks().timeout,
        };
        self.log.line(
            LogStreamKind::Stdout,
            format!("running hook `{}` ({})", hook.name, hook.path.display()),
        );
        let (tx, rx) = mpsc::channel::<Event>(256);
        let cancel = self.cancel.clone();
        let ran = async move {
            let end = run_hook(&run, HookStdout::Log, &cancel, &tx).await;
            drop(tx);
            end
        };
        let (end, ()) = tokio::join!(ran, crate::jobs::pump(self.log, rx, None));
        if end.is_ok() {
            self.log.line(
                LogStreamKind::Stdout,
                format!("hook `{}` succeeded", hook.name),
            );
        }
        end
    }

    /// The restic command backing up `hook`'s output as `filename`, said in
    /// the job's log first (`how`: which way restic reads it), so both ways
    /// read alike there.
    fn stdin_command(
        &mut self,
        hook: &Resolved,
        from: StdinFrom,
        filename: String,
        params: &BackupParams,
        how: &str,
    ) -> Command {
        self.log.line(
            LogStreamKind::Stdout,
            format!("backing up the output of hook `{}` ({how})", hook.name),
        );
        Command::BackupStdin {
            from,
            filename,
            tags: params.tags.clone(),
            host: Some(self.runner.hostname().to_owned()),
        }
    }

    /// Backs up the standard output of the `stdin_from` hook as
    /// `stdin_filename`: restic runs the hook itself on 0.17+
    /// (`--stdin-from-command`, through `env -i` so the hook gets the
    /// hook environment, not restic's, which holds the backend keys);
    /// before, the agent runs it and pipes its output into `--stdin`,
    /// holding restic's input open until the hook's exit status is known so
    /// a failed dump is never stored.
    async fn backup_stdin(&mut self, params: &BackupParams, hook: &Resolved) -> Finished {
        let filename = params
            .stdin_filename
            .clone()
            .unwrap_or_else(|| String::from(DEFAULT_STDIN_FILENAME));
        let env = hook_env(
            &self.log.job_id.to_string(),
            "backup",
            self.runner.hostname(),
            None,
        );
        let failed = |error: String| Finished {
            snapshot_id: None,
            ..finished_without_restic(Status::Failed, Some(error))
        };
        if self.restic.version().supports_stdin_from_command() {
            let env_bin = match rm_restic::resolve_bin(Path::new("env")) {
                Ok(bin) => bin,
                Err(e) => {
                    let error = format!("cannot run hook `{}`: {e}", hook.name);
                    self.log.line(LogStreamKind::Stderr, error.clone());
                    return failed(error);
                }
            };
            let mut argv = vec![
                env_bin.display().to_string(),
                String::from("-i"),
                String::from("--"),
            ];
            argv.extend(env.into_iter().map(|(k, v)| format!("{k}={v}")));
            argv.push(hook.path.display().to_string());
            // restic prefixes the program's stderr lines with
            // `subprocess <program>: `; the log shows the hook's name.
            let relabel = (
                format!("subprocess {}: ", argv[0]),
                format!("[{}] ", hook.name),
            );
            let command = self.stdin_command(
                hook,
                StdinFrom::Command(argv),
                filename,
                params,
                "restic --stdin-from-command",
            );
            let limits = self.limits(&command, self.cancel);
            let (finished, ()) = self
                .command_beside(command, limits, None, Some(relabel), |_, _| async {})
                .await;
            if matches!(finished.status, Status::Failed | Status::TimedOut) {
                return Finished {
                    error: Some(format!(
                        "backing up the output of hook `{}` failed, no snapshot was saved: {}",
                        hook.name,
                        finished.error.as_deref().unwrap_or("restic failed")
                    )),
                    ..finished
                };
            }
            return finished;
        }

        let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(ends) => ends,
            Err(e) => {
                return failed(format!(
                    "could not make a pipe for hook `{}`: {e}",
                    hook.name
                ))
            }
        };
        let command = self.stdin_command(
            hook,
            StdinFrom::Pipe,
            filename,
            params,
            "piped into restic --stdin",
        );
        let restic_stop = self.cancel.child_token();
        let limits = self.limits(&command, &restic_stop);
        let run = HookRun {
            name: &hook.name,
            path: &hook.path,
            env,
            // The dump is the backup: it may take as long as restic may.
            timeout: limits.timeout,
        };
        let cancel = self.cancel.clone();
        let feed = |tx: mpsc::Sender<Event>, restic_exited: CancellationToken| {
            feed_restic(run, write, tx, cancel, restic_stop.clone(), restic_exited)
        };
        let (finished, fed) = self
            .command_beside(command, limits.clone(), Some(read), None, feed)
            .await;
        match fed {
            Ok(()) => finished,
            Err(Fed::ResticFirst) => finished,
            Err(Fed::Hook(HookFailure::Stopped)) if self.cancel.is_cancelled() => Finished {
                snapshot_id: None,
                ..finished_without_restic(Status::Cancelled, Some(String::from("cancelled")))
            },
            Err(Fed::Hook(why)) => {
                let error = format!(
                    "hook `{}` (stdin_from) failed: {why}; restic was stopped before the end of its output, so no snapshot was saved",
                    hook.name
                );
                self.log.line(LogStreamKind::Stderr, error.clone());
                Finished {
                    exit_code: finished.exit_code,
                    ..failed(error)
                }
            }
        }
    }
}

/// Why feeding restic a hook's output did not work.
enum Fed {
    /// The hook failed or was stopped; restic was interrupted.
    Hook(HookFailure),
    /// restic ended before the hook (its own failure is the job's).
    ResticFirst,
}

/// Runs the `stdin_from` hook into restic's stdin (`write`). On success
/// the write end is closed, so restic reads end-of-file and saves the
/// snapshot; on failure restic is stopped first and the write end is only
/// closed once restic has exited, so it never sees the end of a failed
/// dump.
async fn feed_restic(
    run: HookRun<'_>,
    write: OwnedFd,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
    restic_stop: CancellationToken,
    restic_exited: CancellationToken,
) -> Result<(), Fed> {
    let mut sender = match tokio::net::unix::pipe::Sender::from_owned_fd(write) {
        Ok(sender) => sender,
        Err(e) => {
            restic_stop.cancel();
            return Err(Fed::Hook(HookFailure::Failed(format!(
                "could not pass its output to restic: {e}"
            ))));
        }
    };
    let hook_stop = cancel.child_token();
    let mut restic_first = false;
    let end = {
        let hook = run_hook(&run, HookStdout::Pipe(&mut sender), &hook_stop, &tx);
        tokio::pin!(hook);
        tokio::select! {
            end = &mut hook => end,
            () = restic_exited.cancelled() => {
                restic_first = true;
                hook_stop.cancel();
                hook.await
            }
        }
    };
    match end {
        Ok(()) => {
            drop(sender);
            Ok(())
        }
        Err(_) if restic_first => Err(Fed::ResticFirst),
        Err(why) => {
            restic_stop.cancel();
            restic_exited.cancelled().await;
            drop(sender);
            Err(Fed::Hook(why))
        }
    }
}

/// The job's end after an `after` hook failed: a success becomes
/// `partial` (the snapshot exists, but what the hook should have done did
/// not happen); a failure stays one. The hook's failure joins the error.
fn after_failed(finished: Finished, note: String) -> Finished {
    let status = match finished.status {
        Status::Succeeded => Status::Partial,
        other => other,
    };
    Finished {
        status,
        error: Some(join_errors(finished.error.clone(), note)),
        ..finished
    }
}

fn join_errors(first: Option<String>, next: String) -> String {
    match first {
        Some(first) if !first.is_empty() => format!("{first}; {next}"),
        _ => next,
    }
}

/// The outcome word a job's status maps to, for tests.
#[cfg(test)]
fn outcome(status: Status) -> rm_protocol::JobOutcome {
    use rm_protocol::JobOutcome;
    match status {
        Status::Succeeded => JobOutcome::Succeeded,
        Status::Partial => JobOutcome::Partial,
        Status::Cancelled => JobOutcome::Cancelled,
        Status::Failed | Status::TimedOut => JobOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::unix::fs::symlink;

    use super::*;

    fn write_hook(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn hooks_in(state: &tempfile::TempDir) -> Hooks {
        let hooks = Hooks::new(state.path(), Duration::from_secs(30));
        std::fs::create_dir(hooks.dir()).unwrap();
        std::fs::set_permissions(hooks.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        hooks
    }

    #[test]
    fn a_safe_hook_resolves_and_unsafe_ones_are_refused_saying_why() {
        let state = tempfile::tempdir().unwrap();
        let hooks = hooks_in(&state);
        let dir = hooks.dir().to_path_buf();
        write_hook(&dir, "ok", "#!/bin/sh\n", 0o700);
        write_hook(&dir, "group-writable", "#!/bin/sh\n", 0o770);
        write_hook(&dir, "other-writable", "#!/bin/sh\n", 0o702);
        write_hook(&dir, "not-executable", "#!/bin/sh\n", 0o600);
        let foreign = write_hook(&dir, "foreign", "#!/bin/sh\n", 0o700);
        std::os::unix::fs::chown(&foreign, Some(4242), None).unwrap();
        symlink(dir.join("ok"), dir.join("link")).unwrap();
        std::fs::create_dir(dir.join("folder")).unwrap();
        write_hook(&dir, ".hidden", "#!/bin/sh\n", 0o700);

        assert_eq!(hooks.resolve("ok").unwrap(), dir.join("ok"));
        let why = |name: &str| hooks.resolve(name).unwrap_err();
        assert!(
            why("group-writable").contains("writable by group or others (mode 0770"),
            "{}",
            why("group-writable")
        );
        assert!(why("other-writable").contains("mode 0702"));
        assert!(why("not-executable").contains("not executable"));
        assert!(
            why("foreign").contains("owned by uid 4242"),
            "{}",
            why("foreign")
        );
        assert!(why("link").contains("symbolic link"));
        assert!(why("folder").contains("not a regular file"));
        assert!(why("missing").starts_with("hook `missing` does not exist"));
        assert!(why("../x").contains("must be a hook name"));
        for name in ["group-writable", "foreign", "link"] {
            assert!(
                why(name).starts_with(&format!("hook `{name}` is refused: ")),
                "{}",
                why(name)
            );
        }

        let (usable, refused) = hooks.list();
        assert_eq!(usable, vec!["ok".to_owned()]);
        let names: Vec<&str> = refused.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                ".hidden",
                "folder",
                "foreign",
                "group-writable",
                "link",
                "not-executable",
                "other-writable"
            ]
        );
        assert!(refused[0].reason.contains("must be a hook name"));
    }

    #[test]
    fn an_unsafe_hooks_folder_refuses_every_hook_in_it() {
        let state = tempfile::tempdir().unwrap();
        let hooks = hooks_in(&state);
        write_hook(hooks.dir(), "ok", "#!/bin/sh\n", 0o700);
        std::fs::set_permissions(hooks.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = hooks.resolve("ok").unwrap_err();
        assert!(
            why.contains("the hooks folder") && why.contains("mode 0777"),
            "{why}"
        );
        let (usable, refused) = hooks.list();
        assert!(usable.is_empty());
        assert!(
            refused[0].reason.contains("the hooks folder"),
            "{refused:?}"
        );
    }

    #[test]
    fn no_hooks_folder_means_no_hooks() {
        let state = tempfile::tempdir().unwrap();
        let hooks = Hooks::new(state.path(), Duration::from_secs(1));
        assert_eq!(hooks.list(), (Vec::new(), Vec::new()));
        assert!(hooks.resolve("x").unwrap_err().contains("hooks folder"));
        hooks.create_dir();
        let mode = std::fs::metadata(hooks.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(hooks.resolve("x").unwrap_err().contains("does not exist"));
    }

    async fn run_collect(
        body: &str,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> (HookEnd, Vec<String>) {
        let state = tempfile::tempdir().unwrap();
        let hooks = hooks_in(&state);
        let path = write_hook(hooks.dir(), "h", body, 0o700);
        let run = HookRun {
            name: "h",
            path: &path,
            env: hook_env("J1", "backup", "web", Some("succeeded")),
            timeout,
        };
        let (tx, mut rx) = mpsc::channel(64);
        let end = run_hook(&run, HookStdout::Log, stop, &tx).await;
        drop(tx);
        let mut lines = Vec::new();
        while let Some(Event::Line { text, .. }) = rx.recv().await {
            lines.push(text);
        }
        (end, lines)
    }

    #[tokio::test]
    async fn a_hook_sees_only_its_own_environment_and_its_output_is_prefixed() {
        // SAFETY of the test: a variable only this test sets.
        let (end, lines) = run_collect(
            "#!/bin/sh\necho \"id=$RM_JOB_ID kind=$RM_JOB_KIND host=$RM_HOST status=$RM_JOB_STATUS\"\necho oops >&2\nenv | cut -d= -f1 | sort | tr '\\n' ' '\n",
            Duration::from_secs(30),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(end, Ok(()));
        assert!(
            lines.contains(&"[h] id=J1 kind=backup host=web status=succeeded".to_owned()),
            "{lines:?}"
        );
        assert!(lines.contains(&"[h] oops".to_owned()), "{lines:?}");
        let names = lines.iter().find(|l| l.contains("PATH")).unwrap();
        for name in names.trim_start_matches("[h] ").split_whitespace() {
            assert!(
                [
                    "HOME",
                    "PATH",
                    "PWD",
                    "RM_HOST",
                    "RM_JOB_ID",
                    "RM_JOB_KIND",
                    "RM_JOB_STATUS",
                    "SHLVL",
                    "_"
                ]
                .contains(&name),
                "unexpected variable {name} in {names}"
            );
        }
    }

    #[tokio::test]
    async fn failing_slow_and_stopped_hooks_say_why() {
        let never = CancellationToken::new();
        let (end, _) = run_collect("#!/bin/sh\nexit 7\n", Duration::from_secs(30), &never).await;
        assert_eq!(
            end,
            Err(HookFailure::Failed("it exited with code 7".into()))
        );
        let (end, _) =
            run_collect("#!/bin/sh\nsleep 30\n", Duration::from_millis(300), &never).await;
        assert_eq!(
            end,
            Err(HookFailure::Failed(
                "it timed out after 300 ms and was killed".into()
            ))
        );
        let stop = CancellationToken::new();
        stop.cancel();
        let (end, _) = run_collect("#!/bin/sh\nsleep 30\n", Duration::from_secs(30), &stop).await;
        assert_eq!(end, Err(HookFailure::Stopped));
    }

    #[test]
    fn an_after_hook_failure_makes_a_success_partial() {
        let ok = finished_without_restic(Status::Succeeded, None);
        let end = after_failed(ok, "after hook `x` failed: it exited with code 1".into());
        assert_eq!(outcome(end.status), rm_protocol::JobOutcome::Partial);
        assert_eq!(
            end.error.as_deref(),
            Some("after hook `x` failed: it exited with code 1")
        );
        let bad = finished_without_restic(Status::Failed, Some("restic failed".into()));
        let end = after_failed(bad, "after hook `x` failed".into());
        assert_eq!(outcome(end.status), rm_protocol::JobOutcome::Failed);
        assert_eq!(
            end.error.as_deref(),
            Some("restic failed; after hook `x` failed")
        );
    }
}
