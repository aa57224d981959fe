//! Service configuration: built-in defaults, then the config file, then environment
//! variables, then command-line flags — each later source overriding the earlier.
//!
//! clap reads each flag or its environment variable (`CAPSTAN_LISTEN`, ...), so a value
//! from either beats the file. The file is TOML; unknown keys are errors that name the
//! key, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Default address: loopback only, so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store: an SQLite file in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://capstan.db";
/// Default queue-sample retention: five weeks, enough for weekly seasonality plus a
/// what-if replay of the last month.
pub const DEFAULT_QUEUE_SAMPLE_RETENTION_DAYS: u32 = 35;
/// Default retention of hourly history rollups: a year and a month, so last year's
/// same week is still there.
pub const DEFAULT_ROLLUP_HISTORY_DAYS: u32 = 400;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The contents of `capstan.toml`. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address the API listens on.
    pub listen: Option<String>,
    /// The API's address as machines reach it, written into their user-data for
    /// `capstan agent` (default: `http://<listen>` unless listen is 0.0.0.0 or [::]).
    pub public_url: Option<String>,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: Option<String>,
    /// Days raw queue samples and task runs are kept (default 35: what a what-if
    /// replays exactly); older ones live on as hourly rollups.
    pub raw_history_days: Option<u32>,
    /// The older name of `raw_history_days`, still read.
    pub queue_sample_retention_days: Option<u32>,
    /// Days hourly rollups of queue samples and task runs are kept (default 400).
    pub rollup_history_days: Option<u32>,
    /// Logging settings.
    #[serde(default)]
    pub log: FileLogConfig,
    /// Seconds between reconcile ticks (default 30).
    pub reconcile_interval_s: Option<u64>,
    /// Seconds a reconcile lease lasts unless renewed (default 90): a dead replica's
    /// pools move to another within this.
    pub lease_ttl_s: Option<u64>,
    /// Pools reconciled at the same time, at most (default 16).
    pub reconcile_concurrency: Option<usize>,
    /// Limit on each provider call, in seconds (default 30).
    pub provider_call_timeout_s: Option<u64>,
    /// Seconds an offering is skipped after a capacity or quota error (default 180).
    pub offering_unavailable_ttl_s: Option<u64>,
    /// Seconds a launch may take to show up in the provider's list (default 180).
    pub launch_grace_s: Option<u64>,
    /// Launch-to-ready time assumed before one is measured, in seconds (default 120).
    pub boot_estimate_s: Option<f64>,
    /// Cron schedule (six fields, with seconds) of the orphan sweep (default every
    /// minute: `0 * * * * *`).
    pub orphan_sweep_cron: Option<String>,
    /// Seconds an orphan instance is seen before it is terminated (default 600).
    pub orphan_grace_s: Option<u64>,
    /// Days pool errors are kept after they were last seen (default 14).
    pub error_retention_days: Option<u32>,
    /// This replica's name in leases (default: host name, process id and a random
    /// suffix).
    pub replica_name: Option<String>,
    /// The secret of the GitHub webhooks that post `workflow_job` events to
    /// `/v1/webhooks/github` (the same string as in GitHub's webhook settings). Default:
    /// none, and that route answers 404. Never logged (its `Debug` is redacted).
    pub github_webhook_secret: Option<api::webhooks::WebhookSecret>,
    /// Provider plugins: `[providers.aws]`, `[providers.gcp]`, `[providers.fake]`.
    #[serde(default)]
    pub providers: crate::providers::ProvidersConfig,
    /// Secrets for queue sources, `[queue_credentials.<name>]`, named by a pool spec's
    /// `queue.credentials`: `client_id` + `access_token` (Taskcluster), `agent_token`
    /// (Buildkite), `token` (Prometheus bearer token, GitHub). Never logged.
    #[serde(default)]
    pub queue_credentials: reconciler::queues::QueueCredentials,
    /// Seconds a pool keeps its last known demand while its queue source fails, before
    /// falling back to its workers' busy slots (default 600).
    pub queue_stale_after_s: Option<u64>,
}

/// The `[log]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogConfig {
    /// `text` or `json`.
    pub format: Option<LogFormat>,
    /// A tracing filter such as `info` or `capstan=debug,sqlx=warn`.
    pub level: Option<String>,
}

impl FileConfig {
    /// Reads and parses a config file; errors name the file and the bad key or line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }
}

/// Opens the store at `url` (default [`DEFAULT_DATABASE_URL`]), applying migrations;
/// errors name the URL with its password redacted.
pub async fn open_store(url: Option<&str>) -> anyhow::Result<store::Store> {
    let url = url.unwrap_or(DEFAULT_DATABASE_URL);
    store::Store::connect(url)
        .await
        .with_context(|| format!("cannot open the store at {}", store::redact_url(url)))
}

