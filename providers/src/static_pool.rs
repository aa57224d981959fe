//! Static hardware pools: machines an operator owns and registers with capstan.
//!
//! An operator registers each machine (name, task slots, labels) in a pool with
//! [`StaticProvider::register_machine`] and gets a per-machine secret, shown once; only
//! its SHA-256 is stored, and [`StaticProvider::verify_secret`] compares digests in
//! constant time when the machine authenticates. The provider maps the trait onto
//! hardware that always exists:
//!
//! - **launch** marks idle machines of the pool *wanted* by a worker (a lease): the
//!   machine is expected to register and take work. No idle machine left is
//!   [`ProviderError::InsufficientCapacity`] (`static.NoIdleMachine`), and the rest of
//!   the request fails with it (the launch sequence every provider shares, see
//!   [`crate::launch`]). A token that already leased a machine returns that lease.
//! - **terminate** asks the machine to drain; once it reports drained
//!   ([`StaticProvider::machine_drained`]) it is idle again and can be leased anew.
//! - Instance ids are `name@lease`, so each lease is a distinct "instance": an old
//!   lease describes as terminated even while the machine serves a newer one.
//! - **offerings** price static capacity at zero: its marginal cost is nothing, so the
//!   planner uses it before any cloud launch config.
//!
//! A launch config for a static pool may select machines by label with
//! `provider_config: {labels: {gpu: "a100"}}`; other fields are ignored.
//!
//! Persistence goes through [`StaticInventory`] (the store implements it; updates are
//! compare-and-set on a revision so two replicas cannot lease one machine twice);
//! [`InMemoryInventory`] serves tests and single-process use.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use capstan_core::{LaunchConfig, Market, Offering, PoolId, ProviderKind, Timestamp, WorkerId};
use serde::{Deserialize, Serialize};

use crate::Provider;
use crate::clock::Clock;
use crate::error::{ErrorKind, ProviderError};
use crate::instance::{Instance, InstanceState, ListScope};
use crate::launch::{Creator, InstanceRequest, LaunchOutcome, LaunchRequest, launch_each};

/// Longest machine name, in characters.
pub const MAX_MACHINE_NAME_LEN: usize = 63;

/// What a static machine is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Assignment {
    /// Not leased: available for a launch.
    Idle,
    /// Leased by a worker: register and take work.
    Wanted {
        /// The worker it serves.
        worker_id: WorkerId,
        /// The launch token that leased it.
        idempotency_token: String,
        /// The launch config of that launch.
        launch_config_id: String,
        /// Since when.
        since: Timestamp,
    },
    /// Asked to finish its tasks and go idle.
    Draining {
        /// The worker it served.
        worker_id: WorkerId,
        /// The launch token that leased it.
        idempotency_token: String,
        /// The launch config of that launch.
        launch_config_id: String,
        /// Since when.
        since: Timestamp,
    },
}

/// One registered machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticMachine {
    /// Unique over all static pools (instance ids do not carry the pool).
    pub name: String,
    /// The pool it serves.
    pub pool_id: PoolId,
    /// Task slots it offers.
    pub capacity: u32,
    /// Free-form labels a launch config can select on.
    pub labels: BTreeMap<String, String>,
    /// Hex SHA-256 of its secret; the secret itself is never stored.
    pub secret_sha256: String,
    /// What it is asked to do.
    pub assignment: Assignment,
    /// Number of times it was leased; the current lease's number.
    pub lease: u64,
    /// Token of the most recent lease (kept after it ends, so a repeated launch with
    /// that token finds it instead of leasing another machine).
    pub last_token: Option<String>,
    /// Compare-and-set counter, bumped by every update.
    pub revision: u64,
    /// When the operator registered it.
    pub registered_at: Timestamp,
}

/// The secret of a newly registered machine. Shown once; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct MachineSecret(String);

impl MachineSecret {
    /// The secret, to hand to the operator.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MachineSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MachineSecret(<redacted>)")
    }
}

/// The static inventory could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// A machine with this name is already registered.
    #[error("machine {0:?} is already registered")]
    AlreadyExists(String),
    /// The backing store failed.
    #[error("static inventory: {0}")]
    Backend(String),
}

