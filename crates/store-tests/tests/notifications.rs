//! Notification channels and the outbox on every store (`RM_TEST_STORE`):
//! audit entries commit with the change or not at all, names are unique,
//! queueing is all or none, claims come oldest due first, at most `limit` at
//! a time, and each row once per lease, outcomes move the channel's counters
//! and failure state, and finished rows are pruned while waiting ones stay;
//! servers claiming and reporting at once take each row once and count each
//! outcome once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use rm_core::{ChannelId, Selector};
use rm_store::prelude::*;
use rm_store::{
    AuditActor, AuditActorKind, AuditFilter, ChannelRecord, DeliveryOutcome, NewAuditEntry,
    NewNotification, StoreError,
};
use rm_store_tests::{open_temp_store, t};
use serde_json::json;

fn channel(name: &str) -> ChannelRecord {
    ChannelRecord {
        id: ChannelId::new(),
        name: name.to_owned(),
        kind: "webhook".to_owned(),
        config: json!({"url": "https://example.com/hook"}),
        secret: None,
        selector: Selector::default(),
        kinds: vec!["backup_stale".to_owned()],
        created_at: t(0),
        updated_at: t(0),
        stats: Default::default(),
    }
}

fn entry(action: &str, id: ChannelId) -> NewAuditEntry {
    NewAuditEntry {
        at: t(1),
        actor: AuditActor::of_kind(AuditActorKind::Cli),
        action: action.to_owned(),
        target_type: Some("channel".to_owned()),
        target_id: Some(id.to_string()),
        details: json!({}),
        ip: None,
        user_agent: None,
    }
}

async fn actions(store: &dyn Store) -> Vec<String> {
    store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect()
}

fn notification(channel: ChannelId, at: i64) -> NewNotification {
    NewNotification {
        channel_id: channel,
        alert_id: None,
        event: "alert.firing".to_owned(),
        payload: json!({"n": at}),
        created_at: t(at),
    }
}

