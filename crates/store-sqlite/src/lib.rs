//! The SQLite implementation of the restic-manager [`Store`].
//!
//! [`SqliteStore::open`] connects to a database URL (`sqlite:///abs/path.db`,
//! `sqlite://relative.db` or `sqlite::memory:`), configures the connection
//! (WAL, `synchronous=NORMAL`, foreign keys, 5 s busy timeout) and applies
//! the embedded migrations from `migrations/`.
//!
//! Ids are stored as ULID strings, timestamps as INTEGER unix milliseconds
//! (so values read back are truncated to whole milliseconds), token hashes
//! as lower-case hex. Every write, a single statement included, runs in a
//! `BEGIN IMMEDIATE` transaction ([`WriteTx`]), which takes SQLite's single
//! writer lock up front and retires its connection if it does not end
//! cleanly; races such as two enrolments with one token are decided by
//! conditional `UPDATE`s inside those transactions. An audited change
//! writes its audit entry in its own transaction (see [`Store`]).
//!
//! The code is laid out like `rm-store`: each aggregate's `impl XStore for
//! SqliteStore` lives in the file named as its trait's (`users.rs`,
//! `hosts.rs`, `jobs.rs`, …) with the helpers only it uses; this file opens
//! the store and keeps the plumbing several aggregates share, `tx.rs` the
//! write transaction, `codec.rs` the error mapping. Models are read as the
//! shared rows of `rm-store-sql` (`query_as::<_, XRow>` and the row's one
//! conversion), the same rows the PostgreSQL store reads.

pub mod copy;

mod agent_tokens;
mod alerts;
mod audit;
mod cluster;
mod codec;
mod hosts;
mod jobs;
mod notifications;
mod policies;
mod read_only_handles;
mod repositories;
mod schedules;
mod sealing;
mod shared;
mod snapshots;
mod tx;
mod users;
mod verification;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{JobStatus, PolicyId, Selector};
use rm_store::prelude::*;
use rm_store::{
    Job, NewAuditEntry, NewJob, SealedRepository, StorageFault, StoreError, StoreResult,
};
use rm_store_sql::encode::ms;
use rm_store_sql::JobRow;
use sqlx::migrate::Migrator;
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::AssertSqlSafe;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::codec::backend;

use crate::tx::WriteTx;

/// The embedded schema migrations (`crates/store-sqlite/migrations`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for SQLite's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a writer waits for its turn behind the writers ahead of it.
const TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the pool of a file-backed database.
const FILE_POOL_SIZE: u32 = 8;

/// The job kind whose end updates the host's last-backup summary.
const BACKUP_KIND: &str = "backup";

/// `AND …` conditions on a `hosts` row matching every pair of `selector`,
/// each with two parameters (a JSON path and a value) that
/// [`bind_selector`] binds. Label keys are `a-z 0-9 . _ - /` only, so the
/// quoted JSON path `$."key"` needs no escaping; it is bound all the same.
fn selector_sql(selector: &Selector) -> String {
    " AND json_extract(hosts.labels, ?) = ?".repeat(selector.0.as_map().len())
}

/// Binds the parameters of [`selector_sql`], in its order, to a query or
/// a query reading rows of a shared row type.
fn bind_selector<'q, Q: BindText<'q>>(mut query: Q, selector: &Selector) -> Q {
    for (key, value) in selector.0.as_map() {
        query = query
            .bind_text(format!("$.\"{key}\""))
            .bind_text(value.clone());
    }
    query
}

/// A query a text parameter can be bound to: `bind` is inherent to both of
/// sqlx's query types, so [`bind_selector`] needs this to take either.
trait BindText<'q> {
    /// Binds `value` as the next parameter.
    fn bind_text(self, value: String) -> Self;
}

impl<'q> BindText<'q> for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    fn bind_text(self, value: String) -> Self {
        self.bind(value)
    }
}

impl<'q, O> BindText<'q>
    for sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments>
{
    fn bind_text(self, value: String) -> Self {
        self.bind(value)
    }
}

/// Runs `query` and converts every row it returns into its model: the one
/// fetch → convert of the store's lists.
async fn fetch_all_models<'q, 'c, E, R, T>(
    executor: E,
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, R, sqlx::sqlite::SqliteArguments>,
) -> StoreResult<Vec<T>>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    T: TryFrom<R, Error = StoreError>,
{
    query
        .fetch_all(executor)
        .await
        .map_err(backend)?
        .into_iter()
        .map(T::try_from)
        .collect()
}

/// [`fetch_all_models`] of a query that finds at most one row.
async fn fetch_optional_model<'q, 'c, E, R, T>(
    executor: E,
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, R, sqlx::sqlite::SqliteArguments>,
) -> StoreResult<Option<T>>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    T: TryFrom<R, Error = StoreError>,
{
    query
        .fetch_optional(executor)
        .await
        .map_err(backend)?
        .map(T::try_from)
        .transpose()
}

