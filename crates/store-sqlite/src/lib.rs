//! The SQLite implementation of the restic-manager [`Store`].
//!
//! [`SqliteStore::open`] connects to a database URL (`sqlite:///abs/path.db`,
//! `sqlite://relative.db` or `sqlite::memory:`), configures the connection
//! (WAL, `synchronous=NORMAL`, foreign keys, 5 s busy timeout) and applies
//! the embedded migrations from `migrations/`.
//!
//! Ids are stored as ULID strings, timestamps as INTEGER unix milliseconds
//! (so values read back are truncated to whole milliseconds), token hashes
//! as lower-case hex. Every multi-statement operation runs in one
//! `BEGIN IMMEDIATE` transaction, which takes SQLite's single writer lock up
//! front; races such as two enrolments with one token are decided by
//! conditional `UPDATE`s inside those transactions.

mod codec;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, TokenId, UserId};
use rm_store::{
    AgentToken, ApiToken, EnrollmentToken, HelloRecord, Host, NewHost, Session, Store, StoreError,
    StoreResult, User,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::codec::{backend, ms, ms_opt};

/// The embedded schema migrations (`crates/store-sqlite/migrations`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for SQLite's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool of a file-backed database.
const FILE_POOL_SIZE: u32 = 8;

/// The statement that opens every write transaction: takes the writer lock
/// immediately, so a transaction never has to upgrade from reading.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A [`Store`] backed by one SQLite database. Cheap to clone (it shares the
/// pool).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
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
        Ok(SqliteStore { pool })
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

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with(BEGIN_WRITE).await.map_err(backend)
    }
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

#[async_trait]
impl Store for SqliteStore {
    // ── operators ──────────────────────────────────────────────────────

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(ms(user.created_at))
        .execute(&self.pool)
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
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE username = ?",
            codec::USER_COLUMNS
        );
        sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::user)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE id = ?", codec::USER_COLUMNS);
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::user)
            .transpose()
    }

    async fn set_user_password(&self, username: &str, password_hash: &str) -> StoreResult<()> {
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
        tx.commit().await.map_err(backend)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        codec::count(&row, "n")
    }

    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(session.token_hash.to_hex())
        .bind(ms(session.created_at))
        .bind(ms(session.expires_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("session `{}` already exists", session.id),
                &format!("user `{}`", session.user_id),
            )
        })?;
        Ok(())
    }

    async fn session(&self, id: TokenId) -> StoreResult<Option<Session>> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE id = ?",
            codec::SESSION_COLUMNS
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::session)
            .transpose()
    }

    async fn delete_session(&self, id: TokenId) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(ms(now))
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        Ok(deleted)
    }

    async fn create_api_token(&self, token: &ApiToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_tokens \
             (id, user_id, name, token_hash, created_at, expires_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(token.user_id.to_string())
        .bind(&token.name)
        .bind(token.token_hash.to_hex())
        .bind(ms(token.created_at))
        .bind(ms_opt(token.expires_at))
        .bind(ms_opt(token.revoked_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("API token `{}` already exists", token.id),
                &format!("user `{}`", token.user_id),
            )
        })?;
        Ok(())
    }

    async fn api_token(&self, id: TokenId) -> StoreResult<Option<ApiToken>> {
        let sql = format!(
            "SELECT {} FROM api_tokens WHERE id = ?",
            codec::API_TOKEN_COLUMNS
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::api_token)
            .transpose()
    }

    // ── enrolment ──────────────────────────────────────────────────────

    async fn create_enrollment_token(&self, token: &EnrollmentToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens \
             (id, name, token_hash, created_at, expires_at, used_at, host_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.to_string())
        .bind(&token.name)
        .bind(token.token_hash.to_hex())
        .bind(ms(token.created_at))
        .bind(ms(token.expires_at))
        .bind(ms_opt(token.used_at))
        .bind(token.host_id.map(|h| h.to_string()))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("enrolment token `{}` already exists", token.id),
                "host",
            )
        })?;
        Ok(())
    }

    async fn enrollment_token(&self, id: TokenId) -> StoreResult<Option<EnrollmentToken>> {
        let sql = format!(
            "SELECT {} FROM enrollment_tokens WHERE id = ?",
            codec::ENROLLMENT_TOKEN_COLUMNS
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::enrollment_token)
            .transpose()
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
        sqlx::query(&sql)
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

        sqlx::query(
            "INSERT INTO hosts (id, name, hostname, enrolled_at, online) VALUES (?, ?, ?, ?, 0)",
        )
        .bind(&host_id)
        .bind(&host.name)
        .bind(&host.hostname)
        .bind(now_ms)
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
        let row = sqlx::query(&sql)
            .bind(&host_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let stored = codec::host(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    // ── hosts ──────────────────────────────────────────────────────────

    async fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL ORDER BY enrolled_at, id",
            codec::HOST_COLUMNS
        );
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(codec::host)
            .collect()
    }

    async fn host(&self, id: HostId) -> StoreResult<Option<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE id = ? AND deleted_at IS NULL",
            codec::HOST_COLUMNS
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::host)
            .transpose()
    }

    async fn active_agent_token(&self, id: TokenId) -> StoreResult<Option<AgentToken>> {
        let sql = format!(
            "SELECT {} FROM agent_tokens JOIN hosts ON hosts.id = agent_tokens.host_id \
             WHERE agent_tokens.id = ? AND agent_tokens.revoked_at IS NULL \
             AND hosts.deleted_at IS NULL",
            codec::AGENT_TOKEN_COLUMNS
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(codec::agent_token)
            .transpose()
    }

    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE hosts SET connection_id = ?, online = 1, \
             last_seen_at = MAX(COALESCE(last_seen_at, 0), ?), \
             agent_version = ?, restic_version = ?, restic_error = ?, protocol_version = ?, \
             hostname = ?, os = ?, arch = ? \
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
        .bind(host_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("host `{host_id}`")))
        }
    }

    async fn touch_hosts(&self, seen: &[(HostId, DateTime<Utc>)]) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (host_id, at) in seen {
            // Same SQL text each time: sqlx reuses the prepared statement.
            sqlx::query(
                "UPDATE hosts SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?) WHERE id = ?",
            )
            .bind(ms(*at))
            .bind(host_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn mark_host_offline(
        &self,
        host_id: HostId,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE hosts SET online = 0, last_seen_at = MAX(COALESCE(last_seen_at, 0), ?) \
             WHERE id = ? AND connection_id = ? AND online = 1",
        )
        .bind(ms(at))
        .bind(host_id.to_string())
        .bind(connection_id)
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn mark_all_hosts_offline(&self) -> StoreResult<u64> {
        let updated = sqlx::query("UPDATE hosts SET online = 0 WHERE online = 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected();
        Ok(updated)
    }

    async fn delete_host(&self, id: HostId, at: DateTime<Utc>) -> StoreResult<bool> {
        let host_id = id.to_string();
        let at_ms = ms(at);
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "UPDATE hosts SET deleted_at = ?, online = 0 WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(at_ms)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if deleted != 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE agent_tokens SET revoked_at = ? WHERE host_id = ? AND revoked_at IS NULL",
        )
        .bind(at_ms)
        .bind(&host_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}
