//! Several `capstan serve` replicas on one database, end to end.
//!
//! - On PostgreSQL, two replicas share the pools through fenced leases: while both
//!   live, every pool is planned by exactly one of them (one owner and one fence in its
//!   plan log and status), and when one is killed with SIGKILL the other takes its
//!   pools, with higher fences, within one lease period (plus slack for a loaded
//!   machine), and plans them at once.
//! - On SQLite, a second replica on the same file refuses to start: SQLite serves one.

mod common;

use common::wall_now as now;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use capstan_core::{PoolId, PoolSpec};
use common::loop_fixture::{AMI, Fixture, bare, pool_path};
use common::{Service, free_port, http_get};
use serde_json::json;
use store::Store;

/// The loop's tick and lease TTL (the fixture's defaults).
const TICK: Duration = Duration::from_secs(2);
const LEASE_TTL: Duration = Duration::from_secs(6);

/// A small EC2 pool whose workers never register: with demand, every few ticks have
/// actions (launches, registration-timeout terminations, replacements).
fn spec(id: &str) -> PoolSpec {
    PoolSpec::from_value(json!({
        "id": id,
        "provider": "aws",
        "max_capacity": 3,
        "launch_configs": [
            {"id": "only", "region": "us-east-1", "instance_type": "t3.micro",
             "provider_config": {"image_id": AMI}}
        ],
        "scaling": {"policy": "reactive", "max_launches_per_minute": 1000},
        "lifecycle": {"registration_timeout_s": 6}
    }))
    .unwrap()
}

