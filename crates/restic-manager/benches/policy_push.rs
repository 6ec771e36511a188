//! Policy changes at fleet scale: the real server (the release binary in
//! its own process, as in the `fleet` bench) with thousands of simulated
//! agents on real WebSockets, all enrolled with the label `env=bench`,
//! sharing repositories in groups. One policy selecting them is created
//! (its schedule pushed to every agent and acknowledged), then changed
//! with `PUT /api/v1/policies/{id}` (a new cron), and the bench measures:
//!
//! - how long the `PUT` takes (the whole change is stored in one
//!   transaction before it answers);
//! - the time from the `PUT` until every agent has acknowledged the new
//!   schedule set, counted on the agents' side (`schedule.ack` sent) and on
//!   the server's (`GET /api/v1/policies/{id}`: `hosts_in_sync == hosts`);
//! - the server's RSS (`/proc/<pid>/status` of the server process: VmRSS
//!   sampled every 100 ms, and VmHWM) during it;
//! - `GET /api/v1/hosts?limit=100` latencies sampled back to back during
//!   the push (p50/p99), and the same and the dashboard `GET /` without
//!   any policy and with it, when idle.
//!
//! Run with `cargo bench -p restic-manager --bench policy_push`. Knobs
//! (env): `RM_BENCH_AGENTS` (10000), `RM_BENCH_RAMP_PER_SEC` (500 new
//! connections a second), `RM_BENCH_HEARTBEAT_SECS` (5, pushed by the
//! server), `RM_BENCH_SHARED` (50 hosts per shared repository; 0: no
//! repositories), `RM_BENCH_API_REQUESTS` (200 per idle measurement),
//! `RM_BENCH_SERVER_BIN` (default: this build's binary),
//! `RM_BENCH_SERVER_LOG` (the server's `RM_LOG`, default `info`).
//! Targets on a 2-core machine: every agent of 10,000 acknowledged within
//! 30 s of the `PUT`, hosts API p99 ≤ 100 ms during the push.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rm_testkit::fleet::{self, knob, FleetConfig, FleetHost, FleetStats};
use rm_testkit::{Api, ProcessMemory, ServerProcess};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ADMIN_PASSWORD: &str = "policy-bench-password";

/// How often the bench asks the server whether every host is in sync.
const SYNC_POLL: Duration = Duration::from_millis(100);

/// How long the agents and the server may take to agree after a change.
const SYNC_LIMIT: Duration = Duration::from_secs(600);

struct Knobs {
    agents: usize,
    ramp_per_sec: usize,
    heartbeat_secs: u32,
    shared: usize,
    api_requests: usize,
    server_bin: PathBuf,
    server_log: String,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            agents: knob("RM_BENCH_AGENTS", 10_000usize).max(1),
            ramp_per_sec: knob("RM_BENCH_RAMP_PER_SEC", 500usize).max(10),
            heartbeat_secs: knob("RM_BENCH_HEARTBEAT_SECS", 5u32).max(1),
            shared: knob("RM_BENCH_SHARED", 50usize),
            api_requests: knob("RM_BENCH_API_REQUESTS", 200usize).max(1),
            server_bin: knob(
                "RM_BENCH_SERVER_BIN",
                PathBuf::from(env!("CARGO_BIN_EXE_restic-manager")),
            ),
            server_log: knob("RM_BENCH_SERVER_LOG", String::from("info")),
        }
    }
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        None => String::from("n/a"),
    }
}

fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
        None => String::from("not reached"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MB", kib as f64 / 1024.0)
}

/// p50 / p99 of `samples` and how many there were.
fn latencies(samples: &mut [Duration]) -> String {
    format!(
        "{} / {} ({} requests)",
        ms(fleet::quantile(samples, 0.5)),
        ms(fleet::quantile(samples, 0.99)),
        samples.len()
    )
}

