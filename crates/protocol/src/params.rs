//! Job parameters: the typed form of a job's `params` for each kind, and
//! the rules they must meet.
//!
//! The server checks them when a job is created (a 400 naming the field) and
//! the agent checks them again before running restic (a `bad_params`
//! rejection), so a bad path can never reach restic from either side. Paths
//! must be absolute and normalised: no `.` or `..` components, no control
//! characters, so nothing here can be read by restic as a flag.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::messages::JobKind;

/// Longest path or pattern accepted.
const MAX_PATH_CHARS: usize = 4096;
/// Most paths, excludes or includes in one job.
const MAX_ITEMS: usize = 1000;
/// Longest tag.
const MAX_TAG_CHARS: usize = 128;
/// Longest file name for `exclude_if_present` (most file systems' limit).
const MAX_NAME_BYTES: usize = 255;
/// Longest hook name.
pub const MAX_HOOK_NAME_CHARS: usize = 64;
/// Most hooks in one of `hooks.before`, `hooks.after`, `hooks.on_failure`.
const MAX_HOOKS: usize = 16;
/// Longest `stdin_filename`, in bytes (a file name on most file systems).
const MAX_FILENAME_BYTES: usize = 255;
/// The file name a stdin backup is stored as when `stdin_filename` is not given.
pub const DEFAULT_STDIN_FILENAME: &str = "stdin";

/// `backup`: what to back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Absolute paths to back up (none with `stdin_from`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// restic exclude patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Tags for the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// restic exclude patterns matched case-insensitively (`--iexclude`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iexcludes: Vec<String>,
    /// Leave out folders holding a valid `CACHEDIR.TAG` (`--exclude-caches`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_caches: bool,
    /// Leave out folders holding a file of one of these names
    /// (`--exclude-if-present`; restic reads `name:header` as "only when
    /// the file starts with header").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than this restic size (`500M`, `2G`, `1024`
    /// bytes; `--exclude-larger-than`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_larger_than: Option<String>,
    /// Stay on the file systems of the given paths (`--one-file-system`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub one_file_system: bool,
    /// Make no snapshot when nothing changed since the last one
    /// (`--skip-if-unchanged`, restic 0.17+; older restic ignores it and the
    /// job log says so).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_if_unchanged: bool,
    /// Upload limit in KiB/s (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
    /// Hooks (executables in the host's `<state-dir>/hooks`) to run around
    /// the backup, by name.
    #[serde(default, skip_serializing_if = "BackupHooks::is_empty")]
    pub hooks: BackupHooks,
    /// Back up the standard output of this hook instead of `paths`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_from: Option<String>,
    /// The file name the output of `stdin_from` is stored as in the
    /// snapshot ([`DEFAULT_STDIN_FILENAME`] when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_filename: Option<String>,
}

impl BackupParams {
    /// The file name a stdin backup is stored as.
    pub fn stdin_filename(&self) -> &str {
        self.stdin_filename
            .as_deref()
            .unwrap_or(DEFAULT_STDIN_FILENAME)
    }
}

/// A backup's hooks, by name: the host decides what each name runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHooks {
    /// Run in order before restic; the first that fails fails the job and
    /// restic is not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Run in order after the job, whatever happened (`RM_JOB_STATUS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Run in order after `after`, only when the job failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
}

impl BackupHooks {
    /// Whether no hook is named.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty() && self.on_failure.is_empty()
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `forget`: the retention policy, and whether to prune afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetParams {
    /// A named policy from [`RETENTION_PRESETS`] instead of keep_* values;
    /// replaced by its values when the params are parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Keep the newest N snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// … days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// … weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// … months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// … years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep everything newer than this restic duration (`1y6m`, `30d`, `12h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Run `prune` after `forget` (as a second restic command).
    #[serde(default)]
    pub prune: bool,
    /// Upload limit in KiB/s for both commands (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s for both commands (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
}

/// `prune`: only bandwidth limits (`{}` and `null` mean none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneParams {
    /// Upload limit in KiB/s (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
}

/// Runs of a rotating check that read all of the data, unless `cycle` says.
pub const DEFAULT_CYCLE: u32 = 30;
/// Most runs a rotating check's cycle may have: restic reads one pack in
/// `cycle` per run, so beyond this a run reads next to nothing.
pub const MAX_CYCLE: u32 = 10_000;

/// Which data a `check` reads besides the structure, when not one fixed
/// `read_data_subset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadData {
    /// Each run reads the next `n/cycle` subset of the pack data, so
    /// `cycle` runs read all of it (DESIGN §10).
    Rotate,
}

/// `check`: optionally read part of the data too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// restic's `--read-data-subset`: `n/m`, `x%` or a size like `500M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    /// `rotate`: read the next subset of a cycle of `cycle` runs (not
    /// with `read_data_subset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data: Option<ReadData>,
    /// Runs in a rotating check's cycle, 1 to [`MAX_CYCLE`] (default
    /// [`DEFAULT_CYCLE`]); only with `read_data: "rotate"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<u32>,
    /// The subset (1 to `cycle`) this run reads; left out, the agent takes
    /// the next of its own cursor. The server fills it in when it
    /// dispatches a rotating check, from its record of the repository, so
    /// hosts sharing a repository go through one cycle together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<u32>,
    /// Upload limit in KiB/s (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
}

impl CheckParams {
    /// The cycle of a rotating check (`None`: not rotating).
    pub fn rotation(&self) -> Option<u32> {
        self.read_data
            .map(|ReadData::Rotate| self.cycle.unwrap_or(DEFAULT_CYCLE))
    }

    fn validate(&self) -> Result<(), ParamsError> {
        if let Some(subset) = &self.read_data_subset {
            data_subset(subset)
                .map_err(|problem| ParamsError::new("params.read_data_subset", problem))?;
            if self.read_data.is_some() {
                return Err(ParamsError::new(
                    "params.read_data",
                    "cannot be combined with `read_data_subset`: a rotating check picks its own subset; use one or the other",
                ));
            }
        }
        let Some(cycle) = self.rotation() else {
            for (field, set) in [
                ("params.cycle", self.cycle.is_some()),
                ("params.subset", self.subset.is_some()),
            ] {
                if set {
                    return Err(ParamsError::new(
                        field,
                        "is only used with `read_data: \"rotate\"`",
                    ));
                }
            }
            return Ok(());
        };
        if !(1..=MAX_CYCLE).contains(&cycle) {
            return Err(ParamsError::new(
                "params.cycle",
                format!("must be 1 to {MAX_CYCLE} runs, got {cycle}"),
            ));
        }
        match self.subset {
            Some(n) if !(1..=cycle).contains(&n) => Err(ParamsError::new(
                "params.subset",
                format!("must be 1 to the cycle ({cycle}), got {n}"),
            )),
            _ => Ok(()),
        }
    }
}

/// `restore`: which snapshot, which parts, where to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// The snapshot (8 to 64 hex characters).
    pub snapshot_id: String,
    /// The host whose repository holds the snapshot, when restoring onto
    /// another host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_host_id: Option<String>,
    /// Absolute paths inside the snapshot to restore (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Absolute folder to restore into (`/` is the original location).
    pub target: String,
    /// Upload limit in KiB/s (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
}

/// `copy`: which of this host's snapshots to copy to the repository's
/// `copy_to` (all of them when neither is given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyParams {
    /// Only snapshots carrying all of these tags (`--tag=a,b`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only these snapshots (8 to 64 hex characters each); each must be
    /// one of this host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_ids: Vec<String>,
    /// Upload limit in KiB/s (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
}

/// A drill's sample size when `sample_files` is not given.
pub const DEFAULT_DRILL_FILES: u32 = 20;
/// The most files one drill may sample.
pub const MAX_DRILL_FILES: u32 = 1000;
/// A drill's byte budget when `max_bytes` is not given (1 GiB).
pub const DEFAULT_DRILL_BYTES: u64 = 1 << 30;

/// `drill`: restore a random sample of a snapshot's files into a scratch
/// folder the agent chooses, verify them and record the evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillParams {
    /// The snapshot (8 to 64 hex characters); the host's latest when left
    /// out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// How many files to sample, 1 to [`MAX_DRILL_FILES`]
    /// ([`DEFAULT_DRILL_FILES`] when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_files: Option<u32>,
    /// The most bytes the sample may add up to, at least 1
    /// ([`DEFAULT_DRILL_BYTES`] when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Upload limit in KiB/s (`--limit-upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload_kib: Option<u32>,
    /// Download limit in KiB/s (`--limit-download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_download_kib: Option<u32>,
}

