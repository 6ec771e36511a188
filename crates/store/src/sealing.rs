//! The store's part for the key that seals the store's secrets and re-
//! sealing.

use async_trait::async_trait;
use rm_core::HostId;

use crate::{NewAuditEntry, SealedRepository, SealingKeyRecord, StoreResult};

/// The key that seals the store's secrets and re-sealing. Part of
/// [`crate::Store`], whose rules (one transaction per method, audit entries
/// written with the change) hold for every method here.
#[async_trait]
pub trait SealingStore: Send + Sync {
    /// The fingerprint of the key that sealed the store's secrets, once one
    /// was recorded.
    async fn sealing_key_record(&self) -> StoreResult<Option<SealingKeyRecord>>;

    /// Every sealed value the store holds, by owner: the repository
    /// settings of every host, deleted hosts included (their values are
    /// still sealed data), in host id order.
    async fn sealed_repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository)>>;

    /// Records `record` as the key that seals the store's secrets and
    /// replaces the given [`crate::SealFormat::Unbound`] values with their
    /// re-sealed form, in one transaction: a store is never half re-sealed.
    /// [`crate::StoreError::Conflict`] (and nothing changed) when one of them is
    /// no longer stored unbound.
    async fn record_sealing_key(
        &self,
        record: &SealingKeyRecord,
        resealed: &[(HostId, SealedRepository)],
    ) -> StoreResult<()>;

    /// Discards every sealed value (the repository settings of every host,
    /// and the repository templates of policies)
    /// and records `record` as the sealing key, in one transaction. Returns
    /// the hosts whose settings were discarded, deleted ones included.
    async fn reset_sealed_secrets(
        &self,
        record: &SealingKeyRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<HostId>>;
}
