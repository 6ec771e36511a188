//! What several aggregates of the PostgreSQL store share: the host column
//! list and host reads (with `repository_shared_with` counted once per
//! repository), the label selector, audit entries written in the caller's
//! transaction, the mapping of a failed INSERT, and the one way a
//! transaction ends ([`finish`]).

use std::collections::{BTreeSet, HashMap};

use rm_core::Selector;
use rm_store::{Host, NewAuditEntry, StoreError, StoreResult};
use rm_store_sql::encode::ms;
use rm_store_sql::{encode, HostRow};
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `$n` placeholders; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::PostgresStore;

/// Columns selected for a [`Host`] (from `hosts`, unaliased: the
/// subqueries refer to `hosts.id`), with the aliases of
/// [`rm_store_sql::HostRow`]. Not `repository_shared_with`: rows read with
/// these go through [`fill_shared`], which counts once per repository.
pub(crate) const HOST_COLUMNS: &str = "id, name, hostname, enrolled_at, last_seen_at, online, \
     agent_version, restic_version, restic_error, protocol_version, os, arch, \
     last_backup_at, last_backup_status, last_backup_success_at, repo_size_bytes, snapshot_count, \
     schedule_version, schedule_applied_version, \
     EXISTS (SELECT 1 FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS has_repository, \
     (SELECT refused FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS repository_refused, \
     token_rotated_at, agent_revoked_at, hooks, hooks_refused, \
     EXISTS (SELECT 1 FROM agent_tokens WHERE agent_tokens.host_id = hosts.id \
     AND agent_tokens.pending AND agent_tokens.revoked_at IS NULL) AS token_rotation_pending, \
     labels, freshness_seconds, offline_seconds, policy_id, \
     (SELECT policy_id FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS repository_policy_id, \
     (SELECT repository_key FROM host_repositories WHERE host_repositories.host_id = hosts.id) \
     AS repository_key, \
     EXISTS (SELECT 1 FROM schedules WHERE schedules.host_id = hosts.id) AS has_schedules, \
     platform, upgrade_requested_version, upgrade_requested_at, upgrade_state, upgrade_version, \
     upgrade_error, upgrade_at";

/// The condition on a `hosts` row matching `selector`, whose JSON object
/// (or NULL for the empty selector, which matches every host) is bound as
/// parameter `$n`: containment of `{"k": "v", …}` in the host's labels is
/// "every pair equal", as label values are strings. One parameter whatever
/// the selector's size, so placeholders after it keep their numbers.
pub(crate) fn selector_sql(n: usize) -> String {
    format!("(${n}::TEXT IS NULL OR hosts.labels::jsonb @> ${n}::jsonb)")
}

/// The parameter of [`selector_sql`].
pub(crate) fn selector_param(selector: &Selector) -> Option<String> {
    (!selector.0.as_map().is_empty()).then(|| encode::labels_json(&selector.0))
}

/// Maps an INSERT failure: duplicates become [`StoreError::Conflict`], a
/// missing referenced row [`StoreError::NotFound`].
pub(crate) fn insert_error(
    e: sqlx::Error,
    duplicate: impl FnOnce() -> String,
    missing: &str,
) -> StoreError {
    if codec::is_unique_violation(&e) {
        StoreError::Conflict(duplicate())
    } else if codec::is_foreign_key_violation(&e) {
        StoreError::NotFound(missing.to_owned())
    } else {
        backend(e)
    }
}

/// Maps a failed call on a connection already held (inside a
/// transaction, or by the generic fetch helpers): a column the driver
/// could not decode is [`StoreError::Corrupt`] naming it, the rest as
/// [`codec::backend`]. Calls on the pool itself map with
/// [`PostgresStore::error`], which also tells a server that cannot be
/// reached from a busy pool.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    rm_store_sql::column_decode_error(&e).unwrap_or_else(|| backend(e))
}

