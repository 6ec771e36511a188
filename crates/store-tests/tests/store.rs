//! The basics of every store (`RM_TEST_STORE`): operators, sessions,
//! tokens, enrolment (including the single-use race) and host presence
//! bookkeeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::token::TokenHash;
use rm_core::{HostId, TokenId, UserId};
use rm_store::{ApiToken, EnrollmentToken, HelloRecord, Session, StoreError};
use rm_store_tests::{enrol_with_agent as enrol, enrollment, new_host, open_temp_store, t, user};

fn session(user_id: UserId, expires: i64) -> Session {
    Session {
        id: TokenId::new(),
        user_id,
        token_hash: TokenHash::of(&format!("session-{expires}-{}", TokenId::new())),
        created_at: t(0),
        expires_at: t(expires),
    }
}

fn hello(conn: &str, at: i64) -> HelloRecord {
    HelloRecord {
        connection_id: conn.to_owned(),
        server_id: "server-1".to_owned(),
        agent_version: "0.1.0".to_owned(),
        restic_version: Some("0.17.3".to_owned()),
        restic_error: None,
        protocol_version: 1,
        hostname: "web-1.renamed".to_owned(),
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
        at: t(at),
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    }
}

/// What a server restart and a second server on one database rely on: a
/// store opened again on its database, or beside another one, sees the
/// same data.
#[tokio::test]
async fn stores_opened_on_one_database_share_its_data() {
    let (db, first) = open_temp_store().await.unwrap();
    let second = db.open().await.unwrap();
    let alice = user("alice");
    first.create_user(&alice, None).await.unwrap();
    assert_eq!(
        second.user_by_name("alice").await.unwrap().map(|u| u.id),
        Some(alice.id)
    );
    let host = enrol(&*second).await.0;
    assert!(first.host(host).await.unwrap().is_some());

    drop(first);
    drop(second);
    let again = db.open().await.unwrap();
    assert_eq!(again.count_users().await.unwrap(), 1);
    assert_eq!(again.list_hosts().await.unwrap().len(), 1);
}

/// Each test store starts empty, whatever other tests wrote to theirs.
#[tokio::test]
async fn a_new_test_store_is_empty() {
    let (_db, used) = open_temp_store().await.unwrap();
    used.create_user(&user("alice"), None).await.unwrap();
    let (_other_db, fresh) = open_temp_store().await.unwrap();
    assert_eq!(fresh.count_users().await.unwrap(), 0);
    assert!(fresh.user_by_name("alice").await.unwrap().is_none());
}

