//! The wire contract between a restic-manager server and its agents, plus the
//! JSON types of the operator-facing HTTP API.
//!
//! This crate is deliberately pure: serde types and the rules for turning a
//! WebSocket text frame into a typed [`Message`] and back. It does no I/O, so
//! the server, the agent, the tests and the fuzzers all share one definition
//! of what may cross the wire. `docs/protocol.md` is the prose version.

pub mod api;
pub mod downloads;
pub mod drill;
mod envelope;
mod messages;
pub mod params;
pub mod upgrade;

pub use envelope::{DecodeError, Envelope, Frame};
pub use messages::*;

/// The protocol version this build speaks.
pub const CURRENT_PROTOCOL_VERSION: u32 = 1;

/// The oldest agent protocol version the server still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket message either side accepts, in bytes. A bigger frame
/// closes that one connection (and only that one).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Seconds the server waits for `hello` after the upgrade.
pub const HELLO_TIMEOUT_SECS: u64 = 10;

/// Default seconds between agent heartbeats.
pub const DEFAULT_HEARTBEAT_SECS: u32 = 30;

/// WebSocket close codes the server uses, so an agent can tell why it was
/// closed without parsing reason text.
pub mod close_code {
    /// The peer broke the protocol (bad handshake, protocol too old).
    pub const POLICY: u16 = 1008;
    /// The server is shutting down; reconnect later, with jitter.
    pub const GOING_AWAY: u16 = 1001;
    /// The host was deleted or its token revoked: do not come back with it.
    pub const REVOKED: u16 = 4001;
    /// A newer connection for the same host replaced this one.
    pub const REPLACED: u16 = 4002;
    /// No frame arrived within the idle limit (three missed heartbeats).
    pub const IDLE: u16 = 4003;
}
