//! The pages: dashboard, host, job and enrolment. Each handler gathers
//! what the page shows into plain display rows, so templates only lay out
//! strings.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rm_core::{HostId, JobId, JobStatus, Labels, PolicyId, Selector};
use rm_protocol::api::HostView;
use rm_store::{Host, Job, JobFilter, RepoStatsRecord};

use super::alerts::{self, AlertRow};
use super::format;
use super::session::{render, store_error, WebUser};
use crate::policies::Fleet;
use crate::state::AppState;

/// Host rows per dashboard page: enough for a glance, small enough that a
/// fleet of ten thousand renders in milliseconds.
const DASHBOARD_HOSTS: u32 = 200;

/// How a status looks: `ok` green, `warn` amber, `bad` red, `idle` grey.
fn job_class(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "ok",
        JobStatus::Partial | JobStatus::Skipped | JobStatus::Cancelled => "warn",
        JobStatus::Failed => "bad",
        JobStatus::Queued | JobStatus::Dispatched | JobStatus::Running => "busy",
    }
}

/// One host as tables show it.
pub(crate) struct HostRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) hostname: String,
    pub(crate) online: bool,
    pub(crate) last_seen: String,
    pub(crate) last_backup: String,
    pub(crate) last_backup_sort: i64,
    pub(crate) last_result: String,
    pub(crate) result_class: &'static str,
    pub(crate) stale: bool,
    pub(crate) repo_size: String,
    pub(crate) repo_size_sort: u64,
    pub(crate) snapshots: String,
    pub(crate) in_sync: bool,
    pub(crate) agent_version: String,
    pub(crate) restic_version: String,
    pub(crate) restic_error: Option<String>,
    pub(crate) platform: String,
    pub(crate) has_repository: bool,
    /// Why the stored repository settings are not used, if they are not.
    pub(crate) repository_refused: Option<String>,
    /// Hooks the agent listed as usable.
    pub(crate) hooks: Vec<String>,
    /// Files in its hooks folder it refuses, with why: (name, reason).
    pub(crate) hooks_refused: Vec<(String, String)>,
    /// Its labels as `key=value`, each with the dashboard link that
    /// filters by it.
    pub(crate) labels: Vec<(String, String)>,
    /// The policy that applies to it.
    pub(crate) policy_name: Option<String>,
    /// How many other hosts use its repository.
    pub(crate) shared_with: u64,
    /// Neither a repository nor a schedule.
    pub(crate) unconfigured: bool,
    /// Its agent is older than the server.
    pub(crate) agent_outdated: bool,
    /// Its agent reported a platform, so it can upgrade itself.
    pub(crate) can_upgrade: bool,
    /// The last agent upgrade: (badge class, state, what to say), or
    /// `None` when none was ever asked for or reported.
    pub(crate) upgrade: Option<(&'static str, String, String)>,
}

/// The host page's line about its last agent upgrade.
fn upgrade_line(
    view: &rm_protocol::api::AgentUpgradeView,
    now: DateTime<Utc>,
) -> Option<(&'static str, String, String)> {
    if let (Some(state), Some(version)) = (&view.state, &view.version) {
        let when = view.at.map(|at| format::ago(at, now)).unwrap_or_default();
        let class = match state.as_str() {
            "installed" => "ok",
            "failed" => "bad",
            _ => "busy",
        };
        let mut text = format!("to {version}, {when}");
        if let Some(error) = &view.error {
            text.push_str(": ");
            text.push_str(error);
        }
        if let Some(requested) = &view.requested_version {
            if state == "failed" || state == "installed" {
                text.push_str(&format!("; {requested} requested again"));
            }
        }
        return Some((class, state.replace('_', " "), text));
    }
    view.requested_version.as_ref().map(|requested| {
        (
            "warn",
            String::from("requested"),
            format!("to {requested}: sent when the agent next connects"),
        )
    })
}

