//! Applying policies to hosts: reads what the hosts have, decides with
//! [`super::effective`] what each should have, writes every difference in
//! one transaction (with the policy change that caused it), then queues the
//! `init` of new repositories and pushes the new settings and schedule
//! sets to connected agents.
//!
//! Runs are serialised (one at a time, server-wide): each decides from what
//! it read, so two at once (an enrolment during a policy edit) could each
//! write a diff against a state the other just changed.

use std::collections::HashMap;

use chrono::Utc;
use rm_core::{HostId, JobId, JobStatus, JobTrigger, PolicyId};
use rm_protocol::{JobKind, RepositoryConfig};
use rm_store::{
    HostPolicyChange, NewAuditEntry, NewJob, PolicyRecord, PolicyTarget, PolicyWrite,
    RepositoryChange,
};

use super::{effective, open_template, PolicyError, Template};
use crate::jobs;
use crate::state::AppState;

/// What one run changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Hosts whose schedule set changed, with their new versions.
    pub bumped: Vec<(HostId, u64)>,
    /// Hosts whose repository settings changed.
    pub repositories: Vec<HostId>,
}

/// Applies the policies (after `write`, if given) to `scope` (every host
/// when `None`), writing `write`, the hosts' changes and `audit` in one
/// transaction, then queues inits and pushes. A host whose settings are
/// already what its policy gives is not touched.
pub async fn reconcile(
    state: &AppState,
    scope: Option<&[HostId]>,
    write: Option<PolicyWrite>,
    audit: Option<&NewAuditEntry>,
) -> Result<Outcome, PolicyError> {
    let _one_at_a_time = state.policy_lock().lock().await;
    let mut policies = state.store().policies().await?;
    match &write {
        Some(PolicyWrite::Create(p)) => policies.push(p.clone()),
        Some(PolicyWrite::Update(p)) => match policies.iter_mut().find(|old| old.id == p.id) {
            Some(old) => *old = p.clone(),
            None => return Err(PolicyError::NotFound(p.id)),
        },
        Some(PolicyWrite::Delete(id)) => {
            if !policies.iter().any(|p| p.id == *id) {
                return Err(PolicyError::NotFound(*id));
            }
            policies.retain(|p| p.id != *id);
        }
        None => {}
    }
    let mut templates: HashMap<PolicyId, Option<Template>> = HashMap::new();
    for policy in &policies {
        match open_template(state, policy) {
            Ok(template) => {
                templates.insert(policy.id, template);
            }
            // Left out: its hosts keep what they have (see `repository`).
            Err(e) => {
                tracing::error!(policy = %policy.id, "a policy's repository template cannot be opened: {e}")
            }
        }
    }
    let started = std::time::Instant::now();
    let targets = state.store().policy_targets(scope).await?;
    let read = started.elapsed();
    let now = Utc::now();
    let mut passwords = Passwords::default();
    let mut changes = Vec::new();
    for target in &targets {
        let winner = effective::winner(&policies, &target.labels);
        let diff = effective::schedule_diff(
            target.host_id,
            winner,
            &target.own_schedule_kinds,
            &target.policy_schedules,
            now,
        );
        let repository = repository(state, target, winner, &templates, &mut passwords).await;
        let policy_id = winner.map(|p| p.id);
        if policy_id == target.policy_id
            && diff.upsert.is_empty()
            && diff.delete.is_empty()
            && repository == RepositoryChange::Keep
        {
            continue;
        }
        changes.push(HostPolicyChange {
            host_id: target.host_id,
            policy_id,
            repository,
            upsert_schedules: diff.upsert,
            delete_schedules: diff.delete,
        });
    }
    if changes.is_empty() && write.is_none() {
        return Ok(Outcome::default());
    }
    let decided = started.elapsed();
    let bumped = state
        .store()
        .apply_policy_changes(write.as_ref(), &changes, audit)
        .await?;
    let written = started.elapsed();
    let outcome = Outcome {
        bumped,
        repositories: changes
            .iter()
            .filter(|c| c.repository != RepositoryChange::Keep)
            .map(|c| c.host_id)
            .collect(),
    };
    if !changes.is_empty() {
        tracing::info!(
            hosts = changes.len(),
            schedule_sets = outcome.bumped.len(),
            repositories = outcome.repositories.len(),
            read_ms = read.as_millis(),
            decided_ms = (decided - read).as_millis(),
            written_ms = (written - decided).as_millis(),
            "policies applied"
        );
    }
    queue_inits(state, &changes).await;
    // A host's policy (so its freshness and offline threshold) may differ.
    match scope {
        Some(hosts) if write.is_none() => {
            for host in hosts {
                crate::alerts::host_changed(state, *host);
            }
        }
        _ => crate::alerts::fleet_changed(state),
    }
    push(state, &outcome);
    Ok(outcome)
}

