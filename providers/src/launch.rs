//! Launch requests and their outcomes.
//!
//! One [`LaunchRequest`] asks for N instances of one launch config. Each instance has
//! its own worker id, idempotency token and registration token ([`InstanceRequest`]),
//! because each becomes one worker record in the store: the token is written in the
//! intent row before the create call, and the worker id is written into the instance's
//! tags and user-data. The outcome ([`LaunchOutcome`]) accounts for every instance
//! asked for: launched, or failed with a classified error, so "asked for 10, got 6" is
//! visible as such.
//!
//! Every provider launches through the same crate-internal sequence, `launch_each`; a
//! provider supplies only how to create one instance and how to find instances created
//! for its workers before a crash (a `Creator`). In request order, each instance is:
//!
//! 1. returned as it is now if its idempotency token is recorded in the
//!    [`LaunchLedger`] (one lookup per token before anything is created; a ledger that
//!    cannot be read fails the launch);
//! 2. else returned, and recorded, if the provider found an instance made for its
//!    worker (created, then a crash before the record; AWS looks the worker tags of
//!    all unrecorded instances up before the first create);
//! 3. else failed with the stopping error, once a create failed with a capacity, quota
//!    or throttling error ([`ProviderError::stops_launch`]);
//! 4. else created with one attempt and recorded in the ledger, or failed with the
//!    classified error.
//!
//! The cloud providers keep the [`LaunchLedger`]; the fake and static pools keep each
//! token with its instance or lease, atomically with the create, and have none. A
//! provider whose create itself returns what the worker or token already has (GCE
//! names instances after their worker; the fake and static pools look the token up)
//! finds nothing in step 2.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use capstan_core::{LaunchConfig, PoolId, WorkerId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Provider;
use crate::error::ProviderError;
use crate::instance::Instance;
use crate::ledger::{LaunchLedger, LedgerEntry, lookup_all, record_after_create};

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
    /// Where the machines reach capstan's API (written into their user-data so the
    /// agent needs no configuration); none leaves it to the agent's `--server`.
    pub api_url: Option<String>,
}

impl LaunchRequest {
    /// The zone this request launches in, if any.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref().or(self.launch_config.zone.as_deref())
    }
}

/// What each machine is told at boot, through EC2 user-data or GCE metadata.
///
/// Serialized as JSON (`{"pool_id":…,"worker_id":…,"registration_token":…,"api_url":…}`); the
/// worker agent reads it and registers with capstan using the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    /// The pool the machine serves.
    pub pool_id: String,
    /// The worker id capstan minted for it.
    pub worker_id: String,
    /// The secret it registers with.
    pub registration_token: String,
    /// capstan's API, when the service knows its public address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserData")
            .field("pool_id", &self.pool_id)
            .field("worker_id", &self.worker_id)
            .field("registration_token", &"<redacted>")
            .field("api_url", &self.api_url)
            .finish()
    }
}

