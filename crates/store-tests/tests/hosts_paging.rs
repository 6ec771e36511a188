//! Host listings that scale to large fleets, on every store
//! (`RM_TEST_STORE`): cursor pages in id order, the attention-first page of
//! the dashboard, the fleet counts in one query, the snapshot count kept on
//! the host, and hosts sharing a repository.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::{HostId, JobId, JobStatus, JobTrigger, Labels, Selector, TokenId};
use rm_store::{
    AgentToken, HelloRecord, HostCounts, HostPatch, JobEnd, NewHost, NewJob, ProtectedAt,
    SealFormat, SealedRepository, SnapshotRecord, Store, MAX_HOST_PAGE,
};
use rm_store_tests::{enrollment, open_temp_store, t};

/// Enrols a host called `name`; returns its id.
async fn host_named(store: &dyn Store, name: &str) -> HostId {
    let token = enrollment(1_000_000);
    store.create_enrollment_token(&token, None).await.unwrap();
    let id = HostId::new();
    let agent = AgentToken {
        id: TokenId::new(),
        host_id: id,
        token_hash: TokenHash::of(&format!("rma.{id}")),
        created_at: t(5),
        pending: false,
    };
    let host = NewHost {
        id,
        name: name.to_owned(),
        hostname: format!("{name}.example"),
        labels: None,
    };
    store
        .enroll_host(token.id, t(5), &host, &agent, None)
        .await
        .unwrap();
    id
}

async fn online(store: &dyn Store, host: HostId) {
    let hello = HelloRecord {
        connection_id: format!("conn-{host}"),
        server_id: "server-1".to_owned(),
        agent_version: "1.0.0".to_owned(),
        restic_version: Some("0.14.0".to_owned()),
        restic_error: None,
        protocol_version: 1,
        hostname: "h".to_owned(),
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
        at: t(6),
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    };
    store.record_hello(host, &hello).await.unwrap();
}

/// Runs a backup on `host` that ends with `status` at `at`.
async fn backup(store: &dyn Store, host: HostId, status: JobStatus, at: DateTime<Utc>) {
    let job = store
        .create_job(
            &NewJob {
                id: JobId::new(),
                host_id: host,
                kind: "backup".to_owned(),
                params: serde_json::json!({"paths": ["/srv"]}),
                trigger: JobTrigger::Manual,
                schedule_id: None,
                status: JobStatus::Queued,
                error: None,
                created_at: at,
            },
            None,
        )
        .await
        .unwrap();
    store
        .advance_job(job.id, JobStatus::Dispatched, at)
        .await
        .unwrap();
    let end = JobEnd {
        status,
        exit_code: Some(0),
        stats: serde_json::Value::Null,
        error: None,
        finished_at: at,
        provisional: false,
    };
    assert!(store.finish_job(job.id, &end, None).await.unwrap());
}

fn snapshot(n: u32) -> SnapshotRecord {
    SnapshotRecord {
        id: format!("{n:064x}"),
        short_id: format!("{n:08x}"),
        time: t(i64::from(n)),
        hostname: "h".to_owned(),
        paths: vec!["/srv".to_owned()],
        tags: Vec::new(),
        size_bytes: None,
        file_count: None,
    }
}

#[tokio::test]
async fn pages_follow_the_id_cursor_without_gaps_or_repeats() {
    let (_db, store) = open_temp_store().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(host_named(&*store, &format!("web-{n}")).await);
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_hosts_page(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|h| h.id);
        seen.extend(page.iter().map(|h| h.id));
    }
    assert_eq!(seen, ids);

    // A deleted host drops out; a cursor naming it still works.
    assert!(store.delete_host(ids[1], t(9), None).await.unwrap());
    let page = store.list_hosts_page(Some(ids[1]), 10).await.unwrap();
    assert_eq!(
        page.iter().map(|h| h.id).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    let all = store.list_hosts_page(None, 10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|h| h.id != ids[1]));

    // The limit is clamped: never zero rows, never more than the maximum.
    assert_eq!(store.list_hosts_page(None, 0).await.unwrap().len(), 1);
    assert_eq!(
        store.list_hosts_page(None, u32::MAX).await.unwrap().len(),
        4.min(MAX_HOST_PAGE as usize)
    );
}

