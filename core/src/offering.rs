//! Offerings: the concrete ways a pool can get a machine, and their health.
//!
//! An [`Offering`] is a launch config seen as something to buy: (provider, region/zone,
//! instance type, market) with its slots per instance, price, priority and own cap. The
//! planner ranks offerings by priority, then price per slot.
//!
//! [`OfferingHealth`] remembers which offerings recently failed with
//! insufficient-capacity or quota errors: such an offering is *unavailable* until a
//! time, and the planner skips it (saying so in the plan report) and falls back to the
//! next one. Health is keyed by launch-config id because that is what a plan names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{LaunchConfig, Market, ProviderKind};
use crate::time::Timestamp;

/// One way of getting a machine for a pool, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offering {
    /// The launch config this offering comes from (unique within the pool).
    pub launch_config_id: String,
    /// The provider plugin that launches it.
    pub provider: ProviderKind,
    /// Cloud region; empty where the provider has none.
    pub region: String,
    /// Availability zone, when pinned.
    pub zone: Option<String>,
    /// Machine type.
    pub instance_type: String,
    /// Spot or on-demand.
    pub market: Market,
    /// Task slots per instance (at least 1).
    pub slots: u32,
    /// Price of one instance per hour, when known.
    pub price_per_hour: Option<f64>,
    /// Lower is tried first.
    pub priority: i32,
    /// Slots this offering may hold at most inside the pool, if capped.
    pub max_slots: Option<u32>,
}

impl Offering {
    /// The offering described by launch config `lc` of a pool run by `provider`.
    pub fn from_launch_config(provider: ProviderKind, lc: &LaunchConfig) -> Self {
        Self {
            launch_config_id: lc.id.clone(),
            provider,
            region: lc.region.clone(),
            zone: lc.zone.clone(),
            instance_type: lc.instance_type.clone(),
            market: lc.market,
            slots: lc.capacity.max(1),
            price_per_hour: lc.price_per_hour,
            priority: lc.priority,
            max_slots: lc.max_capacity,
        }
    }

    /// The key [`OfferingHealth`] and plan reports know this offering by: the launch
    /// config id, or `launch_config/zone` when the offering pins a zone the launch
    /// config leaves open.
    pub fn key(&self, launch_config_zone: Option<&str>) -> String {
        match (&self.zone, launch_config_zone) {
            (Some(z), None) => format!("{}/{z}", self.launch_config_id),
            _ => self.launch_config_id.clone(),
        }
    }

    /// Price of one slot per hour, when the price is known.
    pub fn price_per_slot_hour(&self) -> Option<f64> {
        self.price_per_hour
            .map(|p| p / f64::from(self.slots.max(1)))
    }

    /// The order offerings are tried in: priority, then price per slot (unknown prices
    /// last), then id so the order is total and plans are deterministic.
    pub fn preference_cmp(&self, other: &Offering) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| {
                let a = self.price_per_slot_hour().unwrap_or(f64::INFINITY);
                let b = other.price_per_slot_hour().unwrap_or(f64::INFINITY);
                a.total_cmp(&b)
            })
            .then_with(|| self.launch_config_id.cmp(&other.launch_config_id))
    }
}

/// Why an offering cannot be used for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailability {
    /// The offering is skipped before this instant.
    pub until: Timestamp,
    /// What the provider said (`InsufficientInstanceCapacity`, `QuotaExceeded`, ...).
    pub reason: String,
}

/// Which offerings of a pool are temporarily unavailable, keyed by launch-config id.
///
/// Entries expire by themselves: [`OfferingHealth::unavailable`] ignores an entry whose
/// `until` has passed, so a caller that never calls [`OfferingHealth::forget_expired`]
/// still gets correct answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferingHealth {
    unavailable: BTreeMap<String, Unavailability>,
}

impl OfferingHealth {
    /// Health with every offering available.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `launch_config_id` unavailable until `until`. A later deadline replaces an
    /// earlier one; an earlier one never shortens a later one.
    pub fn mark_unavailable(
        &mut self,
        launch_config_id: impl Into<String>,
        until: Timestamp,
        reason: impl Into<String>,
    ) {
        let id = launch_config_id.into();
        let reason = reason.into();
        match self.unavailable.get_mut(&id) {
            Some(u) if u.until >= until => {}
            Some(u) => {
                u.until = until;
                u.reason = reason;
            }
            None => {
                self.unavailable
                    .insert(id, Unavailability { until, reason });
            }
        }
    }

    /// Marks `launch_config_id` available again (e.g. a launch just succeeded).
    pub fn mark_available(&mut self, launch_config_id: &str) {
        self.unavailable.remove(launch_config_id);
    }

    /// Why `launch_config_id` is unavailable at `now`, or `None` if it is available.
    pub fn unavailable(&self, launch_config_id: &str, now: Timestamp) -> Option<&Unavailability> {
        if self.unavailable.is_empty() {
            return None;
        }
        self.unavailable
            .get(launch_config_id)
            .filter(|u| u.until > now)
    }

    /// Whether `launch_config_id` may be used at `now`.
    pub fn is_available(&self, launch_config_id: &str, now: Timestamp) -> bool {
        self.unavailable(launch_config_id, now).is_none()
    }

    /// Drops entries that have expired by `now`.
    pub fn forget_expired(&mut self, now: Timestamp) {
        self.unavailable.retain(|_, u| u.until > now);
    }

    /// Every entry, expired or not, by launch-config id.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Unavailability)> {
        self.unavailable.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(id: &str, priority: i32, capacity: u32, price: Option<f64>) -> LaunchConfig {
        LaunchConfig {
            id: id.into(),
            region: "r".into(),
            zone: None,
            instance_type: "t".into(),
            market: Market::OnDemand,
            capacity,
            priority,
            max_capacity: None,
            price_per_hour: price,
            provider_config: Default::default(),
        }
    }

    #[test]
    fn offerings_rank_by_priority_then_price_per_slot_then_id() {
        let mut v = [
            Offering::from_launch_config(ProviderKind::Fake, &lc("c", 0, 1, None)),
            Offering::from_launch_config(ProviderKind::Fake, &lc("b", 0, 4, Some(2.0))),
            Offering::from_launch_config(ProviderKind::Fake, &lc("a", 0, 1, Some(1.0))),
            Offering::from_launch_config(ProviderKind::Fake, &lc("z", -1, 1, Some(9.0))),
        ];
        v.sort_by(Offering::preference_cmp);
        let ids: Vec<_> = v.iter().map(|o| o.launch_config_id.as_str()).collect();
        assert_eq!(ids, ["z", "b", "a", "c"]);
        assert_eq!(v[1].price_per_slot_hour(), Some(0.5));
    }

    #[test]
    fn unavailability_expires_and_never_shortens() {
        let mut h = OfferingHealth::new();
        let t = Timestamp::from_unix_secs;
        h.mark_unavailable("a", t(100), "InsufficientInstanceCapacity");
        h.mark_unavailable("a", t(50), "QuotaExceeded");
        assert_eq!(h.unavailable("a", t(99)).unwrap().until, t(100));
        assert!(!h.is_available("a", t(99)));
        assert!(h.is_available("a", t(100)));
        assert!(h.is_available("b", t(0)));
        h.forget_expired(t(100));
        assert_eq!(h.entries().count(), 0);
    }
}
