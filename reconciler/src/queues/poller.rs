//! The queue poller of one replica: turns the `queue:` sources of the pools this
//! replica holds into queue samples.
//!
//! Every pass (once a second when run by [`QueuePoller::run`]):
//!
//! 1. Which pools does this replica reconcile? [`store::Store::lease_holders`], so a
//!    source is polled by one replica, the one that acts on the answer; a pool that
//!    moves to another replica is dropped here and picked up there.
//! 2. For each held pool that is due: re-read its spec (so an edit of `queue:` takes
//!    effect at the next poll; a pool without a source is looked at again every
//!    [`PollerConfig::spec_recheck`]), build its adapter if the source changed, and
//!    poll. Due pools are polled concurrently; each request is bounded by the HTTP
//!    client's timeout, so a pass takes at most about that long.
//! 3. Write one sample per polled pool ([`store::Store::record_queue_samples`]) and
//!    wake the reconcile loop for the pool when its backlog exceeds its idle ready
//!    slots (the same rule as pushed samples,
//!    [`capstan_core::queue::backlog_exceeds_idle`]).
//!
//! A failing source is recorded as a pool error of kind `queue_source` (deduplicated
//! by the store: one row with a count). The pool then keeps its last good demand for
//! [`PollerConfig::stale_after`], written as fresh samples so the predictor does not
//! see the queue empty out, and after that falls back to what its workers say:
//! pending 0, running = the busy slots of its `ready` and `draining` workers.
//!
//! The next poll of a pool is `poll_interval_s` after this one, or later when the
//! source asked for that ([`super::Observation::next_poll_after`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use capstan_core::queue::backlog_exceeds_idle;
use capstan_core::{PoolId, QueueSource, Timestamp, WorkerState};
use store::{Store, StoreError};
use tokio::task::JoinSet;

use super::{Adapter, AdapterError, Observation, QueueCredentials, adapter_for};

/// The kind of pool error a failing source records.
pub const ERROR_KIND: &str = "queue_source";
/// How far back the pool's latest stored sample is looked for when a pool is first
/// polled here, for the arrivals estimate (as for pushed samples).
const PREVIOUS_LOOKBACK_S: i64 = 15 * 60;

/// Called with a pool whose backlog needs capacity now (the reconcile loop's
/// [`crate::Waker::wake`] in `capstan serve`).
pub type WakeFn = Arc<dyn Fn(&PoolId) + Send + Sync>;

/// How the poller runs.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// This replica's name in leases: pools whose lease it holds are polled.
    pub owner: String,
    /// How long a pool keeps its last good demand while its source fails, before
    /// falling back to its workers' busy slots. Default: 600 s.
    pub stale_after: Duration,
    /// Limit on each request to a source. Default: 10 s.
    pub request_timeout: Duration,
    /// How often a held pool without a `queue:` is looked at again. Default: 5 s, the
    /// shortest poll interval.
    pub spec_recheck: Duration,
    /// Time between passes in [`QueuePoller::run`]. Default: 1 s.
    pub pass_interval: Duration,
}

impl PollerConfig {
    /// The defaults for replica `owner`.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            stale_after: Duration::from_secs(600),
            request_timeout: Duration::from_secs(10),
            spec_recheck: Duration::from_secs(5),
            pass_interval: Duration::from_secs(1),
        }
    }
}

/// A pool's adapter, or why it could not be built (a missing credentials entry fails
/// every poll until the config is fixed).
type BuiltAdapter = Result<Arc<dyn Adapter>, String>;

/// What the poller knows about one held pool between passes.
#[derive(Debug)]
struct PoolPoll {
    /// The source the adapter was built for, and the adapter.
    source: Option<(QueueSource, BuiltAdapter)>,
    /// When to look again.
    next_at: Timestamp,
    /// The last good answer: when, pending, running.
    last_good: Option<(Timestamp, u32, u32)>,
    /// pending + running of the last sample written (None: look in the store).
    previous_level: Option<u32>,
}

/// What one pass did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Pools whose source answered.
    pub polled: Vec<PoolId>,
    /// Pools whose source failed, with the message recorded.
    pub failed: Vec<(PoolId, String)>,
}

/// Polls the queue sources of the pools this replica holds.
pub struct QueuePoller {
    store: Store,
    cfg: PollerConfig,
    credentials: Arc<QueueCredentials>,
    clock: fn() -> Timestamp,
    wake: WakeFn,
    http: reqwest::Client,
    pools: HashMap<PoolId, PoolPoll>,
}

impl fmt::Debug for QueuePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePoller")
            .field("cfg", &self.cfg)
            .field("pools", &self.pools.len())
            .finish_non_exhaustive()
    }
}

impl QueuePoller {
    /// A poller over `store` using `credentials`, reading the time from `clock` and
    /// calling `wake` for pools that need capacity now.
    pub fn new(
        store: Store,
        credentials: QueueCredentials,
        cfg: PollerConfig,
        clock: fn() -> Timestamp,
        wake: WakeFn,
    ) -> Result<Self, AdapterError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .user_agent(concat!("capstan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AdapterError::Unreachable {
                endpoint: "HTTP client".to_owned(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            store,
            cfg,
            credentials: Arc::new(credentials),
            clock,
            wake,
            http,
            pools: HashMap::new(),
        })
    }

