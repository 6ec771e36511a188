//! The store's part for rotating verification (DESIGN §10): one record per
//! repository (by identity, so hosts sharing a repository share it) of the
//! `check --read-data-subset=n/N` cycle it is in.
//!
//! The rules of a cycle are [`rm_core::verification`]'s; a store applies a
//! run to the stored record inside one transaction, so two servers taking
//! the ends of two hosts' checks at once cannot lose either.

use async_trait::async_trait;
use rm_core::verification::{VerificationCycle, VerificationRun};

use crate::StoreResult;

/// Repositories' rotating verification records. Part of [`crate::Store`],
/// whose rules (one transaction per method) hold for every method here.
#[async_trait]
pub trait VerificationStore: Send + Sync {
    /// The record of the repository with identity `key` (`None`: no
    /// rotating check of it has ended yet).
    async fn verification(&self, key: &str) -> StoreResult<Option<VerificationCycle>>;

    /// Applies `run` to the record of repository `key` (made when there is
    /// none) with [`VerificationCycle::apply`], in one transaction, and
    /// returns the record as it stands after. Applying the same run twice
    /// changes nothing the second time.
    async fn record_verification(
        &self,
        key: &str,
        run: &VerificationRun,
    ) -> StoreResult<VerificationCycle>;
}
