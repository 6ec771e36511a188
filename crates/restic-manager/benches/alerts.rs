//! What deciding alerts costs with a large fleet: 10,000 hosts in a real
//! SQLite store whose stale deadlines are spread evenly over a day, half of
//! them offline, and the real alert evaluator on a manual clock walked
//! through that day a minute at a time — every deadline fires, every
//! notification is taken and marked handed over, as the server's task
//! does. Printed:
//!
//! - the full read of the fleet (start, policy change, safety net);
//! - the CPU of the simulated day: in all, per fired alert, and per idle
//!   wake-up (a minute in which nothing came due) — what a scan of every
//!   host every few seconds would cost instead is the full read's figure
//!   times 17,280 a day;
//! - how many alerts fired (each host's stale and, for offline ones, its
//!   offline alert).
//!
//! Then the real thing: the release server in its own process over a
//! database of the same 10,000 hosts (deadlines from one to 25 hours
//! away), of which `RM_BENCH_SAMPLE` come due a minute or two after it
//! starts, and a webhook channel to a real HTTP receiver on 127.0.0.1.
//! Printed: the time from each sampled deadline to the notification's
//! arrival at the receiver (p50, p99, max — the target is 30 s), and the
//! server's CPU while idle with 10,000 deadlines indexed and while the
//! sample fires.
//!
//! Run with `cargo bench -p restic-manager --bench alerts`. Knobs (env):
//! `RM_BENCH_HOSTS` (10000), `RM_BENCH_STEP_SECS` (60), `RM_BENCH_SAMPLE`
//! (200), `RM_BENCH_SERVER_BIN` (default: this build's binary).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use rm_core::schedule::ManualClock;
use rm_core::Labels;
use rm_server::alerts::evaluator::{Evaluator, Settings};
use rm_store::prelude::*;
use rm_store::HostPatch;
use rm_testkit::fleet::{self, knob, print_rows};
use rm_testkit::store::{connect_host, enrol_host, temp_store};
use rm_testkit::{process_cpu, Api, HttpReceiver, ServerProcess};
use serde_json::json;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(evaluator_day());
    runtime.block_on(deliveries());
}

fn cpu() -> Duration {
    process_cpu(std::process::id()).unwrap()
}

async fn evaluator_day() {
    let hosts: usize = knob("RM_BENCH_HOSTS", 10_000);
    let step: i64 = knob("RM_BENCH_STEP_SECS", 60);
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().unwrap();
    let day = 86_400u64;

    println!("alerts bench: {hosts} hosts, stale deadlines spread over a day, half offline");
    let (_db, store) = temp_store().await.unwrap();
    let setup = Instant::now();
    for i in 0..hosts {
        let id = enrol_host(&*store, &format!("host-{i:05}"), Labels::default(), start)
            .await
            .unwrap();
        let connection = connect_host(&*store, id, start).await.unwrap();
        if i % 2 == 1 {
            store
                .mark_host_offline(id, &connection, start + chrono::Duration::minutes(1))
                .await
                .unwrap();
        }
        // Freshness from one minute to a day: deadlines spread evenly.
        let freshness = 60 + (day - 60) * i as u64 / hosts as u64;
        let patch = HostPatch {
            freshness_seconds: Some(Some(freshness)),
            offline_seconds: Some(Some(freshness)),
            ..HostPatch::default()
        };
        store.patch_host(id, &patch, None).await.unwrap();
    }
    println!("  (set-up: {:.1} s)", setup.elapsed().as_secs_f64());

    let clock = Arc::new(ManualClock::new(start));
    let settings = Settings {
        repeat: chrono::Duration::hours(24),
        grace: chrono::Duration::zero(),
    };
    let mut evaluator = Evaluator::new(store.clone(), clock.clone(), settings);

    let (wall, cpu_before) = (Instant::now(), cpu());
    evaluator.resync().await.unwrap();
    let resync_wall = wall.elapsed();
    let resync_cpu = cpu() - cpu_before;
    let indexed = evaluator.indexed();

    let mut fired_minutes = 0u64;
    let mut idle_minutes = 0u64;
    let mut idle_cpu = Duration::ZERO;
    let mut handed = 0usize;
    let day_cpu_before = cpu();
    let day_wall = Instant::now();
    let mut t = start;
    while t < start + chrono::Duration::seconds(day as i64 + 120) {
        t += chrono::Duration::seconds(step);
        clock.set(t);
        let before = cpu();
        let fired = evaluator.run_deadlines().await.unwrap();
        let due = evaluator.due().await.unwrap();
        for d in &due {
            evaluator
                .handed_over(d.alert.id, d.alert.firing)
                .await
                .unwrap();
        }
        handed += due.len();
        if fired == 0 && due.is_empty() {
            idle_minutes += 1;
            idle_cpu += cpu() - before;
        } else {
            fired_minutes += 1;
        }
    }
    let day_cpu = cpu() - day_cpu_before;
    let day_wall = day_wall.elapsed();
    let firing: u64 = store
        .firing_alert_counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    let per_fire = day_cpu.as_secs_f64() * 1e6 / firing.max(1) as f64;
    let per_idle = idle_cpu.as_secs_f64() * 1e6 / idle_minutes.max(1) as f64;
    print_rows(&[
        ("deadlines indexed", format!("{indexed}")),
        (
            "full read of the fleet",
            format!(
                "{:.0} ms wall, {:.0} ms CPU",
                resync_wall.as_secs_f64() * 1e3,
                resync_cpu.as_secs_f64() * 1e3
            ),
        ),
        (
            "simulated day",
            format!(
                "{:.2} s CPU ({:.2} s wall) for {firing} alerts fired, {handed} notifications handed over",
                day_cpu.as_secs_f64(),
                day_wall.as_secs_f64()
            ),
        ),
        ("CPU per fired alert", format!("{per_fire:.0} µs")),
        (
            "CPU per idle wake-up",
            format!("{per_idle:.0} µs ({idle_minutes} idle, {fired_minutes} busy steps)"),
        ),
        (
            "a scan every 5 s instead",
            format!(
                "{:.0} s CPU a day (17,280 full reads)",
                resync_cpu.as_secs_f64() * 17_280.0
            ),
        ),
    ]);
}

