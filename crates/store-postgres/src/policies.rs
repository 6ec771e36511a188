//! Fleet policies: the PostgreSQL side of [`PolicyStore`] — the policies
//! themselves, what the server's reconciler reads about hosts, and the
//! changes it writes back for many hosts in one transaction.
//!
//! A change for the whole fleet is a handful of statements, each taking
//! every host at once through `UNNEST` of bound arrays, not one statement
//! per host: 10,000 hosts are written in one round trip per kind of change.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use rm_core::{HostId, PolicyId};
use rm_store::{
    Host, HostPolicyChange, NewAuditEntry, PolicyCoverage, PolicyRecord, PolicyStore, PolicyTarget,
    PolicyWrite, RepositoryChange, ScheduleRecord, SealedRepository, StoreError, StoreResult,
};
use rm_store_sql::encode;
use rm_store_sql::encode::ms;
use rm_store_sql::{
    HostRow, HostVersionRow, PolicyCoverageRow, PolicyRow, PolicyTargetRow, ScheduleRow,
};
use sqlx::postgres::PgConnection;
// The SQL texts here are built from constant column lists, constant
// clauses and `$n` placeholders; values are always bound.
use sqlx::AssertSqlSafe;

use crate::shared::{
    db_error, fetch_all_models, finish, insert_error, read_hosts, write_audit, HOST_COLUMNS,
};
use crate::PostgresStore;

impl PostgresStore {
    /// Every policy (oldest first), or the one with `id`.
    async fn policies_where(&self, id: Option<PolicyId>) -> StoreResult<Vec<PolicyRecord>> {
        let sql = format!(
            "SELECT {} FROM policies WHERE $1::TEXT IS NULL OR id = $1 ORDER BY created_at, id",
            rm_store_sql::POLICY_COLUMNS
        );
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, PolicyRow>(AssertSqlSafe(sql)).bind(id.map(|i| i.to_string())),
        )
        .await
    }
}

