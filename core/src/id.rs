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
    /// A `/` at the start or end, or two in a row.
    #[error("must not start or end with '/' or hold an empty segment ('//')")]
    EmptySegment,
    /// A pool id whose last segment names an API sub-resource.
    #[error(
        "must not end in the segment {0:?}: /v1/pools/<id>/{0} names a sub-resource in the API; reserved: {reserved}",
        reserved = RESERVED_LAST_SEGMENTS.join(", ")
    )]
    ReservedSegment(String),
}

/// Words that may not be the last segment of a pool id, because in the API
/// `/v1/pools/<id>/<word>` names a sub-resource of pool `<id>` (pool ids hold `/`, so
/// without this `ci/workers` would be both a pool and the workers of pool `ci`). The
/// list holds today's sub-resources and the ones the API is planned to grow.
pub const RESERVED_LAST_SEGMENTS: &[&str] = &[
    "audit", "errors", "forecast", "history", "machines", "metrics", "plan", "queue", "simulate",
    "workers",
];

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
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '/')))
    {
        return Err(IdError::BadChar(c));
    }
    if s.split('/').any(str::is_empty) {
        return Err(IdError::EmptySegment);
    }
    Ok(())
}

/// [`check_id`] plus the rule that only pool ids have: the last segment is not one of
/// [`RESERVED_LAST_SEGMENTS`].
pub fn check_pool_id(s: &str) -> Result<(), IdError> {
    check_id(s)?;
    let last = s.rsplit('/').next().unwrap_or(s);
    if s.contains('/') && RESERVED_LAST_SEGMENTS.contains(&last) {
        return Err(IdError::ReservedSegment(last.to_owned()));
    }
    Ok(())
}

/// The operator-chosen name of a pool, e.g. `ci/linux-large`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolId(String);

impl PoolId {
    /// Validates `s` as a pool id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_pool_id(&s)?;
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

    /// The id's string, given back (a simulator reuses its buffer).
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// OpenAPI schemas: both ids are strings; a pool id's rules are stated as a pattern
/// (the reserved last segments are in its description).
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    impl utoipa::PartialSchema for super::PoolId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(POOL_ID_PATTERN))
                .min_length(Some(1))
                .max_length(Some(super::MAX_ID_LEN))
                .description(Some(format!(
                    "1-64 of a-z 0-9 - _ / in non-empty segments; the last segment of a \
                     multi-segment id is not one of: {}",
                    super::RESERVED_LAST_SEGMENTS.join(", ")
                )))
                .examples(["ci/linux-large"])
                .into()
        }
    }
    impl utoipa::ToSchema for super::PoolId {}

    impl utoipa::PartialSchema for super::WorkerId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("capstan's id of one machine"))
                .into()
        }
    }
    impl utoipa::ToSchema for super::WorkerId {}

    /// What a pool id looks like, as a regular expression.
    pub const POOL_ID_PATTERN: &str = "^[a-z0-9_-]+(/[a-z0-9_-]+)*$";
}
#[cfg(feature = "openapi")]
pub use openapi::POOL_ID_PATTERN;

/// Appends `n` in decimal to `s`, as `format!("{n}")` writes it, without the
/// formatting machinery (ids and idempotency tokens, written once per launch on the
/// simulator's hot path).
pub fn push_decimal(s: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    s.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
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
        for bad in ["/ci", "ci/", "ci//linux"] {
            assert_eq!(PoolId::new(bad), Err(IdError::EmptySegment), "{bad}");
        }
    }

    #[test]
    fn pool_ids_do_not_end_in_an_api_sub_resource() {
        assert_eq!(
            PoolId::new("ci/workers"),
            Err(IdError::ReservedSegment("workers".into()))
        );
        // Only the last segment of a path is ambiguous in /v1/pools/<id>/<word>; a
        // single-segment id is never read as a sub-resource.
        assert!(PoolId::new("workers").is_ok());
        assert!(PoolId::new("ci/workers/x").is_ok());
        assert!(PoolId::new("ci/workers-x").is_ok());
    }

    #[test]
    fn pool_id_deserialization_validates() {
        let err = serde_json::from_str::<PoolId>("\"Bad Id\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }
}
