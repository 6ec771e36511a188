//! Requests to an agent that wait for its answer — the one RPC mechanism
//! (`tree.list` today). A caller registers a waiter under a fresh ULID,
//! sends the request with that id, and waits for the reply, a timeout or
//! its own cancellation; whichever comes first. A reply nobody waits for
//! any more (it came too late) is dropped quietly, and a reply is accepted
//! only from the host the request went to.
//!
//! An agent connected to another server (several servers on one
//! database) is called through that server: the request travels as a
//! [`Signal::Call`], the holder makes the call as its own, stores the
//! answer in the database and signals [`Signal::Replied`]; the caller
//! takes the answer from the store and resolves its waiter with it, as if
//! the agent had answered here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rm_core::HostId;
use rm_protocol::{Frame, Message};
use tokio::sync::oneshot;
use ulid::Ulid;

use rm_protocol::{ErrorBody, ErrorCode};

use crate::cluster::bus::{self, Signal};
use crate::hub::{AgentConn, SendError};
use crate::state::AppState;

/// Time allowed, besides the agent's, for a call relayed through another
/// server (two signals and a database round trip).
const RELAY_ALLOWANCE: Duration = Duration::from_secs(5);
/// Longest wait a relayed call may ask of the holder.
const MAX_RELAYED_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// No answer in time.
    #[error("the agent did not answer within {0:?}")]
    TimedOut(Duration),
    /// The connection ended before the answer came.
    #[error("the agent disconnected before answering")]
    Disconnected,
}

struct Waiter {
    host: HostId,
    reply: oneshot::Sender<Frame>,
}

/// The registry of calls waiting for an answer.
#[derive(Default)]
pub struct Rpc {
    waiters: Mutex<HashMap<String, Waiter>>,
}

/// Removes a waiter however its call ends, including when the caller's
/// future is dropped (an HTTP client that went away).
struct Registration<'a> {
    rpc: &'a Rpc,
    id: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.rpc.waiters.lock() {
            waiters.remove(&self.id);
        }
    }
}

impl Rpc {
    /// Sends `request` to `host` over `conn` and waits up to `timeout` for
    /// the reply carrying the same envelope id.
    pub async fn call(
        &self,
        host: HostId,
        conn: &AgentConn,
        request: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Frame, RpcError> {
        self.call_with(host, timeout, |id| {
            conn.send(Frame::with_id(id, request))?;
            Ok(())
        })
        .await
    }

    /// Calls `host`'s agent through the server holding its connection
    /// (see the module's documentation). `timeout` is the agent's; the
    /// wait here allows for the way there and back.
    pub(crate) async fn call_elsewhere(
        &self,
        state: &AppState,
        host: HostId,
        request: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Frame, RpcError> {
        if !bus::running(state) {
            return Err(RpcError::Send(SendError::NotConnected));
        }
        let request = Frame::new(request).encode();
        self.call_with(host, timeout + RELAY_ALLOWANCE, |id| {
            bus::send(
                state,
                Signal::Call {
                    host,
                    id,
                    caller: state.cluster().id().to_owned(),
                    request,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                },
            );
            Ok(())
        })
        .await
    }

    /// Registers a waiter under a fresh id, has `send` deliver the request
    /// with that id, and waits.
    async fn call_with(
        &self,
        host: HostId,
        timeout: Duration,
        send: impl FnOnce(String) -> Result<(), RpcError>,
    ) -> Result<Frame, RpcError> {
        let id = Ulid::new().to_string();
        let (reply, answer) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id.clone(), Waiter { host, reply });
        }
        let _registration = Registration {
            rpc: self,
            id: id.clone(),
        };
        send(id)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(RpcError::Disconnected),
            Err(_) => Err(RpcError::TimedOut(timeout)),
        }
    }

    /// Hands a reply from `host` to its waiter. Returns false for a reply
    /// with no (or another host's) waiter, which the caller drops.
    pub fn resolve(&self, host: HostId, frame: Frame) -> bool {
        let Some(id) = frame.id.clone() else {
            return false;
        };
        let Ok(mut waiters) = self.waiters.lock() else {
            return false;
        };
        match waiters.get(&id) {
            Some(waiter) if waiter.host == host => {}
            _ => return false,
        }
        match waiters.remove(&id) {
            Some(waiter) => waiter.reply.send(frame).is_ok(),
            None => false,
        }
    }

    /// Ends every call waiting on `host` (its connection is gone): they
    /// fail at once as disconnected instead of waiting out their timeout.
    pub fn fail_host(&self, host: HostId) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.retain(|_, waiter| waiter.host != host);
        }
    }

    /// Calls still waiting.
    pub fn pending(&self) -> usize {
        self.waiters.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// Makes, for the server `caller`, the call `request` (an encoded frame)
/// to `host`'s agent connected here, and stores the answer (or why there
/// is none, as an `error` frame) as reply `id`.
pub(crate) async fn answer_for(
    state: &AppState,
    host: HostId,
    conn: &AgentConn,
    id: String,
    caller: String,
    request: &str,
    timeout: Duration,
) {
    let timeout = timeout.min(MAX_RELAYED_TIMEOUT);
    let answer = match Frame::decode(request) {
        Ok(request) => match state.rpc().call(host, conn, request.message, timeout).await {
            Ok(reply) => reply.message,
            Err(e) => Message::from(ErrorBody::new(ErrorCode::Busy, e.to_string())),
        },
        Err(e) => Message::from(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("a call relayed by another server could not be read: {e}"),
        )),
    };
    let reply = Frame::with_id(id.clone(), answer).encode();
    if let Err(e) = state
        .store()
        .put_reply(&id, &reply, chrono::Utc::now())
        .await
    {
        tracing::warn!(%host, error = %e, "could not store the answer to a relayed call");
        return;
    }
    bus::send(state, Signal::Replied { id, caller, host });
}