/// What the reconciler needs of `hosts` (every live host when `None`), read
/// on `conn` inside one snapshot.
async fn read_targets(
    conn: &mut PgConnection,
    hosts: Option<&[HostId]>,
) -> StoreResult<Vec<PolicyTarget>> {
    let ids: Option<Vec<String>> = hosts.map(|ids| ids.iter().map(|h| h.to_string()).collect());
    let sql = format!(
        "SELECT hosts.id AS host_id, hosts.name AS name, hosts.labels AS labels, \
         hosts.policy_id AS policy_id, host_repositories.policy_id AS repository_policy_id, \
         {} FROM hosts LEFT JOIN host_repositories ON host_repositories.host_id = hosts.id \
         WHERE hosts.deleted_at IS NULL AND ($1::TEXT[] IS NULL OR hosts.id = ANY($1)) \
         ORDER BY hosts.id",
        rm_store_sql::REPOSITORY_COLUMNS_QUALIFIED
    );
    let rows = sqlx::query_as::<_, PolicyTargetRow>(AssertSqlSafe(sql))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    let mut targets = Vec::with_capacity(rows.len());
    let mut index = HashMap::with_capacity(rows.len());
    for row in rows {
        let target = PolicyTarget::try_from(row)?;
        index.insert(target.host_id, targets.len());
        targets.push(target);
    }
    // The same hosts' schedules in one pass (by the `schedules_host_created`
    // index when hosts are named).
    let sql = format!(
        "SELECT {} FROM schedules JOIN hosts ON hosts.id = schedules.host_id \
         WHERE hosts.deleted_at IS NULL AND ($1::TEXT[] IS NULL OR schedules.host_id = ANY($1)) \
         ORDER BY schedules.created_at, schedules.id",
        rm_store_sql::SCHEDULE_COLUMNS_QUALIFIED
    );
    let schedule_rows = sqlx::query_as::<_, ScheduleRow>(AssertSqlSafe(sql))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    for row in schedule_rows {
        let schedule = ScheduleRecord::try_from(row)?;
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

/// Inserts a policy ([`StoreError::Conflict`] on a taken name or id).
async fn insert_policy(conn: &mut PgConnection, p: &PolicyRecord) -> StoreResult<()> {
    let schedules = policy_schedules(p)?;
    sqlx::query(
        "INSERT INTO policies (id, name, selector, priority, repository_nonce, \
         repository_ciphertext, schedules, freshness_seconds, offline_seconds, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
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
    .map_err(|e| taken_name(e, p))?;
    Ok(())
}

/// Replaces every field of policy `p.id` but its creation time; false when
/// there is no such policy. One conditional UPDATE, so a policy deleted by
/// a concurrent change is not written back.
async fn update_policy(conn: &mut PgConnection, p: &PolicyRecord) -> StoreResult<bool> {
    let schedules = policy_schedules(p)?;
    let updated = sqlx::query(
        "UPDATE policies SET name = $2, selector = $3, priority = $4, repository_nonce = $5, \
         repository_ciphertext = $6, schedules = $7, freshness_seconds = $8, \
         offline_seconds = $9, updated_at = $10 WHERE id = $1",
    )
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
    .bind(ms(p.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| taken_name(e, p))?
    .rows_affected();
    Ok(updated > 0)
}

fn policy_schedules(p: &PolicyRecord) -> StoreResult<String> {
    serde_json::to_string(&p.schedules)
        .map_err(|e| StoreError::Conflict(format!("policy schedules: {e}")))
}

fn taken_name(e: sqlx::Error, p: &PolicyRecord) -> StoreError {
    insert_error(
        e,
        || format!("a policy named `{}` already exists", p.name),
        "policy",
    )
}

/// The policy-given repository settings to store, one per host (the last
/// change of a host wins, as if the changes were written in turn).
struct RepositorySets {
    hosts: Vec<String>,
    nonces: Vec<Vec<u8>>,
    ciphertexts: Vec<Vec<u8>>,
    formats: Vec<i64>,
    updated: Vec<i64>,
    keys: Vec<String>,
    policies: Vec<String>,
}

impl RepositorySets {
    fn of(sets: &[(&str, &SealedRepository, &str, PolicyId)]) -> RepositorySets {
        RepositorySets {
            hosts: sets.iter().map(|s| s.0.to_owned()).collect(),
            nonces: sets.iter().map(|s| s.1.nonce.clone()).collect(),
            ciphertexts: sets.iter().map(|s| s.1.ciphertext.clone()).collect(),
            formats: sets.iter().map(|s| s.1.format.as_i64()).collect(),
            updated: sets.iter().map(|s| ms(s.1.updated_at)).collect(),
            keys: sets.iter().map(|s| s.2.to_owned()).collect(),
            policies: sets.iter().map(|s| s.3.to_string()).collect(),
        }
    }
}

/// Writes the hosts' repository changes: policy-given settings stored
/// (never over a host's own, which win) or removed.
async fn write_repositories(
    conn: &mut PgConnection,
    changes: &[HostPolicyChange],
) -> StoreResult<()> {
    let mut last: BTreeMap<String, &RepositoryChange> = BTreeMap::new();
    for change in changes {
        if !matches!(change.repository, RepositoryChange::Keep) {
            last.insert(change.host_id.to_string(), &change.repository);
        }
    }
    let mut sets = Vec::new();
    let mut removes = Vec::new();
    for (host, change) in &last {
        match change {
            RepositoryChange::Keep => {}
            RepositoryChange::Set {
                sealed,
                key,
                policy_id,
            } => sets.push((host.as_str(), sealed, key.as_str(), *policy_id)),
            RepositoryChange::Remove => removes.push(host.clone()),
        }
    }
    if !sets.is_empty() {
        let sets = RepositorySets::of(&sets);
        // The DO UPDATE's WHERE keeps a host's own settings (policy_id
        // NULL) even when they were stored after this transaction began;
        // a new store clears a refusal, as the one-host write does.
        sqlx::query(
            "INSERT INTO host_repositories (host_id, nonce, ciphertext, seal_format, updated_at, \
             refused, repository_key, policy_id) \
             SELECT v.host_id, v.nonce, v.ciphertext, v.seal_format, v.updated_at, NULL, \
             v.repository_key, v.policy_id \
             FROM UNNEST($1::TEXT[], $2::BYTEA[], $3::BYTEA[], $4::BIGINT[], $5::BIGINT[], \
                         $6::TEXT[], $7::TEXT[]) \
               AS v(host_id, nonce, ciphertext, seal_format, updated_at, repository_key, \
                    policy_id) \
             ON CONFLICT (host_id) DO UPDATE SET nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, seal_format = excluded.seal_format, \
             updated_at = excluded.updated_at, refused = NULL, \
             repository_key = excluded.repository_key, policy_id = excluded.policy_id \
             WHERE host_repositories.policy_id IS NOT NULL",
        )
        .bind(&sets.hosts)
        .bind(&sets.nonces)
        .bind(&sets.ciphertexts)
        .bind(&sets.formats)
        .bind(&sets.updated)
        .bind(&sets.keys)
        .bind(&sets.policies)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !removes.is_empty() {
        sqlx::query(
            "DELETE FROM host_repositories WHERE host_id = ANY($1) AND policy_id IS NOT NULL",
        )
        .bind(&removes)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Deletes the listed policy schedules (each only on its own host) and
/// stores the upserted ones (a row of another host is never replaced).
async fn write_schedules(conn: &mut PgConnection, changes: &[HostPolicyChange]) -> StoreResult<()> {
    let mut delete_ids = Vec::new();
    let mut delete_hosts = Vec::new();
    for change in changes {
        for id in &change.delete_schedules {
            delete_ids.push(id.to_string());
            delete_hosts.push(change.host_id.to_string());
        }
    }
    if !delete_ids.is_empty() {
        sqlx::query(
            "DELETE FROM schedules USING UNNEST($1::TEXT[], $2::TEXT[]) AS v(id, host_id) \
             WHERE schedules.id = v.id AND schedules.host_id = v.host_id \
             AND schedules.policy_id IS NOT NULL",
        )
        .bind(&delete_ids)
        .bind(&delete_hosts)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    // One row per schedule id (the last one given wins, as if written in
    // turn): an INSERT … ON CONFLICT may not touch one row twice.
    let mut upserts: BTreeMap<String, (HostId, &ScheduleRecord, (PolicyId, rm_core::ScheduleId))> =
        BTreeMap::new();
    for change in changes {
        for s in &change.upsert_schedules {
            let Some(policy) = s.policy else {
                return Err(StoreError::Conflict(format!(
                    "schedule `{}` is not a policy's",
                    s.id
                )));
            };
            upserts.insert(s.id.to_string(), (change.host_id, s, policy));
        }
    }
    if upserts.is_empty() {
        return Ok(());
    }
    let n = upserts.len();
    let (mut ids, mut hosts, mut kinds, mut crons, mut zones, mut params) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut enabled, mut jitter, mut created, mut updated, mut policies, mut policy_schedules) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, (host, s, (policy_id, policy_schedule_id))) in upserts {
        ids.push(id);
        hosts.push(host.to_string());
        kinds.push(s.kind.clone());
        crons.push(s.cron.clone());
        zones.push(s.timezone.clone());
        params.push(s.params.to_string());
        enabled.push(s.enabled);
        jitter.push(i64::from(s.jitter_seconds));
        created.push(ms(s.created_at));
        updated.push(ms(s.updated_at));
        policies.push(policy_id.to_string());
        policy_schedules.push(policy_schedule_id.to_string());
    }
    sqlx::query(
        "INSERT INTO schedules (id, host_id, kind, cron, timezone, params, enabled, \
         jitter_seconds, created_at, updated_at, policy_id, policy_schedule_id) \
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
                              $6::TEXT[], $7::BOOLEAN[], $8::BIGINT[], $9::BIGINT[], \
                              $10::BIGINT[], $11::TEXT[], $12::TEXT[]) \
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, cron = excluded.cron, \
         timezone = excluded.timezone, params = excluded.params, \
         enabled = excluded.enabled, jitter_seconds = excluded.jitter_seconds, \
         updated_at = excluded.updated_at, policy_id = excluded.policy_id, \
         policy_schedule_id = excluded.policy_schedule_id \
         WHERE schedules.host_id = excluded.host_id",
    )
    .bind(&ids)
    .bind(&hosts)
    .bind(&kinds)
    .bind(&crons)
    .bind(&zones)
    .bind(&params)
    .bind(&enabled)
    .bind(&jitter)
    .bind(&created)
    .bind(&updated)
    .bind(&policies)
    .bind(&policy_schedules)
    .execute(&mut *conn)
    .await
    .map_err(|e| insert_error(e, || "a schedule id is taken".to_owned(), "host"))?;
    Ok(())
}

#[async_trait]
impl PolicyStore for PostgresStore {
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        self.policies_where(None).await
    }

    async fn policy(&self, id: PolicyId) -> StoreResult<Option<PolicyRecord>> {
        Ok(self.policies_where(Some(id)).await?.into_iter().next())
    }

    async fn policy_targets(&self, hosts: Option<&[HostId]>) -> StoreResult<Vec<PolicyTarget>> {
        // One snapshot for both reads, so the hosts, their settings and
        // their schedules agree even while another server writes.
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            read_targets(&mut tx, hosts).await
        }
        .await;
        finish(tx, result).await
    }

    async fn apply_policy_changes(
        &self,
        policy: Option<&PolicyWrite>,
        changes: &[HostPolicyChange],
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Vec<(HostId, u64)>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let result: StoreResult<_> = async {
            match policy {
                Some(PolicyWrite::Create(p)) => insert_policy(&mut tx, p).await?,
                Some(PolicyWrite::Update(p)) => {
                    let found = update_policy(&mut tx, p).await?;
                    if !found {
                        return Err(StoreError::NotFound(format!("policy `{}`", p.id)));
                    }
                }
                Some(PolicyWrite::Delete(id)) => {
                    let deleted = sqlx::query("DELETE FROM policies WHERE id = $1")
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?
                        .rows_affected();
                    if deleted == 0 {
                        return Err(StoreError::NotFound(format!("policy `{id}`")));
                    }
                }
                None => {}
            }
            if !changes.is_empty() {
                let hosts: Vec<String> = changes.iter().map(|c| c.host_id.to_string()).collect();
                let policies: Vec<Option<String>> = changes
                    .iter()
                    .map(|c| c.policy_id.map(|p| p.to_string()))
                    .collect();
                // DISTINCT ON keeps a host's last change should one be listed
                // twice (an UPDATE … FROM would pick either).
                sqlx::query(
                    "UPDATE hosts SET policy_id = v.policy_id \
                 FROM (SELECT DISTINCT ON (host_id) host_id, policy_id \
                       FROM UNNEST($1::TEXT[], $2::TEXT[]) WITH ORDINALITY \
                         AS u(host_id, policy_id, n) ORDER BY host_id, n DESC) AS v \
                 WHERE hosts.id = v.host_id AND hosts.deleted_at IS NULL \
                 AND hosts.policy_id IS DISTINCT FROM v.policy_id",
                )
                .bind(&hosts)
                .bind(&policies)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
            write_repositories(&mut tx, changes).await?;
            write_schedules(&mut tx, changes).await?;
            // One version bump per host whose set changed (`= ANY` matches a
            // host listed twice once); a host deleted meanwhile is not bumped
            // and has nothing to push.
            let to_bump: Vec<String> = changes
                .iter()
                .filter(|c| c.changes_schedules())
                .map(|c| c.host_id.to_string())
                .collect();
            let mut bumped = Vec::with_capacity(to_bump.len());
            if !to_bump.is_empty() {
                let rows: Vec<HostVersionRow> = sqlx::query_as(
                    "UPDATE hosts SET schedule_version = schedule_version + 1 \
                 WHERE deleted_at IS NULL AND id = ANY($1) \
                 RETURNING id, schedule_version AS version",
                )
                .bind(&to_bump)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                for row in rows {
                    bumped.push(row.try_into()?);
                }
            }
            write_audit(&mut tx, audit).await?;
            Ok(bumped)
        }
        .await;
        finish(tx, result).await
    }

    async fn hosts_of_policy(&self, id: PolicyId) -> StoreResult<Vec<Host>> {
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE policy_id = $1 AND deleted_at IS NULL \
             ORDER BY name, id"
        );
        let query = sqlx::query_as::<_, HostRow>(AssertSqlSafe(sql)).bind(id.to_string());
        read_hosts(&self.pool, query).await
    }

    async fn policy_coverage(&self) -> StoreResult<Vec<PolicyCoverage>> {
        fetch_all_models(
            &self.pool,
            sqlx::query_as::<_, PolicyCoverageRow>(
                "SELECT policy_id, COUNT(*) AS hosts, \
                 COUNT(*) FILTER (WHERE schedule_version = 0 \
                   OR schedule_applied_version >= schedule_version) AS in_sync \
                 FROM hosts WHERE deleted_at IS NULL AND policy_id IS NOT NULL \
                 GROUP BY policy_id ORDER BY policy_id",
            ),
        )
        .await
    }
}
