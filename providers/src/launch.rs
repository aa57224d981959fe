//! Launch requests and their outcomes.
//!
//! One [`LaunchRequest`] asks for N instances of one launch config. Each instance has
//! its own worker id, idempotency token and registration token ([`InstanceRequest`]),
//! because each becomes one worker record in the store: the token is written in the
//! intent row before the create call, and the worker id is written into the instance's
//! tags and user-data. The outcome ([`LaunchOutcome`]) accounts for every instance
//! asked for: launched, or failed with a classified error, so "asked for 10, got 6" is
//! visible as such.

use std::fmt;

use capstan_core::{LaunchConfig, PoolId, WorkerId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ProviderError;
use crate::instance::Instance;

/// One instance to create.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceRequest {
    /// capstan's id for the machine, minted before the create call.
    pub worker_id: WorkerId,
    /// Idempotency token: a second launch with the same token returns the instance the
    /// first one created instead of creating another.
    pub idempotency_token: String,
    /// Secret the machine presents when it registers; written into its user-data.
    /// Never logged (the `Debug` output redacts it).
    pub registration_token: String,
}

impl fmt::Debug for InstanceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceRequest")
            .field("worker_id", &self.worker_id)
            .field("idempotency_token", &self.idempotency_token)
            .field("registration_token", &"<redacted>")
            .finish()
    }
}

/// Launch N instances of one launch config for one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// The pool the instances serve (tagged on each).
    pub pool_id: PoolId,
    /// The launch config (offering) to use. Its `provider_config` is validated by the
    /// provider, which answers [`ProviderError::InvalidConfig`] naming the bad field.
    pub launch_config: LaunchConfig,
    /// Zone to launch in, overriding `launch_config.zone` (an offering can pin a zone
    /// the launch config leaves open).
    pub zone: Option<String>,
    /// The instances, one per worker.
    pub instances: Vec<InstanceRequest>,
}

impl LaunchRequest {
    /// The zone this request launches in, if any.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref().or(self.launch_config.zone.as_deref())
    }
}

/// What each machine is told at boot, through EC2 user-data or GCE metadata.
///
/// Serialized as JSON (`{"pool_id":…,"worker_id":…,"registration_token":…}`); the
/// worker agent reads it and registers with capstan using the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    /// The pool the machine serves.
    pub pool_id: String,
    /// The worker id capstan minted for it.
    pub worker_id: String,
    /// The secret it registers with.
    pub registration_token: String,
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserData")
            .field("pool_id", &self.pool_id)
            .field("worker_id", &self.worker_id)
            .field("registration_token", &"<redacted>")
            .finish()
    }
}

impl UserData {
    /// The user-data of instance `i` of `request`.
    pub fn for_instance(pool_id: &PoolId, i: &InstanceRequest) -> Self {
        Self {
            pool_id: pool_id.as_str().to_owned(),
            worker_id: i.worker_id.as_str().to_owned(),
            registration_token: i.registration_token.clone(),
        }
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        // Serializing three strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An instance that could not be launched.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchFailure {
    /// The worker it was for.
    pub worker_id: WorkerId,
    /// Why.
    pub error: ProviderError,
}

/// What a launch did. Every instance of the request appears exactly once, either in
/// `launched` or in `failed`, in request order within each list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchOutcome {
    /// Instances that exist (newly created, or found again through their token).
    pub launched: Vec<Instance>,
    /// Instances that were not created, with the classified reason.
    pub failed: Vec<LaunchFailure>,
}

impl LaunchOutcome {
    /// Instances asked for.
    pub fn requested(&self) -> usize {
        self.launched.len() + self.failed.len()
    }

    /// Whether every instance was launched.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// Whether some, but not all, instances were launched.
    pub fn is_partial(&self) -> bool {
        !self.launched.is_empty() && !self.failed.is_empty()
    }

    /// The first failure's error, if any (the usual reason for the rest).
    pub fn first_error(&self) -> Option<&ProviderError> {
        self.failed.first().map(|f| &f.error)
    }
}

/// A value usable as EC2 `ClientToken` (at most 64 printable ASCII characters): the
/// token itself when it fits, otherwise a SHA-256 digest of it, so any token maps to
/// one stable client token.
pub fn ec2_client_token(token: &str) -> String {
    if !token.is_empty() && token.len() <= 64 && token.bytes().all(|b| b.is_ascii_graphic()) {
        token.to_owned()
    } else {
        hex::encode(&Sha256::digest(token.as_bytes())[..32])
    }
}

/// A value usable as GCE `requestId`, which must be a non-zero UUID: the SHA-256 of
/// the token shaped as a version-4 UUID, so the same token always gives the same id.
pub fn gce_request_id(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_fit_ec2_rules_and_are_stable() {
        assert_eq!(ec2_client_token("p-1-0"), "p-1-0");
        let long = "x".repeat(65);
        let t = ec2_client_token(&long);
        assert_eq!(t.len(), 64);
        assert_eq!(t, ec2_client_token(&long));
        assert_ne!(ec2_client_token("a b"), "a b");
    }

    #[test]
    fn request_ids_are_deterministic_v4_uuids() {
        let id = gce_request_id("ci-42-0");
        assert_eq!(id, gce_request_id("ci-42-0"));
        assert_ne!(id, gce_request_id("ci-42-1"));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn debug_output_never_shows_the_registration_token() {
        let i = InstanceRequest {
            worker_id: WorkerId::from_string("w-1"),
            idempotency_token: "t".into(),
            registration_token: "s3cret".into(),
        };
        assert!(!format!("{i:?}").contains("s3cret"));
        let u = UserData::for_instance(&PoolId::new("p").unwrap(), &i);
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(u.to_json().contains("s3cret"));
    }
}
