//! `GET /metrics`: fleet gauges, per-host series and the server's own
//! timings in the Prometheus text format (0.0.4), encoded by
//! `prometheus-client` (the Prometheus project's own client), so an
//! existing monitoring stack can alert on hosts that are not protected and
//! on a server that falls behind its agents.
//!
//! A scrape reads its inputs first ([`read_fleet`]: a few queries, none
//! per host) and then encodes plain values ([`fleet::Fleet`],
//! [`own::Metrics`]). With `--metrics-token` the page needs
//! `Authorization: Bearer <token>`.

mod fleet;
mod own;

use std::fmt;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder};
use prometheus_client::registry::Registry;
use rm_core::token::TokenHash;

use crate::audit::Client;
use crate::policies::effective;
use crate::state::AppState;

pub(crate) use fleet::{ChannelCounters, Fleet, HostSeries};
pub(crate) use own::Metrics;

/// The bearer token `/metrics` requires (`server --metrics-token`). Only
/// its SHA-256 is kept, compared in constant time; `Debug` shows nothing.
#[derive(Clone)]
pub struct MetricsToken(TokenHash);

/// A `--metrics-token` that cannot work as a bearer token.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-token {0}")]
pub struct InvalidMetricsToken(&'static str);

impl MetricsToken {
    /// The longest token accepted.
    pub const MAX_LEN: usize = 4096;

    /// Checks `token`: 1 to [`MetricsToken::MAX_LEN`] visible ASCII
    /// characters (no spaces), which is what fits in an `Authorization`
    /// header unchanged. Surrounding whitespace (a file's last newline) is
    /// dropped first.
    pub fn new(token: &str) -> Result<MetricsToken, InvalidMetricsToken> {
        let token = token.trim();
        if token.is_empty() {
            return Err(InvalidMetricsToken("must not be empty"));
        }
        if token.len() > MetricsToken::MAX_LEN {
            return Err(InvalidMetricsToken("is longer than 4096 characters"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidMetricsToken(
                "may hold only visible ASCII characters (no spaces or control characters)",
            ));
        }
        Ok(MetricsToken(TokenHash::of(token)))
    }

    /// Whether `presented` is this token (constant time).
    fn admits(&self, presented: &str) -> bool {
        TokenHash::of(presented).matches(&self.0)
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

/// Runs a closure as a `prometheus-client` collector: each part of the
/// page encodes itself from values it owns.
struct Encode<F>(F);

impl<F> fmt::Debug for Encode<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Encode")
    }
}

impl<F> Collector for Encode<F>
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut encoder)
    }
}

/// The text page `encode` writes.
pub(crate) fn encode_page<F>(encode: F) -> String
where
    F: Fn(&mut DescriptorEncoder) -> fmt::Result + Send + Sync + 'static,
{
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Encode(encode)));
    let mut out = String::new();
    if let Err(e) = prometheus_text::encode(&mut out, &registry) {
        // Writing to a String fails only if an encoder refuses a value;
        // a partial page would be wrong, so none is served.
        tracing::error!(error = %e, "metrics: could not encode the page");
        out.clear();
    }
    out
}

/// Serves the page, after the token check when one is set.
pub(crate) async fn render(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refuse(&state, &client, &headers) {
        return refusal;
    }
    let started = std::time::Instant::now();
    let fleet = read_fleet(&state).await;
    let read = started.elapsed();
    // With 10,000 hosts the page is megabytes: encoded off the runtime's
    // worker threads, so agents' frames are not held up meanwhile.
    let page_state = state.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        encode_page(move |e| {
            fleet.encode(e)?;
            own::encode_storage(page_state.storage(), e)?;
            page_state.metrics().encode(e)
        })
    })
    .await;
    let body = encoded.unwrap_or_else(|e| {
        tracing::error!(error = %e, "metrics: the encoding task failed");
        String::new()
    });
    tracing::debug!(
        read_ms = read.as_secs_f64() * 1e3,
        encode_ms = (started.elapsed() - read).as_secs_f64() * 1e3,
        bytes = body.len(),
        "metrics page"
    );
    if body.is_empty() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

/// `None` when the request may see the page: no token is set, or it
/// presents the right one. Otherwise 401 (with `WWW-Authenticate`), or 429
/// once the address has failed too often, as for every bearer token.
fn refuse(state: &AppState, client: &Client, headers: &HeaderMap) -> Option<Response> {
    let expected = state.config().metrics_token.as_ref()?;
    let presented = crate::agent_ws::bearer_token(headers);
    if presented.is_some_and(|token| expected.admits(token)) {
        return None;
    }
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
            "unauthorized: /metrics needs Authorization: Bearer <the server's --metrics-token>",
        )
            .into_response()
    };
    // A missing header is no guess; a wrong token counts towards the
    // address's burst.
    if presented.is_none() {
        return Some(unauthorized());
    }
    Some(match crate::auth::token_failed(state, client.ip) {
        Some(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1))],
            "too many failed token checks from this address",
        )
            .into_response(),
        None => unauthorized(),
    })
}

