//! Sealing secrets at rest: AES-256-GCM with a random 96-bit nonce per
//! message, under a 256-bit key the server keeps in its data directory.
//!
//! Repository passwords and backend keys must reach agents, so they cannot
//! be hashed like tokens; sealing keeps them unreadable in the database and
//! in its backups unless the key file is taken too.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};

use crate::{random_bytes, CoreError};

/// Length of a sealing key in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of a nonce in bytes.
pub const NONCE_BYTES: usize = 12;

/// A 256-bit sealing key. Its Debug output never shows the key.
#[derive(Clone)]
pub struct SealingKey([u8; KEY_BYTES]);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Why something could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key material has the wrong length.
    #[error("a sealing key must be {KEY_BYTES} bytes, got {0}")]
    KeyLength(usize),
    /// The nonce has the wrong length.
    #[error("a nonce must be {NONCE_BYTES} bytes, got {0}")]
    NonceLength(usize),
    /// Wrong key, or the ciphertext was altered.
    #[error("sealed data could not be opened (wrong key, or the data was altered)")]
    Open,
    /// Encryption failed.
    #[error("sealing failed")]
    Seal,
    /// No randomness for the nonce.
    #[error(transparent)]
    Random(#[from] CoreError),
}

/// A sealed message: nonce and ciphertext (with its tag).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The nonce used.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl SealingKey {
    /// A fresh random key.
    pub fn generate() -> Result<SealingKey, CoreError> {
        let mut key = [0u8; KEY_BYTES];
        random_bytes(&mut key)?;
        Ok(SealingKey(key))
    }

    /// A key from stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealingKey, SealError> {
        let key: [u8; KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(SealingKey(key))
    }

    /// The key bytes, for writing the key file.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }

    /// Encrypts `plaintext` under a fresh nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        random_bytes(&mut nonce)?;
        let ciphertext = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts and authenticates.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(SealError::NonceLength(sealed.nonce.len()));
        }
        self.cipher()
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                sealed.ciphertext.as_slice(),
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_with_the_same_key_only() {
        let key = SealingKey::generate().unwrap();
        let sealed = key.seal(b"repository password").unwrap();
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"password"));
        assert_eq!(key.open(&sealed).unwrap(), b"repository password");
        let other = SealingKey::generate().unwrap();
        assert!(matches!(other.open(&sealed), Err(SealError::Open)));
    }

    #[test]
    fn tampering_is_detected() {
        let key = SealingKey::generate().unwrap();
        let mut sealed = key.seal(b"secret").unwrap();
        sealed.ciphertext[0] ^= 1;
        assert!(matches!(key.open(&sealed), Err(SealError::Open)));
    }

    #[test]
    fn every_seal_uses_a_new_nonce() {
        let key = SealingKey::generate().unwrap();
        assert_ne!(key.seal(b"x").unwrap().nonce, key.seal(b"x").unwrap().nonce);
    }

    #[test]
    fn keys_round_trip_through_bytes_and_hide_in_debug() {
        let key = SealingKey::generate().unwrap();
        let again = SealingKey::from_bytes(key.as_bytes()).unwrap();
        assert_eq!(again.as_bytes(), key.as_bytes());
        assert!(matches!(
            SealingKey::from_bytes(&[0; 5]),
            Err(SealError::KeyLength(5))
        ));
        assert_eq!(format!("{key:?}"), "SealingKey(<redacted>)");
    }
}
