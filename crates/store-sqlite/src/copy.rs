//! The SQLite ends of `admin migrate-store` ([`rm_store::copy`]): reading
//! a database's rows from one read transaction without migrating it, and
//! writing rows into a store inside one write transaction.

use std::collections::BTreeSet;

use rm_store::copy::{
    async_trait, insert_sql, page_sql, quote, RowSink, RowSource, SchemaVersion, Table, Value,
};
use rm_store::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{AssertSqlSafe, Row, Transaction, TypeInfo, ValueRef};

use crate::codec::backend;
use crate::{SqliteStore, MIGRATOR};

/// Where the migrations' own bookkeeping lives (not copied: each target
/// has its own).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// How the copy's one write transaction starts: with SQLite's writer lock
/// taken at once, so no server or second copy writes in between. (sqlx's
/// own transaction is enough here, unlike in the store's writes: the
/// store is closed as soon as the transaction ends, so a connection left
/// at a wrong transaction depth never serves another call.)
const BEGIN_COPY: &str = "BEGIN IMMEDIATE";

/// A SQLite database read from one snapshot.
pub struct SqliteRowSource {
    store: SqliteStore,
    conn: PoolConnection<Sqlite>,
    shown: String,
}

impl SqliteRowSource {
    /// Opens the existing database at `url` as it is (no file is created,
    /// no migration runs) and starts the read transaction every later read
    /// is part of. In WAL mode (the store's) a running server keeps
    /// writing meanwhile and the copy does not see it; in any other
    /// journal mode the read lock keeps writers waiting until the copy
    /// ends.
    pub async fn open(url: &str) -> Result<SqliteRowSource, StoreError> {
        let store = SqliteStore::open_existing(url).await?;
        let mut conn = store.pool().acquire().await.map_err(backend)?;
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        // SQLite takes the snapshot at the first read, not at BEGIN.
        sqlx::query("SELECT COUNT(*) FROM sqlite_master")
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
        Ok(SqliteRowSource {
            shown: shown(&store, url),
            store,
            conn,
        })
    }
}

/// A SQLite store written in one transaction.
pub struct SqliteRowSink {
    store: SqliteStore,
    tx: Transaction<'static, Sqlite>,
    shown: String,
}

impl SqliteRowSink {
    /// Opens (creating and migrating as [`SqliteStore::open`] does) the
    /// store at `url` and takes its writer lock for the whole copy.
    pub async fn open(url: &str) -> Result<SqliteRowSink, StoreError> {
        let store = SqliteStore::open(url).await?;
        let tx = store.pool().begin_with(BEGIN_COPY).await.map_err(backend)?;
        Ok(SqliteRowSink {
            shown: shown(&store, url),
            store,
            tx,
        })
    }
}

/// The database as shown: its absolute file, so two spellings of one file
/// are one database.
fn shown(store: &SqliteStore, url: &str) -> String {
    match &store.file {
        Some(file) => match std::fs::canonicalize(file) {
            Ok(path) => format!("sqlite://{}", path.display()),
            Err(_) => format!("sqlite://{}", file.display()),
        },
        None => url.to_owned(),
    }
}

async fn tables(conn: &mut sqlx::SqliteConnection) -> Result<BTreeSet<String>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
         ESCAPE '\\' AND name <> ?",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(conn)
    .await
    .map_err(backend)?;
    Ok(names
        .into_iter()
        .filter(|name| !rm_store::copy::NOT_COPIED.contains(&name.as_str()))
        .collect())
}

async fn columns(
    conn: &mut sqlx::SqliteConnection,
    table: &Table,
) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .bind(table.name)
            .fetch_all(conn)
            .await
            .map_err(backend)?;
    // The implicit row id is no column of the catalogue; the PostgreSQL
    // schema has it as one.
    if table.key.contains(&"rowid") && !names.iter().any(|n| n == "rowid") {
        names.insert(0, "rowid".to_owned());
    }
    Ok(names)
}

