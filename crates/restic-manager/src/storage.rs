//! Opens the store a database URL names.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rm_store::Store;

use crate::cli::StoreArgs;

/// Creates the data directory (0700) and opens the configured store.
pub(crate) async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    ensure_private_dir(&args.data_dir)?;
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
    let store = rm_store_sqlite::SqliteStore::open(&url)
        .await
        .with_context(|| format!("could not open the database at {url}"))?;
    Ok(Arc::new(store))
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
