//! Account management on every store (`RM_TEST_STORE`): listing and
//! deleting users (with their sessions and API tokens, never the last one),
//! and listing and revoking API tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::token::TokenHash;
use rm_core::{Labels, Role, Selector, TokenId, UserId};
use rm_store::prelude::*;
use rm_store::{ApiToken, Session, StoreError, User};
use rm_store_tests::{open_temp_store, t, user};

async fn add_user(store: &dyn Store, name: &str, created: i64) -> User {
    let user = User {
        created_at: t(created),
        role: rm_core::Role::Admin,
        scope: None,
        ..user(name)
    };
    store.create_user(&user, None).await.unwrap();
    user
}

async fn add_session(store: &dyn Store, user: UserId) -> Session {
    let session = Session {
        id: TokenId::new(),
        user_id: user,
        token_hash: TokenHash::of(&format!("rms.{}", TokenId::new())),
        created_at: t(0),
        expires_at: t(1_000_000),
    };
    store.create_session(&session, None).await.unwrap();
    session
}

async fn add_token(store: &dyn Store, user: UserId, name: &str, created: i64) -> ApiToken {
    let token = ApiToken {
        id: TokenId::new(),
        user_id: user,
        name: name.to_owned(),
        token_hash: TokenHash::of(&format!("rmt.{name}.{}", TokenId::new())),
        created_at: t(created),
        expires_at: None,
        revoked_at: None,
        role: None,
    };
    store.create_api_token(&token, None).await.unwrap();
    token
}

#[tokio::test]
async fn users_are_listed_by_name() {
    let (_db, store) = open_temp_store().await.unwrap();
    assert!(store.list_users().await.unwrap().is_empty());
    let carol = add_user(&*store, "carol", 0).await;
    let alice = add_user(&*store, "alice", 1).await;
    let bob = add_user(&*store, "bob", 2).await;
    assert_eq!(store.list_users().await.unwrap(), vec![alice, bob, carol]);
}

#[tokio::test]
async fn deleting_a_user_takes_their_sessions_and_tokens_only() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = add_user(&*store, "alice", 0).await;
    let bob = add_user(&*store, "bob", 1).await;
    let alice_session = add_session(&*store, alice.id).await;
    let bob_session = add_session(&*store, bob.id).await;
    let alice_token = add_token(&*store, alice.id, "ci", 2).await;
    let bob_token = add_token(&*store, bob.id, "ci", 3).await;

    store.delete_user(alice.id, None).await.unwrap();

    assert_eq!(store.user_by_id(alice.id).await.unwrap(), None);
    assert_eq!(store.user_by_name("alice").await.unwrap(), None);
    assert_eq!(store.session(alice_session.id).await.unwrap(), None);
    assert_eq!(store.api_token(alice_token.id).await.unwrap(), None);
    assert!(store.list_api_tokens(alice.id).await.unwrap().is_empty());
    // Bob keeps everything.
    assert_eq!(store.list_users().await.unwrap(), vec![bob.clone()]);
    assert_eq!(
        store.session(bob_session.id).await.unwrap(),
        Some(bob_session)
    );
    assert_eq!(
        store.api_token(bob_token.id).await.unwrap(),
        Some(bob_token)
    );

    // The name is free again.
    add_user(&*store, "alice", 5).await;
    assert_eq!(store.count_users().await.unwrap(), 2);
}

