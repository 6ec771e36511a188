//! Whether the server can write its database, and what it does when it
//! cannot.
//!
//! A full disk, a read-only file system, a failing disk or a lock held by
//! another process stops every write at once, and every part of the server
//! notices: the API, the agent endpoint, the background loops. This module
//! keeps one record of it ([`StorageHealth`]), so that
//!
//! * each background loop logs the fault once when it starts and once when
//!   it clears, not every second;
//! * `/readyz` answers 503 and `/metrics` says `rm_store_writable 0` while
//!   it lasts, so a load balancer and Prometheus see it;
//! * a probe writes a row every few seconds, so recovery is noticed even
//!   when nothing else writes.

mod health;

pub(crate) use health::readyz;
pub(crate) use health::{spawn_probe, StorageHealth};
