//! Alerts and silences on every store (`RM_TEST_STORE`): an alert of a
//! (host, kind, subject) fires once however many deciders race, resolving
//! and acknowledging stick once with the errors their contract names, the
//! notification schedule (due, notified, held, resolved) moves as
//! documented, lists filter and page, and ending a silence makes what it
//! held due.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rm_core::{AlertId, HostId, Labels, Selector, SilenceId};
use rm_store::prelude::*;
use rm_store::{
    AlertFilter, AuditActor, AuditActorKind, AuditFilter, HostPatch, NewAlert, NewAuditEntry,
    SilenceRecord, StoreError,
};
use rm_store_tests::{enrol, open_temp_store, t};
use serde_json::json;
use ulid::Ulid;

/// An alert fired at `t(at)`, its id minted then (ids sort by time, as
/// the server's do; two minted in one millisecond would not).
fn new_alert(host: HostId, kind: &str, subject: &str, at: i64) -> NewAlert {
    let ms = u64::try_from(t(at).timestamp_millis()).unwrap();
    NewAlert {
        id: AlertId(Ulid::from_parts(ms, Ulid::new().random())),
        kind: kind.to_owned(),
        host_id: host,
        subject: subject.to_owned(),
        message: format!("{kind} on {subject}"),
        job_id: None,
        started_at: t(at),
    }
}

fn entry(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: t(1),
        actor: AuditActor::of_kind(AuditActorKind::Server),
        action: action.to_owned(),
        target_type: Some("alert".to_owned()),
        target_id: None,
        details: json!({}),
        ip: None,
        user_agent: None,
    }
}

async fn actions(store: &dyn Store) -> Vec<String> {
    let mut actions: Vec<String> = store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    actions.sort();
    actions
}

fn all() -> AlertFilter {
    AlertFilter {
        limit: 100,
        ..AlertFilter::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deciders_fire_an_alert_once_and_resolve_it_once() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;

    // Eight deciders fire the same condition at once: one alert.
    let mut racers = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        racers.push(tokio::spawn(async move {
            store
                .fire_alert(
                    &new_alert(host, "backup_stale", "", 10 + i),
                    Some(&entry("alert.fire")),
                )
                .await
                .unwrap()
        }));
    }
    let mut fired = 0;
    for racer in racers {
        if racer.await.unwrap() {
            fired += 1;
        }
    }
    assert_eq!(fired, 1);
    let firing = store.firing_alerts().await.unwrap();
    assert_eq!(firing.len(), 1);
    assert!(firing[0].firing);
    // Its first notification is due when it fired.
    assert_eq!(firing[0].next_notify_at, Some(firing[0].started_at));
    // Only the firing that happened is audited.
    assert_eq!(actions(&*store).await, ["alert.fire"]);

    // Another subject or kind is another alert.
    assert!(store
        .fire_alert(&new_alert(host, "backup_stale", "repo-2", 20), None)
        .await
        .unwrap());
    assert!(store
        .fire_alert(&new_alert(host, "host_offline", "", 20), None)
        .await
        .unwrap());
    assert_eq!(
        store.firing_alert_counts().await.unwrap(),
        [
            ("backup_stale".to_owned(), 2),
            ("host_offline".to_owned(), 1)
        ]
    );

    // Eight deciders resolve it at once: one resolution, returned resolved.
    let mut racers = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        racers.push(tokio::spawn(async move {
            store
                .resolve_alert(
                    host,
                    "backup_stale",
                    "",
                    t(30),
                    "fresh again",
                    Some(&entry("alert.resolve")),
                )
                .await
                .unwrap()
        }));
    }
    let mut resolved = Vec::new();
    for racer in racers {
        resolved.extend(racer.await.unwrap());
    }
    assert_eq!(resolved.len(), 1);
    let resolved = &resolved[0];
    assert!(!resolved.firing);
    assert_eq!(resolved.id, firing[0].id);
    assert_eq!(resolved.resolved_at, Some(t(30)));
    assert_eq!(resolved.resolved_message.as_deref(), Some("fresh again"));
    // Never notified while firing: its resolution is not notified either.
    assert_eq!(resolved.next_notify_at, None);
    assert_eq!(actions(&*store).await, ["alert.fire", "alert.resolve"]);

    // Resolved, the condition may fire again.
    assert!(store
        .fire_alert(&new_alert(host, "backup_stale", "", 40), None)
        .await
        .unwrap());

    // Deleting the host resolves all three firing ones, audited once.
    let n = store
        .resolve_host_alerts(host, t(50), "host deleted", Some(&entry("host.delete")))
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert!(store.firing_alerts().await.unwrap().is_empty());
    assert!(store.firing_alert_counts().await.unwrap().is_empty());
    // Nothing left to resolve: nothing changed, nothing audited.
    let n = store
        .resolve_host_alerts(host, t(60), "again", Some(&entry("host.delete")))
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        actions(&*store).await,
        ["alert.fire", "alert.resolve", "host.delete"]
    );
}

