//! Opens the store a database URL names.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rm_store::prelude::*;
use rm_store_sqlite::SqliteStore;

use crate::cli::StoreArgs;

/// Creates the data directory (0700) and opens the configured store.
pub(crate) async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    ensure_private_dir(&args.data_dir)?;
    let url = sqlite_url(args)?;
    let store = SqliteStore::open(&url)
        .await
        .with_context(|| format!("could not open the database at {url}"))?;
    Ok(Arc::new(store))
}

/// Opens the configured SQLite database as it is, to copy it: nothing is
/// created or migrated. Returns the store and its URL.
pub(crate) async fn open_existing(args: &StoreArgs) -> anyhow::Result<(SqliteStore, String)> {
    let url = sqlite_url(args)?;
    let store = SqliteStore::open_existing(&url)
        .await
        .with_context(|| format!("could not open the database at {url}"))?;
    Ok((store, url))
}

/// The configured database URL, which must be SQLite for now.
fn sqlite_url(args: &StoreArgs) -> anyhow::Result<String> {
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}",
            args.data_dir.join("restic-manager.db").display()
        ),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!("PostgreSQL is not supported by this build yet; use the default SQLite database");
    }
    if !url.starts_with("sqlite:") {
        bail!("unsupported database URL scheme in `{url}`: use sqlite://PATH (or postgres:// once supported)");
    }
    Ok(url)
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
