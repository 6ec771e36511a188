//! The sealing key file in the data directory: made once (mode 0600) when
//! the store holds nothing sealed, read on every later start. Back it up
//! with the database — without it, stored repository passwords cannot be
//! opened. Whether a missing key may be made anew is decided by
//! [`crate::sealing`], never here.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rm_core::sealing::SealingKey;

use crate::ServerError;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "secret.key";

/// Reads the key at `path`; `None` when there is no file.
pub(crate) fn read_key(path: &Path) -> Result<Option<SealingKey>, ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the key file is readable by other users; chmod 600 it");
            }
            SealingKey::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| ServerError::KeyFile {
                    path: path.display().to_string(),
                    problem: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ServerError::KeyFile {
            path: path.display().to_string(),
            problem: e.to_string(),
        }),
    }
}

/// Creates a new key file (0600) at `path`; an existing file is never
/// overwritten.
pub(crate) fn create_key(path: &Path) -> Result<SealingKey, ServerError> {
    let key = SealingKey::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ServerError::KeyFile {
            path: path.display().to_string(),
            problem: format!("could not create it: {e}"),
        })?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "created the key that seals repository passwords; back it up with the database");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        assert!(read_key(&path).unwrap().is_none());
        let first = create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = read_key(&path).unwrap().unwrap();
        assert_eq!(first.as_bytes(), second.as_bytes());
        // Never overwritten.
        assert!(create_key(&path).is_err());
        assert_eq!(
            read_key(&path).unwrap().unwrap().as_bytes(),
            first.as_bytes()
        );
    }

    #[test]
    fn a_truncated_key_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"short").unwrap();
        let e = read_key(&path).unwrap_err().to_string();
        assert!(e.contains(KEY_FILE), "{e}");
    }
}
