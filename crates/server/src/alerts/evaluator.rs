//! The alert evaluator: an index of the next deadline of every host's timed
//! conditions, so the server fires `backup_stale` and `host_offline` at the
//! moment they come true without scanning the fleet, and the queue of due
//! notifications (first ones, repeats, resolutions, held by silences).
//!
//! The index is a hint, the store is the truth: a deadline that comes up
//! re-reads its host before firing, so a backup another server recorded
//! (or an event this one missed) never fires a false alert. A full
//! re-read of the fleet happens at start, after a policy change, when the
//! event queue overflowed, and every [`RESYNC_EVERY`] as a safety net.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rm_core::schedule::Clock;
use rm_core::{AlertId, HostId};
use rm_store::prelude::*;
use rm_store::{AlertRecord, Host, NewAlert, PolicyRecord, StoreError, MAX_HOST_PAGE};

use super::rules::{self, HostFacts, Timed};
use crate::audit::{Action, Audit, Target};

/// How often the whole fleet is re-read even without a reason.
pub const RESYNC_EVERY: Duration = Duration::minutes(15);

/// Due notifications handed over per round.
const DUE_PER_ROUND: u32 = 200;

/// The evaluator's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How often a still-firing, unacknowledged alert is sent again.
    pub repeat: Duration,
    /// After the server starts, how long hosts get to report before what
    /// happened while it was away can fire.
    pub grace: Duration,
}

/// A notification to hand to the channels.
#[derive(Debug, Clone)]
pub struct Due {
    /// The alert (firing: its first notification or a repeat; resolved:
    /// the resolution).
    pub alert: AlertRecord,
    /// Its host (`None`: deleted since).
    pub host: Option<Host>,
    /// A repeat of a notification already sent.
    pub repeat: bool,
}

/// The evaluator's state; owned by one task.
pub struct Evaluator {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    watching_since: DateTime<Utc>,
    policies: Vec<PolicyRecord>,
    deadlines: BTreeSet<(DateTime<Utc>, HostId, Timed)>,
    by_host: HashMap<(HostId, Timed), DateTime<Utc>>,
    /// Timed alerts known to be firing: a host whose condition ended is
    /// resolved without asking the store whether anything fires.
    firing: HashSet<(HostId, Timed)>,
    last_resync: Option<DateTime<Utc>>,
    /// An alert fired or resolved since [`Evaluator::take_changed`] last
    /// asked (live pages refresh then).
    changed: bool,
}

