//! `/metrics` with a large fleet: how long one scrape takes when every
//! host has its per-host series (online, protected, last backup time,
//! duration and size), and how big the page is.
//!
//! The hosts are enrolled straight through the store (as the fleet bench
//! does), each gets one successful backup through the store's own job
//! calls (what sets `last_backup_success_at` and the job the series read),
//! and a job history around it written in one SQL statement with `sqlite3`
//! (`METRICS_HISTORY` older backups and `METRICS_NEWER` later failed checks
//! per host, so the per-host lookup walks past jobs as it would in a
//! server that has run for months). Then the real server (the binary of
//! this build, as a child process) is scraped `METRICS_SCRAPES` times one
//! after another; every page is read by the strict parser.
//!
//! Run with `cargo bench -p restic-manager --bench metrics_scrape`. Knobs
//! (env): `METRICS_HOSTS` (10000), `METRICS_HISTORY` (30),
//! `METRICS_NEWER` (5), `METRICS_SCRAPES` (20). The server logs each
//! scrape's split (store reads, encoding) at debug; the last is printed.
//! `METRICS_KEEP_DATA=1` keeps the database for a closer look.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use chrono::Utc;
use rm_core::{JobId, JobStatus, JobTrigger};
use rm_store::prelude::*;
use rm_store::{JobEnd, NewJob};
use rm_testkit::fleet::{self, knob, print_rows};
use rm_testkit::prometheus::Page;
use rm_testkit::ServerProcess;
use tokio::time::Instant;

const ADMIN_PASSWORD: &str = "metrics-bench-password";

fn main() {
    let hosts = knob("METRICS_HOSTS", 10_000usize).max(1);
    let history = knob("METRICS_HISTORY", 30usize);
    let newer = knob("METRICS_NEWER", 5usize);
    let scrapes = knob("METRICS_SCRAPES", 20usize).max(1);
    let server_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_restic-manager"));
    let runtime = fleet::bench_runtime("metrics_scrape", 100, &server_bin);
    runtime.block_on(run(hosts, history, newer, scrapes, &server_bin));
}

