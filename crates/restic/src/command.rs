//! The restic commands this crate can run, and how each becomes an argument
//! vector.
//!
//! Building argv here, in one place, is what keeps user data from being read
//! as flags: source paths and snapshot ids go after `--`, and values such as
//! excludes, tags, include paths, the restore target and the host are passed
//! as single `--flag=value` elements, so a value starting with `-` stays a
//! value. Secrets never appear here: the password and the repository URL
//! travel on pipes (see `process`); for `copy` and `init` from another
//! repository, so do the source's, which argv only names by descriptor.

use crate::error::ResticError;
use crate::repository::Repository;

/// Where restic reads the *source* repository's password for
/// [`Command::Copy`] and [`Command::InitFrom`] (`--from-password-file`).
pub(crate) const FROM_PASSWORD_FD: i32 = 5;
/// Where restic reads the source repository's URL
/// (`--from-repository-file`, restic 0.14+).
pub(crate) const FROM_REPOSITORY_FD: i32 = 6;

/// One restic invocation, with typed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `restic init`. Plain: callers wanting "init unless it exists" check
    /// [`crate::Restic::repository_exists`] or treat
    /// [`crate::FailureKind::AlreadyInitialized`] as success.
    Init,
    /// `restic backup` of `paths`.
    Backup {
        /// Source paths (at least one). Relative paths are resolved by restic
        /// against the working directory (see [`crate::Restic::with_working_dir`]).
        paths: Vec<String>,
        /// restic exclude patterns (`--exclude=PATTERN`).
        excludes: Vec<String>,
        /// Tags for the snapshot (`--tag=T`; no commas, restic would split them).
        tags: Vec<String>,
        /// Overrides the hostname recorded in the snapshot.
        host: Option<String>,
        /// What else to leave out, and whether to skip an unchanged snapshot.
        options: BackupOptions,
    },
    /// `restic backup` of one stream stored as the file `filename`: the
    /// output of a program restic runs (`--stdin-from-command`, 0.17+), or
    /// what the caller writes to restic's standard input (`--stdin`; see
    /// [`crate::Restic::run_with_input`]).
    BackupStdin {
        /// Where the data comes from.
        from: StdinFrom,
        /// The file name in the snapshot (no `/`).
        filename: String,
        /// Tags for the snapshot (`--tag=T`).
        tags: Vec<String>,
        /// Overrides the hostname recorded in the snapshot.
        host: Option<String>,
    },
    /// `restic forget` with a retention policy. Never `--prune`: that mixes
    /// prune's text report into forget's JSON; run [`Command::Prune`] after.
    Forget {
        /// Which snapshots to keep (at least one rule).
        policy: RetentionPolicy,
        /// Only consider snapshots of this host.
        host: Option<String>,
    },
    /// `restic prune`: removes data no snapshot references.
    Prune,
    /// `restic check`, optionally reading a subset of the data.
    Check {
        /// Value of `--read-data-subset` (`10%`, `1/5`, `500M`).
        read_data_subset: Option<String>,
    },
    /// `restic unlock`: removes stale locks only (never `--remove-all`).
    Unlock,
    /// `restic snapshots`, optionally of one host.
    Snapshots {
        /// Only snapshots of this host.
        host: Option<String>,
    },
    /// `restic stats` over all snapshots.
    Stats {
        /// Which size to compute.
        mode: StatsMode,
    },
    /// `restic restore` of one snapshot (or part of it) into `target`.
    Restore {
        /// Hex snapshot id (8–64 characters).
        snapshot_id: String,
        /// Paths inside the snapshot to restore (all when empty).
        include: Vec<String>,
        /// Directory to restore into.
        target: String,
        /// Read every restored file back and check it against the
        /// snapshot (`--verify`; restore drills use it).
        verify: bool,
    },
    /// `restic ls <snapshot> <path>`: the path and its direct children.
    Ls {
        /// Hex snapshot id (8–64 characters).
        snapshot_id: String,
        /// Absolute path inside the snapshot.
        path: String,
    },
    /// `restic ls --recursive <snapshot> [dirs…]`: every node at or below
    /// each of `dirs` (the whole snapshot when empty), streamed one
    /// [`crate::Event::Node`] at a time so a large snapshot is never held in
    /// memory. These are exactly the nodes `restore --include=<dir>…` writes.
    LsTree {
        /// Hex snapshot id (8–64 characters).
        snapshot_id: String,
        /// Absolute paths inside the snapshot.
        dirs: Vec<String>,
    },
    /// `restic dump [--archive=tar|zip] <snapshot> <path>`: a file's bytes
    /// as they are, a folder as an archive, on standard output (see
    /// [`crate::Restic::dump`], which streams it).
    Dump {
        /// Hex snapshot id (8–64 characters).
        snapshot_id: String,
        /// Absolute path inside the snapshot (`/` for all of it).
        path: String,
        /// How a folder is packed: `tar` or `zip`.
        archive: Archive,
    },
    /// `restic cat config`: the cheapest "is there a repository" probe.
    CatConfig,
    /// `restic init --copy-chunker-params` from `from`: a new repository
    /// that cuts files into the same chunks as `from`, so snapshots copied
    /// into it deduplicate as well as they did there.
    InitFrom {
        /// The repository whose chunker parameters are copied.
        from: Repository,
    },
    /// `restic copy` of snapshots from `from` into the repository run
    /// against (the destination must exist: see [`Command::InitFrom`]).
    /// Snapshots already copied are skipped by restic itself.
    Copy {
        /// The source repository. Its URL and password reach restic on
        /// pipes (`--from-repository-file`, `--from-password-file`); its
        /// `env` is merged under the destination's (the destination's
        /// value wins for a variable both set).
        from: Repository,
        /// Only snapshots of this host (ignored by restic when
        /// `snapshot_ids` are given: check those belong to it first).
        host: Option<String>,
        /// Only snapshots carrying all of these tags (one `--tag=a,b`).
        tags: Vec<String>,
        /// Only these snapshots (hex ids); all matching ones when empty.
        snapshot_ids: Vec<String>,
    },
    /// `restic list locks`: lock ids, one per line; takes no lock itself.
    ListLocks,
}

