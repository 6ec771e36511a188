//! Spawning restic and supervising it: environment, secrets on pipes,
//! process group, output reading, time limit, cancellation.
//!
//! Secrets (the repository password and URL) reach restic on pipes, never
//! in its environment or argv: anything restic starts (`rclone`, `ssh`)
//! inherits its environment, and `/proc/<pid>/environ` outlives the moment
//! restic read it. Each pipe is filled and its write end closed before
//! restic starts; its read end is created close-on-exec, so no other child
//! the agent starts meanwhile inherits it, and only restic's fork places it
//! at a fixed descriptor (3 to 6) that restic opens as `/dev/fd/N`.
//!
//! restic runs in a process group of its own so that stopping it also stops
//! what it started (the `rclone` backend helper, a `--password-command`).
//! Stopping is SIGINT to the group first, which lets restic remove its lock,
//! then SIGKILL after the grace period. Output is read from both pipes at
//! once, line by line, while a second future watches the clock and the
//! cancel token, so a slow event consumer never delays a kill.

mod lines;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ResticError;
use crate::event::{Event, Stream};
use crate::limits::Limits;

use lines::LineReader;
pub(crate) use lines::{split_lines, RawLine};

/// Longest stderr line kept in memory; stderr never carries documents.
pub(crate) const STDERR_LINE_CAP: usize = 1024 * 1024;

/// How long to keep reading after restic exited, in case something it
/// started still holds the pipes open. Then the group is killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Most secrets handed to one child on pipes: the password and the URL,
/// and for `copy` the source repository's two as well.
pub(crate) const MAX_PIPED: usize = 4;

/// Largest secret written to a pipe. A pipe holds 64 KiB before a write
/// blocks, and every pipe is filled before restic starts to read.
const MAX_PIPED_BYTES: usize = 16 * 1024;

/// Lowest descriptor number the child moves the read ends to first, so
/// none is one of the fixed numbers (3 to 6) they end up at, and placing one
/// cannot overwrite another.
const PIPE_FD_FLOOR: RawFd = 10;

/// A secret the child reads from descriptor `fd` (as `/dev/fd/<fd>`).
pub(crate) struct Piped<'a> {
    /// The descriptor number in the child (3 or above).
    pub fd: RawFd,
    /// What it reads there.
    pub data: &'a [u8],
}

/// What to start.
pub(crate) struct Spec<'a> {
    /// The restic binary; a bare name is looked up on our own `PATH`
    /// before spawning, never on the child's.
    pub bin: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// Variables to set, in order (later ones win). Inherited `RESTIC_*`
    /// variables are removed first.
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// Secrets the child reads from pipes.
    pub piped: Vec<Piped<'a>>,
    /// The child's working directory (default: ours).
    pub working_dir: Option<&'a Path>,
    /// Longest stdout line kept in memory (documents can be large).
    pub stdout_line_cap: usize,
    /// The child's standard input: the read end of a pipe the caller
    /// feeds (`backup --stdin`), or `/dev/null` when `None`.
    pub stdin: Option<OwnedFd>,
}

/// Why we stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The cancel token fired.
    Cancelled,
    /// The time limit passed.
    TimedOut,
}

/// How the process ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    /// Exit code, when restic exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that killed it, otherwise.
    pub signal: Option<i32>,
    /// Whether (and why) we stopped it.
    pub stopped: Option<StopReason>,
}

/// Finds `bin` the way the agent's own shell would, once, so the program
/// that runs never depends on a `PATH` in the child's environment (with
/// `.env("PATH", …)` set, `Command` would search the child's `PATH`). A
/// bare name is looked up on our `PATH`; a relative path is taken from our
/// working directory; an absolute path is kept.
pub fn resolve_bin(bin: &Path) -> Result<PathBuf, ResticError> {
    use std::os::unix::fs::PermissionsExt;
    if bin.is_absolute() {
        return Ok(bin.to_path_buf());
    }
    if bin.components().count() > 1 {
        return std::env::current_dir()
            .map(|dir| dir.join(bin))
            .map_err(|source| ResticError::spawn(bin, source));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        // An empty or relative `PATH` entry means a working directory,
        // which is never where the agent's restic lives.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(bin))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| ResticError::NotFound {
            bin: bin.to_path_buf(),
        })
}

/// Fills one pipe per secret and returns the read ends (close-on-exec)
/// with the descriptor each must become in the child. The write ends are closed on return, so restic
/// reads the secret and then end-of-file.
fn fill_pipes(piped: &[Piped<'_>]) -> Result<Vec<(OwnedFd, RawFd)>, ResticError> {
    use nix::fcntl::OFlag;
    if piped.len() > MAX_PIPED {
        return Err(ResticError::InvalidArgument {
            field: "piped",
            reason: format!("at most {MAX_PIPED} secrets can be piped"),
        });
    }
    let mut ends = Vec::with_capacity(piped.len());
    for secret in piped {
        if secret.data.len() > MAX_PIPED_BYTES {
            return Err(ResticError::InvalidArgument {
                field: "piped",
                reason: format!("a secret is longer than {MAX_PIPED_BYTES} bytes"),
            });
        }
        let io = |e: nix::Error| ResticError::Io(std::io::Error::from(e));
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io)?;
        let mut write = std::fs::File::from(write);
        write.write_all(secret.data).map_err(ResticError::Io)?;
        drop(write);
        ends.push((read, secret.fd));
    }
    Ok(ends)
}

