//! Fleet policies (migration 0012): the policies themselves, what the
//! server's reconciler reads about hosts and writes back in one transaction,
//! host labels, shared repositories and the jobs queued into them, bulk job
//! batches and once-per-repository fires.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use rm_core::{BatchId, HostId, JobStatus, PolicyId};
use rm_store::{
    Host, HostPatch, HostPolicyChange, Job, NewAuditEntry, NewJob, PolicyCoverage, PolicyRecord,
    PolicyStore, PolicyTarget, PolicyWrite, RepositoryChange, RepositoryJob, StoreError,
    StoreResult,
};
use rm_store_sql::encode;
use rm_store_sql::encode::ms;
use rm_store_sql::{HostRow, JobRow, PolicyCoverageRow, PolicyRow, PolicyTargetRow, ScheduleRow};
// The SQL texts here are built from constant column lists and `?`
// placeholder counts; values are always bound.
use sqlx::AssertSqlSafe;

use crate::codec::{self, backend};
use crate::{
    fetch_all_models, insert_error, insert_job, placeholders, require_live_host, upsert_repository,
    write_audit, SqliteStore,
};

/// Host ids (or id pairs) per `IN (…)` list when reading or changing
/// policy targets.
const HOSTS_PER_QUERY: usize = 500;

/// Schedule rows per multi-row `INSERT` (12 bind parameters each).
const SCHEDULES_PER_INSERT: usize = 64;

/// `n` groups of `width` placeholders: `(?, ?), (?, ?)`.
fn pairs(n: usize, width: usize) -> String {
    let group = format!("({})", placeholders(width));
    vec![group; n].join(", ")
}