/// Queues the `init` of every repository a change gave (a no-op where one
/// exists), all in one transaction; they are dispatched with the pushes.
async fn queue_inits(state: &AppState, changes: &[HostPolicyChange]) {
    let now = Utc::now();
    let inits: Vec<NewJob> = changes
        .iter()
        .filter(|c| matches!(c.repository, RepositoryChange::Set { .. }))
        .map(|c| NewJob {
            id: JobId::new(),
            host_id: c.host_id,
            kind: JobKind::Init.as_str().to_owned(),
            params: serde_json::json!({}),
            trigger: JobTrigger::System,
            schedule_id: None,
            status: JobStatus::Queued,
            error: None,
            created_at: now,
        })
        .collect();
    if inits.is_empty() {
        return;
    }
    if let Err(e) = state.store().create_jobs(&inits).await {
        tracing::error!("could not queue the init of the policies' new repositories: {e}");
    }
}

/// Pushes new settings and schedule sets to connected agents, in the
/// background: a change to ten thousand hosts must not hold the request
/// (or the policy lock) while it is sent.
fn push(state: &AppState, outcome: &Outcome) {
    state.fleet_changed();
    let repositories = outcome.repositories.clone();
    let schedules: Vec<HostId> = outcome.bumped.iter().map(|(h, _)| *h).collect();
    if repositories.is_empty() && schedules.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        // Each is pushed here or asked of the server holding its agent.
        for host in repositories {
            crate::repositories::push(&state, host).await;
            jobs::dispatch_next(&state, host).await;
        }
        crate::schedules::send_sets(&state, &schedules).await;
    });
}

/// Generated passwords of this run, by policy and repository.
#[derive(Default)]
struct Passwords(HashMap<(PolicyId, String), String>);

/// What the winning policy gives the host as repository settings, compared
/// with what it has.
async fn repository(
    state: &AppState,
    target: &PolicyTarget,
    winner: Option<&PolicyRecord>,
    templates: &HashMap<PolicyId, Option<Template>>,
    passwords: &mut Passwords,
) -> RepositoryChange {
    let current_source = target.repository.as_ref().map(|(source, _)| *source);
    // The host's own settings win over any policy's.
    if let Some(None) = current_source {
        return RepositoryChange::Keep;
    }
    let template = match winner {
        None => None,
        Some(p) => match templates.get(&p.id) {
            Some(template) => template.as_ref().map(|t| (p, t)),
            // The template cannot be opened: leave the host as it is
            // rather than take its repository away.
            None => return RepositoryChange::Keep,
        },
    };
    let Some((policy, template)) = template else {
        return match current_source {
            Some(Some(_)) => RepositoryChange::Remove,
            _ => RepositoryChange::Keep,
        };
    };
    let url = effective::expand(&template.url, &target.name, target.host_id);
    let key = effective::repository_key(&url);
    let current: Option<RepositoryConfig> = match &target.repository {
        Some((Some(source), sealed)) if *source == policy.id => {
            crate::sealing::open_repository(state.sealing_key(), target.host_id, sealed)
                .ok()
                .and_then(|plain| serde_json::from_slice(&plain).ok())
        }
        _ => None,
    };
    let password = match &template.password {
        Some(given) => given.clone(),
        None => match current.as_ref().filter(|c| c.url == url) {
            Some(current) => current.password.clone(),
            None => {
                match generated_password(
                    state,
                    policy.id,
                    &template.url,
                    &url,
                    Which::Primary,
                    passwords,
                )
                .await
                {
                    Some(password) => password,
                    None => return RepositoryChange::Keep,
                }
            }
        },
    };
    let copy_to = match &template.copy_to {
        None => None,
        Some(copy) => {
            let copy_url = effective::expand(&copy.url, &target.name, target.host_id);
            let copy_password = match &copy.password {
                Some(given) => given.clone(),
                None => match current
                    .as_ref()
                    .and_then(|c| c.copy_to.as_ref())
                    .filter(|c| c.url == copy_url)
                {
                    Some(current) => current.password.clone(),
                    None => {
                        match generated_password(
                            state,
                            policy.id,
                            &copy.url,
                            &copy_url,
                            Which::Copy,
                            passwords,
                        )
                        .await
                        {
                            Some(password) => password,
                            None => return RepositoryChange::Keep,
                        }
                    }
                },
            };
            Some(rm_protocol::CopyTarget {
                url: copy_url,
                password: copy_password,
                env: copy.env.clone(),
            })
        }
    };
    let wanted = RepositoryConfig {
        url,
        password,
        env: template.env.clone(),
        copy_to,
    };
    if current.as_ref() == Some(&wanted) {
        return RepositoryChange::Keep;
    }
    if let Err(e) = rm_protocol::params::validate_repository(&wanted) {
        tracing::error!(host = %target.host_id, policy = %policy.id, "the policy's repository for this host breaks a rule: {e:?}");
        return RepositoryChange::Keep;
    }
    let sealed = match serde_json::to_vec(&wanted)
        .map_err(|e| e.to_string())
        .and_then(|plain| {
            crate::sealing::seal_repository(state.sealing_key(), target.host_id, &plain)
                .map_err(|e| e.to_string())
        }) {
        Ok(sealed) => sealed,
        Err(e) => {
            tracing::error!(host = %target.host_id, "could not seal a policy's repository settings: {e}");
            return RepositoryChange::Keep;
        }
    };
    RepositoryChange::Set {
        sealed,
        key,
        policy_id: policy.id,
    }
}