/// Appends `entry` to the audit log inside the caller's transaction;
/// returns its id.
pub(crate) async fn insert_audit(
    conn: &mut PgConnection,
    entry: &NewAuditEntry,
) -> StoreResult<u64> {
    let actor = &entry.actor;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor_kind, actor_user_id, actor_username, \
         actor_token_id, actor_token_name, action, target_type, target_id, details, ip, \
         user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
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
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    u64::try_from(id).map_err(|_| StoreError::Corrupt(format!("column `id`: {id} is negative")))
}

/// Writes a change's audit entry, when it has one, inside the change's
/// transaction: called last, just before `COMMIT`, once the change is
/// known to happen.
pub(crate) async fn write_audit(
    conn: &mut PgConnection,
    audit: Option<&NewAuditEntry>,
) -> StoreResult<()> {
    if let Some(entry) = audit {
        insert_audit(conn, entry).await?;
    }
    Ok(())
}

/// Fails with [`StoreError::NotFound`] unless `host` exists and is not
/// deleted, locking its row (`FOR SHARE`) until the caller's transaction
/// ends, so a concurrent deletion cannot slip in between.
pub(crate) async fn require_live_host(conn: &mut PgConnection, host: &str) -> StoreResult<()> {
    let found = sqlx::query("SELECT 1 FROM hosts WHERE id = $1 AND deleted_at IS NULL FOR SHARE")
        .bind(host)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("host `{host}`"))),
    }
}

/// Runs `query` and converts every row it returns into its model.
pub(crate) async fn fetch_all_models<'q, 'c, E, R, T>(
    executor: E,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, R, PgArguments>,
) -> StoreResult<Vec<T>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    T: TryFrom<R, Error = StoreError>,
{
    query
        .fetch_all(executor)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(T::try_from)
        .collect()
}

/// [`fetch_all_models`] of a query that finds at most one row.
pub(crate) async fn fetch_optional_model<'q, 'c, E, R, T>(
    executor: E,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, R, PgArguments>,
) -> StoreResult<Option<T>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    T: TryFrom<R, Error = StoreError>,
{
    query
        .fetch_optional(executor)
        .await
        .map_err(db_error)?
        .map(T::try_from)
        .transpose()
}

impl PostgresStore {
    /// The row of `table` whose `key` column equals `value`, read as `R`
    /// and converted into `T`.
    pub(crate) async fn row_by<R, T>(
        &self,
        table: &str,
        key: &str,
        columns: &str,
        value: String,
    ) -> StoreResult<Option<T>>
    where
        R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
        T: TryFrom<R, Error = StoreError>,
    {
        let sql = format!("SELECT {columns} FROM {table} WHERE {key} = $1");
        fetch_optional_model(
            &self.pool,
            sqlx::query_as::<_, R>(AssertSqlSafe(sql)).bind(value),
        )
        .await
    }
}

/// Runs a query selecting [`HOST_COLUMNS`] of live hosts and returns them
/// decoded, with `repository_shared_with` filled in on the same
/// connection.
pub(crate) async fn read_hosts<'q>(
    pool: &PgPool,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, HostRow, PgArguments>,
) -> StoreResult<Vec<Host>> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    let mut hosts = query
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(Host::try_from)
        .collect::<StoreResult<Vec<Host>>>()?;
    fill_shared(&mut conn, &mut hosts).await?;
    Ok(hosts)
}

/// Host `id` read on `conn` (so inside the caller's transaction, when it
/// holds one) with `repository_shared_with` filled in; only if it is not
/// deleted when `live`.
pub(crate) async fn read_host(
    conn: &mut PgConnection,
    id: &str,
    live: bool,
) -> StoreResult<Option<Host>> {
    let sql = format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1{}",
        if live { " AND deleted_at IS NULL" } else { "" }
    );
    let row = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut host = [Host::try_from(row)?];
    fill_shared(conn, &mut host).await?;
    let [host] = host;
    Ok(Some(host))
}

