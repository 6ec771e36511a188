//! Secret bearer tokens: agent tokens, enrolment tokens, API tokens and login
//! sessions all share one shape, `<prefix>.<id>.<secret>`.
//!
//! The id is public and indexes the stored row; the secret is 256 random
//! bits. Only the SHA-256 of the whole token is stored, and a presented token
//! is checked by looking the row up by id and comparing hashes in constant
//! time, so neither the database nor response timing gives the secret away.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::ids::TokenId;
use crate::secret::constant_time_eq;
use crate::{random_bytes, CoreError};

/// What a token grants; its prefix says so, so a token pasted in the wrong
/// place is rejected before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An agent's credential for `/ws/agent`.
    Agent,
    /// A single-use enrolment token.
    Enrollment,
    /// An operator's long-lived API token.
    Api,
    /// An operator's login session.
    Session,
}

impl TokenKind {
    /// The token string prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Agent => "rma",
            TokenKind::Enrollment => "rme",
            TokenKind::Api => "rmt",
            TokenKind::Session => "rms",
        }
    }

    fn from_prefix(prefix: &str) -> Option<TokenKind> {
        [
            TokenKind::Agent,
            TokenKind::Enrollment,
            TokenKind::Api,
            TokenKind::Session,
        ]
        .into_iter()
        .find(|k| k.prefix() == prefix)
    }
}

/// SHA-256 of a whole token string; the only form in which tokens are stored.
/// `==` on it is [`TokenHash::matches`]: constant time, like every secret
/// comparison.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a token string.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        constant_time_eq(&self.0, &other.0)
    }

    /// Lower-case hex, for storage.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses stored hex.
    pub fn from_hex(s: &str) -> Option<TokenHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(TokenHash(out))
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &TokenHash) -> bool {
        self.matches(other)
    }
}

impl Eq for TokenHash {}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// A freshly generated token: the string to hand out once, and what to store.
pub struct IssuedToken {
    /// The public id (row key).
    pub id: TokenId,
    /// The full secret token string; show it once, never store or log it.
    pub token: String,
    /// The hash to store.
    pub hash: TokenHash,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl IssuedToken {
    /// Generates a token of `kind` with 256 random bits.
    pub fn generate(kind: TokenKind) -> Result<IssuedToken, CoreError> {
        let mut secret = [0u8; 32];
        random_bytes(&mut secret)?;
        let id = TokenId::new();
        let token = format!(
            "{}.{}.{}",
            kind.prefix(),
            id,
            URL_SAFE_NO_PAD.encode(secret)
        );
        let hash = TokenHash::of(&token);
        Ok(IssuedToken { id, token, hash })
    }
}

/// A token string split into its parts; not yet verified against anything.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedToken {
    /// What kind the prefix claims.
    pub kind: TokenKind,
    /// The id to look the stored hash up by.
    pub id: TokenId,
    /// The hash of the whole presented string.
    pub hash: TokenHash,
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish()
    }
}

/// Why a string is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a restic-manager token")]
pub struct MalformedToken;

impl FromStr for PresentedToken {
    type Err = MalformedToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let (Some(prefix), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedToken);
        };
        let kind = TokenKind::from_prefix(prefix).ok_or(MalformedToken)?;
        let id = id.parse::<TokenId>().map_err(|_| MalformedToken)?;
        let secret = URL_SAFE_NO_PAD.decode(secret).map_err(|_| MalformedToken)?;
        if secret.len() != 32 {
            return Err(MalformedToken);
        }
        Ok(PresentedToken {
            kind,
            id,
            hash: TokenHash::of(s),
        })
    }
}

impl PresentedToken {
    /// Parses `s` and insists on `kind`.
    pub fn parse_as(s: &str, kind: TokenKind) -> Result<PresentedToken, MalformedToken> {
        let token: PresentedToken = s.parse()?;
        if token.kind == kind {
            Ok(token)
        } else {
            Err(MalformedToken)
        }
    }

    /// True when `stored` is this token's hash (constant-time).
    pub fn verify(&self, stored: &TokenHash) -> bool {
        self.hash.matches(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_verify() {
        let issued = IssuedToken::generate(TokenKind::Agent).unwrap();
        assert!(issued.token.starts_with("rma."));
        let presented = PresentedToken::parse_as(&issued.token, TokenKind::Agent).unwrap();
        assert_eq!(presented.id, issued.id);
        assert!(presented.verify(&issued.hash));
    }

    #[test]
    fn a_token_of_another_kind_is_rejected() {
        let issued = IssuedToken::generate(TokenKind::Api).unwrap();
        assert_eq!(
            PresentedToken::parse_as(&issued.token, TokenKind::Agent),
            Err(MalformedToken)
        );
    }

    #[test]
    fn a_changed_secret_does_not_verify() {
        let issued = IssuedToken::generate(TokenKind::Session).unwrap();
        let mut forged = issued.token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        // Changing the last character may also make the secret undecodable,
        // which is just as much a refusal.
        if let Ok(p) = forged.parse::<PresentedToken>() {
            assert!(!p.verify(&issued.hash));
        }
    }

    #[test]
    fn malformed_strings_are_rejected() {
        for s in [
            "",
            "rma",
            "rma..",
            "rma.notaulid.AAAA",
            "xyz.01ARZ3NDEKTSV4RRFFQ69G5FAV.AAAA",
            "rma.01ARZ3NDEKTSV4RRFFQ69G5FAV.short",
            "rma.01ARZ3NDEKTSV4RRFFQ69G5FAV.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.extra",
        ] {
            assert!(s.parse::<PresentedToken>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = TokenHash::of("x");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }
}