/// An operator request about static machines was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticError {
    /// A field is invalid; names the field and what is expected.
    #[error("{field}: {problem}")]
    InvalidField {
        /// The field (`name`, `capacity`).
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// No machine with this name.
    #[error("no static machine named {0:?}")]
    UnknownMachine(String),
    /// The inventory failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The system's random source failed while minting a secret.
    #[error("random source failed: {0}")]
    Random(String),
}

/// Where static machines are kept; see the module docs.
#[async_trait]
pub trait StaticInventory: Send + Sync + fmt::Debug {
    /// Adds a machine; [`InventoryError::AlreadyExists`] if the name is taken.
    async fn insert(&self, machine: StaticMachine) -> Result<(), InventoryError>;
    /// The machine named `name`.
    async fn get(&self, name: &str) -> Result<Option<StaticMachine>, InventoryError>;
    /// Every machine of `pool`, or of all pools, ordered by name.
    async fn list(&self, pool: Option<&PoolId>) -> Result<Vec<StaticMachine>, InventoryError>;
    /// Replaces the stored machine named `machine.name` with `machine` if the stored
    /// revision is `expected_revision`; returns whether it did. The caller bumps
    /// `machine.revision`.
    async fn update(
        &self,
        machine: &StaticMachine,
        expected_revision: u64,
    ) -> Result<bool, InventoryError>;
    /// Removes the machine; returns whether it existed.
    async fn remove(&self, name: &str) -> Result<bool, InventoryError>;
}

/// A [`StaticInventory`] in memory.
#[derive(Debug, Default)]
pub struct InMemoryInventory {
    machines: Mutex<BTreeMap<String, StaticMachine>>,
}

impl InMemoryInventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, StaticMachine>>, InventoryError> {
        self.machines
            .lock()
            .map_err(|_| InventoryError::Backend("lock poisoned".into()))
    }
}

