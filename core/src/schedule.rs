//! Evaluating [`Schedule`] windows: is a window open at a given instant?

use std::str::FromStr;

use chrono_tz::Tz;
use croner::Cron;

use crate::spec::Schedule;
use crate::time::Timestamp;

/// Parses a cron expression the way schedules read it: five fields, or six with
/// leading seconds. The error says what is expected.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(fields == 5 || fields == 6 || expr.trim_start().starts_with('@')) {
        return Err(format!(
            "expected 5 cron fields (minute hour day-of-month month day-of-week) or 6 with leading seconds, got {fields} in {expr:?}"
        ));
    }
    Cron::from_str(expr).map_err(|e| format!("not a valid cron expression {expr:?}: {e}"))
}

/// A schedule ready to evaluate: its cron expression parsed and zone resolved once.
#[derive(Debug, Clone)]
pub struct CompiledSchedule {
    cron: Cron,
    tz: Tz,
    duration_s: i64,
    /// Floor on slots while open.
    pub min_capacity: u32,
}

impl CompiledSchedule {
    /// Compiles a validated schedule. Fails only for a schedule that did not pass
    /// validation.
    pub fn new(s: &Schedule) -> Result<Self, String> {
        Ok(Self {
            cron: parse_cron(&s.cron)?,
            tz: Tz::from_str(&s.timezone)
                .map_err(|_| format!("unknown time zone {:?}", s.timezone))?,
            duration_s: i64::try_from(s.duration_s).unwrap_or(i64::MAX / 2000),
            min_capacity: s.min_capacity,
        })
    }

    /// Whether a window is open at `now`: the latest firing at or before `now` was less
    /// than `duration_s` ago.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let local = now.to_datetime().with_timezone(&self.tz);
        match self.cron.find_previous_occurrence(&local, true) {
            Ok(fired) => now.secs_since(Timestamp::from_datetime(&fired)) < self.duration_s as f64,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn office_hours_window_is_evaluated_in_its_time_zone() {
        let s = CompiledSchedule::new(&Schedule {
            cron: "0 8 * * 1-5".into(),
            timezone: "Europe/Berlin".into(),
            duration_s: 10 * 3600,
            min_capacity: 4,
        })
        .unwrap();
        // Monday 2026-11-30: 08:00 Berlin is 07:00 UTC.
        assert!(!s.is_open(at("2026-11-30T06:59:59Z")));
        assert!(s.is_open(at("2026-11-30T07:00:00Z")));
        assert!(s.is_open(at("2026-11-30T16:59:59Z")));
        assert!(!s.is_open(at("2026-11-30T17:00:00Z")));
        // Saturday: closed.
        assert!(!s.is_open(at("2026-11-28T10:00:00Z")));
    }

    #[test]
    fn cron_with_wrong_field_count_is_explained() {
        let err = parse_cron("0 8 * *").unwrap_err();
        assert!(err.contains("expected 5 cron fields"), "{err}");
    }
}
