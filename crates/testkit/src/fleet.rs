//! A simulated fleet for load tests: many enrolled hosts made quickly, and
//! light agents that speak the real protocol over real WebSockets — `hello`,
//! heartbeats at the interval the server pushes, answers to `command.run`
//! with `job.started`, `log.stream` batches and `job.finished` (noting when
//! each `command.run` arrived, for dispatch latencies), a
//! `schedule.ack` for every `schedule.set` — and that
//! reconnect with the real agent's jittered backoff
//! ([`rm_agent::backoff::Backoff`]). They run no restic: a job's output is
//! made up, so thousands fit in one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use rm_agent::backoff::{restart_delay, Backoff};
use rm_core::HostId;
use rm_protocol::api::EnrollRequest;
use rm_protocol::{
    CommandResult, Frame, Heartbeat, Hello, JobFinished, JobKind, JobOutcome, JobStarted, LogLine,
    LogStream, LogStreamKind, Message, RepoStats, ScheduleAck, SnapshotInfo, SnapshotsReport,
    CURRENT_PROTOCOL_VERSION,
};
use rm_store::prelude::*;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

/// A session that said hello and lasted this long resets the backoff, as
/// in the real agent's reconnect loop (`crates/agent/src/run.rs`).
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// How long the TCP connect plus upgrade may take (the real agent's limit).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for `config.update` and `schedule.set` after `hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Log lines per `log.stream` frame (what the real agent batches up to).
const LOG_BATCH: usize = 200;

/// One enrolled host of a simulated fleet.
#[derive(Clone)]
pub struct FleetHost {
    /// Its id.
    pub host_id: HostId,
    /// Its agent token (a secret: keep it out of logs).
    pub agent_token: String,
}