impl UserData {
    /// The user-data of instance `i` of `request`.
    pub fn for_instance(request: &LaunchRequest, i: &InstanceRequest) -> Self {
        Self {
            pool_id: request.pool_id.as_str().to_owned(),
            worker_id: i.worker_id.as_str().to_owned(),
            registration_token: i.registration_token.clone(),
            api_url: request.api_url.clone(),
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

/// A provider's part of [`launch_each`]: creating one instance, and finding the
/// instances already created for some workers. Implemented per launch by a small
/// value holding what the provider derived from the request (its parsed
/// `provider_config`, client, zone).
#[async_trait]
pub(crate) trait Creator: Send + Sync {
    /// Instances already created for some of `unrecorded` (the instances of `request`
    /// whose token the ledger does not know), keyed by worker id: found through the
    /// worker tag, for a crash between a create and its record. An error fails the
    /// whole launch before anything is created.
    ///
    /// The default finds nothing, for providers whose [`Creator::create_one`] itself
    /// returns what a worker or token already has (GCE derives the instance name from
    /// the worker id; the fake and static pools keep the token with the instance).
    async fn find_by_worker(
        &self,
        request: &LaunchRequest,
        unrecorded: &[&InstanceRequest],
    ) -> Result<HashMap<WorkerId, Instance>, ProviderError> {
        let _ = (request, unrecorded);
        Ok(HashMap::new())
    }

    /// One attempt at creating `instance` of `request`, without retries.
    async fn create_one(
        &self,
        request: &LaunchRequest,
        instance: &InstanceRequest,
    ) -> Result<Instance, ProviderError>;
}

/// The launch sequence every provider runs (see the module docs): `provider`
/// describes the instances recorded in `ledger` and names the provider in its records;
/// `creator` finds and creates. `ledger` is `None` for providers that keep tokens
/// themselves, atomically with the create (the fake and static pools).
///
/// `Err` only when nothing was created: the ledger could not be read, or
/// [`Creator::find_by_worker`] failed.
pub(crate) async fn launch_each(
    provider: &dyn Provider,
    ledger: Option<&dyn LaunchLedger>,
    request: &LaunchRequest,
    creator: &dyn Creator,
) -> Result<LaunchOutcome, ProviderError> {
    let kind = provider.kind();
    let recorded = match ledger {
        Some(l) => lookup_all(l, kind, &request.instances).await?,
        None => HashMap::new(),
    };
    let unrecorded: Vec<&InstanceRequest> = request
        .instances
        .iter()
        .filter(|i| !recorded.contains_key(&i.idempotency_token))
        .collect();
    let mut found = if unrecorded.is_empty() {
        HashMap::new()
    } else {
        creator.find_by_worker(request, &unrecorded).await?
    };

    let mut out = LaunchOutcome::default();
    let mut stop: Option<ProviderError> = None;
    for i in &request.instances {
        let fail = |error| LaunchFailure {
            worker_id: i.worker_id.clone(),
            error,
        };
        if let Some(entry) = recorded.get(&i.idempotency_token) {
            match provider.describe(&entry.instance_id).await {
                Ok(inst) => out.launched.push(inst),
                Err(error) => out.failed.push(fail(error)),
            }
            continue;
        }
        let created = match (found.remove(&i.worker_id), &stop) {
            (Some(inst), _) => Ok(inst),
            (None, Some(error)) => {
                out.failed.push(fail(error.clone()));
                continue;
            }
            (None, None) => {
                let result = creator.create_one(request, i).await;
                if let Err(error) = &result {
                    tracing::warn!(
                        provider = kind.as_str(),
                        pool = %request.pool_id,
                        launch_config = %request.launch_config.id,
                        worker = %i.worker_id,
                        %error,
                        "create failed"
                    );
                }
                result
            }
        };
        match created {
            Ok(inst) => {
                if let Some(l) = ledger {
                    let entry = LedgerEntry {
                        provider: kind,
                        instance_id: inst.id.clone(),
                        worker_id: i.worker_id.clone(),
                    };
                    record_after_create(l, &i.idempotency_token, entry).await;
                }
                out.launched.push(inst);
            }
            Err(error) => {
                if error.stops_launch() {
                    stop = Some(error.clone());
                }
                out.failed.push(fail(error));
            }
        }
    }
    Ok(out)
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
    use std::sync::Mutex;

    use capstan_core::{Offering, ProviderKind};

    use super::*;
    use crate::error::ErrorKind;
    use crate::instance::{InstanceState, ListScope};
    use crate::ledger::{InMemoryLedger, LedgerError};

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
        let mut request = request(&["w-1"]);
        request.api_url = Some("http://capstan:8080".into());
        let u = UserData::for_instance(&request, &i);
        assert!(u.to_json().contains("\"api_url\":\"http://capstan:8080\""));
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(u.to_json().contains("s3cret"));
    }

    /// A provider whose creates follow a script: `outcomes[worker]` is the error a
    /// create for that worker fails with (none: it succeeds, as instance `i-<worker>`).
    #[derive(Debug, Default)]
    struct Scripted {
        outcomes: HashMap<String, ErrorKind>,
        /// Instances made before a crash, found through the worker tag.
        tagged: Vec<Instance>,
        /// Instances `describe` knows, by id.
        existing: Mutex<HashMap<String, Instance>>,
        /// Workers `find_by_worker` was asked about, and workers created, in order.
        asked: Mutex<Vec<String>>,
        created: Mutex<Vec<String>>,
        find_fails: bool,
    }

    fn instance(worker: &str) -> Instance {
        Instance {
            id: format!("i-{worker}"),
            pool_id: Some(PoolId::new("p").unwrap()),
            worker_id: Some(WorkerId::from_string(worker)),
            launch_config_id: Some("lc".into()),
            instance_type: "t".into(),
            zone: None,
            market: capstan_core::Market::OnDemand,
            state: InstanceState::Running,
            state_reason: None,
            launched_at: None,
        }
    }

    fn request(workers: &[&str]) -> LaunchRequest {
        LaunchRequest {
            api_url: None,
            pool_id: PoolId::new("p").unwrap(),
            launch_config: serde_json::from_value(
                serde_json::json!({"id": "lc", "instance_type": "t"}),
            )
            .unwrap(),
            zone: None,
            instances: workers
                .iter()
                .map(|w| InstanceRequest {
                    worker_id: WorkerId::from_string(*w),
                    idempotency_token: format!("tok-{w}"),
                    registration_token: "secret".into(),
                })
                .collect(),
        }
    }

    #[async_trait]
    impl Creator for Scripted {
        async fn find_by_worker(
            &self,
            _request: &LaunchRequest,
            unrecorded: &[&InstanceRequest],
        ) -> Result<HashMap<WorkerId, Instance>, ProviderError> {
            let mut asked = self.asked.lock().unwrap();
            asked.extend(unrecorded.iter().map(|i| i.worker_id.as_str().to_owned()));
            if self.find_fails {
                return Err(ProviderError::new(ErrorKind::Throttled, "Slow", "down"));
            }
            Ok(self
                .tagged
                .iter()
                .filter(|t| {
                    unrecorded
                        .iter()
                        .any(|i| t.worker_id == Some(i.worker_id.clone()))
                })
                .map(|t| (t.worker_id.clone().unwrap(), t.clone()))
                .collect())
        }

        async fn create_one(
            &self,
            _request: &LaunchRequest,
            i: &InstanceRequest,
        ) -> Result<Instance, ProviderError> {
            let w = i.worker_id.as_str();
            self.created.lock().unwrap().push(w.to_owned());
            if let Some(kind) = self.outcomes.get(w) {
                return Err(ProviderError::new(*kind, format!("{kind}-code"), w));
            }
            let inst = instance(w);
            self.existing
                .lock()
                .unwrap()
                .insert(inst.id.clone(), inst.clone());
            Ok(inst)
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Fake
        }
        async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError> {
            launch_each(self, None, request, self).await
        }
        async fn terminate(&self, _id: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn describe(&self, id: &str) -> Result<Instance, ProviderError> {
            self.existing
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .ok_or_else(|| ProviderError::new(ErrorKind::NotFound, "NotFound", id))
        }
        async fn list(&self, _scope: &ListScope) -> Result<Vec<Instance>, ProviderError> {
            Ok(Vec::new())
        }
        async fn offerings(
            &self,
            _pool: &PoolId,
            _config: &LaunchConfig,
        ) -> Result<Vec<Offering>, ProviderError> {
            Ok(Vec::new())
        }
    }

    fn ids(out: &LaunchOutcome) -> Vec<&str> {
        out.launched.iter().map(|i| i.id.as_str()).collect()
    }

    fn failed(out: &LaunchOutcome) -> Vec<(&str, ErrorKind)> {
        out.failed
            .iter()
            .map(|f| (f.worker_id.as_str(), f.error.kind()))
            .collect()
    }

    #[tokio::test]
    async fn recorded_found_created_and_stopped_instances_are_each_accounted_for() {
        let p = Scripted {
            outcomes: HashMap::from([
                ("b".into(), ErrorKind::Transient),
                ("c".into(), ErrorKind::InsufficientCapacity),
            ]),
            tagged: vec![instance("t"), instance("f")],
            ..Scripted::default()
        };
        for w in ["r", "e", "t", "f"] {
            p.existing
                .lock()
                .unwrap()
                .insert(format!("i-{w}"), instance(w));
        }
        let ledger = InMemoryLedger::new();
        for w in ["r", "e"] {
            let entry = LedgerEntry {
                provider: ProviderKind::Fake,
                instance_id: format!("i-{w}"),
                worker_id: WorkerId::from_string(w),
            };
            ledger.record(&format!("tok-{w}"), entry).await.unwrap();
        }
        let req = request(&["r", "t", "a", "b", "c", "d", "e", "f"]);
        let out = launch_each(&p, Some(&ledger), &req, &p).await.unwrap();

        // Recorded and tagged instances are returned even after the stop; a transient
        // failure does not stop; capacity does, failing the rest with its error.
        assert_eq!(ids(&out), ["i-r", "i-t", "i-a", "i-e", "i-f"]);
        assert_eq!(
            failed(&out),
            [
                ("b", ErrorKind::Transient),
                ("c", ErrorKind::InsufficientCapacity),
                ("d", ErrorKind::InsufficientCapacity),
            ]
        );
        assert_eq!(out.failed[2].error, out.failed[1].error, "the same error");
        assert_eq!(out.requested(), req.instances.len());
        assert_eq!(*p.asked.lock().unwrap(), ["t", "a", "b", "c", "d", "f"]);
        assert_eq!(
            *p.created.lock().unwrap(),
            ["a", "b", "c"],
            "one attempt each"
        );
        // Found and created instances are recorded; nothing failed is.
        for w in ["r", "t", "a", "e", "f"] {
            let e = ledger.lookup(ProviderKind::Fake, &format!("tok-{w}")).await;
            assert_eq!(e.unwrap().unwrap().instance_id, format!("i-{w}"), "{w}");
        }
        assert_eq!(ledger.len(), 5);

        // Again: everything launched is recorded now; only the failed are retried.
        let p2 = Scripted {
            existing: Mutex::new(p.existing.lock().unwrap().clone()),
            ..Scripted::default()
        };
        let again = launch_each(&p2, Some(&ledger), &req, &p2).await.unwrap();
        assert!(again.is_complete(), "{:?}", again.failed);
        assert_eq!(*p2.created.lock().unwrap(), ["b", "c", "d"]);
    }

    #[tokio::test]
    async fn a_recorded_instance_that_is_gone_fails_without_being_created_again() {
        let p = Scripted::default();
        let ledger = InMemoryLedger::new();
        let entry = LedgerEntry {
            provider: ProviderKind::Fake,
            instance_id: "i-gone".into(),
            worker_id: WorkerId::from_string("g"),
        };
        ledger.record("tok-g", entry).await.unwrap();
        let out = launch_each(&p, Some(&ledger), &request(&["g"]), &p)
            .await
            .unwrap();
        assert_eq!(failed(&out), [("g", ErrorKind::NotFound)]);
        assert!(p.created.lock().unwrap().is_empty());
        assert!(
            p.asked.lock().unwrap().is_empty(),
            "nothing unrecorded to find"
        );
    }

    #[derive(Debug)]
    struct Unreadable;

    #[async_trait]
    impl LaunchLedger for Unreadable {
        async fn lookup(
            &self,
            _provider: ProviderKind,
            _token: &str,
        ) -> Result<Option<LedgerEntry>, LedgerError> {
            Err(LedgerError("database is down".into()))
        }
        async fn record(&self, _token: &str, _entry: LedgerEntry) -> Result<(), LedgerError> {
            Err(LedgerError("database is down".into()))
        }
    }

    #[tokio::test]
    async fn nothing_is_created_when_the_ledger_or_the_tag_lookup_fails() {
        let p = Scripted::default();
        let e = launch_each(&p, Some(&Unreadable), &request(&["a"]), &p)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(e.code(), "capstan.LaunchLedger");

        let p = Scripted {
            find_fails: true,
            ..Scripted::default()
        };
        let e = launch_each(&p, None, &request(&["a", "b"]), &p)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Throttled);
        assert!(p.created.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_ledger_every_instance_is_looked_up_by_worker_then_created() {
        let p = Scripted {
            tagged: vec![instance("x")],
            ..Scripted::default()
        };
        let out = p.launch(&request(&["x", "y"])).await.unwrap();
        assert_eq!(ids(&out), ["i-x", "i-y"]);
        assert_eq!(*p.asked.lock().unwrap(), ["x", "y"]);
        assert_eq!(*p.created.lock().unwrap(), ["y"]);
    }
}
