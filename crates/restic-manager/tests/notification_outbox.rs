//! The notification outbox on a real store (`RM_TEST_STORE`), delivered to a real
//! HTTP receiver by `rm_server::notify::Sender` on an injected clock (no
//! server task competes with it): retries with backoff after 503s and
//! delivery once the receiver answers, giving up after about three days,
//! a second server on the same database delivering what the first left
//! (restart survival), claims held for their lease and no longer (a dead
//! server's rows are retried, never lost, never counted twice), and a
//! deleted channel's queue going with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rm_core::schedule::ManualClock;
use rm_core::sealing::SealingKey;
use rm_protocol::api::{AlertView, ChannelRequest, ChannelView};
use rm_server::notify::{self, channels, outbox, AlertEvent, AlertNotice, NoticeHost, Sender};
use rm_server::{AppState, ServerConfig};
use rm_store::prelude::*;
use rm_store::DeliveryOutcome;
use rm_testkit::store::TestDatabase;
use rm_testkit::HttpReceiver;
use serde_json::json;

/// One "server" (state, store, sender) on the shared database.
struct Node {
    state: AppState,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    sender: Sender,
}

async fn node(database: &TestDatabase, key: &SealingKey) -> Node {
    let store = database.open().await.unwrap();
    let state = AppState::new(
        store.clone(),
        ServerConfig::new("http://rm.test"),
        key.clone(),
    );
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let sender = Sender::new(state.clone(), clock.clone());
    Node {
        state,
        store,
        clock,
        sender,
    }
}

struct Rig {
    database: TestDatabase,
    key: SealingKey,
    a: Node,
}

async fn rig() -> Rig {
    let database = TestDatabase::create().await.unwrap();
    let key = SealingKey::generate().unwrap();
    let a = node(&database, &key).await;
    Rig { database, key, a }
}

async fn webhook(state: &AppState, url: String) -> ChannelView {
    let req = ChannelRequest {
        name: "hook".to_owned(),
        kind: "webhook".to_owned(),
        config: json!({"url": url, "secret": "outbox-secret"}),
        selector: Default::default(),
        kinds: Vec::new(),
    };
    channels::create(state, &req, None).await.unwrap()
}

async fn view(state: &AppState, id: &str) -> ChannelView {
    channels::show(state, id.parse().unwrap()).await.unwrap()
}

async fn enqueue(state: &AppState) -> AlertNotice {
    let host = NoticeHost {
        id: rm_core::HostId::new().to_string(),
        name: "db-01".to_owned(),
        labels: Default::default(),
    };
    let notice = AlertNotice {
        event: AlertEvent::Firing,
        repeat: false,
        alert: AlertView {
            id: rm_core::AlertId::new().to_string(),
            kind: "host_offline".to_owned(),
            host_id: host.id.clone(),
            host_name: host.name.clone(),
            state: "firing".to_owned(),
            subject: String::new(),
            message: "db-01 has been offline for 2 h".to_owned(),
            job_id: None,
            started_at: Utc::now(),
            resolved_at: None,
            resolved_message: None,
            acknowledged_by: None,
            acknowledged_at: None,
            notified_at: None,
            notifications: 0,
        },
        host,
    };
    assert_eq!(notify::enqueue_alert(state, &notice).await.unwrap(), 1);
    notice
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_delivered_once_the_receiver_answers() {
    let rig = rig().await;
    let a = &rig.a;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.answer_with(503);
    let channel = webhook(&a.state, receiver.url("/in")).await;
    enqueue(&a.state).await;
    a.clock.set(Utc::now());

    assert_eq!(a.sender.deliver_due().await.unwrap(), 1);
    assert_eq!(receiver.requests().len(), 1);
    let failing = view(&a.state, &channel.id).await;
    assert_eq!((failing.failed, failing.queued), (1, 1));
    assert!(failing.failing_since.is_some());
    assert_eq!(failing.last_error.as_deref(), Some("503: answered 503"));

    // 5 s, then 10 s between attempts.
    assert_eq!(a.sender.deliver_due().await.unwrap(), 0);
    a.clock.advance(secs(4));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 0);
    a.clock.advance(secs(1));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 1);
    a.clock.advance(secs(9));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 0);
    receiver.answer_with(200);
    a.clock.advance(secs(1));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 1);

    let healthy = view(&a.state, &channel.id).await;
    assert_eq!(
        (healthy.delivered, healthy.failed, healthy.queued),
        (1, 2, 0)
    );
    assert!(healthy.failing_since.is_none());
    assert!(healthy.last_success_at.is_some());
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.body == got[0].body));
    assert_eq!(got[0].json().unwrap()["event"], "alert.firing");
    // Delivered is delivered: nothing is due ever again.
    a.clock.advance(secs(7200));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 0);
    assert_eq!(a.store.next_notification_due().await.unwrap(), None);
}