#[tokio::test]
async fn counts_and_the_attention_first_page_judge_hosts_alike() {
    let (_db, store) = open_temp_store().await.unwrap();
    // Judged at t(2_000) with a default freshness of one second: a backup
    // at t(1_000) or later protects a host.
    let since = ProtectedAt {
        now: t(2_000),
        default_freshness_seconds: 1,
    };
    // Fine: online, backed up since the cut-off.
    let fine = host_named(&*store, "a-fine").await;
    online(&*store, fine).await;
    backup(&*store, fine, JobStatus::Succeeded, t(2_000)).await;
    // Offline, though backed up.
    let offline = host_named(&*store, "z-offline").await;
    backup(&*store, offline, JobStatus::Partial, t(2_000)).await;
    // Online, never backed up.
    let never = host_named(&*store, "c-never").await;
    online(&*store, never).await;
    // Online, the last backup failed.
    let failed = host_named(&*store, "b-failed").await;
    online(&*store, failed).await;
    backup(&*store, failed, JobStatus::Failed, t(2_000)).await;
    // Online, the last good backup is too old.
    let old = host_named(&*store, "d-old").await;
    online(&*store, old).await;
    backup(&*store, old, JobStatus::Succeeded, t(500)).await;

    let all = Selector::default();
    assert_eq!(
        store.host_counts(since, &all).await.unwrap(),
        HostCounts {
            total: 5,
            online: 4,
            not_backed_up: 3,
            unconfigured: 5,
        }
    );
    assert_eq!(store.host_counts(since, &all).await.unwrap().offline(), 1);

    // A label filter counts and lists only the hosts it selects.
    let prod = Labels::parse_pairs("labels", "env=prod").unwrap();
    for host in [failed, fine] {
        let patch = HostPatch {
            labels: Some(prod.clone()),
            ..Default::default()
        };
        store.patch_host(host, &patch, None).await.unwrap();
    }
    let only_prod = Selector(prod);
    assert_eq!(store.host_counts(since, &only_prod).await.unwrap().total, 2);
    let listed: Vec<HostId> = store
        .list_hosts_attention_first(since, &only_prod, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(listed, [failed, fine]);
    let other = Selector(Labels::parse_pairs("labels", "env=staging").unwrap());
    assert!(store.hosts_matching(&other).await.unwrap().is_empty());
    assert_eq!(store.hosts_matching(&only_prod).await.unwrap().len(), 2);

    let order: Vec<HostId> = store
        .list_hosts_attention_first(since, &all, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(order, [failed, never, old, offline, fine]);
    let second: Vec<HostId> = store
        .list_hosts_attention_first(since, &all, 3, 10)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(second, [offline, fine]);

    // A host's own freshness (or its policy's) decides for it.
    let patch = HostPatch {
        freshness_seconds: Some(Some(3600)),
        ..Default::default()
    };
    store.patch_host(old, &patch, None).await.unwrap();
    assert_eq!(
        store.host_counts(since, &all).await.unwrap().not_backed_up,
        2
    );

    // Deleted hosts count nowhere.
    assert!(store.delete_host(fine, t(3_000), None).await.unwrap());
    assert_eq!(store.host_counts(since, &all).await.unwrap().total, 4);
    let (_empty_db, empty) = open_temp_store().await.unwrap();
    assert_eq!(
        empty.host_counts(since, &all).await.unwrap(),
        HostCounts::default()
    );
}

#[tokio::test]
async fn replacing_snapshots_sets_the_hosts_snapshot_count() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = host_named(&*store, "web").await;
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        None
    );
    store
        .replace_snapshots(host, &[snapshot(1), snapshot(2), snapshot(3)])
        .await
        .unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        Some(3)
    );
    store.replace_snapshots(host, &[]).await.unwrap();
    let listed = store.list_hosts_page(None, 10).await.unwrap();
    assert_eq!(listed[0].snapshot_count, Some(0));

    // A refused report (a duplicate id) changes nothing.
    assert!(store
        .replace_snapshots(host, &[snapshot(4), snapshot(4)])
        .await
        .is_err());
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        Some(0)
    );
}

