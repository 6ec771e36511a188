//! The PostgreSQL schema against the SQLite store's (the same tables,
//! columns, nullability and indexes, so column lists and `migrate-store`
//! work on both), and the error mapping against a real server's errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{admin, drop_schema, fresh_schema, open};
use rm_store::{StorageFault, StoreError};
use rm_store_postgres::codec;
use rm_store_sqlite::SqliteStore;

/// Columns that are INTEGER 0/1 flags on SQLite and BOOLEAN here.
const FLAGS: &[(&str, &str)] = &[
    ("agent_tokens", "pending"),
    ("command_results", "accepted"),
    ("hosts", "online"),
    ("jobs", "end_provisional"),
    ("repo_stats", "lock_present"),
    ("schedules", "enabled"),
];

/// Columns only PostgreSQL has: stand-ins for what SQLite has implicitly.
const ONLY_HERE: &[(&str, &str)] = &[("repo_stats", "rowid")];

/// table → column → (type, nullable)
type Columns = BTreeMap<String, BTreeMap<String, (String, bool)>>;

async fn sqlite_schema() -> (Columns, BTreeSet<String>) {
    let store = SqliteStore::open("sqlite::memory:").await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut columns = Columns::new();
    for table in tables {
        let rows: Vec<(String, String, bool, bool)> =
            sqlx::query_as("SELECT name, upper(type), \"notnull\", pk FROM pragma_table_info(?)")
                .bind(&table)
                .fetch_all(store.pool())
                .await
                .unwrap();
        columns.insert(
            table,
            rows.into_iter()
                // SQLite lets a primary key column be NULL unless declared
                // NOT NULL; PostgreSQL never does.
                .map(|(name, ty, not_null, pk)| (name, (ty, !(not_null || pk))))
                .collect(),
        );
    }
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' \
         AND name NOT LIKE 'sqlite_autoindex_%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    store.close().await;
    (columns, indexes.into_iter().collect())
}

async fn postgres_schema(admin: &sqlx::PgPool, schema: &str) -> (Columns, BTreeSet<String>) {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT, is_nullable::TEXT \
         FROM information_schema.columns WHERE table_schema = $1 \
         AND table_name <> '_sqlx_migrations'",
    )
    .bind(schema)
    .fetch_all(admin)
    .await
    .unwrap();
    let mut columns = Columns::new();
    for (table, column, ty, nullable) in rows {
        columns
            .entry(table)
            .or_default()
            .insert(column, (ty, nullable == "YES"));
    }
    // Constraint-backed indexes (primary keys, UNIQUE) are SQLite's
    // autoindexes; only the named CREATE INDEXes are compared.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT i.indexname::TEXT FROM pg_indexes i WHERE i.schemaname = $1 \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
                         WHERE c.conname = i.indexname AND c.connamespace = $1::regnamespace)",
    )
    .bind(schema)
    .fetch_all(admin)
    .await
    .unwrap();
    (columns, indexes.into_iter().collect())
}

#[tokio::test]
async fn the_schema_is_the_sqlite_schema() {
    let Some(url) = common::admin_url("the_schema_is_the_sqlite_schema") else {
        return;
    };
    let admin = admin(&url).await;
    let schema = fresh_schema(&admin).await;
    open(&url, &schema).await.close().await;

    let (lite, lite_indexes) = sqlite_schema().await;
    let (pg, pg_indexes) = postgres_schema(&admin, &schema).await;
    assert_eq!(
        lite.keys().collect::<Vec<_>>(),
        pg.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    assert_eq!(lite_indexes, pg_indexes, "the same indexes");
    for (table, lite_columns) in &lite {
        let pg_columns = &pg[table];
        for (column, (lite_type, lite_nullable)) in lite_columns {
            let Some((pg_type, pg_nullable)) = pg_columns.get(column) else {
                panic!("{table}.{column} is missing");
            };
            assert_eq!(lite_nullable, pg_nullable, "{table}.{column} nullability");
            let flag = FLAGS.contains(&(table.as_str(), column.as_str()));
            let expected = match (lite_type.as_str(), flag) {
                ("INTEGER", true) => "boolean",
                ("INTEGER", false) => "bigint",
                ("TEXT", _) => "text",
                ("BLOB", _) => "bytea",
                (other, _) => panic!("{table}.{column}: unexpected SQLite type {other}"),
            };
            assert_eq!(pg_type, expected, "{table}.{column}");
        }
        for column in pg_columns.keys() {
            assert!(
                lite_columns.contains_key(column)
                    || ONLY_HERE.contains(&(table.as_str(), column.as_str())),
                "{table}.{column} is not in the SQLite schema"
            );
        }
    }
    drop_schema(&admin, &schema).await;
}

/// Inserts a user the way the stores do.
async fn insert_user(pool: &sqlx::PgPool, id: &str, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, created_at, role) \
         VALUES ($1, $2, 'x', 0, 'admin')",
    )
    .bind(id)
    .bind(name)
    .execute(pool)
    .await
    .map(drop)
}

#[tokio::test]
async fn errors_of_a_real_server_map_as_the_store_needs() {
    let Some(url) = common::admin_url("errors_of_a_real_server_map_as_the_store_needs") else {
        return;
    };
    let admin = admin(&url).await;
    let schema = fresh_schema(&admin).await;
    let store = open(&url, &schema).await;
    let pool = store.pool();

    insert_user(pool, "U1", "alice").await.unwrap();
    let taken = insert_user(pool, "U2", "alice").await.unwrap_err();
    assert!(codec::is_unique_violation(&taken));
    assert!(!codec::is_foreign_key_violation(&taken));
    assert_eq!(
        codec::constraint(&taken).as_deref(),
        Some("users_username_unique")
    );
    assert!(codec::db_message(&taken).contains("username"), "{taken}");
    assert!(matches!(codec::backend(taken), StoreError::Backend(_)));

    let orphan = sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
         VALUES ('S1', 'nobody', 'h', 0, 1)",
    )
    .execute(pool)
    .await
    .unwrap_err();
    assert!(codec::is_foreign_key_violation(&orphan));
    assert!(!codec::is_unique_violation(&orphan));

    // A server that only accepts reads (a standby, or this).
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .unwrap();
    let read_only = sqlx::query("INSERT INTO storage_probe (id, written_at) VALUES (1, 0)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    drop(tx);
    assert_eq!(store.error(read_only).fault(), Some(StorageFault::ReadOnly));

    // The server ends a connection in the middle of a transaction (an
    // administrator, a failover): that call fails as Unreachable, and the
    // next one works on a new connection.
    let mut tx = pool.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended);
    let lost = sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap_err();
    drop(tx);
    assert_eq!(store.error(lost).fault(), Some(StorageFault::Unreachable));
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(users, 1);

    store.close().await;
    drop_schema(&admin, &schema).await;
}
