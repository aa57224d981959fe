//! Crash safety of the launch and terminate paths, end to end: `capstan serve` on a
//! scratch PostgreSQL with EC2 (moto) is killed with SIGKILL over and over while it
//! launches and terminates instances, and restarted each time. In the end no instance
//! is leaked and none was launched twice.
//!
//! **The cycles.** One pool on EC2 whose workers never register (so the registration
//! timeout keeps terminating them: every cycle has terminations as well as launches).
//! Each cycle starts `capstan serve` and ends with its death by SIGKILL:
//!
//! - for every crash point of [`reconciler::crash::POINTS`] (after the intent, between
//!   the provider call and its record, after the first record, after the terminate
//!   mark, after the terminate call) and every hit count 1..=4, a cycle with
//!   `CAPSTAN_CRASH_AT=point@n`: the process kills itself there. If the point is not
//!   reached within [`CYCLE_BOUND`] the test kills it (counted, and reported);
//! - a few cycles where the test sends SIGKILL itself after a random delay (seeded:
//!   `CRASH_SAFETY_SEED`, printed), landing anywhere in a round.
//!
//! The cycles run in a seeded random order. The demand changes every cycle and within
//! it: launch cycles raise `pending` every second (each rise is a launch action, so the
//! 4th hit comes within seconds), other cycles hold it or drop it to 0.
//!
//! **Same replica name, or a new one.** Most cycles restart with the same
//! `replica_name`: `acquire_leases` then renews the dead process's lease at once, with
//! the same fence. That is correct for a restart of one replica (its state is rebuilt
//! from the store and the provider; the old process is dead, which the test makes sure
//! of before restarting) and it is what makes many cycles cheap: the new process acts
//! at once, on exactly what the crash left. A few cycles start under a new name
//! instead, like another replica taking over: it waits for the dead one's lease to
//! expire, then takes the pool with a higher fence. Both paths must recover, so both
//! are exercised.
//!
//! **The checks.** Every crash point must really have been reached (at least twice),
//! or the test would not test what it says. After the cycles a clean `serve` runs
//! (registration timeout raised so the fleet stays put) with some demand, and the test
//! waits for it to converge: (a) every instance alive in the emulator has exactly one
//! live worker row, linked to it, and every live row has its instance alive; (b) over
//! everything ever launched (moto keeps terminated instances), no worker id is on two
//! instances, every instance has its worker's intent row and that row names it (or,
//! if the row never learnt of it, the orphan sweep terminated it), and the launch
//! ledger agrees, so no idempotency token launched two instances; the instances a
//! crash left unrecorded were adopted into their rows, not left to the sweep; (c) with
//! demand at 0 and the registration timeout back, nothing is left alive in the
//! emulator and no row is live.
//!
//! About 1.5 to 2 minutes; the summary line (`--nocapture`) gives the counts.

mod common;

use common::wall_now as now;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use capstan_core::{PoolId, PoolSpec, QueueSample, WorkerState};
use common::Service;
use common::loop_fixture::{AMI, Fixture};
use providers::{Instance, ListScope};
use reconciler::crash::POINTS;
use store::Store;

const POOL: &str = "ci/crash";
/// Unregistered workers are terminated this long after their intent.
const REGISTRATION_S: u64 = 5;
/// The pool's `max_capacity` (one slot per instance).
const MAX: u32 = 10;
/// How long a cycle waits for its crash point before killing the process itself.
const CYCLE_BOUND: Duration = Duration::from_secs(12);
/// Crash points are armed for hit counts 1..=MAX_HIT.
const MAX_HIT: u32 = 4;
/// Cycles killed by the test at a random moment.
const RANDOM_KILLS: usize = 5;
/// Cycles started under a new replica name (the others reuse one name).
const FRESH_NAMES: usize = 3;
/// Lease TTL of the service (config `lease_ttl_s`).
const LEASE_TTL_S: u64 = 4;

/// A small seeded generator (SplitMix64): the cycles are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.range(0, i as u64) as usize;
            v.swap(i, j);
        }
    }
}

