//! The on-disk spool: every report about a job is written here before it is
//! sent, and forgotten only once the server says it has stored it.
//!
//! One append-only file per job (`<state-dir>/spool/<job_id>.jsonl`, one
//! encoded frame per line, 0600) holds, in order, what the agent reported:
//! an offline run's `schedule.fire` and `command.result`, `job.started`, the
//! `log.stream` batches, `snapshots.report`, `repo.stats` and `job.finished`.
//! Each connection replays every file from its start (log lines the server
//! has acknowledged left out) and then follows the files as they grow, so
//! a job's reports survive a broken connection, a server restart and an
//! agent restart alike. The server's storage is idempotent, so a replay of
//! something it already has changes nothing.
//!
//! The server answers with `job.ack`: `log_seq` says every log line up to
//! that `seq` is stored (they are not sent again), `done` that the whole job
//! is (the file is deleted). A job whose file has no end when the agent
//! starts was cut short by the agent's own death; the spool gives it a
//! `job.finished` (`failed`, "the agent was interrupted…") so the server
//! learns what happened instead of waiting for a job nobody runs.
//!
//! When the state directory cannot be written (full, over quota, read-only,
//! failing), nothing the spool already has is touched: a write that fails
//! half-way is cut back to the last whole line, and the report — with every
//! later one of that job, to keep their order — is held in memory instead
//! (up to [`HELD_LIMIT`] for all jobs; log lines past that are dropped and
//! counted). Held reports are replayed like the file's, after them, so the
//! server still gets them in order while the agent runs, but they would not
//! survive a restart: the job's end therefore says `failed` with what was
//! not kept and why ([`Shortfall`]). Each append tries the disk again, so
//! once space is back held reports go to the file and the next job works
//! normally. The start and end of such an episode are logged once each.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use rm_core::JobId;
use rm_protocol::{Frame, JobAck, JobFinished, JobOutcome, Message};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::AgentError;
use crate::state::{DIR_MODE, FILE_MODE};

/// The spool's folder inside the state directory.
pub const SPOOL_DIR: &str = "spool";

/// File name suffix of a job's spool file.
const SUFFIX: &str = ".jsonl";

/// Most bytes one replay step reads from a file, so a long backlog is sent
/// in slices between the session's other work.
const READ_SLICE: u64 = 1024 * 1024;

/// Most bytes of reports held in memory, all jobs together, while the
/// spool cannot write them: enough for the log of a long backup, small next
/// to what the agent itself needs. Log lines past it are dropped (counted);
/// a job's other reports are always held, since they are few and small.
pub(crate) const HELD_LIMIT: u64 = 16 * 1024 * 1024;

/// The error a job gets when the agent died while running it.
pub(crate) const INTERRUPTED: &str =
    "the agent was interrupted (stopped, killed or crashed) while this job was running; \
     restic was stopped with it. The next run of the job starts afresh";

/// The spool of one agent; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Keyed by the parsed id: only a [`JobId`] (a ULID, so never a path)
    /// ever becomes a file name here.
    jobs: Mutex<BTreeMap<JobId, Entry>>,
    /// Bumped on every append, so a session knows there is more to send.
    appended: watch::Sender<u64>,
    /// The agent's state directory, as operators know it (for messages).
    state_dir: PathBuf,
    /// See [`HELD_LIMIT`]; smaller in tests.
    held_limit: u64,
    /// The write fault going on now, if any: logged when it starts and
    /// when it ends, not at every report. Locked after `jobs`.
    episode: Mutex<Option<Episode>>,
}

/// A time when the spool could not write.
#[derive(Debug)]
struct Episode {
    since: Instant,
    /// Reports held in memory and log lines dropped during it.
    held: u64,
    lost_lines: u64,
}

/// A report that could not be written, kept in memory in its file order.
#[derive(Debug)]
struct Held {
    /// The encoded frame and its newline, exactly as the file would hold it.
    line: String,
    kind: String,
    log_lines: u64,
}

/// What of a job's reports the spool could not keep on disk, and why: the
/// reason its end says `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shortfall {
    /// What went wrong, naming the state directory ("… is full (No space
    /// left on device)").
    pub(crate) fault: String,
    /// Log lines held in memory only.
    pub(crate) held_log_lines: u64,
    /// Other reports held in memory only, as operators call them.
    pub(crate) held_reports: Vec<String>,
    /// Log lines dropped because memory for held reports ran out.
    pub(crate) lost_log_lines: u64,
    /// The end itself could not be written either.
    pub(crate) end_held: bool,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the agent could not keep this job's reports: {}",
            self.fault
        )?;
        let lines = |n: u64| format!("{n} log line{}", if n == 1 { "" } else { "s" });
        if self.lost_log_lines > 0 {
            let were = if self.lost_log_lines == 1 {
                "was"
            } else {
                "were"
            };
            write!(f, "; {} {were} lost", lines(self.lost_log_lines))?;
        }
        let mut held = Vec::new();
        if self.held_log_lines > 0 {
            held.push(lines(self.held_log_lines));
        }
        held.extend(self.held_reports.iter().cloned());
        if self.end_held {
            held.push(String::from("this end"));
        }
        if !held.is_empty() {
            write!(
                f,
                "; {} could not be written to its spool and were sent from memory \
                 (lost if the agent restarts before the server has them)",
                held.join(", ")
            )?;
        }
        Ok(())
    }
}

