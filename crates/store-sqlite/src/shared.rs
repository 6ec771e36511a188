//! How many other live hosts share each host's repository, counted once per
//! repository for a whole list of hosts rather than once per host row: with
//! 10,000 hosts in one repository, a count per row walked 10,000 index
//! entries for each of them (a page of 100 hosts took seconds, a full list
//! hours).

use std::collections::{BTreeSet, HashMap};

use rm_store::{Host, StoreResult};
use rm_store_sql::HostRow;
// The SQL text is built from a constant and a `?` placeholder count; the
// keys are bound.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::placeholders;

/// Repository keys per `IN (…)` list.
const KEYS_PER_QUERY: usize = 500;

/// Runs a query selecting [`codec::HOST_COLUMNS`] of live hosts and
/// returns them decoded, with `repository_shared_with` filled in on the
/// same connection.
pub(crate) async fn read_hosts<'q>(
    pool: &sqlx::SqlitePool,
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, HostRow, sqlx::sqlite::SqliteArguments>,
) -> StoreResult<Vec<Host>> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    let mut hosts = query
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .into_iter()
        .map(Host::try_from)
        .collect::<StoreResult<Vec<Host>>>()?;
    fill_shared(&mut conn, &mut hosts).await?;
    Ok(hosts)
}

/// Host `id` read on `conn` (so inside the caller's transaction, when
/// it holds one) with `repository_shared_with` filled in; only if it is
/// not deleted when `live`.
pub(crate) async fn read_host(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    live: bool,
) -> StoreResult<Option<Host>> {
    let sql = format!(
        "SELECT {} FROM hosts WHERE id = ?{}",
        codec::HOST_COLUMNS,
        if live { " AND deleted_at IS NULL" } else { "" }
    );
    let row = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut host = [Host::try_from(row)?];
    fill_shared(conn, &mut host).await?;
    let [host] = host;
    Ok(Some(host))
}

/// Fills in `repository_shared_with` of `hosts` (read with
/// [`codec::HOST_COLUMNS`], every one live): one grouped count over the
/// `host_repositories_key` index per distinct repository among them.
pub(crate) async fn fill_shared(
    conn: &mut sqlx::SqliteConnection,
    hosts: &mut [Host],
) -> StoreResult<()> {
    let keys: Vec<&str> = hosts
        .iter()
        .filter_map(|h| h.repository_key.as_deref())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<String, u64> = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let sql = format!(
            "SELECT theirs.repository_key AS repository_key, COUNT(*) AS hosts \
             FROM host_repositories AS theirs \
             JOIN hosts AS others ON others.id = theirs.host_id AND others.deleted_at IS NULL \
             WHERE theirs.repository_key IN ({}) GROUP BY theirs.repository_key",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut *conn).await.map_err(backend)? {
            counts.insert(
                codec::text(&row, "repository_key")?,
                codec::count(&row, "hosts")?,
            );
        }
    }
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
