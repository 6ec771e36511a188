//! The alert evaluator on a manual clock over a real SQLite store: when
//! `backup_stale` and `host_offline` fire and resolve, when notifications
//! are due (first, repeats, resolutions), acknowledgements, silences, and
//! the grace a server gives hosts after it starts. Time moves only when a
//! test moves it, so hours pass in microseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rm_core::schedule::ManualClock;
use rm_core::{JobStatus, Labels, SilenceId};
use rm_server::alerts::evaluator::{Due, Evaluator, Settings};
use rm_store::prelude::*;
use rm_store::{AlertFilter, AlertRecord, HostPatch, NewAlert, SilenceRecord};
use rm_testkit::store::{connect_host, ended_job, enrol_host, temp_store, TestDatabase};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().unwrap()
}

const SETTINGS: Settings = Settings {
    repeat: Duration::hours(24),
    grace: Duration::zero(),
};

struct Rig {
    _db: TestDatabase,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    evaluator: Evaluator,
}

async fn rig() -> Rig {
    let (db, store) = temp_store().await.unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let evaluator = Evaluator::new(store.clone(), clock.clone(), SETTINGS);
    Rig {
        _db: db,
        store,
        clock,
        evaluator,
    }
}

impl Rig {
    /// Moves the clock and runs what came due, like the task does.
    async fn at(&mut self, t: DateTime<Utc>) {
        self.clock.set(t);
        if self.evaluator.resync_due() {
            self.evaluator.resync().await.unwrap();
        }
        self.evaluator.run_deadlines().await.unwrap();
    }

    async fn alerts(&self) -> Vec<AlertRecord> {
        self.store
            .list_alerts(&AlertFilter {
                limit: 100,
                ..AlertFilter::default()
            })
            .await
            .unwrap()
    }

    async fn firing(&self) -> Vec<(String, String)> {
        let mut kinds: Vec<(String, String)> = self
            .alerts()
            .await
            .into_iter()
            .filter(|a| a.firing)
            .map(|a| (a.kind, a.message))
            .collect();
        kinds.sort();
        kinds
    }

    /// Takes what is due and marks it handed over.
    async fn hand_over(&mut self) -> Vec<Due> {
        let due = self.evaluator.due().await.unwrap();
        for d in &due {
            self.evaluator
                .handed_over(d.alert.id, d.alert.firing)
                .await
                .unwrap();
        }
        due
    }
}

fn hours(h: i64) -> Duration {
    Duration::hours(h)
}

#[tokio::test]
async fn a_host_that_never_backs_up_goes_stale_after_its_freshness_and_is_sent_once_a_day() {
    let mut rig = rig().await;
    let host = enrol_host(&*rig.store, "web-01", Labels::default(), start())
        .await
        .unwrap();
    connect_host(&*rig.store, host, start()).await.unwrap();
    rig.at(start()).await;
    assert_eq!(
        rig.evaluator.indexed(),
        1,
        "online: only the stale deadline"
    );

    rig.at(start() + hours(26) - Duration::seconds(1)).await;
    assert!(rig.firing().await.is_empty());
    assert!(rig.hand_over().await.is_empty());

    rig.at(start() + hours(26)).await;
    let firing = rig.firing().await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].0, "backup_stale");
    assert!(firing[0].1.starts_with("never backed up"), "{firing:?}");

    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1);
    assert!(!due[0].repeat);
    assert_eq!(due[0].host.as_ref().unwrap().name, "web-01");
    // Nothing more until the repeat interval has passed.
    rig.at(start() + hours(49)).await;
    assert!(rig.hand_over().await.is_empty());
    rig.at(start() + hours(50)).await;
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1);
    assert!(due[0].repeat, "the second one is a repeat");

    // Still one alert: a condition that stays true does not fire again.
    assert_eq!(rig.alerts().await.len(), 1);
}

#[tokio::test]
async fn a_backup_that_succeeds_resolves_stale_and_the_resolution_is_sent() {
    let mut rig = rig().await;
    let host = enrol_host(&*rig.store, "db-01", Labels::default(), start())
        .await
        .unwrap();
    connect_host(&*rig.store, host, start()).await.unwrap();
    rig.at(start() + hours(27)).await;
    assert_eq!(rig.hand_over().await.len(), 1, "the firing is sent");

    let backup_at = start() + hours(28);
    ended_job(&*rig.store, host, "backup", JobStatus::Failed, backup_at)
        .await
        .unwrap();
    rig.clock.set(backup_at);
    rig.evaluator.host_changed(host).await.unwrap();
    assert_eq!(rig.firing().await.len(), 1, "a failed backup saved nothing");

    ended_job(&*rig.store, host, "backup", JobStatus::Partial, backup_at)
        .await
        .unwrap();
    rig.evaluator.host_changed(host).await.unwrap();
    assert!(
        rig.firing().await.is_empty(),
        "a partial backup saved a snapshot"
    );
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1);
    assert!(!due[0].alert.firing, "the resolution");
    assert_eq!(
        due[0].alert.resolved_message.as_deref(),
        Some("a backup succeeded")
    );
    assert!(rig.hand_over().await.is_empty(), "sent once");

    // The next deadline counts from the backup.
    rig.at(backup_at + hours(26) - Duration::seconds(1)).await;
    assert!(rig.firing().await.is_empty());
    rig.at(backup_at + hours(26)).await;
    assert_eq!(rig.firing().await.len(), 1);
    assert!(rig.firing().await[0]
        .1
        .starts_with("no successful backup for 26 h"));
}