/// The dashboard filtered by `labels` (`key=value,…`; empty: every
/// host), at `page` when given.
fn dashboard_link(labels: &str, page: Option<u32>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if !labels.is_empty() {
        query.append_pair("labels", labels);
    }
    if let Some(page) = page {
        query.append_pair("page", &page.to_string());
    }
    let query = query.finish();
    if query.is_empty() {
        String::from("/")
    } else {
        format!("/?{query}")
    }
}

/// A host's row; the fleet-level parts (labels, policy, sharing) from its
/// API view, where they are decided.
fn host_row(host: &Host, view: &HostView, now: DateTime<Utc>) -> HostRow {
    let stale = !view.protected;
    HostRow {
        id: host.id.to_string(),
        name: host.name.clone(),
        hostname: host.hostname.clone(),
        online: host.online,
        last_seen: host
            .last_seen_at
            .map(|at| format::ago(at, now))
            .unwrap_or_else(|| String::from("never")),
        last_backup: host
            .last_backup_at
            .map(|at| format::ago(at, now))
            .unwrap_or_else(|| String::from("never")),
        last_backup_sort: host.last_backup_at.map(|at| at.timestamp()).unwrap_or(0),
        last_result: host
            .last_backup_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| String::from("—")),
        result_class: host.last_backup_status.map(job_class).unwrap_or("idle"),
        stale,
        repo_size: host
            .repo_size_bytes
            .map(format::bytes)
            .unwrap_or_else(|| String::from("—")),
        repo_size_sort: host.repo_size_bytes.unwrap_or(0),
        snapshots: host
            .snapshot_count
            .map(|n| n.to_string())
            .unwrap_or_else(|| String::from("—")),
        in_sync: host.schedule_version == 0
            || host.schedule_applied_version == Some(host.schedule_version),
        agent_version: host
            .agent_version
            .clone()
            .unwrap_or_else(|| String::from("—")),
        restic_version: host
            .restic_version
            .clone()
            .unwrap_or_else(|| String::from("missing")),
        restic_error: host.restic_error.clone(),
        platform: match (&host.os, &host.arch) {
            (Some(os), Some(arch)) => format!("{os}/{arch}"),
            _ => String::from("—"),
        },
        has_repository: host.has_repository,
        repository_refused: host.repository_refused.clone(),
        hooks: host.hooks.clone(),
        hooks_refused: host
            .hooks_refused
            .iter()
            .map(|r| (r.name.clone(), r.reason.clone()))
            .collect(),
        labels: view
            .labels
            .iter()
            .map(|(k, v)| {
                let pair = format!("{k}={v}");
                let link = dashboard_link(&pair, None);
                (pair, link)
            })
            .collect(),
        policy_name: view.policy_name.clone(),
        shared_with: view.repository_shared_with,
        unconfigured: view.unconfigured,
        agent_outdated: view.agent_outdated,
        can_upgrade: view.platform.is_some(),
        upgrade: upgrade_line(&view.agent_upgrade, now),
    }
}

/// One job as tables show it.
pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) host_id: String,
    pub(crate) host_name: String,
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) status_class: &'static str,
    pub(crate) trigger: String,
    pub(crate) created: String,
    pub(crate) error: String,
}

fn job_row(job: &Job, host_name: &str, now: DateTime<Utc>) -> JobRow {
    JobRow {
        id: job.id.to_string(),
        host_id: job.host_id.to_string(),
        host_name: host_name.to_owned(),
        kind: job.kind.clone(),
        status: job.status.to_string(),
        status_class: job_class(job.status),
        trigger: job.trigger.as_str().replace('_', "-"),
        created: format::ago(job.created_at, now),
        error: job.error.clone().unwrap_or_default(),
    }
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{what} not found")).into_response()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    user: super::session::Who,
    csrf: String,
    online: u64,
    offline: u64,
    stale: u64,
    unconfigured: u64,
    total: u64,
    /// Agents older than the server.
    outdated: u64,
    /// Firing alerts of the filtered hosts, newest first (at most
    /// [`alerts::DASHBOARD_ALERTS`]), and how many fire in all.
    alerts: Vec<AlertRow>,
    firing: u64,
    /// The alerts page with the dashboard's filter.
    alerts_link: String,
    hosts: Vec<HostRow>,
    /// 1-based number of the first and last host row shown.
    first: u64,
    last: u64,
    /// Links to the neighbouring pages, when there are any.
    prev_page: Option<String>,
    next_page: Option<String>,
    jobs: Vec<JobRow>,
    /// The label filter as typed (shown back in its box).
    filter_text: String,
    /// The filter in use, `key=value,…`; empty: every host.
    filter: String,
    /// Why the typed filter was refused; every host is shown meanwhile
    /// and the bulk actions are off.
    filter_error: Option<String>,
}

