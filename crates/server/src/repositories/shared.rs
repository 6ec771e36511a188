//! Repositories shared by several hosts, as things of their own: hosts whose
//! repository has the same identity (URL without credentials) use one
//! restic repository, so the server decides which of their jobs may start.
//!
//! restic lets backups into one repository run side by side, but `prune`,
//! `check`, `unlock`, `init` and `forget` (with or without prune) take its
//! exclusive lock: started beside anything else they fail on the lock (or, for
//! `unlock`, remove a lock another job needs). So, per repository: an
//! exclusive job starts only when nothing else runs in it; anything else
//! waits while an exclusive job runs, or while one was queued earlier on a
//! connected host (so a prune is not starved by a stream of backups);
//! backups run side by side up to a limit; and jobs of one bulk action run
//! at most its `max_parallel` at a time. With several servers, a
//! repository's turn is a lease in the store as well ([`Turn`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use rm_core::{JobId, JobStatus};
use rm_store::RepositoryJob;
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::state::AppState;

/// Whether a job takes its repository's exclusive lock. `forget` does
/// even without `prune` (it deletes snapshot files): beside another
/// host's backup one of the two fails on the lock (seen with restic 0.14
/// and 0.19).
pub fn is_exclusive(kind: &str, _params: &Value) -> bool {
    matches!(kind, "prune" | "check" | "unlock" | "init" | "forget")
}

/// Whether a policy's schedule of this job does the same for every host
/// of a shared repository, so one run per fire serves them all: `prune`
/// and `check` (and the prune of a `forget` that prunes). A `forget`
/// keeps to its own host's snapshots, so every host runs its own.
pub fn once_per_repository(kind: &str, params: &Value) -> bool {
    match kind {
        "prune" | "check" => true,
        "forget" => params.get("prune").and_then(Value::as_bool) == Some(true),
        _ => false,
    }
}

/// Whether a job may start now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing in its repository stands in the way.
    Start,
    /// It waits; the reason names the job in the way.
    Wait(String),
}

/// Decides whether `candidate` may start, given every queued, dispatched
/// and running job into its repository (`jobs`, which may include it).
pub fn may_start(candidate: JobId, jobs: &[RepositoryJob], backup_limit: u32) -> Verdict {
    let Some(me) = jobs.iter().find(|j| j.job_id == candidate) else {
        return Verdict::Start;
    };
    let others = jobs.iter().filter(|j| j.job_id != candidate);
    let active: Vec<&RepositoryJob> = others
        .clone()
        .filter(|j| matches!(j.status, JobStatus::Dispatched | JobStatus::Running))
        .collect();
    let wait = |j: &RepositoryJob, why: &str| {
        Verdict::Wait(format!(
            "waits for {} job {} on host {} in the same repository ({why})",
            j.kind, j.job_id, j.host_id
        ))
    };
    if is_exclusive(&me.kind, &me.params) {
        return match active.first() {
            Some(j) => wait(j, "an exclusive job runs alone"),
            None => Verdict::Start,
        };
    }
    if let Some(j) = active.iter().find(|j| is_exclusive(&j.kind, &j.params)) {
        return wait(j, "it holds the repository's exclusive lock");
    }
    if let Some(j) = others.clone().find(|j| {
        j.status == JobStatus::Queued
            && j.host_online
            && is_exclusive(&j.kind, &j.params)
            && (j.created_at, j.job_id) < (me.created_at, me.job_id)
    }) {
        return wait(j, "it was queued first and needs the repository alone");
    }
    if me.kind == "backup" {
        let running = active.iter().filter(|j| j.kind == "backup").count();
        if running >= backup_limit as usize {
            return Verdict::Wait(format!(
                "waits: {running} backups already run in the same repository (the limit per repository is {backup_limit})"
            ));
        }
    }
    if let Some((batch, max_parallel)) = me.batch {
        let running = active
            .iter()
            .filter(|j| j.batch.map(|(b, _)| b) == Some(batch))
            .count();
        if running >= max_parallel as usize {
            return Verdict::Wait(format!(
                "waits: {running} jobs of its bulk action already run in the same repository (max_parallel {max_parallel})"
            ));
        }
    }
    Verdict::Start
}

