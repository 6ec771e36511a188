//! The row of a repository's rotating verification record, and how its
//! values are stored.

use std::collections::BTreeSet;

use rm_core::verification::VerificationCycle;
use rm_store::StoreError;

use crate::decode;

/// The columns of [`VerificationRow`], in its order.
pub const VERIFICATION_COLUMNS: &str = "cycle, subsets_done, cycle_started_at, last_error, \
     failed_subset, last_subset, last_run_at";

/// A `repository_verification` row ([`VERIFICATION_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub struct VerificationRow {
    /// Column `cycle`.
    pub cycle: i64,
    /// Column `subsets_done`: a JSON array of subset numbers.
    pub subsets_done: String,
    /// Column `cycle_started_at`.
    pub cycle_started_at: Option<i64>,
    /// Column `last_error`.
    pub last_error: Option<String>,
    /// Column `failed_subset`.
    pub failed_subset: Option<i64>,
    /// Column `last_subset`.
    pub last_subset: Option<i64>,
    /// Column `last_run_at`.
    pub last_run_at: Option<i64>,
}

impl TryFrom<VerificationRow> for VerificationCycle {
    type Error = StoreError;

    fn try_from(r: VerificationRow) -> Result<VerificationCycle, StoreError> {
        Ok(VerificationCycle {
            cycle: decode::int("cycle", r.cycle)?,
            subsets_done: decode::json::<BTreeSet<u32>>("subsets_done", &r.subsets_done)?,
            cycle_started_at: decode::time_opt("cycle_started_at", r.cycle_started_at)?,
            last_error: r.last_error,
            failed_subset: decode::int_opt("failed_subset", r.failed_subset)?,
            last_subset: decode::int_opt("last_subset", r.last_subset)?,
            last_run_at: decode::time_opt("last_run_at", r.last_run_at)?,
        })
    }
}

/// The `subsets_done` column's text: a JSON array, in ascending order.
pub fn subsets_text(record: &VerificationCycle) -> String {
    serde_json::Value::from(record.subsets_done.iter().copied().collect::<Vec<u32>>()).to_string()
}
