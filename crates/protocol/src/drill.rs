//! What a restore drill reports (DESIGN §10): the statistics a `drill`
//! job ends with, file by file, and the API views of drills.
//!
//! The agent writes [`DrillStats`] as the job's `stats`; the server stores
//! it as it is and reads it back for the host's drill list, the fleet view
//! and the `drill_failed` alert. One definition here keeps the three
//! readers and the writer agreeing on every field name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::JobView;

/// How a sampled file was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VerifiedBy {
    /// restic's `restore --verify` read the restored file back against the
    /// snapshot's blob hashes.
    #[serde(rename = "restic_verify")]
    ResticVerify,
    /// As [`VerifiedBy::ResticVerify`], and the restored bytes equal the
    /// live file, which had the snapshot's size and modification time.
    #[serde(rename = "restic_verify+live")]
    ResticVerifyAndLive,
}

/// What the drill found for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DrillResult {
    /// Restored, verified, and equal to the live file where compared.
    Ok,
    /// Restored, but its bytes differ from what they should be (the live
    /// file unchanged since the snapshot, or restic's verification).
    Mismatch,
    /// restic could not restore it (a damaged or missing pack) or the
    /// restored copy could not be read.
    Unreadable,
}

/// The evidence for one sampled file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillEvidence {
    /// The file's path inside the snapshot.
    pub path: String,
    /// Its size in the snapshot, bytes.
    pub size: u64,
    /// SHA-256 of the restored copy (hex); absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How it was verified.
    pub verified_by: VerifiedBy,
    /// What was found.
    pub result: DrillResult,
    /// Why it is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A sampled file that failed its verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillMismatch {
    /// The file's path inside the snapshot.
    pub path: String,
    /// `mismatch` or `unreadable`.
    pub result: DrillResult,
    /// What restic or the comparison said.
    pub error: String,
}

/// A drill's statistics: the job's `stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillStats {
    /// The full id of the snapshot drilled.
    pub snapshot_id: String,
    /// Files in the sample.
    pub files_sampled: u64,
    /// Sampled files restored and verified without a fault.
    pub files_verified: u64,
    /// Bytes of the verified files.
    pub bytes_verified: u64,
    /// Every sampled file that failed.
    pub mismatches: Vec<DrillMismatch>,
    /// Regular files the snapshot holds (the population sampled from).
    #[serde(default)]
    pub files_in_snapshot: u64,
    /// Bytes of the whole sample.
    #[serde(default)]
    pub bytes_sampled: u64,
    /// Sampled files also compared with their unchanged live copy.
    #[serde(default)]
    pub files_compared_live: u64,
    /// Seconds restic took to restore and verify the sample.
    #[serde(default)]
    pub restore_seconds: f64,
    /// `bytes_sampled / restore_seconds`: the restore rate to plan with.
    #[serde(default)]
    pub restore_bytes_per_second: f64,
    /// File by file.
    #[serde(default)]
    pub evidence: Vec<DrillEvidence>,
}

/// A drill as `GET /api/v1/hosts/{id}/drills` lists it: the job, and its
/// statistics typed when it reported any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillView {
    /// The drill's job (its `stats` `null` when they are in `drill`).
    pub job: JobView,
    /// Its statistics, once it ended with some.
    pub drill: Option<DrillStats>,
}

/// One host in the fleet's drill view (`GET /api/v1/drills`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetDrillRow {
    /// Host id.
    pub host_id: String,
    /// Host name.
    pub host_name: String,
    /// Whether the last successful drill ended within the window.
    pub drilled: bool,
    /// The job id of the last successful drill.
    pub last_success_job_id: Option<String>,
    /// When it ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its files verified.
    pub files_verified: Option<u64>,
    /// Its measured restore rate, bytes per second.
    pub restore_bytes_per_second: Option<f64>,
}

/// The fleet's drill view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetDrills {
    /// The window, days.
    pub within_days: u32,
    /// Hosts with a successful drill within the window.
    pub drilled: u64,
    /// Hosts without one.
    pub not_drilled: u64,
    /// Every host the caller may see, by name.
    pub hosts: Vec<FleetDrillRow>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evidence_reads_as_the_design_names_it() {
        let evidence = DrillEvidence {
            path: String::from("/srv/a"),
            size: 3,
            sha256: Some(String::from("ab")),
            verified_by: VerifiedBy::ResticVerifyAndLive,
            result: DrillResult::Ok,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(&evidence).unwrap(),
            json!({"path": "/srv/a", "size": 3, "sha256": "ab",
                   "verified_by": "restic_verify+live", "result": "ok"})
        );
        let stats: DrillStats = serde_json::from_value(json!({
            "snapshot_id": "ab", "files_sampled": 1, "files_verified": 0,
            "bytes_verified": 0,
            "mismatches": [{"path": "/a", "result": "unreadable", "error": "x"}],
        }))
        .unwrap();
        assert_eq!(stats.mismatches[0].result, DrillResult::Unreadable);
        assert!(stats.evidence.is_empty());
    }
}
