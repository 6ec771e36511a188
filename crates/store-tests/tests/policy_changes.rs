//! A policy change written for many hosts at once (`apply_policy_changes`),
//! on every store (`RM_TEST_STORE`): what every host ends up with is what a
//! statement per host gave — its policy, its policy schedule rows added,
//! replaced and removed, one version bump per changed set, and nothing for a
//! host deleted meanwhile; policies read back, their names unique, and the
//! repository settings they give stored and removed, never over a host's own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, PolicyId, ScheduleId, Selector};
use rm_store::prelude::*;
use rm_store::{
    HostPolicyChange, PolicyRecord, PolicyScheduleRecord, PolicyWrite, RepositoryChange,
    ScheduleRecord, SealFormat, SealedRepository, StoreError,
};
use rm_store_tests::{enrollment, new_host, open_temp_store, t, Backend};

/// More hosts than one `IN (…)` list or one multi-row insert holds.
const HOSTS: usize = 1_203;

async fn enrol(store: &dyn Store) -> HostId {
    let token = enrollment(1_000_000);
    store.create_enrollment_token(&token, None).await.unwrap();
    let (host, agent) = new_host();
    store
        .enroll_host(token.id, t(5), &host, &agent, None)
        .await
        .unwrap();
    host.id
}

fn policy(id: PolicyId, schedules: &[(ScheduleId, &str)]) -> PolicyRecord {
    PolicyRecord {
        id,
        name: String::from("fleet"),
        selector: Selector::default(),
        priority: 0,
        repository: None,
        schedules: schedules
            .iter()
            .map(|(id, cron)| PolicyScheduleRecord {
                id: *id,
                kind: String::from("backup"),
                cron: (*cron).to_owned(),
                timezone: None,
                params: serde_json::json!({"paths": ["/srv"]}),
                enabled: true,
                jitter_seconds: 0,
            })
            .collect(),
        freshness_seconds: None,
        offline_seconds: None,
        created_at: t(10),
        updated_at: t(10),
    }
}

/// The host's row for policy schedule `from`, with `cron`.
fn row(
    host: HostId,
    id: ScheduleId,
    policy: PolicyId,
    from: ScheduleId,
    cron: &str,
) -> ScheduleRecord {
    ScheduleRecord {
        id,
        host_id: host,
        kind: String::from("backup"),
        cron: cron.to_owned(),
        timezone: Some(String::from("UTC")),
        params: serde_json::json!({"paths": ["/srv"]}),
        enabled: true,
        jitter_seconds: 60,
        created_at: t(20),
        updated_at: t(20),
        policy: Some((policy, from)),
    }
}

#[tokio::test]
async fn a_change_for_many_hosts_gives_each_exactly_its_rows_and_one_bump() {
    let (_db, store) = open_temp_store().await.unwrap();
    let mut hosts = Vec::with_capacity(HOSTS);
    for _ in 0..HOSTS {
        hosts.push(enrol(&*store).await);
    }
    let policy_id = PolicyId::new();
    let (daily, weekly) = (ScheduleId::new(), ScheduleId::new());
    // Every host gets two rows, one per policy schedule.
    let rows: Vec<(ScheduleId, ScheduleId)> = hosts
        .iter()
        .map(|_| (ScheduleId::new(), ScheduleId::new()))
        .collect();
    let first: Vec<HostPolicyChange> = hosts
        .iter()
        .zip(&rows)
        .map(|(host, (a, b))| HostPolicyChange {
            host_id: *host,
            policy_id: Some(policy_id),
            repository: RepositoryChange::Keep,
            upsert_schedules: vec![
                row(*host, *a, policy_id, daily, "0 3 * * *"),
                row(*host, *b, policy_id, weekly, "0 5 * * 0"),
            ],
            delete_schedules: Vec::new(),
        })
        .collect();
    let created = policy(policy_id, &[(daily, "0 3 * * *"), (weekly, "0 5 * * 0")]);
    let bumped = store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Create(created)),
            &first,
            None,
        )
        .await
        .unwrap();
    assert_eq!(bumped.len(), HOSTS);
    assert!(
        bumped.iter().all(|(_, version)| *version == 1),
        "{bumped:?}"
    );

    // The change: the daily one gets a new cron, the weekly one goes; one
    // host was deleted meanwhile, and one host is only re-pointed.
    let gone = hosts[7];
    assert!(store.delete_host(gone, t(30), None).await.unwrap());
    let only_policy = hosts[8];
    let second: Vec<HostPolicyChange> = hosts
        .iter()
        .zip(&rows)
        .map(|(host, (a, b))| {
            if *host == only_policy {
                return HostPolicyChange {
                    host_id: *host,
                    policy_id: Some(policy_id),
                    repository: RepositoryChange::Keep,
                    upsert_schedules: Vec::new(),
                    delete_schedules: Vec::new(),
                };
            }
            HostPolicyChange {
                host_id: *host,
                policy_id: Some(policy_id),
                repository: RepositoryChange::Keep,
                upsert_schedules: vec![row(*host, *a, policy_id, daily, "30 4 * * *")],
                delete_schedules: vec![*b],
            }
        })
        .collect();
    let changed = policy(policy_id, &[(daily, "30 4 * * *")]);
    let bumped = store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Update(changed)),
            &second,
            None,
        )
        .await
        .unwrap();
    // Neither the deleted host nor the one whose set did not change.
    assert_eq!(bumped.len(), HOSTS - 2);
    assert!(bumped
        .iter()
        .all(|(h, v)| *v == 2 && *h != gone && *h != only_policy));

    for (host, (a, b)) in hosts.iter().zip(&rows) {
        if *host == gone {
            continue;
        }
        let (version, set) = store.schedule_set(*host).await.unwrap();
        if *host == only_policy {
            assert_eq!(version, 1);
            assert_eq!(set.len(), 2);
            continue;
        }
        assert_eq!(version, 2, "{host}");
        assert_eq!(set.len(), 1, "{host}: {set:?}");
        assert_eq!(set[0].id, *a);
        assert_eq!(set[0].cron, "30 4 * * *");
        assert_eq!(set[0].policy, Some((policy_id, daily)));
        assert!(set.iter().all(|s| s.id != *b));
    }
    let coverage = store.policy_coverage().await.unwrap();
    assert_eq!(coverage.len(), 1);
    assert_eq!(coverage[0].hosts, (HOSTS - 1) as u64);
    let host = store.host(hosts[0]).await.unwrap().unwrap();
    assert_eq!(host.policy_id, Some(policy_id));
}

