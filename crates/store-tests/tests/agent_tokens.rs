//! Agent token rotation and revocation on every store (`RM_TEST_STORE`): a
//! pending token works beside the current one until promoted, a newer
//! rotation replaces an unconfirmed one, and revocation ends every token but
//! keeps the host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::token::TokenHash;
use rm_core::{HostId, TokenId};
use rm_store::{AgentToken, StoreError};
use rm_store_tests::{enrol_with_agent, open_temp_store, t};

fn pending(host_id: HostId, at: i64) -> AgentToken {
    AgentToken {
        id: TokenId::new(),
        host_id,
        token_hash: TokenHash::of(&format!("rma.new.{at}")),
        created_at: t(at),
        pending: true,
    }
}

#[tokio::test]
async fn a_pending_token_works_beside_the_current_one_until_promoted() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host, current) = enrol_with_agent(&*store).await;
    let new = pending(host, 10);
    store.begin_token_rotation(&new, None).await.unwrap();

    let stored = store.active_agent_token(new.id).await.unwrap().unwrap();
    assert!(stored.pending);
    assert!(store.active_agent_token(current).await.unwrap().is_some());
    let listed = store.host(host).await.unwrap().unwrap();
    assert!(listed.token_rotation_pending);
    assert_eq!(listed.token_rotated_at, None);
    assert_eq!(
        store.pending_agent_token(host).await.unwrap().map(|p| p.id),
        Some(new.id)
    );

    assert!(store
        .promote_agent_token(host, new.id, t(20))
        .await
        .unwrap());
    assert_eq!(store.active_agent_token(current).await.unwrap(), None);
    let promoted = store.active_agent_token(new.id).await.unwrap().unwrap();
    assert!(!promoted.pending);
    let listed = store.host(host).await.unwrap().unwrap();
    assert!(!listed.token_rotation_pending);
    assert_eq!(listed.token_rotated_at, Some(t(20)));
    assert_eq!(store.pending_agent_token(host).await.unwrap(), None);
    // A repeated confirmation changes nothing.
    assert!(!store
        .promote_agent_token(host, new.id, t(30))
        .await
        .unwrap());
    assert_eq!(
        store.host(host).await.unwrap().unwrap().token_rotated_at,
        Some(t(20))
    );
}

#[tokio::test]
async fn a_newer_rotation_replaces_an_unconfirmed_one() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host, current) = enrol_with_agent(&*store).await;
    let first = pending(host, 10);
    let second = pending(host, 11);
    store.begin_token_rotation(&first, None).await.unwrap();
    store.begin_token_rotation(&second, None).await.unwrap();
    assert_eq!(store.active_agent_token(first.id).await.unwrap(), None);
    assert!(!store
        .promote_agent_token(host, first.id, t(20))
        .await
        .unwrap());
    assert!(store.active_agent_token(current).await.unwrap().is_some());
    // Only a token of this host can be promoted for it.
    let (other_host, _) = enrol_with_agent(&*store).await;
    assert!(!store
        .promote_agent_token(other_host, second.id, t(20))
        .await
        .unwrap());
    assert!(store
        .promote_agent_token(host, second.id, t(20))
        .await
        .unwrap());
}

#[tokio::test]
async fn revoking_the_agent_ends_every_token_but_keeps_the_host() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host, current) = enrol_with_agent(&*store).await;
    let new = pending(host, 10);
    store.begin_token_rotation(&new, None).await.unwrap();

    assert!(store.revoke_agent(host, t(20), None).await.unwrap());
    assert_eq!(store.active_agent_token(current).await.unwrap(), None);
    assert_eq!(store.active_agent_token(new.id).await.unwrap(), None);
    let listed = store.host(host).await.unwrap().unwrap();
    assert_eq!(listed.agent_revoked_at, Some(t(20)));
    assert!(!listed.online);
    assert!(!listed.token_rotation_pending);
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);

    // Again: still revoked, first time kept; a rotation is refused.
    assert!(store.revoke_agent(host, t(30), None).await.unwrap());
    assert_eq!(
        store.host(host).await.unwrap().unwrap().agent_revoked_at,
        Some(t(20))
    );
    assert!(matches!(
        store.begin_token_rotation(&pending(host, 40), None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(!store
        .revoke_agent(HostId::new(), t(30), None)
        .await
        .unwrap());
    assert!(matches!(
        store
            .begin_token_rotation(&pending(HostId::new(), 40), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_single_token_can_be_revoked() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host, current) = enrol_with_agent(&*store).await;
    let new = pending(host, 10);
    store.begin_token_rotation(&new, None).await.unwrap();
    assert!(store.revoke_agent_token(new.id, t(20)).await.unwrap());
    assert!(!store.revoke_agent_token(new.id, t(21)).await.unwrap());
    assert_eq!(store.pending_agent_token(host).await.unwrap(), None);
    assert!(store.active_agent_token(current).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_leave_one_pending_token() {
    let (_db, store) = open_temp_store().await.unwrap();
    // Rounds of four rotations of one host at once (a barrier lines them
    // up): a store that let them miss each other's pending token would
    // leave several.
    for round in 0..10 {
        let (host, current) = enrol_with_agent(&*store).await;
        let news: Vec<AgentToken> = (0..4).map(|i| pending(host, 10 + i)).collect();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(news.len()));
        let mut tasks = Vec::new();
        for new in news.clone() {
            let store = store.clone();
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store.begin_token_rotation(&new, None).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // Each rotation superseded the ones before it: one new token is
        // left, beside the current one.
        let mut active = Vec::new();
        for new in &news {
            if let Some(token) = store.active_agent_token(new.id).await.unwrap() {
                active.push(token.id);
            }
        }
        assert_eq!(active.len(), 1, "round {round}: {active:?}");
        assert_eq!(
            store.pending_agent_token(host).await.unwrap().map(|p| p.id),
            Some(active[0])
        );
        assert!(store.active_agent_token(current).await.unwrap().is_some());
    }
}
