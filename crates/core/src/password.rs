//! Operator passwords: argon2id hashes in PHC string form, and generation of
//! strong passwords for first start and resets.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

use sha2::{Digest, Sha256};

use crate::sealing::SealingKey;
use crate::{random_bytes, CoreError};

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, CoreError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::PasswordHash(e.to_string()))
}

/// Checks a password against a stored PHC hash. A malformed hash never
/// verifies. The comparison inside argon2 is constant-time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the same work as a real verification, for unknown user names, so
/// response time does not reveal which names exist.
pub fn verify_against_dummy(password: &str) {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$WnD3fE6Ug1a8pCE6T6OoYkLQ0Kx9Vq6Kq2i7oWjE2gA";
    let _ = verify_password(password, DUMMY);
}

/// Alphabet without look-alike characters (no 0/O, 1/l/I).
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A random 24-character password (about 139 bits).
pub fn generate_password() -> Result<String, CoreError> {
    let mut bytes = [0u8; 24];
    random_bytes(&mut bytes)?;
    // 256 is not a multiple of the alphabet size; the bias is tiny and this
    // password is shown once for the operator to replace.
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// A 24-character password that is the same every time for the same
/// `key` and `context` (HMAC-SHA256 of `context` under the key): a
/// repository password the server generates and must be able to give
/// again to a host that comes back to the repository, without keeping it
/// anywhere but sealed in the settings of the hosts using it.
pub fn derived_password(key: &SealingKey, context: &str) -> String {
    let mac = hmac_sha256(key.as_bytes(), context.as_bytes());
    // 24 of the 32 bytes, mapped as `generate_password` maps random ones.
    mac[..24]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// HMAC-SHA256 (RFC 2104) for keys of at most one block (64 bytes), as
/// sealing keys are.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    let key_len = key.len().min(BLOCK);
    padded[..key_len].copy_from_slice(&key[..key_len]);
    let inner_pad = padded.map(|b| b ^ 0x36);
    let outer_pad = padded.map(|b| b ^ 0x5c);
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (a key shorter than a block).
    #[test]
    fn hmac_sha256_matches_the_rfc() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn derived_passwords_repeat_per_context_and_key_only() {
        let key = SealingKey::from_bytes(&[7u8; 32]).unwrap();
        let other = SealingKey::from_bytes(&[8u8; 32]).unwrap();
        let a = derived_password(&key, "repo-a");
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(derived_password(&key, "repo-a"), a);
        assert_ne!(derived_password(&key, "repo-b"), a);
        assert_ne!(derived_password(&other, "repo-a"), a);
    }

    #[test]
    fn hash_then_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
    }

    /// Hashed by argon2 0.5 (salt of 5s): passwords stored before the move
    /// to argon2 0.6 must still log in, and the same salt gives the same
    /// hash, so the parameters did not change either.
    #[test]
    fn hashes_from_the_previous_argon2_still_verify() {
        const OLD: &str = "$argon2id$v=19$m=19456,t=2,p=1$BQUFBQUFBQUFBQUFBQUFBQ$rrdyTujiunfcvFU5Z8y3eAtL+iwrni+IHAW2O5DNfzY";
        assert!(verify_password("correct horse", OLD));
        assert!(!verify_password("wrong horse", OLD));
        let again = Argon2::default()
            .hash_password_with_salt(b"correct horse", &[5u8; 16])
            .unwrap()
            .to_string();
        assert_eq!(again, OLD);
    }

    #[test]
    fn malformed_hash_never_verifies() {
        assert!(!verify_password("x", "not a phc string"));
        assert!(!verify_password("", ""));
    }

    #[test]
    fn generated_passwords_differ_and_use_the_alphabet() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
    }
}
