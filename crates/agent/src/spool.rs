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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
}

impl Spool {
    /// Opens (creating it 0700 if needed) the spool under `state_dir`, and
    /// gives every job that has no end yet — the agent died while running
    /// it — a failed `job.finished` saying so.
    pub(crate) fn open(state_dir: &Path) -> Result<Spool, AgentError> {
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
                    let entry = Entry {
                        path,
                        file,
                        len,
                        acked_log_seq: 0,
                        ended,
                    };
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
    /// then wakes the session. A write that fails is logged: the report
    /// cannot be delivered after that.
    pub(crate) fn append(&self, job_id: JobId, frame: &Frame) {
        let ends = ends_job(frame);
        let mut line = frame.encode();
        line.push('\n');
        let Ok(mut jobs) = self.inner.jobs.lock() else {
            tracing::error!(%job_id, "the spool's state is poisoned; a job report was lost");
            return;
        };
        let entry = jobs.entry(job_id).or_insert_with(|| {
            let path = self.inner.dir.join(file_name(job_id));
            let file = open_append(&path)
                .map_err(|e| {
                    tracing::error!(%job_id, "could not create the spool file {}: {e}", path.display())
                })
                .ok();
            Entry {
                path,
                file,
                len: 0,
                acked_log_seq: 0,
                ended: false,
            }
        });
        let Some(file) = entry.file.as_mut() else {
            tracing::error!(%job_id, kind = frame.message.kind(), "no spool file; a job report was lost");
            return;
        };
        match file.write_all(line.as_bytes()) {
            Ok(()) => {
                entry.len += line.len() as u64;
                if ends {
                    entry.ended = true;
                    // The end is what the server must not miss: make it
                    // survive a power cut, not only a process crash.
                    if let Err(e) = file.sync_data() {
                        tracing::warn!(%job_id, "could not sync the spool file: {e}");
                    }
                }
            }
            Err(e) => {
                tracing::error!(%job_id, kind = frame.message.kind(), "could not write to the spool: {e}; a job report was lost");
            }
        }
        drop(jobs);
        self.inner.appended.send_modify(|n| *n = n.wrapping_add(1));
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
    /// from one file. Empty when everything written has been sent.
    pub(crate) async fn next_frames(&mut self) -> Vec<Frame> {
        let Some((job_id, path, from, to, acked)) = self.next_slice() else {
            return Vec::new();
        };
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
        lines
            .iter()
            .filter_map(|line| match Frame::decode(line) {
                Ok(frame) => Some(frame),
                Err(e) => {
                    tracing::warn!(%job_id, "skipping an unreadable spooled report: {e}");
                    None
                }
            })
            .filter_map(|frame| without_acked_lines(frame, acked))
            .collect()
    }

    /// The first job with bytes not yet sent on this connection.
    fn next_slice(&mut self) -> Option<(JobId, PathBuf, u64, u64, u64)> {
        let jobs = self.spool.inner.jobs.lock().ok()?;
        self.sent.retain(|id, _| jobs.contains_key(id));
        jobs.iter().find_map(|(id, entry)| {
            let from = self.sent.get(id).copied().unwrap_or(0);
            (from < entry.len).then(|| {
                let to = entry.len.min(from + READ_SLICE);
                (*id, entry.path.clone(), from, to, entry.acked_log_seq)
            })
        })
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