/// One turn per repository: held while one of its jobs is chosen and
/// marked dispatched, so two hosts' dispatchers cannot both see the
/// repository free and start conflicting jobs.
#[derive(Default)]
pub struct Turns(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// How long a server may hold a repository's turn lease if it dies
/// holding it (a turn lasts a few store calls).
const TURN_LEASE: chrono::Duration = chrono::Duration::seconds(30);
/// How long a dispatcher waits for a turn another server holds before it
/// leaves the job queued for the next dispatch (a job's end, a resync).
const TURN_WAIT: Duration = Duration::from_secs(10);
/// Pause between two tries for a turn another server holds.
const TURN_RETRY: Duration = Duration::from_millis(25);

/// A repository's turn. With several servers on the store it is also the
/// lease `repository:<key>`, so dispatchers on different servers take
/// turns too. Dropping it gives the turn up: the lease first, then this
/// process's lock, so the next holder here never finds the lease being
/// deleted under it.
pub struct Turn {
    local: Option<OwnedMutexGuard<()>>,
    lease: Option<(Arc<dyn rm_store::Store>, String, String)>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (Some((store, name, holder)), Ok(runtime)) =
            (self.lease.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let local = self.local.take();
        runtime.spawn(async move {
            if let Err(e) = store.release_lease(&name, &holder).await {
                tracing::warn!(lease = %name, error = %e, "could not give a repository's turn up; it passes when it runs out");
            }
            drop(local);
        });
    }
}

impl Turns {
    /// Waits for the repository `key`'s turn: this process's, then (with
    /// a shared store) the cluster's. `None` when another server kept it
    /// longer than [`TURN_WAIT`] or the store failed: the job stays queued.
    pub(crate) async fn take(&self, state: &AppState, key: &str) -> Option<Turn> {
        let turn = {
            let mut turns = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            turns.entry(key.to_owned()).or_default().clone()
        };
        let local = turn.lock_owned().await;
        if !state.cluster().shared() {
            return Some(Turn {
                local: Some(local),
                lease: None,
            });
        }
        let name = format!("repository:{key}");
        let holder = state.cluster().id().to_owned();
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            let now = Utc::now();
            match state
                .store()
                .take_lease(&name, &holder, now, now + TURN_LEASE)
                .await
            {
                Ok(true) => {
                    return Some(Turn {
                        local: Some(local),
                        lease: Some((state.store_arc(), name, holder)),
                    })
                }
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(TURN_RETRY).await;
                }
                Ok(false) => {
                    tracing::warn!(lease = %name, "another server kept a repository's turn; its job stays queued");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(lease = %name, error = %e, "could not take a repository's turn; its job stays queued");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use rm_core::{BatchId, HostId};
    use serde_json::json;

    use super::*;

    fn job(kind: &str, params: Value, status: JobStatus, age: i64) -> RepositoryJob {
        RepositoryJob {
            job_id: JobId::new(),
            host_id: HostId::new(),
            host_online: true,
            kind: kind.to_owned(),
            params,
            status,
            created_at: Utc::now() - Duration::seconds(age),
            batch: None,
        }
    }

    #[test]
    fn exclusive_kinds() {
        assert!(is_exclusive("prune", &Value::Null));
        assert!(is_exclusive("check", &Value::Null));
        assert!(is_exclusive("unlock", &Value::Null));
        assert!(is_exclusive(
            "forget",
            &json!({"keep_last": 3, "prune": true})
        ));
        assert!(is_exclusive("forget", &json!({"keep_last": 3})));
        assert!(!is_exclusive("backup", &json!({"paths": ["/"]})));
        assert!(!is_exclusive("restore", &Value::Null));
    }

    #[test]
    fn what_runs_once_per_repository() {
        assert!(once_per_repository("prune", &Value::Null));
        assert!(once_per_repository("check", &json!({})));
        assert!(once_per_repository(
            "forget",
            &json!({"keep_last": 3, "prune": true})
        ));
        assert!(!once_per_repository("forget", &json!({"keep_last": 3})));
        assert!(!once_per_repository("backup", &json!({"paths": ["/"]})));
        assert!(!once_per_repository("unlock", &Value::Null));
    }

    #[test]
    fn a_forget_without_prune_waits_for_a_running_backup() {
        let backup = job("backup", json!({}), JobStatus::Running, 10);
        let forget = job("forget", json!({"keep_last": 1}), JobStatus::Queued, 5);
        let jobs = vec![backup.clone(), forget.clone()];
        assert!(
            matches!(may_start(forget.job_id, &jobs, 4), Verdict::Wait(w) if w.contains("backup"))
        );
    }

    #[test]
    fn a_prune_waits_for_a_running_backup_and_the_opposite() {
        let backup = job("backup", json!({}), JobStatus::Running, 10);
        let prune = job("prune", Value::Null, JobStatus::Queued, 5);
        let jobs = vec![backup.clone(), prune.clone()];
        assert!(
            matches!(may_start(prune.job_id, &jobs, 4), Verdict::Wait(w) if w.contains("backup"))
        );

        let prune = job("prune", Value::Null, JobStatus::Running, 10);
        let backup = job("backup", json!({}), JobStatus::Queued, 5);
        let jobs = vec![prune.clone(), backup.clone()];
        assert!(
            matches!(may_start(backup.job_id, &jobs, 4), Verdict::Wait(w) if w.contains("prune"))
        );
    }

    #[test]
    fn backups_share_up_to_the_limit() {
        let a = job("backup", json!({}), JobStatus::Running, 10);
        let b = job("backup", json!({}), JobStatus::Queued, 5);
        assert_eq!(
            may_start(b.job_id, &[a.clone(), b.clone()], 2),
            Verdict::Start
        );
        assert!(matches!(
            may_start(b.job_id, &[a.clone(), b.clone()], 1),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn an_earlier_queued_prune_on_a_connected_host_goes_first() {
        let prune = job("prune", Value::Null, JobStatus::Queued, 10);
        let backup = job("backup", json!({}), JobStatus::Queued, 5);
        let jobs = vec![prune.clone(), backup.clone()];
        assert!(matches!(
            may_start(backup.job_id, &jobs, 4),
            Verdict::Wait(_)
        ));
        assert_eq!(may_start(prune.job_id, &jobs, 4), Verdict::Start);
        // One stuck on an offline host does not hold the repository.
        let mut offline = prune.clone();
        offline.host_online = false;
        assert_eq!(
            may_start(backup.job_id, &[offline, backup.clone()], 4),
            Verdict::Start
        );
    }

    #[test]
    fn a_bulk_action_runs_at_most_max_parallel_per_repository() {
        let batch = BatchId::new();
        let mut a = job("check", json!({}), JobStatus::Running, 10);
        a.kind = String::from("snapshots");
        a.batch = Some((batch, 1));
        let mut b = a.clone();
        b.job_id = JobId::new();
        b.status = JobStatus::Queued;
        assert!(matches!(
            may_start(b.job_id, &[a.clone(), b.clone()], 4),
            Verdict::Wait(w) if w.contains("max_parallel 1")
        ));
        a.batch = Some((BatchId::new(), 1));
        assert_eq!(may_start(b.job_id, &[a, b.clone()], 4), Verdict::Start);
    }
}