/// The `--database-url` flag, shared by every command that opens the store.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArg {
    /// Store: sqlite://PATH (created if missing) or postgres://USER@HOST/DB
    /// [default: sqlite://capstan.db].
    #[arg(
        long,
        env = "CAPSTAN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
}

/// For one-shot commands: opens the store named by `db`, runs `f` on it on a small
/// runtime, closes it.
pub fn with_store<F, Fut>(db: DatabaseArg, f: F) -> anyhow::Result<()>
where
    F: FnOnce(store::Store) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let store = open_store(db.database_url.as_deref()).await?;
            let result = f(store.clone()).await;
            store.close().await;
            result
        })
}

/// The settings `serve` runs with, after every source is merged.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Store URL.
    pub database_url: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// The reconcile loop's settings.
    pub reconcile: reconciler::LoopConfig,
    /// The periodic jobs' settings.
    pub jobs: reconciler::jobs::JobsConfig,
    /// Provider plugins.
    pub providers: crate::providers::ProvidersConfig,
    /// The GitHub webhook secret, if GitHub webhooks are taken.
    pub github_webhook_secret: Option<api::webhooks::WebhookSecret>,
    /// The queue poller's settings.
    pub queues: reconciler::queues::PollerConfig,
    /// Secrets for queue sources, by entry name.
    pub queue_credentials: reconciler::queues::QueueCredentials,
}

/// Values given as flags or environment variables (`None` when neither was given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `CAPSTAN_LISTEN`.
    pub listen: Option<String>,
    /// `--database-url` / `CAPSTAN_DATABASE_URL`.
    pub database_url: Option<String>,
    /// `--log-format` / `CAPSTAN_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `--log-level` / `CAPSTAN_LOG`.
    pub log_level: Option<String>,
    /// `--dry-run` / `CAPSTAN_DRY_RUN`.
    pub dry_run: bool,
}

/// `host-pid-random`: unique per process, readable in lease tables and logs.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "capstan".to_owned());
    let mut r = [0u8; 3];
    let _ = getrandom::getrandom(&mut r);
    format!(
        "{host}-{}-{:02x}{:02x}{:02x}",
        std::process::id(),
        r[0],
        r[1],
        r[2]
    )
}

