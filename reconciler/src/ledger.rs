//! The providers' [`LaunchLedger`] over the store's `launch_ledger` table, so "which
//! idempotency token created which instance" survives restarts and is shared by every
//! replica.

use async_trait::async_trait;
use capstan_core::{ProviderKind, Timestamp, WorkerId};
use providers::{LaunchLedger, LedgerEntry, LedgerError};
use store::{LedgerRow, Store};

/// A [`LaunchLedger`] backed by the store.
#[derive(Debug, Clone)]
pub struct StoreLedger {
    store: Store,
    clock: fn() -> Timestamp,
}

impl StoreLedger {
    /// A ledger on `store`, stamping records with `clock`.
    pub fn new(store: Store, clock: fn() -> Timestamp) -> Self {
        Self { store, clock }
    }
}

#[async_trait]
impl LaunchLedger for StoreLedger {
    async fn lookup(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<Option<LedgerEntry>, LedgerError> {
        let row = self
            .store
            .ledger_lookup(provider.as_str(), token)
            .await
            .map_err(|e| LedgerError(e.to_string()))?;
        Ok(row.map(|r| LedgerEntry {
            provider,
            instance_id: r.instance_id,
            worker_id: WorkerId::from_string(r.worker_id),
        }))
    }

    async fn record(&self, token: &str, entry: LedgerEntry) -> Result<(), LedgerError> {
        let row = LedgerRow {
            provider: entry.provider.as_str().to_owned(),
            instance_id: entry.instance_id,
            worker_id: entry.worker_id.as_str().to_owned(),
        };
        self.store
            .ledger_record(token, &row, (self.clock)())
            .await
            .map_err(|e| LedgerError(e.to_string()))
    }
}
