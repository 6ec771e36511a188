//! One WebSocket connection to the server: the authenticated upgrade, the
//! `hello`, then the loop over incoming frames, the spool's job reports,
//! live frames, the heartbeat ticker and the shutdown signal until the
//! connection ends. How it ended is reported back so the reconnect loop can
//! choose its delay.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use rm_protocol::{close_code, Frame, Heartbeat, Hello, MAX_FRAME_BYTES};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::error::error_chain;
use crate::handler::Handler;
use crate::tls::Trust;

/// The client side of an agent connection.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the TCP connect plus WebSocket upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one outgoing frame may take to hand to the socket. A server
/// that stops reading must not wedge the agent; the connection is dropped
/// and re-established instead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for the server to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long to let the close handshake finish after the server closed.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The server refused the agent token with 401 at the upgrade.
    Unauthorized,
    /// Anything else: unreachable, timeout, not a WebSocket endpoint.
    Failed(String),
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The shutdown token fired and the connection was closed cleanly.
    Shutdown,
    /// The server closed with [`close_code::REVOKED`].
    Revoked,
    /// The server closed with [`close_code::REPLACED`].
    Replaced,
    /// The server closed with some other code (going away, idle, policy…).
    Closed {
        /// The close code (1005 when the frame had none).
        code: u16,
        /// The close reason text.
        reason: String,
    },
    /// The connection broke without a close handshake.
    Lost(String),
    /// An upgrade is ready: reports were flushed and the connection closed
    /// so the agent can restart into the new binary.
    Upgrade,
}

/// The outcome of [`run_session`].
#[derive(Debug)]
pub(crate) struct SessionReport {
    /// How it ended.
    pub(crate) end: SessionEnd,
    /// Whether `hello` went out, i.e. the server got to judge this agent.
    pub(crate) said_hello: bool,
}

/// The `Authorization` header value for an agent token, marked sensitive so
/// the HTTP stack never prints it.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, crate::AgentError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| crate::AgentError::InvalidToken {
            reason: "the agent token in agent.json contains characters an HTTP header cannot carry; re-enrol"
                .into(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Opens the WebSocket with the agent's bearer token (over TLS as `trust`
/// says, for a `wss://` URL).
pub(crate) async fn connect(
    url: &Url,
    auth: &HeaderValue,
    trust: &Trust,
) -> Result<WsStream, ConnectError> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Failed(error_chain(&e)))?;
    request.headers_mut().insert(AUTHORIZATION, auth.clone());
    // The same limit the server applies: a bigger frame ends this connection
    // rather than growing the agent's memory without bound.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connector = trust.client_config().map(Connector::Rustls);
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(ConnectError::Failed(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(response))) if response.status() == StatusCode::UNAUTHORIZED => {
            Err(ConnectError::Unauthorized)
        }
        Ok(Err(WsError::Http(response))) => Err(ConnectError::Failed(format!(
            "the server answered HTTP {} instead of accepting a WebSocket (is this the restic-manager server's URL?)",
            response.status()
        ))),
        Ok(Err(e)) => Err(ConnectError::Failed(crate::tls::describe(&e))),
    }
}

/// How long shutdown lets a running job stop and report before closing.
const JOB_STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs one connected session until it ends. Live frames in `outbox` are
/// sent as they come; the spool's job reports are replayed from the start
/// (less what the server acknowledged) and then followed as they grow.
pub(crate) async fn run_session(
    mut ws: WsStream,
    hello: &Hello,
    handler: &mut Handler,
    outbox: &mut mpsc::Receiver<Frame>,
    shutdown: &CancellationToken,
) -> SessionReport {
    if let Err(reason) = send(&mut ws, &Frame::new(hello.clone())).await {
        return SessionReport {
            end: SessionEnd::Lost(format!("could not send hello: {reason}")),
            said_hello: false,
        };
    }
    let end = session_loop(&mut ws, handler, outbox, shutdown).await;
    SessionReport {
        end,
        said_hello: true,
    }
}