/// How a cycle's process dies.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// `CAPSTAN_CRASH_AT=point@n`.
    At(&'static str, u32),
    /// The test's SIGKILL after this long.
    After(Duration),
}

/// What ended a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The process killed itself at its crash point.
    CrashPoint,
    /// The test killed it (a random-kill cycle, or the crash point was not reached in
    /// time).
    KilledByTest,
}

fn pool_id() -> PoolId {
    PoolId::new(POOL).unwrap()
}

/// The pool: EC2, one launch config, reactive, no launch-rate limit to speak of.
fn spec(registration_s: u64) -> PoolSpec {
    PoolSpec::from_value(serde_json::json!({
        "id": POOL,
        "provider": "aws",
        "max_capacity": MAX,
        "launch_configs": [
            {"id": "only", "region": "us-east-1", "instance_type": "t3.micro",
             "provider_config": {"image_id": AMI}}
        ],
        "scaling": {"policy": "reactive", "max_launches_per_minute": 1000},
        "lifecycle": {"registration_timeout_s": registration_s}
    }))
    .unwrap()
}

/// Replaces the pool's registration timeout (the loop reads the spec every round).
async fn set_registration(store: &Store, registration_s: u64) {
    let record = store.get_pool(&pool_id()).await.unwrap().unwrap();
    store
        .update_pool(
            &pool_id(),
            record.generation,
            &spec(registration_s),
            "crash-test",
            now(),
        )
        .await
        .unwrap();
}

/// Records a queue sample with `pending` tasks, none running, stamped now.
async fn push(store: &Store, pending: u32) {
    let sample = QueueSample {
        at: now(),
        pending,
        running: 0,
        arrivals: pending,
        completions: 0,
    };
    store
        .record_queue_samples(&pool_id(), &[sample])
        .await
        .unwrap();
}

/// Every capstan-tagged instance the emulator knows, in any state (moto keeps
/// terminated ones).
async fn every_instance(f: &Fixture) -> Vec<Instance> {
    f.cloud.list(&ListScope::All).await.unwrap()
}

/// Check (a): the instances alive in the pool and its live worker rows match one to
/// one, every live row settled in `booting` (linked to its instance). `Err` says what
/// does not match yet.
async fn settled(f: &Fixture, store: &Store) -> Result<usize, String> {
    let alive = f.alive(POOL).await;
    let live = store.list_workers(&pool_id(), false).await.unwrap();
    let mut problems = Vec::new();
    let mut linked: HashMap<&str, &str> = HashMap::new();
    for w in &live {
        match (&w.instance_id, w.state) {
            (Some(i), WorkerState::Booting) => {
                if let Some(other) = linked.insert(i.as_str(), w.id.as_str()) {
                    problems.push(format!("instance {i} has two live rows: {other}, {}", w.id));
                }
            }
            _ => problems.push(format!(
                "worker {} is {} with instance {:?}",
                w.id, w.state, w.instance_id
            )),
        }
    }
    for i in &alive {
        match linked.remove(i.id.as_str()) {
            None => problems.push(format!(
                "instance {} (worker tag {:?}) is alive without a live row",
                i.id, i.worker_id
            )),
            Some(w) if i.worker_id.as_ref().map(|x| x.as_str()) != Some(w) => problems.push(
                format!("instance {} is tagged {:?}, row {w}", i.id, i.worker_id),
            ),
            Some(_) => {}
        }
    }
    for (i, w) in linked {
        problems.push(format!(
            "live worker {w} names instance {i}, which is not alive"
        ));
    }
    if problems.is_empty() {
        Ok(alive.len())
    } else {
        Err(problems.join("\n"))
    }
}