/// Query of the dashboard.
#[derive(serde::Deserialize)]
pub(crate) struct DashboardQuery {
    page: Option<String>,
    /// A label filter, `env=prod,role=db`.
    labels: Option<String>,
}

/// `GET /?labels=k=v,…&page=N`: the fleet at a glance. The counts come
/// from one aggregate query; the host table shows one page of hosts, those
/// needing attention (offline, not backed up) first, so a large fleet's
/// problems are on page 1 and the page stays fast. Both count and list
/// only the hosts the label filter matches, and the bulk actions act on
/// exactly those.
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<DashboardQuery>,
) -> Response {
    let now = Utc::now();
    let protected = crate::policies::protected_at(now);
    let filter_text = query.labels.unwrap_or_default();
    let (selector, mut filter_error) = match Labels::parse_pairs("labels", &filter_text) {
        Ok(labels) => (Selector(labels), None),
        Err(e) => (Selector::default(), Some(e.to_string())),
    };
    // A scoped user's dashboard counts and lists their hosts only.
    let selector = match crate::access::narrow(&user.operator, &selector) {
        Some(selector) => selector,
        None => {
            filter_error = Some(String::from(
                "`labels` asks for hosts outside your scope; showing your scope",
            ));
            user.operator.scope.clone().unwrap_or_default()
        }
    };
    let filter = if selector.is_everything() {
        String::new()
    } else {
        selector.to_string()
    };
    let counts = match state.store().host_counts(protected, &selector).await {
        Ok(counts) => counts,
        Err(e) => return store_error(e),
    };
    let outdated = match state.store().agent_versions(&selector).await {
        Ok(versions) => crate::upgrades::outdated_count(&versions),
        Err(e) => return store_error(e),
    };
    let firing_alerts = match alerts::firing_rows(
        &state,
        crate::alerts::AlertQuery {
            labels: Some(filter.clone()),
            limit: Some(alerts::DASHBOARD_ALERTS),
            ..Default::default()
        },
        None,
        now,
    )
    .await
    {
        Ok(rows) => rows,
        Err(e) => return alerts::alert_error(e),
    };
    let firing = match firing_count(&state, &selector).await {
        Ok(n) => n,
        Err(e) => return store_error(e),
    };
    // A page number from a link; anything odd shows the first page.
    let pages = counts.total.div_ceil(u64::from(DASHBOARD_HOSTS)).max(1);
    let page = query
        .page
        .as_deref()
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1 && u64::from(*p) <= pages)
        .unwrap_or(1);
    let offset = (page - 1).saturating_mul(DASHBOARD_HOSTS);
    let hosts = match state
        .store()
        .list_hosts_attention_first(protected, &selector, offset, DASHBOARD_HOSTS)
        .await
    {
        Ok(hosts) => hosts,
        Err(e) => return store_error(e),
    };
    let fleet = match Fleet::load(&state).await {
        Ok(fleet) => fleet,
        Err(e) => return store_error(e),
    };
    let rows: Vec<HostRow> = hosts
        .iter()
        .map(|h| host_row(h, &fleet.host_view(h.clone()), now))
        .collect();
    let jobs = match state
        .store()
        .list_jobs(&JobFilter {
            limit: 15,
            scope: user.operator.scope.clone(),
            ..JobFilter::default()
        })
        .await
    {
        Ok(jobs) => jobs,
        Err(e) => return store_error(e),
    };
    let mut job_rows = Vec::with_capacity(jobs.len());
    for job in &jobs {
        // Most recent jobs' hosts are on the page; others are one lookup
        // each, and there are at most 15.
        let name = match hosts.iter().find(|h| h.id == job.host_id) {
            Some(host) => host.name.clone(),
            None => match state.store().host(job.host_id).await {
                Ok(host) => host
                    .map(|h| h.name)
                    .unwrap_or_else(|| job.host_id.to_string()),
                Err(e) => return store_error(e),
            },
        };
        job_rows.push(job_row(job, &name, now));
    }
    let first = u64::from(offset) + 1;
    let mut page = render(&DashboardPage {
        user: user.username,
        csrf: user.csrf,
        online: counts.online,
        offline: counts.offline(),
        stale: counts.not_backed_up,
        unconfigured: counts.unconfigured,
        total: counts.total,
        outdated,
        alerts: firing_alerts,
        firing,
        alerts_link: if filter.is_empty() {
            String::from("/alerts")
        } else {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("labels", &filter);
            format!("/alerts?{}", query.finish())
        },
        first,
        last: u64::from(offset) + rows.len() as u64,
        prev_page: (page > 1).then(|| dashboard_link(&filter, Some(page - 1))),
        next_page: (u64::from(page) < pages).then(|| dashboard_link(&filter, Some(page + 1))),
        hosts: rows,
        jobs: job_rows,
        filter_text,
        filter,
        filter_error: filter_error.clone(),
    });
    if filter_error.is_some() && page.status() == StatusCode::OK {
        *page.status_mut() = StatusCode::BAD_REQUEST;
    }
    page
}

