//! The server's own counters and timings, recorded as things happen and
//! encoded at each scrape.
//!
//! The timings are fixed-bucket histograms of atomic counters: recording one
//! costs a few atomic adds and no lock, so every agent frame can be timed.
//! `prometheus-client`'s own `Histogram` takes a mutex per observation, so
//! these stay ours and only their encoding goes through the crate
//! ([`MetricEncoder::encode_histogram`]); its counters are plain atomics and
//! are used as they are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use rm_protocol::Message;

use crate::storage::StorageHealth;

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

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Encodes the `_bucket`, `_sum` and `_count` samples. The counts are
    /// read one by one while others may record: `_count` is the sum of the
    /// buckets as read, so the page is always consistent in itself.
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.buckets)
            .map(|(le, count)| (le, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
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
    last_seen_written: Counter,
    /// Accepted `hello`s (connections), over the server's life.
    hellos: Counter,
    /// Login passwords verified (argon2 runs), right or wrong.
    login_checks: Counter,
    /// Login attempts refused by the limiter before any check.
    login_throttled: Counter,
    /// Failed bearer-token checks answered with 429.
    token_throttled: Counter,
    /// Signals to the other servers dropped on a full queue.
    cluster_signals_dropped: Counter,
    /// Snapshot downloads that started streaming to a browser.
    downloads: Counter,
    /// Bytes of snapshot downloads passed on to browsers.
    download_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            frames: Message::KINDS.iter().map(|_| Histogram::new()).collect(),
            last_seen_flush: Histogram::new(),
            last_seen_written: Counter::default(),
            hellos: Counter::default(),
            login_checks: Counter::default(),
            login_throttled: Counter::default(),
            token_throttled: Counter::default(),
            cluster_signals_dropped: Counter::default(),
            downloads: Counter::default(),
            download_bytes: Counter::default(),
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
        self.last_seen_written.inc_by(hosts as u64);
    }

    /// Counts a signal to the other servers dropped on a full queue.
    pub(crate) fn cluster_signal_dropped(&self) {
        self.cluster_signals_dropped.inc();
    }

    /// Counts a snapshot download that started streaming, and returns the
    /// counter of its bytes (shared: each relay adds what it passed on).
    pub(crate) fn download_started(&self) -> Counter {
        self.downloads.inc();
        self.download_bytes.clone()
    }

    /// Counts an accepted `hello`.
    pub(crate) fn hello_accepted(&self) {
        self.hellos.inc();
    }

    /// Counts a verified login password.
    pub(crate) fn login_password_checked(&self) {
        self.login_checks.inc();
    }

    /// Counts a login refused by the limiter.
    pub(crate) fn login_throttled(&self) {
        self.login_throttled.inc();
    }

    /// Counts a failed bearer-token check answered with 429.
    pub(crate) fn token_throttled(&self) {
        self.token_throttled.inc();
    }

    /// Encodes every counter and timing. Counter names are given without
    /// `_total`: the encoder adds it, as the format wants.
    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, counter) in [
            (
                "rm_login_password_checks",
                "Login passwords verified (right or wrong) since the server started.",
                &self.login_checks,
            ),
            (
                "rm_login_throttled",
                "Login attempts refused by the login limiter (429/503) without a check.",
                &self.login_throttled,
            ),
            (
                "rm_bearer_auth_throttled",
                "Failed bearer-token checks answered with 429 (an address over its burst).",
                &self.token_throttled,
            ),
            (
                "rm_agent_hellos",
                "Agent connections accepted (hello) since the server started.",
                &self.hellos,
            ),
            (
                "rm_cluster_signals_dropped",
                "Signals to the other servers dropped because their queue was full (what they asked is done at the next resync).",
                &self.cluster_signals_dropped,
            ),
            (
                "rm_snapshot_downloads",
                "Snapshot downloads (files or folders) that started streaming to a browser.",
                &self.downloads,
            ),
            (
                "rm_snapshot_download_bytes",
                "Bytes of snapshot downloads passed on from agents to browsers.",
                &self.download_bytes,
            ),
        ] {
            counter.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        let mut frames = encoder.encode_descriptor(
            "rm_agent_frame_handling_seconds",
            "Time from an agent frame's arrival to the end of its handling, by kind.",
            None,
            MetricType::Histogram,
        )?;
        for (kind, histogram) in Message::KINDS.iter().zip(&self.frames) {
            // Kinds never received (most server-to-agent ones) stay out.
            if histogram.count() > 0 {
                histogram.encode(frames.encode_family(&[("kind", *kind)])?)?;
            }
        }
        self.last_seen_flush.encode(encoder.encode_descriptor(
            "rm_last_seen_flush_seconds",
            "Time to write one batch of agent last-seen times to the store.",
            None,
            MetricType::Histogram,
        )?)?;
        self.last_seen_written.encode(encoder.encode_descriptor(
            "rm_last_seen_written",
            "Host last-seen times written to the store.",
            None,
            MetricType::Counter,
        )?)
    }
}

