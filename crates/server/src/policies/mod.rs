//! Fleet policies: a selector over host labels, a priority, and what every
//! host it wins for gets — a repository (from a URL template), schedules,
//! a freshness. Configuration becomes a fleet-level thing: a host enrolled
//! with `env=prod` gets its repository initialised and its schedules pushed
//! without anyone touching it (DESIGN §6).
//!
//! Policies are not evaluated per request: the reconciler
//! ([`reconcile`]) writes what they give onto the hosts (the winning policy
//! id, policy-given repository settings and schedule rows marked with
//! their policy) whenever a policy, a host's labels or a host's own
//! settings change, in one transaction, and pushes the result to connected
//! agents. Everything else (schedule fires, pushes on `hello`, lists) reads
//! those rows as it always did. Which policy wins and what it gives is
//! decided in [`effective`] alone.

pub mod effective;
pub mod reconcile;

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use rm_core::schedule::CronSchedule;
use rm_core::{HostId, Labels, PolicyId, ScheduleId, Selector};
use rm_protocol::api::{
    HostView, PolicyHostView, PolicyRepositoryRequest, PolicyRepositoryView, PolicyRequest,
    PolicyScheduleView, PolicyView, ScheduleRequest,
};
use rm_protocol::RepositoryConfig;
use rm_store::{
    Host, NewAuditEntry, PolicyCoverage, PolicyRecord, PolicyScheduleRecord, PolicyWrite,
    StoreError,
};
use serde::{Deserialize, Serialize};

use crate::state::AppState;

pub use reconcile::reconcile;

/// Lowest and highest priority.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// Shortest and longest freshness a policy or host may set: a minute to a
/// year.
pub const FRESHNESS_RANGE: std::ops::RangeInclusive<u64> = 60..=366 * 24 * 3600;

/// Longest policy name.
const MAX_NAME_CHARS: usize = 128;

/// Most schedules one policy may give.
const MAX_SCHEDULES: usize = 32;

/// How many next fires a policy schedule shows.
const NEXT_FIRES: usize = 3;

/// What can go wrong with a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The request breaks a rule; names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such policy.
    #[error("policy `{0}` not found")]
    NotFound(PolicyId),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The repository template could not be sealed or opened.
    #[error("policy repository settings: {0}")]
    Sealing(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for PolicyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(message) => PolicyError::Conflict(message),
            other => PolicyError::Store(other),
        }
    }
}

/// A policy's repository template as sealed: the request's fields.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Template {
    /// URL, maybe with `{host}` / `{host_id}`.
    pub url: String,
    /// One password for every repository; `None`: generated per repository.
    pub password: Option<String>,
    /// Backend keys.
    pub env: BTreeMap<String, String>,
    /// The second repository `copy` jobs copy to.
    #[serde(default)]
    pub copy_to: Option<CopyTemplate>,
}

/// A policy's second repository, as sealed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CopyTemplate {
    /// URL, maybe with placeholders.
    pub url: String,
    /// One password for every copy; `None`: generated per repository.
    pub password: Option<String>,
    /// Backend keys.
    pub env: BTreeMap<String, String>,
}

/// The owner a policy's sealed template is bound to.
fn template_owner(policy: PolicyId) -> String {
    format!("policy:{policy}/repository")
}

/// Opens a policy's repository template.
pub(crate) fn open_template(
    state: &AppState,
    policy: &PolicyRecord,
) -> Result<Option<Template>, PolicyError> {
    let Some(sealed) = &policy.repository else {
        return Ok(None);
    };
    let plain = crate::sealing::open_for(state.sealing_key(), &template_owner(policy.id), sealed)
        .map_err(|e| PolicyError::Sealing(e.to_string()))?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| PolicyError::Sealing(e.to_string()))
}