#[tokio::test]
async fn an_added_snapshot_joins_the_list_once_and_counts() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = host_named(&*store, "web").await;
    store
        .replace_snapshots(host, &[snapshot(1), snapshot(2)])
        .await
        .unwrap();
    store.add_snapshot(host, &snapshot(3)).await.unwrap();
    // A repeat (the agent replaying its spool) replaces the entry.
    let mut again = snapshot(3);
    again.size_bytes = Some(42);
    store.add_snapshot(host, &again).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        Some(3)
    );
    let listed = store.snapshots(host).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed.iter().find(|s| s.id == again.id).unwrap().size_bytes,
        Some(42)
    );
    // The next full report is the truth again.
    store.replace_snapshots(host, &[snapshot(1)]).await.unwrap();
    assert_eq!(
        store.host(host).await.unwrap().unwrap().snapshot_count,
        Some(1)
    );
}

/// Gives `host` repository settings with identity `key`.
async fn repository(store: &dyn Store, host: HostId, key: &str) {
    let sealed = SealedRepository {
        nonce: vec![0; 12],
        ciphertext: vec![1, 2, 3],
        format: SealFormat::OwnerBound,
        updated_at: t(7),
    };
    store
        .set_repository(host, &sealed, key, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn hosts_sharing_a_repository_are_counted_per_repository() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a1 = host_named(&*store, "a1").await;
    let a2 = host_named(&*store, "a2").await;
    let a3 = host_named(&*store, "a3").await;
    let b1 = host_named(&*store, "b1").await;
    let alone = host_named(&*store, "alone").await;
    let none = host_named(&*store, "none").await;
    for host in [a1, a2, a3] {
        repository(&*store, host, "s3:s3.example/shared").await;
    }
    repository(&*store, b1, "/srv/b").await;
    repository(&*store, alone, "/srv/alone").await;
    // A deleted host no longer shares anything.
    store.delete_host(a3, t(8), None).await.unwrap();
    let _ = b1;

    let expected = |id: HostId| -> u64 {
        if id == a1 || id == a2 {
            1
        } else {
            0
        }
    };
    let check = |hosts: &[rm_store::Host], what: &str| {
        for h in hosts {
            assert_eq!(
                h.repository_shared_with,
                expected(h.id),
                "{what}: {} shares with",
                h.name
            );
        }
    };
    check(&store.list_hosts().await.unwrap(), "list_hosts");
    check(
        &store.list_hosts_page(None, MAX_HOST_PAGE).await.unwrap(),
        "list_hosts_page",
    );
    let everyone = Selector::default();
    check(
        &store
            .list_hosts_attention_first(
                ProtectedAt {
                    now: t(0),
                    default_freshness_seconds: 1,
                },
                &everyone,
                0,
                MAX_HOST_PAGE,
            )
            .await
            .unwrap(),
        "list_hosts_attention_first",
    );
    check(
        &store.hosts_matching(&everyone).await.unwrap(),
        "hosts_matching",
    );
    let sharing = store
        .hosts_of_repository("s3:s3.example/shared")
        .await
        .unwrap();
    assert_eq!(sharing.len(), 2);
    check(&sharing, "hosts_of_repository");
    for id in [a1, a2, b1, alone, none] {
        let host = store.host(id).await.unwrap().unwrap();
        assert_eq!(
            host.repository_shared_with,
            expected(id),
            "host({})",
            host.name
        );
    }
    let patched = store
        .patch_host(a1, &HostPatch::default(), None)
        .await
        .unwrap();
    assert_eq!(patched.repository_shared_with, 1, "patch_host");
    assert_eq!(
        store.host(none).await.unwrap().unwrap().repository_key,
        None
    );
}
