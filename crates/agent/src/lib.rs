//! The restic-manager agent: enrolment, the WebSocket session to the server
//! with reconnects and backoff, and the state directory that lets the agent
//! keep working while the server is away.
//!
//! The binary calls [`enroll`] for `restic-manager agent enroll` and [`run`]
//! for `restic-manager agent run`; everything else is internal.

pub mod backoff;
mod browse;
mod enroll;
mod error;
mod handler;
mod jobs;
mod run;
mod scheduler;
mod server_url;
mod session;
pub mod state;

pub use enroll::{enroll, EnrollOptions, Enrolled};
pub use error::AgentError;
pub use run::{run, RunOptions, REVOKED_RETRY};

/// This machine's host name, as sent at enrolment and in `hello`.
pub(crate) fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The `User-Agent` for HTTP requests, so server logs show agent versions.
pub(crate) fn user_agent() -> String {
    format!("restic-manager-agent/{}", env!("CARGO_PKG_VERSION"))
}