/// Enrols `count` hosts named `<prefix>-<n>` straight through the store,
/// with the server's own enrolment code (a single-use token issued and
/// spent per host, exactly as `POST /agents/enroll` does), but without
/// HTTP, so ten thousand take seconds.
pub async fn enroll_hosts(
    store: &dyn Store,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<FleetHost>> {
    enroll_labelled_hosts(store, prefix, count, &BTreeMap::new()).await
}

/// As [`enroll_hosts`], each host carrying `labels` (from its token, as a
/// labelled enrolment token gives them).
pub async fn enroll_labelled_hosts(
    store: &dyn Store,
    prefix: &str,
    count: usize,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<FleetHost>> {
    let mut hosts = Vec::with_capacity(count);
    let config = rm_server::ServerConfig::new("http://fleet.invalid");
    for n in 0..count {
        let name = format!("{prefix}-{n:05}");
        let issued = rm_server::enrollment::issue_token(
            store,
            &config,
            &rm_protocol::api::CreateEnrollmentToken {
                name: Some(name.clone()),
                labels: labels.clone(),
                ..Default::default()
            },
            None,
        )
        .await?;
        let enrolled = rm_server::enrollment::enroll(
            store,
            &EnrollRequest {
                token: issued.token,
                name: None,
                hostname: format!("{name}.fleet.test"),
                labels: Default::default(),
            },
            None,
        )
        .await?;
        hosts.push(FleetHost {
            host_id: enrolled.host_id.parse()?,
            agent_token: enrolled.agent_token,
        });
    }
    Ok(hosts)
}

/// Gives `hosts` their own repository settings straight through the store,
/// sealed with the server's key file at `key_path` as `PUT
/// /hosts/{id}/repository` seals them, `per_repository` hosts to each URL
/// (`/srv/fleet/shared-<n>`: shared repositories, as 50 similar web
/// servers would have). No `init` is queued: nothing runs in them; they
/// are there for what the API and dashboard show. Returns how many
/// repositories there are.
pub async fn give_repositories(
    store: &dyn Store,
    key_path: &std::path::Path,
    hosts: &[FleetHost],
    per_repository: usize,
) -> anyhow::Result<usize> {
    let key = rm_server::sealing::unlock(store, key_path).await?;
    let per_repository = per_repository.max(1);
    for (group, chunk) in hosts.chunks(per_repository).enumerate() {
        let config = rm_protocol::RepositoryConfig {
            url: format!("/srv/fleet/shared-{group:05}"),
            password: String::from("fleet-shared-password"),
            env: BTreeMap::new(),
            copy_to: None,
        };
        let plain = serde_json::to_vec(&config)?;
        let identity = rm_server::policies::effective::repository_key(&config.url);
        for host in chunk {
            let sealed = rm_server::sealing::seal_repository(&key, host.host_id, &plain)?;
            store
                .set_repository(host.host_id, &sealed, &identity, None)
                .await?;
        }
    }
    Ok(hosts.len().div_ceil(per_repository))
}

/// Waits until the agents and the server (its `rm_agents_connected`) both
/// count `n` connections, at most `limit`; returns the server's count.
pub async fn wait_connected(
    stats: &FleetStats,
    client: &reqwest::Client,
    url: &str,
    n: usize,
    limit: Duration,
) -> f64 {
    wait_connected_to(stats, client, &[url], n, limit).await
}

/// As [`wait_connected`] for a fleet split over several servers on one
/// database: waits until their `rm_agents_connected` add up to `n`;
/// returns the sum.
pub async fn wait_connected_to(
    stats: &FleetStats,
    client: &reqwest::Client,
    urls: &[&str],
    n: usize,
    limit: Duration,
) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        if stats.connected() >= n {
            let servers = servers_connected(client, urls).await;
            if servers >= n as f64 {
                return servers;
            }
        }
        if Instant::now() >= deadline {
            let servers = servers_connected(client, urls).await;
            eprintln!(
                "  gave up after {limit:?}: {} agents see a session, the servers count {servers}",
                stats.connected()
            );
            return servers;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of the servers' `rm_agents_connected` (a server that does not
/// answer counts 0).
async fn servers_connected(client: &reqwest::Client, urls: &[&str]) -> f64 {
    let mut sum = 0.0;
    for url in urls {
        if let Ok(text) = scrape(client, url).await {
            sum += scraped_value(&text, "rm_agents_connected").unwrap_or(0.0);
        }
    }
    sum
}

/// What every simulated agent of a fleet shares.
pub struct FleetConfig {
    /// `ws://…/ws/agent`.
    pub ws_url: String,
    /// Lines of output a `backup` job streams.
    pub backup_log_lines: usize,
    /// As the real agent's `--restart-spread`: after a "going away" close
    /// the reconnect waits a random 1 s to this.
    pub restart_spread: Duration,
}

/// Counters the simulated agents update, for the load test to read.
#[derive(Default)]
pub struct FleetStats {
    connected: AtomicUsize,
    connect_failures: AtomicU64,
    sessions_lost: AtomicU64,
    jobs_finished: AtomicU64,
    log_lines_sent: AtomicU64,
    schedule_acks: AtomicU64,
    /// When each accepted connection completed its handshake.
    hellos: Mutex<Vec<Instant>>,
    /// When each job's `command.run` reached its agent, by job id.
    runs: Mutex<HashMap<String, Instant>>,
    /// Woken whenever a `command.run` arrives.
    run_arrived: tokio::sync::Notify,
}

impl FleetStats {
    /// Agents whose handshake is done and whose connection is open.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connection attempts that failed (refused, timed out, rejected).
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Ordering::Relaxed)
    }

    /// Established sessions that ended (server restart, idle close, …).
    pub fn sessions_lost(&self) -> u64 {
        self.sessions_lost.load(Ordering::Relaxed)
    }

    /// Jobs the agents reported finished.
    pub fn jobs_finished(&self) -> u64 {
        self.jobs_finished.load(Ordering::Relaxed)
    }

    /// Log lines the agents sent.
    pub fn log_lines_sent(&self) -> u64 {
        self.log_lines_sent.load(Ordering::Relaxed)
    }

    /// `schedule.ack`s the agents sent (one per `schedule.set` received,
    /// the handshake's included).
    pub fn schedule_acks(&self) -> u64 {
        self.schedule_acks.load(Ordering::Relaxed)
    }

    /// When job `job_id`'s `command.run` reached its agent, waiting for it
    /// at most `limit`; `None` when it did not arrive in that time.
    pub async fn command_run_arrival(&self, job_id: &str, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            // Registered before looking, so an arrival between the look and
            // the wait still wakes it.
            let arrived = self.run_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(at) = self
                .runs
                .lock()
                .ok()
                .and_then(|runs| runs.get(job_id).copied())
            {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    fn note_command_run(&self, job_id: &str) {
        let now = Instant::now();
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(job_id.to_owned(), now);
        }
        self.run_arrived.notify_waiters();
    }

    /// Handshakes completed at or after `since`, as offsets from `since`.
    pub fn hellos_since(&self, since: Instant) -> Vec<Duration> {
        self.hellos
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|t| **t >= since)
                    .map(|t| t.duration_since(since))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs one simulated agent for `host` until `shutdown`: connect, `hello`,
/// heartbeats, job answers; on any disconnect or failed attempt it waits
/// what the real agent's backoff says and tries again.
pub async fn run_agent(
    config: Arc<FleetConfig>,
    host: FleetHost,
    stats: Arc<FleetStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        let delay = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = session(&config, &host, &stats) => match outcome {
                Session::Failed => {
                    stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    backoff.next_delay()
                }
                Session::Ended { lasted, going_away } => {
                    stats.sessions_lost.fetch_add(1, Ordering::Relaxed);
                    if lasted >= HEALTHY_SESSION {
                        backoff.reset();
                    }
                    if going_away {
                        restart_delay(config.restart_spread)
                    } else {
                        backoff.next_delay()
                    }
                }
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// How one connection attempt went.
enum Session {
    /// No session: the connect, upgrade or handshake failed.
    Failed,
    /// A session was established and later ended; `going_away` when the
    /// server closed it with 1001 (it is restarting).
    Ended { lasted: Duration, going_away: bool },
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Marks an agent connected while alive.
struct Connected<'a>(&'a FleetStats);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(config: &FleetConfig, host: &FleetHost, stats: &FleetStats) -> Session {
    let Some(mut ws) = connect(config, host).await else {
        return Session::Failed;
    };
    let Some(heartbeat) = handshake(&mut ws, stats).await else {
        return Session::Failed;
    };
    let started = Instant::now();
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(stats);
    if let Ok(mut hellos) = stats.hellos.lock() {
        hellos.push(started);
    }
    // As the real agent: the first heartbeat one period after connecting.
    let mut ticker = tokio::time::interval_at(started + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut going_away = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // As the real agent: a heartbeat, then a ping.
                if send(&mut ws, Frame::new(Heartbeat {})).await.is_err()
                    || ws.send(WsMessage::Ping(Vec::new().into())).await.is_err()
                {
                    break;
                }
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Close(close))) => {
                        going_away = close
                            .is_some_and(|c| u16::from(c.code) == rm_protocol::close_code::GOING_AWAY);
                        break;
                    }
                    Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(frame) = Frame::decode(text.as_str()) else { continue };
                if answer(&mut ws, config, stats, frame).await.is_err() {
                    break;
                }
            }
        }
    }
    Session::Ended {
        lasted: started.elapsed(),
        going_away,
    }
}

/// Opens the WebSocket with the host's token. Small buffers: the fleet's
/// memory is not what is measured, and thousands of 128 KiB defaults add up.
async fn connect(config: &FleetConfig, host: &FleetHost) -> Option<Ws> {
    let mut request = config.ws_url.as_str().into_client_request().ok()?;
    let auth = format!("Bearer {}", host.agent_token).parse().ok()?;
    request.headers_mut().insert("Authorization", auth);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok((ws, _))) => Some(ws),
        _ => None,
    }
}

