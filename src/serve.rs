//! `capstan serve`: the long-lived control plane.
//!
//! Start-up: merge configuration, set up logging, open the store (applying
//! migrations), bind the listener, then report ready. Shutdown on SIGINT or SIGTERM:
//! report not-ready, stop accepting connections, let in-flight requests finish, close
//! the store, exit 0.

use std::path::PathBuf;

use anyhow::Context;
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
        },
    )?;
    init_logging(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

fn init_logging(config: &ServiceConfig) -> anyhow::Result<()> {
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

async fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    let db = store::redact_url(&config.database_url);
    let store = open_store(Some(&config.database_url)).await?;
    tracing::info!(database = %db, backend = ?store.kind(), "store open, migrations applied");

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("listener has no address")?;

    let readiness = api::Readiness::default();
    let app = api::app(api::AppState::new(
        store.clone(),
        readiness.clone(),
        api::Clock::new(wall_clock),
    ));
    readiness.set(true);
    tracing::info!(listen = %local, "capstan serving");

    let retention = tokio::spawn(prune_queue_samples_hourly(
        store.clone(),
        config.queue_sample_retention_days,
    ));

    let draining = readiness.clone();
    axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        draining.set(false);
        tracing::info!("shutdown requested; finishing in-flight requests");
    })
    .await
    .context("server failed")?;

    retention.abort();
    store.close().await;
    tracing::info!("store closed; bye");
    Ok(())
}

/// Retention: at start-up and then hourly, deletes queue samples older than
/// `days`. A failed round is logged and retried at the next hour.
async fn prune_queue_samples_hourly(store: store::Store, days: u32) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    every_hour.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every_hour.tick().await;
        let cutoff = wall_clock().plus_secs(-i64::from(days) * 86_400);
        match store.prune_queue_samples(cutoff).await {
            Ok(n) => tracing::info!(deleted = n, %cutoff, "queue-sample retention"),
            Err(e) => tracing::warn!(error = %e, "queue-sample retention failed"),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