#[tokio::test]
async fn a_host_offline_past_its_threshold_fires_and_coming_back_resolves() {
    let mut rig = rig().await;
    let host = enrol_host(&*rig.store, "nas", Labels::default(), start())
        .await
        .unwrap();
    let connection = connect_host(&*rig.store, host, start()).await.unwrap();
    // Its own threshold: ten minutes.
    rig.store
        .patch_host(
            host,
            &HostPatch {
                offline_seconds: Some(Some(600)),
                ..HostPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    rig.at(start()).await;
    let gone = start() + Duration::minutes(5);
    rig.store
        .mark_host_offline(host, &connection, gone)
        .await
        .unwrap();
    rig.clock.set(gone);
    rig.evaluator.host_changed(host).await.unwrap();

    rig.at(gone + Duration::minutes(10) - Duration::seconds(1))
        .await;
    assert!(rig.firing().await.is_empty());
    rig.at(gone + Duration::minutes(10)).await;
    let firing = rig.firing().await;
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].0, "host_offline");
    assert!(firing[0].1.starts_with("offline for 10 min"), "{firing:?}");

    // Not handed over yet (no notification was sent): the resolution is
    // not sent either.
    let back = gone + Duration::minutes(12);
    connect_host(&*rig.store, host, back).await.unwrap();
    rig.clock.set(back);
    rig.evaluator.host_changed(host).await.unwrap();
    assert!(rig.firing().await.is_empty());
    let resolved = rig.alerts().await;
    assert_eq!(
        resolved[0].resolved_message.as_deref(),
        Some("the host is back online")
    );
    assert!(
        rig.hand_over().await.is_empty(),
        "a firing nobody was told of resolves silently"
    );
}

#[tokio::test]
async fn acknowledged_alerts_stop_repeating_but_their_resolution_is_still_sent() {
    let mut rig = rig().await;
    let host = enrol_host(&*rig.store, "web-02", Labels::default(), start())
        .await
        .unwrap();
    connect_host(&*rig.store, host, start()).await.unwrap();
    rig.at(start() + hours(26)).await;
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1);
    let id = due[0].alert.id;
    let acked = rig
        .store
        .acknowledge_alert(id, "alice", start() + hours(27), None)
        .await
        .unwrap();
    assert_eq!(acked.acknowledged_by.as_deref(), Some("alice"));
    assert!(acked.next_notify_at.is_none());
    let again = rig
        .store
        .acknowledge_alert(id, "bob", start() + hours(27), None)
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("acknowledged already by alice"),
        "{again}"
    );

    rig.at(start() + hours(80)).await;
    assert!(rig.hand_over().await.is_empty(), "no repeats");

    ended_job(
        &*rig.store,
        host,
        "backup",
        JobStatus::Succeeded,
        start() + hours(81),
    )
    .await
    .unwrap();
    rig.clock.set(start() + hours(81));
    rig.evaluator.host_changed(host).await.unwrap();
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1);
    assert!(!due[0].alert.firing);
}

#[tokio::test]
async fn a_silence_holds_notifications_back_until_it_ends() {
    let mut rig = rig().await;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(String::from("env"), String::from("prod"));
    let prod = enrol_host(
        &*rig.store,
        "web-03",
        Labels::parse("labels", labels.clone()).unwrap(),
        start(),
    )
    .await
    .unwrap();
    let dev = enrol_host(&*rig.store, "dev-01", Labels::default(), start())
        .await
        .unwrap();
    for host in [prod, dev] {
        connect_host(&*rig.store, host, start()).await.unwrap();
    }
    let until = start() + hours(30);
    rig.store
        .create_silence(
            &SilenceRecord {
                id: SilenceId::new(),
                selector: rm_core::Selector(Labels::parse("selector", labels).unwrap()),
                until,
                reason: String::from("maintenance"),
                created_by: String::from("alice"),
                created_at: start(),
            },
            None,
        )
        .await
        .unwrap();

    rig.at(start() + hours(26)).await;
    assert_eq!(
        rig.firing().await.len(),
        2,
        "both alerts fire and are stored"
    );
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1, "only the host outside the silence is sent");
    assert_eq!(due[0].alert.host_id, dev);

    rig.at(until - Duration::seconds(1)).await;
    assert!(rig.hand_over().await.is_empty());
    rig.at(until).await;
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1, "sent once the silence ends");
    assert_eq!(due[0].alert.host_id, prod);
    assert!(!due[0].repeat);
}

