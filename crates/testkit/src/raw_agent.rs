//! A WebSocket client driven by hand, for testing what the server does with
//! good and bad frames.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use rm_protocol::{
    CommandResult, CommandRun, Frame, Heartbeat, Hello, JobAck, JobFinished, JobOutcome,
    JobStarted, LogLine, LogStream, LogStreamKind, Message, ScheduleAck, CURRENT_PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for the server's next frame.
const RECV_LIMIT: Duration = Duration::from_secs(5);

/// A `log.stream` of job `job_id` carrying `lines` from `first_seq` on.
pub fn log_batch(job_id: &str, first_seq: u64, lines: &[&str]) -> LogStream {
    LogStream {
        job_id: job_id.to_owned(),
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, text)| LogLine {
                seq: first_seq + i as u64,
                ts: Utc::now(),
                stream: LogStreamKind::Stdout,
                text: (*text).to_owned(),
            })
            .collect(),
    }
}

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
        spooled_jobs: Vec::new(),
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    }
}

/// A connected raw client. The server's `job.ack`s are set aside as they
/// arrive (see [`RawAgent::acks`]), so tests about other frames need not
/// step over them.
pub struct RawAgent {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    acks: Vec<JobAck>,
    pending: VecDeque<Frame>,
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
            Ok((ws, _)) => Ok(Ok(RawAgent {
                ws,
                acks: Vec::new(),
                pending: VecDeque::new(),
            })),
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

    /// The next protocol frame other than `job.ack`, skipping pings; fails
    /// on close or silence.
    pub async fn recv(&mut self) -> anyhow::Result<Frame> {
        self.recv_within(RECV_LIMIT).await
    }

    /// [`RawAgent::recv`], failing after `limit` of silence.
    pub async fn recv_within(&mut self, limit: Duration) -> anyhow::Result<Frame> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        loop {
            let frame = self.recv_any(limit).await?;
            match frame.message {
                Message::JobAck(ack) => self.acks.push(ack),
                _ => return Ok(frame),
            }
        }
    }

    /// The next `command.run`, stepping over the pushes that may come
    /// first (`config.update`, `schedule.set`); fails on anything else.
    pub async fn next_run(&mut self) -> anyhow::Result<CommandRun> {
        self.next_run_within(RECV_LIMIT).await
    }

    /// [`RawAgent::next_run`] for an agent whose job may wait its turn:
    /// fails after `limit` of silence.
    pub async fn next_run_within(&mut self, limit: Duration) -> anyhow::Result<CommandRun> {
        loop {
            match self.recv_within(limit).await?.message {
                Message::CommandRun(run) => return Ok(run),
                Message::ConfigUpdate(_) | Message::ScheduleSet(_) => continue,
                other => bail!("expected command.run, got {other:?}"),
            }
        }
    }

    /// Plays a job from acceptance to its end as an agent would: accepted,
    /// started, `lines` as one `log.stream` from `seq` 1 (when there are
    /// any), and `job.finished` with `outcome`.
    pub async fn run_to_end(
        &mut self,
        job_id: &str,
        outcome: JobOutcome,
        lines: &[&str],
    ) -> anyhow::Result<()> {
        self.send(Frame::new(CommandResult {
            job_id: job_id.to_owned(),
            accepted: true,
            reason: None,
            message: None,
        }))
        .await?;
        self.send(Frame::new(JobStarted {
            job_id: job_id.to_owned(),
            started_at: Utc::now(),
        }))
        .await?;
        if !lines.is_empty() {
            self.send(Frame::new(log_batch(job_id, 1, lines))).await?;
        }
        self.send(Frame::new(JobFinished {
            job_id: job_id.to_owned(),
            status: outcome,
            exit_code: Some(0),
            stats: serde_json::json!({"files_new": 3}),
            error: None,
            finished_at: Utc::now(),
        }))
        .await
    }

    /// Every `job.ack` received so far, in order.
    pub fn acks(&self) -> &[JobAck] {
        &self.acks
    }

    /// The `job.ack`s received so far, forgetting them (so a later
    /// [`RawAgent::wait_for_ack`] sees only new ones).
    pub fn take_acks(&mut self) -> Vec<JobAck> {
        std::mem::take(&mut self.acks)
    }

    /// Waits up to `limit` for a `job.ack` (received now or earlier) that
    /// `matches`; other frames wait for [`RawAgent::recv`].
    pub async fn wait_for_ack(
        &mut self,
        limit: Duration,
        matches: impl Fn(&JobAck) -> bool,
    ) -> anyhow::Result<JobAck> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(ack) = self.acks.iter().find(|a| matches(a)) {
                return Ok(ack.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self
                .recv_any(left)
                .await
                .with_context(|| format!("no matching job.ack; acks so far: {:?}", self.acks))?;
            match frame.message {
                Message::JobAck(ack) => self.acks.push(ack),
                _ => self.pending.push_back(frame),
            }
        }
    }

    /// The next text frame of any kind, skipping pings.
    async fn recv_any(&mut self, limit: Duration) -> anyhow::Result<Frame> {
        loop {
            let next = tokio::time::timeout(limit, self.ws.next())
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

    /// Whether nothing but `job.ack`s arrives within `limit` (for "must
    /// stay silent").
    pub async fn silent_for(&mut self, limit: Duration) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(WsMessage::Text(text)))) => match Frame::decode(text.as_str()) {
                    Ok(Frame {
                        message: Message::JobAck(ack),
                        ..
                    }) => self.acks.push(ack),
                    Ok(frame) => {
                        self.pending.push_back(frame);
                        return false;
                    }
                    Err(_) => return false,
                },
                Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
                Ok(_) => return false,
            }
        }
    }

    /// Hands the connection to a background task that behaves as an idle
    /// agent: a heartbeat every second (the test server's interval, so the
    /// server never closes it as silent while a test does other things)
    /// and a `schedule.ack` for every `schedule.set` it is pushed. The
    /// versions it acknowledged arrive on the returned channel, in order.
    /// The task ends when the server closes the connection or the
    /// receiver is dropped.
    pub fn acknowledge_schedules(mut self) -> tokio::sync::mpsc::UnboundedReceiver<u64> {
        let (acked, versions) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                // `recv` only awaits the socket's next frame, which a
                // timeout may drop without losing one.
                match tokio::time::timeout(Duration::from_secs(1), self.recv()).await {
                    Err(_) => {
                        if self.send(Frame::new(Heartbeat {})).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(Frame {
                        message: Message::ScheduleSet(set),
                        ..
                    })) => {
                        let ack = ScheduleAck {
                            version: set.version,
                            applied_at: Utc::now(),
                        };
                        if self.send(Frame::new(ack)).await.is_err()
                            || acked.send(set.version).is_err()
                        {
                            return;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return,
                }
            }
        });
        versions
    }

    /// Closes the connection from this side.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await?;
        // Drain until the server's close reply so the close is complete.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(RECV_LIMIT, self.ws.next()).await {}
        Ok(())
    }
}
