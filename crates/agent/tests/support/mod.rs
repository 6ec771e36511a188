//! Shared helpers for the agent's integration tests: an enrolled state
//! directory and a tiny WebSocket server standing in for the real one, so
//! the agent's network behaviour is tested over real sockets without
//! depending on the server crate.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use rm_agent::state::{AgentState, StateDir};
use rm_protocol::Frame;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// The agent token every test enrols with.
pub const TOKEN: &str = "rma_test_token_0123456789";

/// The server side of one agent connection.
pub type ServerWs = WebSocketStream<TcpStream>;

/// Sends the agent's logs to the test output (shown for failing tests, or
/// with `--nocapture`), so a failure comes with the agent's side of it.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("rm_agent=debug")
        .with_test_writer()
        .try_init();
}

/// Awaits `fut`, failing the test instead of hanging it.
pub async fn within<T>(secs: f64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs_f64(secs), fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// A temporary state directory enrolled against `server_url`.
pub fn enrolled_state(server_url: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    write_enrolment(tmp.path(), server_url);
    tmp
}

/// Writes an `agent.json` for `server_url` into `dir`.
pub fn write_enrolment(dir: &Path, server_url: &str) {
    let state = AgentState {
        server_url: server_url.to_owned(),
        host_id: "01HOSTTEST".to_owned(),
        agent_token: TOKEN.to_owned(),
        enrolled_at: chrono::Utc::now(),
        tls: Default::default(),
        allow_restore_to_system_paths: false,
    };
    StateDir::new(dir)
        .save_agent(&state)
        .unwrap_or_else(|e| panic!("writing agent.json: {e}"));
}

/// A listener on a free local port and the agent-facing URL for it.
pub async fn listener() -> (TcpListener, String) {
    logs();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port();
    (listener, format!("http://127.0.0.1:{port}"))
}

/// What the server saw of one upgrade request.
#[derive(Debug, Clone, Default)]
pub struct Upgrade {
    /// The request path.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// Accepts one TCP connection and upgrades it, or answers `reject` instead.
// The callback's large error type is tungstenite's signature, not a choice.
#[allow(clippy::result_large_err)]
pub async fn accept(
    listener: &TcpListener,
    reject: Option<StatusCode>,
) -> (Upgrade, Option<ServerWs>) {
    let (stream, _) = within(10.0, "the agent to connect", listener.accept())
        .await
        .unwrap_or_else(|e| panic!("accept: {e}"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Upgrade::default()));
    let record = seen.clone();
    let callback =
        move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            if let Ok(mut seen) = record.lock() {
                seen.path = request.uri().path().to_owned();
                seen.authorization = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            match reject {
                Some(status) => {
                    let mut error = ErrorResponse::new(None);
                    *error.status_mut() = status;
                    Err(error)
                }
                None => Ok(response),
            }
        };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .ok();
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    (seen, ws)
}

/// The next text frame from the agent, decoded; control frames are skipped.
pub async fn next_frame(ws: &mut ServerWs) -> Frame {
    loop {
        let message = within(10.0, "a frame from the agent", ws.next()).await;
        match message {
            Some(Ok(WsMessage::Text(text))) => {
                return Frame::decode(text.as_str())
                    .unwrap_or_else(|e| panic!("agent sent an undecodable frame {text}: {e}"))
            }
            Some(Ok(WsMessage::Close(frame))) => panic!("agent closed unexpectedly: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("reading from the agent: {e}"),
            None => panic!("agent disconnected"),
        }
    }
}

/// The next frame that is not a heartbeat.
pub async fn next_non_heartbeat(ws: &mut ServerWs) -> Frame {
    loop {
        let frame = next_frame(ws).await;
        if frame.message.kind() != "heartbeat" {
            return frame;
        }
    }
}