#[tokio::test]
async fn a_server_back_after_a_night_away_waits_its_grace_before_paging() {
    let (_db, store) = temp_store().await.unwrap();
    let host = enrol_host(&*store, "web-04", Labels::default(), start())
        .await
        .unwrap();
    let connection = connect_host(&*store, host, start()).await.unwrap();
    store
        .mark_host_offline(host, &connection, start() + hours(1))
        .await
        .unwrap();
    // The server starts again at 40 h: the host looks stale (26 h) and
    // offline (1 h) for a long time, but nobody knows what it did.
    let restart = start() + hours(40);
    let clock = Arc::new(ManualClock::new(restart));
    let settings = Settings {
        grace: Duration::seconds(90),
        ..SETTINGS
    };
    let mut evaluator = Evaluator::new(store.clone(), clock.clone(), settings);
    evaluator.resync().await.unwrap();
    let firing = |store: Arc<dyn Store>| async move { store.firing_alerts().await.unwrap() };
    assert!(firing(store.clone()).await.is_empty());
    clock.set(restart + Duration::seconds(90));
    evaluator.run_deadlines().await.unwrap();
    let kinds: Vec<String> = firing(store.clone())
        .await
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(kinds, ["backup_stale"], "offline counts from the restart");
    clock.set(restart + hours(1));
    evaluator.run_deadlines().await.unwrap();
    let before: Vec<_> = firing(store.clone())
        .await
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(before.len(), 2);

    // Another restart: what still holds stays firing — the same alerts,
    // not resolved during the grace and fired again after it.
    let again = restart + hours(2);
    clock.set(again);
    let mut evaluator = Evaluator::new(store.clone(), clock.clone(), settings);
    evaluator.resync().await.unwrap();
    clock.set(again + hours(2));
    evaluator.run_deadlines().await.unwrap();
    let after: Vec<_> = firing(store.clone())
        .await
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(after, before);
    assert_eq!(
        store
            .list_alerts(&AlertFilter {
                limit: 10,
                ..AlertFilter::default()
            })
            .await
            .unwrap()
            .len(),
        2,
        "nothing resolved and fired again"
    );
}

#[tokio::test]
async fn a_resolution_racing_the_first_notice_is_still_sent() {
    let mut rig = rig().await;
    let host = enrol_host(&*rig.store, "racer", Labels::default(), start())
        .await
        .unwrap();
    connect_host(&*rig.store, host, start()).await.unwrap();
    rig.at(start() + hours(26)).await;
    // The firing notice is taken, and before it is marked handed over a
    // backup resolves the alert (nothing was sent yet as far as it knew).
    let due = rig.evaluator.due().await.unwrap();
    assert_eq!(due.len(), 1);
    ended_job(
        &*rig.store,
        host,
        "backup",
        JobStatus::Succeeded,
        start() + hours(26),
    )
    .await
    .unwrap();
    rig.evaluator.host_changed(host).await.unwrap();
    rig.evaluator
        .handed_over(due[0].alert.id, due[0].alert.firing)
        .await
        .unwrap();
    let due = rig.hand_over().await;
    assert_eq!(due.len(), 1, "the resolution follows the firing notice");
    assert!(!due[0].alert.firing);
    assert!(rig.hand_over().await.is_empty());
}

#[tokio::test]
async fn a_deleted_host_resolves_its_alerts() {
    let mut rig = rig().await;
    let host = enrol_host(&*rig.store, "old", Labels::default(), start())
        .await
        .unwrap();
    rig.at(start() + hours(27)).await;
    assert_eq!(rig.firing().await.len(), 2, "stale and offline");
    // A failed job's alert too: every kind goes with the host.
    let failed = NewAlert {
        id: rm_core::AlertId::new(),
        kind: String::from("job_failed"),
        host_id: host,
        subject: String::from("backup:manual"),
        message: String::from("a backup started by hand failed"),
        job_id: None,
        started_at: start() + hours(27),
    };
    assert!(rig.store.fire_alert(&failed, None).await.unwrap());
    assert_eq!(rig.firing().await.len(), 3);
    rig.store
        .delete_host(host, start() + hours(28), None)
        .await
        .unwrap();
    rig.clock.set(start() + hours(28));
    rig.evaluator.host_changed(host).await.unwrap();
    assert!(rig.firing().await.is_empty());
    // A full re-read finds nothing to redo.
    rig.evaluator.resync().await.unwrap();
    assert!(rig.firing().await.is_empty());
    assert_eq!(rig.evaluator.indexed(), 0);
}