async fn count(conn: &mut sqlx::SqliteConnection, table: &Table) -> Result<u64, StoreError> {
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        quote(table.name)
    )))
    .fetch_one(conn)
    .await
    .map_err(backend)?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments>;

/// Binds `value` as SQLite stores it: flags as 0/1.
fn bind<'q>(query: SqliteQuery<'q>, value: &Value) -> SqliteQuery<'q> {
    match value {
        Value::Null => query.bind(None::<i64>),
        Value::Int(i) => query.bind(*i),
        Value::Bool(b) => query.bind(i64::from(*b)),
        Value::Text(s) => query.bind(s.clone()),
        Value::Bytes(b) => query.bind(b.clone()),
    }
}

/// One column of a row, by the type of the value stored (SQLite's columns
/// hold what they were given).
fn decode(
    row: &SqliteRow,
    table: &Table,
    columns: &[String],
    i: usize,
) -> Result<Value, StoreError> {
    let raw = row.try_get_raw(i).map_err(backend)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_owned();
    let value = match type_name.as_str() {
        "INTEGER" | "BOOLEAN" | "NUMERIC" => Value::Int(row.try_get_unchecked(i).map_err(backend)?),
        "TEXT" => Value::Text(row.try_get_unchecked(i).map_err(backend)?),
        "BLOB" => Value::Bytes(row.try_get_unchecked(i).map_err(backend)?),
        other => {
            return Err(StoreError::Corrupt(format!(
                "table {} column {} holds a {other} value, which the store never writes",
                table.name,
                columns.get(i).map_or("?", String::as_str)
            )))
        }
    };
    Ok(value)
}

#[async_trait]
impl RowSource for SqliteRowSource {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn schema_version(&mut self) -> Result<SchemaVersion, StoreError> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
        )
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *self.conn)
        .await
        .map_err(backend)?;
        let applied = if has_table {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *self.conn)
                .await
                .map_err(backend)?
        } else {
            None
        };
        Ok(SchemaVersion { applied, known })
    }

    async fn tables(&mut self) -> Result<BTreeSet<String>, StoreError> {
        tables(&mut self.conn).await
    }

    async fn columns(&mut self, table: &Table) -> Result<Vec<String>, StoreError> {
        columns(&mut self.conn, table).await
    }

    async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
        count(&mut self.conn, table).await
    }

    async fn page(
        &mut self,
        table: &Table,
        columns: &[String],
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let sql = page_sql(table, columns, after.is_some(), |_| "?".to_owned());
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in after.unwrap_or_default() {
            query = bind(query, value);
        }
        query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = query.fetch_all(&mut *self.conn).await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                (0..columns.len())
                    .map(|i| decode(row, table, columns, i))
                    .collect()
            })
            .collect()
    }

    async fn close(mut self: Box<Self>) -> Result<(), StoreError> {
        let ended = sqlx::query("COMMIT").execute(&mut *self.conn).await;
        drop(self.conn);
        self.store.close().await;
        ended.map(|_| ()).map_err(backend)
    }
}

#[async_trait]
impl RowSink for SqliteRowSink {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn tables(&mut self) -> Result<BTreeSet<String>, StoreError> {
        tables(&mut self.tx).await
    }

    async fn columns(&mut self, table: &Table) -> Result<Vec<String>, StoreError> {
        columns(&mut self.tx, table).await
    }

    async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
        count(&mut self.tx, table).await
    }

    async fn clear(&mut self, table: &Table) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quote(table.name))))
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert(
        &mut self,
        table: &Table,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = insert_sql(table, columns, rows.len(), |_| "?".to_owned());
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in rows {
            for value in row {
                query = bind(query, value);
            }
        }
        query.execute(&mut *self.tx).await.map_err(backend)?;
        Ok(())
    }

    async fn finish(&mut self, _table: &Table) -> Result<(), StoreError> {
        // Row ids and AUTOINCREMENT counters follow the largest id inserted.
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let committed = self.tx.commit().await.map_err(backend);
        self.store.close().await;
        committed
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        let rolled_back = self.tx.rollback().await.map_err(backend);
        self.store.close().await;
        rolled_back
    }
}
