//! The PostgreSQL side of [`rm_store::HostStore`]: enrolment and hosts:
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
// column lists and `$n` placeholders; values are always bound, never
// formatted in, so each such text is asserted safe.
use sqlx::AssertSqlSafe;

use crate::shared::{
    db_error, fetch_all_models, finish, insert_error, read_host, read_hosts, require_live_host,
    retire_agent, selector_param, selector_sql, write_audit, HOST_COLUMNS,
};
use crate::PostgresStore;

/// Whether a `hosts` row is protected: a backup that saved a snapshot
/// within its effective freshness (its own, else its policy's, else the
/// default bound as `$d`) of now (bound as `$n`), in milliseconds. Shared
/// by the fleet counts and the attention-first listing so both judge a
/// host alike, and alike with the SQLite store. Never NULL.
fn protected_sql(d: usize, n: usize) -> String {
    format!(
        "(last_backup_success_at IS NOT NULL AND last_backup_success_at \
         + 1000 * COALESCE(hosts.freshness_seconds, (SELECT policies.freshness_seconds \
         FROM policies WHERE policies.id = hosts.policy_id), ${d}::BIGINT) >= ${n}::BIGINT)"
    )
}

/// The job kind whose end updates the host's last-backup summary.
const BACKUP_KIND: &str = "backup";

/// A JSON member of `j.stats` as BIGINT when it is a whole non-negative
/// number that fits, else NULL (restic's report, not the store's data: an
/// odd value reads as unknown rather than failing the query).
fn stats_bigint(member: &str) -> String {
    format!(
        "CASE WHEN jsonb_typeof(j.stats::jsonb -> '{member}') = 'number' \
         AND (j.stats::jsonb ->> '{member}') ~ '^[0-9]{{1,18}}$' \
         THEN (j.stats::jsonb ->> '{member}')::BIGINT END"
    )
}