/// `GET /api/v1/hosts?limit=100` and the dashboard, `requests` and a
/// quarter as many times, one after another, over a fleet of `agents`.
async fn idle_latencies(
    api: &Api,
    agents: usize,
    requests: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut hosts = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let (status, body) = api.get("/api/v1/hosts?limit=100").await.unwrap();
        hosts.push(t.elapsed());
        assert!(status.is_success(), "{status}: {body}");
        assert_eq!(body.as_array().map(Vec::len), Some(100.min(agents)));
    }
    let mut dashboard = Vec::with_capacity(requests / 4);
    for _ in 0..(requests / 4).max(1) {
        let t = Instant::now();
        let (status, _) = api.page("/").await.unwrap();
        dashboard.push(t.elapsed());
        assert!(status.is_success(), "{status}");
    }
    (hosts, dashboard)
}

/// Samples `GET /api/v1/hosts?limit=100` back to back and the server's RSS
/// every 100 ms until `stop`.
fn sample_during(
    api: Api,
    server_pid: u32,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<(Vec<Duration>, u64)> {
    let rss = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut most = 0u64;
            while !stop.is_cancelled() {
                if let Ok(memory) = ProcessMemory::of(server_pid) {
                    most = most.max(memory.rss_kib);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            most
        })
    };
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.is_cancelled() {
            let t = Instant::now();
            let (status, body) = api.get("/api/v1/hosts?limit=100").await.unwrap();
            samples.push(t.elapsed());
            assert!(status.is_success(), "{status}: {body}");
        }
        (samples, rss.await.unwrap_or(0))
    })
}

/// What a change took to reach the fleet.
struct Rollout {
    /// The request itself (the one transaction).
    request: Duration,
    /// Until every agent had sent its `schedule.ack`.
    agents_acked: Option<Duration>,
    /// Until the server counted every host of the policy in sync.
    server_in_sync: Option<Duration>,
    /// `hosts` of the policy at the end.
    hosts: u64,
    /// `GET /api/v1/hosts?limit=100` during the rollout.
    hosts_api: Vec<Duration>,
    /// Highest VmRSS sampled during it, and VmHWM after.
    rss_max_kib: u64,
    memory_after: Option<ProcessMemory>,
}

/// Sends `body` (`POST /api/v1/policies` when `id` is `None`, else `PUT
/// /api/v1/policies/{id}`) and waits until the fleet runs it.
async fn roll_out(
    api: &Api,
    server: &ServerProcess,
    stats: &FleetStats,
    agents: usize,
    id: Option<&str>,
    body: Value,
) -> (String, Rollout) {
    let stop = CancellationToken::new();
    let sampler = sample_during(api.clone(), server.pid().unwrap(), stop.clone());
    let acks_before = stats.schedule_acks();
    let started = Instant::now();
    let (status, view) = match id {
        None => api.post("/api/v1/policies", body).await.unwrap(),
        Some(id) => api
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/policies/{id}"),
                Some(body),
            )
            .await
            .unwrap(),
    };
    let request = started.elapsed();
    assert!(status.is_success(), "{status}: {view}");
    let id = view["id"].as_str().unwrap().to_owned();
    let mut agents_acked = None;
    let mut server_in_sync = None;
    let mut hosts = 0;
    let deadline = started + SYNC_LIMIT;
    while (agents_acked.is_none() || server_in_sync.is_none()) && Instant::now() < deadline {
        if agents_acked.is_none() && stats.schedule_acks() >= acks_before + agents as u64 {
            agents_acked = Some(started.elapsed());
        }
        if server_in_sync.is_none() {
            let (status, view) = api.get(&format!("/api/v1/policies/{id}")).await.unwrap();
            assert!(status.is_success(), "{status}: {view}");
            hosts = view["hosts"].as_u64().unwrap_or(0);
            let in_sync = view["hosts_in_sync"].as_u64().unwrap_or(0);
            if hosts >= agents as u64 && in_sync == hosts {
                server_in_sync = Some(started.elapsed());
            }
        }
        tokio::time::sleep(SYNC_POLL).await;
    }
    stop.cancel();
    let (hosts_api, rss_max_kib) = sampler.await.unwrap();
    (
        id,
        Rollout {
            request,
            agents_acked,
            server_in_sync,
            hosts,
            hosts_api,
            rss_max_kib,
            memory_after: server.memory().ok(),
        },
    )
}

