//! `capstan serve`: the long-lived control plane.
//!
//! Start-up: merge configuration, set up logging, take the single-replica lock on an
//! SQLite file, open the store (applying migrations), bind the listener, build the
//! provider plugins from the config, start the reconcile loop, the queue poller (for
//! pools with a `queue:` source) and the periodic jobs, then report ready. Shutdown on
//! SIGINT or SIGTERM: report not-ready, stop accepting connections, let in-flight
//! requests, reconcile rounds and queue polls finish, release the leases (another
//! replica takes the pools at once), stop the jobs, close the store, exit 0.
//!
//! `capstan demo` runs this same service in its own process through [`serve_with`]:
//! [`Hooks`] hand it the fake cloud to use, tell it the bound address once ready, and
//! replace the signals with the demo's own shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use providers::fake::FakeProvider;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::clock::wall_clock;
use crate::config::{DatabaseArg, FileConfig, LogFormat, Overrides, ServiceConfig, open_store};

/// Flags of `capstan serve`; each may also come from its environment variable, and
/// either beats the config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (keys: listen, database_url, [log] format and level).
    #[arg(long, env = "CAPSTAN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CAPSTAN_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    #[command(flatten)]
    db: DatabaseArg,
    /// Log line format [default: text].
    #[arg(long, env = "CAPSTAN_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `capstan=debug,sqlx=warn` [default: info].
    #[arg(long, env = "CAPSTAN_LOG", value_name = "FILTER")]
    log_level: Option<String>,
    /// Plan and record every pool, launch and terminate nothing.
    #[arg(long, env = "CAPSTAN_DRY_RUN")]
    dry_run: bool,
}

/// Runs the service until a shutdown signal.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = ServiceConfig::resolve(
        file,
        Overrides {
            listen: args.listen,
            database_url: args.db.database_url,
            log_format: args.log_format,
            log_level: args.log_level,
            dry_run: args.dry_run,
        },
    )?;
    init_logging(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// Sets up the `tracing` subscriber from the config's log format and filter.
pub fn init_logging(config: &ServiceConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log level: not a valid filter: {:?}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// What a command embedding the service (`capstan demo`) hands it and hears back.
#[derive(Default)]
pub struct Hooks {
    /// The `fake` provider to use, so the caller can watch and steer the fake cloud
    /// (default: a new one from `[providers.fake]`).
    pub fake: Option<Arc<FakeProvider>>,
    /// Told the bound address once the service takes traffic.
    pub ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    /// Resolves when the service should shut down, in place of SIGINT/SIGTERM.
    pub shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("fake", &self.fake.is_some())
            .field("ready", &self.ready.is_some())
            .field("shutdown", &self.shutdown.is_some())
            .finish()
    }
}

async fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    serve_with(config, Hooks::default()).await
}