/// Prepares restic's fork before exec: places each piped secret's read end
/// at its fixed descriptor, and makes restic receive SIGINT when the
/// process that started it dies, even by SIGKILL, so it removes its lock
/// and exits instead of running on unsupervised, with nobody to report its
/// end. (restic runs in its own process group, so it would not see a
/// signal sent to ours.)
///
/// This is the one `unsafe` block of the workspace: everything that must
/// happen between fork and exec is here.
#[allow(unsafe_code)]
fn child_setup(command: &mut tokio::process::Command, pipes: &[(OwnedFd, RawFd)]) {
    let parent = std::process::id();
    // Plain numbers, copied into the closure: nothing is allocated or
    // dropped in the child.
    let mut places: [(RawFd, RawFd); MAX_PIPED] = [(-1, -1); MAX_PIPED];
    for (place, (read, target)) in places.iter_mut().zip(pipes) {
        *place = (read.as_raw_fd(), *target);
    }
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; fcntl(2), dup2(2), prctl(2) and
    // getppid(2) are, and the closure allocates nothing (its error values
    // are built from errno without allocating). The descriptors it reads
    // stay open in the parent until after the spawn (the caller holds
    // `pipes`). Every read end is first copied above PIPE_FD_FLOOR (a read
    // end may itself be one of 3 to 6), then placed: dup2 leaves the placed
    // descriptor without close-on-exec, so restic inherits exactly those;
    // the originals and the copies close on exec.
    unsafe {
        command.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg};
            let mut high: [RawFd; MAX_PIPED] = [-1; MAX_PIPED];
            for (copy, &(source, _)) in high.iter_mut().zip(&places) {
                if source >= 0 {
                    *copy = fcntl(source, FcntlArg::F_DUPFD_CLOEXEC(PIPE_FD_FLOOR))
                        .map_err(std::io::Error::from)?;
                }
            }
            for (&copy, &(_, target)) in high.iter().zip(&places) {
                if copy >= 0 {
                    nix::unistd::dup2(copy, target).map_err(std::io::Error::from)?;
                }
            }
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGINT))
                .map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl; then nobody
            // would ever send the signal.
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
            }
            Ok(())
        });
    }
}

/// A started restic: the child (its stdout and stderr piped), its pid and
/// its process group.
pub(crate) struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub group: Pid,
}

/// Starts restic as `spec` says, in a process group of its own, with its
/// secrets on pipes and both output streams piped.
pub(crate) fn spawn(spec: &mut Spec<'_>) -> Result<Spawned, ResticError> {
    // Our own PATH decides which program runs, never one in `spec.env`.
    let bin = resolve_bin(spec.bin)?;
    let pipes = fill_pipes(&spec.piped)?;
    let mut command = tokio::process::Command::new(&bin);
    // restic prompts for passwords on stdin; never let it wait on ours.
    // Only data the caller feeds on purpose comes in that way (the password
    // is on its own pipe, so restic never reads it from stdin).
    let stdin = match spec.stdin.take() {
        Some(fed) => Stdio::from(fed),
        None => Stdio::null(),
    };
    command
        .args(spec.args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    child_setup(&mut command, &pipes);
    // An operator's shell may export RESTIC_REPOSITORY or RESTIC_PASSWORD_FILE;
    // only what the caller configured may reach restic.
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"RESTIC_") {
            command.env_remove(&key);
        }
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    if let Some(dir) = spec.working_dir {
        command.current_dir(dir);
    }

    let spawned = command.spawn();
    // restic has its copies now (or never will); ours must not linger for
    // the next child to find. (The command holds the read end of a fed
    // stdin.)
    drop(pipes);
    drop(command);
    let child = spawned.map_err(|source| ResticError::spawn(&bin, source))?;
    // Never signal without a real group id: 0 or a negative id would reach
    // our own process group.
    let Some((pid, group)) = child
        .id()
        .and_then(|pid| Some((pid, i32::try_from(pid).ok().filter(|p| *p > 0)?)))
    else {
        return Err(ResticError::Io(std::io::Error::other(
            "restic's process id is unknown",
        )));
    };
    Ok(Spawned {
        child,
        pid,
        group: Pid::from_raw(group),
    })
}