impl ServiceConfig {
    /// Merges defaults, the file (if any) and the overrides; checks every value.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> anyhow::Result<Self> {
        let listen_src = if overrides.listen.is_some() {
            "--listen / CAPSTAN_LISTEN"
        } else {
            "listen"
        };
        let listen = overrides
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "{listen_src}: expected an IP address and port such as 127.0.0.1:8080, got {listen:?}"
            )
        })?;
        let database_url = overrides
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!(
                "database_url: expected sqlite://PATH or postgres://USER@HOST/DB, got {:?}",
                store::redact_url(&database_url)
            );
        }
        let secs = |key: &str, v: Option<u64>, default: u64| -> anyhow::Result<Duration> {
            match v {
                Some(0) => bail!("{key}: must be >= 1 second, got 0"),
                Some(s) if s > 86_400 => bail!("{key}: must be at most 86400 seconds, got {s}"),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Ok(Duration::from_secs(default)),
            }
        };
        let mut reconcile = reconciler::LoopConfig::new(
            file.replica_name
                .clone()
                .unwrap_or_else(default_replica_name),
        );
        if reconcile.owner.trim().is_empty() {
            bail!("replica_name: must not be empty");
        }
        reconcile.reconcile_interval = secs("reconcile_interval_s", file.reconcile_interval_s, 30)?;
        reconcile.lease_ttl = secs("lease_ttl_s", file.lease_ttl_s, 90)?;
        if reconcile.lease_ttl < reconcile.reconcile_interval * 2 {
            bail!(
                "lease_ttl_s: must be at least twice reconcile_interval_s ({} s), got {} s",
                reconcile.reconcile_interval.as_secs(),
                reconcile.lease_ttl.as_secs()
            );
        }
        reconcile.concurrency = match file.reconcile_concurrency {
            Some(0) => bail!("reconcile_concurrency: must be >= 1, got 0"),
            Some(n) => n,
            None => 16,
        };
        reconcile.call_timeout = secs("provider_call_timeout_s", file.provider_call_timeout_s, 30)?;
        reconcile.unavailable_ttl = secs(
            "offering_unavailable_ttl_s",
            file.offering_unavailable_ttl_s,
            180,
        )?;
        reconcile.launch_grace = secs("launch_grace_s", file.launch_grace_s, 180)?;
        if let Some(b) = file.boot_estimate_s {
            if !(0.0..=86_400.0).contains(&b) {
                bail!("boot_estimate_s: must be between 0 and 86400, got {b}");
            }
            reconcile.boot_estimate_s = b;
        }
        reconcile.dry_run = overrides.dry_run;
        reconcile.public_url = match file.public_url {
            Some(url) => {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.len() > "https://".len()
                    && !url.contains(char::is_whitespace);
                if !ok {
                    bail!(
                        "public_url: expected an http:// or https:// URL such as http://capstan.internal:8080, got {url:?}"
                    );
                }
                Some(url.trim_end_matches('/').to_owned())
            }
            None if listen.ip().is_unspecified() => None,
            None => Some(format!("http://{listen}")),
        };
        let (raw_key, raw_days) = match (file.raw_history_days, file.queue_sample_retention_days) {
            (Some(_), Some(_)) => bail!(
                "raw_history_days: also given as queue_sample_retention_days (its older name); keep one"
            ),
            (Some(d), None) => ("raw_history_days", d),
            (None, Some(d)) => ("queue_sample_retention_days", d),
            (None, None) => ("raw_history_days", DEFAULT_QUEUE_SAMPLE_RETENTION_DAYS),
        };
        let max_days = store::history::MAX_ROLLUP_HISTORY_DAYS;
        let rollup_days = file
            .rollup_history_days
            .unwrap_or(DEFAULT_ROLLUP_HISTORY_DAYS);
        if raw_days == 0 {
            bail!("{raw_key}: must be >= 1 day, got 0");
        }
        if !(raw_days..=max_days).contains(&rollup_days) {
            bail!(
                "rollup_history_days: must be between {raw_key} ({raw_days}) and {max_days} days, got {rollup_days}"
            );
        }
        let mut jobs = reconciler::jobs::JobsConfig {
            raw_history_days: raw_days,
            rollup_history_days: rollup_days,
            ..Default::default()
        };
        if let Some(cron) = file.orphan_sweep_cron {
            croner::Cron::from_str(&cron).map_err(|e| {
                anyhow::anyhow!(
                    "orphan_sweep_cron: not a cron schedule with seconds ({e}), got {cron:?}"
                )
            })?;
            jobs.orphan_sweep_cron = cron;
        }
        jobs.orphan_grace = secs("orphan_grace_s", file.orphan_grace_s, 600)?;
        jobs.error_retention_days = match file.error_retention_days {
            Some(0) => bail!("error_retention_days: must be >= 1, got 0"),
            Some(d) => d,
            None => 14,
        };
        file.providers.check()?;
        let mut queues = reconciler::queues::PollerConfig::new(reconcile.owner.clone());
        queues.stale_after = secs("queue_stale_after_s", file.queue_stale_after_s, 600)?;
        for name in file.queue_credentials.0.keys() {
            capstan_core::queue_source::check_credentials_name(name)
                .map_err(|e| anyhow::anyhow!("queue_credentials.{name}: {e}"))?;
        }
        Ok(Self {
            listen,
            database_url,
            log_format: overrides
                .log_format
                .or(file.log.format)
                .unwrap_or(LogFormat::Text),
            log_level: overrides
                .log_level
                .or(file.log.level)
                .unwrap_or_else(|| "info".to_owned()),
            reconcile,
            jobs,
            providers: file.providers,
            github_webhook_secret: file.github_webhook_secret,
            queues,
            queue_credentials: file.queue_credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ndatabase_url = \"postgres://db/capstan\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let cfg = ServiceConfig::resolve(
            file,
            Overrides {
                listen: Some("127.0.0.1:7000".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(cfg.database_url, "postgres://db/capstan");
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.log_level, "info");
    }

    #[test]
    fn loop_settings_come_from_the_file_and_dry_run_from_the_flag() {
        let file: FileConfig = toml::from_str(
            "reconcile_interval_s = 5\nlease_ttl_s = 20\nreplica_name = \"r1\"\n[providers.aws]\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let cfg = ServiceConfig::resolve(
            file,
            Overrides {
                dry_run: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.reconcile.reconcile_interval, Duration::from_secs(5));
        assert_eq!(cfg.reconcile.lease_ttl, Duration::from_secs(20));
        assert_eq!(cfg.reconcile.owner, "r1");
        assert!(cfg.reconcile.dry_run);
        assert!(cfg.providers.aws.is_some());
        for (text, key) in [
            ("lease_ttl_s = 10\n", "lease_ttl_s"),
            ("reconcile_interval_s = 0\n", "reconcile_interval_s"),
            (
                "orphan_sweep_cron = \"every minute\"\n",
                "orphan_sweep_cron",
            ),
            ("[providers.gcp]\nproject = \"\"\n", "providers.gcp.project"),
            (
                "[providers.aws]\nendpoint_url = \"localhost:5000\"\n",
                "providers.aws.endpoint_url",
            ),
        ] {
            let file: FileConfig = toml::from_str(text).unwrap();
            let err = ServiceConfig::resolve(file, Overrides::default()).unwrap_err();
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
        let err = toml::from_str::<FileConfig>("[providers.azure]\n").unwrap_err();
        assert!(err.to_string().contains("azure"), "{err}");
    }

    #[test]
    fn queue_credentials_are_read_and_never_printed() {
        let file: FileConfig = toml::from_str(
            "queue_stale_after_s = 120\nreplica_name = \"r2\"\n[queue_credentials.tc]\nclient_id = \"project/ci\"\naccess_token = \"tc-secret\"\n[queue_credentials.bk]\nagent_token = \"bk-secret\"\n",
        )
        .unwrap();
        let cfg = ServiceConfig::resolve(file, Overrides::default()).unwrap();
        assert_eq!(cfg.queues.stale_after, Duration::from_secs(120));
        assert_eq!(cfg.queues.owner, "r2");
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("tc-secret") && !shown.contains("bk-secret"),
            "{shown}"
        );
        let bk = &cfg.queue_credentials.0["bk"];
        assert_eq!(bk.agent_token.as_ref().unwrap().expose(), "bk-secret");
        let err = toml::from_str::<FileConfig>("[queue_credentials.tc]\naccess_tokn = \"x\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("access_tokn"), "{err}");
        let file: FileConfig = toml::from_str("queue_stale_after_s = 0\n").unwrap();
        let err = ServiceConfig::resolve(file, Overrides::default()).unwrap_err();
        assert!(err.to_string().starts_with("queue_stale_after_s"), "{err}");
        let file: FileConfig =
            toml::from_str("[queue_credentials.\"a b\"]\ntoken = \"x\"\n").unwrap();
        let err = ServiceConfig::resolve(file, Overrides::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("queue_credentials.a b"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_loopback_and_sqlite() {
        let cfg = ServiceConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(cfg.jobs.raw_history_days, 35);
        assert_eq!(cfg.jobs.rollup_history_days, 400);
        assert_eq!(cfg.reconcile.reconcile_interval, Duration::from_secs(30));
    }

    #[test]
    fn history_retention_keys_are_checked_and_named() {
        let cfg = |text: &str| {
            ServiceConfig::resolve(toml::from_str(text).unwrap(), Overrides::default())
        };
        let ok = cfg("raw_history_days = 14\nrollup_history_days = 730\n").unwrap();
        assert_eq!(
            (ok.jobs.raw_history_days, ok.jobs.rollup_history_days),
            (14, 730)
        );
        let old_name = cfg("queue_sample_retention_days = 20\n").unwrap();
        assert_eq!(old_name.jobs.raw_history_days, 20);
        for (text, starts) in [
            ("raw_history_days = 0\n", "raw_history_days: must be >= 1"),
            (
                "queue_sample_retention_days = 0\n",
                "queue_sample_retention_days: must be >= 1",
            ),
            (
                "raw_history_days = 35\nqueue_sample_retention_days = 35\n",
                "raw_history_days: also given",
            ),
            (
                "raw_history_days = 60\nrollup_history_days = 30\n",
                "rollup_history_days: must be between raw_history_days (60)",
            ),
            (
                "rollup_history_days = 5000\n",
                "rollup_history_days: must be between",
            ),
        ] {
            let err = cfg(text).unwrap_err().to_string();
            assert!(err.starts_with(starts), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = toml::from_str::<FileConfig>("listn = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `listn`"), "{err}");
        let err = toml::from_str::<FileConfig>("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
        let err = ServiceConfig::resolve(
            FileConfig {
                listen: Some("localhost".into()),
                ..FileConfig::default()
            },
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("listen: expected an IP address"),
            "{err}"
        );
        let err = ServiceConfig::resolve(
            FileConfig::default(),
            Overrides {
                database_url: Some("mysql://u:secret@h/db".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn the_github_webhook_secret_is_read_and_never_shown() {
        let file: FileConfig =
            toml::from_str("github_webhook_secret = \"gh-hook-s3cret\"\n").unwrap();
        let cfg = ServiceConfig::resolve(file, Overrides::default()).unwrap();
        assert_eq!(
            cfg.github_webhook_secret,
            api::webhooks::WebhookSecret::new("gh-hook-s3cret")
        );
        assert!(!format!("{cfg:?}").contains("gh-hook-s3cret"));
        let err = toml::from_str::<FileConfig>("github_webhook_secret = \"\"\n").unwrap_err();
        assert!(err.to_string().contains("github_webhook_secret"), "{err}");
        let cfg = ServiceConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(cfg.github_webhook_secret, None);
    }
}
