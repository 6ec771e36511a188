//! Turns the lines of one restic run into events while it runs, and into a
//! [`Finished`] when it ends.
//!
//! This is where the per-command parsers meet: which stdout lines are
//! progress, which are a document, which are log text; what of stderr
//! explains a failure. Keeping it separate from the process plumbing means
//! it can be tested on recorded output without running restic.

use std::collections::VecDeque;

use serde_json::{json, Map, Value};

use crate::command::Command;
use crate::event::{Event, Stream};
use crate::limits::Limits;
use crate::outcome::{classify, FailureKind, Finished, Status};
use crate::parse::document::{Document, Feed};
use crate::parse::messages::{ErrorMessage, ExitError};
use crate::parse::{backup, check, forget, json_line, prune, restore, stats, typed, JsonLine};
use crate::process::{split_lines, Ended, RawLine, StopReason, STDERR_LINE_CAP};
use crate::text::{bounded_join, clean_line, human_duration, truncate_for_log};
use crate::version::ResticVersion;

/// stderr lines kept from the end of the output to explain a failure.
const TAIL_LINES: usize = 10;
/// Lines kept from a `Fatal:` message on (restic's message spans a few).
const FATAL_LINES: usize = 20;
/// Longest `error` text a [`Finished`] carries.
const MAX_ERROR_BYTES: usize = 4096;

/// Everything learnt so far from one run.
pub(crate) struct Collector<'a> {
    command: &'a Command,
    version: ResticVersion,
    document: Document,
    document_text: Option<String>,
    /// `ls` JSON lines, and `list locks` ids.
    lines: Vec<String>,
    ls_saw_snapshot: bool,
    stats: Option<Value>,
    snapshot_id: Option<String>,
    check_errors: Option<bool>,
    /// `copy`: snapshots saved in the destination.
    copied: u64,
    stderr: StderrLog,
}

/// What stderr said, kept bounded.
#[derive(Default)]
struct StderrLog {
    fatal: Vec<String>,
    tail: VecDeque<String>,
    warnings: Vec<String>,
    exit_error: Option<String>,
}

impl<'a> Collector<'a> {
    /// A collector for one run of `command` on restic `version`.
    pub(crate) fn new(command: &'a Command, version: ResticVersion) -> Self {
        Collector {
            command,
            version,
            document: Document::default(),
            document_text: None,
            lines: Vec::new(),
            ls_saw_snapshot: false,
            stats: None,
            snapshot_id: None,
            check_errors: None,
            copied: 0,
            stderr: StderrLog::default(),
        }
    }

    /// Handles one line; returns the events it produces.
    pub(crate) fn on_line(&mut self, stream: Stream, raw: RawLine) -> Vec<Event> {
        let text = clean_line(&raw.bytes);
        if text.trim().is_empty() {
            return Vec::new();
        }
        let mut out = Output {
            events: Vec::new(),
            stream,
            dropped: raw.dropped,
        };
        match stream {
            Stream::Stdout => self.stdout(text, &mut out),
            Stream::Stderr => self.stderr(text, &mut out),
        }
        out.events
    }

