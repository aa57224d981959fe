//! What the agent starts from: where its bootstrap comes from ([`BootstrapSource`]) and
//! what it says ([`Bootstrap`]).
//!
//! A cloud instance's bootstrap is the user-data capstan wrote when it launched it
//! (EC2 user-data, GCE metadata item `capstan-user-data`):
//! `{"pool_id": "ci/linux", "worker_id": "w-…", "registration_token": "…", "api_url":
//! "http://host:8080"}`. A static machine's is a file the operator put there, TOML or
//! JSON, with `server`, `machine` and `secret`. A file may also hold cloud-style
//! user-data. `api_url` and `server` are the same thing under two names, and both may
//! be absent when `--server` says where capstan is.
//!
//! Parsing is pure; fetching the user-data is [`super::metadata`]'s job. A bad
//! bootstrap is an error that says where it came from and which field is wrong.

use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{Map, Value};

use capstan_core::secret::Secret;

/// Where the bootstrap comes from (`--bootstrap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapSource {
    /// EC2 user-data, through IMDSv2.
    Ec2,
    /// GCE metadata attribute `capstan-user-data`.
    Gce,
    /// A TOML or JSON file (static machines, or user-data saved to disk).
    File(PathBuf),
}

impl FromStr for BootstrapSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec2" => Ok(Self::Ec2),
            "gce" => Ok(Self::Gce),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
                _ => Err(format!("expected `ec2`, `gce` or `file:PATH`, found {s:?}")),
            },
        }
    }
}

/// How the agent proves who it is when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A machine capstan launched: its worker id and one-time registration token.
    Cloud {
        /// The worker id capstan minted for the instance.
        worker_id: String,
        /// The single-use token from the user-data.
        registration_token: Secret,
    },
    /// An operator-owned machine registered with `capstan machines`.
    Static {
        /// The machine's name.
        machine: String,
        /// The machine's secret.
        secret: Secret,
    },
}

/// A parsed bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Who the agent registers as.
    pub identity: Identity,
    /// The pool, when the bootstrap names it (cloud user-data does); informational,
    /// the registration answer is what counts.
    pub pool_id: Option<String>,
    /// The capstan server (`api_url` or `server`), unless `--server` overrides it.
    pub server: Option<String>,
}

/// A bootstrap that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The text is not the format it must be.
    #[error("{origin}: {detail}")]
    Syntax {
        /// Where the text came from (`EC2 user-data`, a file path).
        origin: String,
        /// What is wrong, from the parser.
        detail: String,
    },
    /// A required field is absent.
    #[error("{origin}: missing field `{field}` ({expected})")]
    MissingField {
        /// Where the text came from.
        origin: String,
        /// The field.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// A field is present but not a non-empty string.
    #[error("{origin}: field `{field}` must be a non-empty string, found {found}")]
    NotAString {
        /// Where the text came from.
        origin: String,
        /// The field.
        field: &'static str,
        /// What was there.
        found: String,
    },
}

/// Parses cloud user-data, which is always JSON.
pub fn parse_user_data(origin: &str, text: &str) -> Result<Bootstrap, BootstrapError> {
    let value: Value = serde_json::from_str(text).map_err(|e| BootstrapError::Syntax {
        origin: origin.to_owned(),
        detail: format!(
            "not JSON ({e}); expected capstan user-data such as {{\"worker_id\": \"w-…\", \
             \"registration_token\": \"…\", \"api_url\": \"http://host:8080\"}}"
        ),
    })?;
    from_value(origin, &value)
}

/// Parses a bootstrap file: JSON when it starts with `{`, TOML otherwise.
pub fn parse_file(origin: &str, text: &str) -> Result<Bootstrap, BootstrapError> {
    if text.trim_start().starts_with('{') {
        return parse_user_data(origin, text);
    }
    let table: toml::Table = toml::from_str(text).map_err(|e| BootstrapError::Syntax {
        origin: origin.to_owned(),
        detail: format!(
            "neither JSON nor TOML ({}); expected e.g. server = \"http://host:8080\", \
             machine = \"…\", secret = \"…\"",
            e.message()
        ),
    })?;
    let value = serde_json::to_value(table).map_err(|e| BootstrapError::Syntax {
        origin: origin.to_owned(),
        detail: e.to_string(),
    })?;
    from_value(origin, &value)
}

fn from_value(origin: &str, value: &Value) -> Result<Bootstrap, BootstrapError> {
    let Some(map) = value.as_object() else {
        return Err(BootstrapError::Syntax {
            origin: origin.to_owned(),
            detail: format!(
                "expected an object with `worker_id` and `registration_token` (cloud \
                 user-data) or `machine` and `secret` (static machine), found {}",
                kind(value)
            ),
        });
    };
    let fields = Fields { origin, map };
    let server = match fields.optional("api_url")? {
        Some(url) => Some(url),
        None => fields.optional("server")?,
    };
    let pool_id = fields.optional("pool_id")?;
    let identity = if map.contains_key("machine") {
        Identity::Static {
            machine: fields.required("machine", "the machine's name")?,
            secret: Secret::new(
                fields.required("secret", "the machine's secret from `capstan machines add`")?,
            ),
        }
    } else {
        Identity::Cloud {
            worker_id: fields.required(
                "worker_id",
                "the worker id capstan minted, e.g. \"w-0123456789abcdef\"; a static \
                 machine gives `machine` and `secret` instead",
            )?,
            registration_token: Secret::new(fields.required(
                "registration_token",
                "the one-time token capstan wrote into the user-data",
            )?),
        }
    };
    Ok(Bootstrap {
        identity,
        pool_id,
        server,
    })
}