fn policy(cron: &str) -> Value {
    json!({
        "name": "bench",
        "selector": {"env": "bench"},
        "schedules": [
            {"kind": "backup", "cron": cron, "params": {"paths": ["/srv"]}, "jitter_seconds": 600},
            {"kind": "forget", "cron": "0 5 * * 0", "params": {"keep_daily": 7, "keep_weekly": 4}},
        ],
        "freshness_seconds": 172800,
    })
}

async fn run(knobs: Knobs) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("server");

    // ── enrol, with labels and shared repositories ───────────────────────
    let started = Instant::now();
    let (hosts, repositories): (Vec<FleetHost>, usize) = {
        let url = format!("sqlite://{}", data_dir.join("restic-manager.db").display());
        let store = rm_store_sqlite::SqliteStore::open(&url).await.unwrap();
        rm_server::ensure_first_admin(&store, Some(ADMIN_PASSWORD))
            .await
            .unwrap();
        let labels = BTreeMap::from([(String::from("env"), String::from("bench"))]);
        let hosts = fleet::enroll_labelled_hosts(&store, "bench", knobs.agents, &labels)
            .await
            .unwrap();
        let repositories = if knobs.shared > 0 {
            fleet::give_repositories(
                &store,
                &data_dir.join(rm_server::KEY_FILE),
                &hosts,
                knobs.shared,
            )
            .await
            .unwrap()
        } else {
            0
        };
        store.close().await;
        (hosts, repositories)
    };
    let enrol = started.elapsed();
    eprintln!(
        "enrolled {} hosts (env=bench) with {repositories} shared repositories in {:.1} s",
        hosts.len(),
        enrol.as_secs_f64()
    );

    // ── server and agents ────────────────────────────────────────────────
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
    let api = Api::new(&url, None)
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    eprintln!("server pid {} on {url}", server.pid().unwrap());
    let config = Arc::new(FleetConfig {
        ws_url: format!("ws://{}/ws/agent", server.addr),
        backup_log_lines: 0,
        restart_spread: rm_agent::RESTART_SPREAD,
    });
    let stats = Arc::new(FleetStats::default());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
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
    let client = rm_testkit::http::client();
    let connected = fleet::wait_connected(&stats, &client, &url, knobs.agents, limit).await;
    let mem_connected = server.memory().ok();
    eprintln!(
        "{connected} agents connected in {:.1} s; server RSS {}",
        started.elapsed().as_secs_f64(),
        mem_connected.map(|m| mib(m.rss_kib)).unwrap_or_default()
    );
    assert_eq!(
        connected as usize, knobs.agents,
        "not every agent connected"
    );

    // ── without policies ─────────────────────────────────────────────────
    let (mut hosts_plain, mut dash_plain) =
        idle_latencies(&api, knobs.agents, knobs.api_requests).await;
    eprintln!(
        "without policies: hosts API {}",
        latencies(&mut hosts_plain)
    );

    // ── the policy arrives ───────────────────────────────────────────────
    let (id, mut create) = roll_out(
        &api,
        &server,
        &stats,
        knobs.agents,
        None,
        policy("0 3 * * *"),
    )
    .await;
    eprintln!(
        "policy created in {:.2} s; every agent acked after {}, server in sync after {}",
        create.request.as_secs_f64(),
        secs(create.agents_acked),
        secs(create.server_in_sync)
    );
    let (mut hosts_policy, mut dash_policy) =
        idle_latencies(&api, knobs.agents, knobs.api_requests).await;
    eprintln!(
        "with the policy: hosts API {}",
        latencies(&mut hosts_policy)
    );

    // ── the policy changes ───────────────────────────────────────────────
    let (_, mut change) = roll_out(
        &api,
        &server,
        &stats,
        knobs.agents,
        Some(&id),
        policy("30 4 * * *"),
    )
    .await;
    eprintln!(
        "policy changed in {:.2} s; every agent acked after {}, server in sync after {}",
        change.request.as_secs_f64(),
        secs(change.agents_acked),
        secs(change.server_in_sync)
    );
    // The policy's coverage: every host it applies to, in one response.
    let started = Instant::now();
    let (status, covered) = api
        .get(&format!("/api/v1/policies/{id}/hosts"))
        .await
        .unwrap();
    let coverage = started.elapsed();
    assert!(status.is_success(), "{status}: {covered}");
    assert_eq!(covered.as_array().map(Vec::len), Some(knobs.agents));
    // The change reached every host as one schedule-version bump.
    let (_, sample) = api
        .get(&format!("/api/v1/hosts/{}", hosts[0].host_id))
        .await
        .unwrap();
    let schedule_version = sample["schedule_version"].as_u64().unwrap_or(0);

    shutdown.cancel();
    let _ = server.terminate(Duration::from_secs(60)).await;
    // The reconciler's own account of each change (read, decided, written).
    for line in server
        .log()
        .lines()
        .filter(|l| l.contains("policies applied"))
    {
        eprintln!("server: {line}");
    }

    println!();
    println!(
        "policy push: {} agents (env=bench, {repositories} shared repositories of {}), heartbeat {} s",
        knobs.agents, knobs.shared, knobs.heartbeat_secs
    );
    println!(
        "(server = release binary in its own process, RSS from its /proc/<pid>/status; agents = this process; both on the same {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let rollout = |r: &mut Rollout| -> Vec<String> {
        vec![
            format!(
                "request {:.2} s; all agents acked {}; server: {} of {} hosts in sync {}",
                r.request.as_secs_f64(),
                secs(r.agents_acked),
                if r.server_in_sync.is_some() {
                    r.hosts
                } else {
                    0
                },
                r.hosts,
                secs(r.server_in_sync)
            ),
            latencies(&mut r.hosts_api),
            format!(
                "{} max sampled (VmHWM after {})",
                mib(r.rss_max_kib),
                r.memory_after.map(|m| mib(m.peak_kib)).unwrap_or_default()
            ),
        ]
    };
    let created = rollout(&mut create);
    let changed = rollout(&mut change);
    let rows: Vec<(&str, String)> = vec![
        (
            "hosts enrolled (store, no HTTP)",
            format!("{} in {:.1} s", knobs.agents, enrol.as_secs_f64()),
        ),
        (
            "server RSS, all connected",
            mem_connected.map(|m| mib(m.rss_kib)).unwrap_or_default(),
        ),
        ("POST /policies (first apply)", created[0].clone()),
        ("  hosts API p50 / p99 meanwhile", created[1].clone()),
        ("  server RSS meanwhile", created[2].clone()),
        ("PUT /policies/{id} (new cron)", changed[0].clone()),
        ("  hosts API p50 / p99 meanwhile", changed[1].clone()),
        ("  server RSS meanwhile", changed[2].clone()),
        (
            "schedule_version of a host after both",
            schedule_version.to_string(),
        ),
        ("GET /policies/{id}/hosts (all hosts)", ms(Some(coverage))),
        (
            "hosts API p50 / p99, no policy",
            latencies(&mut hosts_plain),
        ),
        (
            "hosts API p50 / p99, with policy",
            latencies(&mut hosts_policy),
        ),
        ("dashboard p50 / p99, no policy", latencies(&mut dash_plain)),
        (
            "dashboard p50 / p99, with policy",
            latencies(&mut dash_policy),
        ),
    ];
    fleet::print_rows(&rows);
}

fn main() {
    let knobs = Knobs::from_env();
    fleet::bench_runtime("policy push bench", knobs.agents, &knobs.server_bin).block_on(run(knobs));
}