#[async_trait]
impl StaticInventory for InMemoryInventory {
    async fn insert(&self, machine: StaticMachine) -> Result<(), InventoryError> {
        let mut m = self.lock()?;
        if m.contains_key(&machine.name) {
            return Err(InventoryError::AlreadyExists(machine.name));
        }
        m.insert(machine.name.clone(), machine);
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<StaticMachine>, InventoryError> {
        Ok(self.lock()?.get(name).cloned())
    }

    async fn list(&self, pool: Option<&PoolId>) -> Result<Vec<StaticMachine>, InventoryError> {
        Ok(self
            .lock()?
            .values()
            .filter(|m| pool.is_none_or(|p| &m.pool_id == p))
            .cloned()
            .collect())
    }

    async fn update(
        &self,
        machine: &StaticMachine,
        expected_revision: u64,
    ) -> Result<bool, InventoryError> {
        let mut m = self.lock()?;
        match m.get_mut(&machine.name) {
            Some(stored) if stored.revision == expected_revision => {
                *stored = machine.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn remove(&self, name: &str) -> Result<bool, InventoryError> {
        Ok(self.lock()?.remove(name).is_some())
    }
}

/// The static-pool provider. See the module docs.
#[derive(Debug, Clone)]
pub struct StaticProvider {
    inventory: Arc<dyn StaticInventory>,
    clock: Arc<dyn Clock>,
}

/// Attempts at a compare-and-set before giving up with a transient error.
const CAS_ATTEMPTS: usize = 8;

fn inventory_error(e: InventoryError) -> ProviderError {
    ProviderError::new(ErrorKind::Transient, "static.Inventory", e.to_string())
}

fn check_name(name: &str) -> Result<(), StaticError> {
    let bad = |problem: String| StaticError::InvalidField {
        field: "name",
        problem,
    };
    if name.is_empty() || name.len() > MAX_MACHINE_NAME_LEN {
        return Err(bad(format!(
            "must be 1..={MAX_MACHINE_NAME_LEN} characters, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(format!(
            "may only contain lowercase letters, digits, '-', '_' and '.', found {c:?}"
        )));
    }
    Ok(())
}

fn instance_id(m: &StaticMachine, lease: u64) -> String {
    format!("{}@{lease}", m.name)
}

fn parse_instance_id(id: &str) -> Option<(&str, u64)> {
    let (name, lease) = id.rsplit_once('@')?;
    Some((name, lease.parse().ok()?))
}

/// The label selector of a static launch config (`provider_config.labels`).
fn selector(lc: &LaunchConfig) -> Result<BTreeMap<String, String>, ProviderError> {
    match lc.provider_config.get("labels") {
        None => Ok(BTreeMap::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            ProviderError::invalid_field(
                "provider_config.labels",
                format!("expected a map of strings to strings: {e}"),
            )
        }),
    }
}

fn matches_selector(m: &StaticMachine, sel: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| m.labels.get(k) == Some(v))
}

impl StaticProvider {
    /// A provider over `inventory`, reading time from `clock`.
    pub fn new(inventory: Arc<dyn StaticInventory>, clock: Arc<dyn Clock>) -> Self {
        Self { inventory, clock }
    }

    /// Registers machine `name` in `pool_id` with `capacity` task slots and `labels`.
    /// Returns the machine and its secret; the secret is not retrievable later.
    pub async fn register_machine(
        &self,
        pool_id: PoolId,
        name: &str,
        capacity: u32,
        labels: BTreeMap<String, String>,
    ) -> Result<(StaticMachine, MachineSecret), StaticError> {
        check_name(name)?;
        if capacity == 0 {
            return Err(StaticError::InvalidField {
                field: "capacity",
                problem: "must be >= 1".into(),
            });
        }
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| StaticError::Random(e.to_string()))?;
        let secret = MachineSecret(format!("csm_{}", hex::encode(raw)));
        let machine = StaticMachine {
            name: name.to_owned(),
            pool_id,
            capacity,
            labels,
            secret_sha256: capstan_core::secret::digest_hex(secret.expose()),
            assignment: Assignment::Idle,
            lease: 0,
            last_token: None,
            revision: 0,
            registered_at: self.clock.now(),
        };
        self.inventory.insert(machine.clone()).await?;
        Ok((machine, secret))
    }

    /// Whether `presented` is the secret of machine `name` (constant-time comparison of
    /// SHA-256 digests). An unknown machine is `Ok(false)`, indistinguishable from a
    /// wrong secret.
    pub async fn verify_secret(&self, name: &str, presented: &str) -> Result<bool, StaticError> {
        let Some(m) = self.inventory.get(name).await? else {
            return Ok(false);
        };
        Ok(capstan_core::secret::matches_digest(
            presented,
            &m.secret_sha256,
        ))
    }

    /// Removes machine `name` from its pool.
    pub async fn remove_machine(&self, name: &str) -> Result<(), StaticError> {
        if self.inventory.remove(name).await? {
            Ok(())
        } else {
            Err(StaticError::UnknownMachine(name.to_owned()))
        }
    }

    /// The machine reports it has drained (or an operator releases it): it becomes idle
    /// and can be leased again. Idle machines stay idle.
    pub async fn machine_drained(&self, name: &str) -> Result<(), StaticError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut m) = self.inventory.get(name).await? else {
                return Err(StaticError::UnknownMachine(name.to_owned()));
            };
            if m.assignment == Assignment::Idle {
                return Ok(());
            }
            let expected = m.revision;
            m.assignment = Assignment::Idle;
            m.revision += 1;
            if self.inventory.update(&m, expected).await? {
                return Ok(());
            }
        }
        Err(InventoryError::Backend(format!("machine {name:?} kept changing; try again")).into())
    }

    /// The machines of `pool`, or of all pools.
    pub async fn machines(&self, pool: Option<&PoolId>) -> Result<Vec<StaticMachine>, StaticError> {
        Ok(self.inventory.list(pool).await?)
    }

    fn instance(m: &StaticMachine, lease: u64) -> Instance {
        let current = lease == m.lease;
        let (state, worker, reason) = match (&m.assignment, current) {
            (Assignment::Wanted { worker_id, .. }, true) => {
                (InstanceState::Running, Some(worker_id.clone()), None)
            }
            (Assignment::Draining { worker_id, .. }, true) => (
                InstanceState::ShuttingDown,
                Some(worker_id.clone()),
                Some("static.Draining: asked to finish its tasks and go idle".to_owned()),
            ),
            _ => (
                InstanceState::Terminated,
                None,
                Some("static.LeaseEnded: the machine was released".to_owned()),
            ),
        };
        let (since, launch_config_id) = match &m.assignment {
            Assignment::Wanted {
                since,
                launch_config_id,
                ..
            }
            | Assignment::Draining {
                since,
                launch_config_id,
                ..
            } if current => (Some(*since), Some(launch_config_id.clone())),
            _ => (None, None),
        };
        Instance {
            id: instance_id(m, lease),
            pool_id: Some(m.pool_id.clone()),
            worker_id: worker,
            launch_config_id,
            instance_type: "static".into(),
            zone: None,
            market: Market::OnDemand,
            state,
            state_reason: reason,
            launched_at: since,
        }
    }

    /// Leases one idle machine of the pool matching `sel` for `worker`, or finds the
    /// one `token` already leased.
    async fn claim(
        &self,
        request: &LaunchRequest,
        sel: &BTreeMap<String, String>,
        worker: &WorkerId,
        token: &str,
    ) -> Result<Instance, ProviderError> {
        for _ in 0..CAS_ATTEMPTS {
            let machines = self
                .inventory
                .list(Some(&request.pool_id))
                .await
                .map_err(inventory_error)?;
            if let Some(m) = machines
                .iter()
                .find(|m| m.last_token.as_deref() == Some(token))
            {
                return Ok(Self::instance(m, m.lease));
            }
            let Some(m) = machines
                .iter()
                .find(|m| m.assignment == Assignment::Idle && matches_selector(m, sel))
            else {
                return Err(ProviderError::new(
                    ErrorKind::InsufficientCapacity,
                    "static.NoIdleMachine",
                    format!(
                        "no idle machine in static pool {} matches labels {sel:?}",
                        request.pool_id
                    ),
                ));
            };
            let mut m = m.clone();
            let expected = m.revision;
            m.lease += 1;
            m.revision += 1;
            m.last_token = Some(token.to_owned());
            m.assignment = Assignment::Wanted {
                worker_id: worker.clone(),
                idempotency_token: token.to_owned(),
                launch_config_id: request.launch_config.id.clone(),
                since: self.clock.now(),
            };
            if self
                .inventory
                .update(&m, expected)
                .await
                .map_err(inventory_error)?
            {
                return Ok(Self::instance(&m, m.lease));
            }
        }
        Err(ProviderError::new(
            ErrorKind::Transient,
            "static.Contention",
            "machines kept changing while leasing one; try again",
        ))
    }
}