/// `backup`'s further choices. Every value becomes one `--flag=value`
/// element, so none can be read as a flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// Exclude patterns matched case-insensitively (`--iexclude=PATTERN`).
    pub iexcludes: Vec<String>,
    /// Leave out folders holding a valid `CACHEDIR.TAG` (`--exclude-caches`).
    pub exclude_caches: bool,
    /// Leave out folders holding a file of this name, or `name:header`
    /// (`--exclude-if-present=NAME`).
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than this size (`500M`; `--exclude-larger-than=SIZE`).
    pub exclude_larger_than: Option<String>,
    /// Stay on the file systems of the source paths (`--one-file-system`).
    pub one_file_system: bool,
    /// Make no snapshot when nothing changed (`--skip-if-unchanged`, restic
    /// 0.17+; [`crate::Restic::run`] refuses it for an older restic).
    pub skip_if_unchanged: bool,
}

/// Where a [`Command::BackupStdin`] reads its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinFrom {
    /// restic runs this program (an absolute path, then its arguments) and
    /// backs up its standard output (`--stdin-from-command`, restic 0.17+).
    /// A program that exits non-zero makes restic fail without a snapshot.
    Command(Vec<String>),
    /// restic reads its standard input (`--stdin`), which the caller feeds.
    Pipe,
}

/// `forget`'s keep rules. Unset rules are not passed; at least one must be
/// set, so an empty policy can never reach restic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the last N snapshots.
    pub keep_last: Option<u32>,
    /// Keep the last snapshot of each of the last N hours.
    pub keep_hourly: Option<u32>,
    /// Keep the last snapshot of each of the last N days.
    pub keep_daily: Option<u32>,
    /// Keep the last snapshot of each of the last N weeks.
    pub keep_weekly: Option<u32>,
    /// Keep the last snapshot of each of the last N months.
    pub keep_monthly: Option<u32>,
    /// Keep the last snapshot of each of the last N years.
    pub keep_yearly: Option<u32>,
    /// Keep everything newer than this duration (`1y5m7d2h`).
    pub keep_within: Option<String>,
}

/// How `restic dump` packs a folder (`--archive=`; zip since restic 0.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Archive {
    /// A tar archive (restic's default).
    #[default]
    Tar,
    /// A zip archive.
    Zip,
}

impl Archive {
    /// restic's name for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Archive::Tar => "tar",
            Archive::Zip => "zip",
        }
    }
}

/// What `restic stats` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatsMode {
    /// The size a full restore of every snapshot would write.
    RestoreSize,
    /// The deduplicated (and compressed) size stored in the repository.
    RawData,
}

