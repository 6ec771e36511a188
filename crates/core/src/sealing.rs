//! Sealing secrets at rest: AES-256-GCM with a random 96-bit nonce per
//! message, under a 256-bit key the server keeps in its data directory.
//!
//! Repository passwords and backend keys must reach agents, so they cannot
//! be hashed like tokens; sealing keeps them unreadable in the database and
//! in its backups unless the key file is taken too.
//!
//! Every value is sealed with associated data naming its owner and field
//! (`host:<id>/repository`), so a sealed value copied onto another row of
//! the database does not open there. Values sealed before that existed
//! used empty associated data ([`UNBOUND`]); the server re-seals them on
//! start. A key's [`SealingKey::fingerprint`] lets the store remember which
//! key sealed its values without holding the key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::{random_bytes, CoreError};

/// Length of a sealing key in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of a nonce in bytes.
pub const NONCE_BYTES: usize = 12;
/// The associated data of values sealed before owner binding: none.
pub const UNBOUND: &[u8] = b"";
/// What is hashed with the key for its fingerprint, so the fingerprint is
/// no hash anything else computes of the key (and says what it is).
const FINGERPRINT_LABEL: &[u8] = b"restic-manager sealing-key fingerprint v1\0";

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
    #[error("sealed data could not be opened (wrong key, sealed for another owner, or altered)")]
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

    /// Which key this is, safe to store and show: lower-case hex SHA-256
    /// of a label followed by the key. One-way, so it reveals nothing of
    /// the key (which is 256 random bits, beyond guessing); equal for equal
    /// keys and different for different ones.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(FINGERPRINT_LABEL);
        hash.update(self.0);
        hex::encode(hash.finalize())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0))
    }

    /// Encrypts `plaintext` under a fresh nonce, bound to `aad` (the
    /// owner and field of the value): it opens only with the same `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        random_bytes(&mut nonce)?;
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts and authenticates, with the `aad` it was sealed with
    /// ([`UNBOUND`] for values sealed before owner binding).
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = Nonce::try_from(sealed.nonce.as_slice())
            .map_err(|_| SealError::NonceLength(sealed.nonce.len()))?;
        self.cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed.ciphertext.as_slice(),
                    aad,
                },
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &[u8] = b"host:01ARZ3NDEKTSV4RRFFQ69G5FAV/repository";

    #[test]
    fn sealed_data_opens_with_the_same_key_only() {
        let key = SealingKey::generate().unwrap();
        let sealed = key.seal(b"repository password", AAD).unwrap();
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"password"));
        assert_eq!(key.open(&sealed, AAD).unwrap(), b"repository password");
        let other = SealingKey::generate().unwrap();
        assert!(matches!(other.open(&sealed, AAD), Err(SealError::Open)));
    }

    /// Sealed by aes-gcm 0.10 (key of 7s, nonce of 9s): what databases
    /// written before the move to aes-gcm 0.11 hold must still open, and a
    /// wrong nonce length is still refused by name.
    #[test]
    fn data_sealed_by_the_previous_aes_gcm_still_opens() {
        let key = SealingKey::from_bytes(&[7u8; KEY_BYTES]).unwrap();
        let sealed = Sealed {
            nonce: vec![9u8; NONCE_BYTES],
            ciphertext: hex::decode(
                "54e0e5f8db94e103c504a44a83cad7b7b1901683539c96a40ad6642ccce1e426bca17aa28a61ed8d08",
            )
            .unwrap(),
        };
        assert_eq!(
            key.open(&sealed, AAD).unwrap(),
            b"sealed before the upgrade"
        );
        let short = Sealed {
            nonce: vec![9u8; NONCE_BYTES - 1],
            ..sealed
        };
        assert!(matches!(
            key.open(&short, AAD),
            Err(SealError::NonceLength(11))
        ));
    }

    #[test]
    fn sealed_data_opens_for_its_own_owner_and_field_only() {
        let key = SealingKey::generate().unwrap();
        let sealed = key.seal(b"repository password", AAD).unwrap();
        for wrong in [
            &b"host:01BX5ZZKBKACTAV9WEVGEMMVRZ/repository"[..],
            b"host:01ARZ3NDEKTSV4RRFFQ69G5FAV/notification",
            UNBOUND,
        ] {
            assert!(matches!(key.open(&sealed, wrong), Err(SealError::Open)));
        }
        // And a value sealed without binding opens only without it.
        let unbound = key.seal(b"old", UNBOUND).unwrap();
        assert_eq!(key.open(&unbound, UNBOUND).unwrap(), b"old");
        assert!(matches!(key.open(&unbound, AAD), Err(SealError::Open)));
    }

    #[test]
    fn tampering_is_detected() {
        let key = SealingKey::generate().unwrap();
        let mut sealed = key.seal(b"secret", AAD).unwrap();
        sealed.ciphertext[0] ^= 1;
        assert!(matches!(key.open(&sealed, AAD), Err(SealError::Open)));
    }

    #[test]
    fn every_seal_uses_a_new_nonce() {
        let key = SealingKey::generate().unwrap();
        assert_ne!(
            key.seal(b"x", AAD).unwrap().nonce,
            key.seal(b"x", AAD).unwrap().nonce
        );
    }

    #[test]
    fn the_fingerprint_is_stable_differs_per_key_and_is_not_the_key() {
        let key = SealingKey::generate().unwrap();
        let fingerprint = key.fingerprint();
        assert_eq!(fingerprint.len(), 64);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        let again = SealingKey::from_bytes(key.as_bytes()).unwrap();
        assert_eq!(again.fingerprint(), fingerprint);
        assert_ne!(SealingKey::generate().unwrap().fingerprint(), fingerprint);
        assert!(!fingerprint.contains(&hex::encode(key.as_bytes())));
        // Not the plain SHA-256 of the key file either.
        assert_ne!(hex::encode(Sha256::digest(key.as_bytes())), fingerprint);
        // Pinned, so a change of derivation cannot slip in unnoticed: every
        // store records it, and a new derivation would lock every server out.
        let zero = SealingKey::from_bytes(&[0; KEY_BYTES]).unwrap();
        assert_eq!(
            zero.fingerprint(),
            "ce0ad28cc1f45e1d25575857afb28c0dd35d89b9ed144ef301a2f2b1dd009884"
        );
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
