//! Several servers in one process on ONE PostgreSQL database (issue 15):
//! of two servers exactly one holds each lease; a server that dies hard
//! (no graceful stop) loses its leases once they expire and the other
//! takes them over; an agent held by the dead server goes offline once,
//! its running job gets the lost-agent grace and fails once, and the
//! alerts of that are notified once, by whichever server holds the alerts
//! lease; a job whose agent is connected to no server fails after the
//! grace though nobody was watching it; servers starting at once on an
//! empty database make one `admin`. Each scenario runs several times in a loop: a race that goes
//! wrong one time in a few shows.
//!
//! Needs `RM_TEST_POSTGRES_URL` (scripts/test starts a temporary cluster);
//! without it the tests skip with the reason printed, and fail under
//! `CI=true`. A lone server (SQLite) is checked too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use rm_core::{JobStatus, Labels};
use rm_server::cluster::{ALERTS_LEASE, LOST_AGENTS_LEASE};
use rm_server::ServerConfig;
use rm_store::HostPatch;

use rm_testkit::store::{connect_host_to, enrol_host, running_job};
use rm_testkit::{wait_until, Backend, HttpReceiver, TestServer};
use serde_json::json;

/// Rounds of each scenario.
const ROUNDS: usize = 3;
/// Far more than a handover takes (expiry + a renewal, under a second).
const LIMIT: Duration = Duration::from_secs(30);

/// Whether PostgreSQL is there; prints why not, and fails under CI.
fn postgres(test: &str) -> bool {
    Backend::postgres_or_skip(test).is_some()
}

/// Fast renewals, so a dead server's leases pass in under a second.
fn fast(config: &mut ServerConfig) {
    config.cluster_renew = Duration::from_millis(100);
    config.cluster_expiry = Duration::from_millis(600);
    config.lost_agent_grace = Some(Duration::from_millis(300));
    config.alert_grace = Duration::ZERO;
}

/// Two servers on one fresh PostgreSQL database.
async fn pair() -> (TestServer, TestServer) {
    let a = TestServer::start_on_with(Backend::Postgres, fast)
        .await
        .unwrap();
    let b = a.start_beside(fast).await.unwrap();
    (a, b)
}

fn id(server: &TestServer) -> String {
    server.state.cluster().id().to_owned()
}

