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
//! The time from a deadline to delivery at a real receiver is measured by
//! the `notifications` part of this bench (see docs/alerts.md).
//!
//! Run with `cargo bench -p restic-manager --bench alerts`. Knobs (env):
//! `RM_BENCH_HOSTS` (10000), `RM_BENCH_STEP_SECS` (60).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use rm_core::schedule::ManualClock;
use rm_core::Labels;
use rm_server::alerts::evaluator::{Evaluator, Settings};
use rm_store::{AlertStore, HostPatch, Store};
use rm_testkit::fleet::{knob, print_rows};
use rm_testkit::process_cpu;
use rm_testkit::store::{connect_host, enrol_host, temp_store};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(evaluator_day());
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
    let (_dir, store) = temp_store().await.unwrap();
    let store = Arc::new(store);
    let setup = Instant::now();
    for i in 0..hosts {
        let id = enrol_host(&store, &format!("host-{i:05}"), Labels::default(), start)
            .await
            .unwrap();
        let connection = connect_host(&store, id, start).await.unwrap();
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
