//! The restic-manager agent: enrolment, the WebSocket session to the server
//! (over TLS when the server URL is https://) with reconnects and backoff,
//! agent token rotation, and the state directory that lets the agent keep
//! working while the server is away.
//!
//! The binary calls [`enroll`] for `restic-manager agent enroll` and [`run`]
//! for `restic-manager agent run`; everything else is internal.

pub mod backoff;
mod browse;
mod download;
mod enroll;
mod error;
mod handler;
mod hooks;
#[cfg(test)]
mod hostile_props;
mod inbound;
mod jobs;
mod restore_guard;
mod rotation;
mod run;
mod scheduler;
mod server_url;
mod session;
mod spool;
pub mod state;
mod tls;
mod upgrade;
mod verification;

pub use backoff::RESTART_SPREAD;
pub use enroll::{enroll, EnrollOptions, Enrolled};
pub use error::AgentError;
pub use hooks::DEFAULT_HOOK_TIMEOUT;
pub use jobs::DEFAULT_DRILL_DIR;
pub use run::{run, RunOptions, REVOKED_RETRY};

pub use tls::{TrustOptions, TrustSettings};
pub use upgrade::{
    CONNECT_DEADLINE as UPGRADE_CONNECT_DEADLINE, DEADLINE_ENV as UPGRADE_DEADLINE_ENV,
    REPORTED_VERSION_ENV,
};

/// This machine's host name, as sent at enrolment and in `hello`.
pub(crate) fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The `User-Agent` for HTTP requests, so server logs show agent versions.
pub(crate) fn user_agent() -> String {
    format!("restic-manager-agent/{}", env!("CARGO_PKG_VERSION"))
}
