//! The classic reactive estimator, the baseline every forecast is compared to.
//!
//! It answers the backlog it sees, nothing more: idle slots absorb pending tasks first,
//! and each task still waiting after that asks for `scaling_ratio` more slots.

/// Slots the reactive estimator asks for.
///
/// With `existing` = slots of requested, booting and ready workers:
/// idle = max(0, existing − running); adjusted pending = max(0, pending − idle);
/// desired = clamp(ceil(adjusted pending × scaling_ratio) + existing, min, max).
///
/// A ratio that is not a finite positive number counts as 1. When `min > max` the
/// ceiling wins (validation rejects such specs; this keeps the function total).
pub fn reactive_target(
    pending: u32,
    running: u32,
    existing: u32,
    scaling_ratio: f64,
    min: u32,
    max: u32,
) -> u32 {
    let idle = existing.saturating_sub(running);
    let adjusted_pending = pending.saturating_sub(idle);
    let ratio = if scaling_ratio.is_finite() && scaling_ratio > 0.0 {
        scaling_ratio
    } else {
        1.0
    };
    let extra = (f64::from(adjusted_pending) * ratio).ceil();
    // Saturating float-to-int conversion: a huge backlog just hits `max`.
    let extra = if extra >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        extra as u32
    };
    existing.saturating_add(extra).max(min).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_slots_absorb_pending_tasks_first() {
        // 10 slots, 7 running: 3 idle take 3 of the 5 pending; 2 more needed.
        assert_eq!(reactive_target(5, 7, 10, 1.0, 0, 100), 12);
        // Fewer pending than idle: nothing more.
        assert_eq!(reactive_target(2, 7, 10, 1.0, 0, 100), 10);
    }

    #[test]
    fn booting_capacity_counts_and_ratio_scales_the_backlog() {
        // 4 existing (2 of them booting), 2 running, 6 pending: 4 left, × 0.5 = 2.
        assert_eq!(reactive_target(6, 2, 4, 0.5, 0, 100), 6);
        // 1 left × 0.5 = 0.5, rounded up to a whole slot.
        assert_eq!(reactive_target(3, 2, 4, 0.5, 0, 100), 5);
    }

    #[test]
    fn result_is_clamped_by_min_and_max() {
        assert_eq!(reactive_target(0, 0, 0, 1.0, 3, 100), 3);
        assert_eq!(reactive_target(500, 0, 0, 1.0, 0, 40), 40);
        assert_eq!(reactive_target(u32::MAX, 0, 5, 1e9, 0, 40), 40);
        // More running than existing (a static machine we do not track): no idle.
        assert_eq!(reactive_target(4, 9, 3, 1.0, 0, 100), 7);
    }
}
