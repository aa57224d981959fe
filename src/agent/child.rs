//! [`Supervisor`]: runs the real worker (`capstan agent -- generic-worker run …`) as a
//! child process, restarts it when it exits on its own, and stops it on a drain.
//!
//! The child runs in its own process group with `CAPSTAN_WORKER_ID` and
//! `CAPSTAN_POOL_ID` added to its environment; its stdout and stderr are the agent's.
//! Stopping it is SIGTERM to the child alone (the worker decides how to wind down its
//! own processes), then, if it is still there when the grace period ends, SIGKILL to
//! its whole process group so nothing it started outlives it.
//!
//! A child that exits while the agent is neither draining nor stopping is started
//! again after a backoff (1 s doubling to 30 s, back to 1 s after a run of a minute or
//! more), unless the agent runs with `--once`.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};

use super::backoff::Backoff;

/// A run this long counts as healthy: the restart backoff starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: Vec<(String, String)>,
}

/// One run of the child that ended.
#[derive(Debug)]
pub struct RunEnded {
    /// How long it ran.
    pub ran_for: Duration,
    /// Its exit status (`None` if it could not be waited on).
    pub status: Option<ExitStatus>,
    /// Whether the agent had to SIGKILL it.
    pub killed: bool,
}

#[derive(Debug)]
struct Run {
    child: Child,
    pid: Option<Pid>,
    started: Instant,
    /// Set once SIGTERM went out: when SIGKILL follows.
    kill_at: Option<Instant>,
    killed: bool,
}

#[derive(Debug)]
enum State {
    /// A child is running (boxed: a `Child` is large and there is at most one).
    Running(Box<Run>),
    /// The child exited; the next one starts at this instant.
    Restarting(Instant),
    /// No child, none to come (no command, `--once`, drained or stopped).
    Idle,
}

/// Runs and watches the worker process.
#[derive(Debug)]
pub struct Supervisor {
    spec: Option<ChildSpec>,
    once: bool,
    /// Draining or stopping: a child that ends is not replaced.
    winding_down: bool,
    state: State,
    backoff: Backoff,
}

impl Supervisor {
    /// A supervisor for `spec` (`None`: the agent runs no child). Starts the child.
    pub fn start(spec: Option<ChildSpec>, once: bool) -> Self {
        let mut supervisor = Self {
            spec,
            once,
            winding_down: false,
            state: State::Idle,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        };
        supervisor.spawn();
        supervisor
    }

    /// Whether the agent was given a command to run.
    pub fn has_command(&self) -> bool {
        self.spec.is_some()
    }

    /// Whether a child process is running (stopping counts: it is still there).
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// Stops taking work: SIGTERM to the child now, SIGKILL after `grace`; no
    /// restarts from now on. Calling it again keeps the first deadline.
    pub fn wind_down(&mut self, grace: Duration) {
        self.winding_down = true;
        match &mut self.state {
            State::Running(run) => {
                if run.kill_at.is_none() {
                    tracing::info!(
                        grace_s = grace.as_secs_f64(),
                        "sending SIGTERM to the worker process"
                    );
                    if let Some(pid) = run.pid
                        && let Err(e) = kill(pid, Signal::SIGTERM)
                    {
                        tracing::warn!(error = %e, "cannot send SIGTERM to the worker process");
                    }
                    run.kill_at = Some(Instant::now() + grace);
                }
            }
            State::Restarting(_) => self.state = State::Idle,
            State::Idle => {}
        }
    }

    /// Waits until the current run ends (sending SIGKILL when its grace is over, and
    /// starting the next run when its backoff is over). Never returns while there is
    /// no child and none to come. Cancel-safe: state changes happen between awaits.
    pub async fn run_ended(&mut self) -> RunEnded {
        loop {
            match &mut self.state {
                State::Idle => std::future::pending::<()>().await,
                State::Restarting(at) => {
                    sleep_until(*at).await;
                    self.spawn();
                }
                State::Running(run) => {
                    let status = match run.kill_at {
                        Some(deadline) if !run.killed => {
                            tokio::select! {
                                status = run.child.wait() => status,
                                () = sleep_until(deadline) => {
                                    tracing::warn!("the worker process outlived its grace period; sending SIGKILL to its process group");
                                    kill_group(run);
                                    continue;
                                }
                            }
                        }
                        _ => run.child.wait().await,
                    };
                    let ended = RunEnded {
                        ran_for: run.started.elapsed(),
                        status: status.ok(),
                        killed: run.killed,
                    };
                    self.after_run(&ended);
                    return ended;
                }
            }
        }
    }

    /// Winds down and waits until no child runs.
    pub async fn stop(&mut self, grace: Duration) -> Option<RunEnded> {
        self.wind_down(grace);
        if self.is_running() {
            Some(self.run_ended().await)
        } else {
            self.state = State::Idle;
            None
        }
    }

    fn after_run(&mut self, ended: &RunEnded) {
        let status = ended
            .status
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        if self.winding_down || self.once {
            tracing::info!(%status, ran_s = ended.ran_for.as_secs_f64(), "the worker process exited");
            self.state = State::Idle;
            return;
        }
        if ended.ran_for >= HEALTHY_RUN {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        tracing::warn!(
            %status,
            ran_s = ended.ran_for.as_secs_f64(),
            restart_in_s = delay.as_secs_f64(),
            "the worker process exited on its own; restarting it"
        );
        self.state = State::Restarting(Instant::now() + delay);
    }

    /// Starts the child, or schedules another try if it cannot be started.
    fn spawn(&mut self) {
        let Some(spec) = &self.spec else {
            self.state = State::Idle;
            return;
        };
        let Some((program, args)) = spec.argv.split_first() else {
            self.state = State::Idle;
            return;
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .kill_on_drop(true);
        match command.spawn() {
            Ok(child) => {
                let pid = child
                    .id()
                    .and_then(|id| i32::try_from(id).ok())
                    .map(Pid::from_raw);
                tracing::info!(program = %program, pid = ?child.id(), "worker process started");
                self.state = State::Running(Box::new(Run {
                    child,
                    pid,
                    started: Instant::now(),
                    kill_at: None,
                    killed: false,
                }));
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tracing::error!(
                    program = %program,
                    error = %e,
                    retry_in_s = delay.as_secs_f64(),
                    "cannot start the worker process"
                );
                self.state = State::Restarting(Instant::now() + delay);
            }
        }
    }
}

fn kill_group(run: &mut Run) {
    run.killed = true;
    let sent = run.pid.map(|pid| killpg(pid, Signal::SIGKILL));
    if !matches!(sent, Some(Ok(()))) {
        // The group is gone or unknown: make sure of the child itself.
        if let Err(e) = run.child.start_kill() {
            tracing::warn!(error = %e, "cannot SIGKILL the worker process");
        }
    }
}