    fn stdout(&mut self, text: String, out: &mut Output) {
        match self.command {
            Command::Snapshots { .. }
            | Command::Stats { .. }
            | Command::Forget { .. }
            | Command::CatConfig => match self.document.feed(&text) {
                Feed::Pending => {}
                Feed::Complete(document) => {
                    out.line(self.document_found(&document));
                    self.document_text = Some(document);
                }
                Feed::Text(lines) => lines.into_iter().for_each(|l| out.line(l)),
            },
            Command::LsTree { .. } => match json_line(&text) {
                Some(json) if json.kind == "snapshot" => self.ls_saw_snapshot = true,
                Some(json) if json.kind == "node" => {
                    // Streamed, never collected: a snapshot may have millions.
                    if let Some(node) = crate::parse::typed::<crate::Node>(&json.value) {
                        out.events.push(Event::Node(node));
                    }
                }
                _ => out.line(text),
            },
            Command::Ls { .. } => match json_line(&text) {
                Some(json) if json.kind == "snapshot" || json.kind == "node" => {
                    self.ls_saw_snapshot |= json.kind == "snapshot";
                    self.lines.push(text);
                }
                _ => out.line(text),
            },
            Command::ListLocks => {
                let id = text.trim();
                if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.lines.push(id.to_owned());
                }
                out.line(text);
            }
            Command::Backup { .. }
            | Command::BackupStdin { .. }
            | Command::Restore { .. }
            | Command::Check { .. } => match json_line(&text) {
                Some(json) => self.json_message(json, text, out),
                None => {
                    self.note_check_verdict(&text);
                    out.line(text);
                }
            },
            // Data, not lines: `Restic::dump` streams it and never comes
            // here; a `Restic::run` of it drops the data.
            Command::Dump { .. } => {}
            Command::Prune => {
                if let Some(freed) = prune::freed_bytes(&text) {
                    self.stats = Some(serde_json::json!({ "freed_bytes": freed }));
                }
                out.line(text);
            }
            Command::Copy { .. } => {
                if copy_saved(&text) {
                    self.copied += 1;
                }
                out.line(text);
            }
            Command::Init | Command::InitFrom { .. } | Command::Unlock => match json_line(&text) {
                Some(json) if json.kind == "initialized" => {
                    let field = |k: &str| json.value.get(k).and_then(Value::as_str).unwrap_or("");
                    out.line(format!(
                        "created restic repository {} at {}",
                        backup::short(field("id")),
                        field("repository")
                    ));
                }
                _ => out.line(text),
            },
        }
    }

    /// The log line announcing a single-document result.
    fn document_found(&mut self, document: &str) -> String {
        match self.command {
            Command::Snapshots { .. } => {
                let count = serde_json::from_str::<Vec<Value>>(document).map_or(0, |v| v.len());
                format!("{count} snapshots")
            }
            Command::Stats { .. } => {
                self.stats = serde_json::from_str(document).ok();
                stats::parse_stats(document)
                    .map(|s| s.render())
                    .unwrap_or_else(|_| "statistics received".to_owned())
            }
            Command::Forget { .. } => match forget::counts(document) {
                Some(counts) => {
                    self.stats = Some(counts.to_json());
                    counts.render()
                }
                None => "forget report received".to_owned(),
            },
            _ => {
                let config: Value = serde_json::from_str(document).unwrap_or_default();
                let id = config.get("id").and_then(Value::as_str).unwrap_or("");
                let format = config.get("version").and_then(Value::as_u64).unwrap_or(0);
                format!("repository {} (format version {format})", backup::short(id))
            }
        }
    }

    /// A JSON message of backup, restore or check (any stream).
    fn json_message(&mut self, json: JsonLine, raw: String, out: &mut Output) {
        let command = self.command;
        match (command, json.kind.as_str()) {
            (Command::Backup { .. } | Command::BackupStdin { .. }, "status") => {
                if let Some(progress) =
                    typed::<backup::Status>(&json.value).and_then(|s| s.progress())
                {
                    out.events.push(Event::Progress(progress));
                }
            }
            (Command::Backup { .. } | Command::BackupStdin { .. }, "summary") => {
                if let Some(summary) = typed::<backup::Summary>(&json.value) {
                    self.snapshot_id = summary.snapshot_id();
                    out.line(summary.render());
                }
                self.stats = Some(json.value);
            }
            (Command::Restore { .. }, "status") => {
                if let Some(counters) = typed::<restore::Counters>(&json.value) {
                    out.events.push(Event::Progress(counters.progress()));
                }
            }
            (Command::Restore { .. }, "summary") => {
                if let Some(counters) = typed::<restore::Counters>(&json.value) {
                    out.line(counters.render());
                }
                self.stats = Some(json.value);
            }
            (Command::Check { .. }, "summary") => {
                if let Some(summary) = typed::<check::Summary>(&json.value) {
                    self.check_errors = Some(summary.num_errors > 0);
                    out.line(summary.render());
                }
                self.stats = Some(json.value);
            }
            // Per-file detail (needs -v) and check's progress: not log material.
            (_, "verbose_status") | (Command::Check { .. }, "status") => {}
            (_, "error") => self.error_message(&json.value, raw, out),
            (_, "exit_error") => self.exit_error(&json.value, raw, out),
            // A message type newer than this crate: keep it, it is rare.
            _ => out.line(raw),
        }
    }

    fn error_message(&mut self, value: &Value, raw: String, out: &mut Output) {
        match typed::<ErrorMessage>(value) {
            Some(message) => out.line(message.render()),
            None => out.line(raw),
        }
    }

    fn exit_error(&mut self, value: &Value, raw: String, out: &mut Output) {
        match typed::<ExitError>(value) {
            Some(exit) if !exit.message.is_empty() => {
                // The log line is capped on its own; the error text the run
                // reports is kept to the same bound as any other.
                self.stderr.exit_error =
                    Some(bounded_join([exit.message.as_str()], MAX_ERROR_BYTES));
                out.line(exit.message);
            }
            _ => out.line(raw),
        }
    }

    fn stderr(&mut self, text: String, out: &mut Output) {
        if let Some(json) = json_line(&text) {
            match json.kind.as_str() {
                "error" => self.error_message(&json.value, text, out),
                "exit_error" => self.exit_error(&json.value, text, out),
                _ => self.json_message(json, text, out),
            }
            return;
        }
        let log = &mut self.stderr;
        if (text.starts_with("Fatal:") || !log.fatal.is_empty()) && log.fatal.len() < FATAL_LINES {
            log.fatal.push(text.clone());
        }
        if (text.starts_with("Warning:") || text.ends_with("does not exist, skipping"))
            && log.warnings.len() < FATAL_LINES
        {
            log.warnings.push(text.clone());
        }
        if log.tail.len() == TAIL_LINES {
            log.tail.pop_front();
        }
        log.tail.push_back(text.clone());
        self.note_check_verdict(&text);
        out.line(text);
    }

    /// Reads check's text verdict (0.14–0.17), on either stream.
    fn note_check_verdict(&mut self, text: &str) {
        if matches!(self.command, Command::Check { .. }) {
            if let Some(errors) = check::text_verdict(text) {
                self.check_errors = Some(errors);
            }
        }
    }

    /// What restic said that may explain a failure, for [`classify`].
    fn failure_text(&self) -> String {
        let log = &self.stderr;
        log.exit_error
            .iter()
            .chain(&log.fatal)
            .chain(&log.tail)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The result of the run.
    pub(crate) fn finish(self, ended: Ended, limits: &Limits) -> Finished {
        let text = self.failure_text();
        let (mut status, mut kind) = classify(self.command, self.version, ended.exit_code, &text);
        self.adjust_for_version(&mut status, &mut kind);
        // Only a run that did not complete on its own counts as stopped:
        // restic may have finished just as we asked it to stop.
        if status == Status::Failed {
            match ended.stopped {
                Some(StopReason::Cancelled) => status = Status::Cancelled,
                Some(StopReason::TimedOut) => status = Status::TimedOut,
                None => {}
            }
        }
        let error = self.error_text(status, ended, limits);
        // A check that could not start (0.18+: locked, no repository, wrong
        // password) still prints a summary, counting that as its one error:
        // it says nothing about the repository's health.
        let stats = match (self.command, kind) {
            (
                Command::Check { .. },
                Some(FailureKind::Locked | FailureKind::NoRepository | FailureKind::WrongPassword),
            ) if status == Status::Failed => json!({}),
            _ => self.stats_json(),
        };
        let output = match self.command {
            Command::Ls { .. } | Command::ListLocks => Some(self.lines.join("\n")),
            _ => self.document_text,
        };
        Finished {
            status,
            kind,
            exit_code: ended.exit_code,
            error,
            stats,
            snapshot_id: self.snapshot_id,
            output,
        }
    }

    /// Makes older versions report what newer ones do, so callers see one
    /// behaviour: 0.14 `ls` of an unknown id exits 0 (1 since 0.15), and a
    /// backup with a missing source path exits 0 before 0.19 (then 3).
    fn adjust_for_version(&self, status: &mut Status, kind: &mut Option<FailureKind>) {
        if *status != Status::Succeeded {
            return;
        }
        let stderr_text = || {
            self.stderr
                .tail
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        };
        match self.command {
            Command::Ls { .. } | Command::LsTree { .. }
                if !self.ls_saw_snapshot && stderr_text().contains("no matching ID found") =>
            {
                *status = Status::Failed;
                *kind = Some(FailureKind::SnapshotNotFound);
            }
            Command::Backup { .. }
                if self
                    .stderr
                    .warnings
                    .iter()
                    .any(|w| w.ends_with("does not exist, skipping")) =>
            {
                *status = Status::Partial;
            }
            _ => {}
        }
    }

    fn error_text(&self, status: Status, ended: Ended, limits: &Limits) -> Option<String> {
        let log = &self.stderr;
        let joined =
            |lines: &[String]| bounded_join(lines.iter().map(String::as_str), MAX_ERROR_BYTES);
        match status {
            Status::Succeeded => None,
            Status::Cancelled => Some("cancelled".to_owned()),
            Status::TimedOut => Some(format!(
                "timed out after {}",
                human_duration(limits.timeout)
            )),
            // The skipped paths first (0.19 adds only a generic exit_error
            // to them), each text once.
            Status::Partial => {
                let mut lines: Vec<String> = log.warnings.clone();
                if let Some(exit) = &log.exit_error {
                    if !lines.contains(exit) {
                        lines.push(exit.clone());
                    }
                }
                Some(if lines.is_empty() {
                    "some source data could not be read".to_owned()
                } else {
                    joined(&lines)
                })
            }
            Status::Failed => Some(
                log.exit_error
                    .clone()
                    .or_else(|| (!log.fatal.is_empty()).then(|| joined(&log.fatal)))
                    .or_else(|| {
                        let tail: Vec<String> = log.tail.iter().cloned().collect();
                        (!tail.is_empty()).then(|| joined(&tail))
                    })
                    .unwrap_or_else(|| match (ended.exit_code, ended.signal) {
                        (Some(code), _) => format!("restic exited with code {code}"),
                        (None, Some(signal)) => format!("restic was killed by signal {signal}"),
                        (None, None) => "restic failed".to_owned(),
                    }),
            ),
        }
    }

    fn stats_json(&self) -> Value {
        match self.command {
            Command::Copy { .. } => json!({ "snapshots_copied": self.copied }),
            Command::Check { .. } => {
                let mut object = match &self.stats {
                    Some(Value::Object(summary)) => summary.clone(),
                    _ => Map::new(),
                };
                object.remove("message_type");
                match self.check_errors {
                    Some(errors) => {
                        object.insert("errors".to_owned(), Value::Bool(errors));
                    }
                    None if object.is_empty() => return json!({}),
                    None => {}
                }
                Value::Object(object)
            }
            _ => match &self.stats {
                Some(Value::Object(object)) => {
                    let mut object = object.clone();
                    object.remove("message_type");
                    Value::Object(object)
                }
                _ => json!({}),
            },
        }
    }
}

