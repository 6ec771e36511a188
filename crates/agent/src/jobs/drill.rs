//! Restore drills (DESIGN §10): proof that a snapshot can really be
//! restored, by restoring a random sample of its files and checking them.
//!
//! A drill lists the snapshot (`restic ls --recursive`, streamed), keeps a
//! bounded random sample per size class so small and big files both
//! appear, restores the sample with `restic restore --verify` into a
//! scratch folder only the agent chooses (`<drill dir>/drill-<job id>`,
//! never the state directory, never a path from the server), hashes every
//! restored file, compares it with the live file when that is unchanged
//! since the snapshot (same size and modification time), and removes the
//! scratch copy on every way out — success, failure, cancel — with
//! [`sweep`] at start-up for the copies of an agent that was killed.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use rand::Rng;
use rm_core::JobId;
use rm_protocol::drill::{DrillEvidence, DrillMismatch, DrillResult, DrillStats, VerifiedBy};
use rm_protocol::params::DrillParams;
use rm_protocol::LogStreamKind;
use rm_restic::{Command, Event, Finished, NodeType, Status, Stream};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{finished_without_restic, Job};

/// Where drills restore when the agent is not told otherwise: outside the
/// state directory, on a disk meant for temporary data that survives a
/// reboot only until the agent's start-up sweep.
pub const DEFAULT_DRILL_DIR: &str = "/var/tmp/restic-manager/drills";
/// Every scratch folder's name starts with this; the sweep removes only
/// these.
const SCRATCH_PREFIX: &str = "drill-";
/// Upper bounds of the size classes sampled separately (the last class
/// is everything larger): a snapshot of a million small files and ten
/// large ones still gets large files in its sample.
const CLASS_LIMITS: [u64; 5] = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20];
/// argv bytes of includes per `restic restore` (far below the kernel's
/// limit); a larger sample is restored by several runs into one folder.
const INCLUDE_BYTES_PER_RUN: usize = 128 * 1024;
/// restic's stderr lines kept to attribute errors to files.
const MAX_ERROR_LINES: usize = 10_000;
/// Files named in a failed drill's error (all are in the evidence).
const NAMED_IN_ERROR: usize = 5;

/// A sampled file: what the snapshot says of it.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    path: String,
    size: u64,
    mtime: Option<DateTime<Utc>>,
}

/// A reservoir sample (algorithm R) of one size class.
#[derive(Debug, Default)]
struct Reservoir {
    seen: u64,
    items: Vec<Candidate>,
}

/// Chooses a drill's sample from a stream of files with memory bounded by
/// the number of classes times the sample size, however large the
/// snapshot.
#[derive(Debug)]
pub(crate) struct Sampler {
    want: usize,
    budget: u64,
    classes: Vec<Reservoir>,
    files_seen: u64,
}

impl Sampler {
    pub(crate) fn new(want: usize, budget: u64) -> Sampler {
        Sampler {
            want,
            budget,
            classes: (0..=CLASS_LIMITS.len())
                .map(|_| Reservoir::default())
                .collect(),
            files_seen: 0,
        }
    }

    /// Offers one regular file of the snapshot. A file larger than the
    /// whole budget can never be restored within it and is left out.
    fn offer(&mut self, rng: &mut impl Rng, candidate: Candidate) {
        self.files_seen += 1;
        if candidate.size > self.budget || self.want == 0 {
            return;
        }
        let class = CLASS_LIMITS
            .iter()
            .position(|limit| candidate.size < *limit)
            .unwrap_or(CLASS_LIMITS.len());
        let Some(reservoir) = self.classes.get_mut(class) else {
            return;
        };
        reservoir.seen += 1;
        if reservoir.items.len() < self.want {
            reservoir.items.push(candidate);
        } else {
            let slot = rng.random_range(0..reservoir.seen);
            if let Some(item) = usize::try_from(slot)
                .ok()
                .and_then(|slot| reservoir.items.get_mut(slot))
            {
                *item = candidate;
            }
        }
    }