/// Sends `hello` and waits for `config.update` and `schedule.set`
/// (acknowledging the set, as the real agent does). Returns the heartbeat
/// interval the server asked for.
async fn handshake(ws: &mut Ws, stats: &FleetStats) -> Option<Duration> {
    let hello = Hello {
        protocol_version: CURRENT_PROTOCOL_VERSION,
        agent_version: String::from("0.0.0-fleet"),
        restic_version: Some(String::from("0.14.0")),
        restic_error: None,
        hostname: String::from("fleet.test"),
        os: String::from("linux"),
        arch: String::from("x86_64"),
        running_jobs: Vec::new(),
        spooled_jobs: Vec::new(),
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    };
    send(ws, Frame::new(hello)).await.ok()?;
    let mut heartbeat = None;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        let WsMessage::Text(text) = next.ok()? else {
            continue;
        };
        match Frame::decode(text.as_str()).ok()?.message {
            Message::ConfigUpdate(update) => {
                heartbeat = Some(Duration::from_secs(u64::from(
                    update.settings.heartbeat_seconds.max(1),
                )));
            }
            Message::ScheduleSet(set) => {
                acknowledge(ws, stats, set.version).await.ok()?;
                return heartbeat;
            }
            _ => return None,
        }
    }
}

/// As the real agent once it has applied a set: `schedule.ack` with its
/// version.
async fn acknowledge(ws: &mut Ws, stats: &FleetStats, version: u64) -> Result<(), ()> {
    let ack = ScheduleAck {
        version,
        applied_at: Utc::now(),
    };
    send(ws, Frame::new(ack)).await?;
    stats.schedule_acks.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn send(ws: &mut Ws, frame: Frame) -> Result<(), ()> {
    ws.send(WsMessage::text(frame.encode()))
        .await
        .map_err(|_| ())
}

/// Acknowledges a pushed schedule set, or plays a job the server asked
/// for, in the real agent's reporting order (a backup's snapshot list and
/// statistics before its `job.finished`); ignores everything else.
async fn answer(
    ws: &mut Ws,
    config: &FleetConfig,
    stats: &FleetStats,
    frame: Frame,
) -> Result<(), ()> {
    let run = match frame.message {
        Message::CommandRun(run) => run,
        Message::ScheduleSet(set) => return acknowledge(ws, stats, set.version).await,
        _ => return Ok(()),
    };
    stats.note_command_run(&run.job_id);
    let job_id = run.job_id;
    send(
        ws,
        Frame::new(CommandResult {
            job_id: job_id.clone(),
            accepted: true,
            reason: None,
            message: None,
        }),
    )
    .await?;
    send(
        ws,
        Frame::new(JobStarted {
            job_id: job_id.clone(),
            started_at: Utc::now(),
        }),
    )
    .await?;
    let lines = if run.kind == JobKind::Backup {
        config.backup_log_lines
    } else {
        2
    };
    let mut seq = 1u64;
    while seq as usize <= lines {
        let end = (seq as usize + LOG_BATCH - 1).min(lines) as u64;
        let batch = (seq..=end)
            .map(|s| LogLine {
                seq: s,
                ts: Utc::now(),
                stream: LogStreamKind::Stdout,
                text: format!("processed /srv/data/projects/file-{s:07}.dat (12.3 KiB)"),
            })
            .collect();
        send(
            ws,
            Frame::new(LogStream {
                job_id: job_id.clone(),
                lines: batch,
            }),
        )
        .await?;
        stats
            .log_lines_sent
            .fetch_add(end + 1 - seq, Ordering::Relaxed);
        seq = end + 1;
    }
    if run.kind == JobKind::Backup {
        let snapshot = SnapshotInfo {
            id: format!("{:064x}", rand_u128()),
            short_id: String::from("fleet000"),
            time: Utc::now(),
            hostname: String::from("fleet.test"),
            paths: vec![String::from("/srv")],
            tags: Vec::new(),
            size_bytes: Some(12_600 * lines as u64),
            file_count: Some(lines as u64),
        };
        send(
            ws,
            Frame::new(SnapshotsReport {
                snapshots: vec![snapshot],
            }),
        )
        .await?;
        send(
            ws,
            Frame::new(RepoStats {
                raw_size_bytes: Some(10_000 * lines as u64),
                snapshot_count: Some(1),
                ..RepoStats::default()
            }),
        )
        .await?;
    }
    send(
        ws,
        Frame::new(JobFinished {
            job_id,
            status: JobOutcome::Succeeded,
            exit_code: Some(0),
            stats: serde_json::json!({"files_new": lines}),
            error: None,
            finished_at: Utc::now(),
        }),
    )
    .await?;
    stats.jobs_finished.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A unique number for made-up snapshot ids.
fn rand_u128() -> u128 {
    ulid::Ulid::new().0
}

/// One Prometheus histogram read from `/metrics`: cumulative counts per
/// upper bound (seconds), `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapedHistogram {
    /// `(le, cumulative count)`, in order.
    pub buckets: Vec<(f64, u64)>,
}

impl ScrapedHistogram {
    /// The `{name}_bucket` lines of `text` whose labels contain `labels`
    /// (e.g. `kind="heartbeat"`; empty matches the unlabelled series).
    pub fn parse(text: &str, name: &str, labels: &str) -> ScrapedHistogram {
        let prefix = format!("{name}_bucket{{");
        let mut buckets = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((inside, value)) = rest.split_once("} ") else {
                continue;
            };
            if !labels.is_empty() && !inside.contains(labels) {
                continue;
            }
            let Some(le) = inside
                .split(',')
                .find_map(|kv| kv.strip_prefix("le=\""))
                .map(|v| v.trim_end_matches('"'))
            else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let count: u64 = value.trim().parse().unwrap_or(0);
            // Keyed by bits: f64 is not Ord, but these bounds are finite
            // positives (or +Inf), whose bit patterns sort like the values.
            buckets.insert(le.to_bits(), (le, count));
        }
        ScrapedHistogram {
            buckets: buckets.into_values().collect(),
        }
    }

    /// Observations in this histogram.
    pub fn count(&self) -> u64 {
        self.buckets.last().map(|(_, c)| *c).unwrap_or(0)
    }

    /// What happened between `earlier` and this scrape.
    pub fn since(&self, earlier: &ScrapedHistogram) -> ScrapedHistogram {
        ScrapedHistogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, count)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map(|(_, c)| *c)
                        .unwrap_or(0);
                    (*le, count.saturating_sub(before))
                })
                .collect(),
        }
    }

    /// The `q` quantile (0–1), interpolated linearly inside its bucket;
    /// `None` without observations. Accurate to the bucket's width.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = 0.0;
        let mut below = 0u64;
        for (le, count) in &self.buckets {
            if *count as f64 >= rank && *count > below {
                if le.is_infinite() {
                    return Some(Duration::from_secs_f64(lower));
                }
                let within = (rank - below as f64) / (*count - below) as f64;
                return Some(Duration::from_secs_f64(lower + (le - lower) * within));
            }
            lower = *le;
            below = *count;
        }
        None
    }
}