async fn holder(server: &TestServer, lease: &str) -> Option<String> {
    server
        .store()
        .lease_holder(lease, Utc::now())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lone_server_registers_nothing_and_runs_everything() {
    let server = TestServer::start_on(Backend::Sqlite).await.unwrap();
    assert!(!server.state.cluster().shared());
    assert!(server
        .store()
        .live_servers(Utc::now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(holder(&server, ALERTS_LEASE).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_servers_one_holds_each_lease_and_the_other_takes_over_when_it_dies() {
    if !postgres("of_two_servers_one_holds_each_lease_and_the_other_takes_over_when_it_dies") {
        return;
    }
    for round in 0..ROUNDS {
        let (mut a, mut b) = pair().await;
        let ids = [id(&a), id(&b)];
        let mut live: Vec<String> = a
            .store()
            .live_servers(Utc::now())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        live.sort();
        let mut expected = ids.to_vec();
        expected.sort();
        assert_eq!(live, expected, "round {round}");

        for lease in [ALERTS_LEASE, LOST_AGENTS_LEASE] {
            wait_until(LIMIT, "a lease holder", || async {
                holder(&a, lease).await.is_some()
            })
            .await
            .unwrap();
        }
        let first = holder(&a, ALERTS_LEASE).await.unwrap();
        assert!(ids.contains(&first), "round {round}: {first}");
        // Each server's own view agrees with the store: exactly one of
        // them believes it holds the lease… once its renewal ran.
        wait_until(LIMIT, "the holder to know it", || async {
            let held = [&a, &b].iter().filter(|s| alerts_lease_held(s)).count();
            held == 1
        })
        .await
        .unwrap();

        let (dead, survivor) = if first == ids[0] {
            (&mut a, &b)
        } else {
            (&mut b, &a)
        };
        dead.crash();
        let survivor_id = id(survivor);
        for lease in [ALERTS_LEASE, LOST_AGENTS_LEASE] {
            wait_until(LIMIT, "the survivor to take the lease", || async {
                holder(survivor, lease).await.as_deref() == Some(survivor_id.as_str())
            })
            .await
            .unwrap();
        }
        let live = survivor.store().live_servers(Utc::now()).await.unwrap();
        assert_eq!(live.len(), 1, "round {round}: {live:?}");
        assert_eq!(live[0].id, survivor_id);
    }
}

fn alerts_lease_held(server: &TestServer) -> bool {
    server.state.cluster().holds(ALERTS_LEASE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_of_a_dead_server_go_offline_and_their_jobs_fail_once() {
    if !postgres("the_agents_of_a_dead_server_go_offline_and_their_jobs_fail_once") {
        return;
    }
    for round in 0..ROUNDS {
        let (mut a, b) = pair().await;
        let mut receiver = HttpReceiver::start().await.unwrap();
        b.admin()
            .await
            .unwrap()
            .create_channel(json!({
                "name": "ops",
                "kind": "webhook",
                "config": {"url": receiver.url("/hook")},
            }))
            .await
            .unwrap();
        let store = b.store();
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let host = enrol_host(store, "web", Labels::default(), long_ago)
            .await
            .unwrap();
        store
            .patch_host(
                host,
                &HostPatch {
                    offline_seconds: Some(Some(1)),
                    ..HostPatch::default()
                },
                None,
            )
            .await
            .unwrap();
        // The agent is connected to A, with a backup running. Offline for a
        // second is enough for an alert (counted from when the evaluator
        // started watching, at the latest).
        connect_host_to(store, host, &id(&a), long_ago)
            .await
            .unwrap();
        let job = running_job(store, host, "backup", long_ago).await.unwrap();
        assert_eq!(
            store.host_holder(host).await.unwrap().as_deref(),
            Some(id(&a).as_str())
        );
        let seen = b
            .admin()
            .await
            .unwrap()
            .host(&host.to_string())
            .await
            .unwrap();
        assert!(
            seen.online,
            "round {round}: B sees the agent online (held by A)"
        );

        a.crash();
        wait_until(LIMIT, "the host to go offline", || async {
            !store.host(host).await.unwrap().unwrap().online
        })
        .await
        .unwrap();
        wait_until(LIMIT, "the lost job to fail", || async {
            store.job(job).await.unwrap().unwrap().status == JobStatus::Failed
        })
        .await
        .unwrap();
        let failed = store.job(job).await.unwrap().unwrap();
        // Whichever found it first — the sweep of the dead server's hosts,
        // or the new lease holder's look at jobs whose agent is connected
        // nowhere — the job failed as interrupted, once.
        let error = failed.error.clone().unwrap_or_default();
        assert!(
            error.contains("the server holding its connection stopped answering")
                || error.contains("the server restarted")
                || error.contains("the server watching it stopped answering")
                || error.contains("its agent was connected to no server"),
            "round {round}: {failed:?}"
        );
        // Both the failed job and the offline host are told of, each once.
        let posts = receiver.wait_for(2, LIMIT).await.unwrap();
        let mut kinds: Vec<String> = posts
            .iter()
            .map(|r| {
                r.json().unwrap()["alert"]["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        kinds.sort();
        assert_eq!(kinds, ["host_offline", "job_failed"], "round {round}");
        // Once the survivor stops, nothing more can come.
        b.stop().await.unwrap();
        let all = receiver.requests();
        assert_eq!(all.len(), 2, "round {round}: {all:?}");
        receiver.stop().await;
        drop(a);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_live_servers_told_of_one_offline_host_only_one_alerts() {
    if !postgres("of_two_live_servers_told_of_one_offline_host_only_one_alerts") {
        return;
    }
    for round in 0..ROUNDS {
        let (a, b) = pair().await;
        let mut receiver = HttpReceiver::start().await.unwrap();
        a.admin()
            .await
            .unwrap()
            .create_channel(json!({
                "name": "ops",
                "kind": "webhook",
                "config": {"url": receiver.url("/hook")},
            }))
            .await
            .unwrap();
        // Both servers know the alerts lease is held, by one of them.
        wait_until(LIMIT, "an alerts lease holder", || async {
            [&a, &b].iter().filter(|s| alerts_lease_held(s)).count() == 1
        })
        .await
        .unwrap();
        let store = a.store();
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let host = enrol_host(store, "db", Labels::default(), long_ago)
            .await
            .unwrap();
        store
            .patch_host(
                host,
                &HostPatch {
                    offline_seconds: Some(Some(1)),
                    ..HostPatch::default()
                },
                None,
            )
            .await
            .unwrap();
        let connection = connect_host_to(store, host, &id(&a), long_ago)
            .await
            .unwrap();
        assert!(store
            .mark_host_offline(host, &connection, long_ago)
            .await
            .unwrap());
        // Each server hears of the host (a rename through its API): each
        // would evaluate it, were it not for the lease.
        for (n, server) in [&a, &b].into_iter().enumerate() {
            let (status, body) = server
                .admin()
                .await
                .unwrap()
                .patch(
                    &format!("/api/v1/hosts/{host}"),
                    json!({"name": format!("db-{n}")}),
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "round {round}: {body}");
        }
        let posts = receiver.wait_for(1, LIMIT).await.unwrap();
        let body = posts[0].json().unwrap();
        assert_eq!(body["alert"]["kind"], "host_offline", "round {round}");
        b.stop().await.unwrap();
        a.stop().await.unwrap();
        let all = receiver.requests();
        assert_eq!(all.len(), 1, "round {round}: {all:?}");
        receiver.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_agent_is_connected_nowhere_fails_after_the_grace() {
    if !postgres("a_job_whose_agent_is_connected_nowhere_fails_after_the_grace") {
        return;
    }
    for round in 0..ROUNDS {
        let (a, b) = pair().await;
        wait_until(LIMIT, "a lost-agents lease holder", || async {
            holder(&a, LOST_AGENTS_LEASE).await.is_some()
        })
        .await
        .unwrap();
        // The agent left a server that was stopping (which loses nobody,
        // so nobody watches it) and never came back: offline, with a
        // backup still running.
        let store = b.store();
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let host = enrol_host(store, "app", Labels::default(), long_ago)
            .await
            .unwrap();
        let connection = connect_host_to(store, host, &id(&a), long_ago)
            .await
            .unwrap();
        let job = running_job(store, host, "backup", long_ago).await.unwrap();
        assert!(store
            .mark_host_offline(host, &connection, long_ago)
            .await
            .unwrap());
        wait_until(LIMIT, "the abandoned job to fail", || async {
            store.job(job).await.unwrap().unwrap().status == JobStatus::Failed
        })
        .await
        .unwrap();
        let error = store.job(job).await.unwrap().unwrap().error.unwrap();
        assert!(
            error.contains("its agent was connected to no server"),
            "round {round}: {error}"
        );
    }
}

#[tokio::test]
async fn servers_starting_at_once_on_an_empty_database_make_one_admin() {
    if !postgres("servers_starting_at_once_on_an_empty_database_make_one_admin") {
        return;
    }
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let db = rm_testkit::TestDatabase::create_in_for(dir.path(), Backend::Postgres)
            .await
            .unwrap();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(db.open().await.unwrap());
        }
        let starts = stores.iter().cloned().map(|store| {
            tokio::spawn(async move {
                rm_server::ensure_first_admin(store.as_ref(), Some("first-admin-password")).await
            })
        });
        let mut created = 0;
        for start in futures_util::future::join_all(starts).await {
            match start.unwrap().unwrap() {
                rm_server::FirstAdmin::AlreadyPresent => {}
                _ => created += 1,
            }
        }
        assert_eq!(created, 1, "round {round}");
        assert_eq!(stores[0].count_users().await.unwrap(), 1, "round {round}");
    }
}
