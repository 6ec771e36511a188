//! The PostgreSQL ends of `admin migrate-store` ([`rm_store::copy`]):
//! reading a database's rows from one `REPEATABLE READ` snapshot without
//! migrating it, and writing rows into a store inside one transaction,
//! converted to the target's column types (SQLite's 0/1 flags to
//! BOOLEAN), with the identity sequences moved past the copied ids.

use std::collections::{BTreeSet, HashMap};

use rm_store::copy::{
    async_trait, insert_sql, page_sql, quote, RowSink, RowSource, SchemaVersion, Table, Value,
};
use rm_store::StoreError;
use sqlx::postgres::{PgConnection, PgRow, Postgres};
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Row, Transaction, TypeInfo};

use crate::connect::Target;
use crate::{PostgresOptions, PostgresStore, MIGRATOR};

/// Where the migrations' own bookkeeping lives (not copied: each target
/// has its own).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// What stands for U+0000 in text copied into PostgreSQL, whose TEXT
/// cannot hold it (SQLite's can).
const NUL_REPLACEMENT: &str = "\u{FFFD}";

/// A PostgreSQL database read from one snapshot.
pub struct PgRowSource {
    conn: PgConnection,
    shown: String,
}

impl PgRowSource {
    /// Connects to `url` (as [`PostgresStore::open`] would, but without
    /// running any migration) and starts the `REPEATABLE READ READ ONLY`
    /// transaction every later read is part of: servers may keep writing,
    /// the copy is the database as it was when it started.
    pub async fn open(url: &str, options: &PostgresOptions) -> Result<PgRowSource, StoreError> {
        let target = Target::parse(url, options)?;
        let mut conn = target
            .connect_options
            .connect()
            .await
            .map_err(|e| target.connect_error(e))?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(crate::codec::backend)?;
        // The snapshot is taken by the first statement, not by BEGIN.
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(crate::codec::backend)?;
        Ok(PgRowSource {
            conn,
            shown: shown(&target, options),
        })
    }
}

/// One column of the target, as its catalogue declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    Text,
    Bytes,
}

/// A PostgreSQL store written in one transaction.
pub struct PgRowSink {
    store: PostgresStore,
    tx: Transaction<'static, Postgres>,
    shown: String,
    /// Per table: each column's kind, and its identity columns.
    catalogue: HashMap<&'static str, (HashMap<String, Kind>, Vec<String>)>,
}

impl PgRowSink {
    /// Opens (migrating as [`PostgresStore::open`] does) the store at
    /// `url` and begins the copy's transaction.
    pub async fn open(url: &str, options: &PostgresOptions) -> Result<PgRowSink, StoreError> {
        let target = Target::parse(url, options)?;
        let store = PostgresStore::open(url, options).await?;
        let tx = store.pool().begin().await.map_err(|e| store.error(e))?;
        Ok(PgRowSink {
            store,
            tx,
            shown: shown(&target, options),
            catalogue: HashMap::new(),
        })
    }

    async fn catalogue(
        &mut self,
        table: &Table,
    ) -> Result<&(HashMap<String, Kind>, Vec<String>), StoreError> {
        if !self.catalogue.contains_key(table.name) {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text, is_identity::text \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table.name)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(crate::codec::backend)?;
            let mut kinds = HashMap::new();
            let mut identity = Vec::new();
            for (name, data_type, is_identity) in rows {
                let kind = match data_type.as_str() {
                    "bigint" | "integer" | "smallint" => Kind::Int,
                    "boolean" => Kind::Bool,
                    "text" | "character varying" | "character" => Kind::Text,
                    "bytea" => Kind::Bytes,
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "table {} column {name} is of type {other}, which the store does not \
                             use",
                            table.name
                        )))
                    }
                };
                if is_identity == "YES" {
                    identity.push(name.clone());
                }
                kinds.insert(name, kind);
            }
            self.catalogue.insert(table.name, (kinds, identity));
        }
        self.catalogue
            .get(table.name)
            .ok_or_else(|| StoreError::NotFound(format!("table {}", table.name)))
    }
}

/// The database as shown: the URL without its password, and the schema.
fn shown(target: &Target, options: &PostgresOptions) -> String {
    match &options.schema {
        Some(schema) => format!("{} (schema {schema})", target.redacted),
        None => target.redacted.clone(),
    }
}

async fn tables(conn: &mut PgConnection) -> Result<BTreeSet<String>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         AND table_name <> $1",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(conn)
    .await
    .map_err(crate::codec::backend)?;
    Ok(names
        .into_iter()
        .filter(|name| !rm_store::copy::NOT_COPIED.contains(&name.as_str()))
        .collect())
}

async fn columns(conn: &mut PgConnection, table: &Table) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table.name)
    .fetch_all(conn)
    .await
    .map_err(crate::codec::backend)
}

async fn count(conn: &mut PgConnection, table: &Table) -> Result<u64, StoreError> {
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        quote(table.name)
    )))
    .fetch_one(conn)
    .await
    .map_err(crate::codec::backend)?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, <Postgres as sqlx::Database>::Arguments>;

/// Binds a key value read from this same database (so of its own type).
fn bind_own<'q>(query: PgQuery<'q>, value: &Value) -> PgQuery<'q> {
    match value {
        Value::Null => query.bind(None::<i64>),
        Value::Int(i) => query.bind(*i),
        Value::Bool(b) => query.bind(*b),
        Value::Text(s) => query.bind(s.clone()),
        Value::Bytes(b) => query.bind(b.clone()),
    }
}

