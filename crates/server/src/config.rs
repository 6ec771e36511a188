//! Server settings that are not part of the store.

use std::time::Duration;

/// Backups that may run at once into one shared repository, by default.
pub const DEFAULT_BACKUPS_PER_REPOSITORY: u32 = 4;

/// With a shared store: how often a server renews its registration and
/// leases, by default.
pub const DEFAULT_CLUSTER_RENEW: Duration = Duration::from_secs(5);

/// With a shared store: how long a registration or lease lasts unrenewed,
/// by default (four renewals, so one slow renewal loses nothing).
pub const DEFAULT_CLUSTER_EXPIRY: Duration = Duration::from_secs(20);

/// How the server behaves; built by the binary from flags and `RM_*` vars.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The URL agents and browsers reach this server at (no trailing slash),
    /// used in enrolment commands and upgrade links.
    pub public_url: String,
    /// Seconds between agent heartbeats, pushed to agents in `config.update`.
    pub heartbeat_seconds: u32,
    /// How long a new agent connection may take to send `hello`.
    pub hello_timeout: Duration,
    /// Lifetime of a login session.
    pub session_ttl: Duration,
    /// Default lifetime of an enrolment token.
    pub enrollment_ttl: Duration,
    /// How long an agent that went away mid-job may take to come back
    /// before its jobs fail as interrupted; `None`: the idle timeout.
    pub lost_agent_grace: Option<Duration>,
    /// The fingerprint of the TLS certificate the server presents, when it
    /// serves HTTPS; enrolment commands carry it so agents can pin it.
    pub tls_fingerprint: Option<rm_core::fingerprint::CertFingerprint>,
    /// The longest an API request may take before it is answered `503`
    /// (live event streams excepted): a database locked elsewhere or a very
    /// slow disk gets callers an answer, not a hung connection.
    pub request_timeout: Duration,
    /// How many backups may run at once into one repository shared by
    /// several hosts (restic allows parallel backups; each costs the
    /// backend bandwidth and the repository lock checks).
    pub backups_per_repository: u32,
    /// How often a still-firing alert nobody acknowledged is sent again.
    pub alert_repeat: Duration,
    /// After the server starts, how long hosts get to reconnect and report
    /// before what happened while it was away (offline, stale) can fire.
    pub alert_grace: Duration,
    /// The bearer token `/metrics` requires; `None`: the page is open, as
    /// `/healthz` is (see docs/security.md).
    pub metrics_token: Option<crate::MetricsToken>,
    /// The agent binary served for this server's own platform; `None`: the
    /// server's own executable (one binary is both).
    pub agent_binary: Option<std::path::PathBuf>,
    /// A folder of `linux-<arch>` agent binaries for the other platforms
    /// (`--agent-binaries`).
    pub agent_binaries: Option<std::path::PathBuf>,
    /// How the other servers on one database reach this one
    /// (`--internal-url`); `None`: `http(s)://` and the address it listens
    /// on. Only used when the store is shared (PostgreSQL).
    pub internal_url: Option<String>,
    /// With a shared store: how often the server renews its registration
    /// and its leases.
    pub cluster_renew: Duration,
    /// With a shared store: how long a registration or lease lasts without
    /// renewal, after which the server counts as dead and another takes
    /// over its leases and agents. Several renewals long, so one slow
    /// renewal loses nothing.
    pub cluster_expiry: Duration,
}

impl ServerConfig {
    /// Defaults for a server reachable at `public_url`.
    pub fn new(public_url: impl Into<String>) -> ServerConfig {
        ServerConfig {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            heartbeat_seconds: rm_protocol::DEFAULT_HEARTBEAT_SECS,
            hello_timeout: Duration::from_secs(rm_protocol::HELLO_TIMEOUT_SECS),
            session_ttl: Duration::from_secs(12 * 3600),
            enrollment_ttl: Duration::from_secs(3600),
            lost_agent_grace: None,
            tls_fingerprint: None,
            request_timeout: Duration::from_secs(60),
            backups_per_repository: DEFAULT_BACKUPS_PER_REPOSITORY,
            alert_repeat: Duration::from_secs(24 * 3600),
            alert_grace: Duration::from_secs(90),
            metrics_token: None,
            agent_binary: None,
            agent_binaries: None,
            internal_url: None,
            cluster_renew: DEFAULT_CLUSTER_RENEW,
            cluster_expiry: DEFAULT_CLUSTER_EXPIRY,
        }
    }

    /// A connection silent for this long is closed: three heartbeats and a
    /// little slack for a slow network.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.heartbeat_seconds) * 3 + 5)
    }

    /// How long an agent that went away mid-job may take to come back
    /// (by default as long as a silent connection is given).
    pub fn lost_agent_grace(&self) -> Duration {
        self.lost_agent_grace.unwrap_or_else(|| self.idle_timeout())
    }

    /// Where an agent that is too old is sent.
    pub fn upgrade_url(&self) -> String {
        format!("{}/docs/upgrading", self.public_url)
    }
}
