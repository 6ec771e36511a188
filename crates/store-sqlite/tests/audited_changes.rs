//! A change whose audit entry cannot be written (an `audit_log` trigger
//! refusing it stands in for a full disk) is not made, and the store stays
//! usable. The rest of audited changes is tested on every store in
//! `rm-store-tests`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{backup_job, enrol, enrollment, open_temp, schedule, t, user};
use rm_store::prelude::*;
use rm_store::{AuditActor, AuditActorKind, AuditFilter, NewAuditEntry};
use rm_store_sqlite::SqliteStore;
use serde_json::json;

fn entry(action: &str, target: impl ToString) -> NewAuditEntry {
    NewAuditEntry {
        at: t(100),
        actor: AuditActor::of_kind(AuditActorKind::Cli),
        action: action.to_owned(),
        target_type: Some("thing".to_owned()),
        target_id: Some(target.to_string()),
        details: json!({}),
        ip: None,
        user_agent: Some("test".to_owned()),
    }
}

/// The `(action, target_id)` of every entry, newest first.
async fn logged(store: &SqliteStore) -> Vec<(String, String)> {
    store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.entry.action, e.entry.target_id.unwrap_or_default()))
        .collect()
}

/// Makes every audit log write fail, as a full disk would fail it.
async fn refuse_audit_writes(store: &SqliteStore) {
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit log refused'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
}

async fn allow_audit_writes(store: &SqliteStore) {
    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_change_whose_entry_cannot_be_written_is_not_made() {
    let (_dir, store) = open_temp().await;
    let host = enrol(&store).await;
    let (version, _) = store.schedule_set(host).await.unwrap();
    refuse_audit_writes(&store).await;

    let alice = user("alice");
    assert!(store
        .create_user(&alice, Some(&entry("user.create", alice.id)))
        .await
        .is_err());
    let sched = schedule(host, "backup", 1);
    assert!(store
        .create_schedule(&sched, Some(&entry("schedule.create", sched.id)))
        .await
        .is_err());
    let new = backup_job(host, None, 2);
    assert!(store
        .create_job(&new, Some(&entry("job.create", new.id)))
        .await
        .is_err());
    assert!(store
        .delete_host(host, t(3), Some(&entry("host.delete", host)))
        .await
        .is_err());
    let token = enrollment(1_000_000);
    assert!(store
        .create_enrollment_token(&token, Some(&entry("enrollment_token.create", token.id)))
        .await
        .is_err());

    // Nothing of any of them is stored: no user, schedule, version bump,
    // job, deletion or token.
    assert!(store.user_by_id(alice.id).await.unwrap().is_none());
    assert!(store.schedule(sched.id).await.unwrap().is_none());
    assert_eq!(store.schedule_set(host).await.unwrap(), (version, vec![]));
    assert!(store.job(new.id).await.unwrap().is_none());
    assert!(store.host(host).await.unwrap().is_some());
    assert!(store.enrollment_token(token.id).await.unwrap().is_none());

    // The failed transactions left the store usable: the same changes
    // succeed once entries can be written again, entries and all.
    allow_audit_writes(&store).await;
    assert!(logged(&store).await.is_empty());
    store
        .create_schedule(&sched, Some(&entry("schedule.create", sched.id)))
        .await
        .unwrap();
    store.create_job(&new, None).await.unwrap();
    assert_eq!(
        logged(&store).await,
        vec![("schedule.create".to_owned(), sched.id.to_string())]
    );
}