#[tokio::test]
async fn notifications_come_due_repeat_are_held_and_end_with_the_resolution() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let alert = new_alert(host, "job_failed", "", 100);
    assert!(store.fire_alert(&alert, None).await.unwrap());
    assert_eq!(store.next_alert_due().await.unwrap(), Some(t(100)));
    assert!(store.alerts_due(t(99), 10).await.unwrap().is_empty());
    let due = store.alerts_due(t(100), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, alert.id);

    // Handed over; the next repeat is due later.
    store
        .alert_notified(alert.id, t(101), Some(t(500)))
        .await
        .unwrap();
    let now = store.alert(alert.id).await.unwrap().unwrap();
    assert_eq!(now.notifications, 1);
    assert_eq!(now.notified_at, Some(t(101)));
    assert_eq!(now.next_notify_at, Some(t(500)));
    assert!(store.alerts_due(t(499), 10).await.unwrap().is_empty());

    // A silence holds it back.
    store.hold_alert(alert.id, t(900)).await.unwrap();
    assert_eq!(store.next_alert_due().await.unwrap(), Some(t(900)));

    // Resolved after a notice: the resolution is due at once.
    let resolved = store
        .resolve_alert(host, "job_failed", "", t(600), "passed", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.next_notify_at, Some(t(600)));
    // Holding a resolved alert changes nothing.
    store.hold_alert(alert.id, t(2000)).await.unwrap();
    assert_eq!(store.next_alert_due().await.unwrap(), Some(t(600)));
    // The resolution handed over is the last notice.
    store.alert_notified(alert.id, t(601), None).await.unwrap();
    let done = store.alert(alert.id).await.unwrap().unwrap();
    assert_eq!(done.notifications, 2);
    assert_eq!(done.next_notify_at, None);
    assert_eq!(store.next_alert_due().await.unwrap(), None);
    assert!(store.alerts_due(t(10_000), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_firing_notice_that_crosses_a_resolution_leaves_it_due() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let alert = new_alert(host, "check_failed", "", 100);
    assert!(store.fire_alert(&alert, None).await.unwrap());
    // Resolved before its first notice was recorded: nothing to tell yet…
    let resolved = store
        .resolve_alert(host, "check_failed", "", t(200), "ok", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.next_notify_at, None);
    // …but the firing notice went out meanwhile, so the end is due too.
    store
        .alert_notified(alert.id, t(201), Some(t(900)))
        .await
        .unwrap();
    let now = store.alert(alert.id).await.unwrap().unwrap();
    assert_eq!(now.next_notify_at, Some(t(200)));
    assert_eq!(now.notifications, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_is_acknowledged_once_and_then_not_repeated() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let err = store
        .acknowledge_alert(AlertId::new(), "ann", t(1), Some(&entry("alert.ack")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    let alert = new_alert(host, "backup_stale", "", 100);
    assert!(store.fire_alert(&alert, None).await.unwrap());
    let mut racers = Vec::new();
    for who in ["ann", "bob", "cy", "di"] {
        let store = Arc::clone(&store);
        let id = alert.id;
        racers.push(tokio::spawn(async move {
            store
                .acknowledge_alert(id, who, t(200), Some(&entry("alert.ack")))
                .await
        }));
    }
    let mut acknowledged = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Ok(a) => acknowledged.push(a),
            Err(StoreError::Conflict(msg)) => assert!(msg.contains("acknowledged"), "{msg}"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(acknowledged.len(), 1);
    let ack = &acknowledged[0];
    assert_eq!(ack.acknowledged_at, Some(t(200)));
    assert!(ack.acknowledged_by.is_some());
    assert_eq!(ack.next_notify_at, None);
    assert_eq!(actions(&*store).await, ["alert.ack"]);
    // Acknowledged: a firing notice recorded late brings no repeat back.
    store
        .alert_notified(alert.id, t(201), Some(t(900)))
        .await
        .unwrap();
    assert_eq!(store.next_alert_due().await.unwrap(), None);

    // A resolved alert cannot be acknowledged.
    let other = new_alert(host, "host_offline", "", 300);
    assert!(store.fire_alert(&other, None).await.unwrap());
    store
        .resolve_alert(host, "host_offline", "", t(301), "back", None)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .acknowledge_alert(other.id, "ann", t(302), Some(&entry("alert.ack")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("resolved")),
        "{err:?}"
    );
    assert_eq!(actions(&*store).await, ["alert.ack"]);
}

#[tokio::test]
async fn lists_filter_by_state_host_kind_and_labels_newest_first_and_page() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (prod, dev) = (enrol(&*store).await, enrol(&*store).await);
    let labels = Labels::parse_pairs("labels", "env=prod").unwrap();
    let patch = HostPatch {
        labels: Some(labels.clone()),
        ..Default::default()
    };
    store.patch_host(prod, &patch, None).await.unwrap();

    // Fired in turn, so newest first is the reverse order.
    let mut fired = Vec::new();
    for (i, (host, kind)) in [
        (prod, "backup_stale"),
        (dev, "backup_stale"),
        (prod, "job_failed"),
        (dev, "host_offline"),
    ]
    .into_iter()
    .enumerate()
    {
        let alert = new_alert(host, kind, "", 100 + i as i64);
        assert!(store.fire_alert(&alert, None).await.unwrap());
        fired.push(alert.id);
    }
    store
        .resolve_alert(dev, "backup_stale", "", t(200), "ok", None)
        .await
        .unwrap();
    store
        .acknowledge_alert(fired[2], "ann", t(201), None)
        .await
        .unwrap();
    let ids = |list: Vec<rm_store::AlertRecord>| list.iter().map(|a| a.id).collect::<Vec<_>>();

    let newest_first: Vec<AlertId> = fired.iter().rev().copied().collect();
    assert_eq!(ids(store.list_alerts(&all()).await.unwrap()), newest_first);
    let firing = AlertFilter {
        firing: Some(true),
        ..all()
    };
    assert_eq!(
        ids(store.list_alerts(&firing).await.unwrap()),
        [fired[3], fired[2], fired[0]]
    );
    let resolved = AlertFilter {
        firing: Some(false),
        ..all()
    };
    assert_eq!(ids(store.list_alerts(&resolved).await.unwrap()), [fired[1]]);
    let acknowledged = AlertFilter {
        acknowledged: Some(true),
        ..all()
    };
    assert_eq!(
        ids(store.list_alerts(&acknowledged).await.unwrap()),
        [fired[2]]
    );
    let unacknowledged = AlertFilter {
        acknowledged: Some(false),
        ..all()
    };
    assert_eq!(store.list_alerts(&unacknowledged).await.unwrap().len(), 3);
    let of_dev = AlertFilter {
        host_id: Some(dev),
        ..all()
    };
    assert_eq!(
        ids(store.list_alerts(&of_dev).await.unwrap()),
        [fired[3], fired[1]]
    );
    let stale = AlertFilter {
        kind: Some("backup_stale".to_owned()),
        ..all()
    };
    assert_eq!(
        ids(store.list_alerts(&stale).await.unwrap()),
        [fired[1], fired[0]]
    );
    let of_prod = AlertFilter {
        selector: Some(Selector(labels)),
        ..all()
    };
    assert_eq!(
        ids(store.list_alerts(&of_prod).await.unwrap()),
        [fired[2], fired[0]]
    );
    let nobody = AlertFilter {
        selector: Some(Selector(Labels::parse_pairs("labels", "env=qa").unwrap())),
        ..all()
    };
    assert!(store.list_alerts(&nobody).await.unwrap().is_empty());
    // Several conditions at once.
    let prod_firing_stale = AlertFilter {
        firing: Some(true),
        kind: Some("backup_stale".to_owned()),
        host_id: Some(prod),
        ..all()
    };
    assert_eq!(
        ids(store.list_alerts(&prod_firing_stale).await.unwrap()),
        [fired[0]]
    );

    // Pages of two, each after the last id seen.
    let page = AlertFilter { limit: 2, ..all() };
    let first = ids(store.list_alerts(&page).await.unwrap());
    assert_eq!(first, [fired[3], fired[2]]);
    let next = AlertFilter {
        before: Some(fired[2]),
        ..page
    };
    assert_eq!(
        ids(store.list_alerts(&next).await.unwrap()),
        [fired[1], fired[0]]
    );
    // A limit of 0 is clamped to one, not "none" or "all".
    let zero = AlertFilter { limit: 0, ..all() };
    assert_eq!(store.list_alerts(&zero).await.unwrap().len(), 1);
    assert_eq!(store.alerts_due(t(10_000), 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn ending_a_silence_keeps_it_as_history_and_makes_what_it_held_due() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let silence = SilenceRecord {
        id: SilenceId::new(),
        selector: Selector(Labels::parse_pairs("labels", "env=prod").unwrap()),
        until: t(1000),
        reason: "maintenance".to_owned(),
        created_by: "ann".to_owned(),
        created_at: t(0),
    };
    let short = SilenceRecord {
        id: SilenceId::new(),
        selector: Selector::default(),
        until: t(500),
        ..silence.clone()
    };
    store
        .create_silence(&silence, Some(&entry("silence.create")))
        .await
        .unwrap();
    store.create_silence(&short, None).await.unwrap();
    // Ending first first; `after` leaves out those ended by then.
    let listed = store.silences(None).await.unwrap();
    assert_eq!(listed, [short.clone(), silence.clone()]);
    let still: Vec<SilenceId> = store
        .silences(Some(t(500)))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(still, [silence.id]);

    // Two alerts: one held until this silence ends, one merely repeating
    // before then.
    let held = new_alert(host, "backup_stale", "", 100);
    let repeating = new_alert(host, "job_failed", "", 100);
    assert!(store.fire_alert(&held, None).await.unwrap());
    assert!(store.fire_alert(&repeating, None).await.unwrap());
    store.hold_alert(held.id, t(1000)).await.unwrap();
    store
        .alert_notified(repeating.id, t(101), Some(t(800)))
        .await
        .unwrap();

    store
        .delete_silence(silence.id, t(300), Some(&entry("silence.delete")))
        .await
        .unwrap();
    assert_eq!(
        store.alert(held.id).await.unwrap().unwrap().next_notify_at,
        Some(t(300))
    );
    assert_eq!(
        store
            .alert(repeating.id)
            .await
            .unwrap()
            .unwrap()
            .next_notify_at,
        Some(t(800))
    );
    // Kept, ended now.
    let ended: Vec<SilenceRecord> = store.silences(None).await.unwrap();
    assert_eq!(ended.len(), 2);
    assert_eq!(ended[0].id, silence.id);
    assert_eq!(ended[0].until, t(300));

    // Ending it again, or one that never was: refused, nothing audited.
    let err = store
        .delete_silence(silence.id, t(400), Some(&entry("silence.delete")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .delete_silence(SilenceId::new(), t(400), Some(&entry("silence.delete")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(actions(&*store).await, ["silence.create", "silence.delete"]);
}