#[tokio::test]
async fn deleting_a_missing_user_is_not_found() {
    let (_db, store) = open_temp_store().await.unwrap();
    add_user(&*store, "alice", 0).await;
    add_user(&*store, "bob", 1).await;
    assert!(matches!(
        store.delete_user(UserId::new(), None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.count_users().await.unwrap(), 2);
}

#[tokio::test]
async fn the_last_user_cannot_be_deleted() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = add_user(&*store, "alice", 0).await;
    let session = add_session(&*store, alice.id).await;
    match store.delete_user(alice.id, None).await {
        Err(StoreError::Conflict(message)) => {
            assert_eq!(message, "cannot delete the last user")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Nothing was touched.
    assert_eq!(store.user_by_id(alice.id).await.unwrap(), Some(alice));
    assert_eq!(store.session(session.id).await.unwrap(), Some(session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deletes_always_leave_one_user() {
    let (_db, store) = open_temp_store().await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d"] {
        ids.push(add_user(&*store, name, 0).await.id);
    }
    let mut tasks = Vec::new();
    for id in ids {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { store.delete_user(id, None).await },
        ));
    }
    let (mut deleted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => deleted += 1,
            Err(StoreError::Conflict(_)) => refused += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((deleted, refused), (3, 1));
    assert_eq!(store.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn api_tokens_are_listed_per_user_in_creation_order() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = add_user(&*store, "alice", 0).await;
    let bob = add_user(&*store, "bob", 0).await;
    let second = add_token(&*store, alice.id, "second", 20).await;
    let first = add_token(&*store, alice.id, "first", 10).await;
    add_token(&*store, bob.id, "bob's", 15).await;
    store.revoke_api_token(first.id, t(30), None).await.unwrap();

    let listed = store.list_api_tokens(alice.id).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(listed[0].revoked_at, Some(t(30)), "revoked ones are listed");
    assert_eq!(listed[1], second);
    assert!(store
        .list_api_tokens(UserId::new())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn revoking_sets_the_time_once() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = add_user(&*store, "alice", 0).await;
    let token = add_token(&*store, alice.id, "ci", 1).await;

    assert!(store.revoke_api_token(token.id, t(10), None).await.unwrap());
    assert!(!store.revoke_api_token(token.id, t(20), None).await.unwrap());
    assert!(!store
        .revoke_api_token(TokenId::new(), t(20), None)
        .await
        .unwrap());
    let stored = store.api_token(token.id).await.unwrap().unwrap();
    assert_eq!(
        stored.revoked_at,
        Some(t(10)),
        "the first revocation stands"
    );
    assert_eq!(stored.token_hash, token.token_hash);
}

#[tokio::test]
async fn roles_and_scopes_are_stored_and_the_last_admin_stays() {
    let (_db, store) = open_temp_store().await.unwrap();
    let root = add_user(&*store, "root", 0).await;
    let ops = add_user(&*store, "ops", 1).await;
    let scope = Selector(Labels::parse_pairs("scope", "team=a").unwrap());
    let changed = store
        .set_user_access(ops.id, Role::Viewer, Some(&scope), None)
        .await
        .unwrap();
    assert_eq!(
        (changed.role, changed.scope.as_ref()),
        (Role::Viewer, Some(&scope))
    );
    assert_eq!(store.user_by_id(ops.id).await.unwrap().unwrap(), changed);

    // root is the only admin now: neither demoted nor deleted.
    for refused in [
        store
            .set_user_access(root.id, Role::Operator, None, None)
            .await
            .map(|_| ()),
        store.delete_user(root.id, None).await,
    ] {
        assert!(
            matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("last admin")),
            "{refused:?}"
        );
    }
    assert!(matches!(
        store
            .set_user_access(UserId::new(), Role::Viewer, None, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // A second admin lets the first go.
    store
        .set_user_access(ops.id, Role::Admin, None, None)
        .await
        .unwrap();
    store.delete_user(root.id, None).await.unwrap();

    // A token's own role is kept; none means "its user's".
    let narrow = ApiToken {
        role: Some(Role::Viewer),
        ..add_token(&*store, ops.id, "plain", 2).await
    };
    // A later time than "plain": ULIDs made in one millisecond are not
    // ordered, so only the time can order the two.
    let narrow = ApiToken {
        id: TokenId::new(),
        name: "narrow".into(),
        created_at: t(3),
        ..narrow
    };
    store.create_api_token(&narrow, None).await.unwrap();
    let listed = store.list_api_tokens(ops.id).await.unwrap();
    let roles: Vec<Option<Role>> = listed.iter().map(|t| t.role).collect();
    assert_eq!(roles, [None, Some(Role::Viewer)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_demotions_always_leave_one_admin() {
    let (_db, store) = open_temp_store().await.unwrap();
    // Rounds of four admins demoted at once (a barrier lines them up), so
    // a store that let two demotions count each other as the other admin
    // ends a round with none.
    let mut survivor = None;
    for round in 0..10 {
        // The last round's admin and new ones: four admins.
        let mut ids: Vec<UserId> = survivor.into_iter().collect();
        while ids.len() < 4 {
            // add_user makes admins.
            let name = format!("u{round}-{}", ids.len());
            ids.push(add_user(&*store, &name, 0).await.id);
        }
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(ids.len()));
        let mut tasks = Vec::new();
        for id in ids {
            let store = store.clone();
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store.set_user_access(id, Role::Viewer, None, None).await
            }));
        }
        let (mut demoted, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => demoted += 1,
                Err(StoreError::Conflict(m)) if m.contains("last admin") => refused += 1,
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!((demoted, refused), (3, 1), "round {round}");
        let admins: Vec<UserId> = store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.role == Role::Admin)
            .map(|u| u.id)
            .collect();
        assert_eq!(admins.len(), 1, "round {round}");
        survivor = admins.first().copied();
    }
}