/// Pushes a queue sample with `pending` tasks to `pool` through `svc`'s API.
async fn push(f: &Fixture, svc: &Service, pool: &str, pending: u32) {
    let (status, body) = f
        .call(
            svc,
            "POST",
            &pool_path(pool, "/queue"),
            Some(json!({"samples": [{"pending": pending, "running": 0}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// Each pool's (owner, fence) in its status now.
async fn statuses(store: &Store, pools: &[String]) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    for p in pools {
        if let Some(s) = store
            .pool_status(&PoolId::new(p.as_str()).unwrap())
            .await
            .unwrap()
        {
            out.insert(p.clone(), (s.owner, s.fence));
        }
    }
    out
}

/// Each pool's (owner, fence) lease now.
async fn holders(store: &Store) -> BTreeMap<String, (String, i64)> {
    store
        .lease_holders()
        .await
        .unwrap()
        .into_iter()
        .map(|(pool, owner, fence)| (pool, (owner, fence)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_plan_one_pool_and_the_survivor_takes_over_within_a_lease() {
    let test = "two_replicas_never_plan_one_pool_and_the_survivor_takes_over_within_a_lease";
    let Some(f) = Fixture::start(test).await else {
        return;
    };
    let store = f.store().await;
    let config_a = f.config_with("a.toml", &[("replica_name", "\"replica-a\"")]);
    let config_b = f.config_with("b.toml", &[("replica_name", "\"replica-b\"")]);

    // Six pools, three leased to each replica's name before it starts, as if both had
    // been running (otherwise whichever starts first takes all six, and the split
    // would be left to chance). A replica renews a lease held under its name with the
    // same fence.
    let pools: Vec<String> = (0..6).map(|i| format!("ci/replica-{i}")).collect();
    let mut expected: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for (half, owner) in [(&pools[..3], "replica-a"), (&pools[3..], "replica-b")] {
        for p in half {
            store.create_pool(&spec(p), "test", now()).await.unwrap();
        }
        let leases = store.acquire_leases(owner, 60_000).await.unwrap();
        assert_eq!(leases.len(), 3, "{owner}: {leases:?}");
        for l in leases {
            expected.insert(
                l.fence.pool_id.to_string(),
                (owner.to_owned(), l.fence.token),
            );
        }
    }
    let since = now();
    let mut a = f.serve_with("replica-a", &config_a, &[]);
    let b = f.serve_with("replica-b", &config_b, &[]);

    // Both alive for seven ticks, demand changing every second, pushed through either
    // replica's API (the holder is woken through PostgreSQL whichever took it). The
    // leases and statuses are watched all along.
    let both_until = Instant::now() + TICK * 7;
    let mut step = 0u32;
    while Instant::now() < both_until {
        for (i, p) in pools.iter().enumerate() {
            let via = if (i as u32 + step).is_multiple_of(2) {
                &a
            } else {
                &b
            };
            push(&f, via, p, (step + i as u32) % 4).await;
        }
        step += 1;
        let leases = holders(&store).await;
        assert_eq!(
            leases,
            expected,
            "the leases moved while both replicas live\n{}",
            f.logs()
        );
        for (pool, seen) in statuses(&store, &pools).await {
            assert_eq!(
                Some(&seen),
                expected.get(&pool),
                "{pool} planned by another owner or fence while both replicas live\n{}",
                f.logs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Every pool was planned, with actions, by its holder alone: one owner and one
    // fence per pool in its plan log.
    for p in &pools {
        let log = store
            .plan_log(&PoolId::new(p.as_str()).unwrap(), since, 10_000)
            .await
            .unwrap();
        assert!(!log.is_empty(), "{p}: no plan with actions\n{}", f.logs());
        let makers: BTreeSet<(String, i64)> =
            log.iter().map(|e| (e.owner.clone(), e.fence)).collect();
        assert_eq!(
            makers,
            BTreeSet::from([expected[p].clone()]),
            "{p}: plans by more than its holder while both replicas live"
        );
    }

    // SIGKILL replica a (it holds three pools): b takes them within one lease period
    // and plans them at once, give or take slack for a loaded machine.
    let held_by_a: Vec<String> = expected
        .iter()
        .filter(|(_, (o, _))| o == "replica-a")
        .map(|(p, _)| p.clone())
        .collect();
    assert!(!held_by_a.is_empty());
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let killed_at = now();
    let bound = LEASE_TTL + Duration::from_secs(3);
    let mut leased_after: HashMap<String, Duration> = HashMap::new();
    let mut planned_after: HashMap<String, Duration> = HashMap::new();
    let mut step = 0u32;
    while planned_after.len() < held_by_a.len() && killed.elapsed() < bound * 2 {
        if step.is_multiple_of(5) {
            for (i, p) in pools.iter().enumerate() {
                push(&f, &b, p, 1 + (step / 5 + i as u32) % 3).await;
            }
        }
        step += 1;
        let leases = holders(&store).await;
        let status = statuses(&store, &pools).await;
        for p in &held_by_a {
            let old = expected[p].1;
            if let Some((owner, fence)) = leases.get(p)
                && owner == "replica-b"
            {
                assert!(*fence > old, "{p}: taken over with fence {fence} <= {old}");
                leased_after
                    .entry(p.clone())
                    .or_insert_with(|| killed.elapsed());
            }
            if let Some((owner, fence)) = status.get(p)
                && owner == "replica-b"
            {
                assert!(*fence > old, "{p}: planned with fence {fence} <= {old}");
                planned_after
                    .entry(p.clone())
                    .or_insert_with(|| killed.elapsed());
            }
        }
        // b's own pools never change hands.
        for p in &pools[3..] {
            assert_eq!(leases.get(p), expected.get(p), "{p}\n{}", f.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{test}: after the SIGKILL, b leased a's pools after {leased_after:?} and planned them after {planned_after:?} (bound {bound:?})"
    );
    for p in &held_by_a {
        // The lease: a's runs out at most ¾ TTL after its last renewal (before the
        // kill), and b takes it at its next renewal, at most ¼ TTL later.
        let leased = leased_after
            .get(p)
            .copied()
            .unwrap_or_else(|| panic!("{p}: replica-b never took the lease\n{}", f.logs()));
        assert!(
            leased <= LEASE_TTL + Duration::from_secs(2),
            "{p}: replica-b took the lease {leased:?} after the SIGKILL\n{}",
            f.logs()
        );
        let took = planned_after.get(p).copied().unwrap_or_else(|| {
            panic!(
                "{p}: not planned by replica-b within {:?} of the SIGKILL\n{}",
                bound * 2,
                f.logs()
            )
        });
        assert!(
            took <= bound,
            "{p}: replica-b planned it {took:?} after the SIGKILL, more than {bound:?}\n{}",
            f.logs()
        );
    }

    // A few more ticks of b alone, then the whole plan log: per pool, fences never go
    // back in time, each fence has one owner, a dead replica plans nothing, and plans
    // by different owners are never within one tick of each other.
    tokio::time::sleep(TICK * 3).await;
    for p in &pools {
        let log = store
            .plan_log(&PoolId::new(p.as_str()).unwrap(), since, 10_000)
            .await
            .unwrap();
        let mut owners: HashMap<i64, &str> = HashMap::new();
        for e in &log {
            let first = *owners.entry(e.fence).or_insert(e.owner.as_str());
            assert_eq!(first, e.owner, "{p}: fence {} used by two owners", e.fence);
            if e.owner == "replica-a" {
                assert!(
                    e.at <= killed_at,
                    "{p}: a plan by the killed replica at {:?}",
                    e.at
                );
            }
        }
        for w in log.windows(2) {
            assert!(
                w[1].fence >= w[0].fence,
                "{p}: fence went back from {} to {} at {:?}",
                w[0].fence,
                w[1].fence,
                w[1].at
            );
            if w[1].owner != w[0].owner {
                let gap_ms = w[1].at.unix_ms() - w[0].at.unix_ms();
                assert!(
                    gap_ms >= i64::try_from(TICK.as_millis()).unwrap(),
                    "{p}: {} planned {gap_ms} ms after {}",
                    w[1].owner,
                    w[0].owner
                );
            }
        }
        if held_by_a.contains(p) {
            assert!(
                log.iter().any(|e| e.owner == "replica-b"),
                "{p}: replica-b never planned actions for it\n{}",
                f.logs()
            );
        }
    }
    drop(b);
}

/// Waits for `svc` to exit within `within`; (success, stderr), or `None` if it still
/// runs (then it is killed).
fn exit_within(svc: &mut Service, within: Duration) -> Option<(bool, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = svc.child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = svc.child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            return Some((status.success(), err));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_second_serve_on_one_sqlite_file_exits_saying_another_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("capstan.db").display());
    let serve = |port: u16| {
        let mut cmd = bare(dir.path());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let port = free_port();
    let mut first = Service::spawn_healthy(serve(port), port);

    let second_port = free_port();
    let mut second = Service {
        child: serve(second_port).spawn().unwrap(),
        port: second_port,
    };
    let (ok, stderr) = exit_within(&mut second, Duration::from_secs(30))
        .expect("a second serve on the same SQLite file is still running after 30 s");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("another `capstan serve` already runs on the SQLite database"),
        "{stderr}"
    );
    assert!(stderr.contains("use PostgreSQL to run several"), "{stderr}");
    // The first one is untouched.
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    // The lock dies with its process, even by SIGKILL: the next serve starts.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let third_port = free_port();
    let third = Service::spawn_healthy(serve(third_port), third_port);
    drop(third);
}
