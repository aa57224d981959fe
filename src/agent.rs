//! `capstan agent`: the piece an operator bakes into a worker image.
//!
//! One agent per machine. It reads its bootstrap ([`bootstrap`]: EC2 user-data through
//! IMDSv2, the GCE metadata item `capstan-user-data`, or a file on a static machine),
//! registers with capstan ([`worker_api`]), runs the real worker as a child
//! ([`child`]: `capstan agent -- generic-worker run …`) and heartbeats every
//! `heartbeat_interval_s` with its busy slots and finished task durations
//! ([`slots`]). The heartbeat's answer steers it: `continue`; `drain` (SIGTERM to the
//! child, SIGKILL after `drain_grace_s`, keep heartbeating); `terminate` (stop the
//! child, run the opt-in `--shutdown-command`, exit 0; a static machine registers
//! again and waits for its next lease instead). On a cloud machine it also watches
//! the interruption notice ([`interruption`], [`metadata`]) and reports it once, so
//! the service replaces the machine before it dies.
//!
//! Busy slots come from `--busy-file` (the worker writes its busy slot count; missing
//! or empty is 0) or, without it, "one slot while the child runs". Finished tasks:
//! with a busy file, one per freed slot, its duration the time since that slot became
//! busy (oldest first); without, one per child run that was not SIGKILLed.
//!
//! Failures: the server unreachable or answering 5xx is retried with backoff and
//! jitter (1 s doubling to 30 s, [`backoff`]); finished tasks wait until a heartbeat
//! carrying them is acknowledged. A 401 on a heartbeat means capstan revoked the
//! credential: the agent stops the child and exits non-zero with a message saying so.
//! A 422 on a heartbeat (a busy count above the worker's capacity, say) is logged as
//! an error and retried with backoff, the refused heartbeat's tasks dropped: a
//! reporting problem does not stop a working machine. A heartbeat carries at most
//! 1,000 tasks, the server's limit.
//! SIGTERM or SIGINT to the agent stops the child gracefully and exits 0.
//!
//! Secrets (registration token, machine secret, credential) live in
//! [`capstan_core::secret::Secret`] and never reach a log line.

mod backoff;
pub(crate) mod bootstrap;
mod child;
mod interruption;
pub(crate) mod metadata;
pub(crate) mod slots;
pub(crate) mod worker_api;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tracing_subscriber::EnvFilter;

use self::backoff::Backoff;
use self::bootstrap::{Bootstrap, BootstrapSource, Identity};
use self::child::{ChildSpec, Supervisor};
use self::metadata::{Cloud, Metadata, MetadataError};
use self::slots::{SlotLedger, TaskOutbox, parse_busy_count};
use self::worker_api::{Action, ApiError, Registration, WorkerApi};
use crate::clock::wall_clock;
use crate::config::LogFormat;

/// How often the busy file is read: often enough that task durations are right to a
/// fraction of a second, rarely enough to cost nothing.
const BUSY_FILE_POLL: Duration = Duration::from_millis(250);
/// The shortest heartbeat interval the agent accepts from a server.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Most finished tasks one heartbeat carries (the server's limit); after a long outage
/// the backlog goes out over several heartbeats, oldest first.
const MAX_TASKS_PER_HEARTBEAT: usize = 1000;
/// How many times a metadata read is tried at boot before giving up.
const METADATA_ATTEMPTS: u32 = 6;