/// Checks a request and makes the record it describes (`id` and
/// `created_at` from `existing` on an update). Schedules keep their ids:
/// by the id given, else the old schedule of the same kind in the same
/// place among its kind.
fn record_from(
    state: &AppState,
    req: &PolicyRequest,
    id: PolicyId,
    existing: Option<&PolicyRecord>,
) -> Result<PolicyRecord, PolicyError> {
    let invalid = PolicyError::Invalid;
    let name = crate::enrollment::validate_label("name", &req.name, MAX_NAME_CHARS)
        .map_err(|e| invalid(e.to_string()))?;
    let selector = Labels::parse("selector", req.selector.clone())
        .map(Selector)
        .map_err(|e| invalid(e.to_string()))?;
    let priority = req.priority.unwrap_or(0);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(invalid(format!(
            "`priority` must be from {} to {}, not {priority}",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end()
        )));
    }
    if let Some(f) = req.freshness_seconds {
        check_freshness("freshness_seconds", f).map_err(invalid)?;
    }
    if let Some(f) = req.offline_seconds {
        check_freshness("offline_seconds", f).map_err(invalid)?;
    }
    let repository = req
        .repository
        .as_ref()
        .map(|r| check_template_request(r).map_err(invalid))
        .transpose()?;
    if req.schedules.len() > MAX_SCHEDULES {
        return Err(invalid(format!(
            "`schedules` has {} entries; at most {MAX_SCHEDULES} are allowed",
            req.schedules.len()
        )));
    }
    let old = existing.map(|p| p.schedules.as_slice()).unwrap_or_default();
    let mut schedules: Vec<PolicyScheduleRecord> = Vec::with_capacity(req.schedules.len());
    for (i, s) in req.schedules.iter().enumerate() {
        let as_host = ScheduleRequest {
            kind: s.kind.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            params: s.params.clone(),
            enabled: s.enabled,
            jitter_seconds: s.jitter_seconds,
        };
        let (kind, params, _) = crate::schedules::validate(&as_host)
            .map_err(|e| invalid(format!("`schedules[{i}]`: {e}")))?;
        let kind = kind.as_str().to_owned();
        let id = match &s.id {
            Some(raw) => {
                let id: ScheduleId = raw.parse().map_err(|_| {
                    invalid(format!(
                        "`schedules[{i}].id`: `{raw}` is not a schedule id of this policy"
                    ))
                })?;
                if !old.iter().any(|o| o.id == id) {
                    return Err(invalid(format!(
                        "`schedules[{i}].id`: `{raw}` is not a schedule id of this policy"
                    )));
                }
                id
            }
            None => {
                let place = schedules.iter().filter(|n| n.kind == kind).count();
                old.iter()
                    .filter(|o| o.kind == kind)
                    .nth(place)
                    .map(|o| o.id)
                    .filter(|id| !schedules.iter().any(|n| n.id == *id))
                    .unwrap_or_default()
            }
        };
        if schedules.iter().any(|n| n.id == id) {
            return Err(invalid(format!(
                "`schedules[{i}].id`: `{id}` is given twice"
            )));
        }
        schedules.push(PolicyScheduleRecord {
            id,
            kind,
            cron: s.cron.trim().to_owned(),
            timezone: s.timezone.as_deref().map(str::trim).map(str::to_owned),
            params,
            enabled: s.enabled,
            jitter_seconds: s.jitter_seconds,
        });
    }
    let sealed = repository
        .map(|template| {
            let plain =
                serde_json::to_vec(&template).map_err(|e| PolicyError::Sealing(e.to_string()))?;
            crate::sealing::seal_for(state.sealing_key(), &template_owner(id), &plain)
                .map_err(|e| PolicyError::Sealing(e.to_string()))
        })
        .transpose()?;
    let now = Utc::now();
    Ok(PolicyRecord {
        id,
        name,
        selector,
        priority,
        repository: sealed,
        schedules,
        freshness_seconds: req.freshness_seconds,
        offline_seconds: req.offline_seconds,
        created_at: existing.map(|p| p.created_at).unwrap_or(now),
        updated_at: now,
    })
}

/// Checks a freshness value.
pub(crate) fn check_freshness(field: &str, seconds: u64) -> Result<(), String> {
    if FRESHNESS_RANGE.contains(&seconds) {
        Ok(())
    } else {
        Err(format!(
            "`{field}` must be from {} (a minute) to {} (a year) seconds, not {seconds}",
            FRESHNESS_RANGE.start(),
            FRESHNESS_RANGE.end()
        ))
    }
}

