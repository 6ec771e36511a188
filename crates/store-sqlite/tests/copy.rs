//! `migrate-store`'s table list against the SQLite schema: it names every
//! table exactly once, parents before the tables whose foreign keys point
//! at them, each with its primary key; and the row interface copies a
//! store into another exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use rm_store::copy::{copy_store, CopyError, CopyOptions, RowSink, RowSource, Value, TABLES};
use rm_store_sqlite::copy::{SqliteRowSink, SqliteRowSource};
use rm_store_sqlite::SqliteStore;

#[tokio::test]
async fn the_table_list_is_the_schema_in_foreign_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let mut sink = SqliteRowSink::open(&url).await.unwrap();
    let listed: BTreeSet<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(sink.tables().await.unwrap(), listed);

    for (position, table) in TABLES.iter().enumerate() {
        let parents: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)")
                .bind(table.name)
                .fetch_all(store.pool())
                .await
                .unwrap();
        for parent in parents {
            let at = TABLES.iter().position(|t| t.name == parent);
            assert!(
                at.is_some_and(|at| at < position),
                "{} refers to {parent}, which is not listed before it",
                table.name
            );
        }
        let mut key: Vec<(i64, String)> =
            sqlx::query_as("SELECT pk, name FROM pragma_table_info(?) WHERE pk > 0")
                .bind(table.name)
                .fetch_all(store.pool())
                .await
                .unwrap();
        key.sort();
        let key: Vec<String> = key.into_iter().map(|(_, name)| name).collect();
        let expected: Vec<String> = if key.is_empty() {
            vec!["rowid".to_owned()]
        } else {
            key
        };
        assert_eq!(table.key, expected, "the key of {}", table.name);
        let columns = sink.columns(table).await.unwrap();
        assert!(
            table.key.iter().all(|k| columns.iter().any(|c| c == k)),
            "{}: {columns:?}",
            table.name
        );
    }
    Box::new(sink).rollback().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn rows_of_every_kind_are_copied_across_pages_and_a_full_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("from.db").display());
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let store = SqliteStore::open(&from).await.unwrap();
    // Rows written straight into the tables: blobs, NULLs, flags, and
    // composite keys spanning several pages.
    sqlx::query(
        "INSERT INTO hosts (id, name, hostname, enrolled_at, online, labels) \
         VALUES ('h1', 'one', 'one.lan', 1, 1, '{}'), ('h2', 'two', 'two.lan', 2, 0, '{}')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO host_repositories (host_id, nonce, ciphertext, updated_at) \
         VALUES ('h1', x'00ff10', x'deadbeef', 3)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    for host in ["h1", "h2"] {
        for n in 0..5 {
            sqlx::query(
                "INSERT INTO snapshots (host_id, id, short_id, time, hostname, paths, tags) \
                 VALUES (?, ?, 's', ?, 'x', '[]', '[]')",
            )
            .bind(host)
            .bind(format!("snap{n}"))
            .bind(n)
            .execute(store.pool())
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO repo_stats (host_id, recorded_at, lock_present) VALUES (?, 5, NULL)",
        )
        .bind(host)
        .execute(store.pool())
        .await
        .unwrap();
    }
    store.close().await;

    let copy = |replace: bool| {
        let (from, to) = (from.clone(), to.clone());
        async move {
            let source: Box<dyn RowSource> = Box::new(SqliteRowSource::open(&from).await.unwrap());
            let sink: Box<dyn RowSink> = Box::new(SqliteRowSink::open(&to).await.unwrap());
            let mut pages = 0;
            let options = CopyOptions {
                replace,
                page_rows: 3,
            };
            let report = copy_store(source, sink, options, &mut |_| pages += 1).await;
            (report, pages)
        }
    };
    let (report, pages) = copy(false).await;
    let report = report.unwrap();
    let rows = |name: &str| report.tables.iter().find(|(t, _)| *t == name).unwrap().1;
    assert_eq!(rows("snapshots"), 10);
    assert_eq!(rows("hosts"), 2);
    assert_eq!(rows("repo_stats"), 2);
    // Started, ten snapshots in pages of three, the rest, Verifying.
    assert!(pages >= 2 + 4 + 3, "{pages} progress reports");

    let dump = |url: String| async move {
        let mut source = SqliteRowSource::open(&url).await.unwrap();
        let mut all = Vec::new();
        for table in TABLES {
            let columns = source.columns(table).await.unwrap();
            all.push(source.page(table, &columns, None, 1000).await.unwrap());
        }
        Box::new(source).close().await.unwrap();
        all
    };
    let copied = dump(to.clone()).await;
    assert_eq!(dump(from.clone()).await, copied);
    let repository = &copied[TABLES
        .iter()
        .position(|t| t.name == "host_repositories")
        .unwrap()];
    assert!(repository[0].contains(&Value::Bytes(vec![0x00, 0xff, 0x10])));

    let (refused, _) = copy(false).await;
    match refused {
        Err(CopyError::NotEmpty { tables, .. }) => {
            assert!(tables.contains(&("snapshots".to_owned(), 10)), "{tables:?}");
        }
        other => panic!("a full target was not refused: {other:?}"),
    }
    assert_eq!(dump(to.clone()).await, copied);
    // Rows written after a source was opened are not in its snapshot.
    let mut source = SqliteRowSource::open(&from).await.unwrap();
    let snapshots = TABLES.iter().find(|t| t.name == "snapshots").unwrap();
    let writer = SqliteStore::open(&from).await.unwrap();
    sqlx::query(
        "INSERT INTO snapshots (host_id, id, short_id, time, hostname, paths, tags) \
         VALUES ('h1', 'late', 's', 9, 'x', '[]', '[]')",
    )
    .execute(writer.pool())
    .await
    .unwrap();
    assert_eq!(source.count(snapshots).await.unwrap(), 10);
    Box::new(source).close().await.unwrap();
    writer.close().await;

    let (replaced, _) = copy(true).await;
    assert_eq!(replaced.unwrap().replaced.len(), 4);
    let copied_again = dump(to).await;
    assert_ne!(copied_again, copied, "the late snapshot is copied now");
    assert_eq!(copied_again, dump(from).await);
}
