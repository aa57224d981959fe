//! Secrets at rest: of a token or machine secret only its SHA-256 (hex) is stored, and a
//! presented secret is checked against that digest in constant time. API tokens and
//! static machines' secrets both go through here, so there is one such check.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The hex SHA-256 of `secret`: what is stored instead of it.
pub fn digest_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `presented` hashes to `stored_hex` (a [`digest_hex`]), comparing the digests
/// in constant time. A stored value that is not a hex digest matches nothing.
pub fn matches_digest(presented: &str, stored_hex: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hex) else {
        return false;
    };
    let given = Sha256::digest(presented.as_bytes());
    stored.len() == given.len() && bool::from(stored.as_slice().ct_eq(given.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_matches_its_digest() {
        let stored = digest_hex("s3cret");
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains("s3cret"));
        assert!(matches_digest("s3cret", &stored));
        assert!(!matches_digest("s3creT", &stored));
        assert!(!matches_digest("s3cret", "not hex"));
        assert!(!matches_digest("s3cret", &stored[..62]));
    }
}
