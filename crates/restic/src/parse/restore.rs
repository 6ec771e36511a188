//! `restic restore --json` on 0.16+: `status` lines and a final `summary`.
//!
//! 0.14 and 0.15 ignore `--json` here and print one text line
//! (`restoring <Snapshot …> to …`), which the runner logs as is. 0.17 adds
//! skipped counters, 0.18 `files_deleted`; skipped files count as done.

use serde::Deserialize;

use super::backup::{percent, sane_eta};
use super::lenient;
use crate::event::Progress;
use crate::text::{human_bytes, human_seconds};

/// A restore `status` or `summary` message (same counters).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Counters {
    #[serde(deserialize_with = "lenient::float")]
    percent_done: f64,
    #[serde(deserialize_with = "lenient::count")]
    seconds_elapsed: u64,
    #[serde(deserialize_with = "lenient::opt_count")]
    seconds_remaining: Option<u64>,
    #[serde(deserialize_with = "lenient::count")]
    total_files: u64,
    #[serde(deserialize_with = "lenient::count")]
    files_restored: u64,
    #[serde(deserialize_with = "lenient::count")]
    files_skipped: u64,
    #[serde(deserialize_with = "lenient::count")]
    total_bytes: u64,
    #[serde(deserialize_with = "lenient::count")]
    bytes_restored: u64,
    #[serde(deserialize_with = "lenient::count")]
    bytes_skipped: u64,
}

impl Counters {
    /// Progress of a `status` message.
    pub(crate) fn progress(&self) -> Progress {
        Progress {
            percent: percent(self.percent_done),
            files_done: self.files_restored.saturating_add(self.files_skipped),
            files_total: self.total_files,
            bytes_done: self.bytes_restored.saturating_add(self.bytes_skipped),
            bytes_total: self.total_bytes,
            eta_seconds: sane_eta(self.seconds_remaining),
            current_files: Vec::new(),
        }
    }

    /// One log line for the `summary`.
    pub(crate) fn render(&self) -> String {
        let mut text = format!(
            "restored {} of {} files ({} of {}) in {}",
            self.files_restored,
            self.total_files,
            human_bytes(self.bytes_restored),
            human_bytes(self.total_bytes),
            human_seconds(self.seconds_elapsed as f64),
        );
        if self.files_skipped > 0 {
            text.push_str(&format!(
                ", {} files ({}) already up to date",
                self.files_skipped,
                human_bytes(self.bytes_skipped)
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_summary_of_0_16() {
        let value = serde_json::json!({"message_type":"status","seconds_elapsed":1,"percent_done":0.25,"total_files":8,"files_restored":2,"total_bytes":4096,"bytes_restored":1024});
        let counters: Counters = super::super::typed(&value).unwrap_or_default();
        let progress = counters.progress();
        assert_eq!(progress.percent, 25.0);
        assert_eq!((progress.files_done, progress.bytes_done), (2, 1024));
        let value = serde_json::json!({"message_type":"summary","seconds_elapsed":3,"total_files":8,"files_restored":6,"files_skipped":2,"total_bytes":4096,"bytes_restored":3072,"bytes_skipped":1024});
        let counters: Counters = super::super::typed(&value).unwrap_or_default();
        assert_eq!(
            counters.render(),
            "restored 6 of 8 files (3.0 KiB of 4.0 KiB) in 3.0s, 2 files (1.0 KiB) already up to date"
        );
    }
}