/// Waits (at most `within`) until [`settled`] holds; answers the instances alive, or
/// panics with what still does not match.
async fn converge(f: &Fixture, store: &Store, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        match settled(f, store).await {
            Ok(n) => return n,
            Err(e) if Instant::now() > deadline => panic!(
                "alive instances and live rows still do not match one to one after {within:?}:\n{e}\n{}",
                f.logs()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Check (b), over every instance ever launched: one instance per worker id (so per
/// idempotency token: each worker has one), each instance preceded by its worker's
/// intent row and linked back by it (or, when its row never learnt of it, terminated
/// by the orphan sweep), and the launch ledger agreeing. Answers the number of
/// instances launched.
async fn launched_once(f: &Fixture, store: &Store) -> usize {
    let swept = swept_orphans(f.dir.path());
    let instances = every_instance(f).await;
    let rows = store.list_workers(&pool_id(), true).await.unwrap();
    let rows_by_id: HashMap<&str, _> = rows.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut by_worker: HashMap<&str, Vec<&str>> = HashMap::new();
    for i in &instances {
        assert_eq!(
            i.pool_id.as_ref().map(PoolId::as_str),
            Some(POOL),
            "an instance of another pool: {i:?}"
        );
        let w = i
            .worker_id
            .as_ref()
            .unwrap_or_else(|| panic!("instance without a worker tag: {i:?}"));
        by_worker.entry(w.as_str()).or_default().push(&i.id);
        let row = rows_by_id.get(w.as_str()).unwrap_or_else(|| {
            panic!("instance {} was launched for worker {w}, which has no row: no intent was recorded before the create", i.id)
        });
        match &row.instance_id {
            Some(linked) => assert_eq!(
                linked, &i.id,
                "worker {w}'s row names another instance than the one tagged with it"
            ),
            None => assert!(
                swept.contains(&i.id),
                "instance {} of worker {w} ({}) was never linked to its row nor swept as an orphan",
                i.id,
                row.state
            ),
        }
    }
    let twice: Vec<_> = by_worker.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "workers (idempotency tokens) launched more than once: {twice:?}"
    );
    let mut linked = HashSet::new();
    let mut tokens = HashSet::new();
    for w in &rows {
        assert!(
            tokens.insert(w.idempotency_token.as_str()),
            "two rows share token {}",
            w.idempotency_token
        );
        if let Some(i) = &w.instance_id {
            assert!(linked.insert(i.as_str()), "two rows name instance {i}");
        }
        if let Some(entry) = store
            .ledger_lookup("aws", &w.idempotency_token)
            .await
            .unwrap()
        {
            assert_eq!(entry.worker_id, w.id.as_str(), "ledger for {w:?}");
            assert_eq!(
                by_worker.get(w.id.as_str()).map(Vec::as_slice),
                Some(&[entry.instance_id.as_str()][..]),
                "the ledger's instance for token {} is not the one tagged with its worker",
                w.idempotency_token
            );
        }
    }
    instances.len()
}

/// `line` without terminal colours (the service's text logs have them).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The instances the orphan sweep terminated, from every log.
fn swept_orphans(dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_none_or(|x| x != "log") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("orphan instance terminated"))
        {
            let line = strip_ansi(line);
            if let Some(id) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("instance="))
            {
                out.insert(id.trim_matches('"').to_owned());
            }
        }
    }
    out
}

/// Lines of every log containing `needle`.
fn count_in_logs(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .sum()
}