/// Flags of `capstan agent`; each may also come from its environment variable.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Where the bootstrap comes from: `ec2` (user-data through IMDSv2), `gce`
    /// (metadata item `capstan-user-data`) or `file:PATH` (a static machine's TOML or
    /// JSON file with `server`, `machine` and `secret`, or saved cloud user-data).
    #[arg(long, env = "CAPSTAN_BOOTSTRAP", value_name = "SOURCE")]
    bootstrap: BootstrapSource,
    /// Base URL of the instance metadata service [default: http://169.254.169.254
    /// for ec2, http://metadata.google.internal for gce].
    #[arg(long, env = "CAPSTAN_METADATA_URL", value_name = "URL")]
    metadata_url: Option<String>,
    /// URL of the capstan server; beats `api_url` in the user-data.
    #[arg(long, env = "CAPSTAN_SERVER", value_name = "URL")]
    server: Option<String>,
    /// A file the worker keeps its busy slot count in (a whole number; missing or
    /// empty is 0). Without it, the agent counts one busy slot while the child runs.
    #[arg(long, env = "CAPSTAN_BUSY_FILE", value_name = "PATH")]
    busy_file: Option<PathBuf>,
    /// Run the child once: when it exits, do not restart it; heartbeat idle until
    /// capstan says terminate.
    #[arg(long)]
    once: bool,
    /// A command (run with `sh -c`) to run after `terminate`, e.g. `shutdown -h now`.
    /// Off by default: the agent just exits 0.
    #[arg(long, env = "CAPSTAN_SHUTDOWN_COMMAND", value_name = "CMD")]
    shutdown_command: Option<String>,
    /// How often to poll the cloud's interruption notice, in seconds.
    #[arg(
        long,
        env = "CAPSTAN_INTERRUPTION_POLL_S",
        value_name = "SECONDS",
        default_value_t = 5.0
    )]
    interruption_poll_s: f64,
    /// Log line format.
    #[arg(long, env = "CAPSTAN_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `capstan=debug`.
    #[arg(
        long,
        env = "CAPSTAN_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    log_level: String,
    /// The worker to run, after `--`: `capstan agent --bootstrap ec2 -- generic-worker
    /// run --config …`. It gets CAPSTAN_WORKER_ID and CAPSTAN_POOL_ID.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs the agent until capstan terminates the worker, a signal stops it, or the
/// credential is revoked (an error).
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format, &args.log_level)?;
    let poll = Duration::try_from_secs_f64(args.interruption_poll_s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            anyhow!(
                "--interruption-poll-s: expected a positive number of seconds, found {}",
                args.interruption_poll_s
            )
        })?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(agent(args, poll))
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("--log-level: not a valid filter: {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow!("cannot set up logging: {e}"))
}

/// How one registration's session ended.
enum Ended {
    /// capstan said `terminate`.
    Terminated,
    /// SIGTERM or SIGINT.
    Signalled,
}