struct Fields<'a> {
    origin: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn optional(&self, field: &'static str) -> Result<Option<String>, BootstrapError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(BootstrapError::NotAString {
                origin: self.origin.to_owned(),
                field,
                found: kind(other),
            }),
        }
    }

    fn required(
        &self,
        field: &'static str,
        expected: &'static str,
    ) -> Result<String, BootstrapError> {
        self.optional(field)?
            .ok_or_else(|| BootstrapError::MissingField {
                origin: self.origin.to_owned(),
                field,
                expected,
            })
    }
}

/// Names a JSON value's kind without showing it (it may be a secret).
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!("ec2".parse(), Ok(BootstrapSource::Ec2));
        assert_eq!("gce".parse(), Ok(BootstrapSource::Gce));
        assert_eq!(
            "file:/etc/capstan/agent.toml".parse(),
            Ok(BootstrapSource::File("/etc/capstan/agent.toml".into()))
        );
        let err = "azure".parse::<BootstrapSource>().unwrap_err();
        assert!(
            err.contains("file:PATH") && err.contains("\"azure\""),
            "{err}"
        );
        assert!("file:".parse::<BootstrapSource>().is_err());
    }

    #[test]
    fn cloud_user_data() {
        let b = parse_user_data(
            "EC2 user-data",
            r#"{"pool_id":"ci/linux","worker_id":"w-1","registration_token":"abc","api_url":"http://h:8080"}"#,
        )
        .unwrap();
        assert_eq!(
            b,
            Bootstrap {
                identity: Identity::Cloud {
                    worker_id: "w-1".into(),
                    registration_token: Secret::new("abc"),
                },
                pool_id: Some("ci/linux".into()),
                server: Some("http://h:8080".into()),
            }
        );
    }

    #[test]
    fn user_data_without_api_url_leaves_the_server_to_the_flag() {
        let b = parse_user_data("u", r#"{"worker_id":"w-1","registration_token":"abc"}"#).unwrap();
        assert_eq!(b.server, None);
        assert_eq!(b.pool_id, None);
    }

    #[test]
    fn static_machine_toml_file() {
        let b = parse_file(
            "/etc/capstan/agent.toml",
            "server = \"http://capstan:8080\"\nmachine = \"rack1-07\"\nsecret = \"s\"\n",
        )
        .unwrap();
        assert_eq!(
            b.identity,
            Identity::Static {
                machine: "rack1-07".into(),
                secret: Secret::new("s"),
            }
        );
        assert_eq!(b.server.as_deref(), Some("http://capstan:8080"));
    }

    #[test]
    fn a_json_file_may_hold_either_shape() {
        let b = parse_file("f", r#"{"machine":"m","secret":"s","server":"http://x"}"#).unwrap();
        assert!(matches!(b.identity, Identity::Static { .. }));
        let b = parse_file("f", r#" {"worker_id":"w-1","registration_token":"t"}"#).unwrap();
        assert!(matches!(b.identity, Identity::Cloud { .. }));
    }

    #[test]
    fn a_missing_field_is_named_with_what_it_should_hold() {
        let err = parse_user_data("EC2 user-data", r#"{"worker_id":"w-1"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("EC2 user-data: missing field `registration_token`"),
            "{err}"
        );
        let err = parse_file("m.toml", "machine = \"m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `secret`"), "{err}");
        let err = parse_user_data("u", "{}").unwrap_err().to_string();
        assert!(
            err.contains("`worker_id`") && err.contains("`machine`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_are_named_without_showing_the_value() {
        let err = parse_user_data("u", r#"{"worker_id":7,"registration_token":"t"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "u: field `worker_id` must be a non-empty string, found a number"
        );
        let err = parse_user_data("u", r#"{"worker_id":"w","registration_token":""}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("`registration_token` must be a non-empty string, found an empty string"),
            "{err}"
        );
    }

    #[test]
    fn not_json_or_not_an_object() {
        let err = parse_user_data("GCE metadata", "#!/bin/sh\necho hi")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("GCE metadata: not JSON"), "{err}");
        let err = parse_user_data("u", "[1]").unwrap_err().to_string();
        assert!(err.contains("found an array"), "{err}");
        let err = parse_file("f.toml", "machine = ").unwrap_err().to_string();
        assert!(err.starts_with("f.toml: neither JSON nor TOML"), "{err}");
    }
}
