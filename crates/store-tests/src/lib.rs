//! The one place tests pick their store — `RM_TEST_STORE` chooses SQLite
//! (the default) or PostgreSQL and [`open_temp_store`] gives each test a
//! fresh, empty store of that kind — and the fixtures of the store suite
//! (`tests/`) that every backend must pass.

mod fixtures;

pub use fixtures::*;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rm_store::{Store, StoreError};
use rm_store_postgres::{PostgresOptions, PostgresStore};
use rm_store_sqlite::SqliteStore;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tempfile::TempDir;
use ulid::Ulid;

/// Names the backend tests run on: `sqlite` (the default) or `postgres`.
pub const STORE_VAR: &str = "RM_TEST_STORE";

/// With `RM_TEST_STORE=postgres`: the admin URL of the temporary cluster
/// the test script started. Each test store is a fresh schema on it.
pub const POSTGRES_URL_VAR: &str = "RM_TEST_POSTGRES_URL";

/// The file name of a SQLite store, as the server names it in its data
/// directory (tests that look at the file find it where a server keeps it).
const SQLITE_FILE: &str = "restic-manager.db";

/// A store implementation tests can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `rm-store-sqlite`, a database file in a temporary directory.
    Sqlite,
    /// `rm-store-postgres`, a schema of its own on `RM_TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    /// The backend `RM_TEST_STORE` names; SQLite when it is unset or empty.
    ///
    /// # Panics
    ///
    /// On any other value: a test run on a store nobody asked for would
    /// pass for the wrong reason.
    pub fn from_env() -> Backend {
        Backend::named(std::env::var(STORE_VAR))
    }

    /// Whether a PostgreSQL cluster for tests is configured
    /// (`RM_TEST_POSTGRES_URL` is set).
    pub fn postgres_configured() -> bool {
        std::env::var_os(POSTGRES_URL_VAR).is_some_and(|url| !url.is_empty())
    }

    /// For a test that needs PostgreSQL whatever `RM_TEST_STORE` says:
    /// the cluster's admin URL, or `None` after printing why `test` is
    /// skipped. Under `CI=true` a missing cluster fails the test instead
    /// (CI must not silently test less; scripts/test starts one).
    pub fn postgres_or_skip(test: &str) -> Option<String> {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{POSTGRES_URL_VAR} is not set (CI=true): scripts/test starts PostgreSQL")
            }
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping {test}: {POSTGRES_URL_VAR} is not set (scripts/test starts a \
                     temporary PostgreSQL; or run scripts/postgres-temp start DIR and export it)"
                );
                None
            }
        }
    }

    /// The backend `value` (of `RM_TEST_STORE`) names.
    fn named(value: Result<String, std::env::VarError>) -> Backend {
        match value {
            Err(std::env::VarError::NotPresent) => Backend::Sqlite,
            Ok(value) => match value.as_str() {
                "" | "sqlite" => Backend::Sqlite,
                "postgres" => Backend::Postgres,
                other => panic!(
                    "{STORE_VAR}={other:?} is not a store: use `sqlite` (the default) or `postgres`"
                ),
            },
            Err(std::env::VarError::NotUnicode(value)) => panic!(
                "{STORE_VAR}={value:?} is not a store: use `sqlite` (the default) or `postgres`"
            ),
        }
    }
}