    /// The sample: one file of each class in turn (largest class first)
    /// while files are wanted and the budget allows, so both ends of the
    /// size range appear.
    fn pick(mut self, rng: &mut impl Rng) -> Vec<Candidate> {
        for class in &mut self.classes {
            class.items.shuffle(rng);
        }
        let mut queues: Vec<std::vec::IntoIter<Candidate>> = self
            .classes
            .into_iter()
            .rev()
            .map(|c| c.items.into_iter())
            .collect();
        let mut left = self.budget;
        let mut sample = Vec::new();
        loop {
            let mut offered = false;
            for queue in &mut queues {
                if sample.len() >= self.want {
                    return sample;
                }
                // A file that does not fit is passed over for the next of
                // its class, which may.
                for candidate in queue.by_ref() {
                    offered = true;
                    if candidate.size <= left {
                        left -= candidate.size;
                        sample.push(candidate);
                        break;
                    }
                }
            }
            if !offered {
                return sample;
            }
        }
    }
}

/// A drill's scratch folder; removed when dropped, so every way out of
/// the drill (an error, a cancel, a panic unwinding) removes it.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Makes `<root>/drill-<job_id>` (owner-only, like the root), empty.
    pub(crate) fn create(root: &Path, job_id: JobId) -> std::io::Result<Scratch> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        let path = root.join(format!("{SCRATCH_PREFIX}{job_id}"));
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_tree(&path)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Scratch { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match remove_tree(&self.path) {
            Ok(()) => {
                tracing::debug!(path = %self.path.display(), "removed the drill's scratch folder")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                path = %self.path.display(),
                "could not remove the drill's scratch folder (the next start-up sweep will): {e}"
            ),
        }
    }
}

/// Removes a restored tree. restic restores folders with their own modes
/// (maybe without write permission), which an agent not running as root
/// could not delete from: those are made writable and the removal retried.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path);
            std::fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_writable(dir: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// Removes the `drill-*` folders under `root` that a drill cut short left
/// behind (the agent killed, the machine rebooted). Run at start-up,
/// before any job can start; returns how many were removed.
pub fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let path = entry.path();
        // A restic of the killed agent may still be writing for a moment
        // (it got SIGINT when its parent died): try again once.
        let result = remove_tree(&path).or_else(|_| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            remove_tree(&path)
        });
        match result {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed a drill's leftover scratch folder");
            }
            Err(e) => tracing::error!(
                path = %path.display(),
                "could not remove a drill's leftover scratch folder: {e}"
            ),
        }
    }
    removed
}

/// Whether `dir` is `state_dir` or inside it (or the other way round):
/// restored files must never land among the agent's secrets.
pub(crate) fn overlaps_state_dir(dir: &Path, state_dir: &Path) -> bool {
    let clean = |p: &Path| -> PathBuf { p.components().collect() };
    let (dir, state) = (clean(dir), clean(state_dir));
    dir.starts_with(&state) || state.starts_with(&dir)
}

/// SHA-256 (hex) of a file, read in blocks.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Whether the live file at `path` is as the snapshot recorded it: a
/// regular file of the same size and modification time.
fn unchanged_since(path: &Path, size: u64, mtime: Option<DateTime<Utc>>) -> bool {
    let Some(mtime) = mtime else {
        return false;
    };
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(modified) = meta.modified() else {
        return false;
    };
    meta.is_file() && meta.len() == size && DateTime::<Utc>::from(modified) == mtime
}