#[tokio::test]
async fn a_delivery_failing_for_three_days_is_given_up_and_counted() {
    let rig = rig().await;
    let a = &rig.a;
    let receiver = HttpReceiver::start().await.unwrap();
    receiver.answer_with(503);
    let channel = webhook(&a.state, receiver.url("/in")).await;
    enqueue(&a.state).await;
    a.clock.set(Utc::now());
    let mut attempts = a.sender.deliver_due().await.unwrap();
    let mut hours = 0;
    while view(&a.state, &channel.id).await.queued > 0 {
        assert!(hours < 100, "still queued after {hours} h");
        a.clock.advance(secs(3600));
        hours += 1;
        attempts += a.sender.deliver_due().await.unwrap();
    }
    let given_up = view(&a.state, &channel.id).await;
    assert_eq!(given_up.given_up, 1);
    assert_eq!(given_up.failed, attempts as u64);
    assert_eq!(receiver.requests().len(), attempts);
    // Hourly after the first ten; the last attempt before 72 h is the last.
    assert!((70..=75).contains(&attempts), "{attempts} attempts");
    assert!((70..=73).contains(&hours), "gave up after {hours} h");
    assert!(given_up.failing_since.is_some());
    a.clock.advance(secs(86_400));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 0);
}

#[tokio::test]
async fn another_server_on_the_database_delivers_what_one_left_and_leases_hold() {
    let rig = rig().await;
    let a = &rig.a;
    let receiver = HttpReceiver::start().await.unwrap();
    let channel = webhook(&a.state, receiver.url("/in")).await;
    let first = enqueue(&a.state).await;

    // A queued it and stopped before sending: B (a restart, or the other
    // server) delivers it, opening the secret A sealed.
    let b = node(&rig.database, &rig.key).await;
    b.clock.set(Utc::now());
    assert_eq!(b.sender.deliver_due().await.unwrap(), 1);
    let got = receiver.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        got[0].json().unwrap()["alert"]["id"],
        first.alert.id.as_str()
    );
    assert!(got[0]
        .header("x-rm-signature")
        .unwrap()
        .starts_with("sha256="));

    // A claims the next one and dies mid-delivery: its lease holds B off,
    // then B retries it; A's late report changes nothing.
    enqueue(&a.state).await;
    let now = Utc::now();
    let claimed = a
        .store
        .claim_notifications(now, outbox::LEASE, 8)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    assert!(b
        .store
        .claim_notifications(now, outbox::LEASE, 8)
        .await
        .unwrap()
        .is_empty());
    b.clock.set(now + secs(60));
    assert_eq!(b.sender.deliver_due().await.unwrap(), 0);
    b.clock
        .set(now + chrono::Duration::from_std(outbox::LEASE).unwrap());
    assert_eq!(b.sender.deliver_due().await.unwrap(), 1);
    assert_eq!(
        receiver
            .wait_for(2, Duration::from_secs(10))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(!a
        .store
        .finish_notification(claimed[0].id, &DeliveryOutcome::Delivered { at: now })
        .await
        .unwrap());
    let counted = view(&b.state, &channel.id).await;
    assert_eq!(
        (counted.delivered, counted.failed, counted.queued),
        (2, 0, 0)
    );
}