/// Takes the stored answer to this server's call `id` to `host` and hands
/// it to the waiter.
pub(crate) async fn take_answer(state: &AppState, host: HostId, id: &str) {
    let text = match state.store().take_reply(id).await {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%host, error = %e, "could not read the answer to a relayed call");
            return;
        }
    };
    match Frame::decode(&text) {
        Ok(frame) => {
            state.rpc().resolve(host, frame);
        }
        Err(e) => {
            tracing::warn!(%host, error = %e, "the answer to a relayed call could not be read")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rm_protocol::{TreeList, TreeListResult};

    use super::*;

    fn request() -> TreeList {
        TreeList {
            snapshot_id: String::from("1a2b3c4d"),
            path: String::from("/"),
        }
    }

    /// A fake agent: answers every request on `conn` after `delay`, with
    /// the requested path in the reply's `error` so a caller can tell its
    /// own reply from another's.
    fn answering(rpc: Arc<Rpc>, host: HostId, mut outbound: crate::hub::Outbound, delay: Duration) {
        tokio::spawn(async move {
            while let Some(frame) = outbound.recv().await {
                tokio::time::sleep(delay).await;
                rpc.resolve(host, echo(&frame));
            }
        });
    }

    /// The reply to `request` that names the path it asked for.
    fn echo(request: &Frame) -> Frame {
        let Message::TreeList(asked) = &request.message else {
            panic!("not a tree.list request: {request:?}");
        };
        Frame {
            id: request.id.clone(),
            message: TreeListResult {
                entries: Vec::new(),
                error: Some(asked.path.clone()),
            }
            .into(),
        }
    }

    #[tokio::test]
    async fn a_reply_reaches_its_caller() {
        let rpc = Arc::new(Rpc::default());
        let host = HostId::new();
        let (conn, outbound, _) = AgentConn::new();
        answering(rpc.clone(), host, outbound, Duration::ZERO);
        let reply = rpc
            .call(host, &conn, request(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(matches!(reply.message, Message::TreeListResult(_)));
        assert_eq!(rpc.pending(), 0);
    }

    #[tokio::test]
    async fn no_reply_times_out_and_a_late_reply_is_dropped() {
        let rpc = Arc::new(Rpc::default());
        let host = HostId::new();
        let (conn, mut outbound, _) = AgentConn::new();
        let started = std::time::Instant::now();
        let result = rpc
            .call(host, &conn, request(), Duration::from_millis(100))
            .await;
        assert!(matches!(result, Err(RpcError::TimedOut(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(rpc.pending(), 0);
        let sent = outbound.recv().await.unwrap();
        let late = Frame {
            id: sent.id,
            message: TreeListResult::default().into(),
        };
        assert!(!rpc.resolve(host, late), "a late reply has no waiter");
    }

    #[tokio::test]
    async fn a_dropped_call_leaves_no_waiter() {
        let rpc = Arc::new(Rpc::default());
        let (conn, _outbound, _) = AgentConn::new();
        let call = rpc.call(HostId::new(), &conn, request(), Duration::from_secs(30));
        let cancelled = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(cancelled.is_err());
        assert_eq!(rpc.pending(), 0);
    }

    #[tokio::test]
    async fn calls_fail_at_once_when_their_host_disconnects() {
        let rpc = Arc::new(Rpc::default());
        let host = HostId::new();
        let (conn, _outbound, _) = AgentConn::new();
        let rpc2 = rpc.clone();
        let call = tokio::spawn(async move {
            rpc2.call(host, &conn, request(), Duration::from_secs(30))
                .await
        });
        while rpc.pending() == 0 {
            tokio::task::yield_now().await;
        }
        rpc.fail_host(HostId::new());
        assert_eq!(rpc.pending(), 1, "other hosts' failures do not matter");
        rpc.fail_host(host);
        assert!(matches!(call.await.unwrap(), Err(RpcError::Disconnected)));
    }

    #[tokio::test]
    async fn concurrent_calls_each_get_their_own_reply() {
        let rpc = Arc::new(Rpc::default());
        let host = HostId::new();
        let (conn, mut outbound, _) = AgentConn::new();
        // The fake agent gathers all twenty requests, then answers them in
        // reverse order, so a registry that matched replies to callers by
        // arrival instead of by id would hand each caller another's reply.
        let agent_rpc = rpc.clone();
        tokio::spawn(async move {
            let mut requests = Vec::new();
            while requests.len() < 20 {
                match outbound.recv().await {
                    Some(frame) => requests.push(frame),
                    None => return,
                }
            }
            for request in requests.iter().rev() {
                assert!(agent_rpc.resolve(host, echo(request)));
            }
        });
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let rpc = rpc.clone();
                let conn = conn.clone();
                let path = format!("/dir-{i}");
                tokio::spawn(async move {
                    let asked = TreeList {
                        snapshot_id: String::from("1a2b3c4d"),
                        path: path.clone(),
                    };
                    let reply = rpc.call(host, &conn, asked, Duration::from_secs(5)).await;
                    (path, reply)
                })
            })
            .collect();
        for call in calls {
            let (path, reply) = call.await.unwrap();
            let Message::TreeListResult(result) = reply.unwrap().message else {
                panic!("not a tree.list result");
            };
            assert_eq!(
                result.error.as_deref(),
                Some(path.as_str()),
                "crossed reply"
            );
        }
        assert_eq!(rpc.pending(), 0);
    }

    #[tokio::test]
    async fn stray_replies_and_other_hosts_replies_are_refused() {
        let rpc = Arc::new(Rpc::default());
        let host = HostId::new();
        let (conn, mut outbound, _) = AgentConn::new();
        let rpc2 = rpc.clone();
        let call = tokio::spawn(async move {
            rpc2.call(host, &conn, request(), Duration::from_millis(300))
                .await
        });
        let sent = outbound.recv().await.unwrap();
        let reply = |id: Option<String>| Frame {
            id,
            message: TreeListResult::default().into(),
        };
        assert!(!rpc.resolve(host, reply(None)), "no id");
        assert!(
            !rpc.resolve(host, reply(Some(Ulid::new().to_string()))),
            "unknown id"
        );
        assert!(
            !rpc.resolve(HostId::new(), reply(sent.id.clone())),
            "another host"
        );
        assert!(rpc.resolve(host, reply(sent.id)));
        assert!(call.await.unwrap().is_ok());
    }
}