/// What the verification of one restored file found.
fn check_file(candidate: &Candidate, restored: &Path, restic_error: Option<&str>) -> DrillEvidence {
    let mut evidence = DrillEvidence {
        path: candidate.path.clone(),
        size: candidate.size,
        sha256: None,
        verified_by: VerifiedBy::ResticVerify,
        result: DrillResult::Ok,
        error: None,
    };
    let sha = match sha256_file(restored) {
        Ok(sha) => sha,
        Err(e) => {
            evidence.result = DrillResult::Unreadable;
            evidence.error = Some(match restic_error {
                Some(error) => error.to_owned(),
                None => format!("the restored copy cannot be read: {e}"),
            });
            return evidence;
        }
    };
    evidence.sha256 = Some(sha.clone());
    if let Some(error) = restic_error {
        // restic could not restore it (a pack it could not read or
        // decrypt), or restored it and `--verify` read back other bytes.
        evidence.result = if restore_failed(error) {
            DrillResult::Unreadable
        } else {
            DrillResult::Mismatch
        };
        evidence.error = Some(error.to_owned());
        return evidence;
    }
    let restored_len = std::fs::metadata(restored).map(|m| m.len()).unwrap_or(0);
    if restored_len != candidate.size {
        evidence.result = DrillResult::Mismatch;
        evidence.error = Some(format!(
            "the restored copy has {restored_len} bytes, the snapshot says {}",
            candidate.size
        ));
        return evidence;
    }
    let live = Path::new(&candidate.path);
    if unchanged_since(live, candidate.size, candidate.mtime) {
        evidence.verified_by = VerifiedBy::ResticVerifyAndLive;
        match sha256_file(live) {
            Ok(live_sha) if live_sha == sha => {}
            Ok(live_sha) => {
                evidence.result = DrillResult::Mismatch;
                evidence.error = Some(format!(
                    "differs from the live file, which is unchanged since the snapshot (same size and mtime): restored sha256 {sha}, live {live_sha}"
                ));
            }
            // The live file went away or became unreadable meanwhile: the
            // comparison did not happen, restic's verification stands.
            Err(_) => evidence.verified_by = VerifiedBy::ResticVerify,
        }
    }
    evidence
}

/// The first error restic printed about `candidate` (restored into
/// `target`): `ignoring error for <path>: …` while restoring (0.14–0.17.0),
/// the same as a JSON error line (0.17.1+, read as `error during restore
/// of <path>: …`, naming the damaged pack from 0.18 on), or a verification
/// error naming the restored copy.
fn restic_error_for<'a>(
    lines: &'a [String],
    candidate: &Candidate,
    target: &Path,
) -> Option<&'a str> {
    let restored = target.join(candidate.path.trim_start_matches('/'));
    let restored = restored.display().to_string();
    let ignoring = format!("ignoring error for {}: ", candidate.path);
    let during = format!(" of {}: ", candidate.path);
    lines
        .iter()
        .find(|line| {
            line.starts_with(&ignoring)
                || (line.starts_with("error during") && line.contains(&during))
                || line.contains(&format!("{restored}:"))
                || line.contains(&format!("{restored} "))
                || line.ends_with(&restored)
        })
        .map(String::as_str)
}

/// Whether restic's error line says the restore itself failed (rather
/// than its `--verify` reading back other bytes).
fn restore_failed(line: &str) -> bool {
    line.starts_with("ignoring error for ") || line.starts_with("error during restore")
}

/// Groups includes into runs whose argv stays small.
fn include_runs(sample: &[Candidate]) -> Vec<Vec<String>> {
    let mut runs: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for candidate in sample {
        let len = candidate.path.len() + 12;
        match runs.last_mut() {
            Some(run) if bytes + len <= INCLUDE_BYTES_PER_RUN => {
                bytes += len;
                run.push(candidate.path.clone());
            }
            _ => {
                bytes = len;
                runs.push(vec![candidate.path.clone()]);
            }
        }
    }
    runs
}

/// A sendable random source (the thread's own is not `Send`, and the
/// sampling runs across awaits).
fn drill_rng() -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(rand::random())
}

/// A drill's end with its statistics.
fn failed(error: String) -> (Finished, Value) {
    (
        finished_without_restic(Status::Failed, Some(error)),
        Value::Null,
    )
}