/// Checks a repository template: known placeholders only, and the
/// settings a host would get must pass the same rules as a host's own
/// (tried with a sample host, whose name is as odd as names may be).
fn check_template_request(req: &PolicyRepositoryRequest) -> Result<Template, String> {
    effective::check_template(&req.url).map_err(|e| format!("`repository.url` {e}"))?;
    let sample_host = HostId::new();
    let generated = || String::from("generated");
    if let Some(copy) = &req.copy_to {
        effective::check_template(&copy.url)
            .map_err(|e| format!("`repository.copy_to.url` {e}"))?;
        if copy.url.trim() != copy.url || copy.url.starts_with('-') {
            return Err(String::from(
                "`repository.copy_to.url` must not start with `-` or start or end with spaces",
            ));
        }
    }
    let sample = RepositoryConfig {
        url: effective::expand(&req.url, "-sample host", sample_host),
        password: req.password.clone().unwrap_or_else(generated),
        env: req.env.clone(),
        copy_to: req.copy_to.as_ref().map(|copy| rm_protocol::CopyTarget {
            url: effective::expand(&copy.url, "-sample host", sample_host),
            password: copy.password.clone().unwrap_or_else(generated),
            env: copy.env.clone(),
        }),
    };
    if req.url.trim() != req.url || req.url.starts_with('-') {
        return Err(String::from(
            "`repository.url` must not start with `-` or start or end with spaces",
        ));
    }
    rm_protocol::params::validate_repository(&sample)
        .map_err(|e| format!("`repository.{}`: {}", e.field, e.problem))?;
    Ok(Template {
        url: req.url.clone(),
        password: req.password.clone(),
        env: req.env.clone(),
        copy_to: req.copy_to.as_ref().map(|copy| CopyTemplate {
            url: copy.url.clone(),
            password: copy.password.clone(),
            env: copy.env.clone(),
        }),
    })
}

/// Adds a policy and applies it to the fleet, in one transaction.
pub async fn create(
    state: &AppState,
    req: &PolicyRequest,
    audit: Option<&crate::audit::Audit>,
) -> Result<PolicyView, PolicyError> {
    let id = PolicyId::new();
    let record = record_from(state, req, id, None)?;
    let entry = audit.map(|a| entry(a, crate::audit::Action::PolicyCreate, &record));
    reconcile(
        state,
        None,
        Some(PolicyWrite::Create(record)),
        entry.as_ref(),
    )
    .await?;
    show(state, id).await
}

/// Replaces a policy and applies the change to the fleet, in one
/// transaction: each host it changes gets one schedule-version bump.
pub(crate) async fn update(
    state: &AppState,
    id: PolicyId,
    req: &PolicyRequest,
    audit: Option<&crate::audit::Audit>,
) -> Result<PolicyView, PolicyError> {
    let existing = state
        .store()
        .policy(id)
        .await?
        .ok_or(PolicyError::NotFound(id))?;
    let record = record_from(state, req, id, Some(&existing))?;
    let entry = audit.map(|a| entry(a, crate::audit::Action::PolicyUpdate, &record));
    reconcile(
        state,
        None,
        Some(PolicyWrite::Update(record)),
        entry.as_ref(),
    )
    .await
    .map_err(|e| not_found(e, id))?;
    show(state, id).await
}

/// Deletes a policy and takes back exactly what it gave.
pub(crate) async fn delete(
    state: &AppState,
    id: PolicyId,
    audit: Option<&crate::audit::Audit>,
) -> Result<(), PolicyError> {
    let existing = state
        .store()
        .policy(id)
        .await?
        .ok_or(PolicyError::NotFound(id))?;
    let entry = audit.map(|a| entry(a, crate::audit::Action::PolicyDelete, &existing));
    reconcile(state, None, Some(PolicyWrite::Delete(id)), entry.as_ref())
        .await
        .map_err(|e| not_found(e, id))?;
    Ok(())
}

fn not_found(e: PolicyError, id: PolicyId) -> PolicyError {
    match e {
        PolicyError::Store(StoreError::NotFound(_)) => PolicyError::NotFound(id),
        other => other,
    }
}

fn entry(
    audit: &crate::audit::Audit,
    action: crate::audit::Action,
    p: &PolicyRecord,
) -> NewAuditEntry {
    audit.entry(
        action,
        Some(crate::audit::Target::new("policy", p.id)),
        serde_json::json!({
            "name": p.name,
            "selector": p.selector.to_string(),
            "priority": p.priority,
            "schedules": p.schedules.len(),
            "repository": p.repository.is_some(),
        }),
    )
}

