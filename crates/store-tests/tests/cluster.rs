//! Several servers on one database (`RM_TEST_STORE`): servers' liveness,
//! leases (taken by exactly one of several racing stores, handed over on
//! expiry) and who holds which agent, with the sweep of dead servers'
//! hosts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use rm_core::HostId;
use rm_store::{HelloRecord, ServerRecord, Store};
use rm_store_tests::{enrol, open_temp_store, t, Backend};

fn server(id: &str, url: &str, started: i64, alive_until: i64) -> ServerRecord {
    ServerRecord {
        id: id.to_owned(),
        internal_url: url.to_owned(),
        started_at: t(started),
        alive_until: t(alive_until),
    }
}

fn hello(server: &str, connection: &str, at: i64) -> HelloRecord {
    HelloRecord {
        connection_id: connection.to_owned(),
        server_id: server.to_owned(),
        agent_version: "1.0.0".to_owned(),
        restic_version: None,
        restic_error: None,
        protocol_version: 1,
        hostname: "h".to_owned(),
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
        at: t(at),
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    }
}

async fn live_ids(store: &dyn Store, now: i64) -> Vec<String> {
    store
        .live_servers(t(now))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[tokio::test]
async fn only_postgres_is_shared_between_servers() {
    let (_db, store) = open_temp_store().await.unwrap();
    assert_eq!(store.shared(), Backend::from_env() == Backend::Postgres);
}

#[tokio::test]
async fn servers_are_alive_until_they_stop_renewing() {
    let (_db, store) = open_temp_store().await.unwrap();
    store
        .register_server(&server("a", "http://a", 0, 20))
        .await
        .unwrap();
    store
        .register_server(&server("b", "http://b", 1, 21))
        .await
        .unwrap();
    assert_eq!(live_ids(&*store, 10).await, ["a", "b"]);
    let listed = store.live_servers(t(10)).await.unwrap();
    assert_eq!(listed[0], server("a", "http://a", 0, 20));

    assert!(store.renew_server("a", t(40)).await.unwrap());
    // Renewal never moves the end back.
    assert!(store.renew_server("a", t(30)).await.unwrap());
    assert_eq!(live_ids(&*store, 25).await, ["a"], "b stopped renewing");
    // At its `alive_until` a server is dead.
    assert!(live_ids(&*store, 40).await.is_empty());

    store.unregister_server("a").await.unwrap();
    assert_eq!(live_ids(&*store, 10).await, ["b"]);
    assert!(!store.renew_server("a", t(50)).await.unwrap());
    assert!(!store.renew_server("nobody", t(50)).await.unwrap());
}

#[tokio::test]
async fn a_new_run_at_the_same_address_ends_the_earlier_one() {
    let (_db, store) = open_temp_store().await.unwrap();
    store
        .register_server(&server("old", "http://10.0.0.1:8080", 0, 20))
        .await
        .unwrap();
    store
        .register_server(&server("other", "http://10.0.0.2:8080", 0, 20))
        .await
        .unwrap();
    store
        .register_server(&server("new", "http://10.0.0.1:8080", 5, 25))
        .await
        .unwrap();
    assert_eq!(live_ids(&*store, 5).await, ["new", "other"]);
    // The earlier run, if it still runs somehow, cannot come back.
    assert!(!store.renew_server("old", t(30)).await.unwrap());
    assert_eq!(live_ids(&*store, 6).await, ["new", "other"]);
    assert!(store.renew_server("new", t(30)).await.unwrap());
}

#[tokio::test]
async fn a_lease_is_held_by_one_until_it_runs_out() {
    let (_db, store) = open_temp_store().await.unwrap();
    assert_eq!(store.lease_holder("alerts", t(0)).await.unwrap(), None);
    assert!(store.take_lease("alerts", "a", t(0), t(20)).await.unwrap());
    assert!(!store.take_lease("alerts", "b", t(1), t(21)).await.unwrap());
    assert_eq!(
        store.lease_holder("alerts", t(1)).await.unwrap().as_deref(),
        Some("a")
    );
    // Other names are other leases.
    assert!(store
        .take_lease("sessions", "b", t(1), t(21))
        .await
        .unwrap());
    // The holder renews.
    assert!(store.take_lease("alerts", "a", t(15), t(35)).await.unwrap());
    assert!(!store.take_lease("alerts", "b", t(30), t(50)).await.unwrap());
    // Once it ran out, another takes it, and the old holder cannot renew.
    assert_eq!(store.lease_holder("alerts", t(35)).await.unwrap(), None);
    assert!(store.take_lease("alerts", "b", t(35), t(55)).await.unwrap());
    assert!(!store.take_lease("alerts", "a", t(36), t(56)).await.unwrap());
    assert_eq!(
        store
            .lease_holder("alerts", t(36))
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );

    // Only the holder releases; then anyone takes it at once.
    assert!(!store.release_lease("alerts", "a").await.unwrap());
    assert!(store.release_lease("alerts", "b").await.unwrap());
    assert!(store.take_lease("alerts", "a", t(37), t(57)).await.unwrap());

    // A server that unregisters gives up every lease it holds.
    store
        .register_server(&server("a", "http://a", 0, 100))
        .await
        .unwrap();
    store.unregister_server("a").await.unwrap();
    assert_eq!(store.lease_holder("alerts", t(38)).await.unwrap(), None);
    assert_eq!(
        store
            .lease_holder("sessions", t(2))
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
}

/// Races `stores` (each its own pool, as servers are) for `name` at `now`;
/// returns the winners' indexes.
async fn race(stores: &[Arc<dyn Store>], name: &str, now: i64) -> Vec<usize> {
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let holder = format!("server-{i}");
            let won = store
                .take_lease(&name, &holder, t(now), t(now + 20))
                .await
                .unwrap();
            (i, won)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, won) = task.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    winners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_servers_racing_for_a_lease_exactly_one_wins() {
    let (db, first) = open_temp_store().await.unwrap();
    let mut stores = vec![first];
    for _ in 1..6 {
        stores.push(db.open().await.unwrap());
    }
    for round in 0..30 {
        let name = format!("work-{round}");
        let winners = race(&stores, &name, 0).await;
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let holder = stores[0].lease_holder(&name, t(1)).await.unwrap();
        assert_eq!(holder, Some(format!("server-{}", winners[0])));

        // The holder dies (stops renewing): once the lease ran out, one
        // of the others gets it, and only one.
        let others: Vec<Arc<dyn Store>> = stores
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != winners[0])
            .map(|(_, s)| Arc::clone(s))
            .collect();
        let next = race(&others, &name, 20).await;
        assert_eq!(next.len(), 1, "round {round} after expiry: {next:?}");
    }
}

#[tokio::test]
async fn a_host_is_held_by_the_server_of_its_last_hello() {
    let (_db, store) = open_temp_store().await.unwrap();
    let host = enrol(&*store).await;
    assert_eq!(store.host_holder(host).await.unwrap(), None);
    store
        .record_hello(host, &hello("a", "c1", 1))
        .await
        .unwrap();
    assert_eq!(store.host_holder(host).await.unwrap().as_deref(), Some("a"));
    // The agent reconnects through the load balancer to server b before a
    // saw the old connection close: a's late close changes nothing.
    store
        .record_hello(host, &hello("b", "c2", 2))
        .await
        .unwrap();
    assert_eq!(store.host_holder(host).await.unwrap().as_deref(), Some("b"));
    assert!(!store.mark_host_offline(host, "c1", t(3)).await.unwrap());
    assert!(store.host(host).await.unwrap().unwrap().online);
    assert!(store.mark_host_offline(host, "c2", t(4)).await.unwrap());
    assert_eq!(store.host_holder(host).await.unwrap(), None);
}

#[tokio::test]
async fn hosts_of_dead_servers_go_offline_once() {
    let (_db, store) = open_temp_store().await.unwrap();
    store
        .register_server(&server("live", "http://live", 0, 100))
        .await
        .unwrap();
    store
        .register_server(&server("dead", "http://dead", 0, 20))
        .await
        .unwrap();
    let on_live = enrol(&*store).await;
    let on_dead = enrol(&*store).await;
    let on_gone = enrol(&*store).await;
    let never = enrol(&*store).await;
    store
        .record_hello(on_live, &hello("live", "c1", 1))
        .await
        .unwrap();
    store
        .record_hello(on_dead, &hello("dead", "c2", 1))
        .await
        .unwrap();
    store
        .record_hello(on_gone, &hello("unregistered", "c3", 1))
        .await
        .unwrap();

    // While "dead" is still alive, only the host of a server that is not
    // registered at all is orphaned.
    assert_eq!(
        store.mark_orphaned_hosts_offline(t(10)).await.unwrap(),
        vec![on_gone]
    );
    let mut expected = vec![on_dead];
    expected.sort();
    assert_eq!(
        store.mark_orphaned_hosts_offline(t(20)).await.unwrap(),
        expected
    );
    assert!(store
        .mark_orphaned_hosts_offline(t(30))
        .await
        .unwrap()
        .is_empty());
    let dead = store.host(on_dead).await.unwrap().unwrap();
    assert!(!dead.online);
    assert_eq!(
        dead.last_seen_at,
        Some(t(1)),
        "last seen as its server saw it"
    );
    assert!(store.host(on_live).await.unwrap().unwrap().online);
    assert!(!store.host(never).await.unwrap().unwrap().online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_sweeping_at_once_each_take_a_host_once() {
    let (db, first) = open_temp_store().await.unwrap();
    let mut stores = vec![first];
    for _ in 1..4 {
        stores.push(db.open().await.unwrap());
    }
    for round in 0..10 {
        let dead = format!("dead-{round}");
        stores[0]
            .register_server(&server(&dead, &format!("http://{dead}"), 0, 20))
            .await
            .unwrap();
        let mut hosts = BTreeSet::new();
        for i in 0..8 {
            let host = enrol(&*stores[0]).await;
            stores[0]
                .record_hello(host, &hello(&dead, &format!("c{round}-{i}"), 1))
                .await
                .unwrap();
            hosts.insert(host);
        }
        let mut tasks = Vec::new();
        for store in &stores {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                store.mark_orphaned_hosts_offline(t(30)).await.unwrap()
            }));
        }
        let mut swept: Vec<HostId> = Vec::new();
        for task in tasks {
            swept.extend(task.await.unwrap());
        }
        swept.sort();
        assert_eq!(
            swept,
            hosts.into_iter().collect::<Vec<_>>(),
            "round {round}"
        );
    }
}

