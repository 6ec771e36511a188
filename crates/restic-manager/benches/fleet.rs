//! Fleet load test: the real server with thousands of simulated agents on
//! real WebSockets (127.0.0.1), real `hello`, heartbeats at a shortened
//! interval, and real job traffic (`command.result`, `job.started`,
//! `log.stream`, `job.finished`, snapshot and statistics reports) from a
//! fraction of them. Prints agents connected, server memory, heartbeat
//! handling p50/p99, `GET /api/v1/hosts` p50/p99, the dispatch latency
//! (API call to `command.run` at the agent, on the server holding the
//! agent and, with two servers, across them) and how long the fleet takes
//! to reconnect after a server restart, with the peak rate of connections
//! (to show whether the reconnect is a thundering herd).
//!
//! Deviation from "one process": the server runs as its own child process
//! (the release `restic-manager server` binary, on 127.0.0.1 with a
//! temporary data dir) and the agents in this one. 10,000 client sockets
//! plus 10,000 server sockets do not fit under this machine's open-file
//! hard limit of 20,000 in one process, and only a separate process gives
//! an honest server RSS. Both share the machine's cores, so the agents'
//! own work competes with the server's.
//!
//! `FLEET_STORE=postgres` runs the server on PostgreSQL (a fresh schema on
//! the cluster `RM_TEST_POSTGRES_URL` names, else on a cluster the bench
//! starts with `scripts/postgres-temp` and stops at the end), and
//! `FLEET_SERVERS=2` (PostgreSQL only) runs two server processes on that
//! one database with the same `--secret-key-file`, host `n`'s agent
//! connecting to server `n % 2` (no load balancer: each server holds half
//! the sockets). The server restarted is the last one; its agents come
//! back to it (the other's stay connected).
//!
//! Run with `cargo bench -p restic-manager --bench fleet`. Knobs (env):
//! `FLEET_STORE` (`sqlite`), `FLEET_SERVERS` (1), `FLEET_AGENTS` (10000),
//! `FLEET_HEARTBEAT_SECS` (5, pushed by the server
//! via `--heartbeat-seconds`), `FLEET_RAMP_PER_SEC` (500 new connections a
//! second), `FLEET_JOB_HOSTS` (100 hosts get a repository and run a backup),
//! `FLEET_LOG_LINES` (2000 lines per backup), `FLEET_STEADY_SECS` (30),
//! `FLEET_API_REQUESTS` (200 per server), `FLEET_DISPATCH_JOBS` (200 jobs
//! on the server holding the agent, and as many across servers),
//! `FLEET_SERVER_BIN` (default: this build's
//! binary), `FLEET_SERVER_LOG` (the server's `RM_LOG`, default `info`).
//! Targets on a 2-core machine: 10,000 agents with server RSS ≤ 200 MB,
//! hosts API p99 ≤ 100 ms, full reconnect ≤ 60 s without a herd.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rm_testkit::fleet::{self, knob, FleetConfig, FleetHost, FleetStats, ScrapedHistogram};
use rm_testkit::{Api, Backend, ProcessMemory, ServerProcess, TestDatabase};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ADMIN_PASSWORD: &str = "fleet-bench-password";

/// How long a dispatched job's `command.run` may take to reach its agent
/// before it counts as not dispatched.
const DISPATCH_LIMIT: Duration = Duration::from_secs(10);

/// Jobs across servers not dispatched in a row after which the rest are
/// not tried (each would wait [`DISPATCH_LIMIT`] for the same answer).
const DISPATCH_MISSES: usize = 3;

/// The names of the servers, in the order they start.
const NAMES: [&str; 2] = ["A", "B"];

struct Knobs {
    store: Backend,
    servers: usize,
    agents: usize,
    heartbeat_secs: u32,
    ramp_per_sec: usize,
    job_hosts: usize,
    log_lines: usize,
    steady_secs: u64,
    api_requests: usize,
    dispatch_jobs: usize,
    server_bin: PathBuf,
    server_log: String,
}

