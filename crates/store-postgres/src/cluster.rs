//! The PostgreSQL side of [`rm_store::ClusterStore`]: servers, agent
//! holders and leases, for several servers on one database. Every race
//! (two servers taking one lease, two sweeping one dead server's hosts) is
//! decided by one conditional statement, which PostgreSQL re-checks on the
//! committed row after waiting for its lock.
//!
//! Messages between the servers ([`rm_store::ClusterBus`]) are PostgreSQL
//! notifications on one channel per schema, published in one statement
//! per batch and received on a connection of the pool kept for listening.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{
    ClusterListener, ClusterMessage, ServerRecord, StoreError, StoreResult, MAX_MESSAGE_BYTES,
};
use rm_store_sql::encode::ms;
use rm_store_sql::{HostIdRow, ServerRow, SERVER_COLUMNS};
use sqlx::postgres::PgListener;
// The SQL text is built from a constant column list; values are bound.
use sqlx::AssertSqlSafe;

use crate::shared::{db_error, fetch_all_models, finish};
use crate::PostgresStore;

#[async_trait]
impl ClusterStore for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    async fn register_server(&self, server: &ServerRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<()> = async {
            sqlx::query(
                "UPDATE servers SET alive_until = LEAST(alive_until, $1) \
                 WHERE internal_url = $2 AND id <> $3",
            )
            .bind(ms(server.started_at))
            .bind(&server.internal_url)
            .bind(&server.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO servers (id, internal_url, started_at, alive_until) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET internal_url = excluded.internal_url, \
                 started_at = excluded.started_at, alive_until = excluded.alive_until",
            )
            .bind(&server.id)
            .bind(&server.internal_url)
            .bind(ms(server.started_at))
            .bind(ms(server.alive_until))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn renew_server(&self, id: &str, alive_until: DateTime<Utc>) -> StoreResult<bool> {
        // A later run with the same internal URL replaced this one: it
        // must not come back to life.
        let updated = sqlx::query(
            "UPDATE servers SET alive_until = GREATEST(alive_until, $1) WHERE id = $2 \
             AND NOT EXISTS (SELECT 1 FROM servers AS later WHERE later.internal_url = \
             servers.internal_url AND later.started_at > servers.started_at)",
        )
        .bind(ms(alive_until))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn unregister_server(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<()> = async {
            sqlx::query("DELETE FROM leases WHERE holder = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            sqlx::query("DELETE FROM servers WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn live_servers(&self, now: DateTime<Utc>) -> StoreResult<Vec<ServerRecord>> {
        let sql =
            format!("SELECT {SERVER_COLUMNS} FROM servers WHERE alive_until > $1 ORDER BY id");
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, ServerRow>(AssertSqlSafe(sql)).bind(ms(now)),
        )
        .await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // ON CONFLICT DO UPDATE locks the existing row and evaluates the
        // WHERE on its latest committed version: of two servers racing,
        // the second sees the first's lease and updates nothing.
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE leases.until <= $4 OR leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(ms(until))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let released = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(released == 1)
    }

    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1 AND until > $2")
            .bind(name)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))
    }

    async fn host_holder(&self, host: HostId) -> StoreResult<Option<String>> {
        let holder: Option<Option<String>> = sqlx::query_scalar(
            "SELECT server_id FROM hosts WHERE id = $1 AND online AND deleted_at IS NULL",
        )
        .bind(host.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(holder.flatten())
    }

    async fn mark_orphaned_hosts_offline(&self, now: DateTime<Utc>) -> StoreResult<Vec<HostId>> {
        // `AND online` is re-checked after the row lock: of two servers
        // sweeping at once, only one returns a host.
        let mut hosts: Vec<HostId> = fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, HostIdRow>(
                "UPDATE hosts SET online = FALSE WHERE online AND (server_id IS NULL \
                 OR server_id NOT IN (SELECT id FROM servers WHERE alive_until > $1)) \
                 RETURNING id AS host_id",
            )
            .bind(ms(now)),
        )
        .await?;
        hosts.sort();
        Ok(hosts)
    }
}

/// PostgreSQL's longest identifier, in bytes (a channel name is one).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The notification channel of the store whose tables are in `schema`:
/// `rm_cluster_<schema>`, cut to an identifier's length (two schemas
/// sharing a 52-byte prefix share a channel, which costs them each other's
/// messages, which name nothing of theirs).
pub(crate) fn channel(schema: Option<&str>) -> String {
    let mut channel = String::from("rm_cluster");
    if let Some(schema) = schema {
        channel.push('_');
        channel.push_str(schema);
    }
    while channel.len() > MAX_IDENTIFIER_BYTES {
        channel.pop();
    }
    channel
}

/// A `LISTEN` on the store's channel, on a connection of its own.
struct NotificationListener {
    listener: PgListener,
    store: PostgresStore,
}

#[async_trait]
impl ClusterListener for NotificationListener {
    async fn next(&mut self) -> StoreResult<ClusterMessage> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => {
                Ok(ClusterMessage::Message(notification.payload().to_owned()))
            }
            // The connection was lost and made again (sqlx listens on the
            // channel again before this returns).
            Ok(None) => Ok(ClusterMessage::Resumed),
            Err(e) => Err(self.store.error(e)),
        }
    }
}

#[async_trait]
impl ClusterBus for PostgresStore {
    async fn publish(&self, messages: &[String]) -> StoreResult<()> {
        if let Some(long) = messages.iter().find(|m| m.len() > MAX_MESSAGE_BYTES) {
            return Err(StoreError::Conflict(format!(
                "a cluster message of {} bytes is longer than {MAX_MESSAGE_BYTES}",
                long.len()
            )));
        }
        if messages.is_empty() {
            return Ok(());
        }
        // One statement, one transaction: delivered together, in order,
        // when it commits.
        sqlx::query(
            "SELECT pg_notify($1, message) FROM UNNEST($2::TEXT[]) WITH ORDINALITY \
             AS m(message, n) ORDER BY n",
        )
        .bind(&self.channel)
        .bind(messages)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn listen(&self) -> StoreResult<Box<dyn ClusterListener>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        // The server stops its listener before closing the pool; a close
        // must not look like a lost connection meanwhile.
        listener.ignore_pool_close_event(true);
        listener
            .listen(&self.channel)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Box::new(NotificationListener {
            listener,
            store: self.clone(),
        }))
    }

    async fn put_reply(&self, id: &str, body: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO cluster_replies (id, body, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(body)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn take_reply(&self, id: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("DELETE FROM cluster_replies WHERE id = $1 RETURNING body")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))
    }

    async fn prune_replies(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM cluster_replies WHERE created_at < $1")
                .bind(ms(before))
                .execute(&self.pool)
                .await
                .map_err(|e| self.error(e))?
                .rows_affected(),
        )
    }
}
