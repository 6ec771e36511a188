//! The SQLite side of [`rm_store::ClusterStore`]: servers, agent holders
//! and leases. A SQLite database has one server, so nothing here is ever
//! contended in earnest; the tables exist so the contract (and its tests)
//! is one for every store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{
    ClusterListener, ClusterMessage, ServerRecord, StoreError, StoreResult, MAX_MESSAGE_BYTES,
};
use rm_store_sql::encode::ms;
use rm_store_sql::{HostIdRow, ServerRow, SERVER_COLUMNS};
// The SQL text is built from a constant column list; values are bound.
use sqlx::AssertSqlSafe;
use tokio::sync::broadcast;

use crate::codec::backend;
use crate::{fetch_all_models, SqliteStore};

#[async_trait]
impl ClusterStore for SqliteStore {
    fn shared(&self) -> bool {
        false
    }

    async fn register_server(&self, server: &ServerRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE servers SET alive_until = MIN(alive_until, ?) \
             WHERE internal_url = ? AND id <> ?",
        )
        .bind(ms(server.started_at))
        .bind(&server.internal_url)
        .bind(&server.id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO servers (id, internal_url, started_at, alive_until) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET internal_url = excluded.internal_url, \
             started_at = excluded.started_at, alive_until = excluded.alive_until",
        )
        .bind(&server.id)
        .bind(&server.internal_url)
        .bind(ms(server.started_at))
        .bind(ms(server.alive_until))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn renew_server(&self, id: &str, alive_until: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE servers SET alive_until = MAX(alive_until, ?) WHERE id = ? \
             AND NOT EXISTS (SELECT 1 FROM servers AS later WHERE later.internal_url = \
             servers.internal_url AND later.started_at > servers.started_at)",
        )
        .bind(ms(alive_until))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(updated == 1)
    }

    async fn unregister_server(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM leases WHERE holder = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM servers WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn live_servers(&self, now: DateTime<Utc>) -> StoreResult<Vec<ServerRecord>> {
        let sql = format!("SELECT {SERVER_COLUMNS} FROM servers WHERE alive_until > ? ORDER BY id");
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
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE leases.until <= ? OR leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(ms(until))
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let released = sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(released == 1)
    }

    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT holder FROM leases WHERE name = ? AND until > ?")
            .bind(name)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn host_holder(&self, host: HostId) -> StoreResult<Option<String>> {
        let holder: Option<Option<String>> = sqlx::query_scalar(
            "SELECT server_id FROM hosts WHERE id = ? AND online = 1 AND deleted_at IS NULL",
        )
        .bind(host.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(holder.flatten())
    }

    async fn mark_orphaned_hosts_offline(&self, now: DateTime<Utc>) -> StoreResult<Vec<HostId>> {
        let mut tx = self.begin_write().await?;
        let mut hosts: Vec<HostId> = fetch_all_models(
            &mut *tx,
            sqlx::query_as::<_, HostIdRow>(
                "UPDATE hosts SET online = 0 WHERE online = 1 AND (server_id IS NULL \
                 OR server_id NOT IN (SELECT id FROM servers WHERE alive_until > ?)) \
                 RETURNING id AS host_id",
            )
            .bind(ms(now)),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        hosts.sort();
        Ok(hosts)
    }
}

/// Messages a listener may fall behind by before it is told it missed some.
const BUS_BUFFER: usize = 4096;

/// The in-memory channel of a SQLite store's messages.
pub(crate) fn bus() -> broadcast::Sender<String> {
    broadcast::channel(BUS_BUFFER).0
}

/// A listener on the in-memory channel; falling behind is reported as
/// [`ClusterMessage::Resumed`], as a lost connection is on PostgreSQL.
struct MemoryListener(broadcast::Receiver<String>);

#[async_trait]
impl ClusterListener for MemoryListener {
    async fn next(&mut self) -> StoreResult<ClusterMessage> {
        match self.0.recv().await {
            Ok(message) => Ok(ClusterMessage::Message(message)),
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(ClusterMessage::Resumed),
            // The store holds the sender for as long as the listener can
            // be reached through it; wait for nothing rather than spin.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl ClusterBus for SqliteStore {
    async fn publish(&self, messages: &[String]) -> StoreResult<()> {
        if let Some(long) = messages.iter().find(|m| m.len() > MAX_MESSAGE_BYTES) {
            return Err(StoreError::Conflict(format!(
                "a cluster message of {} bytes is longer than {MAX_MESSAGE_BYTES}",
                long.len()
            )));
        }
        for message in messages {
            // No listener is not an error: nobody needed to hear it.
            let _ = self.bus.send(message.clone());
        }
        Ok(())
    }

    async fn listen(&self) -> StoreResult<Box<dyn ClusterListener>> {
        Ok(Box::new(MemoryListener(self.bus.subscribe())))
    }

    async fn put_reply(&self, id: &str, body: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO cluster_replies (id, body, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(body)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn take_reply(&self, id: &str) -> StoreResult<Option<String>> {
        let mut tx = self.begin_write().await?;
        let body: Option<String> =
            sqlx::query_scalar("DELETE FROM cluster_replies WHERE id = ? RETURNING body")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(body)
    }

    async fn prune_replies(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let pruned = sqlx::query("DELETE FROM cluster_replies WHERE created_at < ?")
            .bind(ms(before))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(pruned)
    }
}
