//! The PostgreSQL implementation of the restic-manager store: opening a
//! pool on a `postgres://` URL, TLS by `sslmode`, the embedded migrations.
//!
//! [`PostgresStore::open`] takes `postgres://user[:password]@host[:port]/db`
//! (or `postgresql://`) with libpq's parameters `sslmode` (`disable`,
//! `allow`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (a PEM file of CA certificates, trusted
//! besides the system's roots). `require` encrypts without checking the
//! server's certificate unless `sslrootcert` is given, when it checks it
//! against that CA as libpq does (`verify-ca`); `verify-full` also checks
//! the host name. The password may stay out of the URL (and so out of
//! command lines): `PGPASSWORD` and `~/.pgpass` are read as libpq reads
//! them, as are `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGSSLMODE`
//! and `PGSSLROOTCERT` for what the URL leaves out. No error or log line
//! of this crate holds the password: URLs are shown through
//! [`redact_url`].
//!
//! Opening runs the migrations of `migrations/` under sqlx's PostgreSQL
//! advisory lock (`pg_advisory_lock`, keyed by the database's name, held
//! on the migrating connection until it is done): several servers started
//! at once on one database take turns, and the ones after the first find
//! every migration applied and do nothing.
//!
//! # For the queries written on this store
//!
//! The schema (`migrations/0001_schema.sql`) has the SQLite store's table
//! and column names, so column lists are shared; what differs:
//!
//! - Placeholders are `$1, $2, …`, not `?`; `json_each(?)` of a list of
//!   ids becomes `= ANY($1)` with a `Vec<String>` bound.
//! - Flags are BOOLEAN: `online = TRUE` / `WHERE pending`, never `= 1`;
//!   `SUM(flag)` is `COUNT(*) FILTER (WHERE flag)`; a boolean expression
//!   selected as a column decodes as `bool` (SQLite's 0/1 decode as `bool`
//!   too, so shared rows read both).
//! - Every integer is BIGINT, and `COUNT(*)` is BIGINT, but `SUM` of a
//!   BIGINT is NUMERIC: write `SUM(x)::BIGINT` (or `COALESCE(SUM(x), 0)
//!   ::BIGINT`) where the row decodes `i64`.
//! - `INSERT OR IGNORE` is `INSERT … ON CONFLICT DO NOTHING`; `INSERT OR
//!   REPLACE` is `ON CONFLICT (key) DO UPDATE SET …`; `excluded.` works as
//!   in SQLite. A conflict on the partial unique index `alerts_one_firing`
//!   names it as SQLite does: `ON CONFLICT (host_id, kind, subject) WHERE
//!   state = 'firing'`.
//! - Scalar `MAX(a, b)` / `MIN(a, b)` are `GREATEST(a, b)` / `LEAST(a, b)`.
//! - JSON is TEXT: `json_extract(labels, '$."k"')` is `labels::jsonb ->>
//!   'k'` (bind the key, not a JSON path).
//! - `rowid` exists only on `repo_stats` (an identity column standing in
//!   for SQLite's); elsewhere use the primary key (`schedules.id`).
//! - TEXT cannot hold NUL (U+0000), which SQLite stores: text from agents
//!   (log lines, restic's messages) must have it replaced before binding,
//!   or the insert fails with SQLSTATE 22021.
//! - TEXT columns are `COLLATE "C"`: ordering is by bytes as in SQLite,
//!   whatever the database's locale.
//! - Writes are not serialised: SQLite's store runs every write under one
//!   writer lock (`BEGIN IMMEDIATE`), so read-then-write inside a
//!   transaction was safe there. Here two servers (or two requests) run
//!   concurrently under READ COMMITTED: decide races with conditional
//!   `UPDATE … WHERE`, `ON CONFLICT`, `SELECT … FOR UPDATE`, or an
//!   advisory lock, and expect serialization failures and deadlocks
//!   (SQLSTATE 40001, 40P01) to be retried by whoever opted into them.
//! - Identity columns (`audit_log.id`, `notification_outbox.id`,
//!   `repo_stats.rowid`) accept explicit values; whoever inserts them (a
//!   store migration) moves the sequence past them with `setval`.
//! - A schema change is a new migration here *and* in the SQLite store;
//!   the numbering of the two directories is each its own.

