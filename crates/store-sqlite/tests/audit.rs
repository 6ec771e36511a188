//! Behaviour tests of `SqliteStore`'s audit log against real database files
//! (WAL): entries round-trip, list newest first with filters and a paging
//! cursor; and `backup_to` makes a consistent, private copy of a database in
//! use without ever overwriting a file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{enrol, open_temp, t, user};
use rm_core::{TokenId, UserId};
use rm_store::prelude::*;
use rm_store::{
    AuditActor, AuditActorKind, AuditFilter, LogLineRecord, NewAuditEntry, NewJob, StoreError,
};
use rm_store_sqlite::SqliteStore;
use serde_json::json;

fn by_user(user_id: UserId, username: &str) -> AuditActor {
    AuditActor {
        kind: AuditActorKind::User,
        user_id: Some(user_id),
        username: Some(username.to_owned()),
        token_id: None,
        token_name: None,
    }
}

fn entry(at: i64, actor: AuditActor, action: &str, target: Option<&str>) -> NewAuditEntry {
    NewAuditEntry {
        at: t(at),
        actor,
        action: action.to_owned(),
        target_type: target.map(|_| "host".to_owned()),
        target_id: target.map(str::to_owned),
        details: json!({"n": at}),
        ip: Some("127.0.0.1".to_owned()),
        user_agent: Some("test-agent/1".to_owned()),
    }
}

