//! What the fleet looks like at a scrape: host counts, one set of series
//! per host, firing alerts by kind and notification deliveries by channel.
//! Read from the store first ([`super::read_fleet`]), then encoded from
//! these plain values, so the encoding is tested without a server.

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use rm_store::HostCounts;

/// Every alert kind (DESIGN §7): each has an `rm_alerts_firing` series,
/// 0 when none fires, so a rule on one kind never sees "no data".
pub(crate) const ALERT_KINDS: [&str; 5] = [
    "backup_stale",
    "job_failed",
    "host_offline",
    "check_failed",
    "drill_failed",
];

/// One host's series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostSeries {
    /// Its id (`host_id` label).
    pub(crate) id: String,
    /// Its display name (`host` label; any characters a name may hold).
    pub(crate) name: String,
    /// Whether its agent is connected.
    pub(crate) online: bool,
    /// A successful backup within its effective freshness.
    pub(crate) protected: bool,
    /// When its last successful backup finished; `None`: never (the
    /// series is left out, not 0, so "never" does not read as 1970).
    pub(crate) last_success: Option<DateTime<Utc>>,
    /// That backup's job: how long it ran.
    pub(crate) last_duration: Option<f64>,
    /// That backup's size (bytes restic processed).
    pub(crate) last_size: Option<u64>,
    /// New data that backup added to the repository.
    pub(crate) last_added: Option<u64>,
    /// When its last successful restore drill finished; `None`: never.
    pub(crate) last_drill_success: Option<DateTime<Utc>>,
}

/// One notification channel's delivery counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelCounters {
    /// Its name (`channel` label).
    pub(crate) name: String,
    /// Notifications delivered, over the channel's life.
    pub(crate) delivered: u64,
    /// Delivery attempts that failed, over the channel's life.
    pub(crate) failed: u64,
    /// Whether its deliveries are failing now (the last attempt failed).
    pub(crate) failing: bool,
}

/// Everything about the fleet one scrape shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fleet {
    /// Agent WebSocket connections open now.
    pub(crate) agents_connected: u64,
    /// Host counts; `None` when the store could not be read (those
    /// series are left out, the rest of the page is not).
    pub(crate) counts: Option<HostCounts>,
    /// Per-host series; `None` when the store could not be read.
    pub(crate) hosts: Option<Vec<HostSeries>>,
    /// Firing alerts per kind; kinds missing here count 0.
    pub(crate) alerts_firing: Vec<(String, u64)>,
    /// Notification channels.
    pub(crate) channels: Vec<ChannelCounters>,
}

impl Fleet {
    /// Encodes the fleet's series.
    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Info::new([
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            (
                "protocol",
                rm_protocol::CURRENT_PROTOCOL_VERSION.to_string(),
            ),
        ])
        .encode(encoder.encode_descriptor(
            "rm_build",
            "Version of this server and the protocol it speaks.",
            None,
            MetricType::Info,
        )?)?;
        gauge(
            encoder,
            "rm_agents_connected",
            "Agent WebSocket connections open now.",
            self.agents_connected,
        )?;
        if let Some(counts) = self.counts {
            let mut hosts = encoder.encode_descriptor(
                "rm_hosts",
                "Enrolled hosts by connection state.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [("online", counts.online), ("offline", counts.offline())] {
                ConstGauge::new(n).encode(hosts.encode_family(&[("state", state)])?)?;
            }
            gauge(
                encoder,
                "rm_hosts_not_backed_up",
                "Hosts not protected: no backup that saved a snapshot within each host's own freshness (its own, else its policy's, else 26 h).",
                counts.not_backed_up,
            )?;
            gauge(
                encoder,
                "rm_hosts_unconfigured",
                "Hosts with neither a repository nor a schedule, of their own or from a policy.",
                counts.unconfigured,
            )?;
        }
        if let Some(hosts) = &self.hosts {
            encode_hosts(encoder, hosts)?;
        }
        self.encode_alerts(encoder)?;
        self.encode_channels(encoder)
    }

    fn encode_alerts(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut firing = encoder.encode_descriptor(
            "rm_alerts_firing",
            "Alerts firing now, by kind (acknowledged ones too: they still fire).",
            None,
            MetricType::Gauge,
        )?;
        let count_of = |kind: &str| {
            self.alerts_firing
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, n)| *n)
                .sum::<u64>()
        };
        for kind in ALERT_KINDS {
            ConstGauge::new(count_of(kind)).encode(firing.encode_family(&[("kind", kind)])?)?;
        }
        // A kind this list does not know yet still shows, once.
        let mut others: Vec<&str> = self
            .alerts_firing
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !ALERT_KINDS.contains(k))
            .collect();
        others.sort_unstable();
        others.dedup();
        for kind in others {
            ConstGauge::new(count_of(kind)).encode(firing.encode_family(&[("kind", kind)])?)?;
        }
        Ok(())
    }

    fn encode_channels(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut delivered = encoder.encode_descriptor(
            "rm_notifications_delivered",
            "Notifications a channel's receiver accepted.",
            None,
            MetricType::Counter,
        )?;
        for c in &self.channels {
            ConstCounter::new(c.delivered)
                .encode(delivered.encode_family(&[("channel", c.name.as_str())])?)?;
        }
        let mut failed = encoder.encode_descriptor(
            "rm_notifications_failed",
            "Notification delivery attempts that failed (each retry counts).",
            None,
            MetricType::Counter,
        )?;
        for c in &self.channels {
            ConstCounter::new(c.failed)
                .encode(failed.encode_family(&[("channel", c.name.as_str())])?)?;
        }
        let mut failing = encoder.encode_descriptor(
            "rm_notification_channel_failing",
            "1 while a channel's deliveries fail (its last attempt failed), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for c in &self.channels {
            ConstGauge::new(i64::from(c.failing))
                .encode(failing.encode_family(&[("channel", c.name.as_str())])?)?;
        }
        Ok(())
    }
}