#[tokio::test]
async fn secrets_sealed_with_another_key_fail_the_delivery_with_a_reason() {
    let rig = rig().await;
    let receiver = HttpReceiver::start().await.unwrap();
    let channel = webhook(&rig.a.state, receiver.url("/in")).await;
    enqueue(&rig.a.state).await;
    let other = node(&rig.database, &SealingKey::generate().unwrap()).await;
    other.clock.set(Utc::now());
    assert_eq!(other.sender.deliver_due().await.unwrap(), 1);
    assert!(receiver.requests().is_empty());
    let failing = view(&other.state, &channel.id).await;
    assert_eq!((failing.failed, failing.queued), (1, 1));
    assert!(
        failing
            .last_error
            .as_deref()
            .unwrap()
            .contains("do not open"),
        "{failing:?}"
    );
}

#[tokio::test]
async fn deleting_a_channel_drops_what_was_queued_for_it() {
    let rig = rig().await;
    let a = &rig.a;
    let receiver = HttpReceiver::start().await.unwrap();
    let channel = webhook(&a.state, receiver.url("/in")).await;
    enqueue(&a.state).await;
    enqueue(&a.state).await;
    assert_eq!(view(&a.state, &channel.id).await.queued, 2);
    assert!(a.store.next_notification_due().await.unwrap().is_some());
    channels::delete(&a.state, channel.id.parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(a.store.next_notification_due().await.unwrap(), None);
    a.clock.set(Utc::now() + secs(10));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 0);
    assert!(receiver.requests().is_empty());
    // Nothing is queued for a channel that does not exist.
    let host = NoticeHost {
        id: rm_core::HostId::new().to_string(),
        name: "x".to_owned(),
        labels: Default::default(),
    };
    assert_eq!(
        notify::backup_finished(&a.state, &host, rm_core::JobId::new(), true)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn rows_a_channel_can_no_longer_send_are_given_up_at_once() {
    let rig = rig().await;
    let a = &rig.a;
    let receiver = HttpReceiver::start().await.unwrap();
    let channel = webhook(&a.state, receiver.url("/in")).await;
    enqueue(&a.state).await;
    // The webhook becomes a healthchecks channel, which takes no alerts.
    let req = ChannelRequest {
        name: "hook".to_owned(),
        kind: "healthchecks".to_owned(),
        config: json!({"base_url": receiver.url("/hc")}),
        selector: Default::default(),
        kinds: Vec::new(),
    };
    channels::update(&a.state, channel.id.parse().unwrap(), &req, None)
        .await
        .unwrap();
    a.clock.set(Utc::now());
    assert_eq!(a.sender.deliver_due().await.unwrap(), 1);
    assert!(receiver.requests().is_empty());
    let after = view(&a.state, &channel.id).await;
    assert_eq!((after.given_up, after.queued), (1, 0));
    assert!(
        after
            .last_error
            .as_deref()
            .unwrap()
            .contains("alert.firing"),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_not_listening_gets_it_once_it_listens_again() {
    let rig = rig().await;
    let a = &rig.a;
    let mut receiver = HttpReceiver::start().await.unwrap();
    let channel = webhook(&a.state, receiver.url("/in")).await;
    receiver.stop().await;
    enqueue(&a.state).await;
    a.clock.set(Utc::now());
    assert_eq!(a.sender.deliver_due().await.unwrap(), 1);
    let failing = view(&a.state, &channel.id).await;
    assert_eq!((failing.failed, failing.queued), (1, 1));
    // No answer at all: the error, without a status.
    let error = failing.last_error.unwrap();
    assert!(!error.is_empty() && !error.starts_with("5"), "{error}");

    receiver.restart().await.unwrap();
    a.clock.advance(secs(5));
    assert_eq!(a.sender.deliver_due().await.unwrap(), 1);
    assert_eq!(receiver.requests().len(), 1);
    let healthy = view(&a.state, &channel.id).await;
    assert_eq!((healthy.delivered, healthy.queued), (1, 0));
}
