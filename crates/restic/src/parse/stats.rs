//! `restic stats --json`: one object.
//!
//! 0.14 gives `total_size`, `total_file_count`, `snapshots_count` and, in
//! raw-data mode, `total_blob_count`. 0.15 adds the compression fields in
//! raw-data mode; 0.19 may leave zero counts out.

use serde::{Deserialize, Serialize};

use super::lenient;
use crate::error::ResticError;
use crate::text::human_bytes;

/// Repository statistics from `restic stats`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Stats {
    /// Bytes: the restore size (restore-size mode) or the stored,
    /// deduplicated and compressed size (raw-data mode).
    #[serde(deserialize_with = "lenient::count")]
    pub total_size: u64,
    /// Files counted (restore-size mode; 0 in raw-data mode).
    #[serde(deserialize_with = "lenient::count")]
    pub total_file_count: u64,
    /// Blobs counted (raw-data mode).
    #[serde(deserialize_with = "lenient::count")]
    pub total_blob_count: u64,
    /// Snapshots the statistics cover.
    #[serde(deserialize_with = "lenient::count")]
    pub snapshots_count: u64,
    /// Size before compression (raw-data mode, 0.15+).
    #[serde(
        deserialize_with = "lenient::opt_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_uncompressed_size: Option<u64>,
    /// Uncompressed / compressed (raw-data mode, 0.15+).
    #[serde(
        deserialize_with = "lenient::opt_float",
        skip_serializing_if = "Option::is_none"
    )]
    pub compression_ratio: Option<f64>,
    /// Percentage of data stored compressed (raw-data mode, 0.15+).
    #[serde(
        deserialize_with = "lenient::opt_float",
        skip_serializing_if = "Option::is_none"
    )]
    pub compression_progress: Option<f64>,
    /// Percentage of space saved by compression (raw-data mode, 0.15+).
    #[serde(
        deserialize_with = "lenient::opt_float",
        skip_serializing_if = "Option::is_none"
    )]
    pub compression_space_saving: Option<f64>,
}

/// Parses the document of `restic stats --json`.
pub fn parse_stats(document: &str) -> Result<Stats, ResticError> {
    serde_json::from_str(document.trim()).map_err(|_| ResticError::Unparseable {
        output: crate::text::bounded_join([document.trim()], 500),
    })
}

impl Stats {
    /// One log line: `4.0 GiB in 31 files, 4 snapshots`.
    pub(crate) fn render(&self) -> String {
        let mut text = human_bytes(self.total_size);
        if self.total_file_count > 0 {
            text.push_str(&format!(" in {} files", self.total_file_count));
        }
        if self.total_blob_count > 0 {
            text.push_str(&format!(" in {} blobs", self.total_blob_count));
        }
        text.push_str(&format!(", {} snapshots", self.snapshots_count));
        if let Some(ratio) = self.compression_ratio {
            text.push_str(&format!(", compression ratio {ratio:.2}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_modes_and_newer_fields() {
        let stats =
            parse_stats(r#"{"total_size":12000077,"total_file_count":39,"snapshots_count":4}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                stats.total_size,
                stats.total_file_count,
                stats.snapshots_count
            ),
            (12_000_077, 39, 4)
        );
        assert_eq!(stats.render(), "11.4 MiB in 39 files, 4 snapshots");
        let stats = parse_stats(
            r#"{"total_size":100203257,"total_uncompressed_size":255114219,"compression_ratio":2.5459673331776034,"compression_progress":100,"compression_space_saving":60.72,"total_blob_count":1284,"snapshots_count":1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats.total_file_count, 0);
        assert_eq!(stats.total_uncompressed_size, Some(255_114_219));
        assert_eq!(stats.compression_progress, Some(100.0));
        assert!(parse_stats("[0:00] 1 / 1 snapshots").is_err());
    }
}
