//! The store's part for the audit log.

use async_trait::async_trait;

use crate::{AuditEntry, AuditFilter, NewAuditEntry, StoreResult};

/// The audit log. Part of [`crate::Store`], whose rules (one transaction
/// per method, audit entries written with the change) hold for every method
/// here.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an audit entry on its own; returns its id (larger than every
    /// earlier entry's). For events that change nothing (a refused login,
    /// asking an agent to cancel); a change passes its entry to the method
    /// that makes it instead.
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<u64>;

    /// Audit entries matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;
}
