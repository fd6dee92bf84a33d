//! The admin token rule shared by the admin API and the console: a presented token is compared
//! with `OUTBOX_ADMIN_TOKEN` in time that depends on neither.

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110), so `bearer` and `BEARER` work too.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the presented token is the admin token, in time that depends on neither: both are
/// hashed to 32 bytes first (so their lengths do not matter) and every byte of the digests is
/// compared, without an early return.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER t0k", "  Bearer   t0k  "] {
            assert_eq!(bearer_token(header), Some("t0k"), "{header:?}");
        }
        for header in ["Basic t0k", "Bearer", "Bearer ", "t0k", "Bearert0k"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn tokens_match_only_when_equal_whatever_their_lengths() {
        assert!(token_matches("s3cret", "s3cret"));
        for other in [
            "s3cre",
            "s3cret!",
            "S3cret",
            "",
            "a much longer token than the real one",
        ] {
            assert!(!token_matches(other, "s3cret"), "{other:?}");
        }
    }
}