impl DrillParams {
    /// How many files the drill samples.
    pub fn sample_files(&self) -> u32 {
        self.sample_files.unwrap_or(DEFAULT_DRILL_FILES)
    }

    /// The drill's byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(DEFAULT_DRILL_BYTES)
    }
}

/// A job's bandwidth caps in KiB/s, for restic's global `--limit-upload`
/// and `--limit-download` (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// Upload limit in KiB/s.
    pub upload_kib: Option<u32>,
    /// Download limit in KiB/s.
    pub download_kib: Option<u32>,
}

/// Parameters of a job, typed by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobParams {
    /// `init`.
    Init,
    /// `backup`.
    Backup(BackupParams),
    /// `forget` (and maybe `prune`).
    Forget(ForgetParams),
    /// `prune`.
    Prune(PruneParams),
    /// `check`.
    Check(CheckParams),
    /// `unlock` (stale locks only).
    Unlock,
    /// `snapshots` (refreshes the stored list).
    Snapshots,
    /// `stats` (refreshes repository statistics).
    Stats,
    /// `restore`.
    Restore(RestoreParams),
    /// `copy` to the repository's `copy_to`.
    Copy(CopyParams),
    /// A restore drill.
    Drill(DrillParams),
}

/// A parameter that breaks the rules; says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct ParamsError {
    /// The offending field, e.g. `params.paths[2]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ParamsError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> ParamsError {
        ParamsError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Kinds whose params must be empty.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl JobParams {
    /// Parses and checks `params` for a job of `kind`. `null` means `{}`.
    pub fn parse(kind: JobKind, params: &Value) -> Result<JobParams, ParamsError> {
        let params = if params.is_null() {
            Value::Object(Default::default())
        } else {
            params.clone()
        };
        let parsed = match kind {
            JobKind::Init => decode::<NoParams>(params).map(|_| JobParams::Init)?,
            JobKind::Prune => JobParams::Prune(decode(params)?),
            JobKind::Unlock => decode::<NoParams>(params).map(|_| JobParams::Unlock)?,
            JobKind::Snapshots => decode::<NoParams>(params).map(|_| JobParams::Snapshots)?,
            JobKind::Stats => decode::<NoParams>(params).map(|_| JobParams::Stats)?,
            JobKind::Backup => JobParams::Backup(decode(params)?),
            JobKind::Forget => JobParams::Forget(expand_preset(decode(params)?)?),
            JobKind::Check => JobParams::Check(decode(params)?),
            JobKind::Restore => JobParams::Restore(decode(params)?),
            JobKind::Copy => JobParams::Copy(decode(params)?),
            JobKind::Drill => JobParams::Drill(decode(params)?),
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// The job kind these params belong to.
    pub fn kind(&self) -> JobKind {
        match self {
            JobParams::Init => JobKind::Init,
            JobParams::Backup(_) => JobKind::Backup,
            JobParams::Forget(_) => JobKind::Forget,
            JobParams::Prune(_) => JobKind::Prune,
            JobParams::Check(_) => JobKind::Check,
            JobParams::Unlock => JobKind::Unlock,
            JobParams::Snapshots => JobKind::Snapshots,
            JobParams::Stats => JobKind::Stats,
            JobParams::Restore(_) => JobKind::Restore,
            JobParams::Copy(_) => JobKind::Copy,
            JobParams::Drill(_) => JobKind::Drill,
        }
    }

    /// The params as JSON (the normalised form that is stored and sent).
    pub fn to_value(&self) -> Value {
        let value = match self {
            JobParams::Backup(p) => serde_json::to_value(p),
            JobParams::Forget(p) => serde_json::to_value(p),
            JobParams::Check(p) => serde_json::to_value(p),
            JobParams::Restore(p) => serde_json::to_value(p),
            JobParams::Prune(p) => serde_json::to_value(p),
            JobParams::Copy(p) => serde_json::to_value(p),
            JobParams::Drill(p) => serde_json::to_value(p),
            _ => Ok(Value::Object(Default::default())),
        };
        value.unwrap_or(Value::Null)
    }

    /// The job's bandwidth caps (none for kinds that take none).
    pub fn bandwidth(&self) -> Bandwidth {
        let (upload_kib, download_kib) = match self {
            JobParams::Backup(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Forget(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Prune(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Check(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Restore(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Copy(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Drill(p) => (p.limit_upload_kib, p.limit_download_kib),
            JobParams::Init | JobParams::Unlock | JobParams::Snapshots | JobParams::Stats => {
                (None, None)
            }
        };
        Bandwidth {
            upload_kib,
            download_kib,
        }
    }

    fn validate(&self) -> Result<(), ParamsError> {
        let bandwidth = self.bandwidth();
        for (field, value) in [
            ("params.limit_upload_kib", bandwidth.upload_kib),
            ("params.limit_download_kib", bandwidth.download_kib),
        ] {
            if value == Some(0) {
                return Err(ParamsError::new(
                    field,
                    "must be at least 1 KiB/s (leave it out for no limit)",
                ));
            }
        }
        match self {
            JobParams::Backup(p) => {
                match &p.stdin_from {
                    Some(from) => {
                        hook_name(from)
                            .map_err(|problem| ParamsError::new("params.stdin_from", problem))?;
                        if !p.paths.is_empty() {
                            return Err(ParamsError::new(
                                "params.paths",
                                "must be empty or left out with `stdin_from` (the backup is the hook's output)",
                            ));
                        }
                        if let Some(name) = &p.stdin_filename {
                            stdin_filename(name).map_err(|problem| {
                                ParamsError::new("params.stdin_filename", problem)
                            })?;
                        }
                    }
                    None => {
                        if p.stdin_filename.is_some() {
                            return Err(ParamsError::new(
                                "params.stdin_filename",
                                "is only used with `stdin_from`",
                            ));
                        }
                        if p.paths.is_empty() {
                            return Err(ParamsError::new(
                                "params.paths",
                                "must list at least one path (or set `stdin_from`)",
                            ));
                        }
                    }
                }
                items("params.paths", &p.paths, absolute_path)?;
                items("params.excludes", &p.excludes, pattern)?;
                items("params.iexcludes", &p.iexcludes, pattern)?;
                items(
                    "params.exclude_if_present",
                    &p.exclude_if_present,
                    file_name,
                )?;
                if let Some(size) = &p.exclude_larger_than {
                    byte_size(size).map_err(|problem| {
                        ParamsError::new("params.exclude_larger_than", problem)
                    })?;
                }
                items("params.tags", &p.tags, tag)?;
                for (field, names) in [
                    ("params.hooks.before", &p.hooks.before),
                    ("params.hooks.after", &p.hooks.after),
                    ("params.hooks.on_failure", &p.hooks.on_failure),
                ] {
                    if names.len() > MAX_HOOKS {
                        return Err(ParamsError::new(
                            field,
                            format!("has more than {MAX_HOOKS} hooks"),
                        ));
                    }
                    items(field, names, hook_name)?;
                }
                Ok(())
            }
            JobParams::Forget(p) => {
                let keeps = [
                    ("keep_last", p.keep_last),
                    ("keep_hourly", p.keep_hourly),
                    ("keep_daily", p.keep_daily),
                    ("keep_weekly", p.keep_weekly),
                    ("keep_monthly", p.keep_monthly),
                    ("keep_yearly", p.keep_yearly),
                ];
                for (name, value) in keeps {
                    if value == Some(0) {
                        return Err(ParamsError::new(
                            format!("params.{name}"),
                            "must be at least 1 (leave it out to not use it)",
                        ));
                    }
                }
                if let Some(within) = &p.keep_within {
                    duration(within)
                        .map_err(|problem| ParamsError::new("params.keep_within", problem))?;
                }
                if keeps.iter().all(|(_, v)| v.is_none()) && p.keep_within.is_none() {
                    return Err(ParamsError::new(
                        "params",
                        "must set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within",
                    ));
                }
                Ok(())
            }
            JobParams::Check(p) => p.validate(),
            JobParams::Restore(p) => {
                snapshot_id(&p.snapshot_id)
                    .map_err(|problem| ParamsError::new("params.snapshot_id", problem))?;
                if let Some(source) = &p.source_host_id {
                    let ulid_like =
                        source.len() == 26 && source.chars().all(|c| c.is_ascii_alphanumeric());
                    if !ulid_like {
                        return Err(ParamsError::new(
                            "params.source_host_id",
                            "must be a host id (a 26-character ULID)",
                        ));
                    }
                }
                items("params.include", &p.include, absolute_path)?;
                absolute_path(&p.target)
                    .map_err(|problem| ParamsError::new("params.target", problem))
            }
            JobParams::Copy(p) => {
                items("params.tags", &p.tags, tag)?;
                items("params.snapshot_ids", &p.snapshot_ids, snapshot_id)
            }
            JobParams::Drill(p) => {
                if let Some(id) = &p.snapshot_id {
                    snapshot_id(id)
                        .map_err(|problem| ParamsError::new("params.snapshot_id", problem))?;
                }
                if let Some(files) = p.sample_files {
                    if !(1..=MAX_DRILL_FILES).contains(&files) {
                        return Err(ParamsError::new(
                            "params.sample_files",
                            format!("must be 1 to {MAX_DRILL_FILES}"),
                        ));
                    }
                }
                if p.max_bytes == Some(0) {
                    return Err(ParamsError::new(
                        "params.max_bytes",
                        "must be at least 1 (leave it out for 1 GiB)",
                    ));
                }
                Ok(())
            }
            JobParams::Init
            | JobParams::Prune(_)
            | JobParams::Unlock
            | JobParams::Snapshots
            | JobParams::Stats => Ok(()),
        }
    }
}

/// A named retention policy: name, what it keeps, and the keep_* values
/// (`[last, hourly, daily, weekly, monthly, yearly]`).
pub struct RetentionPreset {
    /// The name used as `params.preset`.
    pub name: &'static str,
    /// What it keeps, in words.
    pub description: &'static str,
    keep: [Option<u32>; 6],
}

impl RetentionPreset {
    /// The policy as forget params (without `prune`).
    pub fn params(&self) -> ForgetParams {
        let [keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly] =
            self.keep;
        ForgetParams {
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            ..ForgetParams::default()
        }
    }
}

/// The retention presets offered beside custom policies.
pub const RETENTION_PRESETS: [RetentionPreset; 3] = [
    RetentionPreset {
        name: "minimal",
        description: "7 daily snapshots",
        keep: [None, None, Some(7), None, None, None],
    },
    RetentionPreset {
        name: "standard",
        description: "7 daily, 4 weekly and 12 monthly snapshots",
        keep: [None, None, Some(7), Some(4), Some(12), None],
    },
    RetentionPreset {
        name: "long-term",
        description: "24 hourly, 14 daily, 8 weekly, 24 monthly and 5 yearly snapshots",
        keep: [None, Some(24), Some(14), Some(8), Some(24), Some(5)],
    },
];

/// Replaces `preset` by its keep_* values; a preset mixed with keep_*
/// values is ambiguous and refused.
fn expand_preset(params: ForgetParams) -> Result<ForgetParams, ParamsError> {
    let Some(name) = &params.preset else {
        return Ok(params);
    };
    let preset = RETENTION_PRESETS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = RETENTION_PRESETS.iter().map(|p| p.name).collect();
            ParamsError::new(
                "params.preset",
                format!("`{name}` is not a preset (known: {})", names.join(", ")),
            )
        })?;
    let custom = [
        params.keep_last,
        params.keep_hourly,
        params.keep_daily,
        params.keep_weekly,
        params.keep_monthly,
        params.keep_yearly,
    ];
    if custom.iter().any(Option::is_some) || params.keep_within.is_some() {
        return Err(ParamsError::new(
            "params.preset",
            "cannot be combined with keep_* values; use one or the other",
        ));
    }
    Ok(ForgetParams {
        prune: params.prune,
        limit_upload_kib: params.limit_upload_kib,
        limit_download_kib: params.limit_download_kib,
        ..preset.params()
    })
}

/// Decodes params, naming the offending field on failure.
fn decode<T: DeserializeOwned>(params: Value) -> Result<T, ParamsError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            String::from("params")
        } else {
            format!("params.{path}")
        };
        ParamsError::new(field, e.into_inner().to_string())
    })
}

/// Checks every item of a list with `check`, naming the index that fails.
fn items(
    field: &str,
    values: &[String],
    check: fn(&str) -> Result<(), String>,
) -> Result<(), ParamsError> {
    if values.len() > MAX_ITEMS {
        return Err(ParamsError::new(
            field,
            format!("has more than {MAX_ITEMS} entries"),
        ));
    }
    for (i, value) in values.iter().enumerate() {
        check(value).map_err(|problem| ParamsError::new(format!("{field}[{i}]"), problem))?;
    }
    Ok(())
}

fn no_control(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        Err(String::from("must not contain control characters"))
    } else if value.chars().count() > MAX_PATH_CHARS {
        Err(format!("is longer than {MAX_PATH_CHARS} characters"))
    } else {
        Ok(())
    }
}

/// An absolute, normalised path: starts with `/` (so it can never read as
/// a flag), no `.`/`..` components, no empty ones (`//`); one trailing `/`
/// is allowed. Paths are checked as written, never resolved, so what is
/// checked is what restic gets.
pub fn absolute_path(path: &str) -> Result<(), String> {
    no_control(path)?;
    if !path.starts_with('/') {
        return Err(format!(
            "must be an absolute path (starting with `/`), got `{path}`"
        ));
    }
    // Components between the leading `/` and an optional trailing one.
    let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
    if inner.is_empty() {
        return if path == "/" {
            Ok(())
        } else {
            Err(format!("must not contain `//`, got `{path}`"))
        };
    }
    for component in inner.split('/') {
        match component {
            "." | ".." => {
                return Err(format!(
                    "must not contain `.` or `..` components, got `{path}`"
                ))
            }
            "" => return Err(format!("must not contain `//`, got `{path}`")),
            _ => {}
        }
    }
    Ok(())
}

fn pattern(value: &str) -> Result<(), String> {
    no_control(value)?;
    if value.trim().is_empty() {
        return Err(String::from("must not be empty"));
    }
    Ok(())
}

/// A file name (no folder): what `--exclude-if-present` looks for in each
/// folder. restic reads a `:` as "name:header", so one is allowed.
fn file_name(value: &str) -> Result<(), String> {
    no_control(value)?;
    let name = value.split_once(':').map_or(value, |(name, _)| name);
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("must be a file name, got `{value}`"));
    }
    if name.contains('/') {
        return Err(format!(
            "must be a file name without `/` (it is looked for in every folder), got `{value}`"
        ));
    }
    if value.len() > MAX_NAME_BYTES + MAX_PATH_CHARS {
        return Err(String::from("is too long"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "must be a file name of at most {MAX_NAME_BYTES} bytes"
        ));
    }
    Ok(())
}