async fn agent(args: AgentArgs, poll: Duration) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install()?;
    let (bootstrap, metadata) = tokio::select! {
        loaded = load_bootstrap(&args) => loaded?,
        name = signals.recv() => {
            tracing::info!(signal = name, "stopping before registration");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let server = args
        .server
        .clone()
        .or_else(|| bootstrap.server.clone())
        .ok_or_else(|| {
            anyhow!(
                "no capstan server: the bootstrap has no `api_url` (or `server`); pass \
                 --server URL or set CAPSTAN_SERVER"
            )
        })?;
    let api = WorkerApi::new(&server)?;
    let is_static = matches!(bootstrap.identity, Identity::Static { .. });
    loop {
        let registration = tokio::select! {
            registered = register(&api, &bootstrap) => registered?,
            name = signals.recv() => {
                tracing::info!(signal = name, "stopping before registration");
                return Ok(ExitCode::SUCCESS);
            }
        };
        let session = Session::new(&args, &api, registration, metadata.clone(), poll);
        match session.run(&mut signals).await? {
            Ended::Signalled => return Ok(ExitCode::SUCCESS),
            Ended::Terminated if is_static => {
                tracing::info!(
                    "capstan released this machine; registering again to wait for the next lease"
                );
            }
            Ended::Terminated => {
                if let Some(command) = &args.shutdown_command {
                    run_shutdown_command(command, &bootstrap).await?;
                }
                tracing::info!("terminated by capstan; exiting");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// Reads the bootstrap; for a cloud source, also returns its metadata client.
async fn load_bootstrap(args: &AgentArgs) -> anyhow::Result<(Bootstrap, Option<Arc<Metadata>>)> {
    let cloud = match &args.bootstrap {
        BootstrapSource::File(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("cannot read the bootstrap file {}", path.display()))?;
            let bootstrap = bootstrap::parse_file(&path.display().to_string(), &text)?;
            tracing::info!(path = %path.display(), "bootstrap read from file");
            return Ok((bootstrap, None));
        }
        BootstrapSource::Ec2 => Cloud::Ec2,
        BootstrapSource::Gce => Cloud::Gce,
    };
    let base = args
        .metadata_url
        .as_deref()
        .unwrap_or(cloud.default_base_url());
    let metadata = Metadata::new(cloud, base)?;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let mut attempt = 1;
    let text = loop {
        match metadata.user_data().await {
            Ok(text) => break text,
            Err(e) if attempt < METADATA_ATTEMPTS && metadata_error_is_transient(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_s = delay.as_secs_f64(), "cannot read the user-data yet; retrying");
                sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e).context("cannot read the bootstrap"),
        }
    };
    let bootstrap = bootstrap::parse_user_data(cloud.user_data_origin(), &text)?;
    tracing::info!(
        source = cloud.name(),
        metadata = base,
        "bootstrap read from the instance metadata"
    );
    Ok((bootstrap, Some(Arc::new(metadata))))
}

fn metadata_error_is_transient(e: &MetadataError) -> bool {
    match e {
        MetadataError::Unreachable { .. } => true,
        MetadataError::Status { status, .. } => *status >= 500,
        MetadataError::BadAnswer { .. } => false,
    }
}

/// Registers, retrying while the server is unreachable and, for a static machine,
/// while no worker wants it.
async fn register(api: &WorkerApi, bootstrap: &Bootstrap) -> anyhow::Result<Registration> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut waiting_for_lease = false;
    let mut unreachable = false;
    loop {
        match api.register(&bootstrap.identity).await {
            Ok(registration) => {
                tracing::info!(
                    worker_id = %registration.worker_id,
                    pool_id = %registration.pool_id,
                    server = api.base(),
                    heartbeat_interval_s = registration.heartbeat_interval.as_secs_f64(),
                    drain_grace_s = registration.drain_grace.as_secs_f64(),
                    "registered"
                );
                return Ok(registration);
            }
            Err(ApiError::NotLeased { retry_after }) => {
                if !waiting_for_lease {
                    tracing::info!(
                        retry_in_s = retry_after.as_secs_f64(),
                        "no worker wants this machine right now; waiting for a lease"
                    );
                    waiting_for_lease = true;
                }
                sleep(retry_after).await;
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                if !unreachable {
                    tracing::warn!(error = %e, retry_in_s = delay.as_secs_f64(), "cannot register yet; retrying with backoff");
                    unreachable = true;
                }
                sleep(delay).await;
            }
            Err(ApiError::Unauthorized { message }) => {
                let what = match bootstrap.identity {
                    Identity::Cloud { .. } => "the registration token is unknown, wrong or expired",
                    Identity::Static { .. } => "the machine name or secret is wrong",
                };
                bail!("capstan refused the registration ({what}): {message}");
            }
            Err(e) => bail!("capstan refused the registration: {e}"),
        }
    }
}

/// One registration's life: heartbeats, the child, the busy file, the interruption
/// watch.
struct Session<'a> {
    api: &'a WorkerApi,
    registration: Registration,
    busy_file: Option<PathBuf>,
    supervisor: Supervisor,
    ledger: SlotLedger,
    outbox: TaskOutbox,
    /// The watch on the interruption notice (cloud machines), until it reports.
    interruption: JoinSet<Result<Action, ApiError>>,
    draining: bool,
    /// The last heartbeat failed for lack of a server.
    disconnected: bool,
    /// The last busy-file problem logged, so each is logged once.
    busy_file_problem: Option<String>,
}

impl<'a> Session<'a> {
    fn new(
        args: &AgentArgs,
        api: &'a WorkerApi,
        registration: Registration,
        metadata: Option<Arc<Metadata>>,
        poll: Duration,
    ) -> Self {
        let spec = (!args.command.is_empty()).then(|| ChildSpec {
            argv: args.command.clone(),
            env: vec![
                (
                    "CAPSTAN_WORKER_ID".to_owned(),
                    registration.worker_id.clone(),
                ),
                ("CAPSTAN_POOL_ID".to_owned(), registration.pool_id.clone()),
            ],
        });
        let mut interruption = JoinSet::new();
        if let Some(metadata) = metadata {
            interruption.spawn(interruption::watch_and_report(
                metadata,
                api.clone(),
                registration.clone(),
                poll,
            ));
        }
        Self {
            api,
            registration,
            busy_file: args.busy_file.clone(),
            supervisor: Supervisor::start(spec, args.once),
            ledger: SlotLedger::default(),
            outbox: TaskOutbox::default(),
            interruption,
            draining: false,
            disconnected: false,
            busy_file_problem: None,
        }
    }

    async fn run(mut self, signals: &mut Signals) -> anyhow::Result<Ended> {
        let mut interval = self
            .registration
            .heartbeat_interval
            .max(MIN_HEARTBEAT_INTERVAL);
        let mut next_beat = Instant::now();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut busy_poll = tokio::time::interval(BUSY_FILE_POLL);
        busy_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = sleep_until(next_beat) => {
                    match self.heartbeat().await {
                        Ok(reply) => {
                            backoff.reset();
                            if let Some(new) = reply.heartbeat_interval {
                                interval = new.max(MIN_HEARTBEAT_INTERVAL);
                            }
                            next_beat = Instant::now() + interval;
                            if let Some(ended) = self.apply(reply.action).await {
                                return Ok(ended);
                            }
                        }
                        Err(e) if e.is_transient() => {
                            let delay = backoff.next_delay();
                            if self.disconnected {
                                tracing::debug!(error = %e, retry_in_s = delay.as_secs_f64(), "heartbeat failed again");
                            } else {
                                tracing::warn!(error = %e, retry_in_s = delay.as_secs_f64(), "lost the connection to capstan; retrying with backoff");
                                self.disconnected = true;
                            }
                            next_beat = Instant::now() + delay;
                        }
                        Err(e @ ApiError::Rejected { status: 422, .. }) => {
                            // The server could not take this heartbeat's content (a
                            // busy count above the worker's capacity, a task it cannot
                            // record). Exiting would stop a working machine over a
                            // report, so say so loudly and keep trying: the tasks of
                            // the refused heartbeat were dropped, a bad count may be
                            // fixed by the worker.
                            let delay = backoff.next_delay();
                            tracing::error!(error = %e, retry_in_s = delay.as_secs_f64(), "capstan rejected the heartbeat's content; its finished tasks are dropped");
                            next_beat = Instant::now() + delay;
                        }
                        Err(e) => return Err(self.refused(e, "heartbeat").await),
                    }
                }
                ended = self.supervisor.run_ended() => {
                    if self.busy_file.is_some() {
                        // Count what the worker reported last, then forget slots it
                        // left busy: those tasks did not finish.
                        self.read_busy_file().await;
                        self.ledger.clear();
                    } else if !ended.killed {
                        self.outbox.push(wall_clock(), ended.ran_for.as_secs_f64());
                    }
                }
                _ = busy_poll.tick(), if self.busy_file.is_some() => {
                    if !self.supervisor.has_command() || self.supervisor.is_running() {
                        self.read_busy_file().await;
                    }
                }
                Some(joined) = self.interruption.join_next(), if !self.interruption.is_empty() => {
                    match joined {
                        Ok(Ok(action)) => {
                            if let Some(ended) = self.apply(action).await {
                                return Ok(ended);
                            }
                        }
                        Ok(Err(e @ ApiError::Unauthorized { .. })) => {
                            return Err(self.refused(e, "interruption report").await);
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "capstan refused the interruption report"),
                        Err(e) => tracing::error!(error = %e, "the interruption watch failed"),
                    }
                }
                name = signals.recv() => {
                    tracing::info!(signal = name, "stopping the worker process and exiting");
                    self.supervisor.stop(self.registration.drain_grace).await;
                    return Ok(Ended::Signalled);
                }
            }
        }
    }

    /// Sends one heartbeat with the current busy slots and the unacknowledged tasks.
    async fn heartbeat(&mut self) -> Result<worker_api::HeartbeatReply, ApiError> {
        let busy = self.busy_slots();
        let sent = self.outbox.pending().len().min(MAX_TASKS_PER_HEARTBEAT);
        let result = self
            .api
            .heartbeat(&self.registration, busy, &self.outbox.pending()[..sent])
            .await;
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                if matches!(e, ApiError::Rejected { status: 422, .. }) {
                    self.outbox.acknowledge(sent);
                }
                return Err(e);
            }
        };
        self.outbox.acknowledge(sent);
        if self.disconnected {
            tracing::info!("capstan answers again; reconnected");
            self.disconnected = false;
        }
        tracing::debug!(busy_slots = busy, finished_tasks = sent, action = ?reply.action, "heartbeat");
        Ok(reply)
    }

    /// Acts on capstan's word; `Some` when the session is over.
    async fn apply(&mut self, action: Action) -> Option<Ended> {
        match action {
            Action::Continue => None,
            Action::Drain => {
                if !self.draining {
                    tracing::info!(
                        grace_s = self.registration.drain_grace.as_secs_f64(),
                        "capstan says drain: stopping the worker process, taking no more work"
                    );
                    self.draining = true;
                    self.supervisor.wind_down(self.registration.drain_grace);
                }
                None
            }
            Action::Terminate => {
                tracing::info!("capstan says terminate: stopping the worker process");
                self.supervisor.stop(self.registration.drain_grace).await;
                Some(Ended::Terminated)
            }
        }
    }

    /// A final refusal: stops the child and says why the agent gives up.
    async fn refused(&mut self, e: ApiError, what: &str) -> anyhow::Error {
        let error = match e {
            ApiError::Unauthorized { message } => {
                anyhow!("capstan revoked this worker's credential: {message}")
            }
            other => anyhow!("{what} failed: {other}"),
        };
        tracing::error!(worker_id = %self.registration.worker_id, "{error}; stopping the worker process");
        self.supervisor.stop(self.registration.drain_grace).await;
        error
    }

    fn busy_slots(&self) -> u32 {
        match &self.busy_file {
            Some(_) if self.supervisor.has_command() && !self.supervisor.is_running() => 0,
            Some(_) => self.ledger.busy(),
            None => u32::from(self.supervisor.is_running()),
        }
    }

    /// Reads the busy file into the ledger; finished slots go to the outbox.
    async fn read_busy_file(&mut self) {
        let Some(path) = &self.busy_file else {
            return;
        };
        let count = match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                parse_busy_count(&text).map_err(|e| format!("busy file {}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("cannot read the busy file {}: {e}", path.display())),
        };
        let count = match count {
            Ok(count) => {
                if self.busy_file_problem.take().is_some() {
                    tracing::info!("the busy file reads again");
                }
                count
            }
            Err(problem) => {
                if self.busy_file_problem.as_ref() != Some(&problem) {
                    tracing::warn!("{problem}; keeping the last count");
                    self.busy_file_problem = Some(problem);
                }
                return;
            }
        };
        let before = self.ledger.busy();
        let now = wall_clock();
        for duration in self.ledger.observe(count, now) {
            self.outbox.push(now, duration);
        }
        if count != before {
            tracing::debug!(from = before, to = count, "busy slots changed");
        }
    }
}

/// Runs `--shutdown-command` with `sh -c`.
async fn run_shutdown_command(command: &str, bootstrap: &Bootstrap) -> anyhow::Result<()> {
    tracing::info!(command, "running the shutdown command");
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(command);
    if let Identity::Cloud { worker_id, .. } = &bootstrap.identity {
        cmd.env("CAPSTAN_WORKER_ID", worker_id);
    }
    let status = cmd
        .status()
        .await
        .with_context(|| format!("cannot run the shutdown command {command:?}"))?;
    if !status.success() {
        bail!("the shutdown command {command:?} failed: {status}");
    }
    Ok(())
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