/// A [`Store`] backed by one SQLite database. Cheap to clone (it shares the
/// pool and the writer's turn).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held by whoever writes. SQLite lets one connection write at a time;
    /// without this, pooled connections that find the lock taken sleep in
    /// SQLite's busy handler (1, 2, 5, 10… ms) and retry, which under load
    /// (ten thousand agents reconnecting) costs seconds. Waiting here
    /// instead is first come, first served, and wakes at once.
    writer: Arc<Mutex<()>>,
    /// The database file; `None` for an in-memory database, which lives in
    /// one connection that must stay open.
    file: Option<PathBuf>,
    /// The messages of [`rm_store::ClusterBus`]: a SQLite database has one
    /// server, so they go from it to itself, in memory.
    bus: tokio::sync::broadcast::Sender<String>,
    /// Where failed writes are noted, so that connections a fault may have
    /// left read-only are retired (`None` in memory and for copies).
    read_only: Option<Arc<read_only_handles::ReadOnlyOpens>>,
}

/// The database file behind `url`, or `None` for an in-memory database.
fn database_file(url: &str, file: &Path) -> Option<PathBuf> {
    (!is_memory_url(url)).then(|| file.to_owned())
}

/// Whether `url` names an in-memory database.
fn is_memory_url(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Creates the directory a database file will live in, if it has one.
fn create_parent_dir(file: &Path) -> StoreResult<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(Box::new(e)))
        }
        _ => Ok(()),
    }
}

/// Maps an INSERT failure: duplicates become [`StoreError::Conflict`], a
/// missing referenced row [`StoreError::NotFound`].
fn insert_error(e: sqlx::Error, duplicate: impl FnOnce() -> String, missing: &str) -> StoreError {
    if codec::is_unique_violation(&e) {
        StoreError::Conflict(duplicate())
    } else if codec::is_foreign_key_violation(&e) {
        StoreError::NotFound(missing.to_owned())
    } else {
        backend(e)
    }
}

/// How many of `remaining` rows the next multi-row statement takes: `max`,
/// or else the largest power of two that fits, so a batch of any size uses
/// few distinct SQL texts and all of them stay in sqlx's per-connection
/// prepared statement cache.
fn statement_rows(remaining: usize, max: usize) -> usize {
    if remaining >= max {
        max
    } else {
        1 << (usize::BITS - 1 - remaining.max(1).leading_zeros())
    }
}

/// `n` comma-separated `?` placeholders.
fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// Inserts one job inside the caller's transaction.
/// [`StoreError::NotFound`] for an unknown or deleted host,
/// [`StoreError::Conflict`] for a taken id or a status a job cannot start in.
pub(crate) async fn insert_job(
    conn: &mut sqlx::SqliteConnection,
    job: &NewJob,
) -> StoreResult<Job> {
    let created = ms(job.created_at);
    let (dispatched_at, finished_at) = match job.status {
        JobStatus::Queued => (None, None),
        JobStatus::Dispatched => (Some(created), None),
        JobStatus::Skipped => (None, Some(created)),
        other => {
            return Err(StoreError::Conflict(format!(
                "a job cannot be created in status `{other}`: only queued, dispatched \
                 or skipped"
            )))
        }
    };
    let sql = format!(
        "INSERT INTO jobs (id, host_id, kind, params, status, \"trigger\", schedule_id, \
         error, created_at, dispatched_at, finished_at) \
         SELECT ?, hosts.id, ?, ?, ?, ?, \
         (SELECT schedules.id FROM schedules \
          WHERE schedules.id = ? AND schedules.host_id = hosts.id), \
         ?, ?, ?, ? FROM hosts \
         WHERE hosts.id = ? AND hosts.deleted_at IS NULL \
         RETURNING {}",
        rm_store_sql::JOB_COLUMNS
    );
    let row = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
        .bind(job.id.to_string())
        .bind(&job.kind)
        .bind(job.params.to_string())
        .bind(job.status.as_str())
        .bind(job.trigger.as_str())
        .bind(job.schedule_id.map(|s| s.to_string()))
        .bind(&job.error)
        .bind(created)
        .bind(dispatched_at)
        .bind(finished_at)
        .bind(job.host_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("job `{}` already exists", job.id),
                &format!("host `{}`", job.host_id),
            )
        })?;
    match row {
        Some(row) => Job::try_from(row),
        None => Err(StoreError::NotFound(format!("host `{}`", job.host_id))),
    }
}

