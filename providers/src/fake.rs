//! An in-memory, deterministic cloud.
//!
//! [`FakeProvider`] behaves like a small, well-behaved EC2: instances get sequential
//! ids (`fake-1`, `fake-2`, …), boot for a configurable delay (one for all, or drawn
//! per instance), honour idempotency tokens forever, and stay visible as terminated
//! for a while after deletion. Knobs ([`FakeProvider::set_boot_delay_secs`],
//! [`FakeProvider::set_boot_delay_draw`], [`FakeProvider::set_capacity`],
//! [`FakeProvider::set_quota`], [`FakeProvider::inject`],
//! [`FakeProvider::inject_for_launch_config`], [`FakeProvider::interrupt`],
//! [`FakeProvider::set_spot_price`]) produce the failures the reconciler must handle.
//! Time comes from a [`Clock`], so the simulator drives it with its virtual clock and
//! nothing here reads the system time unless given a [`crate::clock::SystemClock`].
//!
//! Launches run the sequence every provider shares ([`crate::launch`]); the fake keeps
//! its tokens itself, so it has no [`crate::LaunchLedger`], and a create whose token
//! already made an instance returns that instance without counting a call.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use capstan_core::{LaunchConfig, Market, Offering, PoolId, ProviderKind, Timestamp};

use crate::Provider;
use crate::clock::Clock;
use crate::error::{ErrorKind, ProviderError};
use crate::instance::{Instance, InstanceState, ListScope};
use crate::launch::{
    Creator, InstanceRequest, LaunchOutcome, LaunchRequest, UserData, launch_each,
};

/// Which calls an injected fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// Instance creates only.
    Launch,
    /// Every call (launch, terminate, describe, list, offerings).
    AnyCall,
}

#[derive(Debug, Clone)]
struct FakeInstance {
    instance: Instance,
    user_data: UserData,
    terminated_at: Option<Timestamp>,
}

/// How long a new instance boots.
enum BootDelay {
    /// The same for every instance, in seconds.
    Fixed(i64),
    /// Drawn per launch by the caller's function (seconds; negative counts as 0).
    Drawn(Box<dyn FnMut() -> i64 + Send>),
}

impl BootDelay {
    fn next(&mut self) -> i64 {
        match self {
            BootDelay::Fixed(s) => *s,
            BootDelay::Drawn(draw) => draw().max(0),
        }
    }
}

impl std::fmt::Debug for BootDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootDelay::Fixed(s) => write!(f, "Fixed({s})"),
            BootDelay::Drawn(_) => f.write_str("Drawn"),
        }
    }
}

#[derive(Debug)]
struct FakeCloud {
    next_id: u64,
    instances: BTreeMap<u64, FakeInstance>,
    /// Each pool's instance ids, so listing one pool does not scan the whole cloud.
    by_pool: HashMap<PoolId, BTreeSet<u64>>,
    /// Instances still `pending`, by the time they finish booting: the ones `refresh`
    /// may start.
    pending: BTreeSet<(Timestamp, u64)>,
    /// Terminated and interrupted instances, by end time: the ones `refresh` forgets.
    ended: BTreeSet<(Timestamp, u64)>,
    tokens: HashMap<String, u64>,
    boot_delay: BootDelay,
    forget_after_secs: i64,
    capacity: Option<u32>,
    quota: Option<u32>,
    faults: VecDeque<(FaultTarget, ProviderError)>,
    /// Faults for the creates of one launch config, by its id.
    launch_config_faults: VecDeque<(String, ProviderError)>,
    spot_prices: BTreeMap<String, f64>,
    calls: u64,
}

/// The in-memory provider. See the module docs.
#[derive(Debug)]
pub struct FakeProvider {
    clock: Arc<dyn Clock>,
    cloud: Mutex<FakeCloud>,
}

