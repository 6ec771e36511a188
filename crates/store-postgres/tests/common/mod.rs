//! The real PostgreSQL these tests run on: the temporary cluster that
//! scripts/test starts (scripts/postgres-temp), named by
//! `RM_TEST_POSTGRES_URL` (its admin URL) and `RM_TEST_POSTGRES_CA` (the CA
//! of its TLS certificate). Each test works in a schema of its own.

#![allow(dead_code)]

use std::io::Write;

use rm_store_postgres::{PostgresOptions, PostgresStore};
use sqlx::postgres::PgPool;
use url::Url;

/// The cluster's admin URL, or `None` (with the reason printed) when the
/// tests run without one. Under CI (`CI=true`) a missing cluster fails the
/// test instead: CI must not pass by skipping.
pub fn admin_url(test: &str) -> Option<String> {
    required("RM_TEST_POSTGRES_URL", test)
}

/// The CA file of the cluster's certificate, as [`admin_url`].
pub fn ca_file(test: &str) -> Option<String> {
    required("RM_TEST_POSTGRES_CA", test)
}

fn required(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{var} is not set (CI=true): scripts/test starts the PostgreSQL these tests need"
            )
        }
        _ => {
            // Straight to stderr: the test harness would hide eprintln!'s
            // output of a test that passes.
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: {var} is not set (scripts/test starts a temporary PostgreSQL; \
                 or run scripts/postgres-temp start DIR and export {var})"
            );
            None
        }
    }
}

/// `url` with the query parameters `params` added.
pub fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let mut url = Url::parse(url).expect("RM_TEST_POSTGRES_URL is a URL");
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// `url` with its password replaced.
pub fn with_password(url: &str, password: &str) -> String {
    let mut url = Url::parse(url).expect("RM_TEST_POSTGRES_URL is a URL");
    url.set_password(Some(password)).expect("a URL with a host");
    url.to_string()
}

/// The password of `url`.
pub fn password_of(url: &str) -> String {
    Url::parse(url)
        .expect("RM_TEST_POSTGRES_URL is a URL")
        .password()
        .expect("RM_TEST_POSTGRES_URL has a password")
        .to_owned()
}

/// A pool on the cluster as its superuser, for looking at what the store
/// did from outside it.
pub async fn admin(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect to RM_TEST_POSTGRES_URL")
}

/// A new empty schema, named after a fresh ULID.
pub async fn fresh_schema(admin: &PgPool) -> String {
    let name = format!("rm_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(admin)
        .await
        .expect("create a schema");
    name
}

/// Drops a schema made by [`fresh_schema`].
pub async fn drop_schema(admin: &PgPool, name: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE")))
        .execute(admin)
        .await
        .expect("drop a schema");
}

/// Options for a store in `schema`.
pub fn in_schema(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: Some(schema.to_owned()),
        ..PostgresOptions::default()
    }
}

/// Opens a store in `schema`, which the test expects to work.
pub async fn open(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::open(url, &in_schema(schema))
        .await
        .unwrap_or_else(|e| panic!("open the store in {schema}: {e:#}"))
}

/// Every message in the chain of `e`, for checking what a user is shown.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