/// Which repository of a host's settings a generated password is for.
#[derive(Clone, Copy)]
enum Which {
    /// The repository itself.
    Primary,
    /// Its `copy_to`.
    Copy,
}

impl Which {
    /// The password `config` has for the repository at `url`, if it has one.
    fn password_in(self, config: RepositoryConfig, url: &str) -> Option<String> {
        match self {
            Which::Primary => (config.url == url).then_some(config.password),
            Which::Copy => config.copy_to.filter(|c| c.url == url).map(|c| c.password),
        }
    }
}

/// The password of a repository (`which`, at `url`) the policy gives
/// without one: the one a host of the policy using that repository has
/// already (a repository made while the policy gave a password keeps it),
/// otherwise the one derived for the repository. With a per-host template
/// (`{host}`, `{host_id}`) each repository is its host's own, so no other
/// host is asked.
async fn generated_password(
    state: &AppState,
    policy: PolicyId,
    template: &str,
    url: &str,
    which: Which,
    passwords: &mut Passwords,
) -> Option<String> {
    let tag = match which {
        Which::Primary => "repository",
        Which::Copy => "copy",
    };
    let slot = (policy, format!("{tag}:{}", effective::repository_key(url)));
    if let Some(password) = passwords.0.get(&slot) {
        return Some(password.clone());
    }
    if !effective::is_per_host(template) {
        let covered = match state.store().hosts_of_policy(policy).await {
            Ok(hosts) => hosts,
            Err(e) => {
                tracing::error!("could not look up the hosts of a policy: {e}");
                return None;
            }
        };
        for host in covered
            .iter()
            .filter(|h| h.repository_policy_id == Some(policy))
        {
            if let Ok(Some(config)) = crate::repositories::get(state, host.id).await {
                if let Some(password) = which.password_in(config, url) {
                    passwords.0.insert(slot, password.clone());
                    return Some(password);
                }
            }
        }
    }
    // Derived from the repository's identity, not drawn at random: a host
    // that leaves the policy (or whose own repository replaced it) and comes
    // back finds its repository still there, made with this password, and
    // nothing else kept it once no host had it.
    let password = repository_password(state, &effective::repository_key(url));
    passwords.0.insert(slot, password.clone());
    Some(password)
}

/// The password the server generates for the repository `key`: the same
/// for as long as the sealing key is.
fn repository_password(state: &AppState, key: &str) -> String {
    rm_core::password::derived_password(
        state.sealing_key(),
        &format!("restic-manager repository password\0{key}"),
    )
}
