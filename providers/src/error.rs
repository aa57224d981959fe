//! The one error type every provider returns, classified so the reconciler can react
//! without parsing strings.
//!
//! Each variant keeps the provider's own error code and message ([`ErrorDetail`]) for
//! the operator: `InsufficientInstanceCapacity` from EC2, `ZONE_RESOURCE_POOL_EXHAUSTED`
//! from GCE. The reconciler looks only at the variant:
//!
//! | variant | what the reconciler does |
//! |---|---|
//! | [`ProviderError::InsufficientCapacity`] | marks the offering unavailable for a while, falls back to the next (also when the offering cannot be had there at all, EC2 `Unsupported`) |
//! | [`ProviderError::QuotaExceeded`] | same, for longer: quotas do not refill by themselves |
//! | [`ProviderError::Throttled`] | tries again next tick |
//! | [`ProviderError::InvalidConfig`] | reports the launch config as broken; an operator must fix it |
//! | [`ProviderError::NotFound`] | the instance is gone (terminate treats this as success) |
//! | [`ProviderError::Unauthorized`] | reports the credentials as broken |
//! | [`ProviderError::Transient`] | tries again next tick |
//!
//! [`ProviderError::marks_offering_unavailable`] and [`ProviderError::stops_launch`]
//! answer for the reconciler and the providers; [`ProviderError::kind_str`] is the
//! stable name of the class, for metrics labels and logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the provider itself said: its error code and message, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The provider's code (`InsufficientInstanceCapacity`, `QUOTA_EXCEEDED`, `429`).
    pub code: String,
    /// The provider's message, for the operator.
    pub message: String,
}

impl ErrorDetail {
    /// A detail from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// A classified provider failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderError {
    /// The cloud has no capacity for this offering right now (EC2
    /// `InsufficientInstanceCapacity`, GCE `ZONE_RESOURCE_POOL_EXHAUSTED`, no idle static
    /// machine), or does not offer it there at all (EC2 `Unsupported`: "your requested
    /// instance type is not supported in your requested Availability Zone"). Another
    /// zone, type or market may work; the code tells the two apart for the operator.
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(ErrorDetail),
    /// An account limit was hit (EC2 `VcpuLimitExceeded`, `MaxSpotInstanceCountExceeded`,
    /// GCE `QUOTA_EXCEEDED`). Needs a quota increase or fewer instances elsewhere.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(ErrorDetail),
    /// The API rate limit was hit (EC2 `RequestLimitExceeded`, GCE `rateLimitExceeded`).
    #[error("throttled: {0}")]
    Throttled(ErrorDetail),
    /// The launch config or request is wrong (unknown image, bad parameter, invalid
    /// parameter combination, an instance type the image does not support). Retrying
    /// will not help.
    #[error("invalid configuration: {0}")]
    InvalidConfig(ErrorDetail),
    /// The instance does not exist (any more).
    #[error("not found: {0}")]
    NotFound(ErrorDetail),
    /// The credentials are missing, wrong, or lack a permission.
    #[error("unauthorized: {0}")]
    Unauthorized(ErrorDetail),
    /// Anything that may work next time: network errors, timeouts, 5xx, unknown codes.
    #[error("transient: {0}")]
    Transient(ErrorDetail),
}

/// The class of a [`ProviderError`], without its detail (for metrics and matching).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// See [`ProviderError::InsufficientCapacity`].
    InsufficientCapacity,
    /// See [`ProviderError::QuotaExceeded`].
    QuotaExceeded,
    /// See [`ProviderError::Throttled`].
    Throttled,
    /// See [`ProviderError::InvalidConfig`].
    InvalidConfig,
    /// See [`ProviderError::NotFound`].
    NotFound,
    /// See [`ProviderError::Unauthorized`].
    Unauthorized,
    /// See [`ProviderError::Transient`].
    Transient,
}

impl ErrorKind {
    /// The name used in metrics, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientCapacity => "insufficient_capacity",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Throttled => "throttled",
            Self::InvalidConfig => "invalid_config",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Transient => "transient",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProviderError {
    /// An error of class `kind` with the provider's `code` and `message`.
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        let d = ErrorDetail::new(code, message);
        match kind {
            ErrorKind::InsufficientCapacity => Self::InsufficientCapacity(d),
            ErrorKind::QuotaExceeded => Self::QuotaExceeded(d),
            ErrorKind::Throttled => Self::Throttled(d),
            ErrorKind::InvalidConfig => Self::InvalidConfig(d),
            ErrorKind::NotFound => Self::NotFound(d),
            ErrorKind::Unauthorized => Self::Unauthorized(d),
            ErrorKind::Transient => Self::Transient(d),
        }
    }

