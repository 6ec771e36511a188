//! Rows of hosts' sealed repository settings.

use rm_core::{BatchId, HostId, JobStatus};
use rm_store::{RepositoryJob, SealFormat, SealedRepository, StoreError};

use crate::{decode, Flag};

/// Columns selected for a [`RepositoryRow`].
pub const REPOSITORY_COLUMNS: &str = "nonce, ciphertext, seal_format, updated_at";

/// [`REPOSITORY_COLUMNS`] qualified by their table (for joins).
pub const REPOSITORY_COLUMNS_QUALIFIED: &str = "host_repositories.nonce AS nonce, \
     host_repositories.ciphertext AS ciphertext, host_repositories.seal_format AS seal_format, \
     host_repositories.updated_at AS updated_at";

/// A `host_repositories` row.
#[derive(Debug, sqlx::FromRow)]
pub struct RepositoryRow {
    /// Column `nonce`.
    pub nonce: Vec<u8>,
    /// Column `ciphertext`.
    pub ciphertext: Vec<u8>,
    /// Column `seal_format`.
    pub seal_format: i64,
    /// Column `updated_at`.
    pub updated_at: i64,
}

impl TryFrom<RepositoryRow> for SealedRepository {
    type Error = StoreError;

    fn try_from(r: RepositoryRow) -> Result<SealedRepository, StoreError> {
        Ok(SealedRepository {
            nonce: r.nonce,
            ciphertext: r.ciphertext,
            format: SealFormat::from_i64(r.seal_format).ok_or_else(|| {
                decode::corrupt("seal_format", format!("unknown format {}", r.seal_format))
            })?,
            updated_at: decode::time("updated_at", r.updated_at)?,
        })
    }
}

/// The repository columns of a `LEFT JOIN` of `host_repositories`: all
/// NULL when the host has no settings stored.
#[derive(Debug, sqlx::FromRow)]
pub struct JoinedRepositoryRow {
    /// Column `nonce`.
    pub nonce: Option<Vec<u8>>,
    /// Column `ciphertext`.
    pub ciphertext: Option<Vec<u8>>,
    /// Column `seal_format`.
    pub seal_format: Option<i64>,
    /// Column `updated_at`.
    pub updated_at: Option<i64>,
}

impl JoinedRepositoryRow {
    /// The settings joined, or `None` when the host has none.
    pub fn into_repository(self) -> Result<Option<SealedRepository>, StoreError> {
        let (Some(nonce), Some(ciphertext), Some(seal_format), Some(updated_at)) = (
            self.nonce,
            self.ciphertext,
            self.seal_format,
            self.updated_at,
        ) else {
            return Ok(None);
        };
        SealedRepository::try_from(RepositoryRow {
            nonce,
            ciphertext,
            seal_format,
            updated_at,
        })
        .map(Some)
    }
}

/// A host's repository settings with the host's id and the refusal
/// recorded for them: [`REPOSITORY_COLUMNS`] plus `host_id, refused`.
#[derive(Debug, sqlx::FromRow)]
pub struct HostRepositoryRow {
    /// Column `host_id`.
    pub host_id: String,
    /// Column `refused`.
    pub refused: Option<String>,
    /// The settings' columns.
    #[sqlx(flatten)]
    pub repository: RepositoryRow,
}

impl HostRepositoryRow {
    /// The host, its settings and their refusal.
    pub fn into_parts(self) -> Result<(HostId, SealedRepository, Option<String>), StoreError> {
        Ok((
            decode::id("host_id", self.host_id)?,
            SealedRepository::try_from(self.repository)?,
            self.refused,
        ))
    }
}

/// A row of `RepositoryStore::repository_jobs`: an unfinished job of a
/// host in the repository, with its host's liveness and its batch.
#[derive(Debug, sqlx::FromRow)]
pub struct RepositoryJobRow {
    /// The job's `id`.
    pub id: String,
    /// The job's `host_id`.
    pub host_id: String,
    /// The host's `online`.
    pub online: Flag,
    /// The job's `kind`.
    pub kind: String,
    /// The job's `params` (JSON).
    pub params: String,
    /// The job's `status`.
    pub status: String,
    /// The job's `created_at`.
    pub created_at: i64,
    /// `job_batches.batch_id`, when the job is in a batch.
    pub batch_id: Option<String>,
    /// `job_batches.max_parallel`, when the job is in a batch.
    pub max_parallel: Option<i64>,
}

impl TryFrom<RepositoryJobRow> for RepositoryJob {
    type Error = StoreError;

    fn try_from(r: RepositoryJobRow) -> Result<RepositoryJob, StoreError> {
        let batch = match decode::id_opt::<BatchId>("batch_id", r.batch_id)? {
            Some(batch) => Some((
                batch,
                decode::int(
                    "max_parallel",
                    r.max_parallel
                        .ok_or_else(|| decode::corrupt("max_parallel", "NULL in a batch"))?,
                )?,
            )),
            None => None,
        };
        Ok(RepositoryJob {
            job_id: decode::id("id", r.id)?,
            host_id: decode::id("host_id", r.host_id)?,
            host_online: r.online.into(),
            kind: r.kind,
            params: decode::json("params", &r.params)?,
            status: decode::parsed::<JobStatus>("status", r.status)?,
            created_at: decode::time("created_at", r.created_at)?,
            batch,
        })
    }
}