/// Receives from `listener` until `count` messages arrived (a gap is a
/// failure here: nothing was lost on a healthy connection).
async fn receive(listener: &mut Box<dyn rm_store::ClusterListener>, count: usize) -> Vec<String> {
    let mut received = Vec::new();
    while received.len() < count {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
            .await
            .expect("a published message arrives")
            .unwrap();
        match next {
            rm_store::ClusterMessage::Message(m) => received.push(m),
            rm_store::ClusterMessage::Resumed => panic!("the listener lost messages"),
        }
    }
    received
}

#[tokio::test]
async fn messages_reach_every_listener_in_order() {
    let (db, store) = open_temp_store().await.unwrap();
    // A second server on the same database (SQLite has one server only,
    // so its messages reach its own listeners).
    let other = match Backend::from_env() {
        Backend::Postgres => db.open().await.unwrap(),
        Backend::Sqlite => store.clone(),
    };
    let mut mine = store.listen().await.unwrap();
    let mut theirs = other.listen().await.unwrap();
    let first: Vec<String> = (0..300).map(|i| format!("{{\"n\":{i}}}")).collect();
    store.publish(&first).await.unwrap();
    other.publish(&["last".to_owned()]).await.unwrap();
    let mut expected = first.clone();
    expected.push("last".to_owned());
    assert_eq!(receive(&mut mine, 301).await, expected);
    assert_eq!(receive(&mut theirs, 301).await, expected);
}