/// Runs restic to the end. Every output line goes to `on_line`, whose
/// events are forwarded to `events` (progress with `try_send`, since it is
/// lossy by nature; everything else with back-pressure). A closed `events`
/// channel is fine: the events are dropped.
pub(crate) async fn run(
    mut spec: Spec<'_>,
    limits: &Limits,
    mut on_line: impl FnMut(Stream, RawLine) -> Vec<Event>,
    events: &Sender<Event>,
) -> Result<Ended, ResticError> {
    let Spawned {
        mut child,
        pid,
        group,
    } = spawn(&mut spec)?;
    let mut guard = GroupGuard(Some(group));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ResticError::Io(std::io::Error::other(
            "restic's output pipes were not set up",
        )));
    };
    let started = Event::Started {
        pid,
        args: spec.args.to_vec(),
    };
    let exited = CancellationToken::new();
    let readers = Readers {
        stdout: LineReader::new(stdout, spec.stdout_line_cap),
        stderr: LineReader::new(stderr, STDERR_LINE_CAP),
    };
    let ((status, stopped), ()) = tokio::join!(
        supervise(&mut child, group, limits, &exited),
        readers.consume(started, group, &exited, &mut on_line, events),
    );
    guard.0 = None;
    let status = status.map_err(ResticError::Io)?;
    Ok(Ended {
        exit_code: status.code(),
        signal: status.signal(),
        stopped,
    })
}

/// Waits for restic to exit, interrupting it on cancel or timeout.
async fn supervise(
    child: &mut Child,
    group: Pid,
    limits: &Limits,
    exited: &CancellationToken,
) -> (
    std::io::Result<std::process::ExitStatus>,
    Option<StopReason>,
) {
    let deadline = Instant::now().checked_add(limits.timeout);
    let mut stopped = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            // `Child::wait` is cancel-safe, so looping over it is fine.
            status = child.wait() => break status,
            () = limits.cancel.cancelled(), if stopped.is_none() => {
                stopped = Some(StopReason::Cancelled);
                kill_at = interrupt(group, limits.grace);
            }
            () = sleep_until(deadline), if stopped.is_none() => {
                stopped = Some(StopReason::TimedOut);
                kill_at = interrupt(group, limits.grace);
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                signal(group, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    exited.cancel();
    (status, stopped)
}

/// Asks the group to stop; returns when to stop asking.
fn interrupt(group: Pid, grace: Duration) -> Option<Instant> {
    signal(group, Signal::SIGINT);
    // A grace period too large to add means "never force it".
    Instant::now().checked_add(grace)
}

/// Signals the whole group. Errors (the group is already gone) are fine.
fn signal(group: Pid, signal: Signal) {
    let _ = killpg(group, signal);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends one event; see [`run`] for the policy.
async fn emit(events: &Sender<Event>, event: Event) {
    match event {
        Event::Progress(_) => {
            let _ = events.try_send(event);
        }
        other => {
            let _ = events.send(other).await;
        }
    }
}

/// Both output pipes.
struct Readers {
    stdout: LineReader<ChildStdout>,
    stderr: LineReader<ChildStderr>,
}

impl Readers {
    /// Sends `started`, then reads both pipes to their end (or until
    /// [`DRAIN_AFTER_EXIT`] after restic exited), handing each line to
    /// `on_line`. Runs beside [`supervise`], so even a consumer that stops
    /// draining `events` cannot keep the time limit from working, nor keep
    /// us waiting longer than the drain period once restic is gone.
    async fn consume(
        mut self,
        started: Event,
        group: Pid,
        exited: &CancellationToken,
        on_line: &mut impl FnMut(Stream, RawLine) -> Vec<Event>,
        events: &Sender<Event>,
    ) {
        let (mut stdout_open, mut stderr_open) = (true, true);
        let drain = async {
            exited.cancelled().await;
            tokio::time::sleep(DRAIN_AFTER_EXIT).await;
        };
        tokio::pin!(drain);
        tokio::select! {
            biased;
            () = emit(events, started) => {}
            () = &mut drain => return,
        }
        while stdout_open || stderr_open {
            let (stream, read) = tokio::select! {
                // Output that is ready wins over the drain deadline.
                biased;
                read = self.stdout.next_line(), if stdout_open => (Stream::Stdout, read),
                read = self.stderr.next_line(), if stderr_open => (Stream::Stderr, read),
                () = &mut drain => {
                    // restic is gone but something it started still holds
                    // the pipes: that leftover has no purpose any more.
                    signal(group, Signal::SIGKILL);
                    break;
                }
            };
            match read {
                Ok(Some(line)) => {
                    for event in on_line(stream, line) {
                        tokio::select! {
                            biased;
                            () = emit(events, event) => {}
                            () = &mut drain => {
                                signal(group, Signal::SIGKILL);
                                return;
                            }
                        }
                    }
                }
                // A read error on a pipe means it is unusable: treat as closed.
                Ok(None) | Err(_) => match stream {
                    Stream::Stdout => stdout_open = false,
                    Stream::Stderr => stderr_open = false,
                },
            }
        }
    }
}

/// Kills restic's whole group if a run is abandoned midway (its future
/// dropped): `kill_on_drop` alone would reach only restic, not its helpers.
pub(crate) struct GroupGuard(pub(crate) Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            signal(group, Signal::SIGKILL);
        }
    }
}
