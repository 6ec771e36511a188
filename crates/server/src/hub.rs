//! The registry of live agent connections: at most one per host.
//!
//! A connection is registered after its `hello` is accepted and removed when
//! its socket ends — but only if it is still the registered one, so a slow
//! exit of an old socket cannot unregister the fast reconnect that replaced
//! it. Frames for an agent go through a bounded queue owned by its session
//! task; closing a connection is a signal the session acts on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_core::HostId;
use rm_protocol::Frame;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

/// Frames waiting for one agent; a full queue means the agent is not
/// reading, and the sender gets [`SendError::Full`] rather than waiting.
pub(crate) const OUTBOUND_QUEUE: usize = 256;

/// The receiving end of a connection's queue. Frames travel boxed: the
/// channel allocates its slots in blocks of 32 up front, and 32 inline
/// frames (200 bytes each) would cost every idle connection 6 KiB — 60 MB
/// for ten thousand agents — where 32 pointers cost 256 bytes.
pub(crate) type Outbound = mpsc::Receiver<Box<Frame>>;

/// Why a frame could not be queued for an agent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The host has no live connection.
    #[error("the host's agent is not connected")]
    NotConnected,
    /// The agent is not keeping up with its queue.
    #[error("the host's agent is not reading its messages")]
    Full,
}

/// One live agent connection, as the rest of the server sees it.
#[derive(Clone)]
pub struct AgentConn {
    id: Ulid,
    outbound: mpsc::Sender<Box<Frame>>,
    close: Arc<CloseSignal>,
}

/// Asks a session to send a close frame and end.
pub(crate) struct CloseSignal {
    token: CancellationToken,
    reason: Mutex<Option<(u16, String)>>,
}

impl CloseSignal {
    fn new() -> CloseSignal {
        CloseSignal {
            token: CancellationToken::new(),
            reason: Mutex::new(None),
        }
    }

    /// Resolves once a close was asked for.
    pub(crate) async fn requested(&self) {
        self.token.cancelled().await
    }

    /// The code and reason of the first close request.
    pub(crate) fn reason(&self) -> Option<(u16, String)> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

impl AgentConn {
    /// A connection handle and the receiving half of its queue.
    pub(crate) fn new() -> (AgentConn, Outbound, Arc<CloseSignal>) {
        let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let close = Arc::new(CloseSignal::new());
        (
            AgentConn {
                id: Ulid::new(),
                outbound,
                close: close.clone(),
            },
            rx,
            close,
        )
    }

    /// This connection's id (recorded in the store as the host's owner).
    pub fn id(&self) -> Ulid {
        self.id
    }

    /// Queues a frame without waiting.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.outbound
            .try_send(Box::new(frame))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
            })
    }

    /// Whether a close was asked for: nothing more should be acknowledged
    /// on this connection (after a storage failure, the agent must replay
    /// what it sent since, not drop it).
    pub fn is_closing(&self) -> bool {
        self.close.token.is_cancelled()
    }

    /// Asks the session to close with `code` and `reason`. The first
    /// request wins.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut r) = self.close.reason.lock() {
            if r.is_none() {
                *r = Some((code, reason.to_owned()));
            }
        }
        self.close.token.cancel();
    }
}

/// Lock stripes for [`Hub::push_lock`].
const PUSH_STRIPES: usize = 64;

/// The push-lock stripe of `host`.
fn stripe(host: HostId) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut hasher);
    (hasher.finish() % PUSH_STRIPES as u64) as usize
}

