//! `GET /metrics`: fleet gauges and the server's own timings in the
//! Prometheus text format, so an existing monitoring stack can alert on
//! hosts that drop off and on a server that falls behind its agents.
//!
//! The timings are fixed-bucket histograms of atomic counters: recording one
//! costs a few atomic adds and no lock, so every agent frame can be timed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rm_protocol::Message;

use crate::state::AppState;

/// Bucket upper bounds in seconds: 1-2-5 steps from 1 µs to 10 s, fine
/// enough to tell a 3 µs frame from a 30 µs one and still catch seconds.
const BUCKETS: [f64; 22] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
    0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A Prometheus histogram of durations.
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of `name` with
    /// `labels` (`key="value"` pairs, or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = BUCKETS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| String::from("+Inf"));
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// The server's own counters and timings.
pub(crate) struct Metrics {
    /// Time from a frame's arrival to the end of its handling, per message
    /// kind (indexed like [`Message::KINDS`]).
    frames: Vec<Histogram>,
    /// Time to write one batch of last-seen times to the store.
    last_seen_flush: Histogram,
    /// Hosts whose last-seen time was written, over all flushes.
    last_seen_written: AtomicU64,
    /// Accepted `hello`s (connections), over the server's life.
    hellos: AtomicU64,
    /// Login passwords verified (argon2 runs), right or wrong.
    login_checks: AtomicU64,
    /// Login attempts refused by the limiter before any check.
    login_throttled: AtomicU64,
    /// Failed bearer-token checks answered with 429.
    token_throttled: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            frames: Message::KINDS.iter().map(|_| Histogram::new()).collect(),
            last_seen_flush: Histogram::new(),
            last_seen_written: AtomicU64::new(0),
            hellos: AtomicU64::new(0),
            login_checks: AtomicU64::new(0),
            login_throttled: AtomicU64::new(0),
            token_throttled: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The histogram slot of a message kind; `None` for kinds this server
    /// does not know (those are not timed).
    pub(crate) fn frame_slot(kind: &str) -> Option<usize> {
        Message::KINDS.iter().position(|k| *k == kind)
    }

    /// Records how long handling a frame of kind `slot` took.
    pub(crate) fn frame_handled(&self, slot: usize, elapsed: Duration) {
        if let Some(histogram) = self.frames.get(slot) {
            histogram.observe(elapsed);
        }
    }

    /// Records one last-seen flush of `hosts` hosts.
    pub(crate) fn last_seen_flushed(&self, hosts: usize, elapsed: Duration) {
        self.last_seen_flush.observe(elapsed);
        self.last_seen_written
            .fetch_add(hosts as u64, Ordering::Relaxed);
    }