/// Why a test store could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum TestStoreError {
    /// The temporary directory of a SQLite store.
    #[error("cannot make a temporary directory for the SQLite store: {0}")]
    TempDir(#[source] std::io::Error),
    /// `RM_TEST_POSTGRES_URL` does not parse.
    #[error("{POSTGRES_URL_VAR} is not a PostgreSQL URL: {0}")]
    PostgresUrl(String),
    /// The cluster refused the connection or the schema.
    #[error("cannot create the test schema on the cluster of {POSTGRES_URL_VAR}: {0}")]
    Schema(#[source] sqlx::Error),
    /// SQL run from outside the store failed.
    #[error("SQL on the test database failed: {0}")]
    Outside(#[source] sqlx::Error),
    /// The database file could not be read.
    #[error("cannot read the test database file: {0}")]
    Read(#[source] std::io::Error),
    /// The store itself refused to open.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where one test's store lives: a SQLite file in a temporary directory,
/// or a PostgreSQL schema of its own. Dropping it removes the directory
/// or drops the schema (best effort: the test cluster goes away anyway).
pub struct TestDatabase {
    url: String,
    place: Place,
}

enum Place {
    /// Held only to be removed on drop; `None` when the file is in a
    /// directory the caller owns.
    Sqlite { _dir: Option<TempDir> },
    Postgres {
        admin: Box<PgConnectOptions>,
        schema: String,
    },
}

impl TestDatabase {
    /// A new, empty place for a store of the backend `RM_TEST_STORE`
    /// names (SQLite: in a new temporary directory).
    pub async fn create() -> Result<TestDatabase, TestStoreError> {
        match Backend::from_env() {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(TestStoreError::TempDir)?;
                let path = dir.path().to_owned();
                Ok(TestDatabase::sqlite_in(&path, Some(dir)))
            }
            Backend::Postgres => TestDatabase::postgres().await,
        }
    }

    /// Like [`TestDatabase::create`], but a SQLite store is the file
    /// `restic-manager.db` in `dir` (a server's data directory), where the
    /// caller keeps it as long as it likes.
    pub async fn create_in(dir: &Path) -> Result<TestDatabase, TestStoreError> {
        TestDatabase::create_in_for(dir, Backend::from_env()).await
    }

    /// [`TestDatabase::create_in`] on `backend`, whatever `RM_TEST_STORE`
    /// says (a bench that measures both stores).
    pub async fn create_in_for(
        dir: &Path,
        backend: Backend,
    ) -> Result<TestDatabase, TestStoreError> {
        match backend {
            Backend::Sqlite => Ok(TestDatabase::sqlite_in(dir, None)),
            Backend::Postgres => TestDatabase::postgres().await,
        }
    }

    fn sqlite_in(dir: &Path, owned: Option<TempDir>) -> TestDatabase {
        TestDatabase {
            url: format!("sqlite://{}", dir.join(SQLITE_FILE).display()),
            place: Place::Sqlite { _dir: owned },
        }
    }

    async fn postgres() -> Result<TestDatabase, TestStoreError> {
        let admin_url = match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ => panic!(
                "{STORE_VAR}=postgres needs {POSTGRES_URL_VAR}, the admin URL of a temporary \
                 PostgreSQL cluster (scripts/test starts one)"
            ),
        };
        TestDatabase::create_postgres_on(&admin_url).await
    }

    /// A new, empty schema on the PostgreSQL cluster whose admin URL is
    /// `admin_url`, whatever `RM_TEST_POSTGRES_URL` says (a bench that
    /// started a cluster of its own).
    pub async fn create_postgres_on(admin_url: &str) -> Result<TestDatabase, TestStoreError> {
        // The error does not name the URL: it may carry the cluster's password.
        let admin = PgConnectOptions::from_str(admin_url)
            .map_err(|e| TestStoreError::PostgresUrl(e.to_string()))?;
        // Lower case: an unquoted identifier is folded to it anyway, and a
        // ULID's alphabet has nothing else that needs quoting.
        let schema = format!("rm_{}", Ulid::new().to_string().to_lowercase());
        // Made before the schema exists, so a bad URL leaves nothing behind.
        let url = in_schema(admin_url, &schema)?;
        let mut connection = PgConnection::connect_with(&admin)
            .await
            .map_err(TestStoreError::Schema)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut connection)
            .await
            .map_err(TestStoreError::Schema)?;
        // Best effort: the schema is made, a failed goodbye changes nothing.
        let _ = connection.close().await;
        Ok(TestDatabase {
            url,
            place: Place::Postgres {
                admin: Box::new(admin),
                schema,
            },
        })
    }

    /// The backend this store is of.
    pub fn backend(&self) -> Backend {
        match self.place {
            Place::Sqlite { .. } => Backend::Sqlite,
            Place::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The database URL a server is given for this store. A PostgreSQL URL
    /// carries the cluster's credentials: pass it in the environment
    /// (`RM_DATABASE_URL`), never on a command line or into a log.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` on the database from outside the store, on a connection
    /// of its own (as a damaged or tampered-with database looks to a
    /// running server). Plain SQL both engines read alike, such as
    /// `ALTER TABLE … RENAME TO …`.
    pub async fn execute_outside(&self, sql: &str) -> Result<(), TestStoreError> {
        let statement = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.place {
            Place::Sqlite { .. } => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .map_err(TestStoreError::Outside)?;
                sqlx::raw_sql(statement)
                    .execute(&mut connection)
                    .await
                    .map_err(TestStoreError::Outside)?;
                connection.close().await.map_err(TestStoreError::Outside)?;
            }
            Place::Postgres { .. } => {
                let mut connection = PgConnection::connect(&self.url)
                    .await
                    .map_err(TestStoreError::Outside)?;
                sqlx::raw_sql(statement)
                    .execute(&mut connection)
                    .await
                    .map_err(TestStoreError::Outside)?;
                connection.close().await.map_err(TestStoreError::Outside)?;
            }
        }
        Ok(())
    }

    /// Everything the database holds, as bytes to search (for secrets
    /// that must never be stored in the clear): the SQLite file and its
    /// write-ahead log, or every row of every table of the PostgreSQL
    /// schema as text.
    pub async fn contents(&self) -> Result<Vec<u8>, TestStoreError> {
        match &self.place {
            Place::Sqlite { .. } => {
                let file = self.url.trim_start_matches("sqlite://");
                let mut bytes = std::fs::read(file).map_err(TestStoreError::Read)?;
                if let Ok(wal) = std::fs::read(format!("{file}-wal")) {
                    bytes.extend(wal);
                }
                Ok(bytes)
            }
            Place::Postgres { .. } => {
                let mut connection = PgConnection::connect(&self.url)
                    .await
                    .map_err(TestStoreError::Outside)?;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
                )
                .fetch_all(&mut connection)
                .await
                .map_err(TestStoreError::Outside)?;
                let mut bytes = Vec::new();
                for table in tables {
                    // Table names come from the catalogue, quoted.
                    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT t::text FROM \"{table}\" t"
                    )))
                    .fetch_all(&mut connection)
                    .await
                    .map_err(TestStoreError::Outside)?;
                    for row in rows {
                        bytes.extend(row.into_bytes());
                        bytes.push(b'\n');
                    }
                }
                connection.close().await.map_err(TestStoreError::Outside)?;
                Ok(bytes)
            }
        }
    }

    /// Opens a store on this database (again, after a restart: the data of
    /// the earlier opening is there).
    pub async fn open(&self) -> Result<Arc<dyn Store>, TestStoreError> {
        match self.place {
            Place::Sqlite { .. } => Ok(Arc::new(SqliteStore::open(&self.url).await?)),
            Place::Postgres { .. } => open_postgres(&self.url).await,
        }
    }
}