impl StatsMode {
    /// restic's name for the mode (`restore-size`, `raw-data`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatsMode::RestoreSize => "restore-size",
            StatsMode::RawData => "raw-data",
        }
    }
}

impl Command {
    /// The restic subcommand, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init => "init",
            Command::Backup { .. } | Command::BackupStdin { .. } => "backup",
            Command::Forget { .. } => "forget",
            Command::Prune => "prune",
            Command::Check { .. } => "check",
            Command::Unlock => "unlock",
            Command::Snapshots { .. } => "snapshots",
            Command::Stats { .. } => "stats",
            Command::Restore { .. } => "restore",
            Command::Ls { .. } | Command::LsTree { .. } => "ls",
            Command::Dump { .. } => "dump",
            Command::CatConfig => "cat config",
            Command::ListLocks => "list locks",
            Command::InitFrom { .. } => "init",
            Command::Copy { .. } => "copy",
        }
    }

    /// The source repository of a command that reads a second one.
    pub(crate) fn source_repository(&self) -> Option<&Repository> {
        match self {
            Command::InitFrom { from } | Command::Copy { from, .. } => Some(from),
            _ => None,
        }
    }

    /// Whether the command only reads the repository's index and
    /// snapshots, so it may run without the lock (`--no-lock`).
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::Snapshots { .. }
                | Command::Stats { .. }
                | Command::Ls { .. }
                | Command::LsTree { .. }
                | Command::Dump { .. }
                | Command::ListLocks
        )
    }

    /// Whether restic prints per-second status for this command, so the
    /// runner asks for a low refresh rate.
    pub(crate) fn emits_progress(&self) -> bool {
        matches!(
            self,
            Command::Backup { .. }
                | Command::BackupStdin { .. }
                | Command::Restore { .. }
                | Command::Check { .. }
                | Command::Prune
                | Command::Copy { .. }
        )
    }

    /// The arguments after the binary name, after validating every
    /// caller-supplied value. `--json` is always passed: commands that still
    /// print text in some versions ignore it.
    pub fn args(&self) -> Result<Vec<String>, ResticError> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |a: &str| args.push(a.to_owned());
        match self {
            Command::Init => push("init"),
            Command::Backup {
                paths,
                excludes,
                tags,
                host,
                options,
            } => {
                if paths.is_empty() {
                    return Err(invalid("paths", "at least one path is needed"));
                }
                push("backup");
                for pattern in excludes {
                    check_value("excludes", pattern)?;
                    push(&format!("--exclude={pattern}"));
                }
                for flag in options.flags()? {
                    push(&flag);
                }
                for tag in tags {
                    check_tag(tag)?;
                    push(&format!("--tag={tag}"));
                }
                push_host(&mut push, host)?;
                push("--json");
                push("--");
                for path in paths {
                    check_value("paths", path)?;
                    push(path);
                }
                return Ok(args);
            }
            Command::BackupStdin {
                from,
                filename,
                tags,
                host,
            } => {
                if filename.is_empty()
                    || filename.contains('/')
                    || filename == "."
                    || filename == ".."
                {
                    return Err(invalid(
                        "filename",
                        format!("{filename:?} is not a plain file name"),
                    ));
                }
                check_value("filename", filename)?;
                push("backup");
                match from {
                    StdinFrom::Command(_) => push("--stdin-from-command"),
                    StdinFrom::Pipe => push("--stdin"),
                }
                push(&format!("--stdin-filename={filename}"));
                for tag in tags {
                    check_tag(tag)?;
                    push(&format!("--tag={tag}"));
                }
                push_host(&mut push, host)?;
                push("--json");
                if let StdinFrom::Command(argv) = from {
                    let Some(program) = argv.first() else {
                        return Err(invalid("from", "no program to run"));
                    };
                    if !program.starts_with('/') {
                        return Err(invalid(
                            "from",
                            format!("the program must be an absolute path, got {program:?}"),
                        ));
                    }
                    push("--");
                    for arg in argv {
                        check_value("from", arg)?;
                        push(arg);
                    }
                }
                return Ok(args);
            }
            Command::Forget { policy, host } => {
                push("forget");
                for flag in policy.flags()? {
                    push(&flag);
                }
                push_host(&mut push, host)?;
            }
            Command::Prune => push("prune"),
            Command::Check { read_data_subset } => {
                push("check");
                if let Some(subset) = read_data_subset {
                    check_subset(subset)?;
                    push(&format!("--read-data-subset={subset}"));
                }
            }
            Command::Unlock => push("unlock"),
            Command::Snapshots { host } => {
                push("snapshots");
                push_host(&mut push, host)?;
            }
            Command::Stats { mode } => {
                push("stats");
                push(&format!("--mode={}", mode.as_str()));
            }
            Command::Restore {
                snapshot_id,
                include,
                target,
                verify,
            } => {
                check_snapshot_id(snapshot_id)?;
                check_value("target", target)?;
                push("restore");
                push(&format!("--target={target}"));
                if *verify {
                    push("--verify");
                }
                for path in include {
                    check_value("include", path)?;
                    // restic reads includes as patterns; a path is meant
                    // literally, so `a[1].txt` must not match `a1.txt`.
                    push(&format!("--include={}", literal_pattern(path)));
                }
                push("--json");
                push("--");
                push(snapshot_id);
                return Ok(args);
            }
            Command::Ls { snapshot_id, path } => {
                check_snapshot_id(snapshot_id)?;
                check_value("path", path)?;
                push("ls");
                push("--json");
                push("--");
                push(snapshot_id);
                push(path);
                return Ok(args);
            }
            Command::LsTree { snapshot_id, dirs } => {
                check_snapshot_id(snapshot_id)?;
                push("ls");
                push("--json");
                push("--recursive");
                push("--");
                push(snapshot_id);
                for dir in dirs {
                    check_value("dirs", dir)?;
                    push(dir);
                }
                return Ok(args);
            }
            Command::Dump {
                snapshot_id,
                path,
                archive,
            } => {
                check_snapshot_id(snapshot_id)?;
                check_value("path", path)?;
                push("dump");
                push(&format!("--archive={}", archive.as_str()));
                // No `--json`: standard output is the data itself.
                push("--");
                push(snapshot_id);
                push(path);
                return Ok(args);
            }
            Command::CatConfig => {
                push("cat");
                push("config");
            }
            Command::ListLocks => {
                push("list");
                push("locks");
            }
            Command::InitFrom { .. } => {
                push("init");
                push("--copy-chunker-params");
                for flag in from_flags() {
                    push(&flag);
                }
            }
            Command::Copy {
                from: _,
                host,
                tags,
                snapshot_ids,
            } => {
                push("copy");
                for flag in from_flags() {
                    push(&flag);
                }
                push_host(&mut push, host)?;
                if !tags.is_empty() {
                    for tag in tags {
                        check_tag(tag)?;
                    }
                    // One list: snapshots carrying all of them.
                    push(&format!("--tag={}", tags.join(",")));
                }
                for id in snapshot_ids {
                    check_snapshot_id(id)?;
                }
                push("--json");
                push("--");
                for id in snapshot_ids {
                    push(id);
                }
                return Ok(args);
            }
        }
        args.push("--json".to_owned());
        Ok(args)
    }
}

