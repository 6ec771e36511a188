//! The one way secrets are compared: in constant time, so how long a
//! comparison takes says nothing about how much of a guess was right.
//!
//! Token hashes, CSRF tokens and anything else secret go through
//! [`constant_time_eq`]; `TokenHash`'s `==` is this function too, so a
//! comparison written with `==` is no way around it.

use subtle::ConstantTimeEq;

/// Whether `a` and `b` hold the same bytes, in time that depends only on
/// their lengths (which are public: every secret compared here has a fixed
/// length, or its length is not the secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // `subtle` compares slices of different lengths as unequal at once;
    // the lengths are not secret, the contents are.
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_match_and_any_difference_does_not() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"same secret", b"same secret"));
        assert!(!constant_time_eq(b"same secret", b"same secreT"));
        assert!(!constant_time_eq(b"Same secret", b"same secret"));
        assert!(!constant_time_eq(b"short", b"shorter"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