/// Stores a host's repository settings inside the caller's transaction:
/// its own (`policy` `None`) or a policy's; a new store clears a refusal.
pub(crate) async fn upsert_repository(
    conn: &mut sqlx::SqliteConnection,
    host_id: &str,
    sealed: &SealedRepository,
    key: &str,
    policy: Option<PolicyId>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO host_repositories (host_id, nonce, ciphertext, seal_format, updated_at, \
         refused, repository_key, policy_id) VALUES (?, ?, ?, ?, ?, NULL, ?, ?) \
         ON CONFLICT (host_id) DO UPDATE SET nonce = excluded.nonce, \
         ciphertext = excluded.ciphertext, seal_format = excluded.seal_format, \
         updated_at = excluded.updated_at, refused = NULL, \
         repository_key = excluded.repository_key, policy_id = excluded.policy_id",
    )
    .bind(host_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(sealed.format.as_i64())
    .bind(ms(sealed.updated_at))
    .bind(key)
    .bind(policy.map(|p| p.to_string()))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Fails with [`StoreError::NotFound`] unless `host` exists and is not
/// deleted (inside the caller's transaction).
async fn require_live_host(conn: &mut sqlx::SqliteConnection, host: &str) -> StoreResult<()> {
    let found = sqlx::query("SELECT 1 FROM hosts WHERE id = ? AND deleted_at IS NULL")
        .bind(host)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("host `{host}`"))),
    }
}