impl Knobs {
    fn from_env() -> Knobs {
        let store = match knob("FLEET_STORE", String::from("sqlite")).as_str() {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("FLEET_STORE={other} is not a store: use `sqlite` or `postgres`"),
        };
        let servers = knob("FLEET_SERVERS", 1usize);
        if !(1..=NAMES.len()).contains(&servers) {
            panic!("FLEET_SERVERS={servers}: use 1 or 2");
        }
        if servers > 1 && store != Backend::Postgres {
            panic!(
                "FLEET_SERVERS={servers} needs FLEET_STORE=postgres: a SQLite database is one server's"
            );
        }
        let agents = knob("FLEET_AGENTS", 10_000usize).max(1);
        Knobs {
            store,
            servers,
            agents,
            heartbeat_secs: knob("FLEET_HEARTBEAT_SECS", 5u32).max(1),
            ramp_per_sec: knob("FLEET_RAMP_PER_SEC", 500usize).max(10),
            job_hosts: knob("FLEET_JOB_HOSTS", 100usize).min(agents),
            log_lines: knob("FLEET_LOG_LINES", 2000usize),
            steady_secs: knob("FLEET_STEADY_SECS", 30u64),
            api_requests: knob("FLEET_API_REQUESTS", 200usize).max(1),
            dispatch_jobs: knob("FLEET_DISPATCH_JOBS", 200usize),
            server_bin: knob(
                "FLEET_SERVER_BIN",
                PathBuf::from(env!("CARGO_BIN_EXE_restic-manager")),
            ),
            server_log: knob("FLEET_SERVER_LOG", String::from("info")),
        }
    }
}

/// The PostgreSQL cluster a `FLEET_STORE=postgres` run uses: the one
/// `RM_TEST_POSTGRES_URL` names, or one started here with
/// `scripts/postgres-temp` and stopped (and removed) when this is dropped.
struct PostgresCluster {
    admin_url: String,
    started: Option<PathBuf>,
}

impl PostgresCluster {
    fn get() -> PostgresCluster {
        if let Ok(url) = std::env::var("RM_TEST_POSTGRES_URL") {
            if !url.is_empty() {
                eprintln!("PostgreSQL: the cluster of RM_TEST_POSTGRES_URL");
                return PostgresCluster {
                    admin_url: url,
                    started: None,
                };
            }
        }
        let dir = std::env::temp_dir().join(format!("rm-fleet-bench-pg-{}", std::process::id()));
        // The script prints the URL, which carries the password: not shown.
        let status = std::process::Command::new(postgres_temp())
            .arg("start")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "scripts/postgres-temp start failed ({status})"
        );
        let admin_url = std::fs::read_to_string(dir.join("url"))
            .unwrap()
            .trim()
            .to_owned();
        eprintln!(
            "PostgreSQL: a temporary cluster in {} (scripts/postgres-temp)",
            dir.display()
        );
        PostgresCluster {
            admin_url,
            started: Some(dir),
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.started {
            let _ = std::process::Command::new(postgres_temp())
                .arg("stop")
                .arg(dir)
                .status();
        }
    }
}

fn postgres_temp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres-temp")
}

/// What the run measured of one server, for the final table.
#[derive(Default)]
struct ServerFigures {
    connected: f64,
    heartbeats: u64,
    heartbeat_p50: Option<Duration>,
    heartbeat_p99: Option<Duration>,
    log_stream_p99: Option<Duration>,
    flush_p50: Option<Duration>,
    flush_p99: Option<Duration>,
    flushes: u64,
    cpu_steady: f64,
    hosts_api: Vec<Duration>,
    hosts_api_rows: usize,
    hosts_api_bytes: usize,
    /// p50 and p99 of `hosts_api`, once it is complete.
    hosts_api_quantiles: (Option<Duration>, Option<Duration>),
    dashboard: Vec<Duration>,
    dashboard_quantiles: (Option<Duration>, Option<Duration>),
    mem_connected: Option<ProcessMemory>,
    mem_steady: Option<ProcessMemory>,
    mem_reconnected: Option<ProcessMemory>,
}

/// What the run measured of the fleet, for the final table.
#[derive(Default)]
struct Figures {
    enrol: Duration,
    ramp: Duration,
    connected_servers: f64,
    connect_failures_ramp: u64,
    jobs: usize,
    jobs_time: Duration,
    log_lines: u64,
    dispatch_same: Dispatches,
    dispatch_cross: Dispatches,
    stop: Duration,
    stopped_ok: bool,
    restart_up: Duration,
    reconnect_from_stop: Duration,
    reconnect_from_up: Duration,
    reconnects: usize,
    reconnect_peak_per_sec: usize,
    reconnect_p50: Option<Duration>,
    reconnect_p90: Option<Duration>,
    connect_failures_restart: u64,
    hello_p50: Option<Duration>,
    hello_p99: Option<Duration>,
}

