//! Copying a whole store from one database to another, row by row, for
//! `restic-manager admin migrate-store`: the one list of tables (in an
//! order that satisfies their foreign keys), the backend-neutral value a
//! column holds, the two small interfaces each backend implements (read a
//! page of a table from a consistent snapshot, write a page inside one
//! transaction), and the driver that checks both schemas, copies and
//! verifies.
//!
//! The copy works on rows, not on the domain types of [`crate::Store`], so
//! nothing is lost that the store's methods happen not to read.

use std::collections::BTreeSet;

use crate::StoreError;

/// The attribute the backends' implementations of [`RowSource`] and
/// [`RowSink`] need, so they need no dependency of their own for it.
pub use async_trait::async_trait;

/// One table of the store, and the columns of its primary key (the order
/// pages are read in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table's name, the same in every backend.
    pub name: &'static str,
    /// Its primary key. `rowid` is SQLite's implicit row id, which the
    /// PostgreSQL schema has as an identity column of that name.
    pub key: &'static [&'static str],
}

const fn table(name: &'static str, key: &'static [&'static str]) -> Table {
    Table { name, key }
}

/// Every table of the store, parents before the tables referring to them,
/// so inserting in this order (and deleting in the reverse) never breaks a
/// foreign key. A table missing here makes every copy fail (the schemas
/// are compared with this list first), and the backends' tests compare it
/// with their schemas.
pub const TABLES: &[Table] = &[
    table("users", &["id"]),
    table("sessions", &["id"]),
    table("api_tokens", &["id"]),
    table("hosts", &["id"]),
    table("enrollment_tokens", &["id"]),
    table("agent_tokens", &["id"]),
    table("host_repositories", &["host_id"]),
    table("snapshots", &["host_id", "id"]),
    table("repo_stats", &["rowid"]),
    table("schedules", &["id"]),
    table("jobs", &["id"]),
    table("job_logs", &["job_id", "seq"]),
    table("command_results", &["job_id"]),
    table("job_batches", &["job_id"]),
    table("repository_fires", &["fire_key"]),
    table("sealing_key", &["id"]),
    table("storage_probe", &["id"]),
    table("policies", &["id"]),
    table("alerts", &["id"]),
    table("silences", &["id"]),
    table("audit_log", &["id"]),
    table("notification_channels", &["id"]),
    table("notification_outbox", &["id"]),
    table("repository_verification", &["repository_key"]),
];

/// Tables a copy leaves alone: they describe the servers running on a
/// database (`servers`, `leases`, the answers of calls between them in
/// `cluster_replies`, the `policy_generation` they reconcile at), not the
/// fleet, and mean nothing on another one. A backend's `tables` leaves
/// them out.
pub const NOT_COPIED: &[&str] = &["servers", "leases", "cluster_replies", "policy_generation"];

/// What one column of one row holds, whatever the engine. A flag reads as
/// [`Value::Int`] (0/1) from SQLite and [`Value::Bool`] from PostgreSQL;
/// the writer converts to its own column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (timestamps, counters, SQLite's flags).
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean (PostgreSQL's flags).
    Bool(bool),
    /// Bytes (nonces and ciphertexts of sealed settings).
    Bytes(Vec<u8>),
}

/// Which migrations a database has, against those this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The newest migration applied to the database (`None`: none, or not
    /// a restic-manager database at all).
    pub applied: Option<i64>,
    /// The newest migration this binary has for that engine.
    pub known: i64,
}