    /// A launch-config problem found by capstan itself before calling the provider;
    /// `field` names the offending field (`provider_config.image_id`).
    pub fn invalid_field(field: &str, problem: impl fmt::Display) -> Self {
        Self::InvalidConfig(ErrorDetail::new(
            "capstan.InvalidLaunchConfig",
            format!("{field}: {problem}"),
        ))
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InsufficientCapacity(_) => ErrorKind::InsufficientCapacity,
            Self::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            Self::Throttled(_) => ErrorKind::Throttled,
            Self::InvalidConfig(_) => ErrorKind::InvalidConfig,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Unauthorized(_) => ErrorKind::Unauthorized,
            Self::Transient(_) => ErrorKind::Transient,
        }
    }

    /// The stable snake_case name of the class (`insufficient_capacity`), for metrics
    /// labels: the same as `self.kind().as_str()` and the serialized `kind` tag.
    pub fn kind_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The provider's code and message.
    pub fn detail(&self) -> &ErrorDetail {
        match self {
            Self::InsufficientCapacity(d)
            | Self::QuotaExceeded(d)
            | Self::Throttled(d)
            | Self::InvalidConfig(d)
            | Self::NotFound(d)
            | Self::Unauthorized(d)
            | Self::Transient(d) => d,
        }
    }

    /// The provider's own error code.
    pub fn code(&self) -> &str {
        &self.detail().code
    }

    /// The provider's own message.
    pub fn message(&self) -> &str {
        &self.detail().message
    }

    /// Whether the offering should be marked unavailable for a while (capacity,
    /// including an offering the cloud does not have in that zone, or quota), so the
    /// planner falls back to another one instead of the pool stopping.
    pub fn marks_offering_unavailable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::InsufficientCapacity | ErrorKind::QuotaExceeded
        )
    }

    /// Whether the rest of a multi-instance launch should not be attempted (capacity,
    /// quota or throttling: the next create would fail the same way); the remaining
    /// instances are reported failed with this error.
    pub fn stops_launch(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::InsufficientCapacity | ErrorKind::QuotaExceeded | ErrorKind::Throttled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_provider_code_and_message() {
        let e = ProviderError::new(
            ErrorKind::InsufficientCapacity,
            "InsufficientInstanceCapacity",
            "no c6i.large in us-east-1a",
        );
        assert_eq!(e.kind(), ErrorKind::InsufficientCapacity);
        assert_eq!(e.code(), "InsufficientInstanceCapacity");
        assert_eq!(
            e.to_string(),
            "insufficient capacity: InsufficientInstanceCapacity: no c6i.large in us-east-1a"
        );
        assert!(e.marks_offering_unavailable());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "insufficient_capacity");
        assert_eq!(json["code"], "InsufficientInstanceCapacity");
    }

    #[test]
    fn kind_str_is_the_serialized_kind_of_every_class() {
        use ErrorKind::*;
        for (kind, name) in [
            (InsufficientCapacity, "insufficient_capacity"),
            (QuotaExceeded, "quota_exceeded"),
            (Throttled, "throttled"),
            (InvalidConfig, "invalid_config"),
            (NotFound, "not_found"),
            (Unauthorized, "unauthorized"),
            (Transient, "transient"),
        ] {
            let e = ProviderError::new(kind, "code", "message");
            assert_eq!(e.kind_str(), name);
            assert_eq!(serde_json::to_value(&e).unwrap()["kind"], name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    #[test]
    fn only_capacity_and_quota_mark_the_offering_and_those_plus_throttling_stop() {
        use ErrorKind::*;
        for (kind, marks, stops) in [
            (InsufficientCapacity, true, true),
            (QuotaExceeded, true, true),
            (Throttled, false, true),
            (InvalidConfig, false, false),
            (NotFound, false, false),
            (Unauthorized, false, false),
            (Transient, false, false),
        ] {
            let e = ProviderError::new(kind, "code", "message");
            assert_eq!(e.marks_offering_unavailable(), marks, "{kind}");
            assert_eq!(e.stops_launch(), stops, "{kind}");
        }
    }

    #[test]
    fn invalid_field_names_the_field() {
        let e = ProviderError::invalid_field("provider_config.image_id", "is required");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(e.message(), "provider_config.image_id: is required");
        assert!(!e.marks_offering_unavailable());
    }
}
