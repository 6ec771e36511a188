//! The SQLite side of [`rm_store::HostStore`]: enrolment and hosts:
//! enrolment tokens, the host list and counts, hello, agent upgrades,
//! liveness, deletion and the metrics summaries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rm_core::{HostId, Selector, TokenId};
use rm_store::prelude::*;
use rm_store::{
    AgentToken, EnrollmentToken, HelloRecord, Host, HostBackupSummary, HostCounts, HostPatch,
    NewAuditEntry, NewHost, ProtectedAt, StoreError, StoreResult, MAX_HOST_PAGE,
};
use rm_store_sql::encode;
use rm_store_sql::encode::{ms, ms_opt, u64_to_i64};
use rm_store_sql::{EnrollmentTokenRow, HostBackupSummaryRow, HostCountsRow, HostRow};
// Every SQL text built at run time here is made of this crate's constant
// column lists, table names and `?` placeholder counts; values are always
// bound, never formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{
    bind_selector, fetch_all_models, insert_error, selector_sql, statement_rows, write_audit,
    SqliteStore, BACKUP_KIND,
};

/// Whether a `hosts` row is protected: a backup that saved a snapshot
/// within its effective freshness (its own, else its policy's, else the
/// default bound first) of now (bound second), in milliseconds. Shared by
/// the fleet counts and the attention-first listing so both judge a host
/// alike, and alike with the server's host view. Never NULL, so `NOT` and
/// `SUM` over it count every host.
const PROTECTED: &str = "(last_backup_success_at IS NOT NULL AND last_backup_success_at \
     + 1000 * COALESCE(hosts.freshness_seconds, (SELECT policies.freshness_seconds \
     FROM policies WHERE policies.id = hosts.policy_id), ?) >= ?)";

/// Hosts per `touch_hosts` statement (2 bind parameters each).
const TOUCH_ROWS_PER_UPDATE: usize = 256;

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

/// A member of `j.stats` when it is a whole non-negative number, else
/// NULL: restic's report, not the store's own data, so an odd value (from
/// an older agent, or none) reads as unknown rather than corrupt.
fn stats_integer(member: &str) -> String {
    format!(
        "CASE WHEN json_type(j.stats, '$.{member}') = 'integer' \
         AND json_extract(j.stats, '$.{member}') >= 0 \
         THEN json_extract(j.stats, '$.{member}') END"
    )
}

#[async_trait]
impl HostStore for SqliteStore {
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
        .bind(encode::labels_json(&token.labels))
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
        self.row_by::<EnrollmentTokenRow, EnrollmentToken>(
            "enrollment_tokens",
            "id",
            rm_store_sql::ENROLLMENT_TOKEN_COLUMNS,
            id.to_string(),
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
            rm_store_sql::ENROLLMENT_TOKEN_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, EnrollmentTokenRow>(AssertSqlSafe(sql)).bind(ms(now)),
        )
        .await
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
        .bind(host.labels.as_ref().map(encode::labels_json))
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

        let stored = crate::shared::read_host(&mut tx, &host_id, false)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host `{host_id}`")))?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL ORDER BY enrolled_at, id",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql));
        crate::shared::read_hosts(&self.pool, query).await
    }

    async fn list_hosts_page(&self, after: Option<HostId>, limit: u32) -> StoreResult<Vec<Host>> {
        // The empty string sorts before every ULID, so "no cursor" needs no
        // second SQL text.
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql))
            .bind(after.map(|id| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)));
        crate::shared::read_hosts(&self.pool, query).await
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
        let query = bind_selector(sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)), selector)
            .bind(after.map(|id| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)));
        crate::shared::read_hosts(&self.pool, query).await
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
        let query = bind_selector(sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)), selector)
            .bind(u64_to_i64(
                protected.default_freshness_seconds,
                "default freshness",
            )?)
            .bind(ms(protected.now))
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)))
            .bind(i64::from(offset));
        crate::shared::read_hosts(&self.pool, query).await
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
            sqlx::query_as::<_, HostCountsRow>(AssertSqlSafe(sql))
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
        HostCounts::try_from(row)
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
        let query = bind_selector(sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)), selector);
        crate::shared::read_hosts(&self.pool, query).await
    }

    async fn patch_host(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        self.patch_host_impl(id, patch, audit).await
    }

    async fn host(&self, id: HostId) -> StoreResult<Option<Host>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        crate::shared::read_host(&mut conn, &id.to_string(), true).await
    }

    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE hosts SET connection_id = ?, server_id = ?, online = 1, \
             last_seen_at = MAX(COALESCE(last_seen_at, 0), ?), \
             agent_version = ?, restic_version = ?, restic_error = ?, protocol_version = ?, \
             hostname = ?, os = ?, arch = ?, hooks = ?, hooks_refused = ?, platform = ? \
             WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(&hello.connection_id)
        .bind(&hello.server_id)
        .bind(ms(hello.at))
        .bind(&hello.agent_version)
        .bind(&hello.restic_version)
        .bind(&hello.restic_error)
        .bind(i64::from(hello.protocol_version))
        .bind(&hello.hostname)
        .bind(&hello.os)
        .bind(&hello.arch)
        .bind(encode::json_strings(&hello.hooks))
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
             {} AS bytes_processed, {} AS bytes_added \
             FROM hosts h LEFT JOIN jobs j ON j.id = CASE \
               WHEN h.last_backup_success_at IS NULL THEN NULL \
               ELSE (SELECT id FROM jobs WHERE jobs.host_id = h.id \
                     AND jobs.kind = '{BACKUP_KIND}' \
                     AND jobs.status IN ('succeeded', 'partial') \
                     AND jobs.finished_at = h.last_backup_success_at \
                     ORDER BY jobs.created_at DESC, jobs.id DESC LIMIT 1) END \
             WHERE h.deleted_at IS NULL ORDER BY h.id",
            stats_integer("total_bytes_processed"),
            stats_integer("data_added"),
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, HostBackupSummaryRow>(AssertSqlSafe(sql)),
        )
        .await
    }
}