async fn session_loop(
    ws: &mut WsStream,
    handler: &mut Handler,
    outbox: &mut mpsc::Receiver<Frame>,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut period = handler.heartbeat();
    let mut ticker = heartbeat_ticker(period);
    let mut last_heard = Instant::now();
    let spool = handler.jobs().spool().clone();
    let upgrader = handler.upgrader().cloned();
    let mut reports = spool.reader();
    let mut appended = spool.subscribe();
    appended.borrow_and_update();
    // Whether the spool may hold reports this connection has not sent.
    let mut reports_waiting = true;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // Stop a running job cleanly and let its end reach the
                // server before saying goodbye. What cannot be sent now
                // stays spooled for the next start.
                handler.jobs().cancel_all(JOB_STOP_GRACE).await;
                flush(ws, &mut reports).await;
                close_gracefully(ws, "agent shutting down").await;
                return SessionEnd::Shutdown;
            }
            _ = async {
                match &upgrader {
                    Some(upgrader) => upgrader.ready().await,
                    None => std::future::pending().await,
                }
            } => {
                // New jobs are held from here on (unless one started since
                // the upgrader saw the agent idle: then it waits for that
                // one too). A background repository refresh is stopped;
                // what is spooled and queued is sent, then goodbye.
                if !upgrader.as_ref().is_some_and(|u| u.hold_for_restart()) {
                    continue;
                }
                handler.jobs().cancel_all(JOB_STOP_GRACE).await;
                flush(ws, &mut reports).await;
                while let Ok(frame) = outbox.try_recv() {
                    if send(ws, &frame).await.is_err() {
                        break;
                    }
                }
                close_gracefully(ws, "agent restarting into its upgraded binary").await;
                return SessionEnd::Upgrade;
            }
            Some(frame) = outbox.recv() => {
                // Live frames only (progress, RPC answers): one lost to a
                // broken socket is not worth keeping.
                if let Err(reason) = send(ws, &frame).await {
                    return SessionEnd::Lost(reason);
                }
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                let text = match incoming {
                    None => return SessionEnd::Lost("the server dropped the connection without closing it".into()),
                    Some(Err(e)) => return SessionEnd::Lost(error_chain(&e)),
                    Some(Ok(WsMessage::Close(frame))) => {
                        // Let tungstenite send its close reply so the server
                        // sees a clean handshake.
                        let _ = tokio::time::timeout(CLOSE_DRAIN, drain(ws)).await;
                        return classify_close(frame);
                    }
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Binary(_))) => {
                        tracing::warn!("ignoring a binary frame; the protocol uses text frames only");
                        continue;
                    }
                    // Pings are answered by tungstenite itself; pongs only
                    // matter as proof of life, recorded above.
                    Some(Ok(_)) => continue,
                };
                let frame = match Frame::decode(text.as_str()) {
                    Ok(frame) => frame,
                    Err(e) => {
                        if let Some(reply) = handler.undecodable(text.as_str(), &e) {
                            if let Err(reason) = send(ws, &reply).await {
                                return SessionEnd::Lost(reason);
                            }
                        }
                        continue;
                    }
                };
                for reply in handler.handle(frame).await {
                    if let Err(reason) = send(ws, &reply).await {
                        return SessionEnd::Lost(reason);
                    }
                }
                if handler.heartbeat() != period {
                    period = handler.heartbeat();
                    ticker = heartbeat_ticker(period);
                }
            }
            _ = ticker.tick() => {
                let silent = last_heard.elapsed();
                if silent > idle_limit(period) {
                    return SessionEnd::Lost(format!(
                        "nothing heard from the server for {}s",
                        silent.as_secs()
                    ));
                }
                if let Err(reason) = send(ws, &Frame::new(Heartbeat {})).await {
                    return SessionEnd::Lost(reason);
                }
                // A ping makes a live server answer even when it has nothing
                // to say, so a dead connection is noticed by the idle check
                // instead of lingering until TCP gives up.
                if let Err(reason) = send_raw(ws, WsMessage::Ping(Bytes::new())).await {
                    return SessionEnd::Lost(reason);
                }
            }
            Ok(()) = appended.changed() => reports_waiting = true,
            frames = reports.next_frames(), if reports_waiting => {
                if frames.is_empty() {
                    reports_waiting = false;
                }
                for frame in &frames {
                    if let Err(reason) = send(ws, frame).await {
                        return SessionEnd::Lost(reason);
                    }
                }
            }
        }
    }
}

