//! Hosts' repository settings on every store (`RM_TEST_STORE`): stored,
//! read back, keyed, refused and deleted; hosts listed by repository and
//! by label selector; the unfinished jobs of a repository's hosts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, JobStatus, JobTrigger, Labels, Selector};
use rm_store::{HostPatch, NewJob, SealFormat, SealedRepository, StoreError};
use rm_store_tests::{enrol, job_id_at, open_temp_store, t};

fn sealed(byte: u8) -> SealedRepository {
    SealedRepository {
        nonce: vec![byte; 12],
        ciphertext: vec![byte, 2, 3],
        format: SealFormat::OwnerBound,
        updated_at: t(7),
    }
}

#[tokio::test]
async fn settings_are_stored_keyed_refused_and_deleted() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    let unknown = HostId::new();
    assert!(matches!(
        store.set_repository(unknown, &sealed(1), "k", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.repository(unknown).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.repository(host).await.unwrap(), None);
    assert_eq!(store.repository_key(host).await.unwrap(), None);

    store
        .set_repository(host, &sealed(1), "key-a", None)
        .await
        .unwrap();
    assert_eq!(store.repository(host).await.unwrap(), Some(sealed(1)));
    assert_eq!(
        store.repository_key(host).await.unwrap().as_deref(),
        Some("key-a")
    );
    store.set_repository_key(host, "key-b").await.unwrap();
    assert_eq!(
        store.repository_key(host).await.unwrap().as_deref(),
        Some("key-b")
    );

    store
        .set_repository_refused(host, Some("no such bucket"))
        .await
        .unwrap();
    let listed = store.repositories().await.unwrap();
    assert_eq!(
        listed,
        [(host, sealed(1), Some("no such bucket".to_owned()))]
    );
    assert_eq!(
        store
            .host(host)
            .await
            .unwrap()
            .unwrap()
            .repository_refused
            .as_deref(),
        Some("no such bucket")
    );
    // Storing again clears the refusal.
    store
        .set_repository(host, &sealed(2), "key-b", None)
        .await
        .unwrap();
    assert_eq!(
        store.repositories().await.unwrap(),
        [(host, sealed(2), None)]
    );

    assert!(store.delete_own_repository(host, None).await.unwrap());
    assert!(!store.delete_own_repository(host, None).await.unwrap());
    assert_eq!(store.repository(host).await.unwrap(), None);
    assert!(store.repositories().await.unwrap().is_empty());
}

#[tokio::test]
async fn hosts_are_listed_by_repository_and_by_selector() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = enrol(&*store).await;
    let b = enrol(&*store).await;
    let c = enrol(&*store).await;
    for (host, key) in [(a, "shared"), (b, "shared"), (c, "own")] {
        store
            .set_repository(host, &sealed(1), key, None)
            .await
            .unwrap();
    }
    let mut expected = vec![a, b];
    expected.sort();
    let shared: Vec<HostId> = store
        .hosts_of_repository("shared")
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(shared, expected);
    // A deleted host leaves its repository's list.
    assert!(store.delete_host(b, t(9), None).await.unwrap());
    let shared: Vec<HostId> = store
        .hosts_of_repository("shared")
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(shared, [a]);

    let labels = |pairs: &str| Labels::parse_pairs("labels", pairs).unwrap();
    for (host, pairs) in [(a, "env=prod,team=a"), (c, "env=prod,team=b")] {
        let patch = HostPatch {
            labels: Some(labels(pairs)),
            ..HostPatch::default()
        };
        store.patch_host(host, &patch, None).await.unwrap();
    }
    let page = |selector: &'static str| {
        let store = store.clone();
        async move {
            let selector = Selector(labels(selector));
            store
                .list_hosts_page_matching(None, 10, &selector)
                .await
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect::<Vec<_>>()
        }
    };
    let mut prod = vec![a, c];
    prod.sort();
    assert_eq!(page("env=prod").await, prod);
    assert_eq!(page("env=prod,team=b").await, [c]);
    assert!(page("env=dev").await.is_empty());
    // A page after the first host holds the rest.
    let rest: Vec<HostId> = store
        .list_hosts_page_matching(Some(prod[0]), 10, &Selector(labels("env=prod")))
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(rest, [prod[1]]);
}

#[tokio::test]
async fn a_repositorys_jobs_are_its_live_hosts_unfinished_ones_oldest_first() {
    let (_db, store) = open_temp_store().await.unwrap();
    let a = enrol(&*store).await;
    let b = enrol(&*store).await;
    let other = enrol(&*store).await;
    for (host, key) in [(a, "shared"), (b, "shared"), (other, "own")] {
        store
            .set_repository(host, &sealed(1), key, None)
            .await
            .unwrap();
    }
    let job = |host: HostId, at: i64, status: JobStatus| NewJob {
        id: job_id_at(at),
        host_id: host,
        kind: "backup".to_owned(),
        params: serde_json::json!({"n": at}),
        trigger: JobTrigger::Manual,
        schedule_id: None,
        status,
        error: None,
        created_at: t(at),
    };
    let later = store
        .create_job(&job(a, 20, JobStatus::Queued), None)
        .await
        .unwrap();
    let earlier = store
        .create_job(&job(b, 10, JobStatus::Dispatched), None)
        .await
        .unwrap();
    // Finished, or of a host in another repository: not listed.
    store
        .create_job(&job(a, 30, JobStatus::Skipped), None)
        .await
        .unwrap();
    store
        .create_job(&job(other, 40, JobStatus::Queued), None)
        .await
        .unwrap();

    let listed = store.repository_jobs("shared").await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|j| (j.job_id, j.host_id, j.status, j.host_online, j.batch))
        .collect();
    assert_eq!(
        seen,
        [
            (earlier.id, b, JobStatus::Dispatched, false, None),
            (later.id, a, JobStatus::Queued, false, None),
        ]
    );
    assert_eq!(listed[1].params, serde_json::json!({"n": 20}));
    assert_eq!(listed[1].created_at, t(20));
}
