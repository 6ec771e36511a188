//! Fleet load test: the real server with thousands of simulated agents on
//! real WebSockets (127.0.0.1), real `hello`, heartbeats at a shortened
//! interval, and real job traffic (`command.result`, `job.started`,
//! `log.stream`, `job.finished`, snapshot and statistics reports) from a
//! fraction of them. Prints agents connected, server memory, heartbeat
//! handling p50/p99, `GET /api/v1/hosts` p50/p99 and how long the whole
//! fleet takes to reconnect after a server restart, with the peak rate of
//! connections (to show whether the reconnect is a thundering herd).
//!
//! Deviation from "one process": the server runs as its own child process
//! (the release `restic-manager server` binary, on 127.0.0.1 with a
//! temporary data dir) and the agents in this one. 10,000 client sockets
//! plus 10,000 server sockets do not fit under this machine's open-file
//! hard limit of 20,000 in one process, and only a separate process gives
//! an honest server RSS. Both share the machine's cores, so the agents'
//! own work competes with the server's.
//!
//! Run with `cargo bench -p restic-manager --bench fleet`. Knobs (env):
//! `FLEET_AGENTS` (10000), `FLEET_HEARTBEAT_SECS` (5, pushed by the server
//! via `--heartbeat-seconds`), `FLEET_RAMP_PER_SEC` (500 new connections a
//! second), `FLEET_JOB_HOSTS` (100 hosts get a repository and run a backup),
//! `FLEET_LOG_LINES` (2000 lines per backup), `FLEET_STEADY_SECS` (30),
//! `FLEET_API_REQUESTS` (200), `FLEET_SERVER_BIN` (default: this build's
//! binary), `FLEET_SERVER_LOG` (the server's `RM_LOG`, default `info`).
//! Targets on a 2-core machine: 10,000 agents with server RSS ≤ 200 MB,
//! hosts API p99 ≤ 100 ms, full reconnect ≤ 60 s without a herd.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rm_testkit::fleet::{self, knob, FleetConfig, FleetHost, FleetStats, ScrapedHistogram};
use rm_testkit::{Api, ProcessMemory, ServerProcess};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ADMIN_PASSWORD: &str = "fleet-bench-password";

struct Knobs {
    agents: usize,
    heartbeat_secs: u32,
    ramp_per_sec: usize,
    job_hosts: usize,
    log_lines: usize,
    steady_secs: u64,
    api_requests: usize,
    server_bin: PathBuf,
    server_log: String,
}

impl Knobs {
    fn from_env() -> Knobs {
        let agents = knob("FLEET_AGENTS", 10_000usize).max(1);
        Knobs {
            agents,
            heartbeat_secs: knob("FLEET_HEARTBEAT_SECS", 5u32).max(1),
            ramp_per_sec: knob("FLEET_RAMP_PER_SEC", 500usize).max(10),
            job_hosts: knob("FLEET_JOB_HOSTS", 100usize).min(agents),
            log_lines: knob("FLEET_LOG_LINES", 2000usize),
            steady_secs: knob("FLEET_STEADY_SECS", 30u64),
            api_requests: knob("FLEET_API_REQUESTS", 200usize).max(1),
            server_bin: knob(
                "FLEET_SERVER_BIN",
                PathBuf::from(env!("CARGO_BIN_EXE_restic-manager")),
            ),
            server_log: knob("FLEET_SERVER_LOG", String::from("info")),
        }
    }
}