/// Runs the service with `hooks` until their shutdown (or, without one, a signal):
/// the whole of `capstan serve` after the configuration is merged.
pub async fn serve_with(mut config: ServiceConfig, hooks: Hooks) -> anyhow::Result<()> {
    let db = store::redact_url(&config.database_url);
    // SQLite serves one replica: a second `serve` on the same file says so and exits.
    let _single = single_replica_lock(&config.database_url)?;
    let store = open_store(Some(&config.database_url)).await?;
    tracing::info!(database = %db, backend = ?store.kind(), "store open, migrations applied");
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("listener has no address")?;
    // A public URL derived from `--listen ...:0` names port 0: name the port bound.
    if config.listen.port() == 0
        && config.reconcile.public_url.as_deref() == Some(&format!("http://{}", config.listen))
    {
        config.reconcile.public_url = Some(format!("http://{local}"));
    }

    let providers = config.providers.build(&store, hooks.fake).await?;
    let metrics = reconciler::Metrics::new();
    let (service, waker) = reconciler::Service::new(
        store.clone(),
        providers.clone(),
        config.reconcile.clone(),
        metrics.clone(),
        wall_clock,
    );
    let poll_waker = waker.clone();
    let poller = reconciler::queues::QueuePoller::new(
        store.clone(),
        config.queue_credentials.clone(),
        config.queues.clone(),
        wall_clock,
        Arc::new(move |pool: &capstan_core::PoolId| poll_waker.wake(pool)),
    )
    .context("cannot start the queue poller")?;
    let mut jobs = reconciler::jobs::start(
        store.clone(),
        providers,
        metrics.clone(),
        config.jobs.clone(),
        wall_clock,
    )
    .await
    .context("cannot start the periodic jobs")?;

    let readiness = api::Readiness::default();
    let app = api::app(
        api::AppState::new(
            store.clone(),
            readiness.clone(),
            api::Clock::new(wall_clock),
        )
        .with_wake(api::Wake::new(move |pool| waker.wake(pool)))
        .with_metrics(api::MetricsSource::new(move || metrics.render()))
        .with_github_webhook_secret(config.github_webhook_secret.clone())
        .with_dry_run(config.reconcile.dry_run),
    );
    // Signals are caught from here on: a client that saw the service ready may stop it.
    let shutdown = hooks
        .shutdown
        .unwrap_or_else(|| Box::pin(shutdown_signal()));
    readiness.set(true);
    tracing::info!(listen = %local, "capstan serving");
    if let Some(ready) = hooks.ready {
        // The caller may have given up waiting; serving goes on regardless.
        let _ = ready.send(local);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_loop = stop_rx.clone();
    let control_loop = tokio::spawn(service.run(async move {
        let _ = stop_loop.wait_for(|s| *s).await;
    }));
    let mut stop_poller = stop_rx.clone();
    let queue_poller = tokio::spawn(poller.run(async move {
        let _ = stop_poller.wait_for(|s| *s).await;
    }));
    let draining = readiness.clone();
    let mut stop_http = stop_rx;
    let server = axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_http.wait_for(|s| *s).await;
    });
    let signal = async move {
        shutdown.await;
        draining.set(false);
        tracing::info!("shutdown requested; finishing in-flight requests and rounds");
        let _ = stop_tx.send(true);
    };
    let (served, ()) = tokio::join!(server, signal);
    served.context("server failed")?;
    if let Err(e) = control_loop.await {
        tracing::warn!(error = %e, "reconcile loop ended abnormally");
    }
    if let Err(e) = queue_poller.await {
        tracing::warn!(error = %e, "queue poller ended abnormally");
    }
    if let Err(e) = jobs.shutdown().await {
        tracing::warn!(error = %e, "periodic jobs did not stop cleanly");
    }
    store.close().await;
    tracing::info!("store closed; bye");
    Ok(())
}

/// For an SQLite file, an exclusive lock on `<file>.serve.lock`, held while the
/// process lives (the OS drops it when the process dies, even by SIGKILL).
fn single_replica_lock(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    if rest.contains(":memory:") || rest.contains("mode=memory") {
        return Ok(None);
    }
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    let lock_path = format!("{path}.serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the replica lock {lock_path}"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `capstan serve` already runs on the SQLite database {path} (lock {lock_path} is held); \
             SQLite serves one replica: use PostgreSQL to run several"
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {lock_path}"))
        }
    }
}

/// Listens for SIGINT (Ctrl-C) and SIGTERM from the moment it is called and resolves
/// on the first. The handlers are installed here, not when the future is first polled:
/// a signal that came between "serving" and that poll would otherwise meet the default
/// action and kill the process instead of stopping it cleanly.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, signal = name, "cannot listen for the signal");
                None
            }
        };
        let interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            let recv = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_signal_before_the_first_poll_stops_rather_than_kills() {
        // The handlers are in place when `shutdown_signal` returns: a SIGTERM sent
        // before its future is polled resolves it (with handlers installed only at the
        // first poll, the default action would end this test process).
        let signalled = shutdown_signal();
        let sent = std::process::Command::new("kill")
            .args(["-s", "TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), signalled)
            .await
            .expect("the signal was caught");
    }
}