async fn run(hosts: usize, history: usize, newer: usize, scrapes: usize, bin: &std::path::Path) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("server");
    if std::env::var_os("METRICS_KEEP_DATA").is_some() {
        eprintln!("keeping the data in {}", data_dir.display());
        std::mem::forget(data);
    }
    std::fs::create_dir_all(&data_dir).unwrap();
    let db = data_dir.join("restic-manager.db");

    // ── hosts and their last successful backups ──────────────────────────
    let started = Instant::now();
    {
        let store = rm_store_sqlite::SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        rm_server::ensure_first_admin(&store, Some(ADMIN_PASSWORD))
            .await
            .unwrap();
        let enrolled = fleet::enroll_hosts(&store, "scrape", hosts).await.unwrap();
        let now = Utc::now();
        for chunk in enrolled.chunks(500) {
            let jobs: Vec<NewJob> = chunk
                .iter()
                .map(|h| NewJob {
                    id: JobId::new(),
                    host_id: h.host_id,
                    kind: String::from("backup"),
                    params: serde_json::json!({"paths": ["/srv"]}),
                    trigger: JobTrigger::Schedule,
                    schedule_id: None,
                    status: JobStatus::Queued,
                    error: None,
                    created_at: now - chrono::Duration::minutes(10),
                })
                .collect();
            for job in store.create_jobs(&jobs).await.unwrap() {
                let begun = now - chrono::Duration::minutes(9);
                store
                    .advance_job(job.id, JobStatus::Dispatched, begun)
                    .await
                    .unwrap();
                store
                    .advance_job(job.id, JobStatus::Running, begun)
                    .await
                    .unwrap();
                let end = JobEnd {
                    status: JobStatus::Succeeded,
                    exit_code: Some(0),
                    stats: serde_json::json!({
                        "total_bytes_processed": 3_221_225_472u64,
                        "data_added": 1_258_291,
                        "total_duration": 42.5,
                    }),
                    error: None,
                    finished_at: now - chrono::Duration::minutes(8),
                    provisional: false,
                };
                store.finish_job(job.id, &end, None).await.unwrap();
            }
        }
        store.close().await;
    }
    let made = started.elapsed();
    eprintln!(
        "{hosts} hosts with a successful backup in {:.1} s",
        made.as_secs_f64()
    );

    // ── history around it ────────────────────────────────────────────────
    let started = Instant::now();
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {total}) \
         INSERT INTO jobs (id, host_id, kind, params, status, \"trigger\", stats, created_at, \
                           dispatched_at, started_at, finished_at) \
         SELECT h.id || '-' || n.i, h.id, \
                CASE WHEN n.i <= {history} THEN 'backup' ELSE 'check' END, '{{}}', \
                CASE WHEN n.i <= {history} THEN 'succeeded' ELSE 'failed' END, 'schedule', \
                '{{\"total_bytes_processed\": 1, \"data_added\": 1}}', \
                CASE WHEN n.i <= {history} THEN j.created_at - n.i * 86400000 \
                     ELSE j.created_at + (n.i - {history}) * 1000 END, \
                NULL, NULL, \
                CASE WHEN n.i <= {history} THEN j.finished_at - n.i * 86400000 \
                     ELSE j.finished_at + (n.i - {history}) * 1000 END \
         FROM hosts h JOIN jobs j ON j.host_id = h.id AND j.kind = 'backup' CROSS JOIN n;",
        total = history + newer,
    );
    if history + newer > 0 {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(&sql)
            .output()
            .expect("sqlite3 (Debian package sqlite3) writes the job history");
        assert!(
            out.status.success(),
            "sqlite3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let history_took = started.elapsed();
    eprintln!(
        "{} history jobs written in {:.1} s",
        hosts * (history + newer),
        history_took.as_secs_f64()
    );

    // ── the server, scraped ──────────────────────────────────────────────
    let server = ServerProcess::start_in(
        bin,
        &data_dir,
        "127.0.0.1:0".parse().unwrap(),
        &[],
        &[
            ("RM_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("RM_LOG", "warn,rm_server::metrics=debug"),
        ],
    )
    .await
    .unwrap();
    let client = rm_testkit::http::client();
    let mut times = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    let mut series = 0;
    // One scrape first, so the figures are of a warm server and page cache.
    let first = Instant::now();
    let text = fleet::scrape(&client, &server.url).await.unwrap();
    let cold = first.elapsed();
    for _ in 0..scrapes {
        let started = Instant::now();
        let text = fleet::scrape(&client, &server.url).await.unwrap();
        times.push(started.elapsed());
        bytes = text.len();
    }
    let page = Page::parse(&text).unwrap_or_else(|e| panic!("malformed page: {e:#}"));
    let per_host = page.series("rm_host_protected").count();
    assert_eq!(per_host, hosts, "one rm_host_protected per host");
    assert_eq!(
        page.series("rm_host_last_backup_size_bytes").count(),
        hosts,
        "every host's last backup was found"
    );
    assert!(page
        .series("rm_host_last_backup_size_bytes")
        .all(|s| s.value == 3_221_225_472.0));
    series += page.samples.len();
    let cpu = server.cpu_time().ok();
    // The server's own split of each scrape (debug log): store reads, then
    // encoding.
    let log = server.log();
    let split: Vec<&str> = log.lines().filter(|l| l.contains("metrics page")).collect();
    if let Some(last) = split.last() {
        eprintln!("last scrape as the server saw it: {last}");
    }

    let mut sorted = times.clone();
    let p50 = fleet::quantile(&mut sorted, 0.5).unwrap_or_default();
    let p99 = fleet::quantile(&mut sorted, 0.99).unwrap_or_default();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!();
    println!(
        "metrics_scrape: {hosts} hosts, {} history jobs, {scrapes} scrapes ({} build)",
        hosts * (history + newer + 1),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    print_rows(&[
        (
            "hosts and backups made (store)",
            format!("{:.1} s", made.as_secs_f64()),
        ),
        ("first scrape", ms(cold)),
        ("scrape p50 / p99", format!("{} / {}", ms(p50), ms(p99))),
        (
            "page",
            format!("{:.1} MB, {series} samples", bytes as f64 / 1e6),
        ),
        (
            "server CPU, whole run",
            cpu.map(|c| format!("{:.1} s", c.as_secs_f64()))
                .unwrap_or_else(|| String::from("n/a")),
        ),
    ]);
}
