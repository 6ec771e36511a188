//! What a host's repository holds, on every store (`RM_TEST_STORE`):
//! snapshots (replaced, added, written concurrently), repository
//! statistics, and the host's sealed repository settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::HostId;
use rm_store::{RepoStatsRecord, SealFormat, SealedRepository, SnapshotRecord, StoreError};
use rm_store_tests::{enrol, open_temp_store, t};

// ── repository contents ────────────────────────────────────────────────

fn snapshot(id: &str, time: i64, size: Option<u64>) -> SnapshotRecord {
    SnapshotRecord {
        id: format!("{id}{}", "0".repeat(56)),
        short_id: id.to_owned(),
        time: t(time),
        hostname: "web-1.example".to_owned(),
        paths: vec!["/etc".to_owned(), "/home/ünïcode \"quoted\"".to_owned()],
        tags: if size.is_some() {
            vec!["nightly".to_owned()]
        } else {
            Vec::new()
        },
        size_bytes: size,
        file_count: size.map(|s| s / 100),
    }
}

#[tokio::test]
async fn snapshots_are_replaced_not_appended() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    assert!(store.snapshots(host).await.unwrap().is_empty());

    let s1 = snapshot("aaaa0001", 10, Some(1000));
    let s2 = snapshot("aaaa0002", 30, None);
    let s3 = snapshot("aaaa0003", 20, Some(3000));
    store
        .replace_snapshots(host, &[s1.clone(), s2.clone(), s3.clone()])
        .await
        .unwrap();
    store
        .replace_snapshots(other, std::slice::from_ref(&s1))
        .await
        .unwrap();
    assert_eq!(
        store.snapshots(host).await.unwrap(),
        vec![s2.clone(), s3.clone(), s1.clone()]
    );

    // After a forget: s1 gone, s4 new.
    let s4 = snapshot("aaaa0004", 40, Some(4000));
    store
        .replace_snapshots(host, &[s3.clone(), s4.clone(), s2.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.snapshots(host).await.unwrap(),
        vec![s4, s2.clone(), s3.clone()]
    );
    assert_eq!(store.snapshots(other).await.unwrap(), vec![s1]);

    // A broken list (an id twice) replaces nothing.
    assert!(matches!(
        store
            .replace_snapshots(host, &[s2.clone(), s2.clone()])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.snapshots(host).await.unwrap().len(), 3);

    store.replace_snapshots(host, &[]).await.unwrap();
    assert!(store.snapshots(host).await.unwrap().is_empty());

    assert!(matches!(
        store.replace_snapshots(HostId::new(), &[s3]).await,
        Err(StoreError::NotFound(_))
    ));
    let huge = snapshot("aaaa0005", 50, Some(u64::MAX));
    assert!(matches!(
        store.replace_snapshots(host, &[huge]).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Servers replacing and adding one host's snapshots at once never fail
/// each other and leave the count matching the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_snapshot_writes_keep_the_count_true() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let mut tasks = Vec::new();
    for i in 0..8_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let list: Vec<SnapshotRecord> = (0..=i)
                .map(|k| snapshot(&format!("bbbb{k:04}"), k, Some(10)))
                .collect();
            store.replace_snapshots(host, &list).await.unwrap();
            store
                .add_snapshot(host, &snapshot(&format!("cccc{i:04}"), 100 + i, None))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let listed = store.snapshots(host).await.unwrap();
    assert!(!listed.is_empty());
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        Some(u64::try_from(listed.len()).unwrap())
    );
}

#[tokio::test]
async fn repo_stats_keep_history_newest_first_and_size_the_host() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        None
    );

    let first = RepoStatsRecord {
        recorded_at: t(10),
        total_size_bytes: Some(10_000),
        raw_size_bytes: Some(4_000),
        unique_files: Some(120),
        snapshot_count: Some(3),
        last_check_at: Some(t(5)),
        last_check_status: Some("ok".to_owned()),
        lock_present: Some(false),
        last_prune_at: Some(t(6)),
        last_prune_freed_bytes: Some(512),
    };
    store.add_repo_stats(host, &first).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        Some(4_000)
    );

    // Without a raw size the host keeps the last known one.
    let partial = RepoStatsRecord {
        recorded_at: t(20),
        snapshot_count: Some(4),
        lock_present: Some(true),
        ..RepoStatsRecord::default()
    };
    store.add_repo_stats(host, &partial).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        Some(4_000)
    );

    let third = RepoStatsRecord {
        recorded_at: t(30),
        raw_size_bytes: Some(u64::try_from(i64::MAX).unwrap()),
        ..RepoStatsRecord::default()
    };
    store.add_repo_stats(host, &third).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().repo_size_bytes,
        Some(u64::try_from(i64::MAX).unwrap())
    );

    assert_eq!(
        store.repo_stats(host, 10).await.unwrap(),
        vec![third.clone(), partial.clone(), first]
    );
    assert_eq!(
        store.repo_stats(host, 2).await.unwrap(),
        vec![third, partial]
    );
    assert!(store
        .repo_stats(HostId::new(), 10)
        .await
        .unwrap()
        .is_empty());

    let too_big = RepoStatsRecord {
        recorded_at: t(40),
        total_size_bytes: Some(u64::MAX),
        ..RepoStatsRecord::default()
    };
    assert!(matches!(
        store.add_repo_stats(host, &too_big).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.repo_stats(host, 10).await.unwrap().len(), 3);

    assert!(store.delete_host(host, t(50), None).await.unwrap());
    assert!(matches!(
        store
            .add_repo_stats(host, &RepoStatsRecord::default())
            .await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn repository_settings_set_replace_get() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let other = enrol(&*store).await;
    assert_eq!(store.repository(host).await.unwrap(), None);
    assert!(!store.host(host).await.unwrap().unwrap().has_repository);

    let sealed = SealedRepository {
        nonce: vec![1; 12],
        ciphertext: b"\x00sealed\xffbytes".to_vec(),
        format: SealFormat::OwnerBound,
        updated_at: t(10),
    };
    store
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(store.repository(host).await.unwrap(), Some(sealed.clone()));
    let listed = store.list_hosts().await.unwrap();
    let mut flags: Vec<(HostId, bool)> = listed.iter().map(|h| (h.id, h.has_repository)).collect();
    flags.sort();
    let mut expected = vec![(host, true), (other, false)];
    expected.sort();
    assert_eq!(flags, expected);

    let replaced = SealedRepository {
        nonce: vec![2; 12],
        ciphertext: b"other".to_vec(),
        format: SealFormat::Unbound,
        updated_at: t(20),
    };
    store
        .set_repository(host, &replaced, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(
        store.repository(host).await.unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(store.repository(other).await.unwrap(), None);

    let unknown = HostId::new();
    assert!(matches!(
        store
            .set_repository(unknown, &sealed, "/srv/restic", None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.repository(unknown).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(store.delete_host(host, t(30), None).await.unwrap());
    assert!(matches!(
        store
            .set_repository(host, &sealed, "/srv/restic", None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.repository(host).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn refused_repository_settings_are_recorded_and_cleared_by_new_ones() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let bare = enrol(&*store).await;
    let sealed = SealedRepository {
        nonce: vec![1; 12],
        ciphertext: b"sealed".to_vec(),
        format: SealFormat::OwnerBound,
        updated_at: t(10),
    };
    store
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(
        store.repositories().await.unwrap(),
        vec![(host, sealed.clone(), None)],
        "only hosts with settings are listed"
    );
    let refused = |h| {
        let store = &store;
        async move { store.host(h).await.unwrap().unwrap().repository_refused }
    };
    assert_eq!(refused(host).await, None);

    store
        .set_repository_refused(host, Some("`env.PATH` is not allowed"))
        .await
        .unwrap();
    assert_eq!(
        refused(host).await.as_deref(),
        Some("`env.PATH` is not allowed")
    );
    let listed = store.list_hosts().await.unwrap();
    assert!(listed
        .iter()
        .any(|h| h.id == host && h.repository_refused.is_some()));
    // A host without settings has nothing to refuse.
    store.set_repository_refused(bare, Some("x")).await.unwrap();
    assert_eq!(refused(bare).await, None);

    // New settings clear the refusal; so does an explicit `None`.
    store
        .set_repository(host, &sealed, "/srv/restic", None)
        .await
        .unwrap();
    assert_eq!(refused(host).await, None);
    store
        .set_repository_refused(host, Some("again"))
        .await
        .unwrap();
    store.set_repository_refused(host, None).await.unwrap();
    assert_eq!(refused(host).await, None);
}