mod agent_tokens;
mod alerts;
mod audit;
mod cluster;
pub mod codec;
mod connect;
pub mod copy;
mod hosts;
mod jobs;
mod notifications;
mod policies;
mod repositories;
mod schedules;
mod sealing;
mod shared;
mod snapshots;
mod users;
mod verification;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_store::{StorageFault, Store, StoreError, StoreResult};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub use connect::{redact_url, OpenError};

/// The embedded schema migrations (`crates/store-postgres/migrations`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connections in the pool unless [`PostgresOptions::pool_size`] says
/// otherwise. Each server holds its own pool, so the database's
/// `max_connections` must cover this times the number of servers.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// How long a call waits for a free pooled connection unless
/// [`PostgresOptions::acquire_timeout`] says otherwise; past it the call
/// fails as [`rm_store::StorageFault::Busy`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`PostgresStore`] connects, besides its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Most connections the pool opens (at least 1).
    pub pool_size: u32,
    /// How long a call waits for a free connection.
    pub acquire_timeout: Duration,
    /// The schema holding the store's tables (the connections'
    /// `search_path`), which must exist; `None` keeps the database's
    /// default (`public`). A plain lower-case identifier: letters, digits
    /// and `_`, not starting with a digit, at most 63 bytes.
    pub schema: Option<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: DEFAULT_POOL_SIZE,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            schema: None,
        }
    }
}

/// A store backed by one PostgreSQL database. Cheap to clone (clones
/// share the pool).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The `LISTEN`/`NOTIFY` channel of [`rm_store::ClusterBus`]: one per
    /// schema, since a channel is the database's and several stores may
    /// share one database in their own schemas.
    channel: String,
}

impl PostgresStore {
    /// Connects to `url` (see the crate's documentation for what it may
    /// hold) and brings the schema up to date.
    ///
    /// A URL or option that cannot work is refused before connecting, with
    /// a [`StoreError::Backend`] holding an [`OpenError`] that names it; a
    /// server that cannot be reached is [`StoreError::Unavailable`].
    pub async fn open(url: &str, options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let target = connect::Target::parse(url, options)?;
        let pool = match PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(target.connect_options.clone())
            .await
        {
            Ok(pool) => pool,
            // The pool retries a refused connection until its timeout and
            // then reports only the timeout; one more try says why.
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(target.connect_error(target.why_not().await));
            }
            Err(source) => return Err(target.connect_error(source)),
        };
        if let Some(schema) = &options.schema {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(schema)
                    .fetch_one(&pool)
                    .await
                    .map_err(|source| target.connect_error(source))?;
            if !exists {
                pool.close().await;
                return Err(StoreError::Backend(Box::new(OpenError::MissingSchema {
                    schema: schema.clone(),
                    url: target.redacted.clone(),
                })));
            }
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| target.migrate_error(source))?;
        tracing::debug!(url = %target.redacted, "postgres store opened and migrated");
        // The schema the tables are in, however it was chosen (this
        // option, or `search_path` in the URL's `options`).
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(|source| target.connect_error(source))?;
        let channel = cluster::channel(schema.as_deref());
        Ok(PostgresStore { pool, channel })
    }

    /// Maps a failed call's error, as the store's methods do:
    /// [`codec::backend`], except that a column the driver could not
    /// decode is [`StoreError::Corrupt`] naming it, and that a pool
    /// timeout while the pool holds fewer connections than it may means
    /// that new connections could not be opened (the server is down or
    /// refusing them: [`StorageFault::Unreachable`]), not that every
    /// connection was busy.
    pub fn error(&self, e: sqlx::Error) -> StoreError {
        if let Some(corrupt) = rm_store_sql::column_decode_error(&e) {
            return corrupt;
        }
        if matches!(e, sqlx::Error::PoolTimedOut)
            && self.pool.size() < self.pool.options().get_max_connections()
        {
            return StoreError::Unavailable {
                fault: StorageFault::Unreachable,
                source: Box::new(e),
            };
        }
        codec::backend(e)
    }

    /// The underlying connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    /// Later calls on this store fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn probe_write(&self, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO storage_probe (id, written_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
        )
        .bind(rm_store_sql::encode::ms(at))
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }
}