#[tokio::test]
async fn users_create_conflict_and_lookup() {
    let (_db, store) = open_temp_store().await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 0);
    let alice = user("alice");
    store.create_user(&alice, None).await.unwrap();

    let err = store.create_user(&user("alice"), None).await.unwrap_err();
    match err {
        StoreError::Conflict(msg) => assert_eq!(msg, "user name `alice` is taken"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(
        store.create_user(&alice, None).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_id(alice.id).await.unwrap(), Some(alice));
    assert_eq!(store.user_by_name("bob").await.unwrap(), None);
    assert_eq!(store.user_by_id(UserId::new()).await.unwrap(), None);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn set_password_replaces_hash_and_ends_sessions() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = user("alice");
    let bob = user("bob");
    store.create_user(&alice, None).await.unwrap();
    store.create_user(&bob, None).await.unwrap();
    let s1 = session(alice.id, 1000);
    let s2 = session(alice.id, 2000);
    let sb = session(bob.id, 1000);
    for s in [&s1, &s2, &sb] {
        store.create_session(s, None).await.unwrap();
    }
    assert_eq!(store.session(s1.id).await.unwrap(), Some(s1.clone()));

    store
        .set_user_password("alice", "$argon2id$new", None)
        .await
        .unwrap();
    assert_eq!(
        store
            .user_by_name("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );
    assert_eq!(store.session(s1.id).await.unwrap(), None);
    assert_eq!(store.session(s2.id).await.unwrap(), None);
    assert_eq!(store.session(sb.id).await.unwrap(), Some(sb));

    match store.set_user_password("nobody", "x", None).await {
        Err(StoreError::NotFound(what)) => assert_eq!(what, "user `nobody`"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn sessions_expire_and_delete() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = user("alice");
    store.create_user(&alice, None).await.unwrap();
    let early = session(alice.id, 10);
    let mid = session(alice.id, 20);
    let late = session(alice.id, 30);
    for s in [&early, &mid, &late] {
        store.create_session(s, None).await.unwrap();
    }
    assert_eq!(store.delete_expired_sessions(t(25)).await.unwrap(), 2);
    assert_eq!(store.delete_expired_sessions(t(25)).await.unwrap(), 0);
    assert_eq!(store.session(early.id).await.unwrap(), None);
    assert_eq!(store.session(late.id).await.unwrap(), Some(late.clone()));

    store.delete_session(late.id, None).await.unwrap();
    store.delete_session(late.id, None).await.unwrap(); // missing: not an error
    assert_eq!(store.session(late.id).await.unwrap(), None);

    // A session for a user that does not exist.
    let orphan = session(UserId::new(), 10);
    assert!(matches!(
        store.create_session(&orphan, None).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn api_tokens_round_trip() {
    let (_db, store) = open_temp_store().await.unwrap();
    let alice = user("alice");
    store.create_user(&alice, None).await.unwrap();
    let plain = ApiToken {
        id: TokenId::new(),
        user_id: alice.id,
        name: "ci".to_owned(),
        token_hash: TokenHash::of("rmt.a.b"),
        created_at: t(1),
        expires_at: None,
        revoked_at: None,
        role: None,
    };
    let full = ApiToken {
        id: TokenId::new(),
        name: "old".to_owned(),
        token_hash: TokenHash::of("rmt.c.d"),
        expires_at: Some(t(100)),
        revoked_at: Some(t(50)),
        role: None,
        ..plain.clone()
    };
    store.create_api_token(&plain, None).await.unwrap();
    store.create_api_token(&full, None).await.unwrap();
    assert_eq!(store.api_token(plain.id).await.unwrap(), Some(plain));
    assert_eq!(store.api_token(full.id).await.unwrap(), Some(full));
    assert_eq!(store.api_token(TokenId::new()).await.unwrap(), None);
}

#[tokio::test]
async fn enrolment_spends_the_token_and_creates_the_host() {
    let (_db, store) = open_temp_store().await.unwrap();
    let old = enrollment(1000);
    let token = EnrollmentToken {
        created_at: t(1),
        ..enrollment(1000)
    };
    let expired = enrollment(3);
    for tok in [&old, &token, &expired] {
        store.create_enrollment_token(tok, None).await.unwrap();
    }
    let pending = store.pending_enrollment_tokens(t(5)).await.unwrap();
    assert_eq!(pending, vec![token.clone(), old.clone()], "newest first");

    let (host, agent) = new_host();
    let created = store
        .enroll_host(token.id, t(5), &host, &agent, None)
        .await
        .unwrap();
    assert_eq!(created.id, host.id);
    assert_eq!(created.name, "web-1");
    assert_eq!(created.hostname, "web-1.example");
    assert_eq!(created.enrolled_at, t(5));
    assert!(!created.online);
    assert_eq!(created.last_seen_at, None);
    assert_eq!(created.agent_version, None);

    assert_eq!(store.host(host.id).await.unwrap(), Some(created.clone()));
    assert_eq!(store.list_hosts().await.unwrap(), vec![created]);
    assert_eq!(
        store.active_agent_token(agent.id).await.unwrap(),
        Some(agent)
    );
    let spent = store.enrollment_token(token.id).await.unwrap().unwrap();
    assert_eq!(spent.used_at, Some(t(5)));
    assert_eq!(spent.host_id, Some(host.id));
    assert_eq!(
        store.pending_enrollment_tokens(t(5)).await.unwrap(),
        vec![old]
    );
}

#[tokio::test]
async fn enrolment_with_a_used_or_expired_token_is_refused() {
    let (_db, store) = open_temp_store().await.unwrap();
    let token = enrollment(1000);
    store.create_enrollment_token(&token, None).await.unwrap();
    let (h1, a1) = new_host();
    store
        .enroll_host(token.id, t(5), &h1, &a1, None)
        .await
        .unwrap();

    // Used.
    let (h2, a2) = new_host();
    assert!(matches!(
        store.enroll_host(token.id, t(6), &h2, &a2, None).await,
        Err(StoreError::TokenSpent)
    ));
    assert_eq!(store.host(h2.id).await.unwrap(), None);
    assert_eq!(store.active_agent_token(a2.id).await.unwrap(), None);

    // Expired (also exactly at expiry).
    let expiring = enrollment(100);
    store
        .create_enrollment_token(&expiring, None)
        .await
        .unwrap();
    for now in [100, 101] {
        let (h, a) = new_host();
        assert!(matches!(
            store.enroll_host(expiring.id, t(now), &h, &a, None).await,
            Err(StoreError::TokenSpent)
        ));
    }
    assert_eq!(
        store
            .enrollment_token(expiring.id)
            .await
            .unwrap()
            .unwrap()
            .used_at,
        None
    );

    // Unknown.
    let (h3, a3) = new_host();
    assert!(matches!(
        store
            .enroll_host(TokenId::new(), t(5), &h3, &a3, None)
            .await,
        Err(StoreError::TokenSpent)
    ));
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrolments_with_one_token_have_one_winner() {
    let (_db, store) = open_temp_store().await.unwrap();
    let token = enrollment(1_000_000);
    store.create_enrollment_token(&token, None).await.unwrap();

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (host, agent) = new_host();
            store.enroll_host(token.id, t(5), &host, &agent, None).await
        }));
    }
    let mut won = 0;
    let mut spent = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::TokenSpent) => spent += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((won, spent), (1, 7));
    assert_eq!(store.list_hosts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_host_revokes_its_agent_tokens() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host_id, agent_id) = enrol(&*store).await;
    let (other_host, other_agent) = enrol(&*store).await;
    store.record_hello(host_id, &hello("c1", 10)).await.unwrap();
    assert!(store.active_agent_token(agent_id).await.unwrap().is_some());

    assert!(store.delete_host(host_id, t(20), None).await.unwrap());
    assert_eq!(store.active_agent_token(agent_id).await.unwrap(), None);
    assert_eq!(store.host(host_id).await.unwrap(), None);
    let listed: Vec<HostId> = store
        .list_hosts()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(listed, vec![other_host]);
    assert!(store
        .active_agent_token(other_agent)
        .await
        .unwrap()
        .is_some());

    assert!(!store.delete_host(host_id, t(30), None).await.unwrap());
    assert!(!store.delete_host(HostId::new(), t(30), None).await.unwrap());
    // A late hello for the deleted host does not resurrect it.
    assert!(matches!(
        store.record_hello(host_id, &hello("c2", 40)).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn hello_records_the_agents_hooks() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host_id, _) = enrol(&*store).await;
    let with_hooks = HelloRecord {
        hooks: vec!["pg-dump".to_owned(), "stop-app".to_owned()],
        hooks_refused: vec![rm_store::RefusedHookRecord {
            name: "loose".to_owned(),
            reason: "is writable by group or others (mode 0775)".to_owned(),
        }],
        ..hello("c1", 10)
    };
    store.record_hello(host_id, &with_hooks).await.unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert_eq!(h.hooks, with_hooks.hooks);
    assert_eq!(h.hooks_refused, with_hooks.hooks_refused);
    // The next hello replaces the list, also with an empty one.
    store.record_hello(host_id, &hello("c2", 11)).await.unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert!(h.hooks.is_empty() && h.hooks_refused.is_empty());
}

#[tokio::test]
async fn hello_records_platform_and_clears_restic_error() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host_id, _) = enrol(&*store).await;
    let broken = HelloRecord {
        restic_version: None,
        restic_error: Some("restic: not found".to_owned()),
        ..hello("c1", 10)
    };
    store.record_hello(host_id, &broken).await.unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert!(h.online);
    assert_eq!(h.last_seen_at, Some(t(10)));
    assert_eq!(h.hostname, "web-1.renamed");
    assert_eq!(h.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(h.restic_version, None);
    assert_eq!(h.restic_error.as_deref(), Some("restic: not found"));
    assert!(h.hooks.is_empty() && h.hooks_refused.is_empty());
    assert_eq!(h.protocol_version, Some(1));
    assert_eq!(h.os.as_deref(), Some("linux"));
    assert_eq!(h.arch.as_deref(), Some("x86_64"));

    store.record_hello(host_id, &hello("c2", 20)).await.unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert_eq!(h.restic_version.as_deref(), Some("0.17.3"));
    assert_eq!(h.restic_error, None);
    assert_eq!(h.last_seen_at, Some(t(20)));

    assert!(matches!(
        store.record_hello(HostId::new(), &hello("c3", 20)).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn offline_only_for_the_owning_connection() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host_id, _) = enrol(&*store).await;
    store.record_hello(host_id, &hello("A", 10)).await.unwrap();
    // The agent reconnects before the old connection's close is processed.
    store.record_hello(host_id, &hello("B", 11)).await.unwrap();

    assert!(!store.mark_host_offline(host_id, "A", t(12)).await.unwrap());
    assert!(store.host(host_id).await.unwrap().unwrap().online);

    assert!(store.mark_host_offline(host_id, "B", t(13)).await.unwrap());
    let h = store.host(host_id).await.unwrap().unwrap();
    assert!(!h.online);
    assert_eq!(h.last_seen_at, Some(t(13)));
    // Nothing left to change.
    assert!(!store.mark_host_offline(host_id, "B", t(14)).await.unwrap());
}

#[tokio::test]
async fn mark_all_hosts_offline_counts_changes() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (a, _) = enrol(&*store).await;
    let (b, _) = enrol(&*store).await;
    let (_c, _) = enrol(&*store).await;
    store.record_hello(a, &hello("a", 1)).await.unwrap();
    store.record_hello(b, &hello("b", 1)).await.unwrap();
    assert_eq!(store.mark_all_hosts_offline().await.unwrap(), 2);
    assert_eq!(store.mark_all_hosts_offline().await.unwrap(), 0);
    assert!(store.list_hosts().await.unwrap().iter().all(|h| !h.online));
}

#[tokio::test]
async fn touch_hosts_only_moves_forward() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (a, _) = enrol(&*store).await;
    let (b, _) = enrol(&*store).await;
    store.touch_hosts(&[]).await.unwrap();
    store.touch_hosts(&[(a, t(100)), (b, t(50))]).await.unwrap();
    store.touch_hosts(&[(a, t(80)), (b, t(60))]).await.unwrap();
    assert_eq!(
        store.host(a).await.unwrap().unwrap().last_seen_at,
        Some(t(100))
    );
    assert_eq!(
        store.host(b).await.unwrap().unwrap().last_seen_at,
        Some(t(60))
    );
    // Unknown hosts are ignored.
    store.touch_hosts(&[(HostId::new(), t(1))]).await.unwrap();
}

#[tokio::test]
async fn agent_upgrades_are_requested_reported_and_ended() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (host_id, _) = enrol(&*store).await;
    let with_platform = HelloRecord {
        platform: Some("linux-x86_64".to_owned()),
        ..hello("c1", 10)
    };
    store.record_hello(host_id, &with_platform).await.unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert_eq!(h.platform.as_deref(), Some("linux-x86_64"));
    assert_eq!(h.upgrade, rm_store::AgentUpgradeRecord::default());
    assert_eq!(
        store.agent_versions(&Default::default()).await.unwrap(),
        vec![("0.1.0".to_owned(), 1)]
    );

    store
        .request_agent_upgrade(&[host_id], "0.2.0", t(20), None)
        .await
        .unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert_eq!(h.upgrade.requested_version.as_deref(), Some("0.2.0"));
    assert_eq!(h.upgrade.requested_at, Some(t(20)));

    // A step keeps the request open…
    store
        .record_agent_upgrade_status(host_id, "0.2.0", "downloading", None, t(21))
        .await
        .unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert_eq!(h.upgrade.state.as_deref(), Some("downloading"));
    assert_eq!(h.upgrade.requested_version.as_deref(), Some("0.2.0"));
    // …a failure ends it, keeping why.
    store
        .record_agent_upgrade_status(host_id, "0.2.0", "failed", Some("checksum"), t(22))
        .await
        .unwrap();
    let h = store.host(host_id).await.unwrap().unwrap();
    assert_eq!(h.upgrade.state.as_deref(), Some("failed"));
    assert_eq!(h.upgrade.error.as_deref(), Some("checksum"));
    assert_eq!(h.upgrade.version.as_deref(), Some("0.2.0"));
    assert_eq!(h.upgrade.at, Some(t(22)));
    assert_eq!(h.upgrade.requested_version, None);
    assert_eq!(h.upgrade.requested_at, None);
}
