//! Service configuration: built-in defaults, then the config file, then environment
//! variables, then command-line flags — each later source overriding the earlier.
//!
//! clap reads each flag or its environment variable (`CAPSTAN_LISTEN`, ...), so a value
//! from either beats the file. The file is TOML; unknown keys are errors that name the
//! key, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Default address: loopback only, so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store: an SQLite file in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://capstan.db";
/// Default queue-sample retention: five weeks, enough for weekly seasonality plus a
/// what-if replay of the last month.
pub const DEFAULT_QUEUE_SAMPLE_RETENTION_DAYS: u32 = 35;

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
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: Option<String>,
    /// Days of queue samples kept for forecasting and what-if simulations.
    pub queue_sample_retention_days: Option<u32>,
    /// Logging settings.
    #[serde(default)]
    pub log: FileLogConfig,
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
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Store URL.
    pub database_url: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Queue samples older than this many days are deleted.
    pub queue_sample_retention_days: u32,
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
            queue_sample_retention_days: match file.queue_sample_retention_days {
                Some(0) => bail!("queue_sample_retention_days: must be >= 1, got 0"),
                Some(days) => days,
                None => DEFAULT_QUEUE_SAMPLE_RETENTION_DAYS,
            },
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
    fn defaults_are_loopback_and_sqlite() {
        let cfg = ServiceConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(cfg.queue_sample_retention_days, 35);
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
}