/// Binds `value` as a column of `kind`, or says why it does not fit.
fn bind_as<'q>(
    query: PgQuery<'q>,
    value: &Value,
    kind: Kind,
    table: &Table,
    column: &str,
) -> Result<PgQuery<'q>, StoreError> {
    let misfit = |what: &str| {
        StoreError::Corrupt(format!(
            "table {} column {column} holds {what}, which does not fit its type ({kind:?})",
            table.name
        ))
    };
    Ok(match (kind, value) {
        (Kind::Int, Value::Null) => query.bind(None::<i64>),
        (Kind::Bool, Value::Null) => query.bind(None::<bool>),
        (Kind::Text, Value::Null) => query.bind(None::<String>),
        (Kind::Bytes, Value::Null) => query.bind(None::<Vec<u8>>),
        (Kind::Int, Value::Int(i)) => query.bind(*i),
        (Kind::Int, Value::Bool(b)) => query.bind(i64::from(*b)),
        (Kind::Bool, Value::Bool(b)) => query.bind(*b),
        (Kind::Bool, Value::Int(0)) => query.bind(false),
        (Kind::Bool, Value::Int(1)) => query.bind(true),
        (Kind::Bool, Value::Int(i)) => return Err(misfit(&format!("the integer {i}"))),
        (Kind::Text, Value::Text(s)) => query.bind(s.replace('\0', NUL_REPLACEMENT)),
        (Kind::Bytes, Value::Bytes(b)) => query.bind(b.clone()),
        (_, Value::Int(_)) => return Err(misfit("an integer")),
        (_, Value::Bool(_)) => return Err(misfit("a boolean")),
        (_, Value::Text(_)) => return Err(misfit("text")),
        (_, Value::Bytes(_)) => return Err(misfit("bytes")),
    })
}

/// One column of a row, by the column's type.
fn decode(row: &PgRow, table: &Table, i: usize) -> Result<Value, StoreError> {
    let column = &row.columns()[i];
    let backend = crate::codec::backend;
    let value = match column.type_info().name() {
        "INT8" => row
            .try_get::<Option<i64>, _>(i)
            .map_err(backend)?
            .map(Value::Int),
        "INT4" => row
            .try_get::<Option<i32>, _>(i)
            .map_err(backend)?
            .map(|v| Value::Int(v.into())),
        "INT2" => row
            .try_get::<Option<i16>, _>(i)
            .map_err(backend)?
            .map(|v| Value::Int(v.into())),
        "BOOL" => row
            .try_get::<Option<bool>, _>(i)
            .map_err(backend)?
            .map(Value::Bool),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => row
            .try_get::<Option<String>, _>(i)
            .map_err(backend)?
            .map(Value::Text),
        "BYTEA" => row
            .try_get::<Option<Vec<u8>>, _>(i)
            .map_err(backend)?
            .map(Value::Bytes),
        other => {
            return Err(StoreError::Corrupt(format!(
                "table {} column {} is of type {other}, which the store does not use",
                table.name,
                column.name()
            )))
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

#[async_trait]
impl RowSource for PgRowSource {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn schema_version(&mut self) -> Result<SchemaVersion, StoreError> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1)",
        )
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut self.conn)
        .await
        .map_err(crate::codec::backend)?;
        let applied = if has_table {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut self.conn)
                .await
                .map_err(crate::codec::backend)?
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
        let sql = page_sql(table, columns, after.is_some(), |n| format!("${n}"));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in after.unwrap_or_default() {
            query = bind_own(query, value);
        }
        query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = query
            .fetch_all(&mut self.conn)
            .await
            .map_err(crate::codec::backend)?;
        rows.iter()
            .map(|row| (0..columns.len()).map(|i| decode(row, table, i)).collect())
            .collect()
    }

    async fn close(mut self: Box<Self>) -> Result<(), StoreError> {
        let ended = sqlx::query("COMMIT").execute(&mut self.conn).await;
        let closed = self.conn.close().await;
        ended.and(closed).map(|_| ()).map_err(crate::codec::backend)
    }
}

#[async_trait]
impl RowSink for PgRowSink {
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
            .map_err(crate::codec::backend)?;
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
        let (kinds, _) = self.catalogue(table).await?;
        let kinds: Vec<Kind> = columns
            .iter()
            .map(|c| {
                kinds.get(c).copied().ok_or_else(|| {
                    StoreError::NotFound(format!("column {c} of table {}", table.name))
                })
            })
            .collect::<Result<_, _>>()?;
        let sql = insert_sql(table, columns, rows.len(), |n| format!("${n}"));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in rows {
            for ((value, kind), column) in row.iter().zip(&kinds).zip(columns) {
                query = bind_as(query, value, *kind, table, column)?;
            }
        }
        query
            .execute(&mut *self.tx)
            .await
            .map_err(crate::codec::backend)?;
        Ok(())
    }

    async fn finish(&mut self, table: &Table) -> Result<(), StoreError> {
        let (_, identity) = self.catalogue(table).await?;
        for column in identity.clone() {
            // The next generated id follows the largest copied one (or is
            // 1 in an empty table).
            sqlx::query(AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({}), 0) + 1, false) \
                 FROM {}",
                quote(&column),
                quote(table.name)
            )))
            .bind(quote(table.name))
            .bind(&column)
            .execute(&mut *self.tx)
            .await
            .map_err(crate::codec::backend)?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let committed = self.tx.commit().await.map_err(crate::codec::backend);
        self.store.close().await;
        committed
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        let rolled_back = self.tx.rollback().await.map_err(crate::codec::backend);
        self.store.close().await;
        rolled_back
    }
}
