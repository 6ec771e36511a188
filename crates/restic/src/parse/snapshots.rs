//! `restic snapshots --json`: one JSON array of snapshots.
//!
//! `parent`, `tags`, `excludes` and `original` are left out when empty;
//! 0.16 adds `program_version`; 0.17 adds a `summary` object on snapshots
//! made by 0.17+ and deprecates `short_id`, which may therefore vanish (we
//! derive it from `id`). `ls` prints the same object as its first line.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lenient;
use crate::error::ResticError;

/// One snapshot as restic lists it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Snapshot {
    /// Full snapshot id (64 hex characters).
    #[serde(deserialize_with = "lenient::null_default")]
    pub id: String,
    /// First 8 characters of the id.
    #[serde(deserialize_with = "lenient::null_default")]
    pub short_id: String,
    /// When the backup started (restic writes the host's local offset;
    /// this is the same instant in UTC).
    #[serde(deserialize_with = "lenient::time")]
    pub time: DateTime<Utc>,
    /// The snapshot this one was based on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The root tree id.
    #[serde(deserialize_with = "lenient::null_default")]
    pub tree: String,
    /// The backed-up paths (absolute).
    #[serde(deserialize_with = "lenient::null_default")]
    pub paths: Vec<String>,
    /// The host the backup ran on (or `--host`).
    #[serde(deserialize_with = "lenient::null_default")]
    pub hostname: String,
    /// The user who ran the backup.
    #[serde(deserialize_with = "lenient::null_default")]
    pub username: String,
    /// Tags.
    #[serde(deserialize_with = "lenient::null_default")]
    pub tags: Vec<String>,
    /// Exclude patterns used.
    #[serde(deserialize_with = "lenient::null_default")]
    pub excludes: Vec<String>,
    /// The id before `tag`/`rewrite` changed the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// restic version that made it (0.16+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_version: Option<String>,
    /// Backup statistics (snapshots made by 0.17+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<SnapshotSummary>,
}

/// The `summary` object restic 0.17+ stores in each new snapshot.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct SnapshotSummary {
    /// When the backup started.
    #[serde(
        deserialize_with = "lenient::opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_start: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(
        deserialize_with = "lenient::opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_end: Option<DateTime<Utc>>,
    /// New files.
    #[serde(deserialize_with = "lenient::count")]
    pub files_new: u64,
    /// Changed files.
    #[serde(deserialize_with = "lenient::count")]
    pub files_changed: u64,
    /// Unchanged files.
    #[serde(deserialize_with = "lenient::count")]
    pub files_unmodified: u64,
    /// New directories.
    #[serde(deserialize_with = "lenient::count")]
    pub dirs_new: u64,
    /// Changed directories.
    #[serde(deserialize_with = "lenient::count")]
    pub dirs_changed: u64,
    /// Unchanged directories.
    #[serde(deserialize_with = "lenient::count")]
    pub dirs_unmodified: u64,
    /// Bytes added to the repository (before packing).
    #[serde(deserialize_with = "lenient::count")]
    pub data_added: u64,
    /// Bytes added to the repository (as stored).
    #[serde(deserialize_with = "lenient::count")]
    pub data_added_packed: u64,
    /// Files the backup looked at.
    #[serde(deserialize_with = "lenient::count")]
    pub total_files_processed: u64,
    /// Bytes the backup looked at.
    #[serde(deserialize_with = "lenient::count")]
    pub total_bytes_processed: u64,
}

impl Snapshot {
    /// Bytes the backup read, for snapshots made by restic 0.17+ (older
    /// snapshots carry no summary).
    pub fn size_bytes(&self) -> Option<u64> {
        self.summary.as_ref().map(|s| s.total_bytes_processed)
    }

    /// Files the backup read, for snapshots made by restic 0.17+.
    pub fn file_count(&self) -> Option<u64> {
        self.summary.as_ref().map(|s| s.total_files_processed)
    }

    /// Fills fields newer versions leave out.
    pub(crate) fn normalise(mut self) -> Self {
        if self.short_id.is_empty() {
            self.short_id = self.id.chars().take(8).collect();
        }
        self
    }
}

/// Parses the document of `restic snapshots --json`.
pub fn parse_snapshots(document: &str) -> Result<Vec<Snapshot>, ResticError> {
    let snapshots: Vec<Snapshot> =
        serde_json::from_str(document.trim()).map_err(|_| ResticError::Unparseable {
            output: crate::text::bounded_join([document.trim()], 500),
        })?;
    Ok(snapshots.into_iter().map(Snapshot::normalise).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_and_a_0_17_snapshot() {
        let doc = r#"[{"time":"2026-11-27T01:36:55.2072008+01:00","tree":"9f","paths":["/data/src"],"hostname":"vm","username":"rt","tags":null,"id":"978d83d4897ef122aa","short_id":"978d83d4"},
{"time":"2026-11-28T00:00:00Z","paths":["/x"],"hostname":"h","id":"0123456789abcdef","program_version":"restic 0.17.0","summary":{"backup_start":"2026-11-28T00:00:00Z","files_new":3,"data_added_packed":12}}]"#;
        let list = parse_snapshots(doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.len(), 2);
        assert!(list[0].tags.is_empty());
        assert_eq!(
            list[0].time.to_rfc3339(),
            "2026-11-27T00:36:55.207200800+00:00"
        );
        assert_eq!(list[0].size_bytes(), None);
        assert_eq!(list[1].short_id, "01234567");
        assert_eq!(list[1].summary.as_ref().map(|s| s.files_new), Some(3));
        assert_eq!(
            list[1].summary.as_ref().and_then(|s| s.backup_start),
            "2026-11-28T00:00:00Z".parse().ok()
        );
        assert!(parse_snapshots(r#"[{"time":"yesterday"}]"#).is_err());
        assert!(parse_snapshots("[]")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty());
        assert!(parse_snapshots("nope").is_err());
    }
}