/// Whether a `copy` stdout line says a snapshot was saved in the
/// destination: `snapshot 11c48ef2 saved` (0.14–0.18), `snapshot f062206e
/// saved, copied from source snapshot 6386133d` (0.19). restic prints it
/// only for snapshots it copied, not for those it skips as already there.
fn copy_saved(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("snapshot ") else {
        return false;
    };
    let Some((id, tail)) = rest.split_once(' ') else {
        return false;
    };
    id.len() >= 8
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && (tail == "saved" || tail.starts_with("saved,"))
}

/// Runs recorded output of `command` through the same line splitting,
/// caps and parsers as a live [`crate::Restic::run`], as if restic had
/// printed `stdout` and then `stderr` and exited with `exit_code`.
///
/// For replaying fixtures, fuzzing the parsers, and explaining a run from
/// its saved output; nothing is started.
pub fn replay(
    command: &Command,
    version: ResticVersion,
    stdout: &[u8],
    stderr: &[u8],
    exit_code: Option<i32>,
) -> (Vec<Event>, Finished) {
    let mut collector = Collector::new(command, version);
    let mut events = Vec::new();
    let streams = [
        (
            Stream::Stdout,
            split_lines(stdout, crate::restic::stdout_line_cap(command)),
        ),
        (Stream::Stderr, split_lines(stderr, STDERR_LINE_CAP)),
    ];
    for (stream, lines) in streams {
        for line in lines {
            events.extend(collector.on_line(stream, line));
        }
    }
    let ended = Ended {
        exit_code,
        signal: None,
        stopped: None,
    };
    let finished = collector.finish(ended, &Limits::new(std::time::Duration::ZERO));
    (events, finished)
}

/// Events produced for one input line.
struct Output {
    events: Vec<Event>,
    stream: Stream,
    dropped: u64,
}

impl Output {
    /// Adds a log line on the input's stream, capped for the log.
    fn line(&mut self, text: String) {
        self.events.push(Event::Line {
            stream: self.stream,
            text: truncate_for_log(text, self.dropped),
        });
    }
}

#[cfg(test)]
mod tests;
