//! `migrate-store`'s PostgreSQL ends against a real server: the table list
//! is the schema, values are converted to the target's column types (0/1
//! flags to BOOLEAN, a flag that is neither refused by name, NUL in text
//! replaced), identity sequences continue after the copied ids, and a
//! source reads one snapshot: rows written after it opened are not in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{admin, admin_url, drop_schema, fresh_schema, in_schema};
use rm_store::copy::{RowSink, RowSource, Value, TABLES};
use rm_store::StoreError;
use rm_store_postgres::copy::{PgRowSink, PgRowSource};

fn table(name: &str) -> &'static rm_store::copy::Table {
    TABLES.iter().find(|t| t.name == name).unwrap()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test]
async fn the_table_list_is_the_schema_and_values_take_the_targets_types() {
    let Some(url) = admin_url("the_table_list_is_the_schema_and_values_take_the_targets_types")
    else {
        return;
    };
    let pool = admin(&url).await;
    let schema = fresh_schema(&pool).await;
    let options = in_schema(&schema);
    let mut sink = PgRowSink::open(&url, &options).await.unwrap();
    let listed: BTreeSet<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(sink.tables().await.unwrap(), listed);
    for table in TABLES {
        let columns = sink.columns(table).await.unwrap();
        assert!(
            table.key.iter().all(|k| columns.iter().any(|c| c == k)),
            "{}: {columns:?}",
            table.name
        );
    }

    let hosts = table("hosts");
    let columns = strings(&["id", "name", "hostname", "enrolled_at", "online", "labels"]);
    let host = |id: &str, online: Value| {
        vec![
            Value::Text(id.to_owned()),
            Value::Text("name\0with a NUL".to_owned()),
            Value::Text(id.to_owned()),
            Value::Int(1),
            online,
            Value::Text("{}".to_owned()),
        ]
    };
    let refused = sink
        .insert(hosts, &columns, &[host("h0", Value::Int(2))])
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Corrupt(_)), "{refused:?}");
    assert!(
        refused
            .to_string()
            .contains("table hosts column online holds the integer 2"),
        "{refused}"
    );
    Box::new(sink).rollback().await.unwrap();

    let mut sink = PgRowSink::open(&url, &options).await.unwrap();
    sink.insert(
        hosts,
        &columns,
        &[
            host("h1", Value::Int(1)),
            host("h2", Value::Int(0)),
            host("h3", Value::Bool(true)),
        ],
    )
    .await
    .unwrap();
    let audit = table("audit_log");
    let audit_columns = strings(&["id", "at", "actor_kind", "action", "details"]);
    let entry = |id: i64| {
        vec![
            Value::Int(id),
            Value::Int(id),
            Value::Text("cli".to_owned()),
            Value::Text("test".to_owned()),
            Value::Text("{}".to_owned()),
        ]
    };
    sink.insert(audit, &audit_columns, &[entry(7), entry(41)])
        .await
        .unwrap();
    sink.finish(audit).await.unwrap();
    Box::new(sink).commit().await.unwrap();

    let mut source = PgRowSource::open(&url, &options).await.unwrap();
    let read = source
        .page(hosts, &strings(&["id", "online", "name"]), None, 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|row| row[1].clone()).collect::<Vec<_>>(),
        vec![Value::Bool(true), Value::Bool(false), Value::Bool(true)]
    );
    assert_eq!(read[0][2], Value::Text("name\u{FFFD}with a NUL".to_owned()));
    let after = source
        .page(
            hosts,
            &strings(&["id"]),
            Some(&[Value::Text("h1".to_owned())]),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        after,
        vec![
            vec![Value::Text("h2".to_owned())],
            vec![Value::Text("h3".to_owned())]
        ]
    );

    // Rows written after the source was opened are not in its snapshot.
    let store = common::open(&url, &schema).await;
    sqlx::query(
        "INSERT INTO hosts (id, name, hostname, enrolled_at) VALUES ('h4', 'late', 'late', 9)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(source.count(hosts).await.unwrap(), 3);
    Box::new(source).close().await.unwrap();

    let next: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor_kind, action, details) \
         VALUES (0, 'cli', 'next', '{}') RETURNING id",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(next, 42, "the identity continues after the copied ids");
    store.close().await;
    drop_schema(&pool, &schema).await;
}
