//! The PostgreSQL side of [`rm_store::ClusterStore`]: servers, agent
//! holders and leases, for several servers on one database. Every race
//! (two servers taking one lease, two sweeping one dead server's hosts) is
//! decided by one conditional statement, which PostgreSQL re-checks on the
//! committed row after waiting for its lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{ServerRecord, StoreResult};
use rm_store_sql::encode::ms;
use rm_store_sql::{HostIdRow, ServerRow, SERVER_COLUMNS};
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