/// Most firing alerts the dashboard counts one by one under a label
/// filter; beyond it the tile says `1000+` (the whole fleet's count is one
/// aggregate query).
const FIRING_COUNTED: u32 = 1000;

/// How many alerts fire on the hosts `selector` matches.
pub(crate) async fn firing_count(
    state: &AppState,
    selector: &Selector,
) -> Result<u64, rm_store::StoreError> {
    if selector.is_everything() {
        return Ok(state
            .store()
            .firing_alert_counts()
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum());
    }
    let filter = rm_store::AlertFilter {
        firing: Some(true),
        selector: Some(selector.clone()),
        limit: FIRING_COUNTED,
        ..rm_store::AlertFilter::default()
    };
    Ok(state.store().list_alerts(&filter).await?.len() as u64)
}

/// A schedule as the host page shows it.
pub(crate) struct ScheduleRow {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) cron: String,
    pub(crate) timezone: String,
    pub(crate) description: String,
    pub(crate) next: String,
    pub(crate) enabled: bool,
    pub(crate) params: String,
    pub(crate) jitter: u32,
    /// The `PUT /schedules/{id}` body that flips `enabled`.
    pub(crate) toggle_body: String,
    /// The policy that gives it, (id, name); `None`: the host's own.
    pub(crate) policy: Option<(String, String)>,
}

/// A host's effective settings and where each comes from, as the host
/// page shows them (decided in [`crate::policies`], read from its view).
pub(crate) struct Effective {
    /// The policy that applies, (id, name).
    pub(crate) policy: Option<(String, String)>,
    /// Policies whose selectors match too but that lost on priority.
    pub(crate) outranked: Vec<(String, String)>,
    /// `own`, `policy` or `none`.
    pub(crate) repository_source: &'static str,
    /// For a policy's repository: that policy, (id, name).
    pub(crate) repository_policy: Option<(String, String)>,
    /// The repository, credentials hidden.
    pub(crate) repository_url: String,
    /// Other hosts using the same repository, (id, name), and how many
    /// there are in all (the list is cut short on a large fleet).
    pub(crate) shared_with: Vec<(String, String)>,
    pub(crate) shared_count: u64,
    /// The freshness in effect, in words, and where it comes from (`own`,
    /// `policy` — the applying one —, `default`).
    pub(crate) freshness: String,
    pub(crate) freshness_source: String,
    /// The offline threshold in effect, in words, and where it comes from
    /// (`host`, `policy`, `default`).
    pub(crate) offline: String,
    pub(crate) offline_source: String,
    pub(crate) protected: bool,
    pub(crate) unconfigured: bool,
    /// The host has its own repository while its policy gives one: it
    /// may drop its own to use the policy's.
    pub(crate) may_use_policy_repository: bool,
}

