//! `restic-manager admin migrate-store` end to end: a SQLite store that
//! went through a real backup (hosts, jobs, logs, snapshots, stats, audit,
//! a policy, an alert, a channel and its outbox, a schedule, a silence, a
//! user, an API token) copied into a real PostgreSQL and back, compared
//! row by row and table by table; a server started on the copy showing
//! the same fleet; refusal of a non-empty target and `--replace`; source
//! schemas of another version refused.
//!
//! The PostgreSQL tests need `RM_TEST_POSTGRES_URL` (scripts/test starts a
//! temporary cluster); without it they skip with the reason printed, and
//! fail under `CI=true`. Each works in a database of its own. Database
//! URLs reach the binary through `RM_MIGRATE_FROM` / `RM_MIGRATE_TO`, never
//! its command line (they hold the password).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use rm_store::copy::{RowSource, Value, TABLES};
use rm_store_postgres::copy::PgRowSource;
use rm_store_postgres::PostgresOptions;
use rm_store_sqlite::copy::SqliteRowSource;
use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::make_tree;
use rm_testkit::{wait_until, Api, ServerProcess, StoppedServer, ADMIN_PASSWORD};
use serde_json::{json, Value as Json};

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const REPO_PASSWORD: &str = "migrate-repository-password";
const CAROL_PASSWORD: &str = "carol-password-1234";

/// The cluster's admin URL, or `None` with the reason printed; under CI a
/// missing cluster fails the test.
fn postgres(test: &str) -> Option<String> {
    rm_testkit::Backend::postgres_or_skip(test)
}

/// A new empty database on the cluster, dropped with the value.
struct Database {
    admin: String,
    name: String,
    /// Its URL (with the cluster's password).
    url: String,
}