impl Evaluator {
    /// An evaluator over `store` that started watching now.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Evaluator {
        let watching_since = clock.now();
        Evaluator {
            store,
            clock,
            settings,
            watching_since,
            policies: Vec::new(),
            deadlines: BTreeSet::new(),
            by_host: HashMap::new(),
            firing: HashSet::new(),
            last_resync: None,
            changed: false,
        }
    }

    /// Whether an alert fired or resolved since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// How many deadlines are indexed (two per offline host, one per online).
    pub fn indexed(&self) -> usize {
        self.deadlines.len()
    }

    /// Re-reads policies, every host and every firing alert, then settles
    /// each host (fires what is due, resolves what ended).
    pub async fn resync(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.policies = self.store.policies().await?;
        self.firing.clear();
        for alert in self.store.firing_alerts().await? {
            if let Some(timed) = timed_of(&alert.kind) {
                self.firing.insert((alert.host_id, timed));
            }
        }
        self.deadlines.clear();
        self.by_host.clear();
        let mut seen = HashSet::new();
        let mut after = None;
        loop {
            let page = self.store.list_hosts_page(after, MAX_HOST_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for host in &page {
                seen.insert(host.id);
                self.settle(host, now).await?;
            }
            if page.len() < MAX_HOST_PAGE as usize {
                break;
            }
        }
        // Alerts of hosts deleted since, of every kind.
        let gone: HashSet<HostId> = self
            .store
            .firing_alerts()
            .await?
            .into_iter()
            .map(|a| a.host_id)
            .filter(|host| !seen.contains(host))
            .collect();
        for host in gone {
            self.host_deleted(host, now).await?;
        }
        self.last_resync = Some(now);
        Ok(())
    }

    /// Whether a full re-read is due.
    pub fn resync_due(&self) -> bool {
        self.last_resync
            .is_none_or(|at| self.clock.now() - at >= RESYNC_EVERY)
    }

    /// Re-reads `host` and settles it (a host that is gone resolves its
    /// timed alerts).
    pub async fn host_changed(&mut self, host: HostId) -> Result<(), StoreError> {
        let now = self.clock.now();
        match self.store.host(host).await? {
            Some(h) => self.settle(&h, now).await,
            None => self.host_deleted(host, now).await,
        }
    }

    /// Fires every timed condition whose deadline has come (after
    /// re-reading its host).
    pub async fn run_deadlines(&mut self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut due = Vec::new();
        while let Some(first) = self.deadlines.first().copied() {
            if first.0 > now {
                break;
            }
            self.deadlines.pop_first();
            self.by_host.remove(&(first.1, first.2));
            due.push(first.1);
        }
        due.dedup();
        let count = due.len();
        for host in due {
            self.host_changed(host).await?;
        }
        Ok(count)
    }

    /// When the evaluator next has something to do: the first deadline, a
    /// due notification, or the next resync.
    pub async fn next_wake(&self) -> Result<DateTime<Utc>, StoreError> {
        let resync = self
            .last_resync
            .map_or(self.clock.now(), |at| at + RESYNC_EVERY);
        let deadline = self.deadlines.first().map(|d| d.0);
        let notify = self.store.next_alert_due().await?;
        Ok([Some(resync), deadline, notify]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(resync))
    }

    /// The notifications due now. Firing alerts whose host a silence
    /// covers are held until the silence ends instead (and come back then
    /// unless another silence covers them).
    pub async fn due(&mut self) -> Result<Vec<Due>, StoreError> {
        let now = self.clock.now();
        let alerts = self.store.alerts_due(now, DUE_PER_ROUND).await?;
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        let silences = self.store.silences(Some(now)).await?;
        let mut out = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let host = self.store.host(alert.host_id).await?;
            if alert.firing {
                let until = host.as_ref().and_then(|h| {
                    silences
                        .iter()
                        .filter(|s| s.selector.matches(&h.labels))
                        .map(|s| s.until)
                        .max()
                });
                if let Some(until) = until {
                    self.store.hold_alert(alert.id, until).await?;
                    continue;
                }
            }
            let repeat = alert.firing && alert.notifications > 0;
            out.push(Due {
                alert,
                host,
                repeat,
            });
        }
        Ok(out)
    }

    /// Records that `alert`'s notification was handed over now: a firing
    /// one repeats after the repeat interval.
    pub async fn handed_over(&self, alert: AlertId, firing: bool) -> Result<(), StoreError> {
        let now = self.clock.now();
        let next = firing.then(|| now + self.settings.repeat);
        self.store.alert_notified(alert, now, next).await
    }

    fn facts(&self, host: &Host) -> HostFacts {
        let policy = host
            .policy_id
            .and_then(|id| self.policies.iter().find(|p| p.id == id));
        HostFacts::of(host, policy)
    }

    /// Fires or resolves `host`'s timed conditions as they stand at `now`
    /// and indexes their next deadlines.
    async fn settle(&mut self, host: &Host, now: DateTime<Utc>) -> Result<(), StoreError> {
        let facts = self.facts(host);
        for timed in [Timed::Stale, Timed::Offline] {
            self.unindex(host.id, timed);
            let firing = self.firing.contains(&(host.id, timed));
            // A firing alert ends when its condition does — judged without
            // the grace after a start, which only delays new alerts (a
            // restart must not resolve and fire again what still holds).
            if firing {
                if let Some(why) = rules::ended(timed, &facts, now) {
                    self.resolve(host.id, timed, now, why).await?;
                }
                if self.firing.contains(&(host.id, timed)) {
                    continue;
                }
            }
            match rules::deadline(timed, &facts, self.watching_since, self.settings.grace) {
                Some(at) if at <= now => self.fire(host, timed, &facts, now).await?,
                Some(at) => {
                    self.deadlines.insert((at, host.id, timed));
                    self.by_host.insert((host.id, timed), at);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Forgets a deleted host and resolves all its alerts, of every kind.
    async fn host_deleted(&mut self, host: HostId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let why = "the host was deleted";
        for timed in [Timed::Stale, Timed::Offline] {
            self.unindex(host, timed);
            self.firing.remove(&(host, timed));
        }
        let entry = resolve_entry(host, "*", "", why);
        if self
            .store
            .resolve_host_alerts(host, now, why, Some(&entry))
            .await?
            > 0
        {
            self.changed = true;
            tracing::info!(%host, "alerts resolved: {why}");
        }
        Ok(())
    }

    fn unindex(&mut self, host: HostId, timed: Timed) {
        if let Some(at) = self.by_host.remove(&(host, timed)) {
            self.deadlines.remove(&(at, host, timed));
        }
    }

    async fn fire(
        &mut self,
        host: &Host,
        timed: Timed,
        facts: &HostFacts,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let message = rules::timed_message(timed, facts, now);
        let alert = NewAlert {
            id: AlertId::new(),
            kind: timed.kind().as_str().to_owned(),
            host_id: host.id,
            subject: String::new(),
            message: message.clone(),
            job_id: None,
            started_at: now,
        };
        let entry = fire_entry(&alert, &host.name);
        if self.store.fire_alert(&alert, Some(&entry)).await? {
            self.changed = true;
            tracing::warn!(host_id = %host.id, host = %host.name, kind = %timed.kind(), "{message}");
        }
        self.firing.insert((host.id, timed));
        Ok(())
    }

    async fn resolve(
        &mut self,
        host: HostId,
        timed: Timed,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), StoreError> {
        let entry = resolve_entry(host, timed.kind().as_str(), "", why);
        if let Some(alert) = self
            .store
            .resolve_alert(host, timed.kind().as_str(), "", now, why, Some(&entry))
            .await?
        {
            self.changed = true;
            tracing::info!(%host, kind = %alert.kind, "alert resolved: {why}");
        }
        self.firing.remove(&(host, timed));
        Ok(())
    }
}

fn timed_of(kind: &str) -> Option<Timed> {
    [Timed::Stale, Timed::Offline]
        .into_iter()
        .find(|t| t.kind().as_str() == kind)
}

/// The audit entry of a fired alert (written with it).
pub(crate) fn fire_entry(alert: &NewAlert, host_name: &str) -> rm_store::NewAuditEntry {
    Audit::server().entry(
        Action::AlertFire,
        Some(Target::new("alert", alert.id)),
        serde_json::json!({
            "kind": alert.kind,
            "host_id": alert.host_id.to_string(),
            "host": host_name,
            "subject": alert.subject,
            "message": alert.message,
        }),
    )
}

/// The audit entry of a resolution (written with it).
pub(crate) fn resolve_entry(
    host: HostId,
    kind: &str,
    subject: &str,
    why: &str,
) -> rm_store::NewAuditEntry {
    Audit::server().entry(
        Action::AlertResolve,
        Some(Target::new("host", host)),
        serde_json::json!({"kind": kind, "subject": subject, "why": why}),
    )
}
