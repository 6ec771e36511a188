//! The sealing key file in the data directory: made once (mode 0600) on
//! first start, read on every later one. Back it up with the database —
//! without it, stored repository passwords cannot be opened.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rm_core::sealing::SealingKey;

use crate::ServerError;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "secret.key";

/// Reads the key at `path`, or creates it (0600) when there is none.
pub fn load_or_create_key(path: &Path) -> Result<SealingKey, ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the key file is readable by other users; chmod 600 it");
            }
            SealingKey::from_bytes(&bytes).map_err(|e| ServerError::KeyFile {
                path: path.display().to_string(),
                problem: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SealingKey::generate()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(key.as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created the key that seals repository passwords; back it up with the database");
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create_key(&path).unwrap();
        assert_eq!(first.as_bytes(), second.as_bytes());
    }

    #[test]
    fn a_truncated_key_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"short").unwrap();
        let e = load_or_create_key(&path).unwrap_err().to_string();
        assert!(e.contains(KEY_FILE), "{e}");
    }
}
