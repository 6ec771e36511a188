//! The storage contract of the restic-manager server.
//!
//! [`Store`] is what the server needs from a database, expressed in domain
//! types; `rm-store-sqlite` (and later PostgreSQL) implement it. It is the
//! sum of one trait per aggregate (users, hosts, repositories, sealing,
//! policies, jobs, snapshots, schedules, audit, agent tokens, alerts,
//! notifications, cluster, verification), one file each, so an
//! implementation can be laid out the same way; `use rm_store::prelude::*;` brings every one of them into scope
//! (calling a part's method on a `dyn Store` needs that part in scope). Nothing here
//! knows SQL or HTTP, so the server can be tested against any implementation
//! and the implementations against one shared scenario.

mod agent_tokens;
mod alerts;
mod audit;
mod cluster;
mod error;
mod hosts;
mod jobs;
mod models;
mod notifications;
mod policies;
mod repositories;
mod schedules;
mod sealing;
mod snapshots;
mod users;
mod verification;

pub mod copy;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use agent_tokens::AgentTokenStore;
pub use alerts::{AlertFilter, AlertRecord, AlertStore, NewAlert, SilenceRecord};
pub use audit::AuditStore;
pub use cluster::{
    ClusterBus, ClusterListener, ClusterMessage, ClusterStore, ServerRecord, MAX_MESSAGE_BYTES,
};
pub use error::{StorageFault, StoreError, StoreResult};
pub use hosts::HostStore;
pub use jobs::JobStore;
pub use models::*;
pub use notifications::{
    ChannelRecord, ChannelStats, DeliveryOutcome, NewNotification, NotificationStore, OutboxRow,
};
pub use policies::PolicyStore;
pub use repositories::RepositoryStore;
pub use schedules::ScheduleStore;
pub use sealing::SealingStore;
pub use snapshots::SnapshotStore;
pub use users::UserStore;
pub use verification::VerificationStore;

/// Every store trait, for `use rm_store::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AgentTokenStore, AlertStore, AuditStore, ClusterBus, ClusterStore, HostStore, JobStore,
        NotificationStore, PolicyStore, RepositoryStore, ScheduleStore, SealingStore,
        SnapshotStore, Store, UserStore, VerificationStore,
    };
}

/// Largest page [`HostStore::list_hosts_page`] and
/// [`HostStore::list_hosts_attention_first`] return.
pub const MAX_HOST_PAGE: u32 = 1000;

/// Everything the server persists: every aggregate's part, and the storage
/// probe. Implementations must be safe to share
/// between tasks; every method is one transaction.
///
/// Methods that make a change an operator can make take `audit`: the audit
/// log entry recording it, written in the change's own transaction, so the
/// change and its entry commit together or not at all (a failed write
/// leaves neither). The entry is written only when the change happens: not
/// on an `Err`, nor when a method that returns whether it changed anything
/// returns `false`. Callers that are not operators (schedule fires, the
/// server's own jobs, tests) pass `None`.
#[async_trait]
pub trait Store:
    AlertStore
    + NotificationStore
    + UserStore
    + HostStore
    + RepositoryStore
    + SealingStore
    + PolicyStore
    + JobStore
    + SnapshotStore
    + ScheduleStore
    + AuditStore
    + AgentTokenStore
    + ClusterStore
    + ClusterBus
    + VerificationStore
    + Send
    + Sync
    + 'static
{
    /// Writes and commits one small row, to learn whether the database can
    /// be written now (the server's storage probe).
    async fn probe_write(&self, at: DateTime<Utc>) -> StoreResult<()>;
}