/// Reads a store from one consistent snapshot (one read transaction held
/// for the whole copy), so a copy of a database in use is still the
/// database as it was at one instant.
#[async_trait]
pub trait RowSource: Send {
    /// The URL read from, password hidden.
    fn describe(&self) -> String;
    /// The database's migrations against the binary's.
    async fn schema_version(&mut self) -> Result<SchemaVersion, StoreError>;
    /// The store's tables in the database (without the engine's own and
    /// the migrations' bookkeeping).
    async fn tables(&mut self) -> Result<BTreeSet<String>, StoreError>;
    /// The columns of `table`, `rowid` included where the table's key
    /// names it.
    async fn columns(&mut self, table: &Table) -> Result<Vec<String>, StoreError>;
    /// How many rows `table` holds.
    async fn count(&mut self, table: &Table) -> Result<u64, StoreError>;
    /// Up to `limit` rows of `table` (its `columns`, in that order) whose
    /// key comes after `after` (the key's values, in the key's order;
    /// `None`: from the first), ordered by the key.
    async fn page(
        &mut self,
        table: &Table,
        columns: &[String],
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, StoreError>;
    /// Ends the read transaction and closes the connection.
    async fn close(self: Box<Self>) -> Result<(), StoreError>;
}

/// Writes a store inside one transaction: nothing of a failed or refused
/// copy is left in the target.
#[async_trait]
pub trait RowSink: Send {
    /// The URL written to, password hidden.
    fn describe(&self) -> String;
    /// The store's tables in the database.
    async fn tables(&mut self) -> Result<BTreeSet<String>, StoreError>;
    /// The columns of `table`, `rowid` included where the table's key
    /// names it.
    async fn columns(&mut self, table: &Table) -> Result<Vec<String>, StoreError>;
    /// How many rows `table` holds, as this transaction sees it.
    async fn count(&mut self, table: &Table) -> Result<u64, StoreError>;
    /// Deletes every row of `table`.
    async fn clear(&mut self, table: &Table) -> Result<(), StoreError>;
    /// Inserts `rows` (values of `columns`, in that order) into `table`,
    /// each value converted to its column's type; a value that does not
    /// fit is [`StoreError::Corrupt`] naming the table and column.
    async fn insert(
        &mut self,
        table: &Table,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> Result<(), StoreError>;
    /// Called once `table` is complete: moves generated keys (PostgreSQL's
    /// identity sequences) past the copied rows.
    async fn finish(&mut self, table: &Table) -> Result<(), StoreError>;
    /// Commits everything written.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Drops everything written.
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// Why a copy did not happen. Nothing was changed in the target.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds data and `replace` was not asked for.
    #[error(
        "the target {target} already holds data ({}); nothing was changed. Give --replace to \
         empty it first (its data is then lost)",
        list_counts(.tables)
    )]
    NotEmpty {
        /// The target, password hidden.
        target: String,
        /// The tables holding rows, with their counts.
        tables: Vec<(String, u64)>,
    },
    /// The source's schema is newer than this binary's.
    #[error(
        "the source {source_url} has schema version {applied}, newer than this restic-manager \
         knows ({known}); run migrate-store with the restic-manager version that wrote it"
    )]
    SourceNewer {
        /// The source, password hidden.
        source_url: String,
        /// Its newest migration.
        applied: i64,
        /// The binary's newest.
        known: i64,
    },
    /// The source's schema is older than this binary's.
    #[error(
        "the source {source_url} has schema version {applied}, older than this \
         restic-manager's ({known}); nothing was changed. Start this version's server on it once \
         (it brings the schema up to date), stop it, and run migrate-store again"
    )]
    SourceOlder {
        /// The source, password hidden.
        source_url: String,
        /// Its newest migration.
        applied: i64,
        /// The binary's newest.
        known: i64,
    },
    /// The source has no migrations table: not a restic-manager store.
    #[error("the source {source_url} is not a restic-manager database (it has no migrations)")]
    NotAStore {
        /// The source, password hidden.
        source_url: String,
    },
    /// A database's tables are not the store's.
    #[error(
        "the tables of {database} are not the store's: {}{}",
        if .missing.is_empty() { String::new() } else { format!("missing {}", .missing.join(", ")) },
        if .unknown.is_empty() { String::new() } else {
            format!("{}unknown {}", if .missing.is_empty() { "" } else { "; " }, .unknown.join(", "))
        }
    )]
    Tables {
        /// The database, password hidden.
        database: String,
        /// Tables of the store it lacks.
        missing: Vec<String>,
        /// Tables it has that the store does not know.
        unknown: Vec<String>,
    },
    /// A table's columns differ between source and target.
    #[error(
        "the columns of table {table} differ: only in the source {source_only:?}, only in the \
         target {target_only:?}"
    )]
    Columns {
        /// The table.
        table: String,
        /// Columns the target lacks.
        source_only: Vec<String>,
        /// Columns the source lacks.
        target_only: Vec<String>,
    },
    /// After the copy, a table's row count in the target is not the
    /// source's (the copy was rolled back).
    #[error(
        "table {table} has {target} rows in the target but {in_source} in the source; the copy \
         was rolled back"
    )]
    Count {
        /// The table.
        table: String,
        /// Rows in the source's snapshot.
        in_source: u64,
        /// Rows in the target after the copy.
        target: u64,
    },
    /// Source and target are the same database.
    #[error("the source and the target are the same database ({0})")]
    Same(String),
    /// A database failed (the copy was rolled back).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list_counts(tables: &[(String, u64)]) -> String {
    tables
        .iter()
        .map(|(name, rows)| format!("{name}: {rows} rows"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the copy goes, reported to whoever shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The source is checked and counted; copying starts.
    Started {
        /// Rows to copy in all.
        total: u64,
    },
    /// A page was written.
    Rows {
        /// The table being copied.
        table: &'static str,
        /// Rows of it copied so far.
        done: u64,
        /// Its rows.
        of: u64,
        /// Rows of every table copied so far.
        done_all: u64,
        /// Rows to copy in all.
        total: u64,
    },
    /// Every row is written; counting and committing.
    Verifying,
}

/// What to copy and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// Empty a target that holds data (in the copy's transaction) instead
    /// of refusing it.
    pub replace: bool,
    /// Most rows read and written at once (also capped so that one
    /// statement binds at most [`MAX_BINDS`] values).
    pub page_rows: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            replace: false,
            page_rows: DEFAULT_PAGE_ROWS,
        }
    }
}

