//! Identifiers. A pool id is chosen by the operator, so it is validated; a worker id is
//! minted by capstan.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest pool or launch-config id, in characters.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than [`MAX_ID_LEN`].
    #[error("must be at most {MAX_ID_LEN} characters, got {0}")]
    TooLong(usize),
    /// The string holds a character outside the allowed set.
    #[error("may only contain lowercase letters, digits, '-', '_' and '/', found {0:?}")]
    BadChar(char),
}

/// Checks the id rules shared by pool and launch-config ids: 1..=64 characters out of
/// lowercase ASCII letters, digits, `-`, `_` and `/` (so `ci/linux-large` reads as a
/// path and can be matched by scope patterns such as `ci/*`).
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let len = s.chars().count();
    if len > MAX_ID_LEN {
        return Err(IdError::TooLong(len));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '/')))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

/// The operator-chosen name of a pool, e.g. `ci/linux-large`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolId(String);

impl PoolId {
    /// Validates `s` as a pool id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_id(&s)?;
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PoolId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<PoolId> for String {
    fn from(id: PoolId) -> String {
        id.0
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// capstan's own name for one machine. It is minted before the machine exists (so it
/// can be written into the intent record, the instance's tags and its user-data) and
/// never reused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    /// Wraps an id minted elsewhere (read back from the store or a provider tag).
    pub fn from_string(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_follow_the_documented_rules() {
        assert!(PoolId::new("ci/linux-large_2").is_ok());
        assert_eq!(PoolId::new(""), Err(IdError::Empty));
        assert_eq!(PoolId::new("CI"), Err(IdError::BadChar('C')));
        assert_eq!(PoolId::new("a b"), Err(IdError::BadChar(' ')));
        assert!(PoolId::new("a".repeat(64)).is_ok());
        assert_eq!(PoolId::new("a".repeat(65)), Err(IdError::TooLong(65)));
    }

    #[test]
    fn pool_id_deserialization_validates() {
        let err = serde_json::from_str::<PoolId>("\"Bad Id\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }
}