/// All live agent connections.
pub struct Hub {
    conns: Mutex<HashMap<HostId, AgentConn>>,
    emptied: Notify,
    push_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            conns: Mutex::default(),
            emptied: Notify::default(),
            push_locks: (0..PUSH_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl Hub {
    /// Orders "read the host's settings and push them to its connection"
    /// between a handshake (read, queue the initial pushes, register) and
    /// a task that changed the settings (store, then push to the
    /// registered connection): the change is then either read by the
    /// handshake or pushed to the connection it registered, never lost in
    /// between. Held briefly; hosts share a few stripes.
    pub(crate) async fn push_lock(&self, host: HostId) -> tokio::sync::MutexGuard<'_, ()> {
        self.push_locks[stripe(host)].lock().await
    }

    /// [`Hub::push_lock`] of every host in `hosts` at once: each stripe
    /// once, in stripe order, so two callers never wait on each other in a
    /// circle.
    pub(crate) async fn push_locks(
        &self,
        hosts: &[HostId],
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let stripes: std::collections::BTreeSet<usize> = hosts.iter().map(|h| stripe(*h)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.push_locks[s].lock().await);
        }
        guards
    }

    /// Registers `conn` as `host`'s connection, returning the one it replaced.
    pub(crate) fn register(&self, host: HostId, conn: AgentConn) -> Option<AgentConn> {
        self.conns
            .lock()
            .ok()
            .and_then(|mut c| c.insert(host, conn))
    }

    /// Removes `host`'s connection if it is still `conn_id`; returns whether
    /// it was.
    pub(crate) fn unregister(&self, host: HostId, conn_id: Ulid) -> bool {
        let Ok(mut conns) = self.conns.lock() else {
            return false;
        };
        let removed = match conns.get(&host) {
            Some(c) if c.id == conn_id => conns.remove(&host).is_some(),
            _ => false,
        };
        if conns.is_empty() {
            self.emptied.notify_waiters();
        }
        removed
    }

    /// `host`'s live connection.
    pub fn get(&self, host: HostId) -> Option<AgentConn> {
        self.conns.lock().ok().and_then(|c| c.get(&host).cloned())
    }

    /// Whether `host` has a live connection.
    pub fn is_connected(&self, host: HostId) -> bool {
        self.get(host).is_some()
    }

    /// How many agents are connected.
    pub fn connected(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Closes `host`'s connection, if any; returns whether there was one.
    pub fn disconnect(&self, host: HostId, code: u16, reason: &str) -> bool {
        match self.get(host) {
            Some(conn) => {
                conn.close(code, reason);
                true
            }
            None => false,
        }
    }

    /// Closes every connection (server shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        let conns: Vec<AgentConn> = match self.conns.lock() {
            Ok(c) => c.values().cloned().collect(),
            Err(_) => return,
        };
        for conn in conns {
            conn.close(code, reason);
        }
    }

    /// Waits until no connection is registered, or `limit` passes.
    pub async fn wait_empty(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.emptied.notified();
                if self.connected() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_connection_cannot_unregister_its_replacement() {
        let hub = Hub::default();
        let host = HostId::new();
        let (old, _rx_old, _) = AgentConn::new();
        let (new, _rx_new, _) = AgentConn::new();
        assert!(hub.register(host, old.clone()).is_none());
        let replaced = hub.register(host, new.clone());
        assert_eq!(replaced.map(|c| c.id()), Some(old.id()));
        assert!(!hub.unregister(host, old.id()));
        assert!(hub.is_connected(host));
        assert!(hub.unregister(host, new.id()));
        assert!(!hub.is_connected(host));
    }

    #[test]
    fn a_full_queue_is_reported_not_waited_on() {
        let (conn, _rx, _) = AgentConn::new();
        for _ in 0..OUTBOUND_QUEUE {
            conn.send(Frame::new(rm_protocol::Heartbeat {})).unwrap();
        }
        assert!(matches!(
            conn.send(Frame::new(rm_protocol::Heartbeat {})),
            Err(SendError::Full)
        ));
    }

    #[test]
    fn the_first_close_reason_wins() {
        let (conn, _rx, signal) = AgentConn::new();
        conn.close(4001, "deleted");
        conn.close(1001, "shutdown");
        assert_eq!(signal.reason(), Some((4001, "deleted".to_owned())));
    }
}
