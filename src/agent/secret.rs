//! [`Secret`]: the registration token, the machine secret and the worker credential,
//! in a type that cannot reach a log line by accident.
//!
//! `Debug` and `Display` print `<redacted>`; the value comes out only through
//! [`Secret::expose`], which the worker API client calls while building a request
//! body or the `Authorization` header. The type has no `Serialize` on purpose, so it
//! cannot slip into a logged JSON document either.

use std::fmt;

/// A string that is never printed.
#[derive(Clone, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_display_shows_the_value() {
        let secret = Secret::new("capw_w-1_deadbeef");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), "capw_w-1_deadbeef");
    }
}
