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

pub mod copy;

mod agent_tokens;
mod alerts;
mod codec;
mod notifications;
mod policies;
mod shared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{
    BatchId, HostId, JobId, JobStatus, PolicyId, Role, ScheduleId, Selector, TokenId, UserId,
};
use rm_store::{
    AgentToken, ApiToken, AuditEntry, AuditFilter, CommandResultRecord, EnrollmentToken,
    HelloRecord, Host, HostBackupSummary, HostCounts, HostPatch, HostPolicyChange, Job, JobEnd,
    JobFilter, LogLineRecord, NewAuditEntry, NewHost, NewJob, PolicyCoverage, PolicyRecord,
    PolicyTarget, PolicyWrite, ProtectedAt, RepoStatsRecord, RepositoryJob, ScheduleRecord,
    SealFormat, SealedRepository, SealingKeyRecord, Session, SnapshotRecord, StorageFault, Store,
    StoreError, StoreResult, User, MAX_HOST_PAGE,
};
use sqlx::migrate::Migrator;
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::AssertSqlSafe;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::codec::{backend, ms, ms_opt, u64_opt_to_i64, u64_to_i64};

/// The embedded schema migrations (`crates/store-sqlite/migrations`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for SQLite's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a writer waits for its turn behind the writers ahead of it.
const TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the pool of a file-backed database.
const FILE_POOL_SIZE: u32 = 8;

/// The statement that opens every write transaction: takes the writer lock
/// immediately, so a transaction never has to upgrade from reading.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// `list_jobs` page size when the filter's limit is 0.
const DEFAULT_JOB_PAGE: u32 = 50;
/// Largest `list_jobs` page.
const MAX_JOB_PAGE: u32 = 1000;
/// Largest `logs` page.
const MAX_LOG_PAGE: u32 = 10_000;
/// Largest `repo_stats` page.
const MAX_REPO_STATS_PAGE: u32 = 1000;
/// `list_audit` page size when the filter's limit is 0.
const DEFAULT_AUDIT_PAGE: u32 = 50;
/// Largest `list_audit` page.
const MAX_AUDIT_PAGE: u32 = 500;

/// The job kind whose end updates the host's last-backup summary.
const BACKUP_KIND: &str = "backup";

/// Whether a `hosts` row is protected: a backup that saved a snapshot
/// within its effective freshness (its own, else its policy's, else the
/// default bound first) of now (bound second), in milliseconds. Shared by
/// the fleet counts and the attention-first listing so both judge a host
/// alike, and alike with the server's host view. Never NULL, so `NOT` and
/// `SUM` over it count every host.
const PROTECTED: &str = "(last_backup_success_at IS NOT NULL AND last_backup_success_at \
     + 1000 * COALESCE(hosts.freshness_seconds, (SELECT policies.freshness_seconds \
     FROM policies WHERE policies.id = hosts.policy_id), ?) >= ?)";

/// `AND …` conditions on a `hosts` row matching every pair of `selector`,
/// each with two parameters (a JSON path and a value) that
/// [`bind_selector`] binds. Label keys are `a-z 0-9 . _ - /` only, so the
/// quoted JSON path `$."key"` needs no escaping; it is bound all the same.
fn selector_sql(selector: &Selector) -> String {
    " AND json_extract(hosts.labels, ?) = ?".repeat(selector.0.as_map().len())
}

/// Binds the parameters of [`selector_sql`], in its order.
fn bind_selector<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    selector: &Selector,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for (key, value) in selector.0.as_map() {
        query = query.bind(format!("$.\"{key}\"")).bind(value.clone());
    }
    query
}

/// Log lines per multi-row `INSERT` in `append_logs` (5 bind parameters
/// each, so 640 per statement: below even old SQLite's 999 limit). A batch
/// is cut into statements of this many rows, then the rest into
/// power-of-two sized statements, so at most 8 distinct SQL texts exist and
/// all of them stay in sqlx's per-connection prepared statement cache.
const LOG_ROWS_PER_INSERT: usize = 128;

/// Hosts per `touch_hosts` statement (2 bind parameters each).
const TOUCH_ROWS_PER_UPDATE: usize = 256;

/// Hosts per `IN (…)` list when reading schedule sets.
const SET_HOSTS_PER_QUERY: usize = 256;

/// Hosts per `record_schedule_acks` statement (2 bind parameters each).
const ACKS_PER_UPDATE: usize = 256;

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
}

/// A write transaction that holds the writer's turn until it ends.
///
/// It runs `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK` itself on a pooled
/// connection instead of using sqlx's `Transaction`, because sqlx counts
/// transaction depth on its own and that count goes wrong when SQLite ends
/// a transaction by itself: on a full disk or an I/O error SQLite rolls
/// back, sqlx's later `ROLLBACK` then fails ("no transaction is active"),
/// its depth stays at 1, and the connection goes back to the pool unable
/// to begin another transaction ("attempted to call begin_with at non-zero
/// transaction depth") until the process restarts. Here a transaction that
/// does not end cleanly, by `COMMIT` or `ROLLBACK` succeeding, never goes
/// back to the pool: its connection is closed (SQLite rolls back whatever
/// was left open) and the pool opens a fresh one.
struct WriteTx {
    /// `None` only once `Drop` has handed it off.
    conn: Option<PoolConnection<sqlx::Sqlite>>,
    /// `BEGIN` succeeded and neither `COMMIT` nor `ROLLBACK` has.
    open: bool,
    /// An in-memory database lives in its one connection, which must not
    /// be closed; a failed transaction there is rolled back instead.
    memory: bool,
    turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Starts a write transaction on `conn` while holding `turn`.
    ///
    /// The `BEGIN` runs in a task of its own: if the caller gives up while
    /// it waits for SQLite's lock (a request timing out), a `BEGIN` that
    /// succeeds afterwards must not leave a pooled connection inside a
    /// transaction nobody ends. The unclaimed transaction drops as still
    /// open, which retires its connection.
    async fn begin(
        mut conn: PoolConnection<sqlx::Sqlite>,
        turn: OwnedMutexGuard<()>,
        memory: bool,
    ) -> Result<WriteTx, sqlx::Error> {
        let (hand_over, claimed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let begun = sqlx::query(BEGIN_WRITE).execute(&mut *conn).await;
            let tx = WriteTx {
                conn: Some(conn),
                open: true,
                memory,
                turn: Some(turn),
            };
            // On failure `tx` drops as still open, retiring its connection.
            let _ = hand_over.send(begun.map(|_| tx));
        });
        claimed.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }

    async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let (Some(mut conn), turn) = (self.conn.take(), self.turn.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            conn.close_on_drop();
            return;
        };
        let memory = self.memory;
        // The writer's turn goes with the connection, so the next writer
        // starts only once this transaction is gone.
        runtime.spawn(async move {
            if memory {
                if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    tracing::debug!(error = %e, "rolling back an abandoned transaction");
                }
            } else if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing the connection of a failed transaction");
            }
            drop(turn);
        });
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;

    #[allow(clippy::expect_used)] // `conn` is taken only in `drop`
    fn deref(&self) -> &sqlx::SqliteConnection {
        self.conn
            .as_deref()
            .expect("a live write transaction has its connection")
    }
}

impl std::ops::DerefMut for WriteTx {
    #[allow(clippy::expect_used)] // `conn` is taken only in `drop`
    fn deref_mut(&mut self) -> &mut sqlx::SqliteConnection {
        self.conn
            .as_deref_mut()
            .expect("a live write transaction has its connection")
    }
}