/// Most hosts sharing a repository the host page names.
const SHARED_NAMES: u32 = 50;

/// A policy as a link's (id, name); a policy gone since keeps its id.
fn policy_ref(fleet: &Fleet, id: PolicyId) -> (String, String) {
    let name = fleet
        .policy(id)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| id.to_string());
    (id.to_string(), name)
}

/// A snapshot as the host page shows it.
pub(crate) struct SnapshotRow {
    pub(crate) id: String,
    pub(crate) short_id: String,
    pub(crate) time: String,
    pub(crate) paths: String,
    pub(crate) tags: String,
    pub(crate) size: String,
}

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage {
    user: super::session::Who,
    csrf: String,
    host: HostRow,
    enrolled: String,
    repository_url: String,
    repository_env: String,
    /// The repository's `copy_to` URL (password masked), empty when none.
    copy_to_url: String,
    /// Its variables' names.
    copy_to_env: String,
    schedules: Vec<ScheduleRow>,
    snapshots: Vec<SnapshotRow>,
    jobs: Vec<JobRow>,
    chart: String,
    backup_paths: String,
    /// Retention presets for the schedule form: name, what it keeps, and
    /// whether it is the one chosen at first (`standard`, as the host
    /// page's "Forget + prune" button uses).
    presets: Vec<(&'static str, &'static str, bool)>,
    /// The schedule form's keep-* fields: name and label.
    keeps: [(&'static str, &'static str); 6],
    /// The agent token's state in words (as enrolled, rotated, pending, revoked).
    agent_token: String,
    revoked: bool,
    /// Its labels as `key=value,…` and its own freshness (empty: none),
    /// for the settings form.
    labels_text: String,
    own_freshness: String,
    /// Its own offline threshold in seconds (empty: none).
    own_offline: String,
    effective: Effective,
    /// Its firing alerts, newest first.
    alerts: Vec<AlertRow>,
    /// Its repository's rotating verification.
    verification: rm_protocol::api::VerificationView,
    /// Its latest restore drills, each with its evidence.
    drills: Vec<super::drills::DrillRow>,
}

/// The agent token's state as the host page says it.
fn agent_token_state(host: &Host, now: DateTime<Utc>) -> String {
    if let Some(at) = host.agent_revoked_at {
        return format!(
            "revoked {}; enrol the machine again to back it up",
            format::ago(at, now)
        );
    }
    let base = match host.token_rotated_at {
        Some(at) => format!("rotated {}", format::ago(at, now)),
        None => String::from("as enrolled"),
    };
    if host.token_rotation_pending {
        format!("{base}; a new token waits for the agent's confirmation")
    } else {
        base
    }
}

