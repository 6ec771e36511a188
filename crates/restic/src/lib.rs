//! The one place that runs the `restic` command-line program.
//!
//! Everything that spawns restic, builds its arguments, reads its output or
//! maps its exit codes lives here, so the agent never builds a restic
//! command line by hand and version differences (0.14 on Debian bookworm up
//! to current releases) are handled in one crate. The crate knows nothing of
//! the server or the wire protocol: it has its own typed API, which the
//! agent maps to protocol messages.
//!
//! # API
//!
//! ```text
//! Restic::detect(bin) -> Result<Restic>            // runs `restic version`
//!   .with_cache_dir(dir) / .with_working_dir(dir) / .version()
//!   .run(&Repository, &Command, &Limits, &Sender<Event>) -> Result<Finished>
//!   .snapshots(repo, host, limits)            -> Result<Vec<Snapshot>>
//!   .stats(repo, StatsMode, limits)            -> Result<Stats>
//!   .ls_dir(repo, snapshot_id, dir, limits)    -> Result<Vec<Node>>   // direct children
//!   .node(repo, snapshot_id, path, limits)     -> Result<Node>        // what is at a path
//!   .dump(repo, snapshot_id, path, archive, limits) -> Result<Dump>   // AsyncRead of the data
//!   .repository_exists(repo, limits)           -> Result<bool>
//!   .locks_present(repo, limits)               -> Result<bool>
//! replay(command, version, stdout, stderr, exit_code) -> (Vec<Event>, Finished)
//! ```
//!
//! * [`Repository`]: URL, password, backend environment. The URL and the
//!   password reach restic on pipes (`--repository-file=/dev/fd/4`,
//!   `--password-file=/dev/fd/3`), never in its environment or argv, so
//!   the helpers restic starts (`rclone`, `ssh`) never inherit them; the
//!   backend variables go into the child's environment; inherited
//!   `RESTIC_*` variables are removed. `Debug` redacts the secrets. A
//!   command reading a second repository ([`Command::Copy`],
//!   [`Command::InitFrom`]) gets that one's URL and password on pipes too
//!   (`--from-repository-file=/dev/fd/6`, `--from-password-file=/dev/fd/5`)
//!   and both repositories' variables, the destination's winning.
//! * [`resolve_bin`]: the restic binary is always run by absolute path,
//!   found on our own `PATH`, never on one in the child's environment.
//! * [`Command`]: what to run, with typed parameters. User-supplied paths
//!   and ids are never readable as flags (they follow `--`, or travel as one
//!   `--flag=value` element); snapshot ids must be hex.
//! * [`Limits`]: timeout, cancel token, grace period, [`Bandwidth`]
//!   (global `--limit-upload=`/`--limit-download=`). Stopping sends SIGINT
//!   to restic's process group (restic then removes its lock), SIGKILL after
//!   the grace period.
//! * [`Event`]: log lines worth keeping and parsed [`Progress`], streamed
//!   while restic runs.
//! * [`Finished`]: [`Status`] (succeeded, partial, failed, cancelled, timed
//!   out), the recognised [`FailureKind`], restic's own error words, a
//!   per-command `stats` object, the new snapshot id, and the JSON document
//!   of single-document commands.
//!
//! [`Restic::run`] fails only when restic could not be started; a failing
//! restic is a [`Finished`] with `status: Failed`. The typed helpers turn
//! failures into [`ResticError::Command`] carrying restic's message.

mod collect;
mod command;
mod dump;
mod error;
mod event;
mod limits;
mod outcome;
mod parse;
mod process;
mod repository;
mod restic;
mod text;
mod version;

pub use collect::replay;
pub use command::{Archive, BackupOptions, Command, RetentionPolicy, StatsMode, StdinFrom};
pub use dump::Dump;
pub use error::ResticError;
pub use event::{Event, Progress, Stream};
pub use limits::{Bandwidth, Limits};
pub use outcome::{classify, FailureKind, Finished, Status};
pub use parse::ls::{parse_ls, Listing, Node, NodeType};
pub use parse::snapshots::{parse_snapshots, Snapshot, SnapshotSummary};
pub use parse::stats::{parse_stats, Stats};
pub use process::resolve_bin;
pub use repository::Repository;
pub use restic::Restic;
pub use version::{
    detect_version, detect_version_with_timeout, parse_version_output, ResticVersion,
    VERSION_TIMEOUT,
};