#[tokio::test]
async fn a_message_too_long_is_refused_and_none_of_its_batch_is_sent() {
    let (_db, store) = open_temp_store().await.unwrap();
    let mut listener = store.listen().await.unwrap();
    let long = "x".repeat(rm_store::MAX_MESSAGE_BYTES + 1);
    let refused = store
        .publish(&["before".to_owned(), long])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("longer than"), "{refused}");
    store.publish(&["after".to_owned()]).await.unwrap();
    assert_eq!(receive(&mut listener, 1).await, vec!["after".to_owned()]);
}

#[tokio::test]
async fn a_reply_is_taken_once_and_old_ones_are_pruned() {
    let (_db, store) = open_temp_store().await.unwrap();
    let body = format!("[{}]", vec!["\"entry\""; 5_000].join(","));
    store.put_reply("call-1", &body, t(100)).await.unwrap();
    store.put_reply("call-1", "second", t(101)).await.unwrap();
    store.put_reply("call-2", "old", t(50)).await.unwrap();
    assert_eq!(store.take_reply("call-1").await.unwrap(), Some(body));
    assert_eq!(store.take_reply("call-1").await.unwrap(), None);
    assert_eq!(store.prune_replies(t(60)).await.unwrap(), 1);
    assert_eq!(store.take_reply("call-2").await.unwrap(), None);
    assert_eq!(store.take_reply("never").await.unwrap(), None);
}
