//! The row of a registered server.

use rm_store::{ServerRecord, StoreError};

use crate::decode;

/// Columns selected for a [`ServerRow`].
pub const SERVER_COLUMNS: &str = "id, internal_url, started_at, alive_until";

/// The `servers` row ([`SERVER_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub struct ServerRow {
    /// Column `id`.
    pub id: String,
    /// Column `internal_url`.
    pub internal_url: String,
    /// Column `started_at`.
    pub started_at: i64,
    /// Column `alive_until`.
    pub alive_until: i64,
}

impl TryFrom<ServerRow> for ServerRecord {
    type Error = StoreError;

    fn try_from(r: ServerRow) -> Result<ServerRecord, StoreError> {
        Ok(ServerRecord {
            id: r.id,
            internal_url: r.internal_url,
            started_at: decode::time("started_at", r.started_at)?,
            alive_until: decode::time("alive_until", r.alive_until)?,
        })
    }
}
