//! Migration 0005 backfills the snapshot count kept on each host. (Host
//! listings themselves are tested on every store in `rm-store-tests`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::db_url;
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store_sqlite::SqliteStore;

#[tokio::test]
async fn migration_0005_backfills_snapshot_counts() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the release before 0005 left it.
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(manifest.join("migrations")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.as_str() < "0005" {
            std::fs::copy(
                manifest.join("migrations").join(&name),
                old_migrations.join(&name),
            )
            .unwrap();
        }
    }
    let url = db_url(&dir);
    let (listed, stats_only, unknown) = (HostId::new(), HostId::new(), HostId::new());
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(old_migrations.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for host in [listed, stats_only, unknown] {
            sqlx::query(
                "INSERT INTO hosts (id, name, hostname, enrolled_at, online) \
                 VALUES (?, 'h', 'h.example', 0, 0)",
            )
            .bind(host.to_string())
            .execute(&pool)
            .await
            .unwrap();
        }
        for n in 0..2 {
            sqlx::query(
                "INSERT INTO snapshots (host_id, id, short_id, time, hostname, paths, tags) \
                 VALUES (?, ?, 's', 0, 'h', '[]', '[]')",
            )
            .bind(listed.to_string())
            .bind(format!("snap-{n}"))
            .execute(&pool)
            .await
            .unwrap();
        }
        // Older and newer statistics: the newest count wins.
        for (at, count) in [(1, 9), (2, 7)] {
            sqlx::query(
                "INSERT INTO repo_stats (host_id, recorded_at, snapshot_count) VALUES (?, ?, ?)",
            )
            .bind(stats_only.to_string())
            .bind(at)
            .bind(count)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }

    let store = SqliteStore::open(&url).await.unwrap();
    let count = |id: HostId| {
        let store = store.clone();
        async move { store.host(id).await.unwrap().unwrap().snapshot_count }
    };
    assert_eq!(count(listed).await, Some(2));
    assert_eq!(count(stats_only).await, Some(7));
    assert_eq!(count(unknown).await, None);
}