/// Runs one cycle's process until it dies (by its crash point, or by the test's
/// SIGKILL at `kill_after` at the latest), moving the demand along every second.
async fn run_cycle(
    f: &Fixture,
    store: &Store,
    mut svc: Service,
    log: &str,
    kill: Kill,
    rng: &mut Rng,
) -> Ended {
    let started = Instant::now();
    let kill_after = match kill {
        Kill::At(..) => CYCLE_BOUND,
        Kill::After(d) => d,
    };
    // The demand: launch cycles start a little above zero and rise by one each second
    // (each rise is a launch action); terminate cycles hold a level that keeps
    // workers around to time out; random-kill cycles pick anything, 0 included.
    let mut pending = match kill {
        Kill::At(p, _) if p.starts_with("launch:") => rng.range(1, 5) as u32,
        Kill::At(..) => rng.range(4, u64::from(MAX)) as u32,
        Kill::After(_) => [0, 0, 3, 6, MAX][rng.range(0, 4) as usize],
    };
    let rising = matches!(kill, Kill::At(p, _) if p.starts_with("launch:"));
    push(store, pending).await;
    let mut next_push = Instant::now() + Duration::from_secs(1);
    loop {
        if let Some(status) = svc.child.try_wait().unwrap() {
            assert_eq!(
                status.signal(),
                Some(9),
                "cycle {log} ({kill:?}): the service exited with {status}, not by SIGKILL\n{}",
                f.logs()
            );
            let Kill::At(point, _) = kill else {
                panic!(
                    "cycle {log}: died by itself before the test killed it\n{}",
                    f.logs()
                );
            };
            let text = std::fs::read_to_string(f.log_path(log)).unwrap_or_default();
            assert!(
                text.contains(&format!("crash point {point}: killing")),
                "cycle {log}: killed by SIGKILL but not at {point}\n{}",
                f.logs()
            );
            return Ended::CrashPoint;
        }
        if started.elapsed() >= kill_after {
            svc.child.kill().unwrap();
            let status = svc.child.wait().unwrap();
            assert_eq!(status.signal(), Some(9), "{status}");
            return Ended::KilledByTest;
        }
        if Instant::now() >= next_push {
            if rising {
                pending = (pending + 1).min(MAX);
            }
            push(store, pending).await;
            next_push += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_crash_point_leaks_nothing_and_launches_nothing_twice() {
    let test = "sigkill_at_every_crash_point_leaks_nothing_and_launches_nothing_twice";
    let Some(f) = Fixture::start(test).await else {
        return;
    };
    let began = Instant::now();
    let seed = std::env::var("CRASH_SAFETY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE_u64);
    eprintln!("{test}: seed {seed} (set CRASH_SAFETY_SEED to replay another order)");
    let mut rng = Rng(seed);

    // 1 s ticks keep the cycles short; the lease TTL is the smallest the loop accepts
    // with some margin (>= 2 ticks). Leftover intents are given up after 6 s, orphans
    // terminated after 4 s (the sweep runs every 2 s).
    let interval = "1".to_owned();
    let ttl = LEASE_TTL_S.to_string();
    let common_keys = |name: &str| -> Vec<(&'static str, String)> {
        vec![
            ("reconcile_interval_s", interval.clone()),
            ("lease_ttl_s", ttl.clone()),
            ("launch_grace_s", "6".into()),
            ("orphan_grace_s", "4".into()),
            ("orphan_sweep_cron", "\"*/2 * * * * *\"".into()),
            ("replica_name", format!("\"{name}\"")),
        ]
    };
    let write = |file: &str, name: &str| {
        let keys = common_keys(name);
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f.config_with(file, &keys)
    };
    let same = write("same.toml", "crash-replica");

    let store = f.store().await;
    store
        .create_pool(&spec(REGISTRATION_S), "crash-test", now())
        .await
        .unwrap();

    let mut kills: Vec<Kill> = Vec::new();
    for n in 1..=MAX_HIT {
        for point in POINTS {
            kills.push(Kill::At(point, n));
        }
    }
    for _ in 0..RANDOM_KILLS {
        kills.push(Kill::After(Duration::from_millis(rng.range(300, 4000))));
    }
    rng.shuffle(&mut kills);
    let fresh: HashSet<usize> = (1..=FRESH_NAMES)
        .map(|k| k * kills.len() / (FRESH_NAMES + 1))
        .collect();

    let mut outcomes: Vec<(Kill, bool, Ended, Duration)> = Vec::new();
    for (i, kill) in kills.iter().copied().enumerate() {
        let log = format!("cycle-{i:02}");
        let config = if fresh.contains(&i) {
            write(&format!("fresh-{i}.toml"), &format!("crash-fresh-{i}"))
        } else {
            same.clone()
        };
        let env = match kill {
            Kill::At(point, n) => vec![("CAPSTAN_CRASH_AT", format!("{point}@{n}"))],
            Kill::After(_) => vec![],
        };
        let started = Instant::now();
        let svc = f.spawn_serve(&log, &config, &env);
        let ended = run_cycle(&f, &store, svc, &log, kill, &mut rng).await;
        let took = started.elapsed();
        eprintln!(
            "cycle {i:02}: {kill:?}{} -> {ended:?} after {took:.1?}",
            if fresh.contains(&i) {
                " (new name)"
            } else {
                ""
            }
        );
        outcomes.push((kill, fresh.contains(&i), ended, took));
    }
    let cycles_took = began.elapsed();

    // Every kill happened and every crash point was really reached, for several hit
    // counts: otherwise this test would not test what it says.
    assert!(outcomes.len() >= 20);
    for point in POINTS {
        let hits: Vec<u32> = outcomes
            .iter()
            .filter_map(|(k, _, e, _)| match k {
                Kill::At(p, n) if p == point && *e == Ended::CrashPoint => Some(*n),
                _ => None,
            })
            .collect();
        assert!(
            hits.len() >= 2,
            "crash point {point} was reached in {} cycles only ({hits:?})\n{}",
            hits.len(),
            f.logs()
        );
    }
    let crash_hits = outcomes.iter().filter(|o| o.2 == Ended::CrashPoint).count();
    // A crash between the provider call and its record leaves at least one instance
    // the store does not know of: the restart adopts it into its intent row (found by
    // the worker tag), it does not leave it to the orphan sweep.
    let unrecorded = outcomes
        .iter()
        .filter(|o| {
            matches!(o.0, Kill::At("launch:provider-returned", _)) && o.2 == Ended::CrashPoint
        })
        .count();

    // A clean run converges: the registration timeout goes up so the fleet stays put
    // while it is checked.
    set_registration(&store, 600).await;
    push(&store, 6).await;
    let svc = f.serve_with("final", &same, &[]);
    // Converged: rows and instances match one to one, and stay so for two more ticks
    // (a consistent state can be a passing one, e.g. a worker retired by the last
    // crash cycle's short registration timeout just before its replacement launches).
    let deadline = Instant::now() + Duration::from_secs(60);
    let alive = loop {
        let alive = converge(&f, &store, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        match settled(&f, &store).await {
            Ok(again) if again == alive => break alive,
            other if Instant::now() > deadline => panic!(
                "the converged state ({alive} instances) did not hold: {other:?}\n{}",
                f.logs()
            ),
            _ => {}
        }
    };
    assert!(
        (6..=MAX as usize).contains(&alive),
        "{alive} instances for 6 pending"
    );
    launched_once(&f, &store).await;
    let adopted = count_in_logs(
        f.dir.path(),
        "adopted an instance whose launch was not recorded",
    );
    assert!(
        adopted >= unrecorded,
        "{unrecorded} crashes between a launch and its record, {adopted} adoptions\n{}",
        f.logs()
    );

    // No demand, the registration timeout back: everything goes, nothing is left.
    set_registration(&store, REGISTRATION_S).await;
    push(&store, 0).await;
    f.wait_for(
        "nothing alive in the emulator and no live row",
        Duration::from_secs(40),
        || async {
            let alive = f.alive_anywhere().await;
            let live = store.list_workers(&pool_id(), false).await.unwrap();
            (alive.is_empty() && live.is_empty()).then_some(())
        },
    )
    .await;
    // Past another orphan grace and sweep: nothing shows up late.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        f.alive_anywhere().await.is_empty(),
        "{:?}",
        f.alive_anywhere().await
    );
    let launched = launched_once(&f, &store).await;
    drop(svc);

    let rows = store.list_workers(&pool_id(), true).await.unwrap();
    let never_launched = rows.iter().filter(|w| w.instance_id.is_none()).count();
    let given_up = rows
        .iter()
        .filter(|w| {
            w.failure
                .as_deref()
                .is_some_and(|m| m.starts_with("launch not confirmed"))
        })
        .count();
    eprintln!(
        "{test}: {} cycles ({crash_hits} at their crash point, {} killed by the test) in {cycles_took:.0?}; \
         {launched} instances launched for {} worker rows ({never_launched} intents never launched); \
         {} adoptions of unrecorded launches, {} intents given up, {} orphans swept; total {:.0?}",
        outcomes.len(),
        outcomes.len() - crash_hits,
        rows.len(),
        adopted,
        given_up,
        swept_orphans(f.dir.path()).len(),
        began.elapsed(),
    );
}