/// A restic size: digits with an optional K, M, G or T unit (either case;
/// no unit means bytes), at least 1.
pub fn byte_size(value: &str) -> Result<(), String> {
    let bad = || {
        format!("must be a size like `500M`, `2G` or `1024` (digits and an optional K, M, G or T), got `{value}`")
    };
    let digits = value
        .strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
        .unwrap_or(value);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if digits.bytes().all(|b| b == b'0') {
        return Err(format!("must be at least 1, got `{value}`"));
    }
    Ok(())
}

/// A hook's name: a file name in the host's hooks folder, so no `/`, no
/// leading `.` or `-`: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most
/// [`MAX_HOOK_NAME_CHARS`] characters.
pub fn hook_name(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || value.len() > MAX_HOOK_NAME_CHARS {
        return Err(format!(
            "must be a hook name (a letter or digit, then letters, digits, `.`, `_` or `-`; at most {MAX_HOOK_NAME_CHARS} characters), got {}",
            quoted(value)
        ));
    }
    Ok(())
}

/// A plain file name for a stdin backup's snapshot: no `/`, no control
/// characters, not `.` or `..`.
fn stdin_filename(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_FILENAME_BYTES {
        return Err(format!("must be 1 to {MAX_FILENAME_BYTES} bytes"));
    }
    if value.contains('/') || value.chars().any(char::is_control) {
        return Err(format!(
            "must be a plain file name without `/` or control characters, got {}",
            quoted(value)
        ));
    }
    if value == "." || value == ".." {
        return Err(format!("must be a file name, got `{value}`"));
    }
    Ok(())
}

