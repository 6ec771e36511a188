//! The migration that marks values sealed before owner binding as unbound.
//! (Sealing itself is tested on every store in `rm-store-tests`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{db_url, t};
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{SealFormat, SealedRepository};
use rm_store_sqlite::SqliteStore;

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
