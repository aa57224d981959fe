//! Workers and their life cycle.
//!
//! ```text
//!  requested ──► booting ──► ready ──► draining ──► terminating ──► terminated
//!      │            │          │  ▲        │             ▲
//!      │            │          │  └────────┘ (undrain)   │
//!      └────────────┴──────────┴───────────┴──► failed ──┘
//!                 (any live state may also go straight to terminating)
//! ```
//!
//! * `requested`: capstan recorded the intent (with its idempotency token) and is about
//!   to ask, or has asked, the provider for a machine.
//! * `booting`: the provider accepted; the machine exists but has not registered.
//! * `ready`: the worker registered and takes tasks.
//! * `draining`: it finishes what it runs and takes nothing new.
//! * `terminating`: capstan asked the provider to delete it.
//! * `terminated`: gone. Terminal.
//! * `failed`: launch failed, it never registered, or it went silent; the machine (if
//!   any) must still be terminated.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::{PoolId, WorkerId};
use crate::spec::ProviderKind;
use crate::time::Timestamp;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Intent recorded; the create call may or may not have happened.
    Requested,
    /// The machine exists and has not registered yet.
    Booting,
    /// Registered and taking tasks.
    Ready,
    /// Finishing its tasks, taking no new ones.
    Draining,
    /// Deletion requested from the provider.
    Terminating,
    /// Gone.
    Terminated,
    /// Broken; any machine behind it still has to be terminated.
    Failed,
}

impl WorkerState {
    /// Every state, in life-cycle order.
    pub const ALL: [WorkerState; 7] = [
        Self::Requested,
        Self::Booting,
        Self::Ready,
        Self::Draining,
        Self::Terminating,
        Self::Terminated,
        Self::Failed,
    ];

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Booting => "booting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }

    /// Whether a move from `self` to `to` is allowed.
    pub fn can_become(self, to: WorkerState) -> bool {
        use WorkerState::*;
        matches!(
            (self, to),
            (Requested, Booting | Failed | Terminating)
                | (Booting, Ready | Failed | Terminating)
                | (Ready, Draining | Terminating | Failed)
                | (Draining, Ready | Terminating | Failed)
                | (Terminating, Terminated | Failed)
                | (Failed, Terminating | Terminated)
        )
    }

    /// Whether the worker may still hold a machine that costs money.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Terminated)
    }

    /// Whether the worker counts toward the pool's capacity (it runs, or will soon).
    pub fn counts_as_capacity(self) -> bool {
        matches!(self, Self::Requested | Self::Booting | Self::Ready)
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown worker state {s:?}"))
    }
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker {worker}: illegal transition {from} -> {to}")]
pub struct TransitionError {
    /// The worker.
    pub worker: WorkerId,
    /// Its state.
    pub from: WorkerState,
    /// The state asked for.
    pub to: WorkerState,
}

/// One machine of a pool, as capstan knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Worker {
    /// capstan's id, minted before the machine exists.
    pub id: WorkerId,
    /// The pool it serves.
    pub pool_id: PoolId,
    /// Which provider runs it.
    pub provider: ProviderKind,
    /// The launch config it came from; none for a registered static machine.
    pub launch_config_id: Option<String>,
    /// The provider's id for the machine (EC2 instance id, GCE name), once known.
    pub instance_id: Option<String>,
    /// Sent with the create call so a retried create cannot make a second machine.
    pub idempotency_token: String,
    /// Where it is in its life.
    pub state: WorkerState,
    /// Task slots it offers.
    pub capacity: u32,
    /// Slots running a task, as of the last heartbeat.
    pub busy_slots: u32,
    /// When the intent was recorded.
    pub created_at: Timestamp,
    /// When `state` last changed.
    pub state_changed_at: Timestamp,
    /// When it registered (entered `ready` the first time).
    pub registered_at: Option<Timestamp>,
    /// Its last heartbeat.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Since when it has run nothing; none while busy.
    pub idle_since: Option<Timestamp>,
    /// Why it failed, for the operator.
    pub failure: Option<String>,
}