#[async_trait]
impl HostStore for PostgresStore {
    async fn create_enrollment_token(
        &self,
        token: &EnrollmentToken,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "INSERT INTO enrollment_tokens \
             (id, name, token_hash, created_at, expires_at, used_at, host_id, labels) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
            Ok(())
        }
        .await;
        finish(tx, result).await
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
            "SELECT {} FROM enrollment_tokens WHERE used_at IS NULL AND expires_at > $1 \
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
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            // The guard: only one transaction can flip `used_at` from NULL. Under
            // READ COMMITTED a second enrolment with the same token waits for the
            // first's row lock, then re-checks `used_at IS NULL` on the
            // committed row and updates nothing.
            let spent = sqlx::query(
                "UPDATE enrollment_tokens SET used_at = $1, host_id = $2 \
             WHERE id = $3 AND used_at IS NULL AND expires_at > $1",
            )
            .bind(now_ms)
            .bind(&host_id)
            .bind(token_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if spent != 1 {
                return Err(StoreError::TokenSpent);
            }

            // The host carries its labels (by default the token's) from the start.
            sqlx::query(
                "INSERT INTO hosts (id, name, hostname, enrolled_at, online, labels) \
             VALUES ($1, $2, $3, $4, FALSE, \
             COALESCE($5, (SELECT labels FROM enrollment_tokens WHERE id = $6), '{}'))",
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
                "INSERT INTO agent_tokens (id, host_id, token_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
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

            let stored = read_host(&mut tx, &host_id, false)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("host `{host_id}`")))?;
            write_audit(&mut tx, audit).await?;
            Ok(stored)
        }
        .await;
        finish(tx, result).await
    }

    async fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE deleted_at IS NULL ORDER BY enrolled_at, id"
        );
        read_hosts(&self.pool, sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql))).await
    }

    async fn list_hosts_page(&self, after: Option<HostId>, limit: u32) -> StoreResult<Vec<Host>> {
        self.list_hosts_page_matching(after, limit, &Selector::default())
            .await
    }

    async fn list_hosts_page_matching(
        &self,
        after: Option<HostId>,
        limit: u32,
        selector: &Selector,
    ) -> StoreResult<Vec<Host>> {
        // The empty string sorts before every ULID (columns are COLLATE
        // "C"), so "no cursor" needs no second SQL text.
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE deleted_at IS NULL AND {} \
             AND id > $2 ORDER BY id LIMIT $3",
            selector_sql(1)
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql))
            .bind(selector_param(selector))
            .bind(after.map(|id| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)));
        read_hosts(&self.pool, query).await
    }

    async fn list_hosts_attention_first(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE deleted_at IS NULL AND {} \
             ORDER BY (online AND {}) ASC, name, id LIMIT $4 OFFSET $5",
            selector_sql(1),
            protected_sql(2, 3),
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql))
            .bind(selector_param(selector))
            .bind(u64_to_i64(
                protected.default_freshness_seconds,
                "default freshness",
            )?)
            .bind(ms(protected.now))
            .bind(i64::from(limit.clamp(1, MAX_HOST_PAGE)))
            .bind(i64::from(offset));
        read_hosts(&self.pool, query).await
    }

    async fn host_counts(
        &self,
        protected: ProtectedAt,
        selector: &Selector,
    ) -> StoreResult<HostCounts> {
        let sql = format!(
            "SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE online) AS online, \
             COUNT(*) FILTER (WHERE NOT {}) AS not_backed_up, \
             COUNT(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM host_repositories \
                                      WHERE host_repositories.host_id = hosts.id) \
                          AND NOT EXISTS (SELECT 1 FROM schedules \
                                          WHERE schedules.host_id = hosts.id)) \
             AS unconfigured \
             FROM hosts WHERE deleted_at IS NULL AND {}",
            protected_sql(1, 2),
            selector_sql(3)
        );
        let row = sqlx::query_as::<_, HostCountsRow>(AssertSqlSafe(sql))
            .bind(u64_to_i64(
                protected.default_freshness_seconds,
                "default freshness",
            )?)
            .bind(ms(protected.now))
            .bind(selector_param(selector))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        HostCounts::try_from(row)
    }

    async fn agent_versions(&self, selector: &Selector) -> StoreResult<Vec<(String, u64)>> {
        let sql = format!(
            "SELECT agent_version, COUNT(*) FROM hosts \
             WHERE deleted_at IS NULL AND agent_version IS NOT NULL AND {} \
             GROUP BY agent_version ORDER BY agent_version",
            selector_sql(1)
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(selector_param(selector))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows
            .into_iter()
            // COUNT(*) is never negative.
            .map(|(version, n)| (version, n.unsigned_abs()))
            .collect())
    }

    async fn hosts_matching(&self, selector: &Selector) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE deleted_at IS NULL AND {} ORDER BY id",
            selector_sql(1)
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)).bind(selector_param(selector));
        read_hosts(&self.pool, query).await
    }

    async fn patch_host(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        let host_id = id.to_string();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            require_live_host(&mut tx, &host_id).await?;
            // One statement: each field changes only when the patch has it
            // (`$n` true), so an absent field keeps its value.
            sqlx::query(
                "UPDATE hosts SET \
             name = CASE WHEN $1 THEN $2 ELSE name END, \
             labels = CASE WHEN $3 THEN $4 ELSE labels END, \
             freshness_seconds = CASE WHEN $5 THEN $6 ELSE freshness_seconds END, \
             offline_seconds = CASE WHEN $7 THEN $8 ELSE offline_seconds END \
             WHERE id = $9",
            )
            .bind(patch.name.is_some())
            .bind(patch.name.clone().unwrap_or_default())
            .bind(patch.labels.is_some())
            .bind(
                patch
                    .labels
                    .as_ref()
                    .map(encode::labels_json)
                    .unwrap_or_default(),
            )
            .bind(patch.freshness_seconds.is_some())
            .bind(encode::u64_opt_to_i64(
                patch.freshness_seconds.flatten(),
                "freshness_seconds",
            )?)
            .bind(patch.offline_seconds.is_some())
            .bind(encode::u64_opt_to_i64(
                patch.offline_seconds.flatten(),
                "offline_seconds",
            )?)
            .bind(&host_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            let host = read_host(&mut tx, &host_id, false)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("host `{host_id}`")))?;
            write_audit(&mut tx, audit).await?;
            Ok(host)
        }
        .await;
        finish(tx, result).await
    }

    async fn host(&self, id: HostId) -> StoreResult<Option<Host>> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        read_host(&mut conn, &id.to_string(), true).await
    }

    async fn record_hello(&self, host_id: HostId, hello: &HelloRecord) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE hosts SET connection_id = $1, online = TRUE, \
             last_seen_at = GREATEST(COALESCE(last_seen_at, 0), $2), \
             agent_version = $3, restic_version = $4, restic_error = $5, protocol_version = $6, \
             hostname = $7, os = $8, arch = $9, hooks = $10, hooks_refused = $11, \
             platform = $12, server_id = $14 \
             WHERE id = $13 AND deleted_at IS NULL",
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
        .bind(encode::json_strings(&hello.hooks))
        .bind(serde_json::to_string(&hello.hooks_refused).unwrap_or_else(|_| "[]".to_owned()))
        .bind(&hello.platform)
        .bind(host_id.to_string())
        .bind(&hello.server_id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
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
        let ids: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query(
                "UPDATE hosts SET upgrade_requested_version = $1, upgrade_requested_at = $2 \
             WHERE id = ANY($3) AND deleted_at IS NULL",
            )
            .bind(version)
            .bind(ms(at))
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            write_audit(&mut tx, audit).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
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
        sqlx::query(
            "UPDATE hosts SET upgrade_state = $1, upgrade_version = $2, upgrade_error = $3, \
             upgrade_at = $4, \
             upgrade_requested_version = CASE WHEN $5 THEN NULL \
                                         ELSE upgrade_requested_version END, \
             upgrade_requested_at = CASE WHEN $5 THEN NULL ELSE upgrade_requested_at END \
             WHERE id = $6 AND deleted_at IS NULL",
        )
        .bind(state)
        .bind(version)
        .bind(error)
        .bind(ms(at))
        .bind(ends)
        .bind(host_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn touch_hosts(&self, seen: &[(HostId, DateTime<Utc>)]) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        // The rows are locked in id order first (a sorted `FOR UPDATE`), so
        // two servers touching overlapping hosts at once wait for each
        // other instead of deadlocking, as an UPDATE … FROM locks in its
        // join's order. A host listed twice keeps its latest time (the
        // GROUP BY), as an UPDATE … FROM applies one match only.
        let (ids, ats): (Vec<String>, Vec<i64>) = seen
            .iter()
            .map(|(id, at)| (id.to_string(), ms(*at)))
            .unzip();
        sqlx::query(
            "WITH seen AS (SELECT id, MAX(at) AS at \
                           FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS s(id, at) GROUP BY id), \
             locked AS MATERIALIZED (SELECT hosts.id FROM hosts JOIN seen ON seen.id = hosts.id \
                        ORDER BY hosts.id FOR UPDATE OF hosts) \
             UPDATE hosts SET last_seen_at = GREATEST(COALESCE(hosts.last_seen_at, 0), seen.at) \
             FROM seen, locked WHERE hosts.id = seen.id AND locked.id = hosts.id",
        )
        .bind(&ids)
        .bind(&ats)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn mark_host_offline(
        &self,
        host_id: HostId,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // The conditional UPDATE decides a race with a new hello: whichever
        // comes second sees the first's committed row.
        let updated = sqlx::query(
            "UPDATE hosts SET online = FALSE, \
             last_seen_at = GREATEST(COALESCE(last_seen_at, 0), $1) \
             WHERE id = $2 AND connection_id = $3 AND online",
        )
        .bind(ms(at))
        .bind(host_id.to_string())
        .bind(connection_id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.error(e))?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn mark_all_hosts_offline(&self) -> StoreResult<u64> {
        let updated = sqlx::query("UPDATE hosts SET online = FALSE WHERE online")
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(updated)
    }

    async fn delete_host(
        &self,
        id: HostId,
        at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        retire_agent(
            self,
            &id.to_string(),
            ms(at),
            "UPDATE hosts SET deleted_at = $1, online = FALSE \
             WHERE id = $2 AND deleted_at IS NULL",
            audit,
        )
        .await
    }

    async fn host_backup_summaries(&self) -> StoreResult<Vec<HostBackupSummary>> {
        // The job is found by the time it set `last_backup_success_at`,
        // walking the host's jobs newest first: the last successful backup
        // is among the newest, so this reads a few rows per host. Hosts
        // that never succeeded skip the walk.
        let sql = format!(
            "SELECT h.id, h.name, h.online, h.policy_id, h.freshness_seconds, \
             h.last_backup_success_at, j.started_at AS job_started_at, \
             j.finished_at AS job_finished_at, \
             {} AS bytes_processed, {} AS bytes_added \
             FROM hosts h LEFT JOIN LATERAL (SELECT * FROM jobs \
                 WHERE h.last_backup_success_at IS NOT NULL AND jobs.host_id = h.id \
                 AND jobs.kind = '{BACKUP_KIND}' \
                 AND jobs.status IN ('succeeded', 'partial') \
                 AND jobs.finished_at = h.last_backup_success_at \
                 ORDER BY jobs.created_at DESC, jobs.id DESC LIMIT 1) j ON TRUE \
             WHERE h.deleted_at IS NULL ORDER BY h.id",
            stats_bigint("total_bytes_processed"),
            stats_bigint("data_added"),
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, HostBackupSummaryRow>(AssertSqlSafe(sql)),
        )
        .await
    }
}