impl SqliteStore {
    pub(crate) async fn patch_host_impl(
        &self,
        id: HostId,
        patch: &HostPatch,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Host> {
        let host_id = id.to_string();
        let mut tx = self.begin_write().await?;
        require_live_host(&mut tx, &host_id).await?;
        if let Some(name) = &patch.name {
            sqlx::query("UPDATE hosts SET name = ? WHERE id = ?")
                .bind(name)
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if let Some(labels) = &patch.labels {
            sqlx::query("UPDATE hosts SET labels = ? WHERE id = ?")
                .bind(encode::labels_json(labels))
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if let Some(freshness) = patch.freshness_seconds {
            sqlx::query("UPDATE hosts SET freshness_seconds = ? WHERE id = ?")
                .bind(encode::u64_opt_to_i64(freshness, "freshness_seconds")?)
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if let Some(offline) = patch.offline_seconds {
            sqlx::query("UPDATE hosts SET offline_seconds = ? WHERE id = ?")
                .bind(encode::u64_opt_to_i64(offline, "offline_seconds")?)
                .bind(&host_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let host = crate::shared::read_host(&mut tx, &host_id, false)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host `{host_id}`")))?;
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(host)
    }

    /// Every policy (oldest first), or the one with `id`.
    pub(crate) async fn policies_impl(
        &self,
        id: Option<PolicyId>,
    ) -> StoreResult<Vec<PolicyRecord>> {
        let sql = format!(
            "SELECT {} FROM policies WHERE ? IS NULL OR id = ? ORDER BY created_at, id",
            rm_store_sql::POLICY_COLUMNS
        );
        let id = id.map(|i| i.to_string());
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, PolicyRow>(AssertSqlSafe(sql))
                .bind(&id)
                .bind(&id),
        )
        .await
    }

    pub(crate) async fn policy_targets_impl(
        &self,
        hosts: Option<&[HostId]>,
    ) -> StoreResult<Vec<PolicyTarget>> {
        // Read in one transaction so the hosts, their settings and their
        // schedules agree.
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        let result = self.read_targets(&mut conn, hosts).await;
        let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
        result
    }

    async fn read_targets(
        &self,
        conn: &mut sqlx::SqliteConnection,
        hosts: Option<&[HostId]>,
    ) -> StoreResult<Vec<PolicyTarget>> {
        let base = format!(
            "SELECT hosts.id AS host_id, hosts.name AS name, hosts.labels AS labels, \
             hosts.policy_id AS policy_id, host_repositories.policy_id AS repository_policy_id, \
             {} FROM hosts LEFT JOIN host_repositories ON host_repositories.host_id = hosts.id \
             WHERE hosts.deleted_at IS NULL",
            rm_store_sql::REPOSITORY_COLUMNS_QUALIFIED
        );
        let mut rows = Vec::new();
        match hosts {
            None => {
                let sql = format!("{base} ORDER BY hosts.id");
                rows.extend(
                    sqlx::query_as::<_, PolicyTargetRow>(AssertSqlSafe(sql))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(backend)?,
                );
            }
            Some(ids) => {
                for chunk in ids.chunks(HOSTS_PER_QUERY) {
                    let sql = format!(
                        "{base} AND hosts.id IN ({}) ORDER BY hosts.id",
                        placeholders(chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, PolicyTargetRow>(AssertSqlSafe(sql));
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    rows.extend(query.fetch_all(&mut *conn).await.map_err(backend)?);
                }
            }
        }
        let mut targets = Vec::with_capacity(rows.len());
        let mut index = HashMap::with_capacity(rows.len());
        for row in rows {
            let target = PolicyTarget::try_from(row)?;
            index.insert(target.host_id, targets.len());
            targets.push(target);
        }
        // Schedules of the same hosts: a whole-fleet read is one pass.
        let sql = format!(
            "SELECT {} FROM schedules JOIN hosts ON hosts.id = schedules.host_id \
             WHERE hosts.deleted_at IS NULL ORDER BY schedules.created_at, schedules.id",
            rm_store_sql::SCHEDULE_COLUMNS_QUALIFIED
        );
        let wanted = |id: &HostId| index.contains_key(id);
        let schedule_rows = match hosts {
            Some(ids) if ids.len() <= HOSTS_PER_QUERY => {
                let sql = format!(
                    "SELECT {} FROM schedules WHERE host_id IN ({}) ORDER BY created_at, id",
                    rm_store_sql::SCHEDULE_COLUMNS,
                    placeholders(ids.len())
                );
                let mut query = sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql));
                for id in ids {
                    query = query.bind(id.to_string());
                }
                query.fetch_all(&mut *conn).await.map_err(backend)?
            }
            _ => sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?,
        };
        for row in schedule_rows {
            let schedule = rm_store::ScheduleRecord::try_from(row)?;
            if !wanted(&schedule.host_id) {
                continue;
            }
            let Some(&at) = index.get(&schedule.host_id) else {
                continue;
            };
            let target = &mut targets[at];
            if schedule.policy.is_some() {
                target.policy_schedules.push(schedule);
            } else if !target.own_schedule_kinds.contains(&schedule.kind) {
                target.own_schedule_kinds.push(schedule.kind);
            }
        }
        Ok(targets)
    }

    pub(crate) async fn apply_policy_changes_impl(
        &self,
        generation: u64,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE policy_generation SET generation = generation + 1 \
             WHERE id = 1 AND generation = ?",
        )
        .bind(i64::try_from(generation).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await.map_err(backend)?;
            return Err(StoreError::Stale(format!(
                "the policies or hosts were changed after generation {generation} was read"
            )));
        }
        match policy {
            Some(PolicyWrite::Create(p)) => write_policy(&mut tx, p, false).await?,
            Some(PolicyWrite::Update(p)) => {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM policies WHERE id = ?")
                    .bind(p.id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                if exists.is_none() {
                    tx.rollback().await.map_err(backend)?;
                    return Err(StoreError::NotFound(format!("policy `{}`", p.id)));
                }
                write_policy(&mut tx, p, true).await?;
            }
            Some(PolicyWrite::Delete(id)) => {
                let deleted = sqlx::query("DELETE FROM policies WHERE id = ?")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?
                    .rows_affected();
                if deleted == 0 {
                    tx.rollback().await.map_err(backend)?;
                    return Err(StoreError::NotFound(format!("policy `{id}`")));
                }
            }
            None => {}
        }
        // Statements cover many hosts each: one per host made a change to
        // 10,000 hosts hold the writer's turn for seconds (every heartbeat
        // flush, acknowledgement and job event waiting behind it).
        let mut by_policy: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for change in changes {
            by_policy
                .entry(change.policy_id.map(|p| p.to_string()))
                .or_default()
                .push(change.host_id.to_string());
        }
        for (policy_id, hosts) in &by_policy {
            for chunk in hosts.chunks(HOSTS_PER_QUERY) {
                let sql = format!(
                    "UPDATE hosts SET policy_id = ? WHERE deleted_at IS NULL AND id IN ({})",
                    placeholders(chunk.len())
                );
                let mut query = sqlx::query(AssertSqlSafe(sql)).bind(policy_id);
                for id in chunk {
                    query = query.bind(id);
                }
                query.execute(&mut *tx).await.map_err(backend)?;
            }
        }
        for change in changes {
            let host_id = change.host_id.to_string();
            match &change.repository {
                RepositoryChange::Keep => {}
                RepositoryChange::Set {
                    sealed,
                    key,
                    policy_id,
                } => {
                    // Never over the host's own settings: those win.
                    let own: Option<i64> = sqlx::query_scalar(
                        "SELECT 1 FROM host_repositories WHERE host_id = ? AND policy_id IS NULL",
                    )
                    .bind(&host_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                    if own.is_none() {
                        upsert_repository(&mut tx, &host_id, sealed, key, Some(*policy_id)).await?;
                    }
                }
                RepositoryChange::Remove => {
                    sqlx::query(
                        "DELETE FROM host_repositories \
                         WHERE host_id = ? AND policy_id IS NOT NULL",
                    )
                    .bind(&host_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
            }
        }
        let deletes: Vec<(String, String)> = changes
            .iter()
            .flat_map(|c| {
                c.delete_schedules
                    .iter()
                    .map(|id| (id.to_string(), c.host_id.to_string()))
            })
            .collect();
        for chunk in deletes.chunks(HOSTS_PER_QUERY) {
            // Each pair found by the schedule's id (a `(id, host_id) IN
            // (VALUES …)` would scan every policy schedule per statement).
            let sql = format!(
                "DELETE FROM schedules WHERE rowid IN \
                 (SELECT s.rowid FROM (VALUES {}) AS v \
                  JOIN schedules AS s ON s.id = v.column1 AND s.host_id = v.column2 \
                  WHERE s.policy_id IS NOT NULL)",
                pairs(chunk.len(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (id, host) in chunk {
                query = query.bind(id).bind(host);
            }
            query.execute(&mut *tx).await.map_err(backend)?;
        }
        let mut upserts = Vec::new();
        for change in changes {
            for s in &change.upsert_schedules {
                let Some(policy) = s.policy else {
                    return Err(StoreError::Conflict(format!(
                        "schedule `{}` is not a policy's",
                        s.id
                    )));
                };
                upserts.push((change.host_id, s, policy));
            }
        }
        for chunk in upserts.chunks(SCHEDULES_PER_INSERT) {
            let sql = format!(
                "INSERT INTO schedules (id, host_id, kind, cron, timezone, params, enabled, \
                 jitter_seconds, created_at, updated_at, policy_id, policy_schedule_id) \
                 VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, cron = excluded.cron, \
                 timezone = excluded.timezone, params = excluded.params, \
                 enabled = excluded.enabled, jitter_seconds = excluded.jitter_seconds, \
                 updated_at = excluded.updated_at, policy_id = excluded.policy_id, \
                 policy_schedule_id = excluded.policy_schedule_id \
                 WHERE schedules.host_id = excluded.host_id",
                pairs(chunk.len(), 12)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (host, s, (policy_id, policy_schedule_id)) in chunk {
                query = query
                    .bind(s.id.to_string())
                    .bind(host.to_string())
                    .bind(&s.kind)
                    .bind(&s.cron)
                    .bind(&s.timezone)
                    .bind(s.params.to_string())
                    .bind(s.enabled)
                    .bind(i64::from(s.jitter_seconds))
                    .bind(ms(s.created_at))
                    .bind(ms(s.updated_at))
                    .bind(policy_id.to_string())
                    .bind(policy_schedule_id.to_string());
            }
            query.execute(&mut *tx).await.map_err(backend)?;
        }
        // One version bump per host whose set changed; a host deleted
        // meanwhile is not bumped and has nothing to push.
        let to_bump: Vec<String> = changes
            .iter()
            .filter(|c| c.changes_schedules())
            .map(|c| c.host_id.to_string())
            .collect();
        let mut bumped = Vec::with_capacity(to_bump.len());
        for chunk in to_bump.chunks(HOSTS_PER_QUERY) {
            let sql = format!(
                "UPDATE hosts SET schedule_version = schedule_version + 1 \
                 WHERE deleted_at IS NULL AND id IN ({}) RETURNING id, schedule_version",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut *tx).await.map_err(backend)? {
                bumped.push((
                    codec::id(&row, "id")?,
                    codec::u64_col(&row, "schedule_version")?,
                ));
            }
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(bumped)
    }

    pub(crate) async fn policy_coverage_impl(&self) -> StoreResult<Vec<PolicyCoverage>> {
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, PolicyCoverageRow>(
                "SELECT policy_id, COUNT(*) AS hosts, \
                 COALESCE(SUM(schedule_version = 0 OR (schedule_applied_version IS NOT NULL \
                              AND schedule_applied_version >= schedule_version)), 0) AS in_sync \
                 FROM hosts WHERE deleted_at IS NULL AND policy_id IS NOT NULL \
                 GROUP BY policy_id ORDER BY policy_id",
            ),
        )
        .await
    }

    pub(crate) async fn hosts_of_repository_impl(&self, key: &str) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE deleted_at IS NULL AND id IN \
             (SELECT host_id FROM host_repositories WHERE repository_key = ?) ORDER BY id",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)).bind(key);
        crate::shared::read_hosts(&self.pool, query).await
    }

    pub(crate) async fn repository_jobs_impl(&self, key: &str) -> StoreResult<Vec<RepositoryJob>> {
        let rows = sqlx::query(
            "SELECT jobs.id AS id, jobs.host_id AS host_id, hosts.online AS online, \
             jobs.kind AS kind, jobs.params AS params, jobs.status AS status, \
             jobs.created_at AS created_at, job_batches.batch_id AS batch_id, \
             job_batches.max_parallel AS max_parallel \
             FROM host_repositories \
             JOIN hosts ON hosts.id = host_repositories.host_id AND hosts.deleted_at IS NULL \
             JOIN jobs ON jobs.host_id = hosts.id AND jobs.status IN (?, ?, ?) \
             LEFT JOIN job_batches ON job_batches.job_id = jobs.id \
             WHERE host_repositories.repository_key = ? \
             ORDER BY jobs.created_at, jobs.id",
        )
        .bind(JobStatus::Queued.as_str())
        .bind(JobStatus::Dispatched.as_str())
        .bind(JobStatus::Running.as_str())
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let batch = match codec::id_opt::<BatchId>(row, "batch_id")? {
                    Some(batch) => Some((batch, codec::u32_col(row, "max_parallel")?)),
                    None => None,
                };
                Ok(RepositoryJob {
                    job_id: codec::id(row, "id")?,
                    host_id: codec::id(row, "host_id")?,
                    host_online: codec::flag(row, "online")?,
                    kind: codec::text(row, "kind")?,
                    params: codec::json_value(row, "params")?,
                    status: codec::parsed(row, "status")?,
                    created_at: codec::time(row, "created_at")?,
                    batch,
                })
            })
            .collect()
    }

    pub(crate) async fn create_batch_jobs_impl(
        &self,
        batch: BatchId,
        max_parallel: u32,
        jobs: &[NewJob],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<Job>> {
        let mut tx = self.begin_write().await?;
        let mut created = Vec::with_capacity(jobs.len());
        for job in jobs {
            let made = insert_job(&mut tx, job).await?;
            sqlx::query(
                "INSERT INTO job_batches (job_id, batch_id, max_parallel) VALUES (?, ?, ?)",
            )
            .bind(made.id.to_string())
            .bind(batch.to_string())
            .bind(i64::from(max_parallel.max(1)))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            created.push(made);
        }
        write_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(created)
    }

    pub(crate) async fn create_job_once_impl(
        &self,
        job: &NewJob,
        fire_key: &str,
    ) -> StoreResult<(Job, bool)> {
        let mut tx = self.begin_write().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT job_id FROM repository_fires WHERE fire_key = ?")
                .bind(fire_key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some(existing) = existing {
            let sql = format!(
                "SELECT {} FROM jobs WHERE id = ?",
                rm_store_sql::JOB_COLUMNS
            );
            let row = sqlx::query_as::<_, JobRow>(AssertSqlSafe(sql))
                .bind(&existing)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            let job = Job::try_from(row)?;
            tx.rollback().await.map_err(backend)?;
            return Ok((job, false));
        }
        let made = insert_job(&mut tx, job).await?;
        sqlx::query("INSERT INTO repository_fires (fire_key, job_id, created_at) VALUES (?, ?, ?)")
            .bind(fire_key)
            .bind(made.id.to_string())
            .bind(ms(job.created_at))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok((made, true))
    }
}

/// Inserts a policy, or (`replace`) replaces every field of the one with
/// its id but its creation time. A taken name is [`StoreError::Conflict`].
async fn write_policy(
    conn: &mut sqlx::SqliteConnection,
    p: &PolicyRecord,
    replace: bool,
) -> StoreResult<()> {
    let schedules = serde_json::to_string(&p.schedules)
        .map_err(|e| StoreError::Conflict(format!("policy schedules: {e}")))?;
    let sql = if replace {
        "INSERT INTO policies (id, name, selector, priority, repository_nonce, \
         repository_ciphertext, schedules, freshness_seconds, offline_seconds, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, selector = excluded.selector, \
         priority = excluded.priority, repository_nonce = excluded.repository_nonce, \
         repository_ciphertext = excluded.repository_ciphertext, \
         schedules = excluded.schedules, freshness_seconds = excluded.freshness_seconds, \
         offline_seconds = excluded.offline_seconds, updated_at = excluded.updated_at"
    } else {
        "INSERT INTO policies (id, name, selector, priority, repository_nonce, \
         repository_ciphertext, schedules, freshness_seconds, offline_seconds, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
    sqlx::query(sql)
        .bind(p.id.to_string())
        .bind(&p.name)
        .bind(encode::labels_json(&p.selector.0))
        .bind(p.priority)
        .bind(p.repository.as_ref().map(|r| r.nonce.clone()))
        .bind(p.repository.as_ref().map(|r| r.ciphertext.clone()))
        .bind(schedules)
        .bind(encode::u64_opt_to_i64(
            p.freshness_seconds,
            "freshness_seconds",
        )?)
        .bind(encode::u64_opt_to_i64(
            p.offline_seconds,
            "offline_seconds",
        )?)
        .bind(ms(p.created_at))
        .bind(ms(p.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            insert_error(
                e,
                || format!("a policy named `{}` already exists", p.name),
                "policy",
            )
        })?;
    Ok(())
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        self.policies_impl(None).await
    }

    async fn policy(&self, id: PolicyId) -> StoreResult<Option<PolicyRecord>> {
        Ok(self.policies_impl(Some(id)).await?.into_iter().next())
    }

    async fn policy_targets(&self, hosts: Option<&[HostId]>) -> StoreResult<Vec<PolicyTarget>> {
        self.policy_targets_impl(hosts).await
    }

    async fn policy_generation(&self) -> StoreResult<u64> {
        let generation: i64 =
            sqlx::query_scalar("SELECT generation FROM policy_generation WHERE id = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        u64::try_from(generation)
            .map_err(|_| StoreError::Corrupt(format!("policy generation {generation}")))
    }

    async fn apply_policy_changes(
        &self,
        generation: u64,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>> {
        self.apply_policy_changes_impl(generation, policy, changes, audit)
            .await
    }

    async fn hosts_of_policy(&self, id: PolicyId) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {} FROM hosts WHERE policy_id = ? AND deleted_at IS NULL ORDER BY name, id",
            codec::HOST_COLUMNS
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)).bind(id.to_string());
        crate::shared::read_hosts(&self.pool, query).await
    }

    async fn policy_coverage(&self) -> StoreResult<Vec<PolicyCoverage>> {
        self.policy_coverage_impl().await
    }
}
