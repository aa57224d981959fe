//! Secrets at rest: of a token or machine secret only its SHA-256 (hex) is stored, and a
//! presented secret is checked against that digest in constant time. API tokens and
//! static machines' secrets both go through here, so there is one such check.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret in memory (a token, a machine secret, a credential, a queue source's
/// password): `Debug` prints `Secret(<redacted>)` and `Display` `<redacted>`, so it
/// cannot reach a log line or an error message by accident. [`Secret::expose`] is the
/// one way to read it, where it goes on the wire. It has no `Serialize`, so it cannot
/// slip into a logged JSON document either; it deserializes from a plain string.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for a request body or header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
        let parsed: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(parsed, secret);
    }

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