impl SqliteStore {
    /// The row of `table` whose `key` column equals `value`, decoded by
    /// `decode`: the one "look a record up by its key" query, shared.
    async fn row_by<T>(
        &self,
        table: &str,
        key: &str,
        columns: &str,
        value: String,
        decode: fn(&sqlx::sqlite::SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let sql = format!("SELECT {columns} FROM {table} WHERE {key} = ?");
        sqlx::query(AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(decode)
            .transpose()
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

        let (options, pool_options) = if is_memory_url(url) {
            (
                options,
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
            )
        } else {
            create_parent_dir(options.get_filename())?;
            (
                options
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
                SqlitePoolOptions::new().max_connections(FILE_POOL_SIZE),
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

    /// Whether user `id` is an admin and no other admin exists.
    async fn last_admin(&self, tx: &mut WriteTx, id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND id <> ?")
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(backend)?;
        let others = codec::count(&row, "n")?;
        let is_admin = sqlx::query("SELECT 1 FROM users WHERE id = ? AND role = 'admin'")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(backend)?
            .is_some();
        Ok(is_admin && others == 0)
    }

    /// Starts a write transaction once it is this caller's turn to write.
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        let turn = self.turn().await?;
        let conn = self.pool.acquire().await.map_err(backend)?;
        WriteTx::begin(conn, turn, self.file.is_none())
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

/// The `UPDATE … FROM (VALUES …)` that moves `last_seen_at` forward for
/// `rows` hosts, each bound as `(id, unix ms)`.
fn touch_hosts_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(200 + rows * 8);
    sql.push_str(
        "UPDATE hosts SET last_seen_at = MAX(COALESCE(hosts.last_seen_at, 0), seen.at) \
         FROM (SELECT column1 AS id, column2 AS at FROM (VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?)");
    }
    sql.push_str(")) AS seen WHERE hosts.id = seen.id");
    sql
}

/// The multi-row `INSERT OR IGNORE` of `rows` log lines.
fn insert_logs_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(64 + rows * 18);
    sql.push_str("INSERT OR IGNORE INTO job_logs (job_id, seq, ts, stream, text) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?)");
    }
    sql
}

/// One log line ready to bind.
struct LogRow<'a> {
    job_id: &'a str,
    seq: i64,
    ts: i64,
    stream: &'a str,
    text: &'a str,
}

/// Inserts `rows` (all of known jobs) with as few statements as possible;
/// returns how many were new.
async fn insert_log_rows(
    conn: &mut sqlx::SqliteConnection,
    mut rows: &[LogRow<'_>],
) -> StoreResult<u64> {
    let mut inserted = 0;
    while !rows.is_empty() {
        let n = statement_rows(rows.len(), LOG_ROWS_PER_INSERT);
        let (chunk, rest) = rows.split_at(n);
        let sql = insert_logs_sql(n);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.job_id)
                .bind(row.seq)
                .bind(row.ts)
                .bind(row.stream)
                .bind(row.text);
        }
        inserted += query
            .execute(&mut *conn)
            .await
            .map_err(backend)?
            .rows_affected();
        rows = rest;
    }
    Ok(inserted)
}

/// Fails with [`StoreError::NotFound`] unless `host` exists and is not
/// deleted (inside the caller's transaction).
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
        codec::JOB_COLUMNS
    );
    let row = sqlx::query(AssertSqlSafe(sql))
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
        Some(row) => codec::job(&row),
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

/// Makes `record` the one `sealing_key` row, inside the caller's
/// transaction.
async fn upsert_sealing_key(
    conn: &mut sqlx::SqliteConnection,
    record: &SealingKeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sealing_key (id, fingerprint, recorded_at) VALUES (1, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, \
         recorded_at = excluded.recorded_at",
    )
    .bind(&record.fingerprint)
    .bind(ms(record.recorded_at))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
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

/// Bumps the schedule version of live host `host` inside the caller's
/// transaction; returns the new version. [`StoreError::NotFound`] for an
/// unknown or deleted host.
async fn bump_schedule_version(conn: &mut sqlx::SqliteConnection, host: &str) -> StoreResult<u64> {
    let row = sqlx::query(
        "UPDATE hosts SET schedule_version = schedule_version + 1 \
         WHERE id = ? AND deleted_at IS NULL RETURNING schedule_version",
    )
    .bind(host)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))?;
    codec::u64_col(&row, "schedule_version")
}

#[async_trait]
impl Store for SqliteStore {
    // ── operators ──────────────────────────────────────────────────────