/// One server process with its client and the agents' config for it.
struct Node {
    name: &'static str,
    server: ServerProcess,
    url: String,
    api: Api,
    session: String,
    config: Arc<FleetConfig>,
    figures: ServerFigures,
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) if d < Duration::from_millis(1) => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        None => String::from("n/a"),
    }
}

fn mb(m: Option<ProcessMemory>) -> String {
    match m {
        Some(m) => format!(
            "{:.0} MB (peak {:.0} MB)",
            m.rss_kib as f64 / 1024.0,
            m.peak_kib as f64 / 1024.0
        ),
        None => String::from("n/a"),
    }
}

/// `figure` of every server: the one value alone, else `A: …; B: …`.
fn each(nodes: &[Node], figure: impl Fn(&ServerFigures) -> String) -> String {
    if let [node] = nodes {
        return figure(&node.figures);
    }
    nodes
        .iter()
        .map(|n| format!("{}: {}", n.name, figure(&n.figures)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Logs in and returns the session token (it also works as the UI cookie).
async fn login(url: &str) -> (Api, String) {
    let client = rm_testkit::http::client();
    let body: serde_json::Value = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    (Api::new(url, Some(token.clone())), token)
}

/// How the dispatch of one series of jobs went.
#[derive(Default)]
struct Dispatches {
    /// API call to `command.run` at the agent, per job that arrived.
    latencies: Vec<Duration>,
    /// Jobs refused by the API or not dispatched within [`DISPATCH_LIMIT`].
    missed: usize,
    /// Jobs not tried after [`DISPATCH_MISSES`] misses in a row.
    untried: usize,
    /// The first refusal's text.
    refused: Option<String>,
}

impl Dispatches {
    /// `, N not dispatched …`, `, M not tried …` and the first refusal,
    /// when there were any.
    fn misses(&self) -> String {
        let mut out = String::new();
        if self.missed > 0 {
            out.push_str(&format!(
                ", {} refused or not dispatched within {} s",
                self.missed,
                DISPATCH_LIMIT.as_secs()
            ));
        }
        if self.untried > 0 {
            out.push_str(&format!(
                ", {} not tried after {DISPATCH_MISSES} misses in a row",
                self.untried
            ));
        }
        if let Some(refused) = &self.refused {
            out.push_str(&format!("; first refusal: {refused}"));
        }
        out
    }
}

/// Creates a `snapshots` job for each of `hosts` through `api`, one after
/// another, and measures from the API call's start until the job's
/// `command.run` reached its agent; gives up after [`DISPATCH_MISSES`]
/// misses in a row (each further one would wait for the same answer).
async fn dispatch_latencies(api: &Api, stats: &FleetStats, hosts: &[FleetHost]) -> Dispatches {
    let mut out = Dispatches::default();
    let mut in_a_row = 0;
    for (n, host) in hosts.iter().enumerate() {
        if in_a_row >= DISPATCH_MISSES {
            out.untried = hosts.len() - n;
            break;
        }
        let started = Instant::now();
        let arrived = match api
            .start_job(
                &host.host_id.to_string(),
                "snapshots",
                serde_json::json!({}),
            )
            .await
        {
            Ok(job) => stats.command_run_arrival(&job, DISPATCH_LIMIT).await,
            Err(e) => {
                out.refused.get_or_insert(e.to_string());
                None
            }
        };
        match arrived {
            Some(arrived) => {
                out.latencies.push(arrived.duration_since(started));
                in_a_row = 0;
            }
            None => {
                out.missed += 1;
                in_a_row += 1;
            }
        }
    }
    out
}

async fn run(knobs: Knobs, cluster: Option<&PostgresCluster>) {
    let mut f = Figures::default();
    let data = tempfile::tempdir().unwrap();
    // One sealing key for every server: they share the database.
    let key_path = data.path().join("secret.key");
    let dir_of = |n: usize| {
        data.path()
            .join(format!("server-{}", NAMES[n].to_lowercase()))
    };
    let database = match cluster {
        None => {
            std::fs::create_dir_all(dir_of(0)).unwrap();
            TestDatabase::create_in_for(&dir_of(0), Backend::Sqlite)
                .await
                .unwrap()
        }
        Some(cluster) => TestDatabase::create_postgres_on(&cluster.admin_url)
            .await
            .unwrap(),
    };

    // ── enrol ────────────────────────────────────────────────────────────
    // Host `n`'s agent connects to server `n % servers`; the dispatch
    // measurement uses hosts of the last server beyond the job hosts,
    // each with a repository of its own (given through the store, so no
    // `init` job waits in front of the measured one).
    let last = knobs.servers - 1;
    let started = Instant::now();
    let (hosts, dispatch_hosts) = {
        let store = database.open().await.unwrap();
        rm_server::ensure_first_admin(store.as_ref(), Some(ADMIN_PASSWORD))
            .await
            .unwrap();
        let hosts = fleet::enroll_hosts(store.as_ref(), "fleet", knobs.agents)
            .await
            .unwrap();
        let dispatch_hosts: Vec<FleetHost> = hosts
            .iter()
            .enumerate()
            .skip(knobs.job_hosts)
            .filter(|(n, _)| n % knobs.servers == last)
            .map(|(_, h)| h.clone())
            .take(knobs.dispatch_jobs * knobs.servers.min(2))
            .collect();
        fleet::give_repositories(store.as_ref(), &key_path, &dispatch_hosts, 1)
            .await
            .unwrap();
        (hosts, dispatch_hosts)
    };
    f.enrol = started.elapsed();
    eprintln!(
        "enrolled {} hosts in {:.1} s ({:?})",
        hosts.len(),
        f.enrol.as_secs_f64(),
        database
    );

    // ── servers ──────────────────────────────────────────────────────────
    let heartbeat = knobs.heartbeat_secs.to_string();
    let key_arg = key_path.to_str().unwrap();
    let mut nodes = Vec::new();
    for (n, name) in NAMES.iter().enumerate().take(knobs.servers) {
        let server = ServerProcess::start_in(
            &knobs.server_bin,
            &dir_of(n),
            "127.0.0.1:0".parse().unwrap(),
            &[
                "--heartbeat-seconds",
                &heartbeat,
                "--secret-key-file",
                key_arg,
            ],
            &[
                ("RM_ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("RM_LOG", &knobs.server_log),
                // The environment, not `--database-url`: a PostgreSQL URL
                // carries the cluster's password.
                ("RM_DATABASE_URL", database.url()),
            ],
        )
        .await
        .unwrap();
        let url = server.url.clone();
        let (api, session) = login(&url).await;
        eprintln!("server {name}: pid {} on {url}", server.pid().unwrap());
        let config = Arc::new(FleetConfig {
            ws_url: format!("ws://{}/ws/agent", server.addr),
            backup_log_lines: knobs.log_lines,
            restart_spread: rm_agent::RESTART_SPREAD,
        });
        nodes.push(Node {
            name,
            server,
            url,
            api,
            session,
            config,
            figures: ServerFigures::default(),
        });
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let client = rm_testkit::http::client();

    // ── connect ramp ─────────────────────────────────────────────────────
    let stats = Arc::new(FleetStats::default());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    // Spawn in tenths of a second, so the rate is smooth.
    let per_tick = (knobs.ramp_per_sec / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for (chunk_index, chunk) in hosts.chunks(per_tick).enumerate() {
        tick.tick().await;
        for (i, host) in chunk.iter().enumerate() {
            let n = chunk_index * per_tick + i;
            tokio::spawn(fleet::run_agent(
                nodes[n % knobs.servers].config.clone(),
                host.clone(),
                stats.clone(),
                shutdown.clone(),
            ));
        }
    }
    let limit = Duration::from_secs(120 + (knobs.agents / knobs.ramp_per_sec) as u64);
    f.connected_servers =
        fleet::wait_connected_to(&stats, &client, &urls, knobs.agents, limit).await;
    f.ramp = started.elapsed();
    f.connect_failures_ramp = stats.connect_failures();
    for node in &mut nodes {
        let text = fleet::scrape(&client, &node.url).await.unwrap();
        node.figures.connected = fleet::scraped_value(&text, "rm_agents_connected").unwrap_or(0.0);
        node.figures.mem_connected = node.server.memory().ok();
    }
    eprintln!(
        "{} agents connected in {:.1} s ({} failed attempts); {}",
        f.connected_servers,
        f.ramp.as_secs_f64(),
        f.connect_failures_ramp,
        each(&nodes, |s| format!(
            "{} agents, {}",
            s.connected,
            mb(s.mem_connected)
        ))
    );

    // ── jobs with log traffic ────────────────────────────────────────────
    // Through the server holding each agent, so this phase does not
    // depend on dispatch across servers (measured on its own below).
    let started = Instant::now();
    let mut backups = Vec::new();
    for (n, host) in hosts.iter().take(knobs.job_hosts).enumerate() {
        let api = &nodes[n % knobs.servers].api;
        let id = host.host_id.to_string();
        api.set_repository(&id, &format!("/srv/fleet/repo-{n}"), "fleet-repo-password")
            .await
            .unwrap();
        // Queued behind the repository's `init`; a host runs one at a time.
        backups.push((
            n % knobs.servers,
            api.start_job(&id, "backup", serde_json::json!({"paths": ["/srv"]}))
                .await
                .unwrap(),
        ));
    }
    for (server, job) in &backups {
        let done = nodes[*server]
            .api
            .finished_job(job, Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    f.jobs = backups.len();
    f.jobs_time = started.elapsed();
    f.log_lines = stats.log_lines_sent();
    eprintln!(
        "{} backups ({} log lines) done in {:.1} s",
        f.jobs,
        f.log_lines,
        f.jobs_time.as_secs_f64()
    );

    // ── steady state ─────────────────────────────────────────────────────
    let frames = "rm_agent_frame_handling_seconds";
    let mut before = Vec::new();
    for node in &nodes {
        before.push((
            fleet::scrape(&client, &node.url).await.unwrap(),
            node.server.cpu_time().unwrap(),
        ));
    }
    let started = Instant::now();
    let hosts_client = rm_testkit::http::client();
    for node in &mut nodes {
        for _ in 0..knobs.api_requests {
            let t = Instant::now();
            let response = hosts_client
                .get(format!("{}/api/v1/hosts", node.url))
                .bearer_auth(&node.session)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let body = response.bytes().await.unwrap();
            node.figures.hosts_api.push(t.elapsed());
            node.figures.hosts_api_bytes = body.len();
            node.figures.hosts_api_rows = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                .map(|v| v.len())
                .unwrap_or(0);
        }
        for _ in 0..(knobs.api_requests / 4).max(1) {
            let t = Instant::now();
            let response = hosts_client
                .get(format!("{}/", node.url))
                .header("cookie", format!("rm_session={}", node.session))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            node.figures.dashboard.push(t.elapsed());
        }
    }
    let rest = Duration::from_secs(knobs.steady_secs).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let window = started.elapsed();
    for (node, (before, cpu_before)) in nodes.iter_mut().zip(&before) {
        let after = fleet::scrape(&client, &node.url).await.unwrap();
        let cpu_after = node.server.cpu_time().unwrap();
        let s = &mut node.figures;
        s.cpu_steady = (cpu_after - *cpu_before).as_secs_f64() / window.as_secs_f64() * 100.0;
        s.mem_steady = node.server.memory().ok();
        let hb = ScrapedHistogram::parse(&after, frames, "kind=\"heartbeat\"").since(
            &ScrapedHistogram::parse(before, frames, "kind=\"heartbeat\""),
        );
        s.heartbeats = hb.count();
        s.heartbeat_p50 = hb.quantile(0.5);
        s.heartbeat_p99 = hb.quantile(0.99);
        // Log batches over the whole run so far (they all came in the job phase).
        s.log_stream_p99 =
            ScrapedHistogram::parse(&after, frames, "kind=\"log.stream\"").quantile(0.99);
        let flush = ScrapedHistogram::parse(&after, "rm_last_seen_flush_seconds", "").since(
            &ScrapedHistogram::parse(before, "rm_last_seen_flush_seconds", ""),
        );
        s.flushes = flush.count();
        s.flush_p50 = flush.quantile(0.5);
        s.flush_p99 = flush.quantile(0.99);
    }
    eprintln!(
        "steady {:.0} s: {}",
        window.as_secs_f64(),
        each(&nodes, |s| format!(
            "{} heartbeats, CPU {:.0}%, {}",
            s.heartbeats,
            s.cpu_steady,
            mb(s.mem_steady)
        ))
    );

    // ── dispatch latency ─────────────────────────────────────────────────
    let (same_hosts, cross_hosts) =
        dispatch_hosts.split_at(knobs.dispatch_jobs.min(dispatch_hosts.len()));
    f.dispatch_same = dispatch_latencies(&nodes[last].api, &stats, same_hosts).await;
    if knobs.servers > 1 {
        f.dispatch_cross = dispatch_latencies(&nodes[0].api, &stats, cross_hosts).await;
    }
    eprintln!(
        "dispatch: {} on the holding server{}; {} across servers{}",
        f.dispatch_same.latencies.len(),
        f.dispatch_same.misses(),
        f.dispatch_cross.latencies.len(),
        f.dispatch_cross.misses(),
    );

    // ── restart ──────────────────────────────────────────────────────────
    let failures_before = stats.connect_failures();
    let stop_at = Instant::now();
    let restarted = &mut nodes[last];
    let status = restarted
        .server
        .terminate(Duration::from_secs(60))
        .await
        .unwrap();
    f.stop = stop_at.elapsed();
    f.stopped_ok = status.success();
    eprintln!(
        "server {} stopped by SIGTERM in {:.1} s ({status})",
        restarted.name,
        f.stop.as_secs_f64(),
    );
    restarted.server.start_again().await.unwrap();
    f.restart_up = stop_at.elapsed();
    let up_at = Instant::now();
    fleet::wait_connected_to(
        &stats,
        &client,
        &urls,
        knobs.agents,
        Duration::from_secs(300),
    )
    .await;
    f.reconnect_from_stop = stop_at.elapsed();
    f.reconnect_from_up = up_at.elapsed();
    f.connect_failures_restart = stats.connect_failures() - failures_before;
    let mut offsets = stats.hellos_since(stop_at);
    f.reconnects = offsets.len();
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    for offset in &offsets {
        *per_second.entry(offset.as_secs()).or_default() += 1;
    }
    f.reconnect_peak_per_sec = per_second.values().copied().max().unwrap_or(0);
    f.reconnect_p50 = fleet::quantile(&mut offsets, 0.5);
    f.reconnect_p90 = fleet::quantile(&mut offsets, 0.9);
    let text = fleet::scrape(&client, &nodes[last].url).await.unwrap();
    let hellos = ScrapedHistogram::parse(&text, frames, "kind=\"hello\"");
    f.hello_p50 = hellos.quantile(0.5);
    f.hello_p99 = hellos.quantile(0.99);
    for node in &mut nodes {
        node.figures.mem_reconnected = node.server.memory().ok();
    }
    eprintln!(
        "reconnected in {:.1} s after the stop; per second: {:?}",
        f.reconnect_from_stop.as_secs_f64(),
        per_second
    );

    shutdown.cancel();
    for node in &mut nodes {
        let _ = node.server.terminate(Duration::from_secs(60)).await;
    }
    print_table(&knobs, &mut f, &mut nodes);
}

fn print_table(knobs: &Knobs, f: &mut Figures, nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        let s = &mut node.figures;
        s.hosts_api_quantiles = (
            fleet::quantile(&mut s.hosts_api, 0.5),
            fleet::quantile(&mut s.hosts_api, 0.99),
        );
        s.dashboard_quantiles = (
            fleet::quantile(&mut s.dashboard, 0.5),
            fleet::quantile(&mut s.dashboard, 0.99),
        );
    }
    let same = (
        fleet::quantile(&mut f.dispatch_same.latencies, 0.5),
        fleet::quantile(&mut f.dispatch_same.latencies, 0.99),
    );
    let cross = (
        fleet::quantile(&mut f.dispatch_cross.latencies, 0.5),
        fleet::quantile(&mut f.dispatch_cross.latencies, 0.99),
    );
    let last = nodes.len() - 1;
    println!();
    println!(
        "fleet: {} agents on {} server(s), store {}, heartbeat {} s, ramp {}/s, {} backup jobs × {} log lines",
        knobs.agents,
        knobs.servers,
        match knobs.store {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        },
        knobs.heartbeat_secs,
        knobs.ramp_per_sec,
        knobs.job_hosts,
        knobs.log_lines
    );
    println!(
        "(servers = release binary in their own processes; agents = this process; all on the same {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let rows: Vec<(&str, String)> = vec![
        (
            "hosts enrolled (store, no HTTP)",
            format!("{} in {:.1} s", knobs.agents, f.enrol.as_secs_f64()),
        ),
        (
            "agents connected (server /metrics)",
            format!(
                "{} after {:.1} s ramp, {} failed attempts{}",
                f.connected_servers,
                f.ramp.as_secs_f64(),
                f.connect_failures_ramp,
                if nodes.len() > 1 {
                    format!(" ({})", each(nodes, |s| format!("{}", s.connected)))
                } else {
                    String::new()
                }
            ),
        ),
        (
            "server RSS, all connected",
            each(nodes, |s| mb(s.mem_connected)),
        ),
        (
            "backup jobs with log traffic",
            format!(
                "{} jobs, {} lines in {:.1} s; log.stream p99 {}",
                f.jobs,
                f.log_lines,
                f.jobs_time.as_secs_f64(),
                each(nodes, |s| ms(s.log_stream_p99))
            ),
        ),
        ("server RSS, steady", each(nodes, |s| mb(s.mem_steady))),
        (
            "server CPU, steady",
            each(nodes, |s| format!("{:.0}% of one core", s.cpu_steady)),
        ),
        (
            "heartbeat handling p50 / p99",
            each(nodes, |s| {
                format!(
                    "{} / {} ({} heartbeats)",
                    ms(s.heartbeat_p50),
                    ms(s.heartbeat_p99),
                    s.heartbeats
                )
            }),
        ),
        (
            "last_seen flush p50 / p99",
            each(nodes, |s| {
                format!(
                    "{} / {} ({} flushes)",
                    ms(s.flush_p50),
                    ms(s.flush_p99),
                    s.flushes
                )
            }),
        ),
        (
            "GET /api/v1/hosts p50 / p99",
            each(nodes, |s| {
                let (p50, p99) = s.hosts_api_quantiles;
                format!(
                    "{} / {} ({} requests, {} hosts, {} KB per page)",
                    ms(p50),
                    ms(p99),
                    s.hosts_api.len(),
                    s.hosts_api_rows,
                    s.hosts_api_bytes / 1024
                )
            }),
        ),
        (
            "GET / (dashboard) p50 / p99",
            each(nodes, |s| {
                let (p50, p99) = s.dashboard_quantiles;
                format!("{} / {} ({} requests)", ms(p50), ms(p99), s.dashboard.len())
            }),
        ),
        (
            "dispatch on the holding server p50 / p99",
            format!(
                "{} / {} ({} jobs through {}'s API for its own agents{})",
                ms(same.0),
                ms(same.1),
                f.dispatch_same.latencies.len(),
                nodes[last].name,
                f.dispatch_same.misses()
            ),
        ),
        (
            "dispatch across servers p50 / p99",
            if nodes.len() > 1 {
                format!(
                    "{} / {} ({} jobs through {}'s API for agents on {}{})",
                    ms(cross.0),
                    ms(cross.1),
                    f.dispatch_cross.latencies.len(),
                    nodes[0].name,
                    nodes[last].name,
                    f.dispatch_cross.misses()
                )
            } else {
                String::from("n/a (one server)")
            },
        ),
        (
            "graceful stop (SIGTERM)",
            format!(
                "server {}: {:.1} s{}",
                nodes[last].name,
                f.stop.as_secs_f64(),
                if f.stopped_ok {
                    ""
                } else {
                    " (exit not clean)"
                }
            ),
        ),
        (
            "all reconnected after restart",
            format!(
                "{} agents back to {}: {:.1} s from SIGTERM, {:.1} s from server up ({:.1} s)",
                f.reconnects,
                nodes[last].name,
                f.reconnect_from_stop.as_secs_f64(),
                f.reconnect_from_up.as_secs_f64(),
                f.restart_up.as_secs_f64()
            ),
        ),
        (
            "reconnect spread",
            format!(
                "p50 {:.1} s, p90 {:.1} s from SIGTERM; peak {}/s; {} failed attempts",
                f.reconnect_p50.unwrap_or_default().as_secs_f64(),
                f.reconnect_p90.unwrap_or_default().as_secs_f64(),
                f.reconnect_peak_per_sec,
                f.connect_failures_restart
            ),
        ),
        (
            "hello handling p50 / p99 (restart)",
            format!("{} / {}", ms(f.hello_p50), ms(f.hello_p99)),
        ),
        (
            "server RSS, reconnected",
            each(nodes, |s| mb(s.mem_reconnected)),
        ),
    ];
    fleet::print_rows(&rows);
}

fn main() {
    let knobs = Knobs::from_env();
    let runtime = fleet::bench_runtime("fleet bench", knobs.agents, &knobs.server_bin);
    // Outlives the runtime's work: the bench's schema is dropped before a
    // cluster started here is stopped.
    let cluster = (knobs.store == Backend::Postgres).then(PostgresCluster::get);
    runtime.block_on(run(knobs, cluster.as_ref()));
}