#[tokio::test]
async fn a_row_of_another_host_is_neither_replaced_nor_removed() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (mine, theirs) = (enrol(&*store).await, enrol(&*store).await);
    let policy_id = PolicyId::new();
    let daily = ScheduleId::new();
    let their_row = ScheduleId::new();
    let give = HostPolicyChange {
        host_id: theirs,
        policy_id: Some(policy_id),
        repository: RepositoryChange::Keep,
        upsert_schedules: vec![row(theirs, their_row, policy_id, daily, "0 3 * * *")],
        delete_schedules: Vec::new(),
    };
    store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Create(policy(
                policy_id,
                &[(daily, "0 3 * * *")],
            ))),
            &[give],
            None,
        )
        .await
        .unwrap();
    // A change for `mine` naming `theirs`'s row id touches nothing of it.
    let stray = HostPolicyChange {
        host_id: mine,
        policy_id: Some(policy_id),
        repository: RepositoryChange::Keep,
        upsert_schedules: vec![row(mine, their_row, policy_id, daily, "1 1 * * *")],
        delete_schedules: vec![their_row],
    };
    store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            None,
            &[stray],
            None,
        )
        .await
        .unwrap();
    let (_, set) = store.schedule_set(theirs).await.unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].cron, "0 3 * * *");
    let (_, set) = store.schedule_set(mine).await.unwrap();
    assert!(set.is_empty(), "{set:?}");
}

fn sealed(byte: u8) -> SealedRepository {
    SealedRepository {
        nonce: vec![byte; 12],
        ciphertext: vec![byte, 2, 3],
        format: SealFormat::OwnerBound,
        updated_at: t(7),
    }
}

fn keep(host: HostId, policy: Option<PolicyId>) -> HostPolicyChange {
    HostPolicyChange {
        host_id: host,
        policy_id: policy,
        repository: RepositoryChange::Keep,
        upsert_schedules: Vec::new(),
        delete_schedules: Vec::new(),
    }
}