#[tokio::test]
async fn channel_changes_are_audited_in_their_transaction_and_names_are_unique() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = channel("a");
    store
        .create_channel(&a, Some(&entry("channel.create", a.id)))
        .await
        .unwrap();
    let taken = channel("a");
    let err = store
        .create_channel(&taken, Some(&entry("channel.create", taken.id)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let b = channel("b");
    store.create_channel(&b, None).await.unwrap();
    let renamed = ChannelRecord {
        name: "a".to_owned(),
        ..b.clone()
    };
    let err = store
        .update_channel(&renamed, Some(&entry("channel.update", b.id)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let missing = channel("c");
    let err = store
        .update_channel(&missing, Some(&entry("channel.update", missing.id)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store
        .delete_channel(missing.id, Some(&entry("channel.delete", missing.id)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(actions(&*store).await, ["channel.create"]);

    let changed = ChannelRecord {
        config: json!({"url": "https://example.com/other"}),
        updated_at: t(5),
        ..a.clone()
    };
    store
        .update_channel(&changed, Some(&entry("channel.update", a.id)))
        .await
        .unwrap();
    let read = store.channel(a.id).await.unwrap().unwrap();
    assert_eq!(read, changed);
    let names: Vec<String> = store
        .channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    store
        .delete_channel(a.id, Some(&entry("channel.delete", a.id)))
        .await
        .unwrap();
    assert_eq!(
        actions(&*store).await,
        ["channel.delete", "channel.update", "channel.create"]
    );
}

#[tokio::test]
async fn the_outbox_claims_oldest_first_once_per_lease_and_counts_outcomes() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = channel("a");
    store.create_channel(&a, None).await.unwrap();

    // All or none: one row for a channel that does not exist queues none.
    let err = store
        .enqueue_notifications(&[notification(a.id, 10), notification(ChannelId::new(), 10)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(store.next_notification_due().await.unwrap(), None);

    let rows: Vec<NewNotification> = (0..12).map(|i| notification(a.id, 100 - i)).collect();
    store.enqueue_notifications(&rows).await.unwrap();
    assert_eq!(store.next_notification_due().await.unwrap(), Some(t(89)));
    assert_eq!(store.channel(a.id).await.unwrap().unwrap().stats.queued, 12);

    let lease = Duration::from_secs(60);
    // Not yet due.
    assert!(store
        .claim_notifications(t(88), lease, 8)
        .await
        .unwrap()
        .is_empty());
    let first = store.claim_notifications(t(200), lease, 8).await.unwrap();
    assert_eq!(first.len(), 8);
    let due: Vec<i64> = first
        .iter()
        .map(|r| r.payload["n"].as_i64().unwrap())
        .collect();
    let mut sorted = due.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (89..=96).collect::<Vec<_>>());
    assert!(first.iter().all(|r| r.attempts == 1));
    let rest = store.claim_notifications(t(200), lease, 8).await.unwrap();
    assert_eq!(rest.len(), 4);
    assert!(store
        .claim_notifications(t(200), lease, 8)
        .await
        .unwrap()
        .is_empty());

    // Outcomes: one delivered, one retried, one given up.
    let later = t(60_000);
    assert!(store
        .finish_notification(first[0].id, &DeliveryOutcome::Delivered { at: t(300) })
        .await
        .unwrap());
    assert!(store
        .finish_notification(
            first[1].id,
            &DeliveryOutcome::Retry {
                at: t(400),
                error: "503: down".to_owned(),
                retry_at: later,
            },
        )
        .await
        .unwrap());
    assert!(store
        .finish_notification(
            first[2].id,
            &DeliveryOutcome::GiveUp {
                at: t(500),
                error: "404: gone".to_owned(),
            },
        )
        .await
        .unwrap());
    // A finished row is not finished again.
    assert!(!store
        .finish_notification(first[0].id, &DeliveryOutcome::Delivered { at: t(600) })
        .await
        .unwrap());
    let stats = store.channel(a.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.delivered, stats.failed, stats.given_up, stats.queued),
        (1, 2, 1, 10)
    );
    assert_eq!(stats.last_success_at, Some(t(300)));
    assert_eq!(stats.last_failure_at, Some(t(500)));
    assert_eq!(stats.failing_since, Some(t(400)));
    assert_eq!(stats.last_error.as_deref(), Some("404: gone"));

    // The other claimed rows come back once their lease ends, with their
    // attempts counted; the retried one at its time.
    let after_lease = t(200 + 60_000);
    let again = store
        .claim_notifications(after_lease, lease, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), 10);
    assert!(again.iter().any(|r| r.id == first[1].id));
    assert!(again.iter().all(|r| r.attempts == 2));
    for row in &again {
        store
            .finish_notification(row.id, &DeliveryOutcome::Delivered { at: t(70_000) })
            .await
            .unwrap();
    }
    let stats = store.channel(a.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.delivered, stats.queued), (11, 0));
    assert_eq!(stats.failing_since, None);

    // Pruning keeps what is younger than the cut.
    store
        .enqueue_notifications(&[notification(a.id, 90_000)])
        .await
        .unwrap();
    assert_eq!(store.prune_notifications(t(95)).await.unwrap(), 6);
    assert_eq!(store.prune_notifications(t(100_000)).await.unwrap(), 6);
    assert_eq!(
        store.next_notification_due().await.unwrap(),
        Some(t(90_000))
    );
    store.delete_channel(a.id, None).await.unwrap();
    assert_eq!(store.next_notification_due().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_claiming_at_once_take_each_row_once_and_count_each_outcome_once() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = channel("a");
    store.create_channel(&a, None).await.unwrap();
    const ROWS: usize = 300;
    let rows: Vec<NewNotification> = (0..ROWS)
        .map(|i| notification(a.id, i64::try_from(i).unwrap()))
        .collect();
    store.enqueue_notifications(&rows).await.unwrap();

    // Six "servers" claim small batches at once until nothing is left, all
    // within one lease: every row is claimed by exactly one of them.
    let lease = Duration::from_secs(3600);
    let mut servers = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(&store);
        servers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_notifications(t(1_000), lease, 7).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for server in servers {
        claimed.extend(server.await.unwrap());
    }
    assert_eq!(claimed.len(), ROWS);
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!(claimed.len(), ROWS, "a row was claimed twice");

    // Two servers report an outcome of the same row at once (one after its
    // lease ran out, say): one report counts.
    let mut reports = Vec::new();
    for (i, id) in claimed.iter().take(40).enumerate() {
        for server in 0..2 {
            let store = Arc::clone(&store);
            let id = *id;
            let at = t(2_000 + i64::try_from(i).unwrap());
            reports.push(tokio::spawn(async move {
                let outcome = if server == 0 {
                    DeliveryOutcome::Delivered { at }
                } else {
                    DeliveryOutcome::GiveUp {
                        at,
                        error: "timed out".to_owned(),
                    }
                };
                store.finish_notification(id, &outcome).await.unwrap()
            }));
        }
    }
    let mut counted = 0;
    for report in reports {
        if report.await.unwrap() {
            counted += 1;
        }
    }
    assert_eq!(counted, 40);
    let stats = store.channel(a.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.delivered + stats.given_up, 40);
    assert_eq!(stats.given_up, stats.failed);
    assert_eq!(stats.queued, u64::try_from(ROWS - 40).unwrap());
}