/// Appends `entry` to the audit log inside the caller's transaction;
/// returns its id.
async fn insert_audit(
    conn: &mut sqlx::SqliteConnection,
    entry: &NewAuditEntry,
) -> StoreResult<u64> {
    let actor = &entry.actor;
    let row = sqlx::query(
        "INSERT INTO audit_log (at, actor_kind, actor_user_id, actor_username, \
         actor_token_id, actor_token_name, action, target_type, target_id, details, ip, \
         user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(ms(entry.at))
    .bind(actor.kind.as_str())
    .bind(actor.user_id.map(|id| id.to_string()))
    .bind(&actor.username)
    .bind(actor.token_id.map(|id| id.to_string()))
    .bind(&actor.token_name)
    .bind(&entry.action)
    .bind(&entry.target_type)
    .bind(&entry.target_id)
    .bind(entry.details.to_string())
    .bind(&entry.ip)
    .bind(&entry.user_agent)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .ok_or_else(|| StoreError::Backend("INSERT … RETURNING gave no row".into()))?;
    codec::u64_col(&row, "id")
}

/// Writes a change's audit entry, when it has one, inside the change's
/// transaction: called last, just before `COMMIT`, once the change is
/// known to happen.
async fn write_audit(
    conn: &mut sqlx::SqliteConnection,
    audit: Option<&NewAuditEntry>,
) -> StoreResult<()> {
    if let Some(entry) = audit {
        insert_audit(conn, entry).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// The row of `table` whose `key` column equals `value`, read as `R`
    /// and converted into `T`: the one "look a record up by its key" query,
    /// shared.
    async fn row_by<R, T>(
        &self,
        table: &str,
        key: &str,
        columns: &str,
        value: String,
    ) -> StoreResult<Option<T>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
        T: TryFrom<R, Error = StoreError>,
    {
        let sql = format!("SELECT {columns} FROM {table} WHERE {key} = ?");
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, R>(AssertSqlSafe(sql)).bind(value),
        )
        .await
    }

    /// Opens (creating if missing, along with its parent directory) the
    /// database at `url` and applies pending migrations.
    ///
    /// Accepts `sqlite:///absolute/path.db`, `sqlite://relative/path.db`,
    /// `sqlite:path.db` and `sqlite::memory:`. An in-memory database lives in
    /// a single pooled connection that is never closed, so every query sees
    /// the same data for the life of the store.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        let file = options.get_filename().to_owned();

        let (options, pool_options, read_only) = if is_memory_url(url) {
            (
                options,
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
                None,
            )
        } else {
            create_parent_dir(options.get_filename())?;
            let (pool_options, read_only) = read_only_handles::retire_read_only_handles(
                SqlitePoolOptions::new().max_connections(FILE_POOL_SIZE),
                file.clone(),
            );
            (
                options
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
                pool_options,
                Some(read_only),
            )
        };

        let pool = pool_options.connect_with(options).await.map_err(backend)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        tracing::debug!(url, "sqlite store opened and migrated");
        Ok(SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(())),
            file: database_file(url, &file),
            bus: cluster::bus(),
            read_only,
        })
    }

    /// Opens the existing database file at `url` as it is, to copy it with
    /// [`SqliteStore::backup_to`]: nothing is created and no migration
    /// runs, so a newer binary never changes the schema under a running
    /// older server. A missing file is [`StoreError::NotFound`].
    pub async fn open_existing(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .busy_timeout(BUSY_TIMEOUT)
            .create_if_missing(false);
        let file = options.get_filename().to_owned();
        if !is_memory_url(url) && !file.is_file() {
            return Err(StoreError::NotFound(format!(
                "database file {}",
                file.display()
            )));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(())),
            file: database_file(url, &file),
            bus: cluster::bus(),
            read_only: None,
        })
    }

    /// The underlying connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish (checkpoints the
    /// WAL). Later calls on this store fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes a consistent copy of the whole database to the new file
    /// `out` (mode 0600: it holds password hashes and sealed repository
    /// settings) with `VACUUM INTO`, while the store stays in use: the copy
    /// is one read transaction's snapshot, so writers that commit during it
    /// are simply not in it. Unlike copying the file of a live WAL
    /// database, this never misses pages still in the `-wal` file. Returns
    /// the copy's size in bytes.
    ///
    /// An existing `out` is refused with [`StoreError::Conflict`] and left
    /// as it was; on failure the partial copy is removed.
    pub async fn backup_to(&self, out: &Path) -> StoreResult<u64> {
        use std::os::unix::fs::OpenOptionsExt;

        let io = |e: std::io::Error| StoreError::Backend(Box::new(e));
        let target = out.to_str().ok_or_else(|| {
            StoreError::Conflict(format!("{} is not a UTF-8 path", out.display()))
        })?;
        // Creating the (empty) file first refuses an existing one atomically
        // and sets its mode before any data is in it; VACUUM INTO accepts an
        // existing empty file.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => StoreError::Conflict(format!(
                    "{} already exists; refusing to overwrite it",
                    out.display()
                )),
                _ => io(std::io::Error::new(
                    e.kind(),
                    format!("could not create {}: {e}", out.display()),
                )),
            })?;
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await;
        let synced = match copied {
            // VACUUM INTO does not sync its output; a backup must be on disk.
            Ok(_) => std::fs::File::open(out).and_then(|f| {
                f.sync_all()?;
                f.metadata()
            }),
            Err(e) => {
                let _ = std::fs::remove_file(out);
                return Err(backend(e));
            }
        };
        match synced {
            Ok(meta) => {
                tracing::info!(path = %out.display(), bytes = meta.len(), "database copied");
                Ok(meta.len())
            }
            Err(e) => {
                let _ = std::fs::remove_file(out);
                Err(io(e))
            }
        }
    }

    /// In one transaction: runs `host_update` (binding the time, then the
    /// host id) on a live host, and revokes every token of its agent.
    /// False, changing nothing, when there is no such host. Shared by
    /// deleting a host and revoking its agent.
    pub(crate) async fn retire_agent(
        &self,
        host_id: &str,
        at_ms: i64,
        host_update: &'static str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query(host_update)
            .bind(at_ms)
            .bind(host_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if found != 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE agent_tokens SET revoked_at = ?, pending = 0 \
             WHERE host_id = ? AND revoked_at IS NULL",
        )
        .bind(at_ms)
        .bind(host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    /// Starts a write transaction once it is this caller's turn to write.
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        let turn = self.turn().await?;
        let conn = self.pool.acquire().await.map_err(backend)?;
        WriteTx::begin(conn, turn, self.file.is_none(), self.read_only.clone())
            .await
            .map_err(backend)
    }

    /// The writer's turn, waited for at most [`TURN_TIMEOUT`]: when the
    /// database is locked by another process every writer ahead waits out
    /// SQLite's busy timeout, and a queue of them must not keep a caller
    /// waiting for minutes. Giving up is a [`StorageFault::Busy`].
    async fn turn(&self) -> StoreResult<OwnedMutexGuard<()>> {
        tokio::time::timeout(TURN_TIMEOUT, self.writer.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Unavailable {
                fault: StorageFault::Busy,
                source: format!(
                    "waited {} s for the writers ahead of this one",
                    TURN_TIMEOUT.as_secs()
                )
                .into(),
            })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn probe_write(&self, at: DateTime<Utc>) -> StoreResult<()> {
        // The probe is what `/readyz` believes, so its failures get a look
        // at the database file, wherever in the write they happen (SQLite
        // usually writes the WAL only at commit).
        let closer_look = |e: StoreError| match (e, &self.file) {
            (StoreError::Unavailable { fault, source }, Some(file)) => StoreError::Unavailable {
                fault: codec::closer_look(fault, file),
                source,
            },
            (other, _) => other,
        };
        let mut tx = self.begin_write().await.map_err(closer_look)?;
        sqlx::query(
            "INSERT INTO storage_probe (id, written_at) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
        )
        .bind(ms(at))
        .execute(&mut *tx)
        .await
        .map_err(|e| closer_look(backend(e)))?;
        tx.commit().await.map_err(|e| closer_look(backend(e)))?;
        Ok(())
    }
}