fn fake_error(kind: ErrorKind) -> ProviderError {
    let (code, message) = match kind {
        ErrorKind::InsufficientCapacity => (
            "fake.InsufficientCapacity",
            "no capacity for this offering right now",
        ),
        ErrorKind::QuotaExceeded => ("fake.QuotaExceeded", "instance quota reached"),
        ErrorKind::Throttled => ("fake.RequestLimitExceeded", "request rate exceeded"),
        ErrorKind::InvalidConfig => ("fake.InvalidParameter", "invalid parameter"),
        ErrorKind::NotFound => ("fake.NotFound", "no such instance"),
        ErrorKind::Unauthorized => ("fake.Unauthorized", "credentials rejected"),
        ErrorKind::Transient => ("fake.InternalError", "internal error"),
    };
    ProviderError::new(kind, code, message)
}

fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix("fake-")?.parse().ok()
}

impl FakeProvider {
    /// An empty fake cloud reading time from `clock`: no boot delay, unlimited
    /// capacity and quota, terminated instances forgotten after an hour.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            cloud: Mutex::new(FakeCloud {
                next_id: 1,
                instances: BTreeMap::new(),
                by_pool: HashMap::new(),
                pending: BTreeSet::new(),
                ended: BTreeSet::new(),
                tokens: HashMap::new(),
                boot_delay: BootDelay::Fixed(0),
                forget_after_secs: 3600,
                capacity: None,
                quota: None,
                faults: VecDeque::new(),
                launch_config_faults: VecDeque::new(),
                spot_prices: BTreeMap::new(),
                calls: 0,
            }),
        }
    }

    fn cloud(&self) -> MutexGuard<'_, FakeCloud> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.cloud.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Instances launched from now on stay `pending` for this many seconds, then run.
    pub fn set_boot_delay_secs(&self, secs: i64) {
        self.cloud().boot_delay = BootDelay::Fixed(secs.max(0));
    }

    /// Each instance launched from now on boots for its own delay: `draw()` seconds,
    /// called once per instance at launch (a negative draw counts as 0). Randomness is
    /// the caller's: pass a seeded draw for a reproducible cloud.
    pub fn set_boot_delay_draw(&self, draw: impl FnMut() -> i64 + Send + 'static) {
        self.cloud().boot_delay = BootDelay::Drawn(Box::new(draw));
    }

    /// At most this many live (pending or running) instances fit; launches beyond fail
    /// with [`ProviderError::InsufficientCapacity`]. `None`: unlimited.
    pub fn set_capacity(&self, live_instances: Option<u32>) {
        self.cloud().capacity = live_instances;
    }

    /// The account may hold at most this many live instances; launches beyond fail with
    /// [`ProviderError::QuotaExceeded`]. `None`: unlimited.
    pub fn set_quota(&self, live_instances: Option<u32>) {
        self.cloud().quota = live_instances;
    }

    /// The next `times` calls matching `target` fail with an error of class `kind`
    /// (queued behind faults injected earlier).
    pub fn inject(&self, target: FaultTarget, kind: ErrorKind, times: u32) {
        let mut c = self.cloud();
        for _ in 0..times {
            c.faults.push_back((target, fake_error(kind)));
        }
    }

    /// The next `times` instance creates from launch config `launch_config_id` (of
    /// any pool) fail with an error of class `kind`, after the faults of
    /// [`FakeProvider::inject`] that apply. Creates from other launch configs are not
    /// affected: a spot offering short of capacity while on-demand launches fine.
    pub fn inject_for_launch_config(&self, launch_config_id: &str, kind: ErrorKind, times: u32) {
        let mut c = self.cloud();
        for _ in 0..times {
            c.launch_config_faults
                .push_back((launch_config_id.to_owned(), fake_error(kind)));
        }
    }

    /// Drops every injected fault not yet consumed.
    pub fn clear_faults(&self) {
        let mut c = self.cloud();
        c.faults.clear();
        c.launch_config_faults.clear();
    }

    /// The cloud takes instance `id` back (spot reclaim): it becomes
    /// [`InstanceState::Interrupted`]. Returns whether the instance was live.
    pub fn interrupt(&self, id: &str) -> bool {
        let now = self.clock.now();
        let mut c = self.cloud();
        let Some(n) = parse_id(id) else {
            return false;
        };
        let Some(fi) = c.instances.get_mut(&n) else {
            return false;
        };
        if fi.terminated_at.is_some() {
            return false;
        }
        fi.instance.state = InstanceState::Interrupted;
        fi.instance.state_reason =
            Some("fake.SpotInterruption: the cloud reclaimed the instance".into());
        fi.terminated_at = Some(now);
        c.ended.insert((now, n));
        true
    }

    /// The spot price reported for `instance_type` by [`Provider::offerings`].
    pub fn set_spot_price(&self, instance_type: &str, price_per_hour: f64) {
        self.cloud()
            .spot_prices
            .insert(instance_type.to_owned(), price_per_hour);
    }

    /// The user-data instance `id` booted with.
    pub fn user_data(&self, id: &str) -> Option<UserData> {
        let c = self.cloud();
        parse_id(id)
            .and_then(|n| c.instances.get(&n))
            .map(|fi| fi.user_data.clone())
    }

    /// Live (pending or running) instances now.
    pub fn live_count(&self) -> usize {
        let now = self.clock.now();
        let mut c = self.cloud();
        c.refresh(now);
        c.live()
    }

    /// Provider calls made so far (every trait method counts one).
    pub fn calls(&self) -> u64 {
        self.cloud().calls
    }
}