/// Every policy as the API shows it, with its coverage.
pub async fn list(state: &AppState) -> Result<Vec<PolicyView>, PolicyError> {
    let policies = state.store().policies().await?;
    let coverage = coverage_map(state.store().policy_coverage().await?);
    Ok(policies
        .iter()
        .map(|p| view(state, p, coverage.get(&p.id)))
        .collect())
}

/// One policy as the API shows it.
pub(crate) async fn show(state: &AppState, id: PolicyId) -> Result<PolicyView, PolicyError> {
    let policy = state
        .store()
        .policy(id)
        .await?
        .ok_or(PolicyError::NotFound(id))?;
    let coverage = coverage_map(state.store().policy_coverage().await?);
    Ok(view(state, &policy, coverage.get(&id)))
}

/// The hosts a policy applies to, with their sync state.
pub(crate) async fn hosts(
    state: &AppState,
    id: PolicyId,
) -> Result<Vec<PolicyHostView>, PolicyError> {
    if state.store().policy(id).await?.is_none() {
        return Err(PolicyError::NotFound(id));
    }
    Ok(state
        .store()
        .hosts_of_policy(id)
        .await?
        .into_iter()
        .map(|h| PolicyHostView {
            host_id: h.id.to_string(),
            in_sync: in_sync(&h),
            name: h.name,
            online: h.online,
            schedule_version: h.schedule_version,
            schedule_applied_version: h.schedule_applied_version,
            labels: h.labels.as_map().clone(),
        })
        .collect())
}

fn coverage_map(rows: Vec<PolicyCoverage>) -> HashMap<PolicyId, PolicyCoverage> {
    rows.into_iter().map(|c| (c.policy_id, c)).collect()
}

/// Whether the agent runs the schedule set the server wants.
pub(crate) fn in_sync(host: &Host) -> bool {
    // A host that never had schedules has nothing to drift from.
    host.schedule_version == 0 || host.schedule_applied_version == Some(host.schedule_version)
}

/// How a template's password is shown: `given` or `generated`.
fn password_kind(given: Option<&String>) -> String {
    String::from(if given.is_some() {
        "given"
    } else {
        "generated"
    })
}