impl Job<'_> {
    /// Runs a drill (see the module's documentation).
    pub(super) async fn drill(&mut self, params: &DrillParams, job_id: JobId) -> (Finished, Value) {
        let root = self.runner.drill_dir();
        if let Some(state_dir) = self.runner.state_dir() {
            if overlaps_state_dir(&root, state_dir) {
                return self.fail(format!(
                    "the drill folder {} overlaps the agent's state directory {}: set --drill-dir elsewhere",
                    root.display(),
                    state_dir.display()
                ));
            }
        }
        // Which snapshot: this host's, the one asked for or the latest.
        let listing_limits = self
            .limits(&Command::Snapshots { host: None }, self.cancel)
            .without_lock();
        let snapshots = match self
            .restic
            .snapshots(self.repo, Some(self.runner.hostname()), &listing_limits)
            .await
        {
            Ok(snapshots) => snapshots,
            Err(e) => return self.fail(format!("could not list this host's snapshots: {e}")),
        };
        let snapshot = match &params.snapshot_id {
            Some(wanted) => snapshots
                .into_iter()
                .find(|s| s.id.starts_with(wanted.as_str())),
            None => snapshots.into_iter().max_by_key(|s| s.time),
        };
        let Some(snapshot) = snapshot else {
            return self.fail(match &params.snapshot_id {
                Some(id) => format!("`params.snapshot_id`: this host has no snapshot {id}"),
                None => String::from("this host has no snapshot to drill yet: run a backup first"),
            });
        };
        self.log.line(
            LogStreamKind::Stdout,
            format!(
                "drilling snapshot {} of {}: sampling up to {} files, at most {} bytes",
                snapshot.short_id,
                snapshot.time.format("%Y-%m-%d %H:%M:%S UTC"),
                params.sample_files(),
                params.max_bytes()
            ),
        );

        // The sample, from a streamed listing.
        let mut sampler = Sampler::new(
            usize::try_from(params.sample_files()).unwrap_or(usize::MAX),
            params.max_bytes(),
        );
        let listing = Command::LsTree {
            snapshot_id: snapshot.id.clone(),
            dirs: Vec::new(),
        };
        let mut rng = drill_rng();
        let listed = self
            .stream_tree(listing, |node| {
                if node.node_type == NodeType::File {
                    sampler.offer(
                        &mut rng,
                        Candidate {
                            path: node.path,
                            size: node.size.unwrap_or(0),
                            mtime: node.mtime,
                        },
                    );
                }
                true
            })
            .await;
        match listed {
            Ok(finished) if finished.succeeded() => {}
            Ok(finished) if self.cancel.is_cancelled() => return (finished, Value::Null),
            Ok(finished) => {
                return self.fail(format!(
                    "could not list the snapshot: {}",
                    finished.error.as_deref().unwrap_or("restic ls failed")
                ))
            }
            Err(e) => return self.fail(format!("could not run restic to list the snapshot: {e}")),
        }
        let files_in_snapshot = sampler.files_seen;
        let sample = sampler.pick(&mut drill_rng());
        if sample.is_empty() {
            return self.fail(format!(
                "snapshot {} has no file that fits the drill's max_bytes ({} bytes) among its {files_in_snapshot} files",
                snapshot.short_id,
                params.max_bytes()
            ));
        }
        let bytes_sampled: u64 = sample.iter().map(|c| c.size).sum();
        self.log.line(
            LogStreamKind::Stdout,
            format!(
                "sampled {} of {files_in_snapshot} files ({bytes_sampled} bytes); restoring them with --verify",
                sample.len()
            ),
        );

        // Restore and verify, into the agent's own scratch folder.
        let scratch = match Scratch::create(&root, job_id) {
            Ok(scratch) => scratch,
            Err(e) => {
                return self.fail(format!(
                    "could not make the drill's scratch folder under {}: {e}",
                    root.display()
                ))
            }
        };
        let target = scratch.path().display().to_string();
        let began = Instant::now();
        let mut errors: Vec<String> = Vec::new();
        let mut restic_failure: Option<Finished> = None;
        for include in include_runs(&sample) {
            let restore = Command::Restore {
                snapshot_id: snapshot.id.clone(),
                include,
                target: target.clone(),
                verify: true,
            };
            let (finished, lines) = self.run_collecting(restore).await;
            errors.extend(lines);
            if self.cancel.is_cancelled() {
                self.log.line(
                    LogStreamKind::Stdout,
                    String::from("drill cancelled; removing its scratch folder"),
                );
                drop(scratch);
                return (finished, Value::Null);
            }
            if !finished.succeeded() && restic_failure.is_none() {
                restic_failure = Some(finished);
            }
        }
        let restore_seconds = began.elapsed().as_secs_f64();

        // Evidence, file by file.
        let scratch_path = scratch.path().to_path_buf();
        let failure_text = restic_failure
            .as_ref()
            .and_then(|f| f.error.clone())
            .unwrap_or_default();
        let checked = tokio::task::spawn_blocking({
            let sample = sample.clone();
            let cancel = self.cancel.clone();
            move || {
                let mut evidence = Vec::with_capacity(sample.len());
                for candidate in &sample {
                    if cancel.is_cancelled() {
                        break;
                    }
                    let restored = scratch_path.join(candidate.path.trim_start_matches('/'));
                    let error = restic_error_for(&errors, candidate, &scratch_path);
                    let mut found = check_file(candidate, &restored, error);
                    if found.result == DrillResult::Unreadable
                        && error.is_none()
                        && !failure_text.is_empty()
                    {
                        found.error = Some(format!("not restored: {failure_text}"));
                    }
                    evidence.push(found);
                }
                evidence
            }
        })
        .await;
        drop(scratch);
        self.log.line(
            LogStreamKind::Stdout,
            String::from("removed the drill's scratch folder"),
        );
        if self.cancel.is_cancelled() {
            return (
                finished_without_restic(Status::Cancelled, Some(String::from("cancelled"))),
                Value::Null,
            );
        }
        let evidence = match checked {
            Ok(evidence) => evidence,
            Err(e) => {
                return self.fail(format!(
                    "the verification of the restored files stopped: {e}"
                ))
            }
        };
        let mismatches: Vec<DrillMismatch> = evidence
            .iter()
            .filter(|e| e.result != DrillResult::Ok)
            .map(|e| DrillMismatch {
                path: e.path.clone(),
                result: e.result,
                error: e.error.clone().unwrap_or_default(),
            })
            .collect();
        let verified: Vec<&DrillEvidence> = evidence
            .iter()
            .filter(|e| e.result == DrillResult::Ok)
            .collect();
        let stats = DrillStats {
            snapshot_id: snapshot.id.clone(),
            files_sampled: sample.len() as u64,
            files_verified: verified.len() as u64,
            bytes_verified: verified.iter().map(|e| e.size).sum(),
            mismatches,
            files_in_snapshot,
            bytes_sampled,
            files_compared_live: evidence
                .iter()
                .filter(|e| e.verified_by == VerifiedBy::ResticVerifyAndLive)
                .count() as u64,
            restore_seconds,
            restore_bytes_per_second: if restore_seconds > 0.0 {
                bytes_sampled as f64 / restore_seconds
            } else {
                0.0
            },
            evidence,
        };
        for line in stats.evidence.iter().map(|e| {
            format!(
                "{}: {} ({} bytes, {}{})",
                e.path,
                serde_json::to_value(e.result)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                e.size,
                serde_json::to_value(e.verified_by)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                e.error
                    .as_deref()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            )
        }) {
            self.log.line(LogStreamKind::Stdout, line);
        }
        let value = serde_json::to_value(&stats).unwrap_or(Value::Null);
        if stats.mismatches.is_empty() {
            if let Some(finished) = restic_failure {
                // restic failed, yet every file checked out: say so, and
                // do not call the drill a success.
                let error = format!(
                    "restic restore failed although every sampled file verified: {}",
                    finished.error.as_deref().unwrap_or("no reason given")
                );
                return (
                    Finished {
                        error: Some(error),
                        ..finished
                    },
                    value,
                );
            }
            self.log.line(
                LogStreamKind::Stdout,
                format!(
                    "drill passed: {} files, {} bytes verified in {:.1} s",
                    stats.files_verified, stats.bytes_verified, stats.restore_seconds
                ),
            );
            let finished = Finished {
                exit_code: Some(0),
                ..finished_without_restic(Status::Succeeded, None)
            };
            return (finished, value);
        }
        let named: Vec<String> = stats
            .mismatches
            .iter()
            .take(NAMED_IN_ERROR)
            .map(|m| format!("{} ({})", m.path, m.error))
            .collect();
        let more = stats.mismatches.len().saturating_sub(NAMED_IN_ERROR);
        let error = format!(
            "drill of snapshot {} failed: {} of {} sampled files did not verify: {}{}",
            snapshot.short_id,
            stats.mismatches.len(),
            stats.files_sampled,
            named.join("; "),
            if more > 0 {
                format!("; and {more} more (see the evidence)")
            } else {
                String::new()
            }
        );
        self.log.line(LogStreamKind::Stderr, error.clone());
        let exit_code = restic_failure.as_ref().and_then(|f| f.exit_code);
        let finished = Finished {
            exit_code,
            ..finished_without_restic(Status::Failed, Some(error))
        };
        (finished, value)
    }

    /// Logs `error` and ends the drill failed with it.
    fn fail(&mut self, error: String) -> (Finished, Value) {
        self.log.line(LogStreamKind::Stderr, error.clone());
        failed(error)
    }

    /// Runs one restic command, its lines and live progress into the job
    /// as [`Job::command`] does ([`super::pump`]), and returns its stderr
    /// lines too: the drill attributes restic's errors to files from them.
    async fn run_collecting(&mut self, command: Command) -> (Finished, Vec<String>) {
        let limits = self.limits(&command, self.cancel);
        let (tx, mut rx) = mpsc::channel::<Event>(256);
        let (to_log, from_tee) = mpsc::channel::<Event>(256);
        let (restic, repo) = (self.restic, self.repo);
        let run = async move {
            let result = restic.run(repo, &command, &limits, &tx).await;
            drop(tx);
            result
        };
        let tee = async move {
            let mut lines = Vec::new();
            while let Some(event) = rx.recv().await {
                if let Event::Line {
                    stream: Stream::Stderr,
                    text,
                } = &event
                {
                    if lines.len() < MAX_ERROR_LINES {
                        lines.push(text.clone());
                    }
                }
                // The log side ends only with this sender: never closed early.
                let _ = to_log.send(event).await;
            }
            lines
        };
        let (result, lines, ()) = tokio::join!(run, tee, super::pump(self.log, from_tee, None));
        let finished = result.unwrap_or_else(|e| {
            finished_without_restic(Status::Failed, Some(format!("could not run restic: {e}")))
        });
        (finished, lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn file(path: &str, size: u64) -> Candidate {
        Candidate {
            path: path.to_owned(),
            size,
            mtime: None,
        }
    }

    #[test]
    fn the_sample_holds_small_and_big_files_within_the_budget() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut sampler = Sampler::new(4, 100 << 20);
        for i in 0..10_000 {
            sampler.offer(&mut rng, file(&format!("/small/{i}"), 100));
        }
        for i in 0..3 {
            sampler.offer(&mut rng, file(&format!("/big/{i}"), 30 << 20));
        }
        sampler.offer(&mut rng, file("/huge", 200 << 20));
        assert_eq!(sampler.files_seen, 10_004);
        let sample = sampler.pick(&mut rng);
        assert_eq!(sample.len(), 4, "{sample:?}");
        assert!(
            sample.iter().any(|c| c.path.starts_with("/big/")),
            "{sample:?}"
        );
        assert!(
            sample.iter().any(|c| c.path.starts_with("/small/")),
            "{sample:?}"
        );
        assert!(sample.iter().all(|c| c.path != "/huge"));
        assert!(sample.iter().map(|c| c.size).sum::<u64>() <= 100 << 20);
    }

    #[test]
    fn memory_stays_bounded_by_classes_times_the_sample() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut sampler = Sampler::new(3, u64::MAX);
        for i in 0..50_000u64 {
            sampler.offer(&mut rng, file(&format!("/f{i}"), i * 997 % (1 << 30)));
        }
        let held: usize = sampler.classes.iter().map(|c| c.items.len()).sum();
        assert!(held <= 3 * (CLASS_LIMITS.len() + 1), "{held}");
        assert_eq!(sampler.pick(&mut rng).len(), 3);
    }

    #[test]
    fn a_tight_budget_skips_what_does_not_fit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut sampler = Sampler::new(10, 1000);
        sampler.offer(&mut rng, file("/a", 600));
        sampler.offer(&mut rng, file("/b", 600));
        sampler.offer(&mut rng, file("/c", 300));
        let sample = sampler.pick(&mut rng);
        let total: u64 = sample.iter().map(|c| c.size).sum();
        assert!(total <= 1000, "{sample:?}");
        assert_eq!(sample.len(), 2, "{sample:?}");
    }

    #[test]
    fn scratch_folders_go_when_dropped_and_leftovers_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let id = JobId::new();
        let scratch = Scratch::create(root.path(), id).unwrap();
        let path = scratch.path().to_path_buf();
        std::fs::create_dir_all(path.join("srv/ro")).unwrap();
        std::fs::write(path.join("srv/ro/f"), "x").unwrap();
        std::fs::set_permissions(path.join("srv/ro"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(scratch);
        assert!(!path.exists());

        std::fs::create_dir_all(root.path().join("drill-old/x")).unwrap();
        std::fs::create_dir_all(root.path().join("keep-me")).unwrap();
        assert_eq!(sweep(root.path()), 1);
        assert!(!root.path().join("drill-old").exists());
        assert!(root.path().join("keep-me").exists());
        assert_eq!(sweep(&root.path().join("missing")), 0);
    }

    #[test]
    fn the_drill_folder_may_not_overlap_the_state_directory() {
        let state = Path::new("/var/lib/restic-manager");
        assert!(overlaps_state_dir(
            Path::new("/var/lib/restic-manager/drills"),
            state
        ));
        assert!(overlaps_state_dir(
            Path::new("/var/lib/restic-manager/"),
            state
        ));
        assert!(overlaps_state_dir(Path::new("/var/lib"), state));
        assert!(!overlaps_state_dir(
            Path::new("/var/tmp/restic-manager/drills"),
            state
        ));
    }

    #[test]
    fn restic_errors_are_attributed_to_the_file_they_name() {
        let target = Path::new("/scratch/drill-x");
        let lines = vec![
            String::from("ignoring error for /srv/big.bin: ciphertext verification failed"),
            String::from(
                "Fatal: Invalid file size for /scratch/drill-x/srv/other: expected 3, got 2",
            ),
        ];
        assert_eq!(
            restic_error_for(&lines, &file("/srv/big.bin", 1), target),
            Some("ignoring error for /srv/big.bin: ciphertext verification failed")
        );
        assert!(restic_error_for(&lines, &file("/srv/other", 3), target).is_some());
        let json = vec![
            String::from("error during restore of /srv/big.bin: decrypting blob <data/e64d5fde> from pack fdbe05e5 failed: ciphertext verification failed"),
            String::from("error during restore of /srv/big.bin: lchown /scratch/drill-x/srv/big.bin: no such file or directory"),
        ];
        assert_eq!(
            restic_error_for(&json, &file("/srv/big.bin", 1), target),
            Some(json[0].as_str())
        );
        assert_eq!(restic_error_for(&json, &file("/srv/big", 1), target), None);
        assert_eq!(restic_error_for(&lines, &file("/srv/big", 1), target), None);
    }

    #[test]
    fn a_live_file_that_differs_from_its_unchanged_snapshot_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let restored = dir.path().join("restored");
        std::fs::write(&live, "abc").unwrap();
        std::fs::write(&restored, "abd").unwrap();
        let mtime = DateTime::<Utc>::from(std::fs::metadata(&live).unwrap().modified().unwrap());
        let candidate = Candidate {
            path: live.display().to_string(),
            size: 3,
            mtime: Some(mtime),
        };
        let found = check_file(&candidate, &restored, None);
        assert_eq!(found.result, DrillResult::Mismatch, "{found:?}");
        assert_eq!(found.verified_by, VerifiedBy::ResticVerifyAndLive);
        std::fs::write(&restored, "abc").unwrap();
        let found = check_file(&candidate, &restored, None);
        assert_eq!(found.result, DrillResult::Ok, "{found:?}");
        // Changed since the snapshot (another mtime): restic's word only.
        let older = Candidate {
            mtime: Some(mtime - chrono::Duration::seconds(5)),
            ..candidate
        };
        let found = check_file(&older, &restored, None);
        assert_eq!(found.verified_by, VerifiedBy::ResticVerify);
        assert_eq!(found.result, DrillResult::Ok);
        let missing = check_file(&older, &dir.path().join("nope"), Some("ignoring error"));
        assert_eq!(missing.result, DrillResult::Unreadable);
        let damaged = check_file(
            &older,
            &restored,
            Some("ignoring error for /x: ciphertext verification failed"),
        );
        assert_eq!(damaged.result, DrillResult::Unreadable);
        assert!(damaged.sha256.is_some());
        let misread = check_file(
            &older,
            &restored,
            Some("Fatal: Invalid file size for /scratch/x: expected 3, got 2"),
        );
        assert_eq!(misread.result, DrillResult::Mismatch);
    }
}
