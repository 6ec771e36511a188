//! An audited change and its audit entry commit together, on every store
//! (`RM_TEST_STORE`): a change passed its entry stores both, and a change the
//! store refuses (unknown row, repeated revocation, spent token) writes no
//! entry. (That a change whose entry cannot be written is not made needs a
//! way to break audit writes: `rm-store-sqlite`'s tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::token::TokenHash;
use rm_core::TokenId;
use rm_store::{
    ApiToken, AuditActor, AuditActorKind, AuditFilter, NewAuditEntry, Store, StoreError,
};
use rm_store_tests::{backup_job, enrol, enrollment, new_host, open_temp_store, schedule, t, user};
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
async fn logged(store: &dyn Store) -> Vec<(String, String)> {
    store
        .list_audit(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.entry.action, e.entry.target_id.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_change_and_its_entry_are_stored_together() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;

    let alice = user("alice");
    store
        .create_user(&alice, Some(&entry("user.create", alice.id)))
        .await
        .unwrap();
    let sched = schedule(host, "backup", 1);
    store
        .create_schedule(&sched, Some(&entry("schedule.create", sched.id)))
        .await
        .unwrap();
    let new = backup_job(host, None, 2);
    store
        .create_job(&new, Some(&entry("job.create", new.id)))
        .await
        .unwrap();
    assert!(store
        .delete_host(host, t(3), Some(&entry("host.delete", host)))
        .await
        .unwrap());

    assert!(store.user_by_id(alice.id).await.unwrap().is_some());
    assert!(store.job(new.id).await.unwrap().is_some());
    assert!(store.host(host).await.unwrap().is_none());
    assert_eq!(
        logged(&*store).await,
        vec![
            ("host.delete".to_owned(), host.to_string()),
            ("job.create".to_owned(), new.id.to_string()),
            ("schedule.create".to_owned(), sched.id.to_string()),
            ("user.create".to_owned(), alice.id.to_string()),
        ]
    );
}

#[tokio::test]
async fn a_change_the_store_refuses_writes_no_entry() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;

    // An unknown host: nothing deleted, nothing logged.
    let unknown = rm_core::HostId::new();
    assert!(!store
        .delete_host(unknown, t(3), Some(&entry("host.delete", unknown)))
        .await
        .unwrap());
    // A schedule that does not exist cannot be changed or deleted.
    let missing = schedule(host, "backup", 1);
    assert!(matches!(
        store
            .update_schedule(&missing, Some(&entry("schedule.update", missing.id)))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .delete_schedule(missing.id, Some(&entry("schedule.delete", missing.id)))
            .await,
        Err(StoreError::NotFound(_))
    ));
    // A job for an unknown host.
    assert!(matches!(
        store
            .create_job(
                &backup_job(unknown, None, 2),
                Some(&entry("job.create", "x"))
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    // An enrolment token already spent.
    let token = enrollment(1_000_000);
    store.create_enrollment_token(&token, None).await.unwrap();
    let (first, first_agent) = new_host();
    store
        .enroll_host(token.id, t(5), &first, &first_agent, None)
        .await
        .unwrap();
    let (second, second_agent) = new_host();
    assert!(matches!(
        store
            .enroll_host(
                token.id,
                t(6),
                &second,
                &second_agent,
                Some(&entry("host.enroll", second.id)),
            )
            .await,
        Err(StoreError::TokenSpent)
    ));
    assert!(logged(&*store).await.is_empty());

    // An API token revoked twice is logged once: the second changes nothing.
    let alice = user("alice");
    store.create_user(&alice, None).await.unwrap();
    let api = ApiToken {
        id: TokenId::new(),
        user_id: alice.id,
        name: "ci".to_owned(),
        token_hash: TokenHash::of("rmt.x.y"),
        created_at: t(1),
        expires_at: None,
        revoked_at: None,
        role: None,
    };
    store.create_api_token(&api, None).await.unwrap();
    for at in [t(2), t(3)] {
        store
            .revoke_api_token(api.id, at, Some(&entry("api_token.revoke", api.id)))
            .await
            .unwrap();
    }
    assert_eq!(
        logged(&*store).await,
        vec![("api_token.revoke".to_owned(), api.id.to_string())]
    );
}
