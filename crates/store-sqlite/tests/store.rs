//! What only `SqliteStore` has: migrations applied twice, WAL and foreign
//! keys on, an in-memory store, thousands of hosts touched in one call, and
//! undecodable rows reported as corrupt. (The `Store` itself is tested on
//! every store in `rm-store-tests`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Utc};
use common::{open_temp, t, user};
use rm_core::token::TokenHash;
use rm_core::{HostId, TokenId, UserId};
use rm_store::prelude::*;
use rm_store::{Session, StoreError};
use rm_store_sqlite::SqliteStore;

fn session(user_id: UserId, expires: i64) -> Session {
    Session {
        id: TokenId::new(),
        user_id,
        token_hash: TokenHash::of(&format!("session-{expires}-{}", TokenId::new())),
        created_at: t(0),
        expires_at: t(expires),
    }
}

#[tokio::test]
async fn migrations_apply_twice_and_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet: open creates it.
    let url = format!("sqlite://{}", dir.path().join("sub/rm.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let alice = user("alice");
    store.create_user(&alice, None).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    store.close().await;

    let again = SqliteStore::open(&url).await.unwrap();
    assert_eq!(again.count_users().await.unwrap(), 1);
    assert_eq!(again.user_by_name("alice").await.unwrap(), Some(alice));
    // A third handle while the second is open (as two processes would).
    let third = SqliteStore::open(&url).await.unwrap();
    assert_eq!(third.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn in_memory_store_keeps_its_data() {
    let store = SqliteStore::open("sqlite::memory:").await.unwrap();
    store.create_user(&user("alice"), None).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 1);
    // Another in-memory store is a different database.
    let other = SqliteStore::open("sqlite::memory:").await.unwrap();
    assert_eq!(other.count_users().await.unwrap(), 0);
}

#[tokio::test]
async fn touch_hosts_handles_thousands_in_one_call() {
    let (_dir, store) = open_temp().await;
    let ids: Vec<HostId> = (0..5000).map(|_| HostId::new()).collect();
    let mut tx = store.pool().begin().await.unwrap();
    for id in &ids {
        sqlx::query(
            "INSERT INTO hosts (id, name, hostname, enrolled_at, online) VALUES (?, 'h', 'h', ?, 0)",
        )
        .bind(id.to_string())
        .bind(t(0).timestamp_millis())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let seen: Vec<(HostId, DateTime<Utc>)> = ids.iter().map(|id| (*id, t(1000))).collect();
    let started = std::time::Instant::now();
    store.touch_hosts(&seen).await.unwrap();
    let took = started.elapsed();
    assert!(took.as_secs() < 10, "touch_hosts took {took:?}");

    let hosts = store.list_hosts().await.unwrap();
    assert_eq!(hosts.len(), 5000);
    assert!(hosts.iter().all(|h| h.last_seen_at == Some(t(1000))));
}

#[tokio::test]
async fn undecodable_rows_are_reported_as_corrupt() {
    let (_dir, store) = open_temp().await;
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, created_at) \
         VALUES ('not-a-ulid', 'mallory', 'x', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    match store.user_by_name("mallory").await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("`id`"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    let alice = user("alice");
    store.create_user(&alice, None).await.unwrap();
    let s = session(alice.id, 10);
    store.create_session(&s, None).await.unwrap();
    sqlx::query("UPDATE sessions SET token_hash = 'zz' WHERE id = ?")
        .bind(s.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    match store.session(s.id).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("`token_hash`"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