impl Database {
    async fn new(admin: &str) -> Database {
        let name = format!(
            "rm_migrate_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let pool = sqlx::PgPool::connect(admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(&format!("/{name}"));
        Database {
            admin: admin.to_owned(),
            name,
            url: url.to_string(),
        }
    }

    async fn drop(self) {
        let pool = sqlx::PgPool::connect(&self.admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
}

/// Runs `admin migrate-store` with the URLs in the environment.
fn migrate(from: &str, to: &str, extra: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(["admin", "migrate-store"])
        .args(extra)
        .env("RM_MIGRATE_FROM", from)
        .env("RM_MIGRATE_TO", to)
        .env_remove("RM_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails the test unless the migration succeeded; returns its stdout.
fn migrated(output: Output) -> String {
    assert!(
        output.status.success(),
        "migrate-store failed:\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Every row of every table, by column name, flags as 0/1 (SQLite's
/// INTEGER and PostgreSQL's BOOLEAN compare equal), in key order.
type Dump = BTreeMap<&'static str, Vec<BTreeMap<String, Value>>>;

async fn dump(mut source: Box<dyn RowSource>) -> Dump {
    let mut all = Dump::new();
    for table in TABLES {
        let columns = source.columns(table).await.unwrap();
        let rows = source.page(table, &columns, None, 1_000_000).await.unwrap();
        let mut rows: Vec<BTreeMap<String, Value>> = rows
            .into_iter()
            .map(|row| {
                columns
                    .iter()
                    .cloned()
                    .zip(row.into_iter().map(|v| match v {
                        Value::Bool(b) => Value::Int(i64::from(b)),
                        other => other,
                    }))
                    .collect()
            })
            .collect();
        rows.sort_by_key(|row| format!("{row:?}"));
        all.insert(table.name, rows);
    }
    source.close().await.unwrap();
    all
}

async fn dump_sqlite(url: &str) -> Dump {
    dump(Box::new(SqliteRowSource::open(url).await.unwrap())).await
}

async fn dump_postgres(url: &str) -> Dump {
    dump(Box::new(
        PgRowSource::open(url, &PostgresOptions::default())
            .await
            .unwrap(),
    ))
    .await
}

/// Row counts of a dump, table by table.
fn counts(dump: &Dump) -> BTreeMap<&'static str, usize> {
    dump.iter().map(|(t, rows)| (*t, rows.len())).collect()
}

/// Asserts two dumps are equal, naming the first table that differs.
fn assert_same(left: &Dump, right: &Dump, what: &str) {
    assert_eq!(counts(left), counts(right), "{what}: row counts differ");
    for table in TABLES {
        assert!(
            left[table.name] == right[table.name],
            "{what}: table {} differs:\n{:#?}\nvs\n{:#?}",
            table.name,
            left[table.name],
            right[table.name]
        );
    }
}

/// A stopped server's SQLite store after a real backup and some of
/// everything an operator makes.
struct Populated {
    /// Keeps the data directory (database and `secret.key`).
    _stopped: StoppedServer,
    data_dir: PathBuf,
    host_id: String,
    repo: String,
    _scratch: tempfile::TempDir,
}

impl Populated {
    fn url(&self) -> String {
        format!(
            "sqlite://{}",
            self.data_dir.join("restic-manager.db").display()
        )
    }
}

async fn populated() -> Populated {
    let restic = rm_testkit::restic::binary();
    let host = Host::start(Path::new(BIN), "migrated", &restic, &[]).await;
    succeeded(&host.set_local_repository(REPO_PASSWORD).await);
    let src = host.scratch().join("src");
    make_tree(&src);
    let backup = host
        .run(
            "backup",
            json!({"paths": [src.display().to_string()], "tags": ["m"]}),
        )
        .await;
    succeeded(&backup);
    host.wait_snapshots(1).await;
    succeeded(&host.run("stats", json!({})).await);
    let admin = &host.admin;

    // A failing job: its job_failed alert and the channel's outbox entry.
    let (status, channel) = admin
        .post(
            "/api/v1/notification-channels",
            json!({"name": "hook", "kind": "webhook",
                   "config": {"url": "http://127.0.0.1:9/hook"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{channel}");
    let failed = host
        .run("backup", json!({"paths": ["/no/such/folder/anywhere"]}))
        .await;
    assert_ne!(failed["status"], "succeeded", "{failed:#}");
    let query = format!("/api/v1/alerts?host_id={}&kind=job_failed", host.id);
    wait_until(
        std::time::Duration::from_secs(30),
        "the job_failed alert",
        || async {
            !admin
                .get(&query)
                .await
                .unwrap()
                .1
                .as_array()
                .unwrap()
                .is_empty()
        },
    )
    .await
    .unwrap();

    let (status, schedule) = admin
        .post(
            &format!("/api/v1/hosts/{}/schedules", host.id),
            json!({"kind": "backup", "cron": "0 2 * * *",
                   "params": {"paths": [src.display().to_string()]}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{schedule}");
    admin
        .create_policy(json!({"name": "prod", "selector": {"env": "prod"}, "priority": 5}))
        .await
        .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::days(1);
    let (status, silence) = admin
        .post(
            "/api/v1/silences",
            json!({"selector": {"env": "lab"}, "until": until.to_rfc3339(), "reason": "moving"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{silence}");
    admin
        .create_user("carol", CAROL_PASSWORD, "viewer", None)
        .await
        .unwrap();
    admin.api_token("scripts", None).await.unwrap();

    let host_id = host.id.clone();
    let repo = host.scratch().join("repo").display().to_string();
    let data_dir = host.server.data_dir().to_path_buf();
    assert!(
        data_dir.join("restic-manager.db").is_file(),
        "the fixture needs the test server on SQLite (its database file is the source)"
    );
    host.agent
        .process
        .terminate(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    // The scratch folder (the repository) outlives the host.
    let scratch = tempfile::tempdir().unwrap();
    let stopped = host.server.stop_keeping_data().await.unwrap();
    Populated {
        _stopped: stopped,
        data_dir,
        host_id,
        repo,
        _scratch: scratch,
    }
}

/// SQLite → PostgreSQL → SQLite: every row of every table arrives, the
/// counts are verified and reported, a second copy into the now full
/// database is refused without changing it, and `--replace` copies again.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_store_goes_to_postgres_and_back_unchanged() {
    let Some(admin) = postgres("a_real_store_goes_to_postgres_and_back_unchanged") else {
        return;
    };
    let store = populated().await;
    let source = dump_sqlite(&store.url()).await;
    for table in [
        "hosts",
        "jobs",
        "job_logs",
        "snapshots",
        "repo_stats",
        "audit_log",
        "users",
        "api_tokens",
        "host_repositories",
        "schedules",
        "policies",
        "alerts",
        "silences",
        "notification_channels",
        "notification_outbox",
        "sealing_key",
        "sessions",
    ] {
        assert!(!source[table].is_empty(), "the fixture has no {table}");
    }

    let pg = Database::new(&admin).await;
    let stdout = migrated(migrate(&store.url(), &pg.url, &["--batch-rows", "7"]));
    let total: usize = counts(&source).values().sum();
    assert!(stdout.contains(&format!("Copied {total} rows")), "{stdout}");
    let line = format!("  {:<24} {:>12}", "job_logs", source["job_logs"].len());
    assert!(stdout.contains(&line), "{stdout}");
    assert!(!stdout.contains(&pg.url), "the password is shown: {stdout}");
    let on_postgres = dump_postgres(&pg.url).await;
    assert_same(&source, &on_postgres, "SQLite → PostgreSQL");

    // A full target is refused, named, and left as it was.
    let refused = migrate(&store.url(), &pg.url, &[]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("already holds data"), "{stderr}");
    assert!(
        stderr.contains(&format!("job_logs: {} rows", source["job_logs"].len())),
        "{stderr}"
    );
    assert!(!stderr.contains(&pg.url), "the password is shown: {stderr}");
    assert_same(&source, &dump_postgres(&pg.url).await, "after the refusal");

    // New identities follow the copied ones.
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor_kind, action, details) \
         VALUES (0, 'cli', 'test', '{}') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let copied_max = source["audit_log"]
        .iter()
        .map(|row| match row["id"] {
            Value::Int(id) => id,
            ref other => panic!("audit id {other:?}"),
        })
        .max()
        .unwrap();
    assert_eq!(next, copied_max + 1);
    sqlx::query("DELETE FROM audit_log WHERE id = $1")
        .bind(next)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let replaced = migrated(migrate(&store.url(), &pg.url, &["--replace"]));
    assert!(replaced.contains("Deleted the"), "{replaced}");
    assert_same(&source, &dump_postgres(&pg.url).await, "after --replace");

    let back_dir = tempfile::tempdir().unwrap();
    let back = format!("sqlite://{}", back_dir.path().join("back.db").display());
    migrated(migrate(&pg.url, &back, &[]));
    assert_same(&source, &dump_sqlite(&back).await, "PostgreSQL → SQLite");
    pg.drop().await;
}

/// The views a server gives of the fleet that a copy must keep.
async fn views(api: &Api, host_id: &str) -> BTreeMap<String, Json> {
    let mut paths = vec![
        "/api/v1/hosts".to_owned(),
        format!("/api/v1/hosts/{host_id}"),
        format!("/api/v1/hosts/{host_id}/snapshots"),
        format!("/api/v1/hosts/{host_id}/schedules"),
        format!("/api/v1/hosts/{host_id}/repository"),
        "/api/v1/jobs?limit=100".to_owned(),
        "/api/v1/users".to_owned(),
        "/api/v1/policies".to_owned(),
        "/api/v1/alerts?kind=job_failed".to_owned(),
        "/api/v1/silences".to_owned(),
        "/api/v1/notification-channels".to_owned(),
    ];
    let (status, jobs) = api.get("/api/v1/jobs?limit=100").await.unwrap();
    assert_eq!(status, 200, "{jobs}");
    for job in jobs.as_array().unwrap() {
        paths.push(format!("/api/v1/jobs/{}/logs", job["id"].as_str().unwrap()));
    }
    let mut seen = BTreeMap::new();
    for path in paths {
        let (status, mut body) = api.get(&path).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        if path.ends_with("/notification-channels") {
            // Each server retries the pending delivery (to a port nobody
            // listens on) when it starts: its tallies move on their own.
            for channel in body.as_array_mut().unwrap() {
                let channel = channel.as_object_mut().unwrap();
                for tally in DELIVERY_TALLIES {
                    assert!(
                        channel.remove(*tally).is_some(),
                        "no {tally} in {channel:?}"
                    );
                }
            }
        }
        seen.insert(path, body);
    }
    seen
}

/// What a channel's view counts of its deliveries.
const DELIVERY_TALLIES: &[&str] = &[
    "delivered",
    "failed",
    "given_up",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "failing_since",
];

/// Starts a server on `target` (a copy of `store`, given the source's
/// `secret.key`) and one on `store`, and checks the copy's server shows
/// what the source's does: hosts, jobs, every log line, snapshots,
/// schedules, users (who log in with their passwords), policies, alerts,
/// silences, channels, and the sealed repository settings, which still
/// open.
async fn assert_a_server_shows_the_same_fleet(store: &Populated, target: &str) {
    let target_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        store.data_dir.join(rm_server::KEY_FILE),
        target_dir.path().join(rm_server::KEY_FILE),
    )
    .unwrap();
    let env = [
        ("RM_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("RM_DATABASE_URL", target),
    ];
    let mut on_target = ServerProcess::start_in(
        Path::new(BIN),
        target_dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        &["--heartbeat-seconds", "1"],
        &env,
    )
    .await
    .unwrap();
    let mut on_source = ServerProcess::start_in(
        Path::new(BIN),
        &store.data_dir,
        "127.0.0.1:0".parse().unwrap(),
        &["--heartbeat-seconds", "1"],
        &[("RM_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    )
    .await
    .unwrap();

    let expected = views(&on_source.admin().await.unwrap(), &store.host_id).await;
    let seen = views(&on_target.admin().await.unwrap(), &store.host_id).await;
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>()
    );
    for (path, body) in &expected {
        assert_eq!(&seen[path], body, "{path} differs on the migrated store");
    }
    let logs = expected
        .iter()
        .filter(|(path, _)| path.ends_with("/logs"))
        .map(|(_, lines)| lines.as_array().unwrap().len())
        .sum::<usize>();
    assert!(logs > 0, "the jobs have log lines to compare");
    let repository = &seen[&format!("/api/v1/hosts/{}/repository", store.host_id)];
    assert!(
        repository.to_string().contains(&store.repo),
        "the sealed repository settings do not open: {repository}"
    );
    on_target
        .anonymous()
        .login("carol", CAROL_PASSWORD)
        .await
        .expect("carol logs in on the migrated store with her password");

    on_target
        .terminate(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    on_source
        .terminate(std::time::Duration::from_secs(20))
        .await
        .unwrap();
}

/// A server started on the migrated PostgreSQL store shows the same fleet
/// as one on the SQLite source ([`assert_a_server_shows_the_same_fleet`]).
#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_the_migrated_postgres_store_shows_the_same_fleet() {
    let Some(admin) = postgres("a_server_on_the_migrated_postgres_store_shows_the_same_fleet")
    else {
        return;
    };
    let store = populated().await;
    let pg = Database::new(&admin).await;
    migrated(migrate(&store.url(), &pg.url, &[]));
    assert_a_server_shows_the_same_fleet(&store, &pg.url).await;
    pg.drop().await;
}

/// The same on a SQLite copy: what a server shows survives the copy, and
/// the comparison itself holds for two servers on equal stores.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_a_migrated_sqlite_store_shows_the_same_fleet() {
    let store = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let copy = format!("sqlite://{}", dir.path().join("copy.db").display());
    migrated(migrate(&store.url(), &copy, &[]));
    assert_a_server_shows_the_same_fleet(&store, &copy).await;
}

/// SQLite → SQLite (no PostgreSQL needed): a target holding data is
/// refused with its tables named and left byte for byte as it was;
/// `--replace` empties and copies it; a source of a newer or older schema
/// than the binary's is refused.
#[tokio::test]
async fn sqlite_targets_are_refused_when_full_and_replaced_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = |name: &str| dir.path().join(name);
    let admin_user = |data_dir: &Path, name: &str| {
        let output = std::process::Command::new(BIN)
            .args(["admin", "create-user", "--data-dir"])
            .arg(data_dir)
            .args(["--username", name])
            .env_remove("RM_DATABASE_URL")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    };
    admin_user(&data("a"), "alice");
    admin_user(&data("b"), "bob");
    let url = |name: &str| {
        format!(
            "sqlite://{}",
            data(name).join("restic-manager.db").display()
        )
    };

    let before = dump_sqlite(&url("b")).await;
    let bytes = std::fs::read(data("b").join("restic-manager.db")).unwrap();
    let refused = migrate(&url("a"), &url("b"), &[]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("already holds data (users: 1 rows, audit_log: 1 rows)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(
        std::fs::read(data("b").join("restic-manager.db")).unwrap(),
        bytes
    );
    assert_same(&before, &dump_sqlite(&url("b")).await, "after the refusal");

    let same = migrate(&url("a"), &url("a"), &["--replace"]);
    assert!(
        text(&same.stderr).contains("the same database"),
        "{}",
        text(&same.stderr)
    );

    migrated(migrate(&url("a"), &url("b"), &["--replace"]));
    assert_same(
        &dump_sqlite(&url("a")).await,
        &dump_sqlite(&url("b")).await,
        "--replace",
    );

    migrated(migrate(&url("a"), &url("c"), &[]));
    assert_same(
        &dump_sqlite(&url("a")).await,
        &dump_sqlite(&url("c")).await,
        "a new file",
    );

    // A source written by a newer binary, then one not yet migrated.
    let pool = sqlx::SqlitePool::connect(&url("a")).await.unwrap();
    let latest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?, 'from the future', TRUE, x'00', 0)",
    )
    .bind(latest + 1000)
    .execute(&pool)
    .await
    .unwrap();
    let newer = migrate(&url("a"), &url("d"), &[]);
    let stderr = text(&newer.stderr);
    assert!(!newer.status.success());
    assert!(
        stderr.contains("newer than this restic-manager knows"),
        "{stderr}"
    );
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version >= ?")
        .bind(latest)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let older = migrate(&url("a"), &url("d"), &[]);
    let stderr = text(&older.stderr);
    assert!(!older.status.success());
    assert!(
        stderr.contains("older than this restic-manager's"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Start this version's server on it once"),
        "{stderr}"
    );

    let missing = migrate(&url("nowhere"), &url("e"), &[]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
}