    /// Runs passes every [`PollerConfig::pass_interval`] until `stop` resolves. A
    /// pass that fails on the store is logged and retried at the next one.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(self.cfg.pass_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.pass().await {
                        tracing::warn!(error = %e, "queue poll pass failed; retrying");
                    }
                }
            }
        }
    }

    /// One pass: polls every held pool that is due (see the module docs).
    pub async fn pass(&mut self) -> Result<PassReport, StoreError> {
        let now = (self.clock)();
        let held: HashSet<PoolId> = self
            .store
            .lease_holders()
            .await?
            .into_iter()
            .filter(|(_, owner, _)| *owner == self.cfg.owner)
            .filter_map(|(pool, _, _)| PoolId::new(pool).ok())
            .collect();
        self.pools.retain(|id, _| held.contains(id));

        let mut polls = JoinSet::new();
        for id in held {
            let state = self.pools.entry(id.clone()).or_insert_with(|| PoolPoll {
                source: None,
                next_at: now,
                last_good: None,
                previous_level: None,
            });
            if state.next_at > now {
                continue;
            }
            let spec = self
                .store
                .get_pool(&id)
                .await?
                .filter(|p| p.deleting_since.is_none())
                .and_then(|p| p.spec.queue);
            let Some(source) = spec else {
                state.source = None;
                state.next_at = now.plus_secs(secs(self.cfg.spec_recheck));
                continue;
            };
            if state.source.as_ref().map(|(s, _)| s) != Some(&source) {
                let adapter = match &source {
                    // GitHub merges into the pool's stored jobs: it needs the store.
                    QueueSource::Github(s) => super::github::GithubAdapter::new(
                        id.clone(),
                        s,
                        &self.credentials,
                        self.http.clone(),
                        self.store.clone(),
                        self.clock,
                    )
                    .map(|a| Arc::new(a) as Arc<dyn Adapter>),
                    _ => adapter_for(&source, &self.credentials, self.http.clone(), self.clock),
                }
                .map_err(|e| e.to_string());
                state.source = Some((source, adapter));
            }
            let Some((source, adapter)) = &state.source else {
                continue;
            };
            state.next_at = now.plus_secs(source_interval(source));
            let kind = source.kind();
            let adapter = adapter.clone();
            polls.spawn(async move {
                let answer = match adapter {
                    Ok(a) => a.poll().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                (id, answer.map_err(|e| format!("{kind} source: {e}")))
            });
        }

        let mut report = PassReport::default();
        while let Some(joined) = polls.join_next().await {
            let (id, answer) = match joined {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "a queue poll task panicked");
                    continue;
                }
            };
            self.record(&id, answer, now, &mut report).await?;
        }
        Ok(report)
    }

    /// Writes the sample for one poll's answer (or the fallback for a failure).
    async fn record(
        &mut self,
        id: &PoolId,
        answer: Result<Observation, String>,
        now: Timestamp,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let Some(state) = self.pools.get_mut(id) else {
            return Ok(());
        };
        if matches!(state.source, Some((QueueSource::Github(_), _))) {
            return super::github::record_poll(&self.store, &self.wake, id, answer, now, report)
                .await;
        }
        let (pending, running) = match &answer {
            Ok(o) => {
                state.last_good = Some((now, o.pending, o.running));
                if let Some(hint) = o.next_poll_after {
                    let at = now.plus_secs(secs(hint));
                    if at > state.next_at {
                        state.next_at = at;
                    }
                }
                report.polled.push(id.clone());
                (o.pending, o.running)
            }
            Err(message) => {
                tracing::warn!(pool = %id, error = %message, "queue source failed");
                self.store
                    .record_pool_error(id, None, ERROR_KIND, message, now)
                    .await?;
                report.failed.push((id.clone(), message.clone()));
                match state.last_good {
                    Some((at, pending, running))
                        if now.unix_ms() - at.unix_ms()
                            <= i64::try_from(self.cfg.stale_after.as_millis())
                                .unwrap_or(i64::MAX) =>
                    {
                        (pending, running)
                    }
                    _ => {
                        let busy: u32 = self
                            .store
                            .list_workers(id, false)
                            .await?
                            .iter()
                            .filter(|w| {
                                matches!(w.state, WorkerState::Ready | WorkerState::Draining)
                            })
                            .fold(0u32, |sum, w| sum.saturating_add(w.busy_slots));
                        (0, busy)
                    }
                }
            }
        };
        if state.previous_level.is_none() {
            state.previous_level = self
                .store
                .queue_samples(id, now.plus_secs(-PREVIOUS_LOOKBACK_S), now)
                .await?
                .last()
                .map(|s| s.pending.saturating_add(s.running));
        }
        let sample = Observation {
            pending,
            running,
            next_poll_after: None,
        }
        .sample(now, state.previous_level);
        state.previous_level = Some(pending.saturating_add(running));
        self.store.record_queue_samples(id, &[sample]).await?;
        if pending > 0 {
            let workers = self.store.list_workers(id, false).await?;
            if backlog_exceeds_idle(pending, &workers) {
                (self.wake)(id);
            }
        }
        Ok(())
    }
}

/// A source's poll interval in seconds, as an offset for [`Timestamp::plus_secs`].
fn source_interval(source: &QueueSource) -> i64 {
    secs(Duration::from_secs(source.poll_interval_s()))
}

/// Whole seconds of `d` (rounded up, so a wait is never shortened), at most a year
/// so that adding it to a timestamp cannot overflow.
fn secs(d: Duration) -> i64 {
    let s = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(s.min(365 * 86_400)).unwrap_or(i64::MAX)
}