/// One job's file and what the server has acknowledged of it.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// Open for appending; `None` when it could not be opened (logged).
    file: Option<File>,
    /// Bytes of complete frames in the file.
    len: u64,
    /// Every log line up to this `seq` is stored by the server.
    acked_log_seq: u64,
    /// The job's last report (`job.finished`, or a skipped fire) is written.
    ended: bool,
    /// Reports that could not be written, in order after the file's.
    held: Vec<Held>,
    held_bytes: u64,
    /// Log lines of this job dropped (memory for held reports ran out).
    lost_lines: u64,
    /// The first write fault this job met.
    fault: Option<String>,
}

impl Entry {
    fn new(path: PathBuf, file: Option<File>, len: u64, ended: bool) -> Entry {
        Entry {
            path,
            file,
            len,
            acked_log_seq: 0,
            ended,
            held: Vec::new(),
            held_bytes: 0,
            lost_lines: 0,
            fault: None,
        }
    }

    /// Writes the held reports, oldest first, and then `line` (if any) to
    /// the file; stops at the first that fails. What was written leaves
    /// memory; a write that failed half-way is cut back to the last whole
    /// line, so the file never holds a torn report followed by more. Until
    /// that cut succeeds, nothing more is written to it.
    fn write(&mut self, line: Option<&str>) -> std::io::Result<()> {
        if self.held.is_empty() && line.is_none() {
            return Ok(());
        }
        if self.file.is_none() {
            // Not created (or reopened) earlier: the disk may have room now.
            self.file = Some(open_append(&self.path)?);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("the spool file is not open"));
        };
        // An earlier failed write that could not be cut back: the file must
        // end at `len` before anything is appended (O_APPEND writes at the
        // end), or offsets would point into a torn line.
        if file.metadata()?.len() != self.len {
            file.set_len(self.len)?;
        }
        let mut result = Ok(());
        let mut written = 0;
        for held in &self.held {
            if let Err(e) = file.write_all(held.line.as_bytes()) {
                result = Err(e);
                break;
            }
            self.len += held.line.len() as u64;
            self.held_bytes -= held.line.len() as u64;
            written += 1;
        }
        self.held.drain(..written);
        if let (Ok(()), Some(line)) = (&result, line) {
            match file.write_all(line.as_bytes()) {
                Ok(()) => self.len += line.len() as u64,
                Err(e) => result = Err(e),
            }
        }
        if result.is_err() {
            if let Err(cut) = file.set_len(self.len) {
                tracing::warn!(
                    file = %self.path.display(),
                    "could not cut a failed write back to the last whole report: {cut}; \
                     trying again before the next write"
                );
            }
        }
        result
    }

    /// What this job has not kept on disk, if anything.
    fn shortfall(&self) -> Option<Shortfall> {
        if self.held.is_empty() && self.lost_lines == 0 {
            return None;
        }
        Some(Shortfall {
            fault: self.fault.clone().unwrap_or_default(),
            held_log_lines: self.held.iter().map(|h| h.log_lines).sum(),
            held_reports: self
                .held
                .iter()
                .filter(|h| h.kind != "log.stream")
                .map(|h| report_name(&h.kind))
                .collect(),
            lost_log_lines: self.lost_lines,
            end_held: false,
        })
    }
}

impl Spool {
    /// Opens (creating it 0700 if needed) the spool under `state_dir`, and
    /// gives every job that has no end yet — the agent died while running
    /// it — a failed `job.finished` saying so.
    pub(crate) fn open(state_dir: &Path) -> Result<Spool, AgentError> {
        Spool::open_with(state_dir, HELD_LIMIT)
    }