fn view(state: &AppState, p: &PolicyRecord, coverage: Option<&PolicyCoverage>) -> PolicyView {
    let now = Utc::now();
    let repository = match open_template(state, p) {
        Ok(Some(t)) => Some(PolicyRepositoryView {
            url: rm_core::redact::redact_url(&t.url),
            password: password_kind(t.password.as_ref()),
            env_keys: t.env.into_keys().collect(),
            copy_to: t.copy_to.map(|c| rm_protocol::api::PolicyCopyView {
                url: rm_core::redact::redact_url(&c.url),
                password: password_kind(c.password.as_ref()),
                env_keys: c.env.into_keys().collect(),
            }),
        }),
        Ok(None) => None,
        Err(e) => Some(PolicyRepositoryView {
            url: format!("(cannot be opened: {e})"),
            password: String::new(),
            env_keys: Vec::new(),
            copy_to: None,
        }),
    };
    PolicyView {
        id: p.id.to_string(),
        name: p.name.clone(),
        selector: p.selector.0.as_map().clone(),
        priority: p.priority,
        repository,
        schedules: p
            .schedules
            .iter()
            .map(|s| {
                let cron = CronSchedule::parse(&s.cron, s.timezone.as_deref()).ok();
                let mut next_fires = Vec::new();
                if let Some(cron) = cron.as_ref().filter(|_| s.enabled) {
                    let mut after = now;
                    while next_fires.len() < NEXT_FIRES {
                        match cron.next_after(after) {
                            Some(next) => {
                                next_fires.push(next);
                                after = next;
                            }
                            None => break,
                        }
                    }
                }
                PolicyScheduleView {
                    id: s.id.to_string(),
                    kind: s.kind.clone(),
                    cron: s.cron.clone(),
                    timezone: s.timezone.clone(),
                    params: s.params.clone(),
                    enabled: s.enabled,
                    jitter_seconds: s.jitter_seconds,
                    description: cron
                        .as_ref()
                        .map(CronSchedule::describe)
                        .unwrap_or_else(|| format!("cron `{}`", s.cron)),
                    next_fires,
                }
            })
            .collect(),
        freshness_seconds: p.freshness_seconds,
        offline_seconds: p.offline_seconds,
        hosts: coverage.map(|c| c.hosts).unwrap_or(0),
        hosts_in_sync: coverage.map(|c| c.in_sync).unwrap_or(0),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// What decides, at `now`, whether a host is protected (for the store's
/// counts and lists, which judge it as [`Fleet::host_view`] does).
pub(crate) fn protected_at(now: chrono::DateTime<Utc>) -> rm_store::ProtectedAt {
    rm_store::ProtectedAt {
        now,
        default_freshness_seconds: effective::DEFAULT_FRESHNESS_SECONDS,
    }
}

/// The policies, loaded once per request that shows hosts, so each host's
/// view names its policy and freshness without a query per host.
pub(crate) struct Fleet {
    policies: Vec<PolicyRecord>,
}

impl Fleet {
    /// Loads the policies.
    pub(crate) async fn load(state: &AppState) -> Result<Fleet, StoreError> {
        Ok(Fleet {
            policies: state.store().policies().await?,
        })
    }

    /// A policy by id.
    pub(crate) fn policy(&self, id: PolicyId) -> Option<&PolicyRecord> {
        self.policies.iter().find(|p| p.id == id)
    }

    /// A host as the API shows it.
    pub(crate) fn host_view(&self, host: Host) -> HostView {
        let policy = host.policy_id.and_then(|id| self.policy(id));
        let (freshness_seconds, freshness_source) =
            effective::freshness(host.freshness_seconds, policy);
        let (offline_seconds, offline_source) =
            effective::offline_after(host.offline_seconds, policy);
        let protected =
            effective::protected(host.last_backup_success_at, freshness_seconds, Utc::now());
        let outranked = effective::ranked(&self.policies, &host.labels)
            .into_iter()
            .filter(|p| Some(p.id) != host.policy_id)
            .map(|p| p.id.to_string())
            .collect();
        HostView {
            id: host.id.to_string(),
            schedule_in_sync: in_sync(&host),
            unconfigured: !host.has_repository && !host.has_schedules,
            name: host.name,
            hostname: host.hostname,
            online: host.online,
            enrolled_at: host.enrolled_at,
            last_seen_at: host.last_seen_at,
            agent_version: host.agent_version.clone(),
            restic_version: host.restic_version,
            restic_error: host.restic_error,
            protocol_version: host.protocol_version,
            os: host.os,
            arch: host.arch,
            schedule_version: host.schedule_version,
            schedule_applied_version: host.schedule_applied_version,
            last_backup_at: host.last_backup_at,
            last_backup_status: host.last_backup_status.map(|s| s.to_string()),
            repo_size_bytes: host.repo_size_bytes,
            token_rotated_at: host.token_rotated_at,
            token_rotation_pending: host.token_rotation_pending,
            agent_revoked_at: host.agent_revoked_at,
            hooks: host.hooks,
            hooks_refused: host
                .hooks_refused
                .into_iter()
                .map(|r| rm_protocol::RefusedHook {
                    name: r.name,
                    reason: r.reason,
                })
                .collect(),
            snapshot_count: host.snapshot_count,
            repository_refused: host.repository_refused,
            labels: host.labels.as_map().clone(),
            policy_id: host.policy_id.map(|p| p.to_string()),
            policy_name: policy.map(|p| p.name.clone()),
            policies_outranked: outranked,
            repository_source: host.has_repository.then(|| {
                String::from(if host.repository_policy_id.is_some() {
                    "policy"
                } else {
                    "host"
                })
            }),
            repository_url: host.repository_key,
            repository_shared_with: host.repository_shared_with,
            freshness_seconds,
            freshness_source: freshness_source.to_owned(),
            protected,
            last_backup_success_at: host.last_backup_success_at,
            offline_seconds,
            offline_source: offline_source.to_owned(),
            agent_outdated: crate::upgrades::outdated(host.agent_version.as_deref()),
            platform: host.platform,
            agent_upgrade: rm_protocol::api::AgentUpgradeView {
                requested_version: host.upgrade.requested_version,
                requested_at: host.upgrade.requested_at,
                state: host.upgrade.state,
                version: host.upgrade.version,
                error: host.upgrade.error,
                at: host.upgrade.at,
            },
        }
    }
}
