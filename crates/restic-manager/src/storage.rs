//! Opens the store a database URL names: SQLite (the default, a file in
//! the data directory) or PostgreSQL (`postgres://`, `postgresql://`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rm_store::Store;
use rm_store_postgres::{redact_url, PostgresOptions, PostgresStore};
use rm_store_sqlite::SqliteStore;

use crate::cli::StoreArgs;

/// Which engine a database URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// A SQLite URL (`sqlite://…`).
    Sqlite(String),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Database {
    /// Reads `url`, refusing a scheme no store speaks. The error never
    /// repeats the URL: it may carry a password.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Database> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(url.to_owned()))
        } else if url.starts_with("sqlite:") {
            Ok(Database::Sqlite(url.to_owned()))
        } else {
            let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
            bail!(
                "unsupported database URL scheme `{scheme}`: use sqlite://PATH or postgres://USER@HOST/DATABASE"
            )
        }
    }

    /// The URL as it may be shown: a PostgreSQL password is masked.
    pub(crate) fn shown(&self) -> String {
        match self {
            Database::Sqlite(url) => url.clone(),
            Database::Postgres(url) => redact_url(url),
        }
    }

    /// Opens the store (creating and migrating it as needed).
    /// `pool_size` is PostgreSQL's; SQLite refuses it rather than ignoring
    /// it, so a setting that does nothing is never silently kept.
    pub(crate) async fn open(&self, pool_size: Option<u32>) -> anyhow::Result<Arc<dyn Store>> {
        match self {
            Database::Sqlite(url) => {
                if pool_size.is_some() {
                    bail!("--database-pool-size (RM_DATABASE_POOL_SIZE) applies to PostgreSQL only; SQLite keeps its own small pool");
                }
                let store = SqliteStore::open(url)
                    .await
                    .with_context(|| format!("could not open the database at {url}"))?;
                Ok(Arc::new(store))
            }
            Database::Postgres(url) => {
                let mut options = PostgresOptions::default();
                if let Some(size) = pool_size {
                    options.pool_size = size;
                }
                let store = PostgresStore::open(url, &options)
                    .await
                    .with_context(|| format!("could not open the database at {}", self.shown()))?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// Creates the data directory (0700) and opens the configured store.
pub(crate) async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    ensure_private_dir(&args.data_dir)?;
    database(args)?.open(args.database_pool_size).await
}

/// Opens the configured SQLite database as it is, to copy it: nothing is
/// created or migrated. Returns the store and its URL. A PostgreSQL
/// database is refused: its own tools (pg_dump) copy it consistently.
pub(crate) async fn open_existing(args: &StoreArgs) -> anyhow::Result<(SqliteStore, String)> {
    let url = match database(args)? {
        Database::Sqlite(url) => url,
        Database::Postgres(_) => bail!(
            "admin backup-db copies a SQLite database; back up a PostgreSQL database with pg_dump (see docs/postgresql.md)"
        ),
    };
    let store = SqliteStore::open_existing(&url)
        .await
        .with_context(|| format!("could not open the database at {url}"))?;
    Ok((store, url))
}

/// The configured database: `--database-url`, else the SQLite file in the
/// data directory.
pub(crate) fn database(args: &StoreArgs) -> anyhow::Result<Database> {
    match &args.database_url {
        Some(url) => Database::parse(url),
        None => Ok(Database::Sqlite(format!(
            "sqlite://{}",
            args.data_dir.join("restic-manager.db").display()
        ))),
    }
}

/// Creates `dir` if needed and restricts it to its owner.
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("could not restrict permissions of {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_engine() {
        assert!(matches!(
            Database::parse("sqlite:///var/lib/rm/rm.db"),
            Ok(Database::Sqlite(_))
        ));
        for url in [
            "postgres://rm@db/rm",
            "postgresql://rm@db/rm?sslmode=require",
        ] {
            assert!(
                matches!(Database::parse(url), Ok(Database::Postgres(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn an_unknown_scheme_is_named_without_the_rest_of_the_url() {
        let e = Database::parse("mysql://rm:hunter2@db/rm")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`mysql`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_shown_postgres_url_hides_its_password() {
        let db = Database::parse("postgres://rm:hunter2@db:5432/rm").unwrap();
        let shown = db.shown();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db:5432/rm"), "{shown}");
    }
}