/// `GET /hosts/{id}`.
pub(crate) async fn host(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    let now = Utc::now();
    let Ok(id) = id.parse::<HostId>() else {
        return not_found("host");
    };
    let host = match state.store().host(id).await {
        Ok(Some(host)) => host,
        Ok(None) => return not_found("host"),
        Err(e) => return store_error(e),
    };
    // Every part of the page or none: a failed read shows the error page,
    // never a host that seems to have no snapshots or jobs.
    let stats = match state.store().repo_stats(id, 365).await {
        Ok(stats) => stats,
        Err(e) => return store_error(e),
    };
    let repository = match crate::repositories::view(&state, id).await {
        Ok(repository) => repository,
        Err(e) => return store_error(e),
    };
    let copy_to = repository.as_ref().and_then(|r| r.copy_to.clone());
    let schedules = match state.store().schedule_set(id).await {
        Ok((_, schedules)) => schedules,
        Err(e) => return store_error(e),
    };
    let verification = match crate::verification::view(&state, &host, &schedules).await {
        Ok(verification) => verification,
        Err(e) => return store_error(e),
    };
    let snapshots = match state.store().snapshots(id).await {
        Ok(snapshots) => snapshots,
        Err(e) => return store_error(e),
    };
    let jobs = match state
        .store()
        .list_jobs(&JobFilter {
            host_id: Some(id),
            limit: 25,
            ..JobFilter::default()
        })
        .await
    {
        Ok(jobs) => jobs,
        Err(e) => return store_error(e),
    };
    let drills = match super::drills::host_rows(&state, id, now).await {
        Ok(drills) => drills,
        Err(e) => return store_error(e),
    };
    let fleet = match Fleet::load(&state).await {
        Ok(fleet) => fleet,
        Err(e) => return store_error(e),
    };
    let view = fleet.host_view(host.clone());
    let backup_paths = schedules
        .iter()
        .find(|s| s.kind == "backup")
        .and_then(|s| s.params.get("paths"))
        .and_then(|p| p.as_array())
        .map(|paths| {
            paths
                .iter()
                .filter_map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let schedules = schedules
        .iter()
        .map(|s| {
            let view = crate::schedules::view(s);
            let toggle_body = serde_json::json!({
                "kind": view.kind,
                "cron": view.cron,
                "timezone": view.timezone,
                "params": view.params,
                "enabled": !view.enabled,
                "jitter_seconds": view.jitter_seconds,
            })
            .to_string();
            ScheduleRow {
                toggle_body,
                policy: s.policy.map(|(id, _)| policy_ref(&fleet, id)),
                id: view.id,
                kind: view.kind,
                cron: view.cron,
                timezone: view.timezone.unwrap_or_else(|| String::from("host's zone")),
                description: view.description,
                next: view
                    .next_fire_at
                    .map(|at| format::ago(at, now))
                    .unwrap_or_else(|| String::from("disabled")),
                enabled: view.enabled,
                params: view.params.to_string(),
                jitter: view.jitter_seconds,
            }
        })
        .collect();
    let snapshots = snapshots
        .iter()
        .map(|s| SnapshotRow {
            id: s.id.clone(),
            short_id: s.short_id.clone(),
            time: format::time(s.time),
            paths: s.paths.join(", "),
            tags: s.tags.join(", "),
            size: s
                .size_bytes
                .map(format::bytes)
                .unwrap_or_else(|| String::from("—")),
        })
        .collect();
    let shared_with = match (&host.repository_key, host.repository_shared_with) {
        (Some(key), n) if n > 0 => match state.store().hosts_of_repository(key).await {
            Ok(hosts) => hosts
                .into_iter()
                .filter(|h| h.id != host.id)
                // Another team's hosts are counted, never named.
                .filter(|h| crate::access::sees(&user.operator, &h.labels))
                .take(SHARED_NAMES as usize)
                .map(|h| (h.id.to_string(), h.name))
                .collect(),
            Err(e) => return store_error(e),
        },
        _ => Vec::new(),
    };
    let winner = host.policy_id.and_then(|id| fleet.policy(id));
    let effective = Effective {
        policy: host.policy_id.map(|id| policy_ref(&fleet, id)),
        outranked: view
            .policies_outranked
            .iter()
            .filter_map(|id| id.parse::<PolicyId>().ok())
            .map(|id| policy_ref(&fleet, id))
            .collect(),
        repository_source: match view.repository_source.as_deref() {
            Some("policy") => "policy",
            Some(_) => "own",
            None => "none",
        },
        repository_policy: host.repository_policy_id.map(|id| policy_ref(&fleet, id)),
        repository_url: view.repository_url.clone().unwrap_or_default(),
        shared_count: view.repository_shared_with,
        shared_with,
        freshness: format::span(i64::try_from(view.freshness_seconds).unwrap_or(i64::MAX)),
        freshness_source: view.freshness_source.clone(),
        offline: format::span(i64::try_from(view.offline_seconds).unwrap_or(i64::MAX)),
        offline_source: view.offline_source.clone(),
        protected: view.protected,
        unconfigured: view.unconfigured,
        may_use_policy_repository: host.has_repository
            && host.repository_policy_id.is_none()
            && winner.is_some_and(|p| p.repository.is_some()),
    };
    let firing = match alerts::firing_rows(
        &state,
        crate::alerts::AlertQuery {
            host_id: Some(id.to_string()),
            ..Default::default()
        },
        None,
        now,
    )
    .await
    {
        Ok(rows) => rows,
        Err(e) => return alerts::alert_error(e),
    };
    let row = host_row(&host, &view, now);
    let jobs = jobs.iter().map(|j| job_row(j, &host.name, now)).collect();
    render(&HostPage {
        user: user.username,
        csrf: user.csrf,
        enrolled: format::time(host.enrolled_at),
        repository_url: repository
            .as_ref()
            .map(|r| r.url.clone())
            .unwrap_or_default(),
        repository_env: repository
            .as_ref()
            .map(|r| r.env_keys.join(", "))
            .unwrap_or_default(),
        copy_to_url: copy_to.as_ref().map(|c| c.url.clone()).unwrap_or_default(),
        copy_to_env: copy_to
            .as_ref()
            .map(|c| c.env_keys.join(", "))
            .unwrap_or_default(),
        host: row,
        schedules,
        snapshots,
        jobs,
        chart: chart(&stats),
        backup_paths,
        presets: rm_protocol::params::RETENTION_PRESETS
            .iter()
            .map(|p| (p.name, p.description, p.name == "standard"))
            .collect(),
        keeps: [
            ("keep_last", "Last"),
            ("keep_hourly", "Hourly"),
            ("keep_daily", "Daily"),
            ("keep_weekly", "Weekly"),
            ("keep_monthly", "Monthly"),
            ("keep_yearly", "Yearly"),
        ],
        agent_token: agent_token_state(&host, now),
        revoked: host.agent_revoked_at.is_some(),
        labels_text: host.labels.to_string(),
        own_freshness: host
            .freshness_seconds
            .map(|s| s.to_string())
            .unwrap_or_default(),
        own_offline: host
            .offline_seconds
            .map(|s| s.to_string())
            .unwrap_or_default(),
        effective,
        alerts: firing,
        verification,
        drills,
    })
}

/// Repository size and snapshot count over time as an inline SVG (no
/// chart library, no script).
fn chart(history: &[RepoStatsRecord]) -> String {
    let points: Vec<(i64, u64, u64)> = history
        .iter()
        .rev()
        .filter_map(|r| {
            Some((
                r.recorded_at.timestamp(),
                r.raw_size_bytes?,
                r.snapshot_count.unwrap_or(0),
            ))
        })
        .collect();
    if points.len() < 2 {
        return String::from("<p class=\"muted\">Not enough history for a chart yet.</p>");
    }
    let (w, h, pad) = (600.0, 160.0, 24.0);
    let t0 = points.first().map(|p| p.0).unwrap_or(0) as f64;
    let t1 = points.last().map(|p| p.0).unwrap_or(1) as f64;
    let max_size = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
    let max_count = points.iter().map(|p| p.2).max().unwrap_or(1).max(1) as f64;
    let x = |t: i64| pad + (t as f64 - t0) / (t1 - t0).max(1.0) * (w - 2.0 * pad);
    let y = |v: f64, max: f64| h - pad - v / max * (h - 2.0 * pad);
    let line = |value: &dyn Fn(&(i64, u64, u64)) -> f64, max: f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(value(p), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Repository size (up to {}) and snapshot count (up to {}) over time\">\
         <polyline class=\"size\" fill=\"none\" points=\"{}\"/>\
         <polyline class=\"count\" fill=\"none\" points=\"{}\"/>\
         <text x=\"{pad}\" y=\"14\" class=\"legend size\">size (max {})</text>\
         <text x=\"{}\" y=\"14\" class=\"legend count\">snapshots (max {})</text></svg>",
        format::bytes(max_size as u64),
        max_count,
        line(&|p| p.1 as f64, max_size),
        line(&|p| p.2 as f64, max_count),
        format::bytes(max_size as u64),
        w / 2.0,
        max_count
    )
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    user: super::session::Who,
    csrf: String,
    job: JobRow,
    params: String,
    created: String,
    started: String,
    finished: String,
    exit_code: String,
    stats: Vec<(String, String)>,
    active: bool,
}

/// `GET /jobs/{id}`.
pub(crate) async fn job(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    let now = Utc::now();
    let Ok(id) = id.parse::<JobId>() else {
        return not_found("job");
    };
    let job = match state.store().job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => return not_found("job"),
        Err(e) => return store_error(e),
    };
    let host_name = match state.store().host(job.host_id).await {
        Ok(host) => host
            .map(|h| h.name)
            .unwrap_or_else(|| job.host_id.to_string()),
        Err(e) => return store_error(e),
    };
    let stats = match &job.stats {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let shown = match (k.as_str(), v.as_u64()) {
                    // A drill's evidence is a table on the host page.
                    ("evidence", _) if v.is_array() => format!(
                        "{} files (listed with their checksums on the host page)",
                        v.as_array().map_or(0, Vec::len)
                    ),
                    (k, _) if k.ends_with("_per_second") && v.is_number() => format!(
                        "{}/s",
                        format::bytes(v.as_f64().unwrap_or(0.0).round() as u64)
                    ),
                    (k, Some(n))
                        if k.contains("bytes") || k.starts_with("data_") || k.contains("size") =>
                    {
                        format::bytes(n)
                    }
                    _ => match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                };
                (k.replace('_', " "), shown)
            })
            .collect(),
        _ => Vec::new(),
    };
    render(&JobPage {
        user: user.username,
        csrf: user.csrf,
        params: job.params.to_string(),
        created: format::time(job.created_at),
        started: job
            .started_at
            .map(format::time)
            .unwrap_or_else(|| String::from("—")),
        finished: job
            .finished_at
            .map(format::time)
            .unwrap_or_else(|| String::from("—")),
        exit_code: job
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| String::from("—")),
        stats,
        active: !job.status.is_finished(),
        job: job_row(&job, &host_name, now),
    })
}