/// A value for an error message: quoted, control characters escaped, cut
/// when long.
fn quoted(value: &str) -> String {
    let shown: String = value.chars().take(80).collect();
    let cut = if shown.len() < value.len() { "…" } else { "" };
    format!("{:?}{cut}", shown)
}

fn tag(value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_TAG_CHARS {
        return Err(format!("must be 1 to {MAX_TAG_CHARS} characters"));
    }
    if value
        .chars()
        .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(String::from(
            "must not contain commas, spaces or control characters",
        ));
    }
    Ok(())
}

/// 8 to 64 lower-case or upper-case hex characters.
pub fn snapshot_id(value: &str) -> Result<(), String> {
    if (8..=64).contains(&value.len()) && value.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "must be a snapshot id (8 to 64 hex characters), got `{value}`"
        ))
    }
}

/// restic durations: one or more `<number><unit>` with units y, m, d, h.
fn duration(value: &str) -> Result<(), String> {
    let mut digits = 0;
    let mut units = 0;
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits += 1;
        } else if "ymdh".contains(c) && digits > 0 {
            digits = 0;
            units += 1;
        } else {
            digits = usize::MAX;
            break;
        }
    }
    if units > 0 && digits == 0 {
        Ok(())
    } else {
        Err(format!(
            "must be a duration like `1y6m`, `30d` or `12h`, got `{value}`"
        ))
    }
}