/// Fills in `repository_shared_with` of `hosts` (read with
/// [`HOST_COLUMNS`], every one live): one grouped count over the
/// `host_repositories_key` index for all distinct repositories among them.
pub(crate) async fn fill_shared(conn: &mut PgConnection, hosts: &mut [Host]) -> StoreResult<()> {
    let keys: Vec<String> = hosts
        .iter()
        .filter_map(|h| h.repository_key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT theirs.repository_key, COUNT(*) \
         FROM host_repositories AS theirs \
         JOIN hosts AS others ON others.id = theirs.host_id AND others.deleted_at IS NULL \
         WHERE theirs.repository_key = ANY($1) GROUP BY theirs.repository_key",
    )
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let counts: HashMap<String, u64> = rows
        .into_iter()
        .map(|(key, n)| (key, u64::try_from(n).unwrap_or(0)))
        .collect();
    for host in hosts.iter_mut() {
        host.repository_shared_with = host
            .repository_key
            .as_ref()
            .and_then(|key| counts.get(key))
            // The host itself is one of them.
            .map_or(0, |n| n.saturating_sub(1));
    }
    Ok(())
}

/// In one transaction: runs `host_update` (binding the time as `$1`, then
/// the host id as `$2`) on a live host, and revokes every token of its
/// agent. False, changing nothing, when there is no such host. Shared by
/// deleting a host and revoking its agent. The conditional UPDATE decides
/// a race between two of them: the second waits for the first's row lock
/// and then finds the condition false.
pub(crate) async fn retire_agent(
    store: &PostgresStore,
    host_id: &str,
    at_ms: i64,
    host_update: &'static str,
    audit: Option<&NewAuditEntry>,
) -> StoreResult<bool> {
    let mut tx = store.pool.begin().await.map_err(|e| store.error(e))?;
    let result: StoreResult<_> = async {
        let found = sqlx::query(host_update)
            .bind(at_ms)
            .bind(host_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        if found != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE agent_tokens SET revoked_at = $1, pending = FALSE \
         WHERE host_id = $2 AND revoked_at IS NULL",
        )
        .bind(at_ms)
        .bind(host_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        write_audit(&mut tx, audit).await?;
        Ok(true)
    }
    .await;
    finish(tx, result).await
}

/// Stores a host's repository settings inside the caller's transaction:
/// its own (`policy` `None`) or a policy's; a new store clears a refusal.
pub(crate) async fn upsert_repository(
    conn: &mut PgConnection,
    host_id: &str,
    sealed: &rm_store::SealedRepository,
    key: &str,
    policy: Option<rm_core::PolicyId>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO host_repositories (host_id, nonce, ciphertext, seal_format, updated_at, \
         refused, repository_key, policy_id) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7) \
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
    .map_err(db_error)?;
    Ok(())
}

/// Ends a transaction by its body's result: commits on `Ok`, rolls back on
/// `Err`. An early return must not just drop the transaction: sqlx then
/// leaves the rollback to a task it spawns to return the connection to the
/// pool, so the row locks stay held until that task runs, and for good if
/// the runtime stops first (seen as a test's schema drop waiting on a
/// connection left "idle in transaction"). So every transaction of this
/// store ends here or in [`finish_if`].
pub(crate) async fn finish<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    result: StoreResult<T>,
) -> StoreResult<T> {
    finish_if(tx, result, |_| true).await
}

/// [`finish`] for a body whose success may still be discarded: on `Ok` it
/// commits only when `keep` says so and rolls back otherwise, returning the
/// value either way (a job created only to find its fire key taken must
/// not stay; a change that matched no row has nothing to keep). A commit
/// or a discarding rollback that fails is the call's error.
pub(crate) async fn finish_if<T>(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    result: StoreResult<T>,
    keep: impl FnOnce(&T) -> bool,
) -> StoreResult<T> {
    match result {
        Ok(value) if keep(&value) => {
            tx.commit().await.map_err(db_error)?;
            Ok(value)
        }
        Ok(value) => {
            tx.rollback().await.map_err(db_error)?;
            Ok(value)
        }
        Err(e) => {
            // The body's error is the one to report; a rollback that fails
            // too has lost the connection, which ends the transaction.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a failed change failed");
            }
            Err(e)
        }
    }
}