/// Rows per page unless [`CopyOptions::page_rows`] says otherwise.
pub const DEFAULT_PAGE_ROWS: usize = 1000;

/// Most values one INSERT binds: under SQLite's default limit (32,766)
/// and PostgreSQL's (65,535).
pub const MAX_BINDS: usize = 30_000;

/// What a finished copy holds: every table with its rows (equal in source
/// and target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Each table of [`TABLES`] and its row count, in that order.
    pub tables: Vec<(&'static str, u64)>,
    /// Whether the target's earlier data was deleted first.
    pub replaced: Vec<(&'static str, u64)>,
}

impl CopyReport {
    /// Rows copied in all.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// Checks that `found` are exactly the tables of [`TABLES`].
fn check_tables(database: String, found: &BTreeSet<String>) -> Result<(), CopyError> {
    let known: BTreeSet<&str> = TABLES.iter().map(|t| t.name).collect();
    let missing: Vec<String> = known
        .iter()
        .filter(|name| !found.contains(**name))
        .map(|name| (*name).to_owned())
        .collect();
    let unknown: Vec<String> = found
        .iter()
        .filter(|name| !known.contains(name.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        Ok(())
    } else {
        Err(CopyError::Tables {
            database,
            missing,
            unknown,
        })
    }
}

/// Copies every row of `source` into `target`, in one transaction of the
/// target, and checks the row counts before committing. On any error the
/// target's transaction is rolled back: it is as it was.
///
/// The source's schema must be the one this binary knows (not older, not
/// newer), and both databases must have exactly the tables of [`TABLES`]
/// with the same columns. A target holding any row is refused unless
/// `options.replace`.
pub async fn copy_store(
    mut source: Box<dyn RowSource>,
    mut target: Box<dyn RowSink>,
    options: CopyOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<CopyReport, CopyError> {
    let outcome = copy_rows(source.as_mut(), target.as_mut(), options, progress).await;
    // The snapshot is only read: closing it cannot lose anything.
    let closed = source.close().await;
    match outcome {
        Ok(report) => {
            target.commit().await?;
            closed?;
            Ok(report)
        }
        Err(e) => {
            // The copy's own error says more than a failed rollback (which
            // leaves nothing committed either).
            let _ = target.rollback().await;
            Err(e)
        }
    }
}

async fn copy_rows(
    source: &mut dyn RowSource,
    target: &mut dyn RowSink,
    options: CopyOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<CopyReport, CopyError> {
    if source.describe() == target.describe() {
        return Err(CopyError::Same(source.describe()));
    }
    let version = source.schema_version().await?;
    match version.applied {
        None => {
            return Err(CopyError::NotAStore {
                source_url: source.describe(),
            })
        }
        Some(applied) if applied > version.known => {
            return Err(CopyError::SourceNewer {
                source_url: source.describe(),
                applied,
                known: version.known,
            })
        }
        Some(applied) if applied < version.known => {
            return Err(CopyError::SourceOlder {
                source_url: source.describe(),
                applied,
                known: version.known,
            })
        }
        Some(_) => {}
    }
    check_tables(source.describe(), &source.tables().await?)?;
    check_tables(target.describe(), &target.tables().await?)?;

    let mut plan = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let columns = source.columns(table).await?;
        let target_columns = target.columns(table).await?;
        let source_set: BTreeSet<&String> = columns.iter().collect();
        let target_set: BTreeSet<&String> = target_columns.iter().collect();
        if source_set != target_set {
            return Err(CopyError::Columns {
                table: table.name.to_owned(),
                source_only: source_set
                    .difference(&target_set)
                    .map(|c| (*c).clone())
                    .collect(),
                target_only: target_set
                    .difference(&source_set)
                    .map(|c| (*c).clone())
                    .collect(),
            });
        }
        let key = key_positions(table, &columns)?;
        let rows = source.count(table).await?;
        plan.push((table, columns, key, rows));
    }

    let mut held = Vec::new();
    for table in TABLES {
        let rows = target.count(table).await?;
        if rows > 0 {
            held.push((table.name, rows));
        }
    }
    if !held.is_empty() {
        if !options.replace {
            return Err(CopyError::NotEmpty {
                target: target.describe(),
                tables: held
                    .into_iter()
                    .map(|(name, rows)| (name.to_owned(), rows))
                    .collect(),
            });
        }
        for table in TABLES.iter().rev() {
            target.clear(table).await?;
        }
    }

    let total: u64 = plan.iter().map(|(_, _, _, rows)| rows).sum();
    progress(Progress::Started { total });
    let mut done_all = 0u64;
    for (table, columns, key, rows) in &plan {
        let page_rows = options
            .page_rows
            .clamp(1, (MAX_BINDS / columns.len().max(1)).max(1));
        let mut after: Option<Vec<Value>> = None;
        let mut done = 0u64;
        loop {
            let page = source
                .page(table, columns, after.as_deref(), page_rows)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(key.iter().map(|&i| last[i].clone()).collect());
            target.insert(table, columns, &page).await?;
            done += page.len() as u64;
            done_all += page.len() as u64;
            progress(Progress::Rows {
                table: table.name,
                done,
                of: *rows,
                done_all,
                total,
            });
            if page.len() < page_rows {
                break;
            }
        }
        target.finish(table).await?;
    }

    progress(Progress::Verifying);
    let mut report = Vec::with_capacity(plan.len());
    for (table, _, _, rows) in &plan {
        let copied = target.count(table).await?;
        if copied != *rows {
            return Err(CopyError::Count {
                table: table.name.to_owned(),
                in_source: *rows,
                target: copied,
            });
        }
        report.push((table.name, *rows));
    }
    Ok(CopyReport {
        tables: report,
        replaced: held,
    })
}

/// Where the columns of `table`'s key are in `columns`.
fn key_positions(table: &Table, columns: &[String]) -> Result<Vec<usize>, CopyError> {
    table
        .key
        .iter()
        .map(|name| {
            columns.iter().position(|c| c == name).ok_or_else(|| {
                CopyError::Store(StoreError::Corrupt(format!(
                    "table {} has no column {name} (its key)",
                    table.name
                )))
            })
        })
        .collect()
}

/// `name` quoted as an SQL identifier (both engines quote alike): the
/// names come from the schema, and some (`trigger`) are keywords.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The keyset condition and order of a page of `table`, for placeholders
/// made by `placeholder(n)` (n from 1): `WHERE (k1, k2) > (…)` when
/// `after` and `ORDER BY k1, k2`. Shared by both engines, which both
/// compare row values.
pub fn page_sql(
    table: &Table,
    columns: &[String],
    after: bool,
    placeholder: impl Fn(usize) -> String,
) -> String {
    let select: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let key: Vec<String> = table.key.iter().map(|c| quote(c)).collect();
    let mut sql = format!("SELECT {} FROM {}", select.join(", "), quote(table.name));
    let mut binds = 0;
    if after {
        let marks: Vec<String> = (1..=key.len()).map(&placeholder).collect();
        binds = key.len();
        sql.push_str(&format!(
            " WHERE ({}) > ({})",
            key.join(", "),
            marks.join(", ")
        ));
    }
    sql.push_str(&format!(
        " ORDER BY {} LIMIT {}",
        key.join(", "),
        placeholder(binds + 1)
    ));
    sql
}

/// A multi-row `INSERT` of `rows` rows of `columns` into `table`, for
/// placeholders made by `placeholder(n)` (n from 1).
pub fn insert_sql(
    table: &Table,
    columns: &[String],
    rows: usize,
    placeholder: impl Fn(usize) -> String,
) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote(table.name),
        names.join(", ")
    );
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns.len() {
            if column > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push_str(&placeholder(n));
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_listed_once() {
        let names: BTreeSet<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), TABLES.len());
        assert!(TABLES.iter().all(|t| !t.key.is_empty()));
    }

    #[test]
    fn page_sql_uses_row_values_on_the_key() {
        let table = table("snapshots", &["host_id", "id"]);
        let columns = vec!["host_id".to_owned(), "id".to_owned(), "time".to_owned()];
        assert_eq!(
            page_sql(&table, &columns, true, |n| format!("${n}")),
            "SELECT \"host_id\", \"id\", \"time\" FROM \"snapshots\" WHERE (\"host_id\", \"id\") \
             > ($1, $2) ORDER BY \"host_id\", \"id\" LIMIT $3"
        );
        assert_eq!(
            page_sql(&table, &columns, false, |n| format!("${n}")),
            "SELECT \"host_id\", \"id\", \"time\" FROM \"snapshots\" ORDER BY \"host_id\", \"id\" \
             LIMIT $1"
        );
    }

    #[test]
    fn insert_sql_numbers_every_value() {
        let table = table("t", &["a"]);
        let columns = vec!["a".to_owned(), "trigger".to_owned()];
        assert_eq!(
            insert_sql(&table, &columns, 2, |n| format!("${n}")),
            "INSERT INTO \"t\" (\"a\", \"trigger\") VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn a_table_list_that_differs_names_what_differs() {
        let mut found: BTreeSet<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
        assert!(check_tables("db".into(), &found).is_ok());
        found.remove("jobs");
        found.insert("extra".into());
        let message = check_tables("db".into(), &found).unwrap_err().to_string();
        assert_eq!(
            message,
            "the tables of db are not the store's: missing jobs; unknown extra"
        );
    }
}
