//! `restic backup --json`: JSON lines of `status`, `verbose_status`,
//! `summary` (stdout) and `error` (stderr).
//!
//! Version notes: 0.14/0.15 send `scan_finished` as a `status` message with
//! an `action` field (0.16+ as `verbose_status`); 0.14 `snapshot_id` is the
//! 8-character short id (full since 0.15); 0.17 omits it when
//! `--skip-if-unchanged` saved nothing; 0.18 adds `backup_start/end`.

use serde::Deserialize;

use super::lenient;
use crate::event::Progress;
use crate::text::{human_bytes, human_seconds};

/// ETAs beyond this are restic's "unknown" (0.14 prints 2^63).
const MAX_SANE_ETA_SECONDS: u64 = 366 * 24 * 3600;

/// A `status` message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Status {
    #[serde(deserialize_with = "lenient::float")]
    percent_done: f64,
    #[serde(deserialize_with = "lenient::count")]
    total_files: u64,
    #[serde(deserialize_with = "lenient::count")]
    files_done: u64,
    #[serde(deserialize_with = "lenient::count")]
    total_bytes: u64,
    #[serde(deserialize_with = "lenient::count")]
    bytes_done: u64,
    #[serde(deserialize_with = "lenient::opt_count")]
    seconds_remaining: Option<u64>,
    #[serde(deserialize_with = "lenient::null_default")]
    current_files: Vec<String>,
    /// Set on the 0.14/0.15 `scan_finished` message, which is not progress.
    #[serde(deserialize_with = "lenient::null_default")]
    action: String,
}

impl Status {
    /// The progress this message reports; `None` for the `scan_finished`
    /// message that 0.14/0.15 send with `message_type: status`.
    pub(crate) fn progress(&self) -> Option<Progress> {
        if !self.action.is_empty() {
            return None;
        }
        Some(Progress {
            percent: percent(self.percent_done),
            files_done: self.files_done,
            files_total: self.total_files,
            bytes_done: self.bytes_done,
            bytes_total: self.total_bytes,
            eta_seconds: sane_eta(self.seconds_remaining),
            current_files: self.current_files.clone(),
        })
    }
}

/// restic's 0..1 fraction as 0..100, clamped.
pub(crate) fn percent(fraction: f64) -> f64 {
    if fraction.is_finite() {
        (fraction * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Drops restic's "unknown" ETA values.
pub(crate) fn sane_eta(seconds: Option<u64>) -> Option<u64> {
    seconds.filter(|s| *s <= MAX_SANE_ETA_SECONDS)
}

/// The final `summary` message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Summary {
    #[serde(deserialize_with = "lenient::count")]
    files_new: u64,
    #[serde(deserialize_with = "lenient::count")]
    files_changed: u64,
    #[serde(deserialize_with = "lenient::count")]
    files_unmodified: u64,
    #[serde(deserialize_with = "lenient::count")]
    data_added: u64,
    #[serde(deserialize_with = "lenient::count")]
    total_files_processed: u64,
    #[serde(deserialize_with = "lenient::count")]
    total_bytes_processed: u64,
    #[serde(deserialize_with = "lenient::float")]
    total_duration: f64,
    #[serde(deserialize_with = "lenient::null_default")]
    snapshot_id: String,
    dry_run: bool,
}

impl Summary {
    /// The saved snapshot's id as restic gives it; `None` when no snapshot
    /// was saved (0.17 `--skip-if-unchanged`) or on a dry run.
    pub(crate) fn snapshot_id(&self) -> Option<String> {
        (!self.snapshot_id.is_empty() && !self.dry_run).then(|| self.snapshot_id.clone())
    }

    /// One log line: `snapshot 1a2b3c4d saved: 12 new files, 3 changed,
    /// 40 unmodified, 1.2 MiB added (55 files, 3.0 GiB processed in 4.2s)`.
    pub(crate) fn render(&self) -> String {
        let head = match self.snapshot_id() {
            Some(id) => format!("snapshot {} saved", short(&id)),
            None if self.dry_run => "dry run, nothing saved".to_owned(),
            None => "no snapshot saved".to_owned(),
        };
        let took = human_seconds(self.total_duration);
        format!(
            "{head}: {} new files, {} changed, {} unmodified, {} added ({} files, {} processed in {took})",
            self.files_new,
            self.files_changed,
            self.files_unmodified,
            human_bytes(self.data_added),
            self.total_files_processed,
            human_bytes(self.total_bytes_processed),
        )
    }
}

/// The first 8 characters of an id (restic's short form).
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        super::super::typed(&value).unwrap_or_else(|| panic!("typed {json}"))
    }

    #[test]
    fn status_becomes_progress_and_absurd_etas_vanish() {
        let status: Status = parse(
            r#"{"message_type":"status","seconds_elapsed":1,"seconds_remaining":9223372036854775808,"percent_done":0.5,"total_files":4,"files_done":2,"total_bytes":100,"bytes_done":50,"current_files":["/a","/b"]}"#,
        );
        let progress = status.progress().unwrap_or_default();
        assert_eq!(progress.percent, 50.0);
        assert_eq!((progress.files_done, progress.files_total), (2, 4));
        assert_eq!((progress.bytes_done, progress.bytes_total), (50, 100));
        assert_eq!(progress.eta_seconds, None);
        assert_eq!(progress.current_files, ["/a", "/b"]);

        let status: Status =
            parse(r#"{"message_type":"status","percent_done":1.2,"seconds_remaining":3}"#);
        let progress = status.progress().unwrap_or_default();
        assert_eq!((progress.percent, progress.eta_seconds), (100.0, Some(3)));
    }

    #[test]
    fn scan_finished_under_status_is_not_progress() {
        let status: Status = parse(
            r#"{"message_type":"status","action":"scan_finished","item":"","duration":0.2,"data_size":3000030,"total_files":6}"#,
        );
        assert!(status.progress().is_none());
    }

    #[test]
    fn summary_renders_one_line() {
        let summary: Summary = parse(
            r#"{"message_type":"summary","files_new":12,"files_changed":3,"files_unmodified":40,"data_added":1258291,"total_files_processed":55,"total_bytes_processed":3221225472,"total_duration":4.23,"snapshot_id":"1a2b3c4d5e6f"}"#,
        );
        assert_eq!(
            summary.render(),
            "snapshot 1a2b3c4d saved: 12 new files, 3 changed, 40 unmodified, 1.2 MiB added (55 files, 3.0 GiB processed in 4.2s)"
        );
        assert_eq!(summary.snapshot_id().as_deref(), Some("1a2b3c4d5e6f"));
        let skipped: Summary = parse(r#"{"message_type":"summary","files_unmodified":5}"#);
        assert_eq!(skipped.snapshot_id(), None);
        assert!(skipped.render().starts_with("no snapshot saved: "));
        let dry: Summary = parse(r#"{"dry_run":true,"snapshot_id":"1a2b3c4d"}"#);
        assert_eq!(dry.snapshot_id(), None);
    }
}
