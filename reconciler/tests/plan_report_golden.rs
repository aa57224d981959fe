//! Golden file of a plan as the API serves it, for a pool that exercises every part of
//! the report: an offering at its own cap, one marked unavailable, one over budget, a
//! schedule floor, a worker past its idle timeout and one that never registered.
//!
//! A change in the plan's JSON shows as a readable diff of
//! `tests/golden/plan_report.json` (an `expect_test::expect_file!`). After an intended
//! change, regenerate it with
//! `UPDATE_EXPECT=1 cargo test -p reconciler --test plan_report_golden`.

use capstan_core::{
    Forecast, LaunchLog, OfferingHealth, PoolSpec, ScalingPolicy, Timestamp, Worker, WorkerId,
    WorkerState,
};
use reconciler::Planner;

const SPEC: &str = r#"
id: ci/golden
provider: aws
min_capacity: 1
max_capacity: 40
launch_configs:
  - id: spot-a
    region: us-east-1
    instance_type: c6i.2xlarge
    market: spot
    capacity: 4
    priority: 0
    max_capacity: 8
    price_per_hour: 0.15
  - id: spot-b
    region: us-east-1
    instance_type: c7i.2xlarge
    market: spot
    capacity: 4
    priority: 0
    price_per_hour: 0.16
  - id: on-demand
    region: us-east-1
    instance_type: m6i.2xlarge
    capacity: 4
    priority: 10
    price_per_hour: 0.384
scaling:
  policy: forecast
  idle_timeout_s: 600
  max_launches_per_minute: 20
schedules:
  - cron: "0 8 * * 1-5"
    timezone: Europe/Berlin
    duration_s: 36000
    min_capacity: 12
budget:
  max_cost_per_hour: 1.2
"#;

fn worker(id: &str, lc: &str, state: WorkerState, busy: u32, idle_since: Option<i64>) -> Worker {
    let created = Timestamp::from_unix_secs(1_764_576_000 - 3600);
    let mut w = Worker::requested(
        WorkerId::from_string(id),
        capstan_core::PoolId::new("ci/golden").unwrap(),
        capstan_core::ProviderKind::Aws,
        Some(lc.into()),
        4,
        format!("tok-{id}"),
        created,
    );
    w.state = state;
    if state == WorkerState::Ready {
        w.registered_at = Some(created.plus_secs(120));
        w.last_heartbeat_at = Some(Timestamp::from_unix_secs(1_764_576_000 - 10));
        w.busy_slots = busy;
        w.idle_since = idle_since.map(Timestamp::from_unix_secs);
    }
    w
}

#[test]
fn plan_report_matches_the_golden_file() {
    let spec = PoolSpec::from_yaml(SPEC).unwrap();
    // Monday 2025-12-01 09:00 Berlin: the office-hours floor (12 slots) is open.
    let now = Timestamp::from_unix_secs(1_764_576_000);
    let workers = vec![
        worker("w-busy-1", "spot-a", WorkerState::Ready, 4, None),
        worker("w-busy-2", "spot-a", WorkerState::Ready, 2, None),
        worker(
            "w-idle",
            "on-demand",
            WorkerState::Ready,
            0,
            Some(1_764_576_000 - 900),
        ),
        worker("w-stuck", "on-demand", WorkerState::Booting, 0, None),
    ];
    let forecast = Forecast {
        made_at: now,
        policy: ScalingPolicy::Forecast,
        lead_s: 120.0,
        target_slots: 18,
        backlog_slots: 14,
        expected_busy_slots: 11.5,
        points: Vec::new(),
    };
    let mut health = OfferingHealth::new();
    health.mark_unavailable("spot-b", now.plus_secs(240), "InsufficientInstanceCapacity");
    let plan =
        Planner::new(&spec)
            .unwrap()
            .plan(&workers, &forecast, &health, now, &LaunchLog::new());
    let json = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    expect_test::expect_file!["golden/plan_report.json"].assert_eq(&json);
}
