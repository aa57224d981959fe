//! Provider plugins from configuration: the same binary talks to a real cloud, an
//! emulator, or nothing.
//!
//! ```toml
//! [providers.aws]
//! regions = ["eu-west-1"]                  # listed by the orphan sweep (launch configs' regions are added)
//! endpoint_url = "http://127.0.0.1:5000"   # optional: an emulator or VPC endpoint
//!
//! [providers.gcp]
//! project = "my-project"
//! endpoint = "http://127.0.0.1:8085"       # optional: an emulator (anonymous credentials)
//!
//! [providers.fake]
//! boot_delay_s = 30                        # the in-memory cloud, for demos and tests
//! ```
//!
//! AWS credentials come from the standard chain (environment, profile, instance role),
//! GCP's from Application Default Credentials; neither is ever read from this file.
//! `static` (operator-registered machines) and `fake` are always available; `aws` and
//! `gcp` only when configured. Every provider records its launch tokens in the store's
//! ledger, so a retried launch finds the instance an earlier attempt made, after a
//! restart and on any replica.

use std::sync::Arc;

use anyhow::{Context, bail};
use providers::Provider;
use providers::aws::AwsProvider;
use providers::clock::SystemClock;
use providers::fake::FakeProvider;
use providers::gcp::GcpProvider;
use providers::static_pool::StaticProvider;
use reconciler::Providers;
use reconciler::ledger::StoreLedger;
use serde::Deserialize;

use crate::clock::wall_clock;

/// The `[providers]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// `[providers.aws]`.
    pub aws: Option<AwsConfig>,
    /// `[providers.gcp]`.
    pub gcp: Option<GcpConfig>,
    /// `[providers.fake]`.
    pub fake: Option<FakeConfig>,
}

/// `[providers.aws]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// A region the orphan sweep lists (shorthand for `regions = [region]`).
    pub region: Option<String>,
    /// Regions the orphan sweep lists; launch configs' own regions are added.
    #[serde(default)]
    pub regions: Vec<String>,
    /// EC2 endpoint, for an emulator or a VPC endpoint.
    pub endpoint_url: Option<String>,
}

/// `[providers.gcp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// The project instances are created in.
    pub project: String,
    /// Compute Engine endpoint, for an emulator.
    pub endpoint: Option<String>,
}

/// `[providers.fake]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeConfig {
    /// Seconds from launch to running.
    pub boot_delay_s: Option<u32>,
}

fn check_url(key: &str, url: &str) -> anyhow::Result<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace);
    if !ok {
        bail!("{key}: expected an http:// or https:// URL, got {url:?}");
    }
    Ok(())
}

impl ProvidersConfig {
    /// Checks every value; errors name the key.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(aws) = &self.aws {
            for (i, r) in aws.region.iter().chain(&aws.regions).enumerate() {
                if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    bail!(
                        "providers.aws.regions[{i}]: expected a region name such as eu-west-1, got {r:?}"
                    );
                }
            }
            if let Some(url) = &aws.endpoint_url {
                check_url("providers.aws.endpoint_url", url)?;
            }
        }
        if let Some(gcp) = &self.gcp {
            if gcp.project.trim().is_empty() {
                bail!("providers.gcp.project: must not be empty");
            }
            if let Some(url) = &gcp.endpoint {
                check_url("providers.gcp.endpoint", url)?;
            }
        }
        Ok(())
    }

    /// Builds the plugins, every one recording launches in `store`'s ledger. `fake`,
    /// when given, is the `fake` provider (a caller that steers it, `capstan demo`);
    /// otherwise a new one is made from `[providers.fake]`.
    pub async fn build(
        &self,
        store: &store::Store,
        fake: Option<Arc<FakeProvider>>,
    ) -> anyhow::Result<Providers> {
        let ledger = Arc::new(StoreLedger::new(store.clone(), wall_clock));
        let mut out = Providers::new();
        out.insert(Arc::new(StaticProvider::new(
            Arc::new(api::store_inventory::StoreInventory(store.clone())),
            Arc::new(SystemClock),
        )));
        let fake = fake.unwrap_or_else(|| {
            let fake = FakeProvider::new(Arc::new(SystemClock));
            if let Some(delay) = self.fake.as_ref().and_then(|f| f.boot_delay_s) {
                fake.set_boot_delay_secs(i64::from(delay));
            }
            Arc::new(fake)
        });
        out.insert(fake);
        if let Some(aws) = &self.aws {
            let regions: Vec<String> = aws.region.iter().chain(&aws.regions).cloned().collect();
            let p = AwsProvider::from_environment_at(
                regions,
                aws.endpoint_url.as_deref(),
                ledger.clone(),
            )
            .await;
            tracing::info!(
                endpoint = aws.endpoint_url.as_deref().unwrap_or("default"),
                "provider aws configured"
            );
            out.insert(Arc::new(p) as Arc<dyn Provider>);
        }
        if let Some(gcp) = &self.gcp {
            let p = match &gcp.endpoint {
                Some(url) => GcpProvider::for_endpoint(url, &gcp.project, ledger.clone()).await,
                None => GcpProvider::new(&gcp.project, ledger.clone()).await,
            }
            .context("providers.gcp")?;
            tracing::info!(project = %gcp.project, endpoint = gcp.endpoint.as_deref().unwrap_or("default"), "provider gcp configured");
            out.insert(Arc::new(p) as Arc<dyn Provider>);
        }
        Ok(out)
    }
}