impl FakeCloud {
    /// Moves booted instances to running and forgets long-terminated ones. Only the
    /// instances due are touched (the `pending` and `ended` queues are in time order),
    /// so a call costs nothing when nothing changes, whatever the size of the cloud.
    fn refresh(&mut self, now: Timestamp) {
        while let Some(&(booted, n)) = self.pending.first()
            && now >= booted
        {
            self.pending.pop_first();
            if let Some(fi) = self.instances.get_mut(&n)
                && fi.instance.state == InstanceState::Pending
            {
                fi.instance.state = InstanceState::Running;
            }
        }
        let forget = self.forget_after_secs;
        while let Some(&(ended, n)) = self.ended.first()
            && now >= ended.plus_secs(forget)
        {
            self.ended.pop_first();
            if let Some(pool) = self.instances.remove(&n).and_then(|fi| fi.instance.pool_id)
                && let Some(ids) = self.by_pool.get_mut(&pool)
            {
                ids.remove(&n);
                if ids.is_empty() {
                    self.by_pool.remove(&pool);
                }
            }
        }
    }

    fn live(&self) -> usize {
        self.instances
            .values()
            .filter(|fi| fi.instance.state.is_alive())
            .count()
    }

    /// Counts a call and pops the first injected fault that applies to it: for an
    /// instance create, `launch_config` names the launch config it is made from.
    fn call(&mut self, launch_config: Option<&str>) -> Result<(), ProviderError> {
        self.calls += 1;
        let is_launch = launch_config.is_some();
        let pos = self
            .faults
            .iter()
            .position(|(t, _)| *t == FaultTarget::AnyCall || is_launch);
        if let Some((_, e)) = pos.and_then(|p| self.faults.remove(p)) {
            return Err(e);
        }
        let pos = launch_config.and_then(|lc| {
            self.launch_config_faults
                .iter()
                .position(|(id, _)| id == lc)
        });
        match pos.and_then(|p| self.launch_config_faults.remove(p)) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

/// [`FakeProvider`]'s part of one launch, every instance created at `now`.
#[derive(Debug)]
struct FakeCreator<'a> {
    fake: &'a FakeProvider,
    now: Timestamp,
}

#[async_trait]
impl Creator for FakeCreator<'_> {
    /// Returns the instance the token created, if the fake still knows it (no call
    /// counted, no fault consumed); otherwise one create call, which may fail with an
    /// injected fault, quota or capacity.
    async fn create_one(
        &self,
        request: &LaunchRequest,
        req: &InstanceRequest,
    ) -> Result<Instance, ProviderError> {
        let (now, lc) = (self.now, &request.launch_config);
        let mut c = self.fake.cloud();
        c.refresh(now);
        if let Some(fi) = c
            .tokens
            .get(&req.idempotency_token)
            .and_then(|n| c.instances.get(n))
        {
            return Ok(fi.instance.clone());
        }
        // Counting is a scan of the whole cloud: only when a limit needs it.
        let limited = c.quota.is_some() || c.capacity.is_some();
        let live = if limited { c.live() as u32 } else { 0 };
        c.call(Some(&lc.id))?;
        if c.quota.is_some_and(|q| live >= q) {
            return Err(fake_error(ErrorKind::QuotaExceeded));
        }
        if c.capacity.is_some_and(|cap| live >= cap) {
            return Err(fake_error(ErrorKind::InsufficientCapacity));
        }
        let n = c.next_id;
        c.next_id += 1;
        let boot_secs = c.boot_delay.next();
        let state = if boot_secs == 0 {
            InstanceState::Running
        } else {
            InstanceState::Pending
        };
        let instance = Instance {
            id: format!("fake-{n}"),
            pool_id: Some(request.pool_id.clone()),
            worker_id: Some(req.worker_id.clone()),
            launch_config_id: Some(lc.id.clone()),
            instance_type: lc.instance_type.clone(),
            zone: request.zone().map(str::to_owned),
            market: lc.market,
            state,
            state_reason: None,
            launched_at: Some(now),
        };
        c.tokens.insert(req.idempotency_token.clone(), n);
        c.by_pool
            .entry(request.pool_id.clone())
            .or_default()
            .insert(n);
        if state == InstanceState::Pending {
            c.pending.insert((now.plus_secs(boot_secs), n));
        }
        c.instances.insert(
            n,
            FakeInstance {
                instance: instance.clone(),
                user_data: UserData::for_instance(request, req),
                terminated_at: None,
            },
        );
        Ok(instance)
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Fake
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError> {
        if request.launch_config.instance_type.is_empty() {
            return Err(ProviderError::invalid_field(
                "instance_type",
                "must not be empty",
            ));
        }
        let creator = FakeCreator {
            fake: self,
            now: self.clock.now(),
        };
        launch_each(self, None, request, &creator).await
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        let now = self.clock.now();
        let mut c = self.cloud();
        c.call(None)?;
        c.refresh(now);
        if let Some(n) = parse_id(instance_id)
            && let Some(fi) = c.instances.get_mut(&n)
            && fi.terminated_at.is_none()
        {
            fi.instance.state = InstanceState::Terminated;
            fi.instance.state_reason = Some("fake.UserInitiatedShutdown".into());
            fi.terminated_at = Some(now);
            c.ended.insert((now, n));
        }
        Ok(())
    }

    async fn describe(&self, instance_id: &str) -> Result<Instance, ProviderError> {
        let now = self.clock.now();
        let mut c = self.cloud();
        c.call(None)?;
        c.refresh(now);
        parse_id(instance_id)
            .and_then(|n| c.instances.get(&n))
            .map(|fi| fi.instance.clone())
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::NotFound,
                    "fake.NotFound",
                    format!("no instance {instance_id}"),
                )
            })
    }

    async fn list(&self, scope: &ListScope) -> Result<Vec<Instance>, ProviderError> {
        let now = self.clock.now();
        let mut c = self.cloud();
        c.call(None)?;
        c.refresh(now);
        Ok(match scope {
            ListScope::Pool(pool) => c
                .by_pool
                .get(pool)
                .into_iter()
                .flatten()
                .filter_map(|n| c.instances.get(n))
                .map(|fi| fi.instance.clone())
                .collect(),
            ListScope::All => c
                .instances
                .values()
                .filter(|fi| scope.includes(fi.instance.pool_id.as_ref()))
                .map(|fi| fi.instance.clone())
                .collect(),
        })
    }

    async fn offerings(
        &self,
        _pool: &PoolId,
        config: &LaunchConfig,
    ) -> Result<Vec<Offering>, ProviderError> {
        let mut c = self.cloud();
        c.call(None)?;
        let mut o = Offering::from_launch_config(ProviderKind::Fake, config);
        if config.market == Market::Spot
            && let Some(p) = c.spot_prices.get(&config.instance_type)
        {
            o.price_per_hour = Some(*p);
        }
        Ok(vec![o])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::launch::InstanceRequest;
    use capstan_core::WorkerId;

    fn request(lc: &str, token: &str) -> LaunchRequest {
        LaunchRequest {
            pool_id: PoolId::new("p").unwrap(),
            launch_config: serde_json::from_value(serde_json::json!({
                "id": lc, "instance_type": "fake.small", "market": "spot", "capacity": 2
            }))
            .unwrap(),
            zone: None,
            instances: vec![InstanceRequest {
                worker_id: WorkerId::from_string(format!("w-{token}")),
                idempotency_token: token.into(),
                registration_token: "secret".into(),
            }],
            api_url: None,
        }
    }

    async fn state(fake: &FakeProvider, id: &str) -> InstanceState {
        fake.describe(id).await.unwrap().state
    }

    #[tokio::test]
    async fn each_instance_boots_for_its_own_drawn_delay() {
        let clock = ManualClock::new(Timestamp::from_unix_secs(0));
        let fake = FakeProvider::new(Arc::new(clock.clone()));
        // Draws 30, 10, -5 (counts as 0): the second instance runs before the first.
        let mut draws = vec![-5, 10, 30];
        fake.set_boot_delay_draw(move || draws.pop().unwrap_or(99));
        let mut ids = Vec::new();
        for token in ["a", "b", "c"] {
            let out = fake.launch(&request("lc", token)).await.unwrap();
            ids.push(out.launched[0].id.clone());
        }
        assert_eq!(state(&fake, &ids[2]).await, InstanceState::Running);
        clock.advance_secs(9);
        assert_eq!(state(&fake, &ids[0]).await, InstanceState::Pending);
        assert_eq!(state(&fake, &ids[1]).await, InstanceState::Pending);
        clock.advance_secs(1);
        assert_eq!(state(&fake, &ids[1]).await, InstanceState::Running);
        assert_eq!(state(&fake, &ids[0]).await, InstanceState::Pending);
        clock.advance_secs(20);
        assert_eq!(state(&fake, &ids[0]).await, InstanceState::Running);
        // A retried launch (same token) draws nothing and keeps its instance.
        let again = fake.launch(&request("lc", "a")).await.unwrap();
        assert_eq!(again.launched[0].id, ids[0]);
    }

    #[tokio::test]
    async fn a_fixed_delay_applies_to_instances_launched_after_it_is_set() {
        let clock = ManualClock::new(Timestamp::from_unix_secs(0));
        let fake = FakeProvider::new(Arc::new(clock.clone()));
        fake.set_boot_delay_secs(60);
        let slow = fake.launch(&request("lc", "a")).await.unwrap().launched[0].clone();
        fake.set_boot_delay_secs(0);
        let fast = fake.launch(&request("lc", "b")).await.unwrap().launched[0].clone();
        assert_eq!(fast.state, InstanceState::Running);
        clock.advance_secs(59);
        assert_eq!(state(&fake, &slow.id).await, InstanceState::Pending);
        clock.advance_secs(1);
        assert_eq!(state(&fake, &slow.id).await, InstanceState::Running);
    }

    #[tokio::test]
    async fn a_launch_config_fault_fails_only_that_launch_config() {
        let fake = FakeProvider::new(Arc::new(ManualClock::new(Timestamp::from_unix_secs(0))));
        fake.inject_for_launch_config("spot", ErrorKind::InsufficientCapacity, 1);
        // Other launch configs and other calls are untouched.
        let ok = fake.launch(&request("on-demand", "a")).await.unwrap();
        assert_eq!(ok.launched.len(), 1);
        fake.list(&ListScope::All).await.unwrap();
        let failed = fake.launch(&request("spot", "b")).await.unwrap();
        assert!(failed.launched.is_empty());
        assert_eq!(
            failed.failed[0].error.kind(),
            ErrorKind::InsufficientCapacity
        );
        // Consumed: the next spot launch works.
        let ok = fake.launch(&request("spot", "c")).await.unwrap();
        assert_eq!(ok.launched.len(), 1);
        fake.inject_for_launch_config("spot", ErrorKind::InsufficientCapacity, 3);
        fake.clear_faults();
        assert_eq!(
            fake.launch(&request("spot", "d"))
                .await
                .unwrap()
                .launched
                .len(),
            1
        );
    }
}