/// Reads what the page shows of the fleet. A store that cannot be read
/// leaves out the store-backed series, not the rest: `rm_store_writable`
/// matters most exactly then.
pub(crate) async fn read_fleet(state: &AppState) -> Fleet {
    let store = state.store();
    let counts = store
        .host_counts(
            crate::policies::protected_at(Utc::now()),
            &rm_core::Selector::default(),
        )
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "metrics: could not count hosts"))
        .ok();
    let mut hosts = match (store.host_backup_summaries().await, store.policies().await) {
        (Ok(summaries), Ok(policies)) => Some(host_series(summaries, &policies, Utc::now())),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: could not read the hosts");
            None
        }
    };
    if let Some(hosts) = hosts.as_mut() {
        // One query for the whole fleet, like the backups' summaries.
        match store
            .latest_jobs_per_host(crate::drills::KIND, rm_core::JobStatus::Succeeded)
            .await
        {
            Ok(drills) => {
                let drilled: std::collections::HashMap<String, DateTime<Utc>> = drills
                    .into_iter()
                    .filter_map(|j| Some((j.host_id.to_string(), j.finished_at?)))
                    .collect();
                for h in hosts.iter_mut() {
                    h.last_drill_success = drilled.get(&h.id).copied();
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: could not read the drills"),
        }
    }
    Fleet {
        agents_connected: state.hub().connected() as u64,
        counts,
        hosts,
        alerts_firing: store
            .firing_alert_counts()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "metrics: could not count alerts"))
            .unwrap_or_default(),
        channels: store
            .channels()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "metrics: could not read the channels"))
            .unwrap_or_default()
            .into_iter()
            .map(|c| ChannelCounters {
                name: c.name,
                delivered: c.stats.delivered,
                failed: c.stats.failed,
                failing: c.stats.failing_since.is_some(),
            })
            .collect(),
    }
}

/// Each host's series at `now`. `protected` is the host view's rule: a
/// backup that saved a snapshot within the effective freshness (own, else
/// policy, else default).
pub(crate) fn host_series(
    summaries: Vec<rm_store::HostBackupSummary>,
    policies: &[rm_store::PolicyRecord],
    now: chrono::DateTime<Utc>,
) -> Vec<HostSeries> {
    summaries
        .into_iter()
        .map(|h| {
            let policy = h
                .policy_id
                .and_then(|id| policies.iter().find(|p| p.id == id));
            let (freshness, _) = effective::freshness(h.freshness_seconds, policy);
            let protected = effective::protected(h.last_backup_success_at, freshness, now);
            let run = h.last_backup;
            HostSeries {
                id: h.id.to_string(),
                name: h.name,
                online: h.online,
                protected,
                last_success: h.last_backup_success_at,
                last_duration: run.and_then(|r| {
                    let started = r.started_at?;
                    let ms = (r.finished_at - started).num_milliseconds().max(0);
                    Some(ms as f64 / 1000.0)
                }),
                last_size: run.and_then(|r| r.bytes_processed),
                last_added: run.and_then(|r| r.bytes_added),
                last_drill_success: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let token = MetricsToken::new("s3cret-T0ken\n").unwrap();
        assert!(token.admits("s3cret-T0ken"));
        assert!(!token.admits("s3cret-T0ke"));
        assert!(!token.admits(""));
        assert_eq!(format!("{token:?}"), "MetricsToken(<redacted>)");
        for bad in ["", "  \n", "two words", "tab\there", "é"] {
            let e = MetricsToken::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("--metrics-token "), "{e}");
        }
        assert!(MetricsToken::new(&"x".repeat(MetricsToken::MAX_LEN + 1)).is_err());
    }

    #[test]
    fn protection_follows_the_effective_freshness() {
        let now = Utc::now();
        let id = rm_core::HostId::new();
        let summary =
            |freshness: Option<u64>, hours_ago: Option<i64>| rm_store::HostBackupSummary {
                id,
                name: "web".to_owned(),
                online: true,
                policy_id: None,
                freshness_seconds: freshness,
                last_backup_success_at: hours_ago.map(|h| now - chrono::Duration::hours(h)),
                last_backup: hours_ago.map(|h| rm_store::LastBackupRun {
                    started_at: Some(
                        now - chrono::Duration::hours(h) - chrono::Duration::seconds(90),
                    ),
                    finished_at: now - chrono::Duration::hours(h),
                    bytes_processed: Some(10),
                    bytes_added: None,
                }),
            };
        let series = host_series(
            vec![
                summary(None, Some(25)),
                summary(None, Some(27)),
                summary(Some(3600), Some(2)),
                summary(None, None),
            ],
            &[],
            now,
        );
        let protected: Vec<bool> = series.iter().map(|s| s.protected).collect();
        // The default freshness is 26 h.
        assert_eq!(protected, [true, false, false, false]);
        assert_eq!(series[0].last_duration, Some(90.0));
        assert_eq!(series[0].last_size, Some(10));
        assert_eq!(series[3].last_duration, None);
    }
}
