//! Crash points: named places in the launch and terminate paths where a test can make
//! the process die as abruptly as `SIGKILL` would.
//!
//! `CAPSTAN_CRASH_AT=name@n` kills the process (SIGKILL, sent to itself) the `n`-th
//! time it reaches crash point `name` (counted from 1); without the variable a crash
//! point costs one atomic load. This is how the crash-safety test stops the service
//! between an intent and its provider call, between the provider call and its record,
//! and so on, deterministically, and then checks that a restart leaks nothing and
//! launches nothing twice.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The crash points, in the order a launch meets them.
pub const POINTS: &[&str] = &[
    "launch:intent-recorded",
    "launch:provider-returned",
    "launch:first-recorded",
    "terminate:marked",
    "terminate:provider-returned",
];

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("CAPSTAN_CRASH_AT").ok()?;
            let (name, at) = v.split_once('@')?;
            Some(Armed {
                name: name.to_owned(),
                at: at.parse().ok()?,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Crash point `name`: dies here if `CAPSTAN_CRASH_AT` says so.
pub fn point(name: &str) {
    let Some(a) = armed() else { return };
    if a.name != name {
        return;
    }
    if a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.at {
        eprintln!("crash point {name}: killing the process (CAPSTAN_CRASH_AT)");
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        std::process::abort();
    }
}
