//! A policy change written for many hosts at once (`apply_policy_changes`),
//! on every store (`RM_TEST_STORE`): what every host ends up with is what a
//! statement per host gave — its policy, its policy schedule rows added,
//! replaced and removed, one version bump per changed set, and nothing for a
//! host deleted meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rm_core::{HostId, PolicyId, ScheduleId, Selector};
use rm_store::prelude::*;
use rm_store::{
    HostPolicyChange, PolicyRecord, PolicyScheduleRecord, PolicyWrite, RepositoryChange,
    ScheduleRecord,
};
use rm_store_tests::{enrollment, new_host, open_temp_store, t};

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
        .apply_policy_changes(Some(&PolicyWrite::Create(created)), &first, None)
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
        .apply_policy_changes(Some(&PolicyWrite::Update(changed)), &second, None)
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
        .apply_policy_changes(None, &[stray], None)
        .await
        .unwrap();
    let (_, set) = store.schedule_set(theirs).await.unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].cron, "0 3 * * *");
    let (_, set) = store.schedule_set(mine).await.unwrap();
    assert!(set.is_empty(), "{set:?}");
}
