//! A WebSocket client driven by hand, for testing what the server does with
//! good and bad frames.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use rm_protocol::{
    CommandResult, CommandRun, Frame, Hello, JobFinished, JobOutcome, JobStarted, LogLine,
    LogStream, LogStreamKind, Message, CURRENT_PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for the server's next frame.
const RECV_LIMIT: Duration = Duration::from_secs(5);

/// A `hello` as a well-behaved agent of `protocol_version` sends it.
pub fn hello(protocol_version: u32) -> Hello {
    Hello {
        protocol_version,
        agent_version: String::from("0.0.0-test"),
        restic_version: Some(String::from("0.14.0")),
        restic_error: None,
        hostname: String::from("raw-agent.test"),
        os: String::from("linux"),
        arch: String::from("x86_64"),
        running_jobs: Vec::new(),
    }
}

/// A connected raw client.
pub struct RawAgent {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawAgent {
    /// Connects with `Authorization: <authorization>` (verbatim, or none).
    /// `Err` carries the HTTP status and body when the server refused the
    /// upgrade.
    pub async fn connect(
        ws_url: &str,
        authorization: Option<&str>,
    ) -> anyhow::Result<Result<RawAgent, (u16, String)>> {
        let mut request = ws_url.into_client_request()?;
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert("Authorization", value.parse().context("bad header value")?);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Ok(RawAgent { ws })),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Ok(Err((status, body)))
            }
            Err(e) => Err(anyhow!(e).context("WebSocket connect failed")),
        }
    }

    /// Connects with `Bearer <token>`, failing if the server refuses.
    pub async fn connect_as(ws_url: &str, agent_token: &str) -> anyhow::Result<RawAgent> {
        match RawAgent::connect(ws_url, Some(&format!("Bearer {agent_token}"))).await? {
            Ok(agent) => Ok(agent),
            Err((status, body)) => bail!("upgrade refused with {status}: {body}"),
        }
    }

    /// Connects, says hello, and checks the two pushes that must follow.
    pub async fn connect_and_hello(ws_url: &str, agent_token: &str) -> anyhow::Result<RawAgent> {
        let mut agent = RawAgent::connect_as(ws_url, agent_token).await?;
        agent
            .send(Frame::new(hello(CURRENT_PROTOCOL_VERSION)))
            .await?;
        let first = agent.recv().await?;
        let second = agent.recv().await?;
        if !matches!(first.message, Message::ConfigUpdate(_))
            || !matches!(second.message, Message::ScheduleSet(_))
        {
            bail!("expected config.update then schedule.set, got {first:?} then {second:?}");
        }
        Ok(agent)
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.send_text(&frame.encode()).await
    }

    /// Sends arbitrary text.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(WsMessage::text(text)).await?;
        Ok(())
    }

    /// Sends a binary frame of `len` bytes.
    pub async fn send_binary(&mut self, len: usize) -> anyhow::Result<()> {
        self.ws.send(WsMessage::binary(vec![b'x'; len])).await?;
        Ok(())
    }

    /// The next protocol frame, skipping pings; fails on close or silence.
    pub async fn recv(&mut self) -> anyhow::Result<Frame> {
        loop {
            let next = tokio::time::timeout(RECV_LIMIT, self.ws.next())
                .await
                .context("no frame from the server in time")?;
            match next {
                Some(Ok(WsMessage::Text(text))) => return Ok(Frame::decode(text.as_str())?),
                Some(Ok(WsMessage::Close(frame))) => {
                    bail!("server closed the connection: {frame:?}")
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected message {other:?}"),
                Some(Err(e)) => bail!("read failed: {e}"),
                None => bail!("connection ended"),
            }
        }
    }

    /// Waits for the server to end the connection and returns its close
    /// frame, if it sent one. Text frames before the close are returned too.
    pub async fn closed(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<(Vec<Frame>, Option<CloseFrame>)> {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(limit, self.ws.next())
                .await
                .context("the server did not close the connection in time")?;
            match next {
                Some(Ok(WsMessage::Text(text))) => frames.push(Frame::decode(text.as_str())?),
                Some(Ok(WsMessage::Close(frame))) => return Ok((frames, frame)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok((frames, None)),
            }
        }
    }

    /// Whether anything arrives within `limit` (for "must stay silent").
    pub async fn silent_for(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.ws.next()).await.is_err()
    }

    /// The next `command.run`, skipping configuration and schedule pushes.
    pub async fn next_command(&mut self) -> anyhow::Result<CommandRun> {
        loop {
            match self.recv().await?.message {
                Message::CommandRun(run) => return Ok(run),
                Message::ConfigUpdate(_) | Message::ScheduleSet(_) => continue,
                other => bail!("expected command.run, got {other:?}"),
            }
        }
    }

    /// Plays job `job_id` as a well-behaved agent would: accepts and starts
    /// it, sends `lines` as stdout (seq from 1), and finishes it with
    /// `outcome` and exit code 0.
    pub async fn run_job(
        &mut self,
        job_id: &str,
        outcome: JobOutcome,
        lines: &[&str],
    ) -> anyhow::Result<()> {
        let now = chrono::Utc::now;
        self.send(Frame::new(CommandResult {
            job_id: job_id.to_owned(),
            accepted: true,
            reason: None,
            message: None,
        }))
        .await?;
        self.send(Frame::new(JobStarted {
            job_id: job_id.to_owned(),
            started_at: now(),
        }))
        .await?;
        if !lines.is_empty() {
            let lines = (1..)
                .zip(lines)
                .map(|(seq, text)| LogLine {
                    seq,
                    ts: now(),
                    stream: LogStreamKind::Stdout,
                    text: (*text).to_owned(),
                })
                .collect();
            self.send(Frame::new(LogStream {
                job_id: job_id.to_owned(),
                lines,
            }))
            .await?;
        }
        self.send(Frame::new(JobFinished {
            job_id: job_id.to_owned(),
            status: outcome,
            exit_code: Some(0),
            stats: serde_json::json!({}),
            error: None,
            finished_at: now(),
        }))
        .await
    }

    /// Closes the connection from this side.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await?;
        // Drain until the server's close reply so the close is complete.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(RECV_LIMIT, self.ws.next()).await {}
        Ok(())
    }
}
