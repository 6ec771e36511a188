//! The row of the sealing key record.

use rm_store::{SealingKeyRecord, StoreError};

use crate::decode;

/// The `sealing_key` row (`fingerprint, recorded_at`).
#[derive(Debug, sqlx::FromRow)]
pub struct SealingKeyRow {
    /// Column `fingerprint`.
    pub fingerprint: String,
    /// Column `recorded_at`.
    pub recorded_at: i64,
}

impl TryFrom<SealingKeyRow> for SealingKeyRecord {
    type Error = StoreError;

    fn try_from(r: SealingKeyRow) -> Result<SealingKeyRecord, StoreError> {
        Ok(SealingKeyRecord {
            fingerprint: r.fingerprint,
            recorded_at: decode::time("recorded_at", r.recorded_at)?,
        })
    }
}