/// One unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A host's labels.
fn labels(h: &HostSeries) -> [(&'static str, &str); 2] {
    [("host_id", h.id.as_str()), ("host", h.name.as_str())]
}

/// The per-host families, each with one series per host that has a value.
/// Label values go through the encoder, which escapes `\`, `"` and line
/// feeds as the exposition format says.
fn encode_hosts(
    encoder: &mut DescriptorEncoder,
    hosts: &[HostSeries],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "rm_host_online",
        "1 while the host's agent is connected, else 0.",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        ConstGauge::new(i64::from(h.online)).encode(family.encode_family(&labels(h))?)?;
    }
    let mut family = encoder.encode_descriptor(
        "rm_host_protected",
        "1 when the host's last successful backup is within its effective freshness, else 0.",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        ConstGauge::new(i64::from(h.protected)).encode(family.encode_family(&labels(h))?)?;
    }
    let mut family = encoder.encode_descriptor(
        "rm_host_last_backup_success_timestamp_seconds",
        "When the host's last backup that saved a snapshot finished (Unix time); absent for a host that never had one.",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        if let Some(at) = h.last_success {
            let seconds = at.timestamp_millis() as f64 / 1000.0;
            ConstGauge::new(seconds).encode(family.encode_family(&labels(h))?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "rm_host_last_backup_duration_seconds",
        "How long the host's last successful backup job ran (start to end).",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        if let Some(seconds) = h.last_duration {
            ConstGauge::new(seconds).encode(family.encode_family(&labels(h))?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "rm_host_last_backup_size_bytes",
        "Bytes the host's last successful backup processed (restic's total_bytes_processed).",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        if let Some(bytes) = h.last_size {
            ConstGauge::new(bytes).encode(family.encode_family(&labels(h))?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "rm_host_last_backup_added_bytes",
        "New data the host's last successful backup added to its repository (restic's data_added).",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        if let Some(bytes) = h.last_added {
            ConstGauge::new(bytes).encode(family.encode_family(&labels(h))?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "rm_host_last_drill_success_timestamp_seconds",
        "When the host's last successful restore drill finished (Unix time); absent for a host that never had one.",
        None,
        MetricType::Gauge,
    )?;
    for h in hosts {
        if let Some(at) = h.last_drill_success {
            let seconds = at.timestamp_millis() as f64 / 1000.0;
            ConstGauge::new(seconds).encode(family.encode_family(&labels(h))?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode_page;

    fn page(fleet: Fleet) -> String {
        encode_page(move |e| fleet.encode(e))
    }

    fn host(id: &str, name: &str) -> HostSeries {
        HostSeries {
            id: id.to_owned(),
            name: name.to_owned(),
            online: true,
            protected: true,
            last_success: DateTime::from_timestamp(1_700_000_000, 500_000_000),
            last_duration: Some(12.5),
            last_size: Some(4096),
            last_added: Some(512),
            last_drill_success: DateTime::from_timestamp(1_700_000_100, 0),
        }
    }

    #[test]
    fn host_names_are_escaped_as_the_format_says() {
        let out = page(Fleet {
            hosts: Some(vec![host("01H", "say \"hi\" \\ to\nme")]),
            ..Fleet::default()
        });
        assert!(
            out.contains(
                "rm_host_online{host_id=\"01H\",host=\"say \\\"hi\\\" \\\\ to\\nme\"} 1\n"
            ),
            "{out}"
        );
        // No raw line feed inside a sample: every line is whole.
        for line in out.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("rm_"),
                "broken line {line:?} in\n{out}"
            );
        }
    }

    #[test]
    fn per_host_values_and_absent_ones() {
        let never = HostSeries {
            online: false,
            protected: false,
            last_success: None,
            last_duration: None,
            last_size: None,
            last_added: None,
            last_drill_success: None,
            ..host("02H", "never")
        };
        let out = page(Fleet {
            hosts: Some(vec![host("01H", "web"), never]),
            ..Fleet::default()
        });
        let l = "{host_id=\"01H\",host=\"web\"}";
        assert!(out.contains(&format!("rm_host_protected{l} 1\n")), "{out}");
        assert!(out.contains(&format!(
            "rm_host_last_backup_success_timestamp_seconds{l} 1700000000.5\n"
        )));
        assert!(out.contains(&format!("rm_host_last_backup_duration_seconds{l} 12.5\n")));
        assert!(out.contains(&format!("rm_host_last_backup_size_bytes{l} 4096\n")));
        assert!(out.contains(&format!("rm_host_last_backup_added_bytes{l} 512\n")));
        assert!(out.contains(&format!(
            "rm_host_last_drill_success_timestamp_seconds{l} 1700000100.0\n"
        )));
        let n = "{host_id=\"02H\",host=\"never\"}";
        assert!(out.contains(&format!("rm_host_online{n} 0\n")));
        assert!(out.contains(&format!("rm_host_protected{n} 0\n")));
        assert!(!out.contains(&format!("rm_host_last_backup_success_timestamp_seconds{n}")));
        assert!(!out.contains(&format!("rm_host_last_backup_size_bytes{n}")));
        assert!(!out.contains(&format!("rm_host_last_drill_success_timestamp_seconds{n}")));
    }

    #[test]
    fn every_alert_kind_is_present_and_unknown_kinds_show_once() {
        let out = page(Fleet::default());
        for kind in ALERT_KINDS {
            assert!(
                out.contains(&format!("rm_alerts_firing{{kind=\"{kind}\"}} 0\n")),
                "{out}"
            );
        }
        let out = page(Fleet {
            alerts_firing: vec![
                ("job_failed".to_owned(), 3),
                ("disk_weird".to_owned(), 1),
                ("disk_weird".to_owned(), 1),
            ],
            ..Fleet::default()
        });
        assert!(
            out.contains("rm_alerts_firing{kind=\"job_failed\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("rm_alerts_firing{kind=\"backup_stale\"} 0\n"));
        assert_eq!(out.matches("kind=\"disk_weird\"").count(), 1, "{out}");
        assert!(out.contains("rm_alerts_firing{kind=\"disk_weird\"} 2\n"));
    }

    #[test]
    fn channel_counters() {
        let out = page(Fleet {
            channels: vec![
                ChannelCounters {
                    name: "ops \"pager\"".to_owned(),
                    delivered: 7,
                    failed: 2,
                    failing: true,
                },
                ChannelCounters {
                    name: "mail".to_owned(),
                    delivered: 0,
                    failed: 0,
                    failing: false,
                },
            ],
            ..Fleet::default()
        });
        assert!(
            out.contains("rm_notifications_delivered_total{channel=\"ops \\\"pager\\\"\"} 7\n"),
            "{out}"
        );
        assert!(out.contains("rm_notifications_failed_total{channel=\"ops \\\"pager\\\"\"} 2\n"));
        assert!(out.contains("rm_notification_channel_failing{channel=\"ops \\\"pager\\\"\"} 1\n"));
        assert!(out.contains("rm_notification_channel_failing{channel=\"mail\"} 0\n"));
        assert!(out.contains("# TYPE rm_notifications_delivered_total counter\n"));
    }

    #[test]
    fn host_counts_and_build_info() {
        let out = page(Fleet {
            agents_connected: 3,
            counts: Some(HostCounts {
                total: 5,
                online: 3,
                not_backed_up: 1,
                unconfigured: 2,
            }),
            ..Fleet::default()
        });
        assert!(out.contains("rm_agents_connected 3\n"), "{out}");
        assert!(out.contains("rm_hosts{state=\"online\"} 3\n"));
        assert!(out.contains("rm_hosts{state=\"offline\"} 2\n"));
        assert!(out.contains("rm_hosts_not_backed_up 1\n"));
        assert!(out.contains("rm_hosts_unconfigured 2\n"));
        assert!(out.contains("# TYPE rm_build_info gauge\nrm_build_info{version=\""));
        // Without counts (store unreadable) those series are left out.
        let out = page(Fleet::default());
        assert!(!out.contains("rm_hosts{"));
        assert!(out.contains("rm_agents_connected 0\n"));
    }
}
