//! What a running restic reports while it works: log lines worth keeping
//! and parsed progress.
//!
//! Raw per-second status JSON never becomes a log line (it would flood the
//! job log); it becomes [`Event::Progress`] instead, which callers throttle
//! and forward live.

/// Something restic printed or did while running.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// restic was started (first event of every run). `args` are the
    /// arguments after the binary; they never contain secrets.
    Started {
        /// The process id, which is also the id of its process group.
        pid: u32,
        /// The arguments restic was started with.
        args: Vec<String>,
    },
    /// A line worth keeping in the job log: every stderr line, non-JSON
    /// stdout lines, and JSON messages rendered as readable text (backup
    /// errors, the backup/restore summary). Capped at 64 KiB with a
    /// truncation marker.
    Line {
        /// Where restic printed it.
        stream: Stream,
        /// The text, without the trailing newline or terminal escapes.
        text: String,
    },
    /// Live progress from a status message (backup; restore on 0.16+).
    /// These may be dropped when the receiver lags.
    Progress(Progress),
    /// One node of a [`crate::Command::LsTree`] listing, in restic's
    /// (depth-first) order. Never dropped: the sender waits for room.
    Node(crate::Node),
}

/// restic's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output: JSON and reports.
    Stdout,
    /// Standard error: errors, warnings, `Fatal:` lines.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One progress reading.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Done so far, 0 to 100.
    pub percent: f64,
    /// Files finished.
    pub files_done: u64,
    /// Files known so far (grows while restic scans).
    pub files_total: u64,
    /// Bytes finished.
    pub bytes_done: u64,
    /// Bytes known so far.
    pub bytes_total: u64,
    /// restic's estimate of the time left; `None` when it has none or the
    /// estimate is absurd (0.14 prints 2^63 before it knows).
    pub eta_seconds: Option<u64>,
    /// Files being worked on right now.
    pub current_files: Vec<String>,
}
