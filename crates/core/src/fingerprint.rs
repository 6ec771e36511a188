//! TLS certificate fingerprints: the SHA-256 of a certificate's DER bytes,
//! written `sha256:<64 lower-case hex digits>`. The server prints its own at
//! start-up and in enrolment commands; an agent pins the server with one.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of one certificate (its DER encoding).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

/// The prefix naming the hash in the written form.
const PREFIX: &str = "sha256:";

/// Why a written fingerprint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a certificate fingerprint: {reason} \
     (expected sha256: followed by 64 hex digits, colons between pairs allowed)"
)]
pub struct FingerprintError {
    /// The text as given (a fingerprint is public, so quoting it is safe).
    pub given: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> CertFingerprint {
        CertFingerprint(Sha256::digest(der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl FromStr for CertFingerprint {
    type Err = FingerprintError;

    /// Accepts `sha256:<hex>` in either case, with or without the colons
    /// between byte pairs that `openssl x509 -fingerprint -sha256` prints,
    /// so an operator can paste either form.
    fn from_str(s: &str) -> Result<CertFingerprint, FingerprintError> {
        let refuse = |reason| FingerprintError {
            given: s.to_owned(),
            reason,
        };
        let trimmed = s.trim();
        let digits = match trimmed.get(..PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(PREFIX) => &trimmed[PREFIX.len()..],
            _ => return Err(refuse("it does not start with `sha256:`")),
        };
        let hex_digits: String = digits.chars().filter(|c| *c != ':').collect();
        if hex_digits.len() != 64 {
            return Err(refuse("it does not have 64 hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits.to_ascii_lowercase(), &mut out)
            .map_err(|_| refuse("it contains characters that are not hex digits"))?;
        Ok(CertFingerprint(out))
    }
}

impl serde::Serialize for CertFingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CertFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_prefixed_lower_hex() {
        let fp = CertFingerprint::of_der(b"certificate");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:"), "{text}");
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<CertFingerprint>().unwrap(), fp);
    }

    #[test]
    fn parses_the_openssl_form_too() {
        let fp = CertFingerprint::of_der(b"x");
        let openssl = format!(
            "SHA256:{}",
            fp.as_bytes()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        assert_eq!(openssl.parse::<CertFingerprint>().unwrap(), fp);
        assert_eq!(
            format!("  {fp} ").parse::<CertFingerprint>().unwrap(),
            fp,
            "surrounding blanks are ignored"
        );
    }

    #[test]
    fn refuses_bad_input_saying_why() {
        let cases = [
            ("", "sha256:"),
            (
                "md5:0000000000000000000000000000000000000000000000000000000000000000",
                "sha256:",
            ),
            ("sha256:abcd", "64 hex digits"),
            (
                "sha256:zz00000000000000000000000000000000000000000000000000000000000000",
                "not hex",
            ),
        ];
        for (input, why) in cases {
            let err = input.parse::<CertFingerprint>().unwrap_err();
            assert!(err.to_string().contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_written_form() {
        let fp = CertFingerprint::of_der(b"y");
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, format!("\"{fp}\""));
        assert_eq!(serde_json::from_str::<CertFingerprint>(&json).unwrap(), fp);
        assert!(serde_json::from_str::<CertFingerprint>("\"sha256:1\"").is_err());
    }
}