/// `admin_url` with every connection starting in `schema`. `options` is
/// libpq's own parameter, so the URL means the same to sqlx, to a server's
/// `--database-url` and to psql.
fn in_schema(admin_url: &str, schema: &str) -> Result<String, TestStoreError> {
    // The error does not name the URL: it may carry the cluster's password.
    let mut url =
        url::Url::parse(admin_url).map_err(|e| TestStoreError::PostgresUrl(e.to_string()))?;
    url.query_pairs_mut()
        .append_pair("options", &format!("-c search_path={schema}"));
    Ok(url.to_string())
}

/// Opens the PostgreSQL store on `url` (whose `options` put every
/// connection in the test's schema), with a small pool: a test run holds
/// many stores at once on one cluster.
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>, TestStoreError> {
    let options = PostgresOptions {
        pool_size: 4,
        ..PostgresOptions::default()
    };
    Ok(Arc::new(PostgresStore::open(url, &options).await?))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Place::Postgres { admin, schema } = &self.place else {
            return;
        };
        // A lock the dropped store still holds (a transaction cut off by
        // the test's end) must not hang the test: give up after a while,
        // the test cluster is removed whole anyway.
        let admin = admin.as_ref().clone().options([("lock_timeout", "10s")]);
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        // A guard is dropped inside the test's runtime, which must not be
        // blocked on from within; a thread with a runtime of its own can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut connection = PgConnection::connect_with(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut connection)
                    .await
                    .ok()?;
                connection.close().await.ok()
            })
        });
        let _ = dropped.join();
    }
}

impl fmt::Debug for TestDatabase {
    // Not the URL: a PostgreSQL one carries the cluster's credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("TestDatabase");
        out.field("backend", &self.backend());
        if let Place::Postgres { schema, .. } = &self.place {
            out.field("schema", schema);
        }
        out.finish_non_exhaustive()
    }
}

/// A fresh, empty store of the backend `RM_TEST_STORE` names, and the
/// guard that removes it: keep the guard alive as long as the store.
pub async fn open_temp_store() -> Result<(TestDatabase, Arc<dyn Store>), TestStoreError> {
    let database = TestDatabase::create().await?;
    let store = database.open().await?;
    Ok((database, store))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_schema_url_keeps_the_admin_url_and_sets_the_search_path() {
        let url = in_schema(
            "postgres://rm:s3cret@127.0.0.1:5433/postgres?sslmode=disable",
            "rm_01abc",
        )
        .unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_username(), "rm");
        assert_eq!(options.get_database(), Some("postgres"));
        assert!(matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::Disable
        ));
        assert_eq!(options.get_options(), Some("-c search_path=rm_01abc"));
    }

    #[test]
    fn a_socket_directory_url_keeps_its_socket() {
        let url = in_schema(
            "postgresql:///postgres?host=/tmp/pg-test&port=5433&user=rm",
            "rm_x",
        )
        .unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(
            options.get_socket(),
            Some(&std::path::PathBuf::from("/tmp/pg-test"))
        );
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_username(), "rm");
        assert_eq!(options.get_options(), Some("-c search_path=rm_x"));
    }

    #[test]
    fn sqlite_is_the_default_and_postgres_is_named() {
        use std::env::VarError;
        assert_eq!(Backend::named(Err(VarError::NotPresent)), Backend::Sqlite);
        assert_eq!(Backend::named(Ok(String::new())), Backend::Sqlite);
        assert_eq!(Backend::named(Ok("sqlite".into())), Backend::Sqlite);
        assert_eq!(Backend::named(Ok("postgres".into())), Backend::Postgres);
    }

    #[test]
    #[should_panic(expected = "RM_TEST_STORE=\"postgresql\" is not a store")]
    fn any_other_store_name_stops_the_test_naming_the_variable() {
        Backend::named(Ok("postgresql".into()));
    }

    #[test]
    fn an_unparsable_url_is_refused_without_echoing_it() {
        let err = in_schema("not a url s3cret", "rm_x")
            .unwrap_err()
            .to_string();
        assert!(err.contains(POSTGRES_URL_VAR), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
