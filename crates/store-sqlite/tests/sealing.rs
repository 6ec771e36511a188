//! The store's side of sealing: the recorded key fingerprint, re-sealing
//! old values in one transaction, discarding every sealed value, and the
//! migration that marks values sealed before owner binding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{db_url, enrol, open_temp, t};
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{SealFormat, SealedRepository, SealingKeyRecord, StoreError};
use rm_store_sqlite::SqliteStore;

fn sealed(byte: u8, format: SealFormat) -> SealedRepository {
    SealedRepository {
        nonce: vec![byte; 12],
        ciphertext: vec![byte; 40],
        format,
        updated_at: t(i64::from(byte)),
    }
}

fn record(fingerprint: &str, at: i64) -> SealingKeyRecord {
    SealingKeyRecord {
        fingerprint: fingerprint.to_owned(),
        recorded_at: t(at),
    }
}

#[tokio::test]
async fn the_fingerprint_is_recorded_and_replaced() {
    let (_dir, store) = open_temp().await;
    assert_eq!(store.sealing_key_record().await.unwrap(), None);
    store
        .record_sealing_key(&record("aa", 1), &[])
        .await
        .unwrap();
    assert_eq!(
        store.sealing_key_record().await.unwrap(),
        Some(record("aa", 1))
    );
    store
        .record_sealing_key(&record("bb", 2), &[])
        .await
        .unwrap();
    assert_eq!(
        store.sealing_key_record().await.unwrap(),
        Some(record("bb", 2))
    );
}

#[tokio::test]
async fn sealed_values_are_listed_with_their_owner_and_format_deleted_hosts_included() {
    let (_dir, store) = open_temp().await;
    let a = enrol(&store).await;
    let b = enrol(&store).await;
    let bare = enrol(&store).await;
    store
        .set_repository(a, &sealed(1, SealFormat::OwnerBound), "/srv/restic", None)
        .await
        .unwrap();
    store
        .set_repository(b, &sealed(2, SealFormat::Unbound), "/srv/restic", None)
        .await
        .unwrap();
    assert!(store.delete_host(b, t(5), None).await.unwrap());
    let mut expected = vec![
        (a, sealed(1, SealFormat::OwnerBound)),
        (b, sealed(2, SealFormat::Unbound)),
    ];
    expected.sort_by_key(|(host, _)| *host);
    assert_eq!(store.sealed_repositories().await.unwrap(), expected);
    assert!(!expected.iter().any(|(host, _)| *host == bare));
}

#[tokio::test]
async fn resealing_replaces_unbound_values_once_and_all_or_nothing() {
    let (_dir, store) = open_temp().await;
    let a = enrol(&store).await;
    let b = enrol(&store).await;
    store
        .set_repository(a, &sealed(1, SealFormat::Unbound), "/srv/restic", None)
        .await
        .unwrap();
    store
        .set_repository(b, &sealed(2, SealFormat::Unbound), "/srv/restic", None)
        .await
        .unwrap();

    let resealed_a = sealed(11, SealFormat::OwnerBound);
    store
        .record_sealing_key(&record("k1", 3), &[(a, resealed_a.clone())])
        .await
        .unwrap();
    // The re-sealed value replaced nonce, ciphertext and format; the time
    // the operator set it stays.
    assert_eq!(
        store.repository(a).await.unwrap(),
        Some(SealedRepository {
            updated_at: t(1),
            ..resealed_a.clone()
        })
    );

    // `a` is bound now: a second re-seal of it (a repeated migration)
    // conflicts, and takes `b`'s and the fingerprint's changes with it.
    let err = store
        .record_sealing_key(
            &record("k2", 4),
            &[
                (b, sealed(12, SealFormat::OwnerBound)),
                (a, sealed(13, SealFormat::OwnerBound)),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains(&a.to_string())),
        "{err}"
    );
    assert_eq!(
        store.repository(b).await.unwrap(),
        Some(sealed(2, SealFormat::Unbound))
    );
    assert_eq!(
        store.sealing_key_record().await.unwrap(),
        Some(record("k1", 3))
    );
}

#[tokio::test]
async fn reset_discards_every_sealed_value_and_records_the_key() {
    let (_dir, store) = open_temp().await;
    let a = enrol(&store).await;
    let b = enrol(&store).await;
    let bare = enrol(&store).await;
    store
        .record_sealing_key(&record("old", 1), &[])
        .await
        .unwrap();
    store
        .set_repository(a, &sealed(1, SealFormat::OwnerBound), "/srv/restic", None)
        .await
        .unwrap();
    store
        .set_repository(b, &sealed(2, SealFormat::OwnerBound), "/srv/restic", None)
        .await
        .unwrap();
    assert!(store.delete_host(b, t(5), None).await.unwrap());

    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(
        store
            .reset_sealed_secrets(&record("new", 6), None)
            .await
            .unwrap(),
        expected
    );
    assert_eq!(store.repository(a).await.unwrap(), None);
    assert_eq!(store.repository(bare).await.unwrap(), None);
    assert!(!store.host(a).await.unwrap().unwrap().has_repository);
    assert!(store.sealed_repositories().await.unwrap().is_empty());
    assert_eq!(
        store.sealing_key_record().await.unwrap(),
        Some(record("new", 6))
    );
    // Nothing left: a second reset discards nothing.
    assert_eq!(
        store
            .reset_sealed_secrets(&record("new", 7), None)
            .await
            .unwrap(),
        Vec::<HostId>::new()
    );
}

/// A database made by the release before this one (migrations up to 0007,
/// a repository sealed without owner binding) opens with its value marked
/// unbound and no fingerprint recorded.
#[tokio::test]
async fn values_stored_before_the_migration_are_marked_unbound() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let old_migrations = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0008" {
            std::fs::copy(&path, old_migrations.path().join(&name)).unwrap();
        }
    }
    let host = HostId::new();
    {
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old_migrations.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO hosts (id, name, hostname, enrolled_at) VALUES (?, 'old', 'old.test', 0)",
        )
        .bind(host.to_string())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO host_repositories (host_id, nonce, ciphertext, updated_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(host.to_string())
        .bind(vec![7u8; 12])
        .bind(vec![8u8; 40])
        .bind(t(9).timestamp_millis())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(store.sealing_key_record().await.unwrap(), None);
    assert_eq!(
        store.sealed_repositories().await.unwrap(),
        vec![(
            host,
            SealedRepository {
                nonce: vec![7; 12],
                ciphertext: vec![8; 40],
                format: SealFormat::Unbound,
                updated_at: t(9),
            }
        )]
    );
}
