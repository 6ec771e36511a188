//! The sender: delivers what the outbox holds, retries with exponential
//! backoff, gives up after about three days, and keeps each channel's
//! counters. It runs as a task of its own, so a slow or dead receiver never
//! holds up the agent endpoint or the API.
//!
//! Rows are claimed with a lease ([`LEASE`]): a server that dies while
//! delivering leaves rows that are due again when the lease ends, so a
//! delivery may arrive twice but is never lost, and two servers on one
//! database never deliver one row at the same time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rm_core::schedule::{Clock, SystemClock};
use rm_core::ChannelId;
use rm_store::{ChannelRecord, DeliveryOutcome, OutboxRow};

use super::channels::open_config;
use super::deliver::{self, Sent};
use super::{NotifyError, Payload};
use crate::state::AppState;

/// Deliveries sent at once.
pub const CONCURRENCY: u32 = 8;
/// How long a claimed row is not due for anyone else: longer than a whole
/// attempt (an SMTP conversation may take twice the request timeout).
pub const LEASE: Duration = Duration::from_secs(120);
/// The wait after the first failed attempt; it doubles with each one.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// A delivery still failing this long after it was queued is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Delivered and given-up rows are kept this long, then pruned.
pub const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest the sender sleeps without looking at the store (rows
/// another server queued wake nobody here).
const IDLE_POLL: Duration = Duration::from_secs(30);
/// How long the sender waits after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// The wait before the next attempt after `attempts` failed ones:
/// 5 s · 2^(attempts-1), at most an hour.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_MAX)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What to record after an attempt that got `sent`, for a row queued at
/// `created_at` with `attempts` attempts made (this one included).
pub fn outcome(
    sent: &Sent,
    attempts: u32,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DeliveryOutcome {
    if sent.ok {
        return DeliveryOutcome::Delivered { at: now };
    }
    let retry_at = now + chrono_duration(backoff(attempts));
    if retry_at - created_at > chrono_duration(GIVE_UP_AFTER) {
        DeliveryOutcome::GiveUp {
            at: now,
            error: sent.error(),
        }
    } else {
        DeliveryOutcome::Retry {
            at: now,
            error: sent.error(),
            retry_at,
        }
    }
}

/// How one attempt went.
enum Attempt {
    /// The channel is gone (its rows went with it): nothing to record.
    Gone,
    /// The row can never be sent through this channel: given up at once.
    Unfit(String),
    /// It was sent; the receiver's answer.
    Sent(Sent),
}

/// Delivers the outbox's due rows.
#[derive(Clone)]
pub struct Sender {
    state: AppState,
    clock: Arc<dyn Clock>,
}

impl Sender {
    /// A sender for `state`'s store, telling time by `clock`.
    pub fn new(state: AppState, clock: Arc<dyn Clock>) -> Sender {
        Sender { state, clock }
    }

    /// Delivers every row due now, [`CONCURRENCY`] at a time, until none
    /// is left due; returns how many attempts were made.
    pub async fn deliver_due(&self) -> Result<usize, NotifyError> {
        let mut attempts = 0;
        loop {
            let now = self.clock.now();
            let rows = self
                .state
                .store()
                .claim_notifications(now, LEASE, CONCURRENCY)
                .await?;
            if rows.is_empty() {
                return Ok(attempts);
            }
            attempts += rows.len();
            let mut channels: HashMap<ChannelId, Option<ChannelRecord>> = HashMap::new();
            for row in &rows {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    channels.entry(row.channel_id)
                {
                    slot.insert(self.state.store().channel(row.channel_id).await?);
                }
            }
            let sends = rows.iter().map(|row| {
                let channel = channels.get(&row.channel_id).and_then(Option::as_ref);
                self.attempt(row, channel)
            });
            let results = futures_util::future::join_all(sends).await;
            for (row, sent) in rows.iter().zip(results) {
                let outcome = match sent {
                    Attempt::Gone => continue,
                    Attempt::Unfit(error) => DeliveryOutcome::GiveUp {
                        at: self.clock.now(),
                        error,
                    },
                    Attempt::Sent(sent) => {
                        outcome(&sent, row.attempts, row.created_at, self.clock.now())
                    }
                };
                if let DeliveryOutcome::GiveUp { error, .. } = &outcome {
                    tracing::warn!(channel = %row.channel_id, event = %row.event, %error, "gave up a notification after retrying for days");
                } else if let DeliveryOutcome::Retry {
                    error, retry_at, ..
                } = &outcome
                {
                    tracing::info!(channel = %row.channel_id, event = %row.event, %error, %retry_at, "a notification failed; it will be retried");
                }
                self.state
                    .store()
                    .finish_notification(row.id, &outcome)
                    .await?;
            }
        }
    }

    /// One attempt at `row`.
    async fn attempt(&self, row: &OutboxRow, channel: Option<&ChannelRecord>) -> Attempt {
        let Some(channel) = channel else {
            return Attempt::Gone;
        };
        // A channel whose kind changed after the row was queued (a webhook
        // made a healthchecks channel) cannot send it, now or later.
        let for_healthchecks = matches!(
            row.event.as_str(),
            super::EVENT_BACKUP_SUCCEEDED | super::EVENT_BACKUP_FAILED
        );
        if for_healthchecks != (channel.kind == super::channels::KIND_HEALTHCHECKS) {
            return Attempt::Unfit(format!(
                "`{}` was queued before the channel became a {} channel, which does not take it",
                row.event, channel.kind
            ));
        }
        let payload: Payload = match serde_json::from_value(row.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                return Attempt::Unfit(format!("the queued payload is unreadable: {e}"));
            }
        };
        Attempt::Sent(match open_config(&self.state, channel) {
            Ok(config) => deliver::send(&self.state, &config, &payload).await,
            Err(e) => Sent::failed(e.to_string()),
        })
    }

    /// How long to sleep before looking again: until the next row is due,
    /// at most [`IDLE_POLL`].
    async fn idle_wait(&self) -> Duration {
        match self.state.store().next_notification_due().await {
            Ok(Some(due)) => (due - self.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(IDLE_POLL),
            Ok(None) => IDLE_POLL,
            Err(_) => STORE_RETRY,
        }
    }

    /// Runs until the server stops: delivers what is due, then sleeps until
    /// something is queued or the next row is due.
    pub async fn run(self) {
        let wake = self.state.notifier().woken();
        let mut last_prune: Option<DateTime<Utc>> = None;
        loop {
            let wait = match self.deliver_due().await {
                Ok(_) => self.idle_wait().await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not deliver notifications; trying again shortly");
                    STORE_RETRY
                }
            };
            let now = self.clock.now();
            if last_prune.is_none_or(|at| now - at > chrono::Duration::hours(1)) {
                last_prune = Some(now);
                let before = now - chrono_duration(KEEP_FINISHED);
                if let Err(e) = self.state.store().prune_notifications(before).await {
                    tracing::debug!(error = %e, "could not prune finished notifications");
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.state.stopping() => return,
            }
        }
    }
}

/// Starts the sender on the real clock.
pub(crate) fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Sender::new(state, Arc::new(SystemClock)).run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(20));
        assert_eq!(backoff(10), Duration::from_secs(2560));
        assert_eq!(backoff(11), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), BACKOFF_BASE);
    }

    #[test]
    fn a_failure_is_retried_until_three_days_then_given_up() {
        let created = Utc::now();
        let failed = Sent {
            ok: false,
            status: Some(503),
            response: "down".to_owned(),
        };
        match outcome(&failed, 2, created, created + chrono::Duration::seconds(5)) {
            DeliveryOutcome::Retry {
                error, retry_at, ..
            } => {
                assert_eq!(error, "503: down");
                assert_eq!(retry_at, created + chrono::Duration::seconds(15));
            }
            other => panic!("{other:?}"),
        }
        let late = created + chrono::Duration::days(3) - chrono::Duration::minutes(30);
        assert!(matches!(
            outcome(&failed, 80, created, late),
            DeliveryOutcome::GiveUp { .. }
        ));
        let ok = Sent {
            ok: true,
            status: Some(200),
            response: String::new(),
        };
        assert!(matches!(
            outcome(&ok, 80, created, late),
            DeliveryOutcome::Delivered { .. }
        ));
    }
}
