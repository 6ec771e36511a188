//! The store's part for several servers on one database: which servers are
//! alive, who holds which agent's connection, and leases that let exactly
//! one server run a named piece of timed work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::HostId;

use crate::StoreResult;

/// One running server, as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    /// The server's id (a ULID per process).
    pub id: String,
    /// How the other servers reach it (`--internal-url`).
    pub internal_url: String,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Until when it counts as alive unless it renews; past this it is dead
    /// and its agents and leases are for others to take.
    pub alive_until: DateTime<Utc>,
}

/// Servers, agent holders and leases. Part of [`crate::Store`], whose rules
/// (one transaction per method) hold for every method here. Times are
/// passed in by the caller, so every server must have a clock close to
/// the others' (leases last seconds; NTP is enough).
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Whether several servers may share this store at once. `false` for
    /// a store only one process can open (SQLite): its server is alone and
    /// needs neither registration nor leases.
    fn shared(&self) -> bool;

    /// Records `server` as running, replacing a row with its id. Every
    /// other row with the same `internal_url` is an earlier run of the same
    /// server, which cannot be running any more: it is made dead at once
    /// (its `alive_until` set to `server.started_at`), so its agents are
    /// released without waiting for it to expire.
    async fn register_server(&self, server: &ServerRecord) -> StoreResult<()>;

    /// Moves server `id`'s `alive_until` forward (never back). `false` when
    /// it is not registered any more (removed, or replaced by a later run).
    async fn renew_server(&self, id: &str, alive_until: DateTime<Utc>) -> StoreResult<bool>;

    /// Removes server `id`'s row (a graceful stop), and releases its leases.
    async fn unregister_server(&self, id: &str) -> StoreResult<()>;

    /// The servers alive at `now`, in id order.
    async fn live_servers(&self, now: DateTime<Utc>) -> StoreResult<Vec<ServerRecord>>;

    /// Takes or renews lease `name` for `holder` until `until`: it is taken
    /// when nobody holds it, when its holder's lease ran out before `now`,
    /// or when `holder` holds it already. Returns whether `holder` holds it
    /// now. Decided in one conditional statement: of several servers asking
    /// at once, exactly one gets it.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Gives lease `name` up if `holder` holds it, so another server can
    /// take it at once. Returns whether it did.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool>;

    /// Who holds lease `name` at `now`, if anyone.
    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> StoreResult<Option<String>>;

    /// The server holding host `host`'s agent connection, while the host is
    /// online (see [`crate::HelloRecord::server_id`]).
    async fn host_holder(&self, host: HostId) -> StoreResult<Option<String>>;

    /// Marks offline every online host whose agent connection is held by no
    /// server alive at `now` (a dead server, an earlier run, or none
    /// recorded); `last_seen_at` stays as that server last wrote it. Returns
    /// those hosts in id order; a host is returned by one call only, however many
    /// servers sweep at once.
    async fn mark_orphaned_hosts_offline(&self, now: DateTime<Utc>) -> StoreResult<Vec<HostId>>;
}

/// Longest message [`ClusterStore::publish`] carries, in bytes: under
/// PostgreSQL's 8,000-byte limit for a notification's payload. Messages
/// name things (ids, sequence numbers); bodies stay in tables.
pub const MAX_MESSAGE_BYTES: usize = 7_900;

/// What a [`ClusterListener`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterMessage {
    /// One published message, as it was published.
    Message(String),
    /// The listener lost its connection to the database and made a new
    /// one: messages published in between are lost, and whoever listens
    /// must catch up from what is stored.
    Resumed,
}

/// Messages published on the store after [`ClusterStore::listen`]
/// returned, in the order they were published.
#[async_trait]
pub trait ClusterListener: Send {
    /// The next message; waits for one.
    async fn next(&mut self) -> StoreResult<ClusterMessage>;
}

/// Messages between the servers on one database, and the answers to calls
/// one server makes through another (see [`ClusterStore::put_reply`]).
#[async_trait]
pub trait ClusterBus: Send + Sync {
    /// Sends `messages` to every listener on the store, the sender's own
    /// included, in order, once committed. Identical messages in one call
    /// may arrive once. A message longer than [`MAX_MESSAGE_BYTES`] is
    /// refused ([`crate::StoreError::Conflict`]) and nothing is sent.
    async fn publish(&self, messages: &[String]) -> StoreResult<()>;

    /// Starts listening: every message published after this returns is
    /// received by the listener, unless it reports
    /// [`ClusterMessage::Resumed`].
    async fn listen(&self) -> StoreResult<Box<dyn ClusterListener>>;

    /// Keeps the answer `body` to call `id` until the caller takes it
    /// (a call's answer may be far longer than a message). Storing an
    /// answer twice keeps the first.
    async fn put_reply(&self, id: &str, body: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Takes the answer to call `id`: returned once, then gone.
    async fn take_reply(&self, id: &str) -> StoreResult<Option<String>>;

    /// Drops answers nobody took that were stored before `before` (their
    /// caller gave up); returns how many.
    async fn prune_replies(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