/// A pending enrolment token as listed.
pub(crate) struct TokenRow {
    pub(crate) name: String,
    pub(crate) expires: String,
    /// The labels its host will get, `key=value,…`.
    pub(crate) labels: String,
}

#[derive(Template)]
#[template(path = "enroll.html")]
struct EnrollPage {
    user: super::session::Who,
    csrf: String,
    pending: Vec<TokenRow>,
}

/// `GET /enroll`.
pub(crate) async fn enroll(State(state): State<AppState>, user: WebUser) -> Response {
    let now = Utc::now();
    let pending = match state.store().pending_enrollment_tokens(now).await {
        Ok(pending) => pending,
        Err(e) => return store_error(e),
    };
    let pending = pending
        .into_iter()
        .map(|t| TokenRow {
            name: t.name.unwrap_or_else(|| String::from("(unnamed)")),
            expires: format::ago(t.expires_at, now),
            labels: t.labels.to_string(),
        })
        .collect();
    render(&EnrollPage {
        user: user.username,
        csrf: user.csrf,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::dashboard_link;

    #[test]
    fn dashboard_links_keep_the_label_filter() {
        assert_eq!(dashboard_link("", None), "/");
        assert_eq!(dashboard_link("", Some(2)), "/?page=2");
        assert_eq!(dashboard_link("env=prod", None), "/?labels=env%3Dprod");
        assert_eq!(
            dashboard_link("env=prod,role=db/primary", Some(3)),
            "/?labels=env%3Dprod%2Crole%3Ddb%2Fprimary&page=3"
        );
    }
}