const ADMIN_PASSWORD: &str = "alerts-bench-password";

async fn deliveries() {
    let hosts: usize = knob("RM_BENCH_HOSTS", 10_000);
    let sample: usize = knob("RM_BENCH_SAMPLE", 200).min(hosts);
    let server_bin: PathBuf = std::env::var_os("RM_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_restic-manager")));
    println!("alerts bench, real server: {hosts} hosts, {sample} coming due after it starts, a webhook receiver");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("server");
    let url = format!("sqlite://{}", data_dir.join("restic-manager.db").display());
    let store = rm_store_sqlite::SqliteStore::open(&url).await.unwrap();
    rm_server::ensure_first_admin(&store, Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let enrolled = fleet::enroll_hosts(&store, "bench", hosts).await.unwrap();
    // Deadlines: the sample's spread over 60 s starting 90 s from now (the
    // server starts meanwhile), everyone else's from one to 25 hours away.
    let first_due = Utc::now() + chrono::Duration::seconds(90);
    let mut deadlines = HashMap::new();
    for (i, host) in enrolled.iter().enumerate() {
        let id = host.host_id;
        let record = store.host(id).await.unwrap().unwrap();
        let due = if i < sample {
            first_due + chrono::Duration::milliseconds((60_000 * i / sample) as i64)
        } else {
            Utc::now() + chrono::Duration::seconds(3600 + (86_400 * i / hosts) as i64)
        };
        let freshness = (due - record.enrolled_at).num_seconds().max(60) as u64;
        deadlines.insert(
            id.to_string(),
            record.enrolled_at + chrono::Duration::seconds(freshness as i64),
        );
        let patch = HostPatch {
            freshness_seconds: Some(Some(freshness)),
            ..HostPatch::default()
        };
        store.patch_host(id, &patch, None).await.unwrap();
    }
    store.close().await;

    let server = ServerProcess::start_in(
        &server_bin,
        &data_dir,
        "127.0.0.1:0".parse().unwrap(),
        &["--alert-grace-seconds", "0"],
        &[("RM_ADMIN_PASSWORD", ADMIN_PASSWORD), ("RM_LOG", "warn")],
    )
    .await
    .unwrap();
    let pid = server.pid().unwrap();
    let api = Api::new(&server.url, None)
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    let receiver = HttpReceiver::start().await.unwrap();
    api.create_channel(json!({
        "name": "bench",
        "kind": "webhook",
        "config": {"url": receiver.url("/hook")},
        "kinds": ["backup_stale"],
    }))
    .await
    .unwrap();

    // Idle: every deadline indexed, none due yet.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_window = Duration::from_secs(20);
    let before = process_cpu(pid).unwrap();
    tokio::time::sleep(idle_window).await;
    let idle_cpu = process_cpu(pid).unwrap() - before;

    let until_first = (first_due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_first).await;
    let busy_before = process_cpu(pid).unwrap();
    let busy_started = Instant::now();
    let got = receiver
        .wait_for(sample, Duration::from_secs(300))
        .await
        .unwrap();
    let busy_cpu = process_cpu(pid).unwrap() - busy_before;
    let busy_wall = busy_started.elapsed();
    let mut latencies: Vec<Duration> = got
        .iter()
        .filter_map(|r| {
            let body = r.json().ok()?;
            let due = deadlines.get(body["alert"]["host_id"].as_str()?)?;
            (r.received_at - *due).to_std().ok()
        })
        .collect();
    let quantile = |q: f64, l: &mut Vec<Duration>| {
        fleet::quantile(l, q)
            .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_default()
    };
    let p50 = quantile(0.5, &mut latencies);
    let p99 = quantile(0.99, &mut latencies);
    let max = latencies
        .iter()
        .max()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        .unwrap_or_default();
    print_rows(&[
        (
            "notifications received",
            format!("{} of {sample}", latencies.len()),
        ),
        ("deadline to receiver, p50", p50),
        ("deadline to receiver, p99", p99),
        ("deadline to receiver, max", max),
        (
            "server CPU, idle",
            format!(
                "{:.1} % of a core ({} ms in {} s, 10,000 deadlines indexed)",
                idle_cpu.as_secs_f64() * 100.0 / idle_window.as_secs_f64(),
                idle_cpu.as_millis(),
                idle_window.as_secs()
            ),
        ),
        (
            "server CPU, sample firing",
            format!(
                "{} ms in {:.0} s ({:.1} ms per alert fired and delivered)",
                busy_cpu.as_millis(),
                busy_wall.as_secs_f64(),
                busy_cpu.as_secs_f64() * 1e3 / sample.max(1) as f64
            ),
        ),
    ]);
    drop(server);
}