/// [`StaticProvider`]'s part of one launch: one lease per instance among the pool's
/// machines matching `selector`.
#[derive(Debug)]
struct StaticCreator<'a> {
    provider: &'a StaticProvider,
    selector: BTreeMap<String, String>,
}

#[async_trait]
impl Creator for StaticCreator<'_> {
    async fn create_one(
        &self,
        request: &LaunchRequest,
        instance: &InstanceRequest,
    ) -> Result<Instance, ProviderError> {
        self.provider
            .claim(
                request,
                &self.selector,
                &instance.worker_id,
                &instance.idempotency_token,
            )
            .await
    }
}

#[async_trait]
impl Provider for StaticProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Static
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError> {
        let creator = StaticCreator {
            provider: self,
            selector: selector(&request.launch_config)?,
        };
        launch_each(self, None, request, &creator).await
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        let Some((name, lease)) = parse_instance_id(instance_id) else {
            return Ok(());
        };
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut m) = self.inventory.get(name).await.map_err(inventory_error)? else {
                return Ok(());
            };
            let Assignment::Wanted {
                worker_id,
                idempotency_token,
                launch_config_id,
                ..
            } = m.assignment.clone()
            else {
                return Ok(());
            };
            if m.lease != lease {
                return Ok(());
            }
            let expected = m.revision;
            m.revision += 1;
            m.assignment = Assignment::Draining {
                worker_id,
                idempotency_token,
                launch_config_id,
                since: self.clock.now(),
            };
            if self
                .inventory
                .update(&m, expected)
                .await
                .map_err(inventory_error)?
            {
                return Ok(());
            }
        }
        Err(ProviderError::new(
            ErrorKind::Transient,
            "static.Contention",
            format!("machine {name:?} kept changing while asking it to drain; try again"),
        ))
    }

    async fn describe(&self, instance_id: &str) -> Result<Instance, ProviderError> {
        let not_found = || {
            ProviderError::new(
                ErrorKind::NotFound,
                "static.NotFound",
                format!("no static machine lease {instance_id:?}"),
            )
        };
        let (name, lease) = parse_instance_id(instance_id).ok_or_else(not_found)?;
        let m = self
            .inventory
            .get(name)
            .await
            .map_err(inventory_error)?
            .ok_or_else(not_found)?;
        if lease == 0 || lease > m.lease {
            return Err(not_found());
        }
        Ok(Self::instance(&m, lease))
    }

    async fn list(&self, scope: &ListScope) -> Result<Vec<Instance>, ProviderError> {
        let pool = match scope {
            ListScope::Pool(p) => Some(p),
            ListScope::All => None,
        };
        let machines = self.inventory.list(pool).await.map_err(inventory_error)?;
        Ok(machines
            .iter()
            .filter(|m| m.assignment != Assignment::Idle)
            .map(|m| Self::instance(m, m.lease))
            .collect())
    }

    async fn offerings(
        &self,
        pool: &PoolId,
        config: &LaunchConfig,
    ) -> Result<Vec<Offering>, ProviderError> {
        let sel = selector(config)?;
        let machines = self
            .inventory
            .list(Some(pool))
            .await
            .map_err(inventory_error)?;
        let slots: u32 = machines
            .iter()
            .filter(|m| matches_selector(m, &sel))
            .map(|m| m.capacity)
            .sum();
        let mut o = Offering::from_launch_config(ProviderKind::Static, config);
        o.price_per_hour = Some(0.0);
        o.max_slots = Some(o.max_slots.map_or(slots, |cap| cap.min(slots)));
        Ok(vec![o])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn provider() -> StaticProvider {
        StaticProvider::new(
            Arc::new(InMemoryInventory::new()),
            Arc::new(ManualClock::new(Timestamp::from_unix_secs(1000))),
        )
    }

    #[tokio::test]
    async fn secrets_are_shown_once_stored_hashed_and_verified() {
        let p = provider();
        let pool = PoolId::new("hw/build").unwrap();
        let (m, secret) = p
            .register_machine(pool, "rack1-07", 4, BTreeMap::new())
            .await
            .unwrap();
        assert!(secret.expose().starts_with("csm_"));
        assert!(!format!("{secret:?}").contains(secret.expose()));
        assert!(!m.secret_sha256.contains(secret.expose()));
        assert_eq!(m.secret_sha256.len(), 64);
        assert!(p.verify_secret("rack1-07", secret.expose()).await.unwrap());
        assert!(!p.verify_secret("rack1-07", "csm_wrong").await.unwrap());
        assert!(!p.verify_secret("nope", secret.expose()).await.unwrap());
    }

    #[tokio::test]
    async fn registration_validates_name_and_capacity_and_rejects_duplicates() {
        let p = provider();
        let pool = PoolId::new("hw").unwrap();
        let e = p
            .register_machine(pool.clone(), "Rack 1", 1, BTreeMap::new())
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("name: may only contain"), "{e}");
        let e = p
            .register_machine(pool.clone(), "r1", 0, BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "capacity: must be >= 1");
        p.register_machine(pool.clone(), "r1", 1, BTreeMap::new())
            .await
            .unwrap();
        let e = p
            .register_machine(pool, "r1", 1, BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            StaticError::Inventory(InventoryError::AlreadyExists(_))
        ));
    }

    #[tokio::test]
    async fn offerings_price_static_capacity_at_zero() {
        let p = provider();
        let pool = PoolId::new("hw").unwrap();
        for (n, cap) in [("a", 2), ("b", 3)] {
            p.register_machine(pool.clone(), n, cap, BTreeMap::new())
                .await
                .unwrap();
        }
        let lc: LaunchConfig = serde_json::from_value(serde_json::json!({
            "id": "static", "instance_type": "static"
        }))
        .unwrap();
        let o = p.offerings(&pool, &lc).await.unwrap();
        assert_eq!(o[0].price_per_hour, Some(0.0));
        assert_eq!(o[0].max_slots, Some(5));
        assert_eq!(o[0].provider, ProviderKind::Static);
    }
}
