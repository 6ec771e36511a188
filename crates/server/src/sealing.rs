//! The sealing key's guard and the binding of sealed values to their owner.
//!
//! [`unlock`] runs before the server (or `quickstart`) starts: it never
//! makes a new key while the store holds sealed values, refuses a key whose
//! fingerprint differs from the one the store recorded, and re-seals values
//! from before owner binding in one transaction. [`reset`] is the explicit
//! way out (`admin reset-sealed-secrets`): it discards every sealed value
//! and records the current key. [`seal_repository`] and
//! [`open_repository`] bind a host's repository settings to
//! `host:<id>/repository`, so a value copied onto another host's row does
//! not open there.

use std::path::{Path, PathBuf};

use chrono::Utc;
use rm_core::sealing::{SealError, Sealed, SealingKey, UNBOUND};
use rm_core::HostId;
use rm_store::prelude::*;
use rm_store::{SealFormat, SealedRepository, SealingKeyRecord, StoreError};

use crate::audit::{Action, Audit, Target};
use crate::keyfile;
use crate::ServerError;

/// The command that discards sealed values for good, as operators type it.
pub const RESET_COMMAND: &str = "restic-manager admin reset-sealed-secrets";

/// Why the sealing key cannot be used, or a sealed value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// The key file is gone while the store holds sealed values.
    #[error(
        "the sealing key {} is missing, but the database holds the sealed repository settings \
         (passwords and backend keys) of {hosts} host(s), which cannot be opened without it. \
         No new key was made.\n{}",
        path.display(),
        remedy(path)
    )]
    KeyMissing {
        /// Where the key is expected.
        path: PathBuf,
        /// How many hosts' settings are sealed.
        hosts: usize,
    },
    /// The key file holds another key than the one the store recorded.
    #[error(
        "the sealing key {} is not the key that sealed the repository settings (passwords and \
         backend keys) of {hosts} host(s) in the database: its fingerprint is {found}, the \
         database recorded {recorded}. They cannot be opened with it.\n{}",
        path.display(),
        remedy(path)
    )]
    KeyDiffers {
        /// Where the key is.
        path: PathBuf,
        /// How many hosts' settings are sealed.
        hosts: usize,
        /// The fingerprint the store recorded.
        recorded: String,
        /// The fingerprint of the key in the file.
        found: String,
    },
    /// No fingerprint was recorded yet (a database from before them) and
    /// the key opens none of the sealed values.
    #[error(
        "the sealing key {} does not open the sealed repository settings (passwords and backend \
         keys) of {hosts} host(s) in the database: it is not the key that sealed them.\n{}",
        path.display(),
        remedy(path)
    )]
    KeyOpensNothing {
        /// Where the key is.
        path: PathBuf,
        /// How many hosts' settings are sealed.
        hosts: usize,
    },
    /// A value does not open for the owner whose row holds it.
    #[error(
        "the repository settings stored for {owner} do not open with the server's key: they were \
         sealed for another owner, or altered; set this host's repository again"
    )]
    WrongOwner {
        /// The owner and field the row belongs to (`host:<id>/repository`).
        owner: String,
    },
    /// A value from before owner binding that did not open at start.
    #[error(
        "the repository settings stored for {owner} are from before owner binding and do not \
         open with the server's key; set this host's repository again"
    )]
    Unbound {
        /// The owner and field the row belongs to.
        owner: String,
    },
    /// Sealing failed (no randomness for the nonce).
    #[error("sealing failed: {0}")]
    Seal(#[source] SealError),
    /// The key file could not be read or made.
    #[error(transparent)]
    KeyFile(#[from] ServerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to do when the key does not fit: the same two ways in every
/// message.
fn remedy(path: &Path) -> String {
    format!(
        "To keep them: restore {} from your backup of the server (mode 0600) and start again.\n\
         To give them up: run `{RESET_COMMAND} --yes` with the same --data-dir/--database-url; \
         those hosts then need their repository set again.",
        path.display()
    )
}

/// The owner and field a host's repository settings are bound to.
pub fn repository_owner(host: HostId) -> String {
    format!("host:{host}/repository")
}

/// Seals `plaintext` (a host's repository settings) bound to `host`.
pub fn seal_repository(
    key: &SealingKey,
    host: HostId,
    plaintext: &[u8],
) -> Result<SealedRepository, SealingError> {
    seal_for(key, &repository_owner(host), plaintext)
}

/// Seals `plaintext` bound to `owner` (`host:<id>/repository`,
/// `policy:<id>/repository`): it opens only as that owner's.
pub fn seal_for(
    key: &SealingKey,
    owner: &str,
    plaintext: &[u8],
) -> Result<SealedRepository, SealingError> {
    let sealed = key
        .seal(plaintext, owner.as_bytes())
        .map_err(SealingError::Seal)?;
    Ok(SealedRepository {
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        format: SealFormat::OwnerBound,
        updated_at: Utc::now(),
    })
}

/// Opens `host`'s repository settings. Only owner-bound values open here:
/// unbound ones were re-sealed at start, and one left over did not open
/// then either.
pub(crate) fn open_repository(
    key: &SealingKey,
    host: HostId,
    value: &SealedRepository,
) -> Result<Vec<u8>, SealingError> {
    open_for(key, &repository_owner(host), value)
}

/// Opens a value sealed for `owner`.
pub(crate) fn open_for(
    key: &SealingKey,
    owner: &str,
    value: &SealedRepository,
) -> Result<Vec<u8>, SealingError> {
    let owner = owner.to_owned();
    match value.format {
        SealFormat::OwnerBound => key
            .open(&as_sealed(value), owner.as_bytes())
            .map_err(|_| SealingError::WrongOwner { owner }),
        SealFormat::Unbound => Err(SealingError::Unbound { owner }),
    }
}

fn as_sealed(value: &SealedRepository) -> Sealed {
    Sealed {
        nonce: value.nonce.clone(),
        ciphertext: value.ciphertext.clone(),
    }
}

/// `path` made absolute (for messages an operator acts on), or as given.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The key the server seals with, checked against the store.
///
/// - Nothing sealed in the store: the key file is read, or made when
///   missing, and its fingerprint recorded (a warning says so when it
///   replaces a recorded one: database copies from before need the old
///   key).
/// - Sealed values and no key file: [`SealingError::KeyMissing`].
/// - A key whose fingerprint differs from the recorded one:
///   [`SealingError::KeyDiffers`]; with no fingerprint recorded yet, a key
///   that opens none of the values: [`SealingError::KeyOpensNothing`].
/// - Otherwise values from before owner binding are re-sealed bound to
///   their host, together with recording the fingerprint, in one
///   transaction. A value that does not open although the key is right is
///   left as it is and named in a warning (its host shows an error until
///   its repository is set again).
pub async fn unlock(store: &dyn Store, key_path: &Path) -> Result<SealingKey, SealingError> {
    let path = absolute(key_path);
    let recorded = store.sealing_key_record().await?;
    let sealed = store.sealed_repositories().await?;
    let key = keyfile::read_key(&path)?;

    if sealed.is_empty() {
        // Nothing can be lost: a missing key is made, another key adopted.
        let key = match key {
            Some(key) => key,
            None => keyfile::create_key(&path)?,
        };
        let fingerprint = key.fingerprint();
        match &recorded {
            Some(r) if r.fingerprint == fingerprint => {}
            Some(r) => {
                tracing::warn!(
                    path = %path.display(),
                    recorded = %r.fingerprint,
                    now = %fingerprint,
                    "the sealing key changed while nothing was sealed; copies of the database made before need the earlier key"
                );
                record(store, &fingerprint, &[]).await?;
            }
            None => record(store, &fingerprint, &[]).await?,
        }
        return Ok(key);
    }

    let hosts = sealed.len();
    let Some(key) = key else {
        return Err(SealingError::KeyMissing { path, hosts });
    };
    let fingerprint = key.fingerprint();
    // The key is proven right by the recorded fingerprint or, for a store
    // from before fingerprints, by opening one of its values.
    let mut proven = match &recorded {
        Some(r) if r.fingerprint != fingerprint => {
            return Err(SealingError::KeyDiffers {
                path,
                hosts,
                recorded: r.fingerprint.clone(),
                found: fingerprint,
            });
        }
        Some(_) => true,
        None => false,
    };
    let mut resealed = Vec::new();
    let mut unopened = Vec::new();
    for (host, value) in &sealed {
        match value.format {
            SealFormat::Unbound => match key.open(&as_sealed(value), UNBOUND) {
                Ok(plaintext) => {
                    proven = true;
                    let bound = seal_repository(&key, *host, &plaintext)?;
                    resealed.push((
                        *host,
                        SealedRepository {
                            updated_at: value.updated_at,
                            ..bound
                        },
                    ));
                }
                Err(_) => unopened.push(*host),
            },
            SealFormat::OwnerBound if !proven => {
                proven = open_repository(&key, *host, value).is_ok();
            }
            SealFormat::OwnerBound => {}
        }
    }
    if !proven {
        return Err(SealingError::KeyOpensNothing { path, hosts });
    }
    for host in &unopened {
        tracing::warn!(%host, "repository settings from before owner binding do not open with this key; they were left as they are: set this host's repository again");
    }
    let fingerprint_recorded =
        recorded.as_ref().map(|r| r.fingerprint.as_str()) == Some(&fingerprint);
    if !fingerprint_recorded || !resealed.is_empty() {
        match recorded.filter(|_| fingerprint_recorded) {
            // Keep the time the key was first recorded.
            Some(r) => store.record_sealing_key(&r, &resealed).await?,
            None => record(store, &fingerprint, &resealed).await?,
        }
        if !resealed.is_empty() {
            tracing::info!(
                hosts = resealed.len(),
                "re-sealed repository settings bound to their hosts"
            );
        }
    }
    Ok(key)
}

async fn record(
    store: &dyn Store,
    fingerprint: &str,
    resealed: &[(HostId, SealedRepository)],
) -> Result<(), StoreError> {
    store
        .record_sealing_key(
            &SealingKeyRecord {
                fingerprint: fingerprint.to_owned(),
                recorded_at: Utc::now(),
            },
            resealed,
        )
        .await
}

/// What [`reset`] did.
#[derive(Debug, Clone)]
pub struct ResetOutcome {
    /// The hosts whose repository settings were discarded (deleted hosts
    /// included).
    pub hosts: Vec<HostId>,
    /// The key file now in use.
    pub key_path: PathBuf,
    /// Whether the key file had to be made.
    pub key_created: bool,
    /// The fingerprint recorded.
    pub fingerprint: String,
}

/// Discards every sealed value and records the key at `key_path` (made
/// when missing) as the one that seals from now on, with the audit entry
/// of `audit` doing it in the same transaction.
pub async fn reset(
    store: &dyn Store,
    key_path: &Path,
    audit: &Audit,
) -> Result<ResetOutcome, SealingError> {
    let path = absolute(key_path);
    let (key, key_created) = match keyfile::read_key(&path)? {
        Some(key) => (key, false),
        None => (keyfile::create_key(&path)?, true),
    };
    let fingerprint = key.fingerprint();
    // Counted first, for the entry written with the reset (the command
    // asks for the server to be stopped, so nothing stores settings
    // between the count and the reset).
    let discarding = store.sealed_repositories().await?.len();
    let entry = audit.entry(
        Action::SealedSecretsReset,
        Some(Target::new("sealing_key", &fingerprint)),
        serde_json::json!({"hosts": discarding, "key_created": key_created}),
    );
    let hosts = store
        .reset_sealed_secrets(
            &SealingKeyRecord {
                fingerprint: fingerprint.clone(),
                recorded_at: Utc::now(),
            },
            Some(&entry),
        )
        .await?;
    tracing::warn!(
        hosts = hosts.len(),
        %fingerprint,
        "discarded every sealed repository setting"
    );
    Ok(ResetOutcome {
        hosts,
        key_path: path,
        key_created,
        fingerprint,
    })
}
