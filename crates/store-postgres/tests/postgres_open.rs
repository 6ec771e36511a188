//! Opening a PostgreSQL store on a real cluster: migrations (once, also
//! with several servers starting at once), TLS by sslmode, and what a
//! failed open tells (never the password).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{admin, chain, drop_schema, fresh_schema, in_schema, open};
use rm_store::StorageFault;
use rm_store_postgres::{PostgresOptions, PostgresStore};

/// The applied migrations of `schema`: (version, installed_on).
async fn migrations(pool: &sqlx::PgPool, schema: &str) -> Vec<(i64, String)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, installed_on::TEXT FROM {schema}._sqlx_migrations \
         WHERE success ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .expect("read _sqlx_migrations")
}

/// The tables of `schema`.
async fn tables(pool: &sqlx::PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables \
         WHERE table_schema = $1 ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("list tables")
}

#[tokio::test]
async fn opening_migrates_and_opening_again_changes_nothing() {
    let Some(url) = common::admin_url("opening_migrates_and_opening_again_changes_nothing") else {
        return;
    };
    let admin = admin(&url).await;
    let schema = fresh_schema(&admin).await;

    let store = open(&url, &schema).await;
    let applied = migrations(&admin, &schema).await;
    assert_eq!(
        applied.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "every migration is applied"
    );
    let made = tables(&admin, &schema).await;
    assert!(made.contains(&"hosts".to_owned()), "{made:?}");
    // The store's connections see the schema's tables unqualified.
    let hosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(hosts, 0);
    let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(name, "restic-manager", "named in pg_stat_activity");
    store.close().await;

    let again = open(&url, &schema).await;
    assert_eq!(
        migrations(&admin, &schema).await,
        applied,
        "nothing re-applied"
    );
    assert_eq!(tables(&admin, &schema).await, made);
    again.close().await;

    // Nothing landed outside the schema.
    assert!(
        !tables(&admin, "public").await.contains(&"hosts".to_owned()),
        "the store wrote into public"
    );
    drop_schema(&admin, &schema).await;
}

#[tokio::test]
async fn servers_starting_at_once_on_one_database_all_open_it() {
    let Some(url) = common::admin_url("servers_starting_at_once_on_one_database_all_open_it")
    else {
        return;
    };
    let admin = admin(&url).await;
    let schema = fresh_schema(&admin).await;
    // Without the advisory lock, concurrent `CREATE TABLE`s of the same
    // migration fail in all but one of them (duplicate relation).
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            let options = in_schema(&schema);
            tokio::spawn(async move { PostgresStore::open(&url, &options).await })
        })
        .collect();
    for open in opens {
        let store = open
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a concurrent open failed: {e:#}"));
        store.close().await;
    }
    assert_eq!(migrations(&admin, &schema).await.len(), 4);
    drop_schema(&admin, &schema).await;
}

/// Whether the store's connection is encrypted.
async fn encrypted(store: &PostgresStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("read pg_stat_ssl")
}

#[tokio::test]
async fn tls_follows_sslmode_and_verify_full_needs_the_ca() {
    let test = "tls_follows_sslmode_and_verify_full_needs_the_ca";
    let (Some(url), Some(ca)) = (common::admin_url(test), common::ca_file(test)) else {
        return;
    };
    let admin = admin(&url).await;
    let schema = fresh_schema(&admin).await;

    let verified = common::with_params(&url, &[("sslmode", "verify-full"), ("sslrootcert", &ca)]);
    let store = open(&verified, &schema).await;
    assert!(encrypted(&store).await, "verify-full is encrypted");
    store.close().await;

    // libpq's `require` with a CA checks the certificate: it works with
    // the right one.
    let required = common::with_params(&url, &[("sslmode", "require"), ("sslrootcert", &ca)]);
    let store = open(&required, &schema).await;
    assert!(encrypted(&store).await);
    store.close().await;

    let plain = common::with_params(&url, &[("sslmode", "disable")]);
    let store = open(&plain, &schema).await;
    assert!(!encrypted(&store).await, "sslmode=disable is not encrypted");
    store.close().await;

    // The test CA is in no system store: without it the certificate
    // cannot be trusted, and the error says so.
    let unverifiable = common::with_params(&url, &[("sslmode", "verify-full")]);
    let e = PostgresStore::open(&unverifiable, &in_schema(&schema))
        .await
        .expect_err("verify-full without the CA must fail");
    let text = chain(&e);
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("cannot connect to postgres://"), "{text}");
    assert!(!text.contains(&common::password_of(&url)), "{text}");
    assert_eq!(
        e.fault(),
        None,
        "a certificate is not a passing condition: {text}"
    );
    drop_schema(&admin, &schema).await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let Some(url) = common::admin_url("a_wrong_password_is_refused_without_showing_it") else {
        return;
    };
    let wrong = format!("wrong-{}", ulid::Ulid::new());
    let e = PostgresStore::open(
        &common::with_password(&url, &wrong),
        &PostgresOptions::default(),
    )
    .await
    .expect_err("a wrong password must fail");
    let text = chain(&e);
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains(":***@127.0.0.1"),
        "the URL is shown redacted: {text}"
    );
    assert!(!text.contains(&wrong), "{text}");
    assert!(!text.contains(&common::password_of(&url)), "{text}");
    let debug = format!("{e:?}");
    assert!(!debug.contains(&wrong), "{debug}");
    assert_eq!(
        e.fault(),
        None,
        "a refused login is not a passing condition"
    );
}

#[tokio::test]
async fn a_server_that_is_not_there_is_unreachable() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let url = format!("postgres://rm:s3cret-pw@127.0.0.1:{port}/rm");
    let options = PostgresOptions {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..PostgresOptions::default()
    };
    let e = PostgresStore::open(&url, &options)
        .await
        .expect_err("nothing listens there");
    let text = chain(&e);
    assert_eq!(e.fault(), Some(StorageFault::Unreachable), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

#[tokio::test]
async fn a_missing_schema_is_named() {
    let Some(url) = common::admin_url("a_missing_schema_is_named") else {
        return;
    };
    let e = PostgresStore::open(&url, &in_schema("rm_no_such_schema"))
        .await
        .expect_err("the schema does not exist");
    let text = chain(&e);
    assert!(
        text.contains("schema `rm_no_such_schema` does not exist"),
        "{text}"
    );
    assert!(!text.contains(&common::password_of(&url)), "{text}");
}
