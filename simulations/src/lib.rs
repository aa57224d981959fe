//! Trace replay for capstan: judge a scaling policy against history and against the
//! best any policy could do.
//!
//! Data flows in one direction:
//!
//! ```text
//! trace (SWF/CSV file)  ─┐
//!                        ├─► Trace { tasks } ─► engine::simulate ─► Report
//! workload (generated)  ─┘          │            (the real reconciler::PoolController)
//!                                   └─► oracle ─► the lower bound in the Report
//! ```
//!
//! - [`trace`]: readers for the Standard Workload Format and `submit_s,run_s` CSV,
//!   plain or gzip.
//! - [`workload`]: seeded generated workloads with daily and weekly cycles and bursts.
//! - [`suite`]: the workload suite, shapes (pool sizes, run-time mixes, bursts,
//!   cycles, a step, a quiet month) times settings (slots, boot, spot), as data.
//! - [`frontier`]: a trace replayed over a grid of policy settings in parallel, the
//!   cost-wait frontier, what a wait target costs, and its SVG (`capstan simulate --sweep`).
//! - [`oracle`]: the least instance-time any policy could spend with zero wait.
//! - [`rng`]: the platform-independent random generator every draw comes from.
//! - [`history_replay`]: a pool's recorded queue samples and task runs as a trace, for
//!   what-ifs on the pool's own history.
//! - [`plot`]: the charts of runs (one panel per run, its busiest day, cost and wait
//!   over time) as SVG, and the standalone `--plot` file.
//! - [`report`]: one self-contained HTML page comparing runs, with a table and those
//!   charts (`capstan simulate --report` and the what-if write it).
pub mod cloud;
pub mod engine;
pub mod frontier;
pub mod history_replay;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod rng;
pub mod suite;
pub mod trace;
pub mod workload;