    /// Counts an accepted `hello`.
    pub(crate) fn hello_accepted(&self) {
        self.hellos.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a verified login password.
    pub(crate) fn login_password_checked(&self) {
        self.login_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a login refused by the limiter.
    pub(crate) fn login_throttled(&self) {
        self.login_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed bearer-token check answered with 429.
    pub(crate) fn token_throttled(&self) {
        self.token_throttled.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        for (name, help, counter) in [
            (
                "rm_login_password_checks_total",
                "Login passwords verified (right or wrong) since the server started.",
                &self.login_checks,
            ),
            (
                "rm_login_throttled_total",
                "Login attempts refused by the login limiter (429/503) without a check.",
                &self.login_throttled,
            ),
            (
                "rm_bearer_auth_throttled_total",
                "Failed bearer-token checks answered with 429 (an address over its burst).",
                &self.token_throttled,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP rm_agent_hellos_total Agent connections accepted (hello) since the server started."
        );
        let _ = writeln!(out, "# TYPE rm_agent_hellos_total counter");
        let _ = writeln!(
            out,
            "rm_agent_hellos_total {}",
            self.hellos.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP rm_agent_frame_handling_seconds Time from an agent frame's arrival to the end of its handling, by kind."
        );
        let _ = writeln!(out, "# TYPE rm_agent_frame_handling_seconds histogram");
        for (kind, histogram) in Message::KINDS.iter().zip(&self.frames) {
            // Kinds never received (most server-to-agent ones) stay out.
            if histogram.count() > 0 {
                histogram.render(
                    out,
                    "rm_agent_frame_handling_seconds",
                    &format!("kind=\"{kind}\""),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP rm_last_seen_flush_seconds Time to write one batch of agent last-seen times to the store."
        );
        let _ = writeln!(out, "# TYPE rm_last_seen_flush_seconds histogram");
        self.last_seen_flush
            .render(out, "rm_last_seen_flush_seconds", "");
        let _ = writeln!(
            out,
            "# HELP rm_last_seen_written_total Host last-seen times written to the store."
        );
        let _ = writeln!(out, "# TYPE rm_last_seen_written_total counter");
        let _ = writeln!(
            out,
            "rm_last_seen_written_total {}",
            self.last_seen_written.load(Ordering::Relaxed)
        );
    }
}

/// Renders the gauges and timings. The host counts are one aggregate query,
/// cheap at scrape intervals even for large fleets, and exact.
pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let protected = crate::policies::protected_at(Utc::now());
    // A store that cannot be read leaves out the host gauges, not the
    // rest: `rm_store_writable` matters most exactly then.
    let counts = match state
        .store()
        .host_counts(protected, &rm_core::Selector::default())
        .await
    {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not count hosts");
            None
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP rm_build_info Version of this server and the protocol it speaks."
    );
    let _ = writeln!(out, "# TYPE rm_build_info gauge");
    let _ = writeln!(
        out,
        "rm_build_info{{version=\"{}\",protocol=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        rm_protocol::CURRENT_PROTOCOL_VERSION
    );
    let _ = writeln!(
        out,
        "# HELP rm_agents_connected Agent WebSocket connections open now."
    );
    let _ = writeln!(out, "# TYPE rm_agents_connected gauge");
    let _ = writeln!(out, "rm_agents_connected {}", state.hub().connected());
    if let Some(counts) = counts {
        let _ = writeln!(out, "# HELP rm_hosts Enrolled hosts by connection state.");
        let _ = writeln!(out, "# TYPE rm_hosts gauge");
        let _ = writeln!(out, "rm_hosts{{state=\"online\"}} {}", counts.online);
        let _ = writeln!(out, "rm_hosts{{state=\"offline\"}} {}", counts.offline());
        let _ = writeln!(
            out,
            "# HELP rm_hosts_not_backed_up Hosts without a successful backup in the dashboard's window (26 h)."
        );
        let _ = writeln!(out, "# TYPE rm_hosts_not_backed_up gauge");
        let _ = writeln!(out, "rm_hosts_not_backed_up {}", counts.not_backed_up);
        let _ = writeln!(
            out,
            "# HELP rm_hosts_unconfigured Hosts with neither a repository nor a schedule, of their own or from a policy."
        );
        let _ = writeln!(out, "# TYPE rm_hosts_unconfigured gauge");
        let _ = writeln!(out, "rm_hosts_unconfigured {}", counts.unconfigured);
    }
    state.storage().render(&mut out);
    state.metrics().render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "kind=\"heartbeat\"");
        assert!(out.contains("x_bucket{kind=\"heartbeat\",le=\"0.000002\"} 0\n"));
        assert!(out.contains("x_bucket{kind=\"heartbeat\",le=\"0.000005\"} 2\n"));
        assert!(out.contains("x_bucket{kind=\"heartbeat\",le=\"0.05\"} 3\n"));
        assert!(out.contains("x_bucket{kind=\"heartbeat\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_count{kind=\"heartbeat\"} 4\n"));
        assert!(
            out.contains("x_sum{kind=\"heartbeat\"} 60.030006\n"),
            "{out}"
        );
    }

    #[test]
    fn every_known_kind_has_a_slot() {
        assert!(Metrics::frame_slot("heartbeat").is_some());
        assert!(Metrics::frame_slot("no.such.kind").is_none());
        let metrics = Metrics::default();
        metrics.frame_handled(Metrics::frame_slot("heartbeat").unwrap(), Duration::ZERO);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("rm_agent_frame_handling_seconds_count{kind=\"heartbeat\"} 1"));
        assert!(!out.contains("kind=\"log.stream\""));
    }
}