/// Encodes `rm_store_writable` and `rm_store_write_failures_total`.
pub(crate) fn encode_storage(
    health: &StorageHealth,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(i64::from(health.episode().is_none())).encode(encoder.encode_descriptor(
        "rm_store_writable",
        "Whether the server can write its database (0 during a storage fault).",
        None,
        MetricType::Gauge,
    )?)?;
    let mut failures = encoder.encode_descriptor(
        "rm_store_write_failures",
        "Store calls that failed because of the machine (full disk, read-only, I/O error, lock held).",
        None,
        MetricType::Counter,
    )?;
    for (fault, count) in health.failures() {
        ConstCounter::new(count).encode(failures.encode_family(&[("fault", fault.as_str())])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode_page as page;

    #[test]
    fn buckets_are_cumulative_and_end_at_inf() {
        let metrics = Metrics::default();
        let slot = Metrics::frame_slot("heartbeat").unwrap();
        for d in [
            Duration::from_micros(3),
            Duration::from_micros(3),
            Duration::from_millis(30),
            Duration::from_secs(60),
        ] {
            metrics.frame_handled(slot, d);
        }
        let metrics = std::sync::Arc::new(metrics);
        let out = page(move |e| metrics.encode(e));
        let x = "rm_agent_frame_handling_seconds";
        assert!(out.contains(&format!(
            "{x}_bucket{{kind=\"heartbeat\",le=\"2e-06\"}} 0\n"
        )));
        assert!(out.contains(&format!(
            "{x}_bucket{{kind=\"heartbeat\",le=\"5e-06\"}} 2\n"
        )));
        assert!(out.contains(&format!("{x}_bucket{{kind=\"heartbeat\",le=\"0.05\"}} 3\n")));
        assert!(out.contains(&format!("{x}_bucket{{kind=\"heartbeat\",le=\"1\"}} 3\n")));
        assert!(out.contains(&format!("{x}_bucket{{kind=\"heartbeat\",le=\"+Inf\"}} 4\n")));
        assert!(out.contains(&format!("{x}_count{{kind=\"heartbeat\"}} 4\n")));
        assert!(
            out.contains(&format!("{x}_sum{{kind=\"heartbeat\"}} 60.030006\n")),
            "{out}"
        );
        assert_eq!(out.matches("le=\"+Inf\"").count(), 2, "one per histogram");
        // Kinds never received stay out.
        assert!(!out.contains("kind=\"log.stream\""));
        assert!(out.contains("# TYPE rm_agent_frame_handling_seconds histogram\n"));
        assert!(out.contains("# TYPE rm_agent_hellos_total counter\nrm_agent_hellos_total 0\n"));
        assert!(
            out.contains("rm_last_seen_flush_seconds_count 0\n"),
            "{out}"
        );
    }

    #[test]
    fn every_known_kind_has_a_slot() {
        assert!(Metrics::frame_slot("heartbeat").is_some());
        assert!(Metrics::frame_slot("no.such.kind").is_none());
    }

    #[test]
    fn storage_health_is_encoded() {
        let health = std::sync::Arc::new(StorageHealth::default());
        health.failed(
            "x",
            &rm_store::StoreError::Unavailable {
                fault: rm_store::StorageFault::DiskFull,
                source: "disk full".into(),
            },
        );
        let shown = health.clone();
        let out = page(move |e| encode_storage(&shown, e));
        assert!(out.contains("rm_store_writable 0\n"), "{out}");
        assert!(out.contains("rm_store_write_failures_total{fault=\"disk_full\"} 1\n"));
        assert!(out.contains("rm_store_write_failures_total{fault=\"busy\"} 0\n"));
        health.succeeded();
        let out = page(move |e| encode_storage(&health, e));
        assert!(out.contains("rm_store_writable 1\n"), "{out}");
    }
}