/// restic's `--read-data-subset`: `n/m` (1 ≤ n ≤ m), `x%` (0 < x ≤ 100) or
/// a size with an optional K/M/G/T unit.
fn data_subset(value: &str) -> Result<(), String> {
    let bad = || format!("must be `n/m`, `x%` or a size like `500M`, got `{value}`");
    if let Some((n, m)) = value.split_once('/') {
        let (n, m) = (
            n.parse::<u32>().map_err(|_| bad())?,
            m.parse::<u32>().map_err(|_| bad())?,
        );
        return if n >= 1 && n <= m { Ok(()) } else { Err(bad()) };
    }
    if let Some(percent) = value.strip_suffix('%') {
        let percent: f64 = percent.parse().map_err(|_| bad())?;
        return if percent > 0.0 && percent <= 100.0 {
            Ok(())
        } else {
            Err(bad())
        };
    }
    let digits = value.trim_end_matches(['K', 'M', 'G', 'T']);
    if !digits.is_empty()
        && value.len() - digits.len() <= 1
        && digits.chars().all(|c| c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn err(kind: JobKind, params: Value) -> String {
        JobParams::parse(kind, &params).unwrap_err().to_string()
    }

    #[test]
    fn a_backup_needs_absolute_normalised_paths() {
        let ok = JobParams::parse(
            JobKind::Backup,
            &json!({"paths": ["/srv/data", "/etc"], "excludes": ["*.tmp"], "tags": ["nightly"]}),
        )
        .unwrap();
        assert_eq!(ok.kind(), JobKind::Backup);
        assert!(err(JobKind::Backup, json!({"paths": []})).starts_with("`params.paths`"));
        assert!(err(JobKind::Backup, json!({"paths": ["relative"]})).contains("params.paths[0]"));
        assert!(
            err(JobKind::Backup, json!({"paths": ["/a", "/a/../etc"]})).contains("params.paths[1]")
        );
        assert!(
            err(JobKind::Backup, json!({"paths": ["--password-file=/x"]})).contains("absolute")
        );
        assert!(err(JobKind::Backup, json!({"paths": ["/a\nb"]})).contains("control"));
        assert!(err(JobKind::Backup, json!({"paths": ["/a//b"]})).contains("`//`"));
        assert!(err(JobKind::Backup, json!({"paths": ["//"]})).contains("`//`"));
        assert!(err(JobKind::Backup, json!({"paths": ["/a/."]})).contains("params.paths[0]"));
        assert!(JobParams::parse(
            JobKind::Backup,
            &json!({"paths": ["/", "/srv/", "/a/.b/..c"]})
        )
        .is_ok());
        assert!(
            err(JobKind::Backup, json!({"paths": ["/a"], "tags": ["a,b"]}))
                .contains("params.tags[0]")
        );
        assert!(
            err(JobKind::Backup, json!({"paths": ["/a"], "excludes": [" "]}))
                .contains("params.excludes[0]")
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        assert!(err(JobKind::Backup, json!({"path": ["/a"]})).contains("path"));
        assert!(err(JobKind::Backup, json!({"paths": "/a"})).starts_with("`params.paths`"));
        assert!(err(JobKind::Prune, json!({"dry_run": true})).contains("dry_run"));
        assert!(err(JobKind::Forget, json!({"keep_last": "one"})).contains("params.keep_last"));
    }

    #[test]
    fn forget_needs_a_policy() {
        assert!(err(JobKind::Forget, json!({})).contains("at least one of keep_last"));
        assert!(err(JobKind::Forget, json!({"prune": true})).contains("at least one"));
        assert!(err(JobKind::Forget, json!({"keep_last": 0})).contains("params.keep_last"));
        assert!(err(JobKind::Forget, json!({"keep_within": "soon"})).contains("params.keep_within"));
        let ok = JobParams::parse(
            JobKind::Forget,
            &json!({"keep_daily": 7, "keep_within": "1y6m", "prune": true}),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn a_preset_stands_for_its_keep_values() {
        let p = JobParams::parse(
            JobKind::Forget,
            &json!({"preset": "standard", "prune": true}),
        )
        .unwrap();
        assert_eq!(
            p.to_value(),
            json!({"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "prune": true})
        );
        let limited = JobParams::parse(
            JobKind::Forget,
            &json!({"preset": "minimal", "limit_upload_kib": 64}),
        )
        .unwrap();
        assert_eq!(
            limited.to_value(),
            json!({"keep_daily": 7, "prune": false, "limit_upload_kib": 64})
        );
        assert!(err(JobKind::Forget, json!({"preset": "forever"})).contains("not a preset"));
        assert!(err(
            JobKind::Forget,
            json!({"preset": "standard", "keep_last": 3})
        )
        .contains("params.preset"));
    }

    #[test]
    fn check_subsets_follow_restic_syntax() {
        for good in ["1/5", "5/5", "10%", "2.5%", "500M", "1G", "100"] {
            assert!(
                JobParams::parse(JobKind::Check, &json!({"read_data_subset": good})).is_ok(),
                "{good}"
            );
        }
        for bad in ["0/5", "6/5", "0%", "101%", "-1", "5MB", "x"] {
            assert!(
                err(JobKind::Check, json!({"read_data_subset": bad})).contains("read_data_subset"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rotating_check_takes_a_cycle_and_maybe_a_subset() {
        let parsed = |params: Value| match JobParams::parse(JobKind::Check, &params).unwrap() {
            JobParams::Check(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(parsed(json!({"read_data": "rotate"})).rotation(), Some(30));
        let three = parsed(json!({"read_data": "rotate", "cycle": 3, "subset": 3}));
        assert_eq!(three.rotation(), Some(3));
        assert_eq!(three.subset, Some(3));
        assert_eq!(parsed(json!({})).rotation(), None);
        assert_eq!(
            parsed(json!({"read_data": "rotate", "cycle": 10000})).rotation(),
            Some(MAX_CYCLE)
        );
        // The normalised form keeps what was given, nothing more.
        assert_eq!(
            JobParams::parse(
                JobKind::Check,
                &json!({"read_data": "rotate", "cycle": 7, "limit_download_kib": 64})
            )
            .unwrap()
            .to_value(),
            json!({"read_data": "rotate", "cycle": 7, "limit_download_kib": 64})
        );
    }

    #[test]
    fn rotating_check_params_are_refused_naming_the_field() {
        for (params, field) in [
            (json!({"read_data": "all"}), "`params.read_data`"),
            (json!({"read_data": true}), "`params.read_data`"),
            (
                json!({"read_data": "rotate", "read_data_subset": "1/3"}),
                "`params.read_data`",
            ),
            (json!({"read_data": "rotate", "cycle": 0}), "`params.cycle`"),
            (
                json!({"read_data": "rotate", "cycle": 10001}),
                "`params.cycle`",
            ),
            (
                json!({"read_data": "rotate", "cycle": -1}),
                "`params.cycle`",
            ),
            (json!({"cycle": 3}), "`params.cycle`"),
            (json!({"subset": 1}), "`params.subset`"),
            (
                json!({"read_data": "rotate", "cycle": 3, "subset": 4}),
                "`params.subset`",
            ),
            (
                json!({"read_data": "rotate", "subset": 0}),
                "`params.subset`",
            ),
        ] {
            let error = err(JobKind::Check, params.clone());
            assert!(error.starts_with(field), "{params}: {error}");
        }
    }

    #[test]
    fn restores_need_a_snapshot_and_an_absolute_target() {
        let ok = json!({"snapshot_id": "1a2b3c4d", "include": ["/srv/data/a"], "target": "/tmp/restore"});
        assert!(JobParams::parse(JobKind::Restore, &ok).is_ok());
        assert!(JobParams::parse(
            JobKind::Restore,
            &json!({"snapshot_id": "1a2b3c4d", "target": "/"})
        )
        .is_ok());
        assert!(err(
            JobKind::Restore,
            json!({"snapshot_id": "latest", "target": "/x"})
        )
        .contains("snapshot_id"));
        assert!(err(
            JobKind::Restore,
            json!({"snapshot_id": "--help00", "target": "/x"})
        )
        .contains("snapshot_id"));
        assert!(err(
            JobKind::Restore,
            json!({"snapshot_id": "1a2b3c4d", "target": "x"})
        )
        .contains("params.target"));
        assert!(err(
            JobKind::Restore,
            json!({"snapshot_id": "1a2b3c4d", "target": "/x/../etc"})
        )
        .contains("params.target"));
        assert!(err(JobKind::Restore, json!({"snapshot_id": "1a2b3c4d"})).contains("target"));
        assert!(err(
            JobKind::Restore,
            json!({"snapshot_id": "1a2b3c4d", "target": "/x", "source_host_id": "web"})
        )
        .contains("source_host_id"));
    }

    #[test]
    fn kinds_without_params_accept_null_and_empty_only() {
        for kind in [
            JobKind::Init,
            JobKind::Prune,
            JobKind::Unlock,
            JobKind::Snapshots,
            JobKind::Stats,
        ] {
            assert!(JobParams::parse(kind, &Value::Null).is_ok());
            assert!(JobParams::parse(kind, &json!({})).is_ok());
            assert!(JobParams::parse(kind, &json!({"x": 1})).is_err());
        }
    }

    #[test]
    fn backup_options_are_checked_naming_the_field() {
        let all = json!({
            "paths": ["/srv"],
            "iexcludes": ["*.JPG"],
            "exclude_caches": true,
            "exclude_if_present": [".nobackup", "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"],
            "exclude_larger_than": "500M",
            "one_file_system": true,
            "skip_if_unchanged": true,
            "limit_upload_kib": 512,
            "limit_download_kib": 1024,
        });
        let parsed = JobParams::parse(JobKind::Backup, &all).unwrap();
        assert_eq!(parsed.to_value(), all);
        assert_eq!(
            parsed.bandwidth(),
            Bandwidth {
                upload_kib: Some(512),
                download_kib: Some(1024)
            }
        );
        for good in ["1", "1024", "500M", "2G", "1T", "10k", "3m"] {
            let p = json!({"paths": ["/a"], "exclude_larger_than": good});
            assert!(JobParams::parse(JobKind::Backup, &p).is_ok(), "{good}");
        }
        let cases = [
            (json!({"iexcludes": ["ok", ""]}), "`params.iexcludes[1]`"),
            (
                json!({"iexcludes": ["a\nb"]}),
                "`params.iexcludes[0]` must not contain control",
            ),
            (
                json!({"exclude_if_present": [".x", "a/b"]}),
                "`params.exclude_if_present[1]` must be a file name without `/`",
            ),
            (
                json!({"exclude_if_present": [""]}),
                "`params.exclude_if_present[0]`",
            ),
            (
                json!({"exclude_if_present": [".."]}),
                "`params.exclude_if_present[0]`",
            ),
            (
                json!({"exclude_if_present": [":header"]}),
                "`params.exclude_if_present[0]`",
            ),
            (
                json!({"exclude_larger_than": "500MB"}),
                "`params.exclude_larger_than` must be a size",
            ),
            (
                json!({"exclude_larger_than": "-1"}),
                "`params.exclude_larger_than`",
            ),
            (
                json!({"exclude_larger_than": "--help"}),
                "`params.exclude_larger_than`",
            ),
            (
                json!({"exclude_larger_than": "1.5G"}),
                "`params.exclude_larger_than`",
            ),
            (
                json!({"exclude_larger_than": ""}),
                "`params.exclude_larger_than`",
            ),
            (
                json!({"exclude_larger_than": "0"}),
                "`params.exclude_larger_than` must be at least 1",
            ),
            (
                json!({"exclude_larger_than": 500}),
                "`params.exclude_larger_than`",
            ),
            (json!({"exclude_caches": "yes"}), "`params.exclude_caches`"),
            (json!({"one_file_system": 1}), "`params.one_file_system`"),
            (
                json!({"skip_if_unchanged": null}),
                "`params.skip_if_unchanged`",
            ),
            (
                json!({"limit_upload_kib": 0}),
                "`params.limit_upload_kib` must be at least 1",
            ),
            (json!({"limit_upload_kib": -5}), "`params.limit_upload_kib`"),
            (
                json!({"limit_download_kib": "512"}),
                "`params.limit_download_kib`",
            ),
            (
                json!({"limit_download_kib": 1.5}),
                "`params.limit_download_kib`",
            ),
        ];
        for (extra, expected) in cases {
            let mut params = json!({"paths": ["/a"]});
            for (k, v) in extra.as_object().unwrap() {
                params[k] = v.clone();
            }
            let e = err(JobKind::Backup, params);
            assert!(e.starts_with(expected), "{extra}: {e}");
        }
    }

    #[test]
    fn bandwidth_limits_apply_to_restore_check_prune_and_forget() {
        let limits = json!({"limit_upload_kib": 100, "limit_download_kib": 200});
        let with = |base: Value| {
            let mut v = base;
            for (k, x) in limits.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let expected = Bandwidth {
            upload_kib: Some(100),
            download_kib: Some(200),
        };
        for (kind, base) in [
            (
                JobKind::Restore,
                json!({"snapshot_id": "1a2b3c4d", "target": "/tmp/r"}),
            ),
            (JobKind::Check, json!({})),
            (JobKind::Prune, json!({})),
            (JobKind::Forget, json!({"keep_last": 3, "prune": true})),
        ] {
            let parsed = JobParams::parse(kind, &with(base.clone())).unwrap();
            assert_eq!(parsed.bandwidth(), expected, "{kind}");
            assert_eq!(JobParams::parse(kind, &parsed.to_value()).unwrap(), parsed);
            let mut zero = base;
            zero["limit_download_kib"] = json!(0);
            assert!(
                err(kind, zero).starts_with("`params.limit_download_kib` must be at least 1"),
                "{kind}"
            );
        }
        // A prune with no params is still `{}` (and `null` still parses).
        let prune = JobParams::parse(JobKind::Prune, &Value::Null).unwrap();
        assert_eq!(prune, JobParams::Prune(PruneParams::default()));
        assert_eq!(prune.to_value(), json!({}));
        assert_eq!(prune.bandwidth(), Bandwidth::default());
        assert!(err(JobKind::Unlock, json!({"limit_upload_kib": 5})).contains("limit_upload_kib"));
    }

    #[test]
    fn hooks_and_stdin_backups_are_checked_naming_the_field() {
        let ok = json!({
            "hooks": {"before": ["pre-dump", "a.b_c"], "after": ["x"], "on_failure": ["page-me"]},
            "stdin_from": "pg-dump",
            "stdin_filename": "db.sql",
        });
        let p = JobParams::parse(JobKind::Backup, &ok).unwrap();
        assert_eq!(p.to_value(), ok);
        let JobParams::Backup(b) = &p else { panic!() };
        assert_eq!(b.stdin_filename(), "db.sql");
        let plain = JobParams::parse(JobKind::Backup, &json!({"stdin_from": "d"})).unwrap();
        let JobParams::Backup(b) = plain else {
            panic!()
        };
        assert_eq!(b.stdin_filename(), "stdin");
        assert!(JobParams::parse(
            JobKind::Backup,
            &json!({"paths": ["/a"], "hooks": {"before": ["x"]}})
        )
        .is_ok());

        let cases = [
            (
                json!({"paths": ["/a"], "hooks": {"before": ["../x"]}}),
                "`params.hooks.before[0]`",
            ),
            (
                json!({"paths": ["/a"], "hooks": {"after": ["ok", "a/b"]}}),
                "`params.hooks.after[1]`",
            ),
            (
                json!({"paths": ["/a"], "hooks": {"on_failure": [".hidden"]}}),
                "`params.hooks.on_failure[0]`",
            ),
            (
                json!({"paths": ["/a"], "hooks": {"before": ["-x"]}}),
                "`params.hooks.before[0]`",
            ),
            (
                json!({"paths": ["/a"], "hooks": {"before": ["x".repeat(65)]}}),
                "`params.hooks.before[0]`",
            ),
            (
                json!({"paths": ["/a"], "hooks": {"before": [""]}}),
                "`params.hooks.before[0]`",
            ),
            (
                json!({"paths": ["/a"], "hooks": {"during": ["x"]}}),
                "`params.hooks.during`",
            ),
            (json!({"stdin_from": "../x"}), "`params.stdin_from`"),
            (
                json!({"stdin_from": "d", "paths": ["/a"]}),
                "`params.paths`",
            ),
            (
                json!({"stdin_from": "d", "stdin_filename": "a/b"}),
                "`params.stdin_filename`",
            ),
            (
                json!({"stdin_from": "d", "stdin_filename": "a\nb"}),
                "`params.stdin_filename`",
            ),
            (
                json!({"stdin_from": "d", "stdin_filename": ""}),
                "`params.stdin_filename`",
            ),
            (
                json!({"stdin_from": "d", "stdin_filename": ".."}),
                "`params.stdin_filename`",
            ),
            (
                json!({"paths": ["/a"], "stdin_filename": "x"}),
                "`params.stdin_filename`",
            ),
            (json!({}), "`params.paths`"),
        ];
        for (params, field) in cases {
            let e = err(JobKind::Backup, params.clone());
            assert!(e.starts_with(field), "{params}: {e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("h{i}")).collect();
        assert!(err(
            JobKind::Backup,
            json!({"paths": ["/a"], "hooks": {"after": many}})
        )
        .starts_with("`params.hooks.after`"));
    }

    #[test]
    fn drill_defaults_to_the_latest_snapshot_twenty_files_and_one_gib() {
        let parsed = JobParams::parse(JobKind::Drill, &Value::Null).unwrap();
        assert_eq!(parsed.to_value(), json!({}));
        let JobParams::Drill(drill) = parsed else {
            panic!("not a drill: {parsed:?}");
        };
        assert_eq!(drill.snapshot_id, None);
        assert_eq!(drill.sample_files(), 20);
        assert_eq!(drill.max_bytes(), 1 << 30);
        let all = json!({
            "snapshot_id": "1a2b3c4d",
            "sample_files": 1000,
            "max_bytes": 4096,
            "limit_download_kib": 64,
        });
        let parsed = JobParams::parse(JobKind::Drill, &all).unwrap();
        assert_eq!(parsed.to_value(), all);
        assert_eq!(parsed.kind(), JobKind::Drill);
        assert_eq!(parsed.bandwidth().download_kib, Some(64));
    }

    #[test]
    fn drill_params_out_of_range_name_the_field() {
        let cases = [
            (json!({"snapshot_id": "latest"}), "`params.snapshot_id`"),
            (json!({"snapshot_id": "--host=x"}), "`params.snapshot_id`"),
            (json!({"sample_files": 0}), "`params.sample_files`"),
            (json!({"sample_files": 1001}), "`params.sample_files`"),
            (json!({"sample_files": -1}), "`params.sample_files`"),
            (json!({"max_bytes": 0}), "`params.max_bytes`"),
            (json!({"max_bytes": "1G"}), "`params.max_bytes`"),
            (
                json!({"limit_download_kib": 0}),
                "`params.limit_download_kib`",
            ),
            (json!({"target": "/tmp"}), "`params.target`"),
        ];
        for (params, field) in cases {
            let e = err(JobKind::Drill, params.clone());
            assert!(e.starts_with(field), "{params}: {e}");
        }
    }

    #[test]
    fn copy_takes_tags_snapshot_ids_and_limits_only() {
        let all = json!({
            "tags": ["daily"],
            "snapshot_ids": ["1a2b3c4d", "a".repeat(64)],
            "limit_upload_kib": 256,
        });
        let parsed = JobParams::parse(JobKind::Copy, &all).unwrap();
        assert_eq!(parsed.to_value(), all);
        assert_eq!(parsed.bandwidth().upload_kib, Some(256));
        assert_eq!(
            JobParams::parse(JobKind::Copy, &Value::Null)
                .unwrap()
                .to_value(),
            json!({})
        );
        let cases = [
            (
                json!({"snapshot_ids": ["latest"]}),
                "`params.snapshot_ids[0]`",
            ),
            (
                json!({"snapshot_ids": ["1a2b3c4d", "--host=x"]}),
                "`params.snapshot_ids[1]`",
            ),
            (json!({"tags": ["a,b"]}), "`params.tags[0]`"),
            (json!({"tags": ["-"], "to": "/x"}), "`params.to`"),
            (json!({"host": "other"}), "`params.host`"),
            (
                json!({"limit_download_kib": 0}),
                "`params.limit_download_kib`",
            ),
        ];
        for (params, field) in cases {
            let e = err(JobKind::Copy, params.clone());
            assert!(e.starts_with(field), "{params}: {e}");
        }
    }

    #[test]
    fn params_round_trip_through_their_json() {
        let p = JobParams::parse(JobKind::Backup, &json!({"paths": ["/a"]})).unwrap();
        assert_eq!(p.to_value(), json!({"paths": ["/a"]}));
        assert_eq!(JobParams::parse(JobKind::Backup, &p.to_value()).unwrap(), p);
    }
}

/// The variables a repository's `env` may set: exactly those restic
/// (0.14 to 0.19) and its backends document as credentials or options,
/// minus the ones that name a file, a program or a place to write (see
/// [`refused_env`]). Everything else a sender could put in restic's
/// environment (`PATH`, `LD_PRELOAD`, `HOME`, `GODEBUG`, `RCLONE_CONFIG`…)
/// changes how restic or its helpers run on a host where the agent is root.
pub const ALLOWED_ENV: &[&str] = &[
    // restic itself.
    "RESTIC_COMPRESSION",
    "RESTIC_PACK_SIZE",
    "RESTIC_READ_CONCURRENCY",
    "RESTIC_KEY_HINT",
    // Certificates to trust for the repository's TLS: a file the sender
    // names, but only read as public certificates, for a connection to the
    // URL the sender chooses anyway.
    "RESTIC_CACERT",
    // REST server.
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
    // Amazon S3 and compatible.
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "RESTIC_AWS_ASSUME_ROLE_ARN",
    "RESTIC_AWS_ASSUME_ROLE_SESSION_NAME",
    "RESTIC_AWS_ASSUME_ROLE_EXTERNAL_ID",
    "RESTIC_AWS_ASSUME_ROLE_POLICY",
    "RESTIC_AWS_ASSUME_ROLE_REGION",
    "RESTIC_AWS_ASSUME_ROLE_STS_ENDPOINT",
    // Backblaze B2.
    "B2_ACCOUNT_ID",
    "B2_ACCOUNT_KEY",
    // Azure Blob Storage.
    "AZURE_ACCOUNT_NAME",
    "AZURE_ACCOUNT_KEY",
    "AZURE_ACCOUNT_SAS",
    "AZURE_ENDPOINT_SUFFIX",
    // Google Cloud Storage.
    "GOOGLE_PROJECT_ID",
    "GOOGLE_ACCESS_TOKEN",
    // OpenStack Swift (keystone v1, v2, v3, application credentials, token).
    "ST_AUTH",
    "ST_USER",
    "ST_KEY",
    "OS_AUTH_URL",
    "OS_REGION_NAME",
    "OS_USERNAME",
    "OS_USER_ID",
    "OS_PASSWORD",
    "OS_TENANT_ID",
    "OS_TENANT_NAME",
    "OS_USER_DOMAIN_NAME",
    "OS_USER_DOMAIN_ID",
    "OS_PROJECT_NAME",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_ID",
    "OS_TRUST_ID",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_NAME",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "OS_STORAGE_URL",
    "OS_AUTH_TOKEN",
    "SWIFT_DEFAULT_CONTAINER_POLICY",
    // rclone: the two values restic's manual names; neither runs anything.
    "RCLONE_BWLIMIT",
    "RCLONE_VERBOSE",
    // Go's HTTP client (every HTTP backend).
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Why a variable that is not in [`ALLOWED_ENV`] is refused, for the ones
/// restic or its helpers do read (so the message says what the danger is,
/// not just "unknown").
fn refused_env(name: &str) -> Option<&'static str> {
    const SET_BY_US: &str =
        "is set by restic-manager itself; use `url` and `password` (restic gets them on a pipe)";
    const RUNS: &str =
        "could make restic run another program, so it is never taken from the server";
    const LOADS: &str = "could make restic or a program it starts load other code, so it is never taken from the server";
    const WRITES: &str =
        "chooses where restic writes on the host, which the agent decides (it sets the cache folder itself)";
    const FILE: &str = "names a file on the host for restic to use as a credential, and such a file can make restic run a program or fetch any URL; set it up on the host (root's default location) instead";
    let reason = match name {
        "RESTIC_REPOSITORY" | "RESTIC_REPOSITORY_FILE" | "RESTIC_PASSWORD" | "RESTIC_PASSWORD_FILE" => SET_BY_US,
        "RESTIC_PROGRESS_FPS" => "is set by restic-manager itself (one status line a second)",
        "RESTIC_PASSWORD_COMMAND" | "RESTIC_FROM_PASSWORD_COMMAND" | "RESTIC_PASSWORD_COMMAND2" => RUNS,
        "AZURE_FORCE_CLI_CREDENTIAL" => "makes restic run the Azure CLI (`az`) for a token, so it could make restic run another program",
        "AWS_SHARED_CREDENTIALS_FILE" | "AWS_CONFIG_FILE" => "names a credentials file whose `credential_process` could make restic run another program",
        "GOOGLE_APPLICATION_CREDENTIALS" | "RESTIC_TLS_CLIENT_CERT" => FILE,
        "PATH" => "chooses which programs restic and its helpers start, so it could make restic run another program",
        "SHELL" | "SSH_ASKPASS" | "SSH_AUTH_SOCK" | "GIT_SSH" | "EDITOR" | "PAGER" | "BROWSER" => RUNS,
        "HOME" | "XDG_CONFIG_HOME" | "XDG_CACHE_HOME" => "chooses which configuration restic and ssh read and where they write, so it could make restic run another program",
        "TMPDIR" | "TMP" | "RESTIC_CACHE_DIR" | "DEBUG_LOG" => WRITES,
        "GODEBUG" | "GOTRACEBACK" | "GOMAXPROCS" | "GOGC" | "GOMEMLIMIT" | "GOFLAGS" => "changes how the Go runtime inside restic behaves",
        "RESTIC_HOST" => "changes which snapshots restic-manager sees as this host's; it is not a backend setting",
        _ if name.starts_with("LD_") => LOADS,
        _ if name.starts_with("RCLONE_") => "is an rclone option, and rclone options (`RCLONE_CONFIG`, `RCLONE_SFTP_SSH`, …) can make rclone run another program; only `RCLONE_BWLIMIT` and `RCLONE_VERBOSE` are taken",
        _ if name.starts_with("RESTIC_FROM_") => "is set by restic-manager itself for `restic copy` (the source is the host's own repository; the destination is `copy_to`)",
        _ => return None,
    };
    Some(reason)
}

/// Checks repository settings: a URL restic cannot mistake for a flag, a
/// password restic reads back unchanged, and only variables from
/// [`ALLOWED_ENV`]. The server checks before storing or pushing settings,
/// the agent again before restic starts.
pub fn validate_repository(repo: &crate::RepositoryConfig) -> Result<(), ParamsError> {
    validate_location("", &repo.url, &repo.password, &repo.env)?;
    if let Some(copy) = &repo.copy_to {
        validate_location("copy_to.", &copy.url, &copy.password, &copy.env)?;
        // The same repository twice would copy every snapshot onto itself
        // (restic skips them all) and protect nothing.
        if copy.url.trim_end_matches('/') == repo.url.trim_end_matches('/') {
            return Err(ParamsError::new(
                "copy_to.url",
                "must name another repository than `url` (a copy to the same repository protects nothing)",
            ));
        }
    }
    Ok(())
}

/// One repository's URL, password and variables; `prefix` (`""` or
/// `copy_to.`) goes before the field names in errors.
fn validate_location(
    prefix: &str,
    url: &str,
    password: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ParamsError> {
    let field = |name: &str| format!("{prefix}{name}");
    let raw_url = url;
    let url = url.trim();
    if url.is_empty() {
        return Err(ParamsError::new(field("url"), "must not be empty"));
    }
    if url.starts_with('-') {
        return Err(ParamsError::new(field("url"), "must not start with `-`"));
    }
    if url != raw_url {
        return Err(ParamsError::new(
            field("url"),
            "must not start or end with spaces",
        ));
    }
    no_control(url).map_err(|problem| ParamsError::new(field("url"), problem))?;
    if url.len() > MAX_PATH_CHARS {
        return Err(ParamsError::new(
            field("url"),
            format!("must be at most {MAX_PATH_CHARS} bytes"),
        ));
    }
    if password.is_empty() {
        return Err(ParamsError::new(field("password"), "must not be empty"));
    }
    // restic reads the password from a pipe (`--password-file`) and trims
    // white space around it, so such a password would silently change.
    if password.trim() != password {
        return Err(ParamsError::new(
            field("password"),
            "must not start or end with white space (restic trims it when reading the password)",
        ));
    }
    if password.len() > MAX_PATH_CHARS || password.contains('\0') {
        return Err(ParamsError::new(
            field("password"),
            format!("must be at most {MAX_PATH_CHARS} bytes without NUL characters"),
        ));
    }
    if env.len() > 100 {
        return Err(ParamsError::new(
            field("env"),
            "has more than 100 variables",
        ));
    }
    for (name, value) in env {
        let plain = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(ParamsError::new(
                field(&format!("env.{name}")),
                "must be an upper-case variable name (A-Z, 0-9, _)",
            ));
        }
        if !ALLOWED_ENV.contains(&name.as_str()) {
            let problem = match refused_env(name) {
                Some(reason) => reason.to_owned(),
                None => format!(
                    "is not a variable restic or its backends read; allowed: {}",
                    ALLOWED_ENV.join(", ")
                ),
            };
            return Err(ParamsError::new(field(&format!("env.{name}")), problem));
        }
        if value.len() > 8192 || value.contains('\0') {
            return Err(ParamsError::new(
                field(&format!("env.{name}")),
                "must be at most 8192 bytes without NUL characters",
            ));
        }
        if let Some(problem) = restic_value_problem(name, value) {
            return Err(ParamsError::new(field(&format!("env.{name}")), problem));
        }
    }
    Ok(())
}

/// Values restic itself rejects: 0.18 and 0.19 stop every command with
/// "Fatal: invalid value for …" (0.14 silently ignored most of them), so
/// a repository set with one would fail every job on newer hosts only.
fn restic_value_problem(name: &str, value: &str) -> Option<&'static str> {
    let number = || {
        value
            .parse::<u64>()
            .ok()
            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
    };
    match name {
        // `fastest` and `better` exist from 0.19 (0.18 refuses them, 0.14
        // treats them as `auto`).
        "RESTIC_COMPRESSION" if !matches!(value, "auto" | "off" | "max" | "fastest" | "better") => {
            Some("must be one of auto, off, max, fastest, better (the last two need restic 0.19)")
        }
        "RESTIC_PACK_SIZE" if !number().is_some_and(|n| n == 0 || (4..=128).contains(&n)) => {
            Some("must be a whole number of MiB from 4 to 128 (0 for restic's default)")
        }
        "RESTIC_READ_CONCURRENCY" if number().is_none() => Some("must be a whole number"),
        _ => None,
    }
}

#[cfg(test)]
mod repository_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::RepositoryConfig;

    fn repo(url: &str, password: &str, env: &[(&str, &str)]) -> RepositoryConfig {
        RepositoryConfig {
            url: url.to_owned(),
            password: password.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            copy_to: None,
        }
    }

    fn with_copy(url: &str, password: &str, env: &[(&str, &str)]) -> RepositoryConfig {
        let copy = repo(url, password, env);
        RepositoryConfig {
            copy_to: Some(crate::CopyTarget {
                url: copy.url,
                password: copy.password,
                env: copy.env,
            }),
            ..repo("/srv/restic", "pw", &[])
        }
    }

    #[test]
    fn a_copy_target_follows_the_same_rules_naming_copy_to() {
        assert!(validate_repository(&with_copy("rest:http://127.0.0.1:8000/", "pw2", &[])).is_ok());
        assert!(validate_repository(&with_copy(
            "s3:host/bucket",
            "pw2",
            &[("AWS_ACCESS_KEY_ID", "x")]
        ))
        .is_ok());
        let cases = [
            (with_copy("-o=x", "pw", &[]), "`copy_to.url`"),
            (with_copy("", "pw", &[]), "`copy_to.url`"),
            (with_copy("/other", "", &[]), "`copy_to.password`"),
            (with_copy("/other", " pw", &[]), "`copy_to.password`"),
            (
                with_copy("/other", "pw", &[("PATH", "/x")]),
                "`copy_to.env.PATH`",
            ),
            (
                with_copy("/other", "pw", &[("RESTIC_FROM_PASSWORD_FILE", "/x")]),
                "`copy_to.env.RESTIC_FROM_PASSWORD_FILE`",
            ),
            (
                with_copy("/srv/restic", "pw", &[]),
                "`copy_to.url` must name another",
            ),
            (
                with_copy("/srv/restic/", "pw2", &[]),
                "`copy_to.url` must name another",
            ),
        ];
        for (config, field) in cases {
            let e = validate_repository(&config).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn restic_option_values_restic_would_refuse_are_refused() {
        for (name, value) in [
            ("RESTIC_COMPRESSION", "auto"),
            ("RESTIC_COMPRESSION", "better"),
            ("RESTIC_PACK_SIZE", "0"),
            ("RESTIC_PACK_SIZE", "16"),
            ("RESTIC_PACK_SIZE", "128"),
            ("RESTIC_READ_CONCURRENCY", "4"),
        ] {
            let r = repo("/r", "pw", &[(name, value)]);
            assert!(validate_repository(&r).is_ok(), "{name}={value}");
        }
        for (name, value) in [
            ("RESTIC_COMPRESSION", "MAX"),
            ("RESTIC_COMPRESSION", ""),
            ("RESTIC_PACK_SIZE", "3"),
            ("RESTIC_PACK_SIZE", "200"),
            ("RESTIC_PACK_SIZE", "+16"),
            ("RESTIC_PACK_SIZE", "16MiB"),
            ("RESTIC_READ_CONCURRENCY", "abc"),
            ("RESTIC_READ_CONCURRENCY", "-1"),
        ] {
            let r = repo("/r", "pw", &[(name, value)]);
            match validate_repository(&r) {
                Err(e) => assert_eq!(e.field, format!("env.{name}"), "{value}"),
                Ok(()) => panic!("{name}={value} should be refused"),
            }
        }
    }

    #[test]
    fn good_repositories_pass() {
        for url in [
            "/srv/restic",
            "rest:http://127.0.0.1:8000/",
            "s3:s3.amazonaws.com/bucket",
            "sftp:u@h:/r",
            "rclone:remote:path",
        ] {
            assert!(
                validate_repository(&repo(url, "pw", &[("AWS_ACCESS_KEY_ID", "x")])).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_repositories_name_the_field() {
        let cases = [
            (repo("", "pw", &[]), "`url`"),
            (repo("-o=x", "pw", &[]), "`url`"),
            (repo(" /r", "pw", &[]), "`url`"),
            (repo(&"/r".repeat(3000), "pw", &[]), "`url`"),
            (repo("/r", "", &[]), "`password`"),
            (repo("/r", " pw", &[]), "`password`"),
            (repo("/r", "pw\n", &[]), "`password`"),
            (repo("/r", "pw", &[("lower", "x")]), "`env.lower`"),
            (
                repo("/r", "pw", &[("RESTIC_PASSWORD", "x")]),
                "`env.RESTIC_PASSWORD`",
            ),
        ];
        for (config, field) in cases {
            let e = validate_repository(&config).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }

    fn env_error(name: &str) -> String {
        validate_repository(&repo("/r", "pw", &[(name, "x")]))
            .unwrap_err()
            .to_string()
    }

    /// A value restic accepts for `name`: the few restic options have a
    /// syntax, credentials are free text.
    fn sample_value(name: &str) -> &'static str {
        match name {
            "RESTIC_COMPRESSION" => "max",
            "RESTIC_PACK_SIZE" | "RESTIC_READ_CONCURRENCY" => "16",
            _ => "value",
        }
    }

    #[test]
    fn every_documented_variable_is_accepted() {
        for name in ALLOWED_ENV {
            let result = validate_repository(&repo("/r", "pw", &[(name, sample_value(name))]));
            assert!(result.is_ok(), "{name}: {result:?}");
        }
        // All of them at once, as an S3 + proxy setup would send.
        let all: Vec<(&str, &str)> = ALLOWED_ENV.iter().map(|n| (*n, sample_value(n))).collect();
        assert!(validate_repository(&repo("s3:host/bucket", "pw", &all)).is_ok());
    }

    #[test]
    fn dangerous_variables_are_refused_with_why() {
        let cases: [(&str, &str); 24] = [
            ("PATH", "run another program"),
            ("LD_PRELOAD", "load other code"),
            ("LD_LIBRARY_PATH", "load other code"),
            ("LD_AUDIT", "load other code"),
            ("HOME", "run another program"),
            ("XDG_CONFIG_HOME", "run another program"),
            ("SHELL", "run another program"),
            ("SSH_AUTH_SOCK", "run another program"),
            ("TMPDIR", "where restic writes"),
            ("RESTIC_CACHE_DIR", "where restic writes"),
            ("DEBUG_LOG", "where restic writes"),
            ("GODEBUG", "Go runtime"),
            ("RESTIC_PASSWORD_COMMAND", "run another program"),
            ("RESTIC_FROM_PASSWORD_COMMAND", "run another program"),
            ("RESTIC_PASSWORD_FILE", "set by restic-manager"),
            ("RESTIC_REPOSITORY", "set by restic-manager"),
            ("RESTIC_REPOSITORY_FILE", "set by restic-manager"),
            ("RESTIC_PROGRESS_FPS", "set by restic-manager"),
            ("RCLONE_CONFIG", "run another program"),
            ("RCLONE_SFTP_SSH", "run another program"),
            ("AWS_SHARED_CREDENTIALS_FILE", "run another program"),
            ("AZURE_FORCE_CLI_CREDENTIAL", "run another program"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "run a program"),
            ("RESTIC_TLS_CLIENT_CERT", "credential"),
        ];
        for (name, why) in cases {
            let e = env_error(name);
            assert!(e.starts_with(&format!("`env.{name}` ")), "{e}");
            assert!(e.contains(why), "{name}: {e}");
            assert!(!ALLOWED_ENV.contains(&name), "{name}");
        }
    }

    #[test]
    fn unknown_variables_are_refused_with_the_allowed_list() {
        for name in ["FOO", "AWS_ACCESS_KEY", "HTTP_PROXY_X", "MINIO_ACCESS_KEY"] {
            let e = env_error(name);
            assert!(
                e.starts_with(&format!(
                    "`env.{name}` is not a variable restic or its backends read; allowed: "
                )),
                "{e}"
            );
            assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        }
    }
}