impl BackupOptions {
    /// The flags, after checking every value.
    fn flags(&self) -> Result<Vec<String>, ResticError> {
        let mut flags = Vec::new();
        for pattern in &self.iexcludes {
            check_plain("iexcludes", pattern)?;
            flags.push(format!("--iexclude={pattern}"));
        }
        if self.exclude_caches {
            flags.push("--exclude-caches".to_owned());
        }
        for name in &self.exclude_if_present {
            check_plain("exclude_if_present", name)?;
            let file = name.split_once(':').map_or(name.as_str(), |(file, _)| file);
            if file.is_empty() || file.contains('/') {
                return Err(invalid(
                    "exclude_if_present",
                    format!("{name:?} is not a file name"),
                ));
            }
            flags.push(format!("--exclude-if-present={name}"));
        }
        if let Some(size) = &self.exclude_larger_than {
            check_size(size)?;
            flags.push(format!("--exclude-larger-than={size}"));
        }
        if self.one_file_system {
            flags.push("--one-file-system".to_owned());
        }
        if self.skip_if_unchanged {
            flags.push("--skip-if-unchanged".to_owned());
        }
        Ok(flags)
    }
}

impl RetentionPolicy {
    /// A policy keeping only the last `n` snapshots.
    pub fn keep_last(n: u32) -> Self {
        RetentionPolicy {
            keep_last: Some(n),
            ..RetentionPolicy::default()
        }
    }

