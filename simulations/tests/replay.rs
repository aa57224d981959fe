//! Integration tests of the simulations crate against the real SDSC Blue Horizon trace
//! and generated workloads.
//!
//! The trace is found through `CAPSTAN_TRACE`, else at
//! `../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz` relative to the workspace root.
//! Tests that need it print why they skip when it is absent, and fail instead under
//! `CI=true`.

use std::path::PathBuf;
use std::sync::OnceLock;

use simulations::oracle::oracle_instance_seconds;
use simulations::trace::{ReadOptions, Trace, read_trace};

fn trace_path() -> Option<PathBuf> {
    let path = match std::env::var_os("CAPSTAN_TRACE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz"),
    };
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the real trace is required under CI=true but {} does not exist (set CAPSTAN_TRACE)",
        path.display()
    );
    eprintln!(
        "skipping: real trace not found at {} (set CAPSTAN_TRACE)",
        path.display()
    );
    None
}

fn real_trace() -> Option<&'static Trace> {
    static TRACE: OnceLock<Option<Trace>> = OnceLock::new();
    TRACE
        .get_or_init(|| {
            trace_path().map(|p| read_trace(&p, ReadOptions::default()).expect("real trace reads"))
        })
        .as_ref()
}

#[test]
fn real_trace_reads_every_job() {
    let Some(trace) = real_trace() else { return };
    // 243,306 jobs; 10,744 have no run time and some have a run time of 0.
    assert_eq!(trace.tasks.len() as u64 + trace.skipped, 243_306);
    assert_eq!(trace.bad_lines, 0);
    assert!(trace.tasks.len() > 230_000, "{}", trace.tasks.len());
    assert_eq!(trace.origin.unix_ms(), 956_700_003_000);
}

#[test]
fn oracle_on_the_real_trace_is_about_279760_instance_hours() {
    let Some(trace) = real_trace() else { return };
    let hours = oracle_instance_seconds(&trace.tasks, 1, 120.0) / 3600.0;
    eprintln!(
        "oracle: {hours:.1} instance-hours, {} tasks, {} skipped",
        trace.tasks.len(),
        trace.skipped
    );
    assert!(
        (hours - 279_760.0).abs() / 279_760.0 < 0.001,
        "oracle {hours} instance-hours"
    );
}