/// Reads `/metrics` of the server at `url`.
pub async fn scrape(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// A gauge or counter without labels (or with exactly `labels`) from a
/// scrape.
pub fn scraped_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The `q` quantile of `samples` (sorted in place); `None` when empty.
pub fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    Some(samples[index])
}

/// A bench setting from the environment variable `name`, or `default`
/// when it is unset; a value that does not parse stops the bench, naming it.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// Prints a bench's figures as a two-column table, the names aligned.
pub fn print_rows(rows: &[(&str, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, value) in rows {
        println!("  {key:<width$}  {value}");
    }
}

/// The runtime a fleet bench of `agents` simulated agents runs on, after
/// raising this process's open-file limit to fit their sockets (stopping,
/// naming the numbers, when it cannot). `title` and `server_bin` are
/// printed first, so a run says what it measured.
pub fn bench_runtime(
    title: &str,
    agents: usize,
    server_bin: &std::path::Path,
) -> tokio::runtime::Runtime {
    let limit = rm_server::raise_open_files_limit()
        .unwrap_or_else(|e| panic!("could not raise the open-file limit: {e}"));
    if (limit.now as usize) < agents + 100 {
        panic!(
            "{agents} agents need {} open files; this process may have {}",
            agents + 100,
            limit.now
        );
    }
    eprintln!(
        "{title}: server {} as a child process, agents in this process (open-file limit {})",
        server_bin.display(),
        limit.now
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("could not start the runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
x_bucket{kind=\"heartbeat\",le=\"0.00001\"} 0
x_bucket{kind=\"heartbeat\",le=\"0.00002\"} 50
x_bucket{kind=\"heartbeat\",le=\"0.00005\"} 99
x_bucket{kind=\"heartbeat\",le=\"+Inf\"} 100
x_bucket{kind=\"log.stream\",le=\"+Inf\"} 7
";

    #[test]
    fn histograms_are_read_and_interpolated() {
        let h = ScrapedHistogram::parse(TEXT, "x", "kind=\"heartbeat\"");
        assert_eq!(h.count(), 100);
        let micros = |q| h.quantile(q).unwrap().as_secs_f64() * 1e6;
        assert!((micros(0.5) - 20.0).abs() < 0.01, "{}", micros(0.5));
        assert!((micros(0.99) - 50.0).abs() < 0.01, "{}", micros(0.99));
        assert!((micros(0.25) - 15.0).abs() < 0.01, "{}", micros(0.25));
        let none = ScrapedHistogram::default();
        assert_eq!(none.quantile(0.5), None);
        let delta = h.since(&h);
        assert_eq!(delta.count(), 0);
    }

    #[tokio::test]
    async fn a_command_run_is_found_by_its_job_id_when_it_arrives() {
        let stats = Arc::new(FleetStats::default());
        assert_eq!(
            stats.command_run_arrival("job-1", Duration::ZERO).await,
            None
        );
        let waiter = {
            let stats = stats.clone();
            tokio::spawn(async move {
                stats
                    .command_run_arrival("job-1", Duration::from_secs(60))
                    .await
            })
        };
        let before = Instant::now();
        stats.note_command_run("job-2");
        stats.note_command_run("job-1");
        let arrived = waiter.await.unwrap().unwrap();
        assert!(arrived >= before);
        assert_eq!(
            stats.command_run_arrival("job-1", Duration::ZERO).await,
            Some(arrived)
        );
    }

    #[test]
    fn sample_quantiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut samples, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(
            quantile(&mut samples, 0.99),
            Some(Duration::from_millis(99))
        );
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn plain_values_are_found() {
        let text = "rm_agents_connected 42\nrm_hosts{state=\"online\"} 40\n";
        assert_eq!(scraped_value(text, "rm_agents_connected"), Some(42.0));
        assert_eq!(
            scraped_value(text, "rm_hosts{state=\"online\"}"),
            Some(40.0)
        );
        assert_eq!(scraped_value(text, "rm_missing"), None);
    }
}