impl Worker {
    /// A new worker in `requested`, as recorded just before the create call.
    pub fn requested(
        id: WorkerId,
        pool_id: PoolId,
        provider: ProviderKind,
        launch_config_id: Option<String>,
        capacity: u32,
        idempotency_token: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            pool_id,
            provider,
            launch_config_id,
            instance_id: None,
            idempotency_token,
            state: WorkerState::Requested,
            capacity,
            busy_slots: 0,
            created_at: now,
            state_changed_at: now,
            registered_at: None,
            last_heartbeat_at: None,
            idle_since: None,
            failure: None,
        }
    }

    /// Moves to `to` at `now`, or explains why that move is illegal (the worker is
    /// left unchanged). Entering `ready` the first time records the registration and
    /// starts the idle clock.
    pub fn transition(&mut self, to: WorkerState, now: Timestamp) -> Result<(), TransitionError> {
        if !self.state.can_become(to) {
            return Err(TransitionError {
                worker: self.id.clone(),
                from: self.state,
                to,
            });
        }
        self.state = to;
        self.state_changed_at = now;
        if to == WorkerState::Ready && self.registered_at.is_none() {
            self.registered_at = Some(now);
            self.last_heartbeat_at = Some(now);
            if self.busy_slots == 0 {
                self.idle_since = Some(now);
            }
        }
        Ok(())
    }

    /// Moves to `failed` with a reason for the operator.
    pub fn fail(
        &mut self,
        reason: impl Into<String>,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        self.transition(WorkerState::Failed, now)?;
        self.failure = Some(reason.into());
        Ok(())
    }

    /// How long the worker took from its launch request to registering ready, in
    /// seconds: its measured boot. `None` before it registered, or when the clocks
    /// put its registration before its request.
    pub fn boot_s(&self) -> Option<f64> {
        let boot = self.registered_at?.secs_since(self.created_at);
        (boot >= 0.0).then_some(boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Worker {
        Worker::requested(
            WorkerId::from_string("w-1"),
            PoolId::new("p").unwrap(),
            ProviderKind::Fake,
            Some("lc".into()),
            2,
            "tok".into(),
            Timestamp::from_unix_secs(100),
        )
    }

    #[test]
    fn happy_path_walks_the_whole_life_cycle() {
        let mut w = worker();
        for (i, s) in [
            WorkerState::Booting,
            WorkerState::Ready,
            WorkerState::Draining,
            WorkerState::Terminating,
            WorkerState::Terminated,
        ]
        .into_iter()
        .enumerate()
        {
            w.transition(s, Timestamp::from_unix_secs(200 + i as i64))
                .unwrap();
        }
        assert_eq!(w.registered_at, Some(Timestamp::from_unix_secs(201)));
        assert_eq!(w.idle_since, Some(Timestamp::from_unix_secs(201)));
        assert!(!w.state.is_live());
    }

    #[test]
    fn the_boot_is_request_to_registration_and_never_negative() {
        let mut w = worker();
        assert_eq!(w.boot_s(), None);
        w.transition(WorkerState::Booting, Timestamp::from_unix_secs(150))
            .unwrap();
        w.transition(WorkerState::Ready, Timestamp::from_unix_ms(220_500))
            .unwrap();
        assert_eq!(w.boot_s(), Some(120.5));
        // Clocks that put the registration before the request: no boot measured.
        w.registered_at = Some(Timestamp::from_unix_secs(99));
        assert_eq!(w.boot_s(), None);
    }

    #[test]
    fn illegal_transitions_are_errors_and_change_nothing() {
        let mut w = worker();
        let before = w.clone();
        let err = w
            .transition(WorkerState::Ready, Timestamp::from_unix_secs(5))
            .unwrap_err();
        assert_eq!(err.from, WorkerState::Requested);
        assert_eq!(err.to, WorkerState::Ready);
        assert_eq!(w, before);
        assert_eq!(
            err.to_string(),
            "worker w-1: illegal transition requested -> ready"
        );
    }

    #[test]
    fn terminated_is_terminal_and_self_loops_are_illegal() {
        for to in WorkerState::ALL {
            assert!(!WorkerState::Terminated.can_become(to));
        }
        for s in WorkerState::ALL {
            assert!(!s.can_become(s), "{s} -> {s}");
        }
        // Every live state can be cleaned up.
        for s in WorkerState::ALL {
            if s.is_live() && s != WorkerState::Terminating {
                assert!(s.can_become(WorkerState::Terminating), "{s}");
            }
        }
    }

    #[test]
    fn failure_records_the_reason() {
        let mut w = worker();
        w.fail("InsufficientInstanceCapacity", Timestamp::from_unix_secs(3))
            .unwrap();
        assert_eq!(w.state, WorkerState::Failed);
        assert_eq!(w.failure.as_deref(), Some("InsufficientInstanceCapacity"));
    }

    #[test]
    fn state_names_round_trip() {
        for s in WorkerState::ALL {
            assert_eq!(s.as_str().parse::<WorkerState>().unwrap(), s);
        }
    }
}