/// What the run measured, for the final table.
#[derive(Default)]
struct Figures {
    enrol: Duration,
    ramp: Duration,
    connected_server: f64,
    connect_failures_ramp: u64,
    jobs: usize,
    jobs_time: Duration,
    log_lines: u64,
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
    dashboard: Vec<Duration>,
    mem_connected: Option<ProcessMemory>,
    mem_steady: Option<ProcessMemory>,
    stop: Duration,
    stopped_ok: bool,
    restart_up: Duration,
    reconnect_from_stop: Duration,
    reconnect_from_up: Duration,
    reconnect_peak_per_sec: usize,
    reconnect_p50: Option<Duration>,
    reconnect_p90: Option<Duration>,
    connect_failures_restart: u64,
    hello_p50: Option<Duration>,
    hello_p99: Option<Duration>,
    mem_reconnected: Option<ProcessMemory>,
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

async fn run(knobs: Knobs) {
    let mut f = Figures::default();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("server");

    // ── enrol ────────────────────────────────────────────────────────────
    let started = Instant::now();
    let hosts: Vec<FleetHost> = {
        let url = format!("sqlite://{}", data_dir.join("restic-manager.db").display());
        let store = rm_store_sqlite::SqliteStore::open(&url).await.unwrap();
        rm_server::ensure_first_admin(&store, Some(ADMIN_PASSWORD))
            .await
            .unwrap();
        let hosts = fleet::enroll_hosts(&store, "fleet", knobs.agents)
            .await
            .unwrap();
        store.close().await;
        hosts
    };
    f.enrol = started.elapsed();
    eprintln!(
        "enrolled {} hosts in {:.1} s",
        hosts.len(),
        f.enrol.as_secs_f64()
    );

    // ── server ───────────────────────────────────────────────────────────
    let heartbeat = knobs.heartbeat_secs.to_string();
    let mut server = ServerProcess::start_in(
        &knobs.server_bin,
        &data_dir,
        "127.0.0.1:0".parse().unwrap(),
        &["--heartbeat-seconds", &heartbeat],
        &[
            ("RM_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("RM_LOG", &knobs.server_log),
        ],
    )
    .await
    .unwrap();
    let url = server.url.clone();
    let client = rm_testkit::http::client();
    let (api, session) = login(&url).await;
    eprintln!("server pid {} on {url}", server.pid().unwrap());

    // ── connect ramp ─────────────────────────────────────────────────────
    let config = Arc::new(FleetConfig {
        ws_url: format!("ws://{}/ws/agent", server.addr),
        backup_log_lines: knobs.log_lines,
        restart_spread: rm_agent::RESTART_SPREAD,
    });
    let stats = Arc::new(FleetStats::default());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    // Spawn in tenths of a second, so the rate is smooth.
    let per_tick = (knobs.ramp_per_sec / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for chunk in hosts.chunks(per_tick) {
        tick.tick().await;
        for host in chunk {
            tokio::spawn(fleet::run_agent(
                config.clone(),
                host.clone(),
                stats.clone(),
                shutdown.clone(),
            ));
        }
    }
    let limit = Duration::from_secs(120 + (knobs.agents / knobs.ramp_per_sec) as u64);
    f.connected_server = fleet::wait_connected(&stats, &client, &url, knobs.agents, limit).await;
    f.ramp = started.elapsed();
    f.connect_failures_ramp = stats.connect_failures();
    f.mem_connected = server.memory().ok();
    eprintln!(
        "{} agents connected in {:.1} s ({} failed attempts); server {}",
        f.connected_server,
        f.ramp.as_secs_f64(),
        f.connect_failures_ramp,
        mb(f.mem_connected)
    );

    // ── jobs with log traffic ────────────────────────────────────────────
    let started = Instant::now();
    let mut backups = Vec::new();
    for (n, host) in hosts.iter().take(knobs.job_hosts).enumerate() {
        let id = host.host_id.to_string();
        api.set_repository(&id, &format!("/srv/fleet/repo-{n}"), "fleet-repo-password")
            .await
            .unwrap();
        // Queued behind the repository's `init`; a host runs one at a time.
        backups.push(
            api.start_job(&id, "backup", serde_json::json!({"paths": ["/srv"]}))
                .await
                .unwrap(),
        );
    }
    for job in &backups {
        let done = api
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
    let before = fleet::scrape(&client, &url).await.unwrap();
    let cpu_before = server.cpu_time().unwrap();
    let started = Instant::now();
    let hosts_client = rm_testkit::http::client();
    for _ in 0..knobs.api_requests {
        let t = Instant::now();
        let response = hosts_client
            .get(format!("{url}/api/v1/hosts"))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let body = response.bytes().await.unwrap();
        f.hosts_api.push(t.elapsed());
        f.hosts_api_bytes = body.len();
        f.hosts_api_rows = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .map(|v| v.len())
            .unwrap_or(0);
    }
    for _ in 0..(knobs.api_requests / 4).max(1) {
        let t = Instant::now();
        let response = hosts_client
            .get(format!("{url}/"))
            .header("cookie", format!("rm_session={session}"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.bytes().await.unwrap();
        f.dashboard.push(t.elapsed());
    }
    let rest = Duration::from_secs(knobs.steady_secs).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let after = fleet::scrape(&client, &url).await.unwrap();
    let window = started.elapsed();
    let cpu_after = server.cpu_time().unwrap();
    f.cpu_steady = (cpu_after - cpu_before).as_secs_f64() / window.as_secs_f64() * 100.0;
    f.mem_steady = server.memory().ok();
    let frames = "rm_agent_frame_handling_seconds";
    let hb = ScrapedHistogram::parse(&after, frames, "kind=\"heartbeat\"").since(
        &ScrapedHistogram::parse(&before, frames, "kind=\"heartbeat\""),
    );
    f.heartbeats = hb.count();
    f.heartbeat_p50 = hb.quantile(0.5);
    f.heartbeat_p99 = hb.quantile(0.99);
    // Log batches over the whole run so far (they all came in the job phase).
    f.log_stream_p99 =
        ScrapedHistogram::parse(&after, frames, "kind=\"log.stream\"").quantile(0.99);
    let flush = ScrapedHistogram::parse(&after, "rm_last_seen_flush_seconds", "").since(
        &ScrapedHistogram::parse(&before, "rm_last_seen_flush_seconds", ""),
    );
    f.flushes = flush.count();
    f.flush_p50 = flush.quantile(0.5);
    f.flush_p99 = flush.quantile(0.99);
    eprintln!(
        "steady {:.0} s: {} heartbeats, server CPU {:.0}%, {}",
        window.as_secs_f64(),
        f.heartbeats,
        f.cpu_steady,
        mb(f.mem_steady)
    );

    // ── restart ──────────────────────────────────────────────────────────
    let failures_before = stats.connect_failures();
    let stop_at = Instant::now();
    let status = server.terminate(Duration::from_secs(60)).await.unwrap();
    f.stop = stop_at.elapsed();
    f.stopped_ok = status.success();
    eprintln!(
        "server stopped by SIGTERM in {:.1} s ({status})",
        f.stop.as_secs_f64(),
    );
    server.start_again().await.unwrap();
    f.restart_up = stop_at.elapsed();
    let up_at = Instant::now();
    fleet::wait_connected(
        &stats,
        &client,
        &url,
        knobs.agents,
        Duration::from_secs(300),
    )
    .await;
    f.reconnect_from_stop = stop_at.elapsed();
    f.reconnect_from_up = up_at.elapsed();
    f.connect_failures_restart = stats.connect_failures() - failures_before;
    let mut offsets = stats.hellos_since(stop_at);
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    for offset in &offsets {
        *per_second.entry(offset.as_secs()).or_default() += 1;
    }
    f.reconnect_peak_per_sec = per_second.values().copied().max().unwrap_or(0);
    f.reconnect_p50 = fleet::quantile(&mut offsets, 0.5);
    f.reconnect_p90 = fleet::quantile(&mut offsets, 0.9);
    let text = fleet::scrape(&client, &url).await.unwrap();
    let hellos = ScrapedHistogram::parse(&text, frames, "kind=\"hello\"");
    f.hello_p50 = hellos.quantile(0.5);
    f.hello_p99 = hellos.quantile(0.99);
    f.mem_reconnected = server.memory().ok();
    eprintln!(
        "reconnected in {:.1} s after the stop; per second: {:?}",
        f.reconnect_from_stop.as_secs_f64(),
        per_second
    );

    shutdown.cancel();
    let _ = server.terminate(Duration::from_secs(60)).await;
    print_table(&knobs, &mut f);
}

fn print_table(knobs: &Knobs, f: &mut Figures) {
    let api_p50 = fleet::quantile(&mut f.hosts_api, 0.5);
    let api_p99 = fleet::quantile(&mut f.hosts_api, 0.99);
    let dash_p50 = fleet::quantile(&mut f.dashboard, 0.5);
    let dash_p99 = fleet::quantile(&mut f.dashboard, 0.99);
    println!();
    println!(
        "fleet: {} agents, heartbeat {} s, ramp {}/s, {} backup jobs × {} log lines",
        knobs.agents, knobs.heartbeat_secs, knobs.ramp_per_sec, knobs.job_hosts, knobs.log_lines
    );
    println!(
        "(server = release binary in its own process; agents = this process; both on the same {} cores)",
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
                "{} after {:.1} s ramp, {} failed attempts",
                f.connected_server,
                f.ramp.as_secs_f64(),
                f.connect_failures_ramp
            ),
        ),
        ("server RSS, all connected", mb(f.mem_connected)),
        (
            "backup jobs with log traffic",
            format!(
                "{} jobs, {} lines in {:.1} s; log.stream p99 {}",
                f.jobs,
                f.log_lines,
                f.jobs_time.as_secs_f64(),
                ms(f.log_stream_p99)
            ),
        ),
        ("server RSS, steady", mb(f.mem_steady)),
        (
            "server CPU, steady",
            format!("{:.0}% of one core", f.cpu_steady),
        ),
        (
            "heartbeat handling p50 / p99",
            format!(
                "{} / {} ({} heartbeats)",
                ms(f.heartbeat_p50),
                ms(f.heartbeat_p99),
                f.heartbeats
            ),
        ),
        (
            "last_seen flush p50 / p99",
            format!(
                "{} / {} ({} flushes)",
                ms(f.flush_p50),
                ms(f.flush_p99),
                f.flushes
            ),
        ),
        (
            "GET /api/v1/hosts p50 / p99",
            format!(
                "{} / {} ({} requests, {} hosts, {} KB per page)",
                ms(api_p50),
                ms(api_p99),
                f.hosts_api.len(),
                f.hosts_api_rows,
                f.hosts_api_bytes / 1024
            ),
        ),
        (
            "GET / (dashboard) p50 / p99",
            format!(
                "{} / {} ({} requests)",
                ms(dash_p50),
                ms(dash_p99),
                f.dashboard.len()
            ),
        ),
        (
            "graceful stop (SIGTERM)",
            format!(
                "{:.1} s{}",
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
                "{:.1} s from SIGTERM, {:.1} s from server up ({:.1} s)",
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
        ("server RSS, reconnected", mb(f.mem_reconnected)),
    ];
    fleet::print_rows(&rows);
}

fn main() {
    let knobs = Knobs::from_env();
    fleet::bench_runtime("fleet bench", knobs.agents, &knobs.server_bin).block_on(run(knobs));
}