/// Silence longer than this means the connection is dead: three missed
/// answers to our pings, plus slack for a busy server.
fn idle_limit(period: Duration) -> Duration {
    period.saturating_mul(3) + Duration::from_secs(10)
}

/// Ticks every `period`, first one `period` from now (hello already told the
/// server we are alive).
fn heartbeat_ticker(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall, one heartbeat is enough; a burst would say nothing more.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

fn classify_close(frame: Option<CloseFrame>) -> SessionEnd {
    let Some(frame) = frame else {
        return SessionEnd::Closed {
            code: u16::from(CloseCode::Status),
            reason: String::new(),
        };
    };
    match u16::from(frame.code) {
        close_code::REVOKED => SessionEnd::Revoked,
        close_code::REPLACED => SessionEnd::Replaced,
        code => SessionEnd::Closed {
            code,
            reason: frame.reason.as_str().to_owned(),
        },
    }
}

/// Sends every spooled report not yet sent, until the first failure.
async fn flush(ws: &mut WsStream, reports: &mut crate::spool::SpoolReader) {
    loop {
        let frames = reports.next_frames().await;
        if frames.is_empty() {
            return;
        }
        for frame in &frames {
            if send(ws, frame).await.is_err() {
                return;
            }
        }
    }
}

async fn close_gracefully(ws: &mut WsStream, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let handshake = async {
        if ws.close(Some(frame)).await.is_ok() {
            drain(ws).await;
        }
    };
    if tokio::time::timeout(CLOSE_GRACE, handshake).await.is_err() {
        tracing::debug!("the server did not finish the close handshake in time");
    }
}

/// Reads until the stream ends, which completes a close handshake.
async fn drain(ws: &mut WsStream) {
    while let Some(Ok(_)) = ws.next().await {}
}

async fn send(ws: &mut WsStream, frame: &Frame) -> Result<(), String> {
    send_raw(ws, WsMessage::text(frame.encode())).await
}

async fn send_raw(ws: &mut WsStream, message: WsMessage) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("could not send to the server: {}", error_chain(&e))),
        Err(_) => Err(format!(
            "the server did not take a frame within {}s",
            WRITE_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(code: u16, reason: &str) -> Option<CloseFrame> {
        Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        })
    }

    #[test]
    fn close_codes_are_classified() {
        assert_eq!(
            classify_close(close(close_code::REVOKED, "")),
            SessionEnd::Revoked
        );
        assert_eq!(
            classify_close(close(close_code::REPLACED, "")),
            SessionEnd::Replaced
        );
        assert_eq!(
            classify_close(close(close_code::GOING_AWAY, "restart")),
            SessionEnd::Closed {
                code: 1001,
                reason: "restart".into()
            }
        );
        assert!(matches!(
            classify_close(None),
            SessionEnd::Closed { code: 1005, .. }
        ));
    }

    #[test]
    fn bearer_header_is_sensitive_and_validated() {
        let value = bearer("rma_abc").unwrap_or_else(|e| panic!("{e}"));
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().ok(), Some("Bearer rma_abc"));
        assert!(bearer("bad\ntoken").is_err());
    }

    #[test]
    fn idle_limit_allows_three_missed_heartbeats() {
        assert_eq!(
            idle_limit(Duration::from_secs(30)),
            Duration::from_secs(100)
        );
    }
}