    /// [`Spool::open`] with another limit on held reports.
    fn open_with(state_dir: &Path, held_limit: u64) -> Result<Spool, AgentError> {
        let dir = state_dir.join(SPOOL_DIR);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|source| AgentError::StateIo {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        let spool = Spool {
            inner: Arc::new(Inner {
                dir: dir.clone(),
                jobs: Mutex::new(BTreeMap::new()),
                appended: watch::Sender::new(0),
                state_dir: state_dir.to_path_buf(),
                held_limit,
                episode: Mutex::new(None),
            }),
        };
        let listing = fs::read_dir(&dir).map_err(|source| AgentError::StateIo {
            action: "read",
            path: dir.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match spool_file_job(&name, entry.file_type().ok()) {
                Some(job_id) => found.push((job_id, entry.path())),
                None => tracing::warn!(
                    file = %entry.path().display(),
                    "ignoring a file in the spool that is not a job's report file (`<ULID>.jsonl`)"
                ),
            }
        }
        for (job_id, path) in found {
            match load(&path) {
                Ok((len, ended)) => {
                    let file = open_append(&path)
                        .map_err(|e| tracing::error!(%job_id, "could not reopen the spool file {}: {e}", path.display()))
                        .ok();
                    let entry = Entry::new(path, file, len, ended);
                    if let Ok(mut jobs) = spool.inner.jobs.lock() {
                        jobs.insert(job_id, entry);
                    }
                    if !ended {
                        tracing::warn!(%job_id, "the agent stopped while this job ran; reporting it failed");
                        spool.append(job_id, &interrupted(job_id));
                    } else {
                        tracing::info!(%job_id, "reports of an earlier job are waiting to be sent");
                    }
                }
                Err(e) => {
                    tracing::error!(%job_id, "ignoring an unreadable spool file {}: {e}", path.display());
                }
            }
        }
        Ok(spool)
    }

    /// Writes a report about `job_id` to its file (created on first use),
    /// then wakes the session. A report that cannot be written is held in
    /// memory (see the module doc) and counts against the job's end.
    pub(crate) fn append(&self, job_id: JobId, frame: &Frame) {
        self.append_with(job_id, |_| frame.clone());
    }

    /// Writes a job's end, built by `end` from what of the job's reports
    /// the spool could not keep (`None`: everything is on disk). When the
    /// end itself cannot be written, it is built again saying so, and held.
    /// Returns the shortfall the end that went out was built with.
    pub(crate) fn append_end(
        &self,
        job_id: JobId,
        end: impl Fn(Option<&Shortfall>) -> Frame,
    ) -> Option<Shortfall> {
        self.append_with(job_id, end)
    }

    fn append_with(
        &self,
        job_id: JobId,
        build: impl Fn(Option<&Shortfall>) -> Frame,
    ) -> Option<Shortfall> {
        let Ok(mut jobs) = self.inner.jobs.lock() else {
            tracing::error!(%job_id, "the spool's state is poisoned; a job report was lost");
            return None;
        };
        let entry = jobs.entry(job_id).or_insert_with(|| {
            let path = self.inner.dir.join(file_name(job_id));
            // Not created now: the first write tries again.
            let file = open_append(&path)
                .map_err(|e| {
                    tracing::debug!(%job_id, "could not create the spool file {}: {e}", path.display())
                })
                .ok();
            Entry::new(path, file, 0, false)
        });
        // Held reports first, so the shortfall the frame is built with is
        // what is really missing from the disk.
        let mut fault = None;
        let mut recovered = false;
        if !entry.held.is_empty() {
            match entry.write(None) {
                Ok(()) => recovered |= self.written(),
                Err(e) => fault = Some(e),
            }
        }
        let mut shortfall = entry.shortfall();
        let mut frame = build(shortfall.as_ref());
        let ends = ends_job(&frame);
        let mut line = frame.encode();
        line.push('\n');
        let written = match fault {
            // Behind held reports that could not be written: held too.
            Some(e) => Err(e),
            None => entry.write(Some(&line)),
        };
        match written {
            Ok(()) => {
                recovered |= self.written();
                if ends {
                    entry.ended = true;
                    // The end is what the server must not miss: make it
                    // survive a power cut, not only a process crash.
                    if let Some(Err(e)) = entry.file.as_ref().map(File::sync_data) {
                        tracing::warn!(%job_id, "could not sync the spool file: {e}");
                    }
                }
            }
            Err(e) => {
                let fault = self.fault(&e);
                entry.fault.get_or_insert(fault);
                if ends {
                    // Rebuilt so that it says it, too, is held.
                    let mut end_short = entry.shortfall().unwrap_or_else(|| Shortfall {
                        fault: entry.fault.clone().unwrap_or_default(),
                        held_log_lines: 0,
                        held_reports: Vec::new(),
                        lost_log_lines: 0,
                        end_held: false,
                    });
                    end_short.end_held = true;
                    frame = build(Some(&end_short));
                    line = frame.encode();
                    line.push('\n');
                    shortfall = Some(end_short);
                    entry.ended = true;
                }
                let kind = frame.message.kind().to_owned();
                let log_lines = match &frame.message {
                    Message::LogStream(stream) => stream.lines.len() as u64,
                    _ => 0,
                };
                let held_total: u64 = jobs.values().map(|e| e.held_bytes).sum();
                let Some(entry) = jobs.get_mut(&job_id) else {
                    return shortfall;
                };
                if log_lines > 0 && held_total + line.len() as u64 > self.inner.held_limit {
                    entry.lost_lines += log_lines;
                    self.count(0, log_lines);
                    tracing::debug!(%job_id, log_lines, "no memory left for held reports; log lines dropped");
                } else {
                    tracing::debug!(%job_id, %kind, "report held in memory: the spool cannot write");
                    entry.held_bytes += line.len() as u64;
                    entry.held.push(Held {
                        line,
                        kind,
                        log_lines,
                    });
                    self.count(1, 0);
                }
            }
        }
        if recovered {
            // Space is back: what other jobs hold goes to their files now,
            // not only at their next report (an ended job has none).
            for (id, other) in jobs.iter_mut() {
                if let Err(e) = other.write(None) {
                    tracing::debug!(job_id = %id, "held reports still cannot be written: {e}");
                }
            }
        }
        drop(jobs);
        self.inner.appended.send_modify(|n| *n = n.wrapping_add(1));
        shortfall
    }

    /// What of `job_id`'s reports is not on disk now, if anything.
    #[cfg(test)]
    pub(crate) fn shortfall(&self, job_id: JobId) -> Option<Shortfall> {
        let jobs = self.inner.jobs.lock().ok()?;
        jobs.get(&job_id).and_then(Entry::shortfall)
    }

    /// A write failed with `e`: the operator's words for it, and the
    /// episode's loud start if this is one.
    fn fault(&self, e: &std::io::Error) -> String {
        let fault = describe_fault(&self.inner.state_dir, e);
        if let Ok(mut episode) = self.inner.episode.lock() {
            if episode.is_none() {
                *episode = Some(Episode {
                    since: Instant::now(),
                    held: 0,
                    lost_lines: 0,
                });
                tracing::error!(
                    state_dir = %self.inner.state_dir.display(),
                    free = %free_space(&self.inner.dir),
                    "the agent's state directory {fault}: job reports cannot be written to its spool. \
                     They are held in memory (up to {} MiB) and sent to the server from there, but are \
                     lost if the agent restarts before the server has them; jobs that run meanwhile end \
                     `failed` saying what was not kept. Free space in {} (nothing needs restarting)",
                    self.inner.held_limit / (1024 * 1024),
                    self.inner.state_dir.display(),
                );
            }
        }
        fault
    }

    /// Counts held reports and dropped lines against the episode.
    fn count(&self, held: u64, lost_lines: u64) {
        if let Ok(mut episode) = self.inner.episode.lock() {
            if let Some(episode) = episode.as_mut() {
                episode.held += held;
                episode.lost_lines += lost_lines;
            }
        }
    }

    /// A write succeeded: the end of an episode, if one was going on
    /// (then `true`).
    fn written(&self) -> bool {
        let Ok(mut episode) = self.inner.episode.lock() else {
            return false;
        };
        let Some(over) = episode.take() else {
            return false;
        };
        {
            tracing::info!(
                state_dir = %self.inner.state_dir.display(),
                "the agent's state directory can be written again: the spool works normally \
                 (the fault lasted {}s; {} reports were held in memory, {} log lines dropped)",
                over.since.elapsed().as_secs(),
                over.held,
                over.lost_lines,
            );
        }
        true
    }

    /// Applies a `job.ack` about `job_id` (its `job_id` field, parsed):
    /// acknowledged log lines are not sent again; a job acknowledged as
    /// done is forgotten and its file deleted.
    pub(crate) fn ack(&self, job_id: JobId, ack: &JobAck) {
        let Ok(mut jobs) = self.inner.jobs.lock() else {
            return;
        };
        if ack.done {
            if let Some(entry) = jobs.remove(&job_id) {
                drop(entry.file);
                if let Err(e) = fs::remove_file(&entry.path) {
                    if e.kind() != ErrorKind::NotFound {
                        tracing::warn!(%job_id, "could not delete a delivered spool file: {e}");
                    }
                }
                match &ack.error {
                    Some(why) => {
                        tracing::warn!(%job_id, "the server refused this job's reports: {why}; dropping them")
                    }
                    None => tracing::debug!(%job_id, "job reports delivered"),
                }
            }
            return;
        }
        if let Some(entry) = jobs.get_mut(&job_id) {
            entry.acked_log_seq = entry.acked_log_seq.max(ack.log_seq);
        }
    }

    /// Jobs with reports not yet acknowledged as done, oldest first.
    pub(crate) fn jobs(&self) -> Vec<JobId> {
        self.inner
            .jobs
            .lock()
            .map(|jobs| jobs.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Wakes whenever something is appended.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.appended.subscribe()
    }

    /// A fresh replay position for a new connection: everything not yet
    /// acknowledged is sent again from the start.
    pub(crate) fn reader(&self) -> SpoolReader {
        SpoolReader {
            spool: self.clone(),
            sent: HashMap::new(),
        }
    }
}

/// How far one connection has sent each job's file.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    spool: Spool,
    sent: HashMap<JobId, u64>,
}

impl SpoolReader {
    /// The next frames to send, oldest job first: up to about a megabyte
    /// from one file, or then from the reports it holds in memory. Empty
    /// when everything written has been sent.
    pub(crate) async fn next_frames(&mut self) -> Vec<Frame> {
        let Some(slice) = self.next_slice() else {
            return Vec::new();
        };
        let (job_id, lines, acked) = match slice {
            Slice::Held {
                job_id,
                lines,
                to,
                acked,
            } => {
                self.sent.insert(job_id, to);
                (job_id, lines, acked)
            }
            Slice::File {
                job_id,
                path,
                from,
                to,
                acked,
            } => {
                let read = tokio::task::spawn_blocking(move || read_slice(&path, from, to)).await;
                let (lines, consumed) = match read {
                    Ok(Ok(read)) => read,
                    // Acknowledged as done (and deleted) while we read: nothing to send.
                    Ok(Err(e)) if e.kind() == ErrorKind::NotFound => (Vec::new(), to - from),
                    Ok(Err(e)) => {
                        tracing::error!(%job_id, "could not read the spool: {e}; skipping the rest of this job's reports");
                        (Vec::new(), to - from)
                    }
                    Err(e) => {
                        tracing::error!(%job_id, "spool reader failed: {e}");
                        (Vec::new(), to - from)
                    }
                };
                self.sent.insert(job_id, from + consumed);
                (job_id, lines, acked)
            }
        };
        lines
            .iter()
            .filter_map(|line| match Frame::decode(line.trim_end()) {
                Ok(frame) => Some(frame),
                Err(e) => {
                    tracing::warn!(%job_id, "skipping an unreadable spooled report: {e}");
                    None
                }
            })
            .filter_map(|frame| without_acked_lines(frame, acked))
            .collect()
    }

    /// The first job with bytes not yet sent on this connection. Its held
    /// reports continue the file: their offsets count on from its length,
    /// so they keep their place when a later append writes them to it.
    fn next_slice(&mut self) -> Option<Slice> {
        let jobs = self.spool.inner.jobs.lock().ok()?;
        self.sent.retain(|id, _| jobs.contains_key(id));
        jobs.iter().find_map(|(id, entry)| {
            let from = self.sent.get(id).copied().unwrap_or(0);
            if from < entry.len {
                return Some(Slice::File {
                    job_id: *id,
                    path: entry.path.clone(),
                    from,
                    to: entry.len.min(from + READ_SLICE),
                    acked: entry.acked_log_seq,
                });
            }
            let mut offset = entry.len;
            let mut lines = Vec::new();
            let mut to = from;
            for held in &entry.held {
                let next = offset + held.line.len() as u64;
                if offset >= from {
                    if to - from >= READ_SLICE {
                        break;
                    }
                    lines.push(held.line.clone());
                    to = next;
                }
                offset = next;
            }
            (!lines.is_empty()).then_some(Slice::Held {
                job_id: *id,
                lines,
                to,
                acked: entry.acked_log_seq,
            })
        })
    }
}

/// What [`SpoolReader::next_slice`] found to send.
enum Slice {
    /// Bytes `from..to` of a job's file.
    File {
        job_id: JobId,
        path: PathBuf,
        from: u64,
        to: u64,
        acked: u64,
    },
    /// Reports held in memory, ending at offset `to`.
    Held {
        job_id: JobId,
        lines: Vec<String>,
        to: u64,
        acked: u64,
    },
}

/// How operators call a report that is not a log batch.
fn report_name(kind: &str) -> String {
    match kind {
        "job.started" => String::from("the job's start"),
        "snapshots.report" => String::from("the snapshot list"),
        "repo.stats" => String::from("the repository statistics"),
        "job.finished" => String::from("the job's end"),
        other => format!("a {other} report"),
    }
}

/// Says what is wrong with the state directory when a write failed with
/// `e`, in the words operators search for ("… is full (No space left on
/// device)").
fn describe_fault(state_dir: &Path, e: &std::io::Error) -> String {
    use nix::errno::Errno;
    let dir = state_dir.display();
    match e.raw_os_error().map(Errno::from_raw) {
        Some(errno) => {
            let what = match errno {
                Errno::ENOSPC => "is full",
                Errno::EDQUOT => "is over its disk quota",
                Errno::EROFS => "is read-only",
                Errno::EIO => "has a failing disk",
                _ => "cannot be written",
            };
            format!("{dir} {what} ({})", errno.desc())
        }
        None => format!("{dir} cannot be written ({e})"),
    }
}

/// Free space on the file system holding `dir`, as the log shows it.
// The block counts are not `u64` on every platform.
#[allow(clippy::unnecessary_cast)]
fn free_space(dir: &Path) -> String {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => {
            let block = stat.fragment_size() as u64;
            let free = stat.blocks_available() as u64 * block;
            let total = stat.blocks() as u64 * block;
            format!("{} free of {}", bytes(free), bytes(total))
        }
        Err(e) => format!("unknown ({})", e.desc()),
    }
}

/// A byte count for people.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Whether a report is a job's last one.
fn ends_job(frame: &Frame) -> bool {
    match &frame.message {
        Message::JobFinished(_) => true,
        Message::ScheduleFire(fire) => fire.skipped,
        _ => false,
    }
}

/// A job's spool file name: the canonical spelling of its id.
fn file_name(job_id: JobId) -> String {
    format!("{job_id}{SUFFIX}")
}

/// The job whose report file `name` is, when it is one: a regular file
/// named `<ULID>.jsonl` in the canonical spelling. Anything else in the
/// folder (a stray file, a link, an editor's backup) is not the spool's.
fn spool_file_job(name: &str, file_type: Option<fs::FileType>) -> Option<JobId> {
    let job_id: JobId = name.strip_suffix(SUFFIX)?.parse().ok()?;
    let regular = file_type.is_some_and(|t| t.is_file());
    (regular && file_name(job_id) == name).then_some(job_id)
}

/// The `job.finished` for a job the agent died running.
fn interrupted(job_id: JobId) -> Frame {
    Frame::new(JobFinished {
        job_id: job_id.to_string(),
        status: JobOutcome::Failed,
        exit_code: None,
        stats: Value::Null,
        error: Some(String::from(INTERRUPTED)),
        finished_at: Utc::now(),
    })
}

/// Drops log lines the server already has; `None` when none is left.
fn without_acked_lines(mut frame: Frame, acked: u64) -> Option<Frame> {
    if let Message::LogStream(stream) = &mut frame.message {
        stream.lines.retain(|line| line.seq > acked);
        if stream.lines.is_empty() {
            return None;
        }
    }
    Some(frame)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Reads a spool file at start-up: cuts a torn last line (the agent died
/// mid-write) and says how long the rest is and whether the job ended.
fn load(path: &Path) -> std::io::Result<(u64, bool)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut reader = BufReader::new(&mut file);
    let mut len = 0u64;
    let mut ended = false;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        len += n as u64;
        if let Ok(frame) = Frame::decode(line.trim_end()) {
            ended = ended || ends_job(&frame);
        }
    }
    drop(reader);
    if file.metadata()?.len() != len {
        file.set_len(len)?;
    }
    Ok((len, ended))
}

/// The complete lines between byte offsets `from` and `to` of a file, and
/// how many bytes they span.
fn read_slice(path: &Path, from: u64, to: u64) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    file.take(to - from).read_to_end(&mut buf)?;
    // `to` is always at a line end, unless the slice was cut at
    // READ_SLICE: then keep only whole lines and resume at the cut.
    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let lines = String::from_utf8_lossy(&buf[..whole])
        .lines()
        .map(str::to_owned)
        .collect();
    if whole == 0 && !buf.is_empty() {
        // One line longer than a slice: read it whole.
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        let mut line = String::new();
        let n = BufReader::new(file).read_line(&mut line)?;
        return Ok((vec![line.trim_end().to_owned()], n as u64));
    }
    Ok((lines, whole as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_protocol::{JobStarted, LogLine, LogStream, LogStreamKind, ScheduleFire};

    const A: &str = "01J0000000000000000000000A";
    const B: &str = "01J0000000000000000000000B";
    const S: &str = "01J0000000000000000000000S";

    fn job(id: &str) -> JobId {
        id.parse().unwrap()
    }

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    fn logs(job: &str, seqs: std::ops::RangeInclusive<u64>) -> Frame {
        Frame::new(LogStream {
            job_id: job.into(),
            lines: seqs
                .map(|seq| LogLine {
                    seq,
                    ts: Utc::now(),
                    stream: LogStreamKind::Stdout,
                    text: format!("line {seq}"),
                })
                .collect(),
        })
    }

    fn started(job: &str) -> Frame {
        Frame::new(JobStarted {
            job_id: job.into(),
            started_at: Utc::now(),
        })
    }

    fn finished(job: &str) -> Frame {
        Frame::new(JobFinished {
            job_id: job.into(),
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: Value::Null,
            error: None,
            finished_at: Utc::now(),
        })
    }

    async fn everything(reader: &mut SpoolReader) -> Vec<Frame> {
        let mut all = Vec::new();
        loop {
            let next = reader.next_frames().await;
            if next.is_empty() {
                return all;
            }
            all.extend(next);
        }
    }

    fn kinds(frames: &[Frame]) -> Vec<&str> {
        frames.iter().map(|f| f.message.kind()).collect()
    }

    #[tokio::test]
    async fn reports_are_replayed_in_order_on_every_connection_until_done() {
        let dir = temp();
        let spool = Spool::open(dir.path()).unwrap();
        spool.append(job(A), &started(A));
        spool.append(job(A), &logs(A, 1..=3));
        let mut first = spool.reader();
        assert_eq!(
            kinds(&everything(&mut first).await),
            ["job.started", "log.stream"]
        );
        // Only what is new goes out on the same connection…
        spool.append(job(A), &finished(A));
        assert_eq!(kinds(&everything(&mut first).await), ["job.finished"]);
        // …and everything again on the next one, until acknowledged.
        let mut second = spool.reader();
        assert_eq!(everything(&mut second).await.len(), 3);
        assert_eq!(spool.jobs(), [job(A)]);
        spool.ack(
            job(A),
            &JobAck {
                job_id: A.into(),
                done: true,
                ..JobAck::default()
            },
        );
        assert!(spool.jobs().is_empty());
        assert!(everything(&mut spool.reader()).await.is_empty());
        assert!(!dir.path().join(format!("spool/{A}.jsonl")).exists());
    }

    #[tokio::test]
    async fn acknowledged_log_lines_are_not_sent_again() {
        let dir = temp();
        let spool = Spool::open(dir.path()).unwrap();
        spool.append(job(A), &logs(A, 1..=2));
        spool.append(job(A), &logs(A, 3..=4));
        spool.ack(
            job(A),
            &JobAck {
                job_id: A.into(),
                log_seq: 3,
                ..JobAck::default()
            },
        );
        // An older ack never takes back a newer one.
        spool.ack(
            job(A),
            &JobAck {
                job_id: A.into(),
                log_seq: 1,
                ..JobAck::default()
            },
        );
        let frames = everything(&mut spool.reader()).await;
        let Message::LogStream(stream) = &frames[0].message else {
            panic!("{frames:?}")
        };
        let seqs: Vec<u64> = stream.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [4]);
        assert_eq!(frames.len(), 1);
    }

    #[tokio::test]
    async fn a_job_cut_short_by_the_agent_dying_is_reported_interrupted() {
        let dir = temp();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.append(job(A), &started(A));
            spool.append(job(A), &logs(A, 1..=2));
            spool.append(job(B), &started(B));
            spool.append(job(B), &finished(B));
        }
        // A torn last line, as a kill in the middle of a write leaves.
        let path = dir.path().join(format!("spool/{A}.jsonl"));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"type\":\"log.str").unwrap();

        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.jobs(), [job(A), job(B)]);
        let frames = everything(&mut spool.reader()).await;
        assert_eq!(
            kinds(&frames),
            [
                "job.started",
                "log.stream",
                "job.finished",
                "job.started",
                "job.finished"
            ]
        );
        let Message::JobFinished(end) = &frames[2].message else {
            unreachable!()
        };
        assert_eq!(end.job_id, A);
        assert_eq!(end.status, JobOutcome::Failed);
        assert!(end.error.as_deref().unwrap_or("").contains("interrupted"));
        let Message::JobFinished(end) = &frames[4].message else {
            unreachable!()
        };
        assert_eq!(end.status, JobOutcome::Succeeded);
    }

    #[tokio::test]
    async fn a_skipped_fire_is_a_whole_job_and_files_are_private() {
        let dir = temp();
        let spool = Spool::open(dir.path()).unwrap();
        spool.append(
            job(S),
            &Frame::new(ScheduleFire {
                schedule_id: "01J00000000000000000000SCH".into(),
                scheduled_at: Utc::now(),
                job_id: Some(S.into()),
                skipped: true,
                catch_up: false,
            }),
        );
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        // Not "interrupted": a skipped fire is complete by itself.
        assert_eq!(
            kinds(&everything(&mut spool.reader()).await),
            ["schedule.fire"]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("spool")), 0o700);
        assert_eq!(mode(&dir.path().join(format!("spool/{S}.jsonl"))), 0o600);
    }

    #[tokio::test]
    async fn a_long_backlog_is_read_in_slices_without_losing_a_frame() {
        let dir = temp();
        let spool = Spool::open(dir.path()).unwrap();
        let big = "x".repeat(64 * 1024);
        for seq in 1..=40u64 {
            spool.append(
                job(A),
                &Frame::new(LogStream {
                    job_id: A.into(),
                    lines: vec![LogLine {
                        seq,
                        ts: Utc::now(),
                        stream: LogStreamKind::Stdout,
                        text: big.clone(),
                    }],
                }),
            );
        }
        let mut reader = spool.reader();
        let first = reader.next_frames().await;
        assert!(first.len() < 40, "one slice is about a megabyte");
        let mut all = first;
        all.extend(everything(&mut reader).await);
        assert_eq!(all.len(), 40);
    }

    /// A 1 MiB tmpfs, or `None` (and why, printed) where mounting is not
    /// allowed. CI runs as root.
    fn small_disk() -> Option<rm_testkit::SmallDisk> {
        match rm_testkit::SmallDisk::mount(1) {
            Ok(disk) => Some(disk),
            Err(e) => {
                eprintln!("skipping the full-disk test: {e}");
                None
            }
        }
    }

    /// Log lines of `size` bytes each: bigger than a page, so a write needs
    /// new space even when the file's last page has room.
    fn big_logs(job: &str, seqs: std::ops::RangeInclusive<u64>, size: usize) -> Frame {
        Frame::new(LogStream {
            job_id: job.into(),
            lines: seqs
                .map(|seq| LogLine {
                    seq,
                    ts: Utc::now(),
                    stream: LogStreamKind::Stdout,
                    text: format!("{seq}:{}", "x".repeat(size)),
                })
                .collect(),
        })
    }

    /// The end `JobRunner::finish` builds: failed with the shortfall.
    fn end_for(job: &str, shortfall: Option<&Shortfall>) -> Frame {
        let mut frame = finished(job);
        if let (Some(short), Message::JobFinished(end)) = (shortfall, &mut frame.message) {
            end.status = JobOutcome::Failed;
            end.error = Some(short.to_string());
        }
        frame
    }

    /// Every log `seq` in `frames` of `job`, in order.
    fn log_seqs(frames: &[Frame], job: &str) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| match &f.message {
                Message::LogStream(s) if s.job_id == job => Some(s.lines.iter().map(|l| l.seq)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn the_end<'a>(frames: &'a [Frame], job: &str) -> &'a JobFinished {
        frames
            .iter()
            .find_map(|f| match &f.message {
                Message::JobFinished(end) if end.job_id == job => Some(end),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no end of {job} in {:?}", kinds(frames)))
    }

    #[tokio::test]
    async fn a_full_disk_keeps_what_is_spooled_and_holds_the_rest_in_order() {
        let Some(disk) = small_disk() else { return };
        let state = disk.path().join("state");
        let spool = Spool::open(&state).unwrap();
        spool.append(job(A), &started(A));
        spool.append(job(A), &logs(A, 1..=2));
        spool.append(job(A), &finished(A));
        spool.append(job(B), &started(B));
        spool.append(job(B), &logs(B, 1..=3));
        let a_path = state.join(format!("spool/{A}.jsonl"));
        let b_path = state.join(format!("spool/{B}.jsonl"));
        let a_before = fs::read(&a_path).unwrap();
        let b_before = fs::read(&b_path).unwrap();
        // Room to free later, less than the held reports need, so that
        // writing them gets part-way and then fails.
        fs::write(disk.path().join("ballast"), vec![1u8; 8 * 1024]).unwrap();
        assert!(disk.fill().unwrap() > 0);

        spool.append(job(B), &big_logs(B, 4..=5, 8 * 1024));
        fs::remove_file(disk.path().join("ballast")).unwrap();
        spool.append(job(B), &big_logs(B, 6..=6, 64 * 1024));
        // Nothing already spooled was touched; the torn write was cut back.
        let same = |path: &Path, before: &[u8]| {
            let now = fs::read(path).unwrap();
            assert!(
                now == before,
                "{}: {} bytes, {} before",
                path.display(),
                now.len(),
                before.len()
            );
        };
        same(&a_path, &a_before);
        same(&b_path, &b_before);
        let short = spool.shortfall(job(B)).expect("B's reports are short");
        assert_eq!(short.held_log_lines, 3);
        assert_eq!(short.lost_log_lines, 0);
        assert!(short.held_reports.is_empty(), "{short:?}");
        let expected_fault = format!("{} is full (No space left on device)", state.display());
        assert_eq!(short.fault, expected_fault);
        assert_eq!(spool.shortfall(job(A)), None);

        // The end cannot be written either: built again saying so, held.
        let used = spool.append_end(job(B), |s| end_for(B, s)).unwrap();
        assert!(used.end_held);
        let message = used.to_string();
        assert!(
            message.starts_with(&format!(
                "the agent could not keep this job's reports: {expected_fault}; \
                 3 log lines, this end could not be written to its spool"
            )),
            "{message}"
        );

        // A connection gets everything, held reports after the file's, in order.
        let frames = everything(&mut spool.reader()).await;
        assert_eq!(log_seqs(&frames, A), [1, 2]);
        assert_eq!(log_seqs(&frames, B), [1, 2, 3, 4, 5, 6]);
        let end = the_end(&frames, B);
        assert_eq!(end.status, JobOutcome::Failed);
        assert_eq!(end.error.as_deref(), Some(message.as_str()));
        same(&b_path, &b_before);

        // Space back: the next report is written, and B's held reports go
        // to its file behind what it had, in order, without a restart.
        disk.free().unwrap();
        spool.append(job(S), &started(S));
        assert_eq!(spool.shortfall(job(S)), None);
        assert_eq!(spool.shortfall(job(B)), None);
        let b_after = fs::read(&b_path).unwrap();
        assert!(b_after.starts_with(&b_before) && b_after.len() > b_before.len());
        // A connection that already had the held reports sends nothing twice.
        let mut reader = spool.reader();
        assert_eq!(everything(&mut reader).await.len(), frames.len() + 1);
        spool.append(job(S), &logs(S, 1..=1));
        assert_eq!(kinds(&everything(&mut reader).await), ["log.stream"]);

        // And all of it survives a restart, from the files alone.
        drop(spool);
        let spool = Spool::open(&state).unwrap();
        let frames = everything(&mut spool.reader()).await;
        assert_eq!(log_seqs(&frames, B), [1, 2, 3, 4, 5, 6]);
        assert_eq!(the_end(&frames, B).error.as_deref(), Some(message.as_str()));
        assert_eq!(the_end(&frames, A).status, JobOutcome::Succeeded);
        assert!(the_end(&frames, S)
            .error
            .as_deref()
            .unwrap_or("")
            .contains("interrupted"));
    }

    #[tokio::test]
    async fn held_reports_that_fit_go_to_disk_and_the_rest_keep_their_order() {
        let Some(disk) = small_disk() else { return };
        let state = disk.path().join("state");
        let spool = Spool::open(&state).unwrap();
        spool.append(job(B), &started(B));
        fs::write(disk.path().join("ballast"), vec![1u8; 12 * 1024]).unwrap();
        assert!(disk.fill().unwrap() > 0);
        spool.append(job(B), &big_logs(B, 1..=1, 6 * 1024));
        spool.append(job(B), &big_logs(B, 2..=2, 64 * 1024));
        assert_eq!(spool.shortfall(job(B)).unwrap().held_log_lines, 2);
        let mut reader = spool.reader();
        assert_eq!(everything(&mut reader).await.len(), 3);

        // Room for the first held batch only: it goes to the file, the
        // second is cut back and stays held, the new one queues behind it.
        fs::remove_file(disk.path().join("ballast")).unwrap();
        spool.append(job(B), &logs(B, 3..=3));
        assert_eq!(spool.shortfall(job(B)).unwrap().held_log_lines, 2);
        let on_disk = fs::read_to_string(state.join(format!("spool/{B}.jsonl"))).unwrap();
        assert_eq!(on_disk.lines().count(), 2, "the start and batch 1");
        assert!(on_disk.ends_with('\n'));
        // The connection that had everything gets only what is new.
        assert_eq!(log_seqs(&everything(&mut reader).await, B), [3]);
        // A new one gets it all, in order.
        assert_eq!(
            log_seqs(&everything(&mut spool.reader()).await, B),
            [1, 2, 3]
        );
    }

    #[tokio::test]
    async fn log_lines_past_the_memory_limit_are_dropped_and_counted() {
        let Some(disk) = small_disk() else { return };
        let state = disk.path().join("state");
        let spool = Spool::open_with(&state, 32 * 1024).unwrap();
        assert!(disk.fill().unwrap() > 0);
        spool.append(job(B), &started(B));
        for seq in 1..=10 {
            spool.append(job(B), &big_logs(B, seq..=seq, 8 * 1024));
        }
        let short = spool.shortfall(job(B)).unwrap();
        assert_eq!(short.held_reports, ["the job's start"]);
        assert_eq!(short.held_log_lines + short.lost_log_lines, 10);
        assert!(short.lost_log_lines >= 6, "{short:?}");
        // The end is never dropped, whatever the limit.
        let used = spool.append_end(job(B), |s| end_for(B, s)).unwrap();
        let message = used.to_string();
        assert!(
            message.contains(&format!("; {} log lines were lost", short.lost_log_lines)),
            "{message}"
        );
        let frames = everything(&mut spool.reader()).await;
        assert_eq!(kinds(&frames)[0], "job.started");
        let seqs = log_seqs(&frames, B);
        assert_eq!(seqs, (1..=short.held_log_lines).collect::<Vec<_>>());
        assert_eq!(the_end(&frames, B).status, JobOutcome::Failed);
        // A job acknowledged as done gives its memory back.
        spool.ack(
            job(B),
            &JobAck {
                job_id: B.into(),
                done: true,
                ..JobAck::default()
            },
        );
        spool.append(job(S), &big_logs(S, 1..=1, 8 * 1024));
        assert_eq!(spool.shortfall(job(S)).unwrap().lost_log_lines, 0);
    }

    #[tokio::test]
    async fn only_ulid_named_report_files_are_the_spools() {
        let dir = temp();
        let spool_dir = dir.path().join("spool");
        fs::create_dir_all(&spool_dir).unwrap();
        // A real one, without an end: reported interrupted.
        fs::write(
            spool_dir.join(format!("{A}.jsonl")),
            started(A).encode() + "\n",
        )
        .unwrap();
        // Strays: not a ULID, a lower-case spelling, another suffix, a
        // folder and a link with a ULID name.
        for name in [
            "notes.jsonl",
            "..jsonl",
            &format!("{}.jsonl", B.to_lowercase()),
            &format!("{B}.json"),
        ] {
            fs::write(spool_dir.join(name), "{}\n").unwrap();
        }
        fs::create_dir(spool_dir.join(format!("{S}.jsonl"))).unwrap();
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, "not the spool's").unwrap();
        std::os::unix::fs::symlink(&outside, spool_dir.join("01J0000000000000000000000C.jsonl"))
            .unwrap();

        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.jobs(), [job(A)]);
        assert_eq!(fs::read_to_string(&outside).unwrap(), "not the spool's");
        assert_eq!(
            fs::read_to_string(spool_dir.join("notes.jsonl")).unwrap(),
            "{}\n"
        );
        assert_eq!(
            spool_file_job(&format!("{A}.jsonl"), None),
            None,
            "unknown type"
        );
    }
}