async fn actions(store: &SqliteStore, filter: AuditFilter) -> Vec<String> {
    store
        .list_audit(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect()
}

#[tokio::test]
async fn entries_round_trip_newest_first_with_growing_ids() {
    let (_dir, store) = open_temp().await;
    let alice = UserId::new();
    let token = TokenId::new();
    let by_token = AuditActor {
        kind: AuditActorKind::ApiToken,
        user_id: Some(alice),
        username: Some("alice".to_owned()),
        token_id: Some(token),
        token_name: Some("ci".to_owned()),
    };
    let first = entry(0, by_user(alice, "alice"), "host.delete", Some("h1"));
    let second = entry(1, by_token, "job.create", None);
    let third = NewAuditEntry {
        ip: None,
        user_agent: None,
        details: json!({}),
        ..entry(
            2,
            AuditActor::of_kind(AuditActorKind::Anonymous),
            "auth.login_failed",
            None,
        )
    };
    let mut ids = Vec::new();
    for e in [&first, &second, &third] {
        ids.push(store.record_audit(e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let listed = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(listed[0].entry, third);
    assert_eq!(listed[1].entry, second);
    assert_eq!(listed[2].entry, first);
}

#[tokio::test]
async fn filters_by_action_prefix_actor_and_target() {
    let (_dir, store) = open_temp().await;
    let alice = UserId::new();
    let bob = UserId::new();
    let bobs_token = TokenId::new();
    let bob_via_token = AuditActor {
        kind: AuditActorKind::ApiToken,
        user_id: Some(bob),
        username: Some("bob".to_owned()),
        token_id: Some(bobs_token),
        token_name: Some("deploy".to_owned()),
    };
    for e in [
        entry(0, by_user(alice, "alice"), "host.delete", Some("h1")),
        entry(1, by_user(alice, "alice"), "api_token.create", None),
        entry(2, bob_via_token.clone(), "repository.set", Some("h1")),
        entry(3, bob_via_token, "host.delete", Some("h2")),
        entry(4, by_user(alice, "alice"), "hostile.action", None),
    ] {
        store.record_audit(&e).await.unwrap();
    }
    let prefix = |p: &str| AuditFilter {
        action_prefix: Some(p.to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&store, prefix("host.")).await,
        ["host.delete", "host.delete"]
    );
    assert_eq!(
        actions(&store, prefix("host")).await,
        ["hostile.action", "host.delete", "host.delete"]
    );
    // `_` is a literal, not a wildcard; prefixes are case-sensitive.
    assert_eq!(actions(&store, prefix("api_")).await, ["api_token.create"]);
    assert!(actions(&store, prefix("apiXt")).await.is_empty());
    assert!(actions(&store, prefix("HOST.")).await.is_empty());

    // The actor matches by user name, user id or token id.
    for actor in ["bob".to_owned(), bob.to_string(), bobs_token.to_string()] {
        let filter = AuditFilter {
            actor: Some(actor.clone()),
            ..AuditFilter::default()
        };
        assert_eq!(
            actions(&store, filter).await,
            ["host.delete", "repository.set"],
            "{actor}"
        );
    }
    let filter = AuditFilter {
        target_id: Some("h1".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&store, filter).await,
        ["repository.set", "host.delete"]
    );
    // Filters combine.
    let filter = AuditFilter {
        action_prefix: Some("host.".to_owned()),
        actor: Some("alice".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(actions(&store, filter).await, ["host.delete"]);
}

#[tokio::test]
async fn pages_follow_the_before_cursor_and_limits_are_capped() {
    let (_dir, store) = open_temp().await;
    let alice = UserId::new();
    for i in 0..520 {
        store
            .record_audit(&entry(i, by_user(alice, "alice"), "job.create", None))
            .await
            .unwrap();
    }
    let page = |before, limit| AuditFilter {
        before,
        limit,
        ..AuditFilter::default()
    };
    assert_eq!(store.list_audit(&page(None, 0)).await.unwrap().len(), 50);
    assert_eq!(
        store.list_audit(&page(None, 10_000)).await.unwrap().len(),
        500
    );

    // Walking the whole log in pages of 200 sees every entry once, in order.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let entries = store.list_audit(&page(before, 200)).await.unwrap();
        seen.extend(
            entries
                .iter()
                .map(|e| e.entry.details["n"].as_i64().unwrap()),
        );
        match entries.last() {
            Some(last) if entries.len() == 200 => before = Some(last.id),
            _ => break,
        }
    }
    assert_eq!(seen, (0..520).rev().collect::<Vec<_>>());
    assert!(store
        .list_audit(&page(Some(u64::MAX), 5))
        .await
        .unwrap()
        .iter()
        .all(|e| e.entry.action == "job.create"));
    assert!(store
        .list_audit(&page(Some(1), 5))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn backup_to_copies_a_database_in_use_into_a_new_private_file() {
    let (dir, store) = open_temp().await;
    let admin = user("admin");
    store.create_user(&admin, None).await.unwrap();
    let host = enrol(&store).await;
    let job = NewJob {
        id: rm_core::JobId::new(),
        host_id: host,
        kind: "backup".to_owned(),
        params: json!({"paths": ["/srv"]}),
        trigger: rm_core::JobTrigger::Manual,
        schedule_id: None,
        status: rm_core::JobStatus::Queued,
        error: None,
        created_at: t(10),
    };
    store.create_job(&job, None).await.unwrap();
    let lines: Vec<LogLineRecord> = (1..=100)
        .map(|seq| LogLineRecord {
            job_id: job.id,
            seq,
            ts: t(20),
            stream: "stdout".to_owned(),
            text: format!("line {seq}"),
        })
        .collect();
    store.append_logs(&lines).await.unwrap();

    // Writers keep going while the copy is made.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .record_audit(&entry(
                        i,
                        AuditActor::of_kind(AuditActorKind::Cli),
                        "job.create",
                        None,
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    let out = dir.path().join("copy.db");
    let bytes = store.backup_to(&out).await.unwrap();
    writer.await.unwrap();
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), bytes);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let copy = SqliteStore::open(&format!("sqlite://{}", out.display()))
        .await
        .unwrap();
    assert_eq!(copy.user_by_name("admin").await.unwrap(), Some(admin));
    assert!(copy.host(host).await.unwrap().is_some());
    assert_eq!(copy.logs(job.id, 0, 1000).await.unwrap(), lines);
    // A consistent snapshot: some prefix of the concurrent writes, no gaps.
    let copied = copy
        .list_audit(&AuditFilter {
            limit: 500,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let ns: Vec<i64> = copied
        .iter()
        .map(|e| e.entry.details["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..ns.len() as i64).rev().collect::<Vec<_>>());
    copy.close().await;

    // An existing file is refused and left untouched.
    std::fs::write(&out, b"precious").unwrap();
    let err = store.backup_to(&out).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    // So is an empty one (VACUUM INTO alone would overwrite it).
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        store.backup_to(&empty).await,
        Err(StoreError::Conflict(_))
    ));
    // A missing folder is named.
    let nowhere = dir.path().join("no-such-dir").join("copy.db");
    let err = store.backup_to(&nowhere).await.unwrap_err().to_string();
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(!nowhere.exists());
}