#[tokio::test]
async fn policies_are_read_back_named_uniquely_and_give_repositories_but_never_over_a_hosts_own() {
    let (_db, store) = open_temp_store().await.unwrap();
    let (given, own, other) = (
        enrol(&*store).await,
        enrol(&*store).await,
        enrol(&*store).await,
    );
    store
        .set_repository(own, &sealed(9), "s3:own", None)
        .await
        .unwrap();
    let policy_id = PolicyId::new();
    let mut fleet = policy(policy_id, &[]);
    // Read back, a policy's settings carry its own update time.
    fleet.repository = Some(SealedRepository {
        updated_at: fleet.updated_at,
        ..sealed(1)
    });
    let give = |host| HostPolicyChange {
        repository: RepositoryChange::Set {
            sealed: sealed(1),
            key: "s3:fleet".to_owned(),
            policy_id,
        },
        ..keep(host, Some(policy_id))
    };
    let bumped = store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Create(fleet.clone())),
            &[give(given), give(own)],
            None,
        )
        .await
        .unwrap();
    // No schedule changed: no host's version moves.
    assert!(bumped.is_empty(), "{bumped:?}");
    assert_eq!(store.policies().await.unwrap(), [fleet.clone()]);
    assert_eq!(store.policy(policy_id).await.unwrap(), Some(fleet.clone()));
    assert_eq!(store.policy(PolicyId::new()).await.unwrap(), None);

    // What the reconciler reads: the policy's settings on `given`, the
    // host's own (untouched) on `own`, none on `other`.
    let targets = store.policy_targets(None).await.unwrap();
    assert_eq!(targets.len(), 3);
    let of = |host: HostId| targets.iter().find(|t| t.host_id == host).unwrap();
    let (from, settings) = of(given).repository.clone().unwrap();
    assert_eq!((from, settings.nonce), (Some(policy_id), sealed(1).nonce));
    let (from, settings) = of(own).repository.clone().unwrap();
    assert_eq!((from, settings.nonce), (None, sealed(9).nonce));
    assert!(of(other).repository.is_none());
    assert_eq!(of(given).policy_id, Some(policy_id));
    assert_eq!(of(other).policy_id, None);
    assert_eq!(
        store.repository_key(own).await.unwrap().as_deref(),
        Some("s3:own")
    );
    // Named hosts only, in id order.
    let mut named = vec![other, given];
    let listed: Vec<HostId> = store
        .policy_targets(Some(&named))
        .await
        .unwrap()
        .iter()
        .map(|t| t.host_id)
        .collect();
    named.sort();
    assert_eq!(listed, named);
    let mut of_policy: Vec<HostId> = store
        .hosts_of_policy(policy_id)
        .await
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    of_policy.sort();
    let mut expected = vec![given, own];
    expected.sort();
    assert_eq!(of_policy, expected);

    // A second policy may not take the name; nothing of that change stays.
    let taken = policy(PolicyId::new(), &[]);
    let err = store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Create(taken)),
            &[keep(other, Some(policy_id))],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.host(other).await.unwrap().unwrap().policy_id, None);
    // Updating or deleting a policy that is not there.
    let ghost = policy(PolicyId::new(), &[]);
    let err = store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Update(ghost.clone())),
            &[],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Delete(ghost.id)),
            &[],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    // The policy gives no repository any more: its settings go, the
    // host's own stay.
    let mut changed = fleet.clone();
    changed.repository = None;
    changed.updated_at = t(99);
    let remove = |host| HostPolicyChange {
        repository: RepositoryChange::Remove,
        ..keep(host, Some(policy_id))
    };
    store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Update(changed.clone())),
            &[remove(given), remove(own)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.policy(policy_id).await.unwrap(), Some(changed));
    assert!(store.repository(given).await.unwrap().is_none());
    assert_eq!(
        store.repository(own).await.unwrap().unwrap().nonce,
        sealed(9).nonce
    );

    // Deleted, with its hosts let go.
    store
        .apply_policy_changes(
            store.policy_generation().await.unwrap(),
            Some(&PolicyWrite::Delete(policy_id)),
            &[keep(given, None), keep(own, None)],
            None,
        )
        .await
        .unwrap();
    assert!(store.policies().await.unwrap().is_empty());
    assert!(store.hosts_of_policy(policy_id).await.unwrap().is_empty());
    assert!(store.policy_coverage().await.unwrap().is_empty());
}

#[tokio::test]
async fn changes_decided_at_an_old_generation_are_refused_and_write_nothing() {
    let (_db, store) = open_temp_store().await.unwrap();
    let read_at = store.policy_generation().await.unwrap();
    let first = policy(PolicyId::new(), &[]);
    store
        .apply_policy_changes(read_at, Some(&PolicyWrite::Create(first)), &[], None)
        .await
        .unwrap();
    assert_eq!(store.policy_generation().await.unwrap(), read_at + 1);
    // A second change decided from the same read comes too late.
    let mut second = policy(PolicyId::new(), &[]);
    second.name = String::from("second");
    let err = store
        .apply_policy_changes(
            read_at,
            Some(&PolicyWrite::Create(second.clone())),
            &[],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale(_)), "{err:?}");
    assert!(store.policy(second.id).await.unwrap().is_none());
    assert_eq!(store.policy_generation().await.unwrap(), read_at + 1);
}

#[tokio::test]
async fn of_stores_applying_at_one_generation_exactly_one_writes() {
    let (db, store) = open_temp_store().await.unwrap();
    let mut stores = vec![store.clone()];
    if Backend::from_env() == Backend::Postgres {
        for _ in 0..5 {
            stores.push(db.open().await.unwrap());
        }
    }
    for round in 0..10 {
        let read_at = store.policy_generation().await.unwrap();
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, store)| {
                tokio::spawn(async move {
                    let mut mine = policy(PolicyId::new(), &[]);
                    mine.name = format!("policy {round}.{i}");
                    store
                        .apply_policy_changes(read_at, Some(&PolicyWrite::Create(mine)), &[], None)
                        .await
                })
            })
            .collect();
        let mut written = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => written += 1,
                Err(StoreError::Stale(_)) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(written, 1, "round {round}");
    }
    assert_eq!(store.policies().await.unwrap().len(), 10);
}