    /// The `--keep-*=N` flags, refusing an empty policy and zero counts
    /// (restic 0.14 reads 0 as "rule not set", newer ones differ).
    fn flags(&self) -> Result<Vec<String>, ResticError> {
        let counts = [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ];
        let mut flags = Vec::new();
        for (name, value) in counts {
            match value {
                Some(0) => {
                    return Err(invalid(
                        "policy",
                        format!("{name} must be at least 1 (leave it unset instead)"),
                    ))
                }
                Some(n) => flags.push(format!("--{name}={n}")),
                None => {}
            }
        }
        if let Some(within) = &self.keep_within {
            if !is_duration(within) {
                return Err(invalid(
                    "policy",
                    format!("keep-within {within:?} is not a restic duration like 7d or 1y6m"),
                ));
            }
            flags.push(format!("--keep-within={within}"));
        }
        if flags.is_empty() {
            return Err(invalid(
                "policy",
                "at least one keep rule is needed (forget without one would keep everything)",
            ));
        }
        Ok(flags)
    }
}

/// Where restic finds the source repository of `copy` and `init
/// --copy-chunker-params`: descriptors the runner fills (0.14 has both
/// flags). Not `RESTIC_FROM_REPOSITORY`/`RESTIC_FROM_PASSWORD`: those would
/// put the URL and password in restic's environment, which what it starts
/// (`rclone`, `ssh`) inherits.
fn from_flags() -> [String; 2] {
    [
        format!("--from-repository-file=/dev/fd/{FROM_REPOSITORY_FD}"),
        format!("--from-password-file=/dev/fd/{FROM_PASSWORD_FD}"),
    ]
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ResticError {
    ResticError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// Every value: non-empty, and no NUL (which cannot be passed in argv).
fn check_value(field: &'static str, value: &str) -> Result<(), ResticError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL byte"));
    }
    Ok(())
}

/// [`check_value`], and no control character: a newline or escape in a
/// pattern or name is never meant and only garbles restic's logs.
fn check_plain(field: &'static str, value: &str) -> Result<(), ResticError> {
    check_value(field, value)?;
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// `--exclude-larger-than` takes digits and an optional K/M/G/T unit.
fn check_size(size: &str) -> Result<(), ResticError> {
    let digits = size
        .strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
        .unwrap_or(size);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "exclude_larger_than",
            format!("{size:?} is not a size like 500M"),
        ));
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), ResticError> {
    check_value("tags", tag)?;
    if tag.contains(',') {
        return Err(invalid(
            "tags",
            format!("{tag:?} contains a comma, which restic reads as two tags"),
        ));
    }
    Ok(())
}

fn push_host(push: &mut impl FnMut(&str), host: &Option<String>) -> Result<(), ResticError> {
    if let Some(host) = host {
        check_value("host", host)?;
        push(&format!("--host={host}"));
    }
    Ok(())
}

/// `path` as a restic pattern that matches only itself: the pattern
/// characters `\`, `*`, `?` and `[` are escaped with a backslash.
fn literal_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '\\' | '*' | '?' | '[') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Snapshot ids are hex, 8 (short id) to 64 (full id) characters. Anything
/// else (`latest`, `-r`, a path) is refused before restic sees it. The rule
/// is [`rm_core::SnapshotId`]'s, so the agent and this crate cannot differ.
pub(crate) fn check_snapshot_id(id: &str) -> Result<(), ResticError> {
    id.parse::<rm_core::SnapshotId>()
        .map(|_| ())
        .map_err(|e| invalid("snapshot_id", e.to_string()))
}

/// `--read-data-subset` takes `n/t`, `x%` or a size such as `500M`.
fn check_subset(subset: &str) -> Result<(), ResticError> {
    let ok = !subset.is_empty()
        && subset.as_bytes()[0].is_ascii_digit()
        && subset
            .bytes()
            .all(|b| b.is_ascii_digit() || b"./%kKmMgGtT".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "read_data_subset",
            format!("{subset:?} is not like 10%, 1/5 or 500M"),
        ))
    }
}

/// restic durations: one or more `<number><unit>` with units y, m, d, h.
fn is_duration(value: &str) -> bool {
    let mut saw_digit = false;
    let mut parts = 0;
    for b in value.bytes() {
        match b {
            b'0'..=b'9' => saw_digit = true,
            b'y' | b'm' | b'd' | b'h' if saw_digit => {
                saw_digit = false;
                parts += 1;
            }
            _ => return false,
        }
    }
    parts > 0 && !saw_digit
}

#[cfg(test)]
mod tests;