    async fn create_user(&self, user: &User, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, role, scope) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(ms(user.created_at))
        .bind(user.role.as_str())
        .bind(codec::scope_json(user.scope.as_ref()))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if codec::is_unique_violation(&e) && codec::db_message(&e).contains("username") {
                StoreError::Conflict(format!("user name `{}` is taken", user.username))
            } else {
                insert_error(
                    e,
                    || format!("user id `{}` already exists", user.id),
                    "user",
                )
            }
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.row_by(
            "users",
            "username",
            codec::USER_COLUMNS,
            username.to_owned(),
            codec::user,
        )
        .await
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE id = ?", codec::USER_COLUMNS);
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::user)
            .transpose()
    }

    async fn set_user_password(
        &self,
        username: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ?")
            .bind(password_hash)
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if updated != 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("user `{username}`")));
        }
        sqlx::query(
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = ?)",
        )
        .bind(username)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        codec::count(&row, "n")
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let sql = format!(
            "SELECT {} FROM users ORDER BY username, id",
            codec::USER_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::user)
            .collect()
    }

    async fn delete_user(&self, id: UserId, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let id = id.to_string();
        // BEGIN IMMEDIATE: two operators deleting the last two users one
        // each are serialised, so one of them sees the last-user rule.
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        if !exists {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("user `{id}`")));
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if codec::count(&row, "n")? <= 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Conflict(String::from(
                "cannot delete the last user",
            )));
        }
        if self.last_admin(&mut tx, &id).await? {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Conflict(String::from(
                "cannot delete the last admin",
            )));
        }
        // Explicit rather than relying on ON DELETE CASCADE alone, so the
        // credentials go even on a connection without foreign keys.
        for sql in [
            "DELETE FROM sessions WHERE user_id = ?",
            "DELETE FROM api_tokens WHERE user_id = ?",
            "DELETE FROM users WHERE id = ?",
        ] {
            sqlx::query(sql)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn set_user_access(
        &self,
        id: UserId,
        role: Role,
        scope: Option<&Selector>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<User> {
        let id = id.to_string();
        // BEGIN IMMEDIATE: two admins demoting each other are serialised,
        // so one of them sees the last-admin rule.
        let mut tx = self.begin_write().await?;
        if role != Role::Admin && self.last_admin(&mut tx, &id).await? {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Conflict(String::from(
                "cannot demote the last admin",
            )));
        }
        let sql = format!(
            "UPDATE users SET role = ?, scope = ? WHERE id = ? RETURNING {}",
            codec::USER_COLUMNS
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(role.as_str())
            .bind(codec::scope_json(scope))
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("user `{id}`")));
        };
        let user = codec::user(&row)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(user)
    }

    async fn create_session(
        &self,
        session: &Session,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(session.token_hash.to_hex())
        .bind(ms(session.created_at))
        .bind(ms(session.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("session `{}` already exists", session.id),
                &format!("user `{}`", session.user_id),
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>> {
        self.row_by(
            "sessions",
            "id",
            codec::SESSION_COLUMNS,
            id.to_string(),
            codec::session,
        )
        .await
    }

    /// The entry is written even when the session was gone already (the
    /// logout was asked for, and nothing of the session is left).
    async fn delete_session(&self, id: TokenId, audit: Option<&NewAuditEntry>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    async fn create_api_token(
        &self,
        token: &ApiToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_tokens \
             (id, user_id, name, token_hash, created_at, expires_at, revoked_at, role) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(token.user_id.to_string())
        .bind(&token.name)
        .bind(token.token_hash.to_hex())
        .bind(ms(token.created_at))
        .bind(ms_opt(token.expires_at))
        .bind(ms_opt(token.revoked_at))
        .bind(token.role.map(Role::as_str))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("API token `{}` already exists", token.id),
                &format!("user `{}`", token.user_id),
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>> {
        self.row_by(
            "api_tokens",
            "id",
            codec::API_TOKEN_COLUMNS,
            id.to_string(),
            codec::api_token,
        )
        .await
    }

    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiToken>> {
        let sql = format!(
            "SELECT {} FROM api_tokens WHERE user_id = ? ORDER BY created_at, id",
            codec::API_TOKEN_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(user.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::api_token)
            .collect()
    }

    async fn revoke_api_token(
        &self,
        id: TokenId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let updated =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(at))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        if updated != 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    // ── enrolment ──────────────────────────────────────────────────────

    async fn create_enrollment_token(
        &self,
        token: &EnrollmentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens \
             (id, name, token_hash, created_at, expires_at, used_at, host_id, labels) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(&token.name)
        .bind(token.token_hash.to_hex())
        .bind(ms(token.created_at))
        .bind(ms(token.expires_at))
        .bind(ms_opt(token.used_at))
        .bind(token.host_id.map(|h| h.to_string()))
        .bind(codec::labels_json(&token.labels))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("enrolment token `{}` already exists", token.id),
                "host",
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn enrollment_token(&self, id: TokenId) -> StoreResult<Option<EnrollmentToken>> {
        self.row_by(
            "enrollment_tokens",
            "id",
            codec::ENROLLMENT_TOKEN_COLUMNS,
            id.to_string(),
            codec::enrollment_token,
        )
        .await
    }

    async fn pending_enrollment_tokens(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<EnrollmentToken>> {
        let sql = format!(
            "SELECT {} FROM enrollment_tokens WHERE used_at IS NULL AND expires_at > ? \
             ORDER BY created_at DESC, id DESC",
            codec::ENROLLMENT_TOKEN_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(ms(now))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::enrollment_token)
            .collect()
    }

    async fn enroll_host(
        &self,
        token_id: TokenId,
        now: DateTime<Utc>,
        host: &NewHost,
        agent_token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        let now_ms = ms(now);
        let host_id = host.id.to_string();
        let mut tx = self.begin_write().await?;

        // The guard: only one transaction can flip `used_at` from NULL.
        let spent = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = ?, host_id = ? \
             WHERE id = ? AND used_at IS NULL AND expires_at > ?",
        )
        .bind(now_ms)
        .bind(&host_id)
        .bind(token_id.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if spent != 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::TokenSpent);
        }

        // The host carries its labels (by default the token's) from the start.
        sqlx::query(
            "INSERT INTO hosts (id, name, hostname, enrolled_at, online, labels) \
             VALUES (?, ?, ?, ?, 0, \
             COALESCE(?, (SELECT labels FROM enrollment_tokens WHERE id = ?), '{}'))",
        )
        .bind(&host_id)
        .bind(&host.name)
        .bind(&host.hostname)
        .bind(now_ms)
        .bind(host.labels.as_ref().map(codec::labels_json))
        .bind(token_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, || format!("host `{host_id}` already exists"), "host"))?;

        sqlx::query(
            "INSERT INTO agent_tokens (id, host_id, token_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(agent_token.id.to_string())
        .bind(agent_token.host_id.to_string())
        .bind(agent_token.token_hash.to_hex())
        .bind(ms(agent_token.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("agent token `{}` already exists", agent_token.id),
                &format!("host `{}`", agent_token.host_id),
            )
        })?;

        let sql = format!("SELECT {} FROM hosts WHERE id = ?", codec::HOST_COLUMNS);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&host_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let mut stored = [codec::host(&row)?];
        shared::fill_shared(&mut tx, &mut stored).await?;
        let [stored] = stored;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    // ── hosts ──────────────────────────────────────────────────────────

    async fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL ORDER BY enrolled_at, id",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query(AssertSqlSafe(sql));
        shared::read_hosts(&self.pool, query).await
    }

    async fn list_hosts_page(&self, after: Option<HostId>, limit: u32) -> StoreResult<Vec<Host>> {
        // The empty string sorts before every ULID, so "no cursor" needs no
        // second SQL text.
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(after.map(|id| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)));
        shared::read_hosts(&self.pool, query).await
    }

    async fn list_hosts_page_matching(
        &self,
        after: Option<HostId>,
        limit: u32,
        selector: &Selector,
    ) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL{} AND id > ? ORDER BY id LIMIT ?",
            codec::HOST_COLUMNS,
            selector_sql(selector)
        );
        let query = bind_selector(sqlx::query(AssertSqlSafe(sql)), selector)
            .bind(after.map(|id| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)));
        shared::read_hosts(&self.pool, query).await
    }

    async fn list_hosts_attention_first(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL{} \
             ORDER BY (online = 1 AND {PROTECTED}) ASC, name, id LIMIT ? OFFSET ?",
            codec::HOST_COLUMNS,
            selector_sql(selector),
        );
        let query = bind_selector(sqlx::query(AssertSqlSafe(sql)), selector)
            .bind(u64_to_i64(
                protected.default_freshness_seconds,
                "default freshness",
            )?)
            .bind(ms(protected.now))
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)))
            .bind(i64::from(offset));
        shared::read_hosts(&self.pool, query).await
    }

    async fn host_counts(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
    ) -> StoreResult<HostCounts> {
        let sql = format!(
            "SELECT COUNT(*) AS total, COALESCE(SUM(online), 0) AS online, \
             COALESCE(SUM(NOT {PROTECTED}), 0) AS not_backed_up, \
             COALESCE(SUM(NOT EXISTS (SELECT 1 FROM host_repositories \
                                      WHERE host_repositories.host_id = hosts.id) \
                          AND NOT EXISTS (SELECT 1 FROM schedules \
                                          WHERE schedules.host_id = hosts.id)), 0) \
             AS unconfigured \
             FROM hosts WHERE deleted_at IS NULL{}",
            selector_sql(selector)
        );
        // The selector's parameters come after the count's.
        let row = bind_selector(
            sqlx::query(AssertSqlSafe(sql))
                .bind(u64_to_i64(
                    protected.default_freshness_seconds,
                    "default freshness",
                )?)
                .bind(ms(protected.now)),
            selector,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        codec::host_counts(&row)
    }

    async fn agent_versions(&self, selector: &Selector) -> StoreResult<Vec<(String, u64)>> {
        let sql = format!(
            "SELECT agent_version, COUNT(*) AS hosts FROM hosts \
             WHERE deleted_at IS NULL AND agent_version IS NOT NULL{} \
             GROUP BY agent_version ORDER BY agent_version",
            selector_sql(selector)
        );
        let rows = bind_selector(sqlx::query(AssertSqlSafe(sql)), selector)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok((
                    codec::text(row, "agent_version")?,
                    codec::count(row, "hosts")?,
                ))
            })
            .collect()
    }

    async fn hosts_matching(&self, selector: &Selector) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL{} ORDER BY id",
            codec::HOST_COLUMNS,
            selector_sql(selector)
        );
        let query = bind_selector(sqlx::query(AssertSqlSafe(sql)), selector);
        shared::read_hosts(&self.pool, query).await
    }

    async fn patch_host(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        self.patch_host_impl(id, patch, audit).await
    }

    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        self.policies_impl(None).await
    }

    async fn policy(&self, id: PolicyId) -> StoreResult<Option<PolicyRecord>> {
        Ok(self.policies_impl(Some(id)).await?.into_iter().next())
    }

    async fn policy_targets(&self, hosts: Option<&[HostId]>) -> StoreResult<Vec<PolicyTarget>> {
        self.policy_targets_impl(hosts).await
    }

    async fn apply_policy_changes(
        &self,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>> {
        self.apply_policy_changes_impl(policy, changes, audit).await
    }

    async fn hosts_of_policy(&self, id: PolicyId) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE policy_id = ? AND deleted_at IS NULL ORDER BY name, id",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query(AssertSqlSafe(sql)).bind(id.to_string());
        shared::read_hosts(&self.pool, query).await
    }

    async fn policy_coverage(&self) -> StoreResult<Vec<PolicyCoverage>> {
        self.policy_coverage_impl().await
    }

    async fn host(&self, id: HostId) -> StoreResult<Option<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE id = ? AND deleted_at IS NULL",
            codec::HOST_COLUMNS
        );
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut host = [codec::host(&row)?];
        shared::fill_shared(&mut conn, &mut host).await?;
        let [host] = host;
        Ok(Some(host))
    }

    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>> {
        let sql = format!(
            "SELECT {} FROM agent_tokens JOIN hosts ON hosts.id = agent_tokens.host_id \
             WHERE agent_tokens.id = ? AND agent_tokens.revoked_at IS NULL \
             AND hosts.deleted_at IS NULL",
            codec::AGENT_TOKEN_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::agent_token)
            .transpose()
    }

    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE hosts SET connection_id = ?, online = 1, \
             last_seen_at = MAX(COALESCE(last_seen_at, 0), ?), \
             agent_version = ?, restic_version = ?, restic_error = ?, protocol_version = ?, \
             hostname = ?, os = ?, arch = ?, hooks = ?, hooks_refused = ?, platform = ? \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(&hello.connection_id)
        .bind(ms(hello.at))
        .bind(&hello.agent_version)
        .bind(&hello.restic_version)
        .bind(&hello.restic_error)
        .bind(i64::from(hello.protocol_version))
        .bind(&hello.hostname)
        .bind(&hello.os)
        .bind(&hello.arch)
        .bind(codec::json_strings(&hello.hooks))
        .bind(serde_json::to_string(&hello.hooks_refused).unwrap_or_else(|_| "[]".to_owned()))
        .bind(&hello.platform)
        .bind(host_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("host `{host_id}`")))
        }
    }

    async fn request_agent_upgrade(
        &self,
        hosts: &[HostId],
        version: &str,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for host in hosts {
            sqlx::query(
                "UPDATE hosts SET upgrade_requested_version = ?, upgrade_requested_at = ? \
                 WHERE id = ? AND deleted_at IS NULL",
            )
            .bind(version)
            .bind(ms(at))
            .bind(host.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn record_agent_upgrade_status(
        &self,
        host_id: HostId,
        version: &str,
        state: &str,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let ends = matches!(state, "installed" | "failed");
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE hosts SET upgrade_state = ?, upgrade_version = ?, upgrade_error = ?, \
             upgrade_at = ?, \
             upgrade_requested_version = CASE WHEN ? THEN NULL ELSE upgrade_requested_version END, \
             upgrade_requested_at = CASE WHEN ? THEN NULL ELSE upgrade_requested_at END \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(state)
        .bind(version)
        .bind(error)
        .bind(ms(at))
        .bind(ends)
        .bind(ends)
        .bind(host_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn touch_hosts(&self, seen: &[(HostId, DateTime<Utc>)]) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut rest = seen;
        while !rest.is_empty() {
            // Many hosts per statement: one round trip to SQLite's thread
            // per chunk instead of per host keeps the writer lock short.
            let (chunk, after) = rest.split_at(statement_rows(rest.len(), TOUCH_ROWS_PER_UPDATE));
            let sql = touch_hosts_sql(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (host_id, at) in chunk {
                query = query.bind(host_id.to_string()).bind(ms(*at));
            }
            query.execute(&mut *tx).await.map_err(backend)?;
            rest = after;
        }
        tx.commit().await.map_err(backend)
    }

    async fn mark_host_offline(
        &self,
        host_id: HostId,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE hosts SET online = 0, last_seen_at = MAX(COALESCE(last_seen_at, 0), ?) \
             WHERE id = ? AND connection_id = ? AND online = 1",
        )
        .bind(ms(at))
        .bind(host_id.to_string())
        .bind(connection_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(updated == 1)
    }

    async fn mark_all_hosts_offline(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE hosts SET online = 0 WHERE online = 1")
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(updated)
    }

    async fn probe_write(&self, at: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO storage_probe (id, written_at) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
        )
        .bind(ms(at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match (backend(e), &self.file) {
            (StoreError::Unavailable { fault, source }, Some(file)) => StoreError::Unavailable {
                fault: codec::closer_look(fault, file),
                source,
            },
            (other, _) => other,
        })?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn delete_host(
        &self,
        id: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.retire_agent(
            &id.to_string(),
            ms(at),
            "UPDATE hosts SET deleted_at = ?, online = 0 WHERE id = ? AND deleted_at IS NULL",
            audit,
        )
        .await
    }

    async fn host_backup_summaries(&self) -> StoreResult<Vec<HostBackupSummary>> {
        // The job is found by the time it set `last_backup_success_at`,
        // walking the host's jobs newest first (`jobs_host_created`): the
        // last successful backup is among the newest, so this reads a few
        // rows per host, not its whole history. Hosts that never succeeded
        // skip the walk (CASE evaluates lazily).
        let sql = format!(
            "SELECT h.id, h.name, h.online, h.policy_id, h.freshness_seconds, \
             h.last_backup_success_at, j.started_at AS job_started_at, \
             j.finished_at AS job_finished_at, \
             json_extract(j.stats, '$.total_bytes_processed') AS bytes_processed, \
             json_extract(j.stats, '$.data_added') AS bytes_added \
             FROM hosts h LEFT JOIN jobs j ON j.id = CASE \
               WHEN h.last_backup_success_at IS NULL THEN NULL \
               ELSE (SELECT id FROM jobs WHERE jobs.host_id = h.id \
                     AND jobs.kind = '{BACKUP_KIND}' \
                     AND jobs.status IN ('succeeded', 'partial') \
                     AND jobs.finished_at = h.last_backup_success_at \
                     ORDER BY jobs.created_at DESC, jobs.id DESC LIMIT 1) END \
             WHERE h.deleted_at IS NULL ORDER BY h.id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(codec::host_backup_summary).collect()
    }

    // ── repositories ───────────────────────────────────────────────────

    async fn set_repository(
        &self,
        host: HostId,
        sealed: &SealedRepository,
        key: &str,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let host_id = host.to_string();
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        upsert_repository(&mut tx, &host_id, sealed, key, None).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn delete_own_repository(
        &self,
        host: HostId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let host_id = host.to_string();
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        let deleted =
            sqlx::query("DELETE FROM host_repositories WHERE host_id = ? AND policy_id IS NULL")
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        if deleted == 0 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn set_repository_key(&self, host: HostId, key: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE host_repositories SET repository_key = ? WHERE host_id = ?")
            .bind(key)
            .bind(host.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn repository_key(&self, host: HostId) -> StoreResult<Option<String>> {
        let key: Option<Option<String>> = sqlx::query_scalar(
            "SELECT host_repositories.repository_key FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id \
             WHERE host_repositories.host_id = ? AND hosts.deleted_at IS NULL",
        )
        .bind(host.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(key.flatten())
    }

    async fn hosts_of_repository(&self, key: &str) -> StoreResult<Vec<Host>> {
        self.hosts_of_repository_impl(key).await
    }

    async fn repository_jobs(&self, key: &str) -> StoreResult<Vec<RepositoryJob>> {
        self.repository_jobs_impl(key).await
    }

    /// `Ok(None)` when the host has no settings stored;
    /// [`StoreError::NotFound`] when the host is unknown or deleted.
    async fn repository(&self, host: HostId) -> StoreResult<Option<SealedRepository>> {
        let sql = format!(
            "SELECT hosts.id AS host_id, {} FROM hosts \
             LEFT JOIN host_repositories ON host_repositories.host_id = hosts.id \
             WHERE hosts.id = ? AND hosts.deleted_at IS NULL",
            codec::REPOSITORY_COLUMNS
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("host `{host}`")))?;
        // The host exists; `updated_at` is NULL when no settings are joined.
        if codec::time_opt(&row, "updated_at")?.is_none() {
            return Ok(None);
        }
        codec::repository(&row).map(Some)
    }

    // ── sealing key ────────────────────────────────────────────────────

    async fn sealing_key_record(&self) -> StoreResult<Option<SealingKeyRecord>> {
        sqlx::query("SELECT fingerprint, recorded_at FROM sealing_key WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::sealing_key)
            .transpose()
    }

    async fn sealed_repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository)>> {
        let sql = format!(
            "SELECT host_id, {} FROM host_repositories ORDER BY host_id",
            codec::REPOSITORY_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| Ok((codec::parsed(row, "host_id")?, codec::repository(row)?)))
            .collect()
    }

    async fn record_sealing_key(
        &self,
        record: &SealingKeyRecord,
        resealed: &[(HostId, SealedRepository)],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (host, sealed) in resealed {
            // Only a value still stored unbound is replaced: re-sealing
            // twice, or over a value set meanwhile, changes nothing.
            let replaced = sqlx::query(
                "UPDATE host_repositories SET nonce = ?, ciphertext = ?, seal_format = ? \
                 WHERE host_id = ? AND seal_format = ?",
            )
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(sealed.format.as_i64())
            .bind(host.to_string())
            .bind(SealFormat::Unbound.as_i64())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if replaced != 1 {
                tx.rollback().await.map_err(backend)?;
                return Err(StoreError::Conflict(format!(
                    "the repository settings of host `{host}` are no longer stored unbound"
                )));
            }
        }
        upsert_sealing_key(&mut tx, record).await?;
        tx.commit().await.map_err(backend)
    }

    async fn reset_sealed_secrets(
        &self,
        record: &SealingKeyRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<HostId>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query("DELETE FROM host_repositories RETURNING host_id")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut hosts = rows
            .iter()
            .map(|row| codec::parsed::<HostId>(row, "host_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        hosts.sort();
        // Policies' repository templates were sealed with the lost key too.
        sqlx::query("UPDATE policies SET repository_nonce = NULL, repository_ciphertext = NULL")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        upsert_sealing_key(&mut tx, record).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(hosts)
    }

    async fn repositories(&self) -> StoreResult<Vec<(HostId, SealedRepository, Option<String>)>> {
        let sql = format!(
            "SELECT host_repositories.host_id AS host_id, refused, {} FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id \
             WHERE hosts.deleted_at IS NULL ORDER BY host_repositories.host_id",
            codec::REPOSITORY_COLUMNS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok((
                    codec::id(row, "host_id")?,
                    codec::repository(row)?,
                    codec::text_opt(row, "refused")?,
                ))
            })
            .collect()
    }

    async fn set_repository_refused(&self, host: HostId, reason: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE host_repositories SET refused = ? WHERE host_id = ?")
            .bind(reason)
            .bind(host.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    // ── jobs ───────────────────────────────────────────────────────────

    /// Inserts the job only if its host exists and is not deleted (one
    /// statement); a deleted host is [`StoreError::NotFound`] like an
    /// unknown one.
    ///
    /// `job.status` must be `queued`, `dispatched` (`dispatched_at` is set to
    /// `created_at`) or `skipped` (`finished_at` is set to `created_at`);
    /// anything else is [`StoreError::Conflict`]. `job.error` is stored as
    /// given. `job.schedule_id` is stored only when it names a schedule of
    /// the job's host; otherwise (e.g. an agent reports an offline run of a
    /// schedule deleted meanwhile) the job is kept with no schedule, exactly
    /// as if the schedule had been deleted after the job was created — check
    /// the returned [`Job`]'s `schedule_id`.
    async fn create_job(&self, job: &NewJob, audit: Option<&NewAuditEntry>) -> StoreResult<Job> {
        let mut tx = self.begin_write().await?;
        let created = insert_job(&mut tx, job).await?;
        write_audit(&mut tx, audit).await?;
        // The job is acknowledged only once the commit (which a full disk
        // fails) succeeded.
        tx.commit().await.map_err(backend)?;
        Ok(created)
    }

    async fn create_jobs(&self, jobs: &[NewJob]) -> StoreResult<Vec<Job>> {
        let mut tx = self.begin_write().await?;
        let mut created = Vec::with_capacity(jobs.len());
        for job in jobs {
            created.push(insert_job(&mut tx, job).await?);
        }
        tx.commit().await.map_err(backend)?;
        Ok(created)
    }

    async fn create_batch_jobs(
        &self,
        batch: BatchId,
        max_parallel: u32,
        jobs: &[NewJob],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<Job>> {
        self.create_batch_jobs_impl(batch, max_parallel, jobs, audit)
            .await
    }

    async fn create_job_once(&self, job: &NewJob, fire_key: &str) -> StoreResult<(Job, bool)> {
        self.create_job_once_impl(job, fire_key).await
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let sql = format!("SELECT {} FROM jobs WHERE id = ?", codec::JOB_COLUMNS);
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::job)
            .transpose()
    }

    /// Ordered by `created_at DESC, id DESC`. `before` pages by that same
    /// key: jobs strictly after job `before` in this order (when `before` is
    /// not stored, its ULID timestamp stands in for its `created_at`).
    /// `limit` 0 means 50; larger values are capped at 1000.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let mut sql = format!("SELECT {} FROM jobs WHERE 1 = 1", codec::JOB_COLUMNS);
        if filter.host_id.is_some() {
            sql.push_str(" AND host_id = ?");
        }
        if filter.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if let Some(scope) = &filter.scope {
            // The hosts' labels decide, so a job follows its host into or
            // out of a scope when the host's labels change.
            sql.push_str(&format!(
                " AND host_id IN (SELECT hosts.id FROM hosts WHERE 1 = 1{})",
                selector_sql(scope)
            ));
        }
        if filter.before.is_some() {
            sql.push_str(
                " AND (created_at, id) < \
                 (COALESCE((SELECT created_at FROM jobs WHERE id = ?), ?), ?)",
            );
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");

        let limit = match filter.limit {
            0 => DEFAULT_JOB_PAGE,
            n => n.min(MAX_JOB_PAGE),
        };
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(host) = filter.host_id {
            query = query.bind(host.to_string());
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(scope) = &filter.scope {
            query = bind_selector(query, scope);
        }
        if let Some(before) = filter.before {
            let before_id = before.to_string();
            // ULID milliseconds fit in 48 bits, so always in i64.
            let before_ms = i64::try_from(before.0.timestamp_ms()).unwrap_or(i64::MAX);
            query = query
                .bind(before_id.clone())
                .bind(before_ms)
                .bind(before_id);
        }
        query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::job)
            .collect()
    }

    /// In creation order.
    async fn active_jobs(&self, host: HostId) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE host_id = ? AND status IN (?, ?) \
             ORDER BY created_at, id",
            codec::JOB_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(host.to_string())
            .bind(JobStatus::Dispatched.as_str())
            .bind(JobStatus::Running.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::job)
            .collect()
    }

    /// One query, so the "nothing active" check and the pick see the same
    /// snapshot of the database.
    async fn next_dispatchable_job(&self, host: HostId) -> StoreResult<Option<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE host_id = ? AND status = ? \
             AND NOT EXISTS (SELECT 1 FROM jobs AS active \
                             WHERE active.host_id = ? AND active.status IN (?, ?)) \
             ORDER BY created_at, id LIMIT 1",
            codec::JOB_COLUMNS
        );
        let host_id = host.to_string();
        sqlx::query(AssertSqlSafe(sql))
            .bind(&host_id)
            .bind(JobStatus::Queued.as_str())
            .bind(&host_id)
            .bind(JobStatus::Dispatched.as_str())
            .bind(JobStatus::Running.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::job)
            .transpose()
    }

    /// Deleted hosts are left out; ordered by host id (enrolment order).
    async fn hosts_with_active_jobs(&self) -> StoreResult<Vec<HostId>> {
        sqlx::query(
            "SELECT DISTINCT jobs.host_id AS host_id FROM jobs \
             JOIN hosts ON hosts.id = jobs.host_id \
             WHERE jobs.status IN (?, ?) AND hosts.deleted_at IS NULL \
             ORDER BY jobs.host_id",
        )
        .bind(JobStatus::Dispatched.as_str())
        .bind(JobStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| codec::id(row, "host_id"))
        .collect()
    }

    async fn hosts_with_queued_jobs(&self) -> StoreResult<Vec<HostId>> {
        sqlx::query(
            "SELECT DISTINCT jobs.host_id AS host_id FROM jobs \
             JOIN hosts ON hosts.id = jobs.host_id \
             WHERE jobs.status = ? AND hosts.deleted_at IS NULL \
             ORDER BY jobs.host_id",
        )
        .bind(JobStatus::Queued.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| codec::id(row, "host_id"))
        .collect()
    }

    /// Only `to` = [`JobStatus::Dispatched`] (sets `dispatched_at`) or
    /// [`JobStatus::Running`] (sets `started_at`); any other `to` is a
    /// caller bug and fails with [`StoreError::Conflict`] (finished statuses
    /// go through `finish_job`). An unknown job is `Ok(false)`.
    async fn advance_job(&self, id: JobId, to: JobStatus, at: DateTime<Utc>) -> StoreResult<bool> {
        // Back to `queued` (the agent was busy) clears the dispatch time.
        let (column, value) = match to {
            JobStatus::Queued => ("dispatched_at", None),
            JobStatus::Dispatched => ("dispatched_at", Some(ms(at))),
            JobStatus::Running => ("started_at", Some(ms(at))),
            other => {
                return Err(StoreError::Conflict(format!(
                    "advance_job cannot move a job to `{other}`: it only moves jobs to \
                     queued, dispatched or running; use finish_job to end a job"
                )))
            }
        };
        let sources = JobStatus::sources_of(to);
        let sql = format!(
            "UPDATE jobs SET status = ?, {column} = ? WHERE id = ? AND status IN ({})",
            placeholders(sources.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(value)
            .bind(id.to_string());
        for source in sources {
            query = query.bind(source.as_str());
        }
        let mut tx = self.begin_write().await?;
        let moved = query
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(moved == 1)
    }

    /// `end.status` must be a finished status, else [`StoreError::Conflict`].
    /// The job moves only from a status that may become `end.status`
    /// ([`JobStatus::sources_of`]), so a job that already ended keeps its
    /// first outcome, and an unknown job is `Ok(false)`. For a `backup` job
    /// the host's `last_backup_at` / `last_backup_status` are set in the same
    /// transaction — unless the host already records a later backup (a late
    /// report of an older run does not hide a newer one).
    async fn finish_job(
        &self,
        id: JobId,
        end: &JobEnd,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        if !end.status.is_finished() {
            return Err(StoreError::Conflict(format!(
                "finish_job needs a finished status, not `{}`",
                end.status
            )));
        }
        let sources = JobStatus::sources_of(end.status);
        // An active job may finish; so may one the server failed
        // provisionally, when the agent's own end (never another verdict)
        // arrives after all.
        let sql = format!(
            "UPDATE jobs SET status = ?, exit_code = ?, stats = ?, error = ?, finished_at = ?, \
             end_provisional = ? \
             WHERE id = ? AND (status IN ({}) OR (end_provisional = 1 AND ? = 0)) \
             RETURNING host_id, kind",
            placeholders(sources.len())
        );
        let finished_ms = ms(end.finished_at);
        let mut tx = self.begin_write().await?;
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(end.status.as_str())
            .bind(end.exit_code)
            .bind(codec::json_value_to_opt(&end.stats))
            .bind(&end.error)
            .bind(finished_ms)
            .bind(end.provisional)
            .bind(id.to_string());
        for source in sources {
            query = query.bind(source.as_str());
        }
        query = query.bind(end.provisional);
        let Some(row) = query.fetch_optional(&mut *tx).await.map_err(backend)? else {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        };
        if codec::text(&row, "kind")? == BACKUP_KIND {
            sqlx::query(
                "UPDATE hosts SET last_backup_at = ?, last_backup_status = ? \
                 WHERE id = ? AND (last_backup_at IS NULL OR last_backup_at <= ?)",
            )
            .bind(finished_ms)
            .bind(end.status.as_str())
            .bind(codec::text(&row, "host_id")?)
            .bind(finished_ms)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if matches!(end.status, JobStatus::Succeeded | JobStatus::Partial) {
                sqlx::query(
                    "UPDATE hosts SET last_backup_success_at = ? WHERE id = ? \
                     AND (last_backup_success_at IS NULL OR last_backup_success_at <= ?)",
                )
                .bind(finished_ms)
                .bind(codec::text(&row, "host_id")?)
                .bind(finished_ms)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    /// One `BEGIN IMMEDIATE` transaction for the whole slice, with
    /// multi-row `INSERT OR IGNORE` statements (idempotent on
    /// `(job_id, seq)`); returns how many lines were new.
    ///
    /// Lines of unknown jobs are skipped, not an error, so they cannot cost
    /// the other jobs' lines (the server's log writer batches many agents'
    /// lines together and retries failed batches): the known jobs are looked
    /// up first in the same transaction, only their lines are stored and
    /// counted, and the unknown job ids are logged (`warn`). A `seq` above
    /// `i64::MAX` fails the whole call with [`StoreError::Conflict`] before
    /// anything is written.
    async fn append_logs(&self, lines: &[LogLineRecord]) -> StoreResult<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        // Distinct job ids as stored (few per batch; usually one).
        let mut job_ids: Vec<(JobId, String)> = Vec::new();
        let mut line_job: Vec<usize> = Vec::with_capacity(lines.len());
        let mut seqs: Vec<i64> = Vec::with_capacity(lines.len());
        for line in lines {
            seqs.push(u64_to_i64(line.seq, "log line seq")?);
            let index = match job_ids.iter().rposition(|(id, _)| *id == line.job_id) {
                Some(i) => i,
                None => {
                    job_ids.push((line.job_id, line.job_id.to_string()));
                    job_ids.len() - 1
                }
            };
            line_job.push(index);
        }

        let mut tx = self.begin_write().await?;
        let wanted =
            serde_json::Value::from(job_ids.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>())
                .to_string();
        let known: Vec<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
                .bind(wanted)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let is_known: Vec<bool> = job_ids.iter().map(|(_, s)| known.contains(s)).collect();
        if known.len() < job_ids.len() {
            let unknown: Vec<&str> = job_ids
                .iter()
                .zip(&is_known)
                .filter(|(_, known)| !**known)
                .map(|((_, s), _)| s.as_str())
                .collect();
            let skipped = line_job.iter().filter(|&&i| !is_known[i]).count();
            tracing::warn!(
                unknown_jobs = ?unknown,
                skipped,
                "dropping log lines of unknown jobs"
            );
        }

        let rows: Vec<LogRow<'_>> = lines
            .iter()
            .zip(&line_job)
            .zip(&seqs)
            .filter(|((_, &job), _)| is_known[job])
            .map(|((line, &job), &seq)| LogRow {
                job_id: &job_ids[job].1,
                seq,
                ts: ms(line.ts),
                stream: &line.stream,
                text: &line.text,
            })
            .collect();
        if rows.is_empty() {
            tx.rollback().await.map_err(backend)?;
            return Ok(0);
        }
        let inserted = insert_log_rows(&mut tx, &rows).await?;
        tx.commit().await.map_err(backend)?;
        Ok(inserted)
    }

    /// `limit` is clamped to 1..=10000. An unknown job has no lines.
    async fn logs(
        &self,
        job: JobId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<LogLineRecord>> {
        // No stored seq exceeds i64::MAX, so nothing comes after such a seq.
        let Ok(after) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {} FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            codec::LOG_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(job.to_string())
            .bind(after)
            .bind(i64::from(limit.clamp(1, MAX_LOG_PAGE)))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::log_line)
            .collect()
    }

    /// [`StoreError::NotFound`] for an unknown job.
    async fn record_command_result(&self, result: &CommandResultRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO command_results (job_id, accepted, reason, message, received_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (job_id) DO UPDATE SET accepted = excluded.accepted, \
             reason = excluded.reason, message = excluded.message, \
             received_at = excluded.received_at",
        )
        .bind(result.job_id.to_string())
        .bind(result.accepted)
        .bind(&result.reason)
        .bind(&result.message)
        .bind(ms(result.received_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("command result of job `{}`", result.job_id),
                &format!("job `{}`", result.job_id),
            )
        })?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn command_result(&self, job: JobId) -> StoreResult<Option<CommandResultRecord>> {
        self.row_by(
            "command_results",
            "job_id",
            codec::COMMAND_RESULT_COLUMNS,
            job.to_string(),
            codec::command_result,
        )
        .await
    }

    // ── repository contents ────────────────────────────────────────────

    /// [`StoreError::NotFound`] for an unknown or deleted host; a snapshot id
    /// listed twice is a [`StoreError::Conflict`] (nothing is replaced).
    async fn replace_snapshots(
        &self,
        host: HostId,
        snapshots: &[SnapshotRecord],
    ) -> StoreResult<()> {
        let host_id = host.to_string();
        let sizes = snapshots
            .iter()
            .map(|s| {
                Ok((
                    u64_opt_to_i64(s.size_bytes, "snapshot size_bytes")?,
                    u64_opt_to_i64(s.file_count, "snapshot file_count")?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        sqlx::query("DELETE FROM snapshots WHERE host_id = ?")
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE hosts SET snapshot_count = ? WHERE id = ?")
            .bind(u64_to_i64(snapshots.len() as u64, "snapshot count")?)
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        for (snapshot, (size_bytes, file_count)) in snapshots.iter().zip(sizes) {
            sqlx::query(
                "INSERT INTO snapshots \
                 (host_id, id, short_id, time, hostname, paths, tags, size_bytes, file_count) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&host_id)
            .bind(&snapshot.id)
            .bind(&snapshot.short_id)
            .bind(ms(snapshot.time))
            .bind(&snapshot.hostname)
            .bind(codec::json_strings(&snapshot.paths))
            .bind(codec::json_strings(&snapshot.tags))
            .bind(size_bytes)
            .bind(file_count)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                insert_error(
                    e,
                    || format!("snapshot `{}` is listed twice", snapshot.id),
                    &format!("host `{host_id}`"),
                )
            })?;
        }
        tx.commit().await.map_err(backend)
    }

    /// [`StoreError::NotFound`] for an unknown or deleted host.
    async fn add_snapshot(&self, host: HostId, snapshot: &SnapshotRecord) -> StoreResult<()> {
        let host_id = host.to_string();
        let size_bytes = u64_opt_to_i64(snapshot.size_bytes, "snapshot size_bytes")?;
        let file_count = u64_opt_to_i64(snapshot.file_count, "snapshot file_count")?;
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        sqlx::query(
            "INSERT INTO snapshots \
             (host_id, id, short_id, time, hostname, paths, tags, size_bytes, file_count) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (host_id, id) DO UPDATE SET short_id = excluded.short_id, \
             time = excluded.time, hostname = excluded.hostname, paths = excluded.paths, \
             tags = excluded.tags, size_bytes = excluded.size_bytes, \
             file_count = excluded.file_count",
        )
        .bind(&host_id)
        .bind(&snapshot.id)
        .bind(&snapshot.short_id)
        .bind(ms(snapshot.time))
        .bind(&snapshot.hostname)
        .bind(codec::json_strings(&snapshot.paths))
        .bind(codec::json_strings(&snapshot.tags))
        .bind(size_bytes)
        .bind(file_count)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "UPDATE hosts SET snapshot_count = \
             (SELECT COUNT(*) FROM snapshots WHERE host_id = ?) WHERE id = ?",
        )
        .bind(&host_id)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Newest first (`time DESC`, then id).
    async fn snapshots(&self, host: HostId) -> StoreResult<Vec<SnapshotRecord>> {
        let sql = format!(
            "SELECT {} FROM snapshots WHERE host_id = ? ORDER BY time DESC, id DESC",
            codec::SNAPSHOT_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(host.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::snapshot)
            .collect()
    }

    /// Sets the host's `repo_size_bytes` to `raw_size_bytes` when that is
    /// known (otherwise keeps the previous size). [`StoreError::NotFound`]
    /// for an unknown or deleted host.
    async fn add_repo_stats(&self, host: HostId, stats: &RepoStatsRecord) -> StoreResult<()> {
        let host_id = host.to_string();
        let total = u64_opt_to_i64(stats.total_size_bytes, "total_size_bytes")?;
        let raw = u64_opt_to_i64(stats.raw_size_bytes, "raw_size_bytes")?;
        let files = u64_opt_to_i64(stats.unique_files, "unique_files")?;
        let count = u64_opt_to_i64(stats.snapshot_count, "snapshot_count")?;
        let freed = u64_opt_to_i64(stats.last_prune_freed_bytes, "last_prune_freed_bytes")?;

        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE hosts SET repo_size_bytes = COALESCE(?, repo_size_bytes) \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(raw)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if updated != 1 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("host `{host_id}`")));
        }
        sqlx::query(
            "INSERT INTO repo_stats (host_id, recorded_at, total_size_bytes, raw_size_bytes, \
             unique_files, snapshot_count, last_check_at, last_check_status, lock_present, \
             last_prune_at, last_prune_freed_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&host_id)
        .bind(ms(stats.recorded_at))
        .bind(total)
        .bind(raw)
        .bind(files)
        .bind(count)
        .bind(ms_opt(stats.last_check_at))
        .bind(&stats.last_check_status)
        .bind(stats.lock_present)
        .bind(ms_opt(stats.last_prune_at))
        .bind(freed)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Newest first (`recorded_at DESC`, then insertion order reversed);
    /// `limit` is clamped to 1..=1000.
    async fn repo_stats(&self, host: HostId, limit: u32) -> StoreResult<Vec<RepoStatsRecord>> {
        let sql = format!(
            "SELECT {} FROM repo_stats WHERE host_id = ? \
             ORDER BY recorded_at DESC, rowid DESC LIMIT ?",
            codec::REPO_STATS_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(host.to_string())
            .bind(i64::from(limit.clamp(1, MAX_REPO_STATS_PAGE)))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::repo_stats)
            .collect()
    }

    // ── schedules ──────────────────────────────────────────────────────

    /// Bumps the version first (which also finds the host), then inserts;
    /// a duplicate schedule id is [`StoreError::Conflict`].
    async fn create_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let host_id = schedule.host_id.to_string();
        let mut tx = self.begin_write().await?;
        let version = bump_schedule_version(&mut tx, &host_id).await?;
        sqlx::query(
            "INSERT INTO schedules (id, host_id, kind, cron, timezone, params, enabled, \
             jitter_seconds, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(schedule.id.to_string())
        .bind(&host_id)
        .bind(&schedule.kind)
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(schedule.params.to_string())
        .bind(schedule.enabled)
        .bind(i64::from(schedule.jitter_seconds))
        .bind(ms(schedule.created_at))
        .bind(ms(schedule.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("schedule `{}` already exists", schedule.id),
                &format!("host `{host_id}`"),
            )
        })?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(version)
    }

    /// Changes kind, cron, timezone, params, enabled, jitter and
    /// `updated_at`; `schedule.host_id` and `created_at` are ignored (the
    /// stored ones stay). A schedule of a deleted host is hidden with its
    /// host: [`StoreError::NotFound`].
    async fn update_schedule(
        &self,
        schedule: &ScheduleRecord,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE schedules SET kind = ?, cron = ?, timezone = ?, params = ?, enabled = ?, \
             jitter_seconds = ?, updated_at = ? \
             WHERE id = ? AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL) \
             RETURNING host_id",
        )
        .bind(&schedule.kind)
        .bind(&schedule.cron)
        .bind(&schedule.timezone)
        .bind(schedule.params.to_string())
        .bind(schedule.enabled)
        .bind(i64::from(schedule.jitter_seconds))
        .bind(ms(schedule.updated_at))
        .bind(schedule.id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("schedule `{}`", schedule.id)));
        };
        let host_id = codec::text(&row, "host_id")?;
        let version = bump_schedule_version(&mut tx, &host_id).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(version)
    }

    /// The schedule's jobs stay, with `schedule_id` NULL (`ON DELETE SET
    /// NULL`). A schedule of a deleted host is hidden with its host:
    /// [`StoreError::NotFound`].
    async fn delete_schedule(
        &self,
        id: ScheduleId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<(HostId, u64)> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "DELETE FROM schedules \
             WHERE id = ? AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL) \
             RETURNING host_id",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::NotFound(format!("schedule `{id}`")));
        };
        let host_id: HostId = codec::id(&row, "host_id")?;
        let version = bump_schedule_version(&mut tx, &host_id.to_string()).await?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok((host_id, version))
    }

    /// `None` also for a schedule of a deleted host (hidden with its host).
    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<ScheduleRecord>> {
        let sql = format!(
            "SELECT {} FROM schedules WHERE id = ? \
             AND host_id IN (SELECT id FROM hosts WHERE deleted_at IS NULL)",
            codec::SCHEDULE_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::schedule)
            .transpose()
    }

    /// All reads run in one read transaction, so they see one snapshot of
    /// the database (WAL); hosts in statements of up to
    /// [`SET_HOSTS_PER_QUERY`].
    async fn schedule_sets(
        &self,
        hosts: &[HostId],
    ) -> StoreResult<Vec<(HostId, u64, Vec<ScheduleRecord>)>> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut sets: Vec<(HostId, u64, Vec<ScheduleRecord>)> = Vec::with_capacity(hosts.len());
        let mut index: HashMap<HostId, usize> = HashMap::with_capacity(hosts.len());
        let mut rest = hosts;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(statement_rows(rest.len(), SET_HOSTS_PER_QUERY));
            rest = after;
            let sql = format!(
                "SELECT id, schedule_version FROM hosts \
                 WHERE deleted_at IS NULL AND id IN ({}) ORDER BY id",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                let id: HostId = codec::id(&row, "id")?;
                if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(id) {
                    slot.insert(sets.len());
                    sets.push((id, codec::u64_col(&row, "schedule_version")?, Vec::new()));
                }
            }
            let sql = format!(
                "SELECT {} FROM schedules WHERE host_id IN ({}) ORDER BY created_at, id",
                codec::SCHEDULE_COLUMNS,
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                let schedule = codec::schedule(&row)?;
                if let Some(&at) = index.get(&schedule.host_id) {
                    sets[at].2.push(schedule);
                }
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(sets)
    }

    /// One write transaction, with conditional `UPDATE`s of up to
    /// [`ACKS_PER_UPDATE`] acks each: a version only moves forward, and
    /// never past the version the server issued (an ack of a version above
    /// `schedule_version` is ignored). An unknown or deleted host changes
    /// nothing.
    async fn record_schedule_acks(
        &self,
        acks: &[(HostId, u64)],
    ) -> StoreResult<Vec<(HostId, u64)>> {
        // No issued version exceeds i64::MAX, so such an ack is ignored.
        let mut acks: Vec<(HostId, i64)> = acks
            .iter()
            .filter_map(|(host, version)| Some((*host, i64::try_from(*version).ok()?)))
            .collect();
        acks.sort_unstable();
        acks.dedup();
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let mut recorded = Vec::new();
        let mut tx = self.begin_write().await?;
        let mut rest = acks.as_slice();
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(statement_rows(rest.len(), ACKS_PER_UPDATE));
            rest = after;
            // Of a host's acks, the highest version issued so far counts
            // (as if they were written one by one); a host split over two
            // statements still ends there, as versions only move forward.
            let sql = format!(
                "UPDATE hosts SET schedule_applied_version = acked.version \
                 FROM (SELECT ack.column1 AS id, MAX(ack.column2) AS version \
                       FROM (VALUES {}) AS ack \
                       JOIN hosts AS issued ON issued.id = ack.column1 \
                       AND ack.column2 <= issued.schedule_version \
                       GROUP BY ack.column1) AS acked \
                 WHERE hosts.id = acked.id AND hosts.deleted_at IS NULL \
                 AND acked.version > COALESCE(hosts.schedule_applied_version, -1) \
                 RETURNING hosts.id AS id, hosts.schedule_applied_version AS version",
                vec!["(?, ?)"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (host, version) in chunk {
                query = query.bind(host.to_string()).bind(*version);
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                recorded.push((codec::id(&row, "id")?, codec::u64_col(&row, "version")?));
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(recorded)
    }

    /// In creation order.
    async fn active_jobs_of_schedule(&self, schedule: ScheduleId) -> StoreResult<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE schedule_id = ? AND status IN (?, ?, ?) \
             ORDER BY created_at, id",
            codec::JOB_COLUMNS
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(schedule.to_string())
            .bind(JobStatus::Queued.as_str())
            .bind(JobStatus::Dispatched.as_str())
            .bind(JobStatus::Running.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::job)
            .collect()
    }

    // ── audit log ──────────────────────────────────────────────────────

    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let id = insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    /// Newest first (by id, which is write order). The action filter is a
    /// case-sensitive prefix; the actor filter matches the actor's user id,
    /// user name or token id exactly. `limit` 0 means 50; at most 500.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = format!("SELECT {} FROM audit_log WHERE 1 = 1", codec::AUDIT_COLUMNS);
        if filter.action_prefix.is_some() {
            // substr rather than LIKE: exact and case-sensitive, and `_` in
            // action names needs no escaping.
            sql.push_str(" AND substr(action, 1, length(?)) = ?");
        }
        if filter.actor.is_some() {
            sql.push_str(" AND (actor_user_id = ? OR actor_username = ? OR actor_token_id = ?)");
        }
        if filter.target_id.is_some() {
            sql.push_str(" AND target_id = ?");
        }
        if filter.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let limit = match filter.limit {
            0 => DEFAULT_AUDIT_PAGE,
            n => n.min(MAX_AUDIT_PAGE),
        };
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(prefix) = &filter.action_prefix {
            query = query.bind(prefix).bind(prefix);
        }
        if let Some(actor) = &filter.actor {
            query = query.bind(actor).bind(actor).bind(actor);
        }
        if let Some(target) = &filter.target_id {
            query = query.bind(target);
        }
        if let Some(before) = filter.before {
            // Ids never exceed i64::MAX, so a larger cursor is "before everything".
            query = query.bind(i64::try_from(before).unwrap_or(i64::MAX));
        }
        query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::audit_entry)
            .collect()
    }

    // ── agent token rotation and revocation (see `agent_tokens`) ───────

    async fn begin_token_rotation(
        &self,
        token: &AgentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        self.begin_token_rotation_impl(token, audit).await
    }

    async fn promote_agent_token(
        &self,
        host: HostId,
        id: TokenId,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.promote_agent_token_impl(host, id, at).await
    }

    async fn pending_agent_token(&self, host: HostId) -> StoreResult<Option<AgentToken>> {
        self.pending_agent_token_impl(host).await
    }

    async fn revoke_agent_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
        self.revoke_agent_token_impl(id, at).await
    }

    async fn revoke_agent(
        &self,
        host: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.revoke_agent_impl(host, at, audit).await
    }
}
