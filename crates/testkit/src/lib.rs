//! Test support for restic-manager's integration tests: everything a test
//! needs to stand up real parts and talk to them.
//!
//! - [`TestServer`]: the real server on 127.0.0.1 port 0 with a fresh SQLite
//!   database in a temporary directory.
//! - [`Api`]: an HTTP client for `/api/v1`, logged in or not.
//! - [`RawAgent`]: a hand-driven WebSocket client for protocol tests.
//! - [`AgentProcess`]: the real `restic-manager agent run` as a child process,
//!   with its log captured.
//! - [`ServerProcess`]: the real `restic-manager server` as a child process,
//!   to kill (`-9`) or stop and start again on the same database; several
//!   of them on one PostgreSQL database.
//! - [`TcpProxy`]: a round-robin TCP load balancer in front of servers.
//! - [`e2e::Host`]: one host end to end (server, real agent, real restic,
//!   its repository) for the restic-facing tests.
//! - [`fixtures`]: generated source trees and byte-for-byte comparison.
//! - [`Browser`]: Debian's headless Chromium over WebDriver, for UI tests.
//! - [`rclone::RcloneServer`]: a REST repository server on 127.0.0.1.
//! - [`HttpReceiver`] and [`SmtpReceiver`]: real receivers of notifications
//!   (an HTTP server recording requests, Debian's aiosmtpd).
//! - [`SmallDisk`]: a tmpfs or ext4 image mounted for a test (root only).
//! - [`TestCert`]: a self-signed certificate for a TLS test server.
//! - [`fleet`]: many hosts enrolled at once and simulated agents speaking
//!   the real protocol, for load tests.
//! - [`prometheus`]: a strict reader of `/metrics` pages (the text format),
//!   so a malformed page fails the test.
//! - [`http`]: `reqwest` clients (never `reqwest::Client::new()` directly).
//! - [`restic`]: which restic binary the tests run (`RM_TEST_RESTIC`), and
//!   the cached newer releases (0.18, 0.19) for tests that need each.
//! - [`store`]: a real SQLite store in a temporary directory and hosts
//!   put straight into it, for server parts tested without HTTP.
//! - [`wait_until`]: polling instead of sleeping; [`hostname`]: this
//!   machine's.
//!
//! Helpers return `anyhow::Result` so tests can `?` freely.

mod agent_process;
mod api;
pub mod browser;
mod child;
pub mod e2e;
pub mod fixtures;
pub mod fleet;
pub mod http;
pub mod prometheus;
mod proxy;
mod raw_agent;
pub mod rclone;
pub mod receiver;
pub mod restic;
mod server;
mod server_process;
mod small_disk;
pub mod store;
mod tls;
pub mod web;

use std::future::Future;
use std::time::Duration;

pub use agent_process::AgentProcess;
pub use api::Api;
pub use browser::Browser;
pub use proxy::TcpProxy;
pub use raw_agent::{hello, log_batch, RawAgent};
pub use receiver::{webhook_signature, HttpReceiver, ReceivedRequest, SmtpReceiver};
pub use rm_store_tests::{Backend, TestDatabase};
pub use server::{RunningAgent, StoppedServer, TestServer, ADMIN_PASSWORD};
pub use server_process::{
    all_pids, children_running, process_cpu, process_written, MemorySampler, ProcStat,
    ProcessMemory, ServerProcess,
};
pub use small_disk::SmallDisk;
pub use tls::TestCert;
pub use web::WebSession;

/// Polls `check` every 50 ms until it returns true, failing after `limit`
/// with a message naming `what` was awaited.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This machine's hostname as the kernel has it: what an agent reports
/// and hands its hooks.
pub fn hostname() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) => name.trim().to_owned(),
        Err(e) => panic!("reading /proc/sys/kernel/hostname: {e}"),
    }
}
