//! capstan's own record of which idempotency token created which instance.
//!
//! Clouds promise idempotent creates (EC2 `ClientToken`, GCE `requestId`), but only for
//! a while, and emulators such as moto ignore the token altogether. So the cloud
//! providers keep their own record: before a create they look the token up in a
//! [`LaunchLedger`] and return the recorded instance if there is one; after a create
//! they record it (the launch sequence they share, in [`crate::launch`]). Between a
//! create and its record a crash can lose the record; for that case the providers also
//! look for an instance made for the worker before creating one (by worker tag in
//! [`crate::aws`], by the name derived from the worker id in [`crate::gcp`]).
//!
//! The store implements this trait for production (one table keyed by token);
//! [`InMemoryLedger`] serves tests and single-process use (the fake and static pools
//! keep tokens themselves and need no ledger).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use capstan_core::{ProviderKind, WorkerId};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, ProviderError};
use crate::launch::InstanceRequest;

/// One recorded create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The provider that created it.
    pub provider: ProviderKind,
    /// The provider's instance id.
    pub instance_id: String,
    /// The worker it was created for.
    pub worker_id: WorkerId,
}

/// The ledger could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("launch ledger: {0}")]
pub struct LedgerError(pub String);

/// Token → instance record; see the module docs.
#[async_trait]
pub trait LaunchLedger: Send + Sync + fmt::Debug {
    /// The instance recorded for `token` by `provider`, if any.
    async fn lookup(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<Option<LedgerEntry>, LedgerError>;

    /// Records that `token` created `entry`. Recording the same token twice keeps the
    /// first entry (a token creates one instance, ever) and is not an error.
    async fn record(&self, token: &str, entry: LedgerEntry) -> Result<(), LedgerError>;
}

/// A [`LaunchLedger`] in memory: lost on restart, which the providers' tag lookup
/// covers.
#[derive(Debug, Default)]
pub struct InMemoryLedger {
    entries: Mutex<HashMap<(ProviderKind, String), LedgerEntry>>,
}

impl InMemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of recorded tokens.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl LaunchLedger for InMemoryLedger {
    async fn lookup(
        &self,
        provider: ProviderKind,
        token: &str,
    ) -> Result<Option<LedgerEntry>, LedgerError> {
        let m = self
            .entries
            .lock()
            .map_err(|_| LedgerError("lock poisoned".into()))?;
        Ok(m.get(&(provider, token.to_owned())).cloned())
    }

    async fn record(&self, token: &str, entry: LedgerEntry) -> Result<(), LedgerError> {
        let mut m = self
            .entries
            .lock()
            .map_err(|_| LedgerError("lock poisoned".into()))?;
        m.entry((entry.provider, token.to_owned())).or_insert(entry);
        Ok(())
    }
}

/// The recorded entries of `instances`' tokens, by token; a ledger that cannot be
/// read fails the whole launch before anything is created.
pub(crate) async fn lookup_all(
    ledger: &dyn LaunchLedger,
    provider: ProviderKind,
    instances: &[InstanceRequest],
) -> Result<HashMap<String, LedgerEntry>, ProviderError> {
    let mut found = HashMap::new();
    for i in instances {
        let entry = ledger
            .lookup(provider, &i.idempotency_token)
            .await
            .map_err(|e| {
                ProviderError::new(ErrorKind::Transient, "capstan.LaunchLedger", e.to_string())
            })?;
        if let Some(e) = entry {
            found.insert(i.idempotency_token.clone(), e);
        }
    }
    Ok(found)
}

/// Records a create. A failure is logged, not returned: the instance exists and is
/// tagged with its worker id, which is how a later launch with the same token finds
/// it when the record is missing.
pub(crate) async fn record_after_create(
    ledger: &dyn LaunchLedger,
    token: &str,
    entry: LedgerEntry,
) {
    let instance = entry.instance_id.clone();
    if let Err(e) = ledger.record(token, entry).await {
        tracing::warn!(%instance, error = %e, "could not record the launch token; the worker tag still identifies the instance");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_record_wins() {
        let l = InMemoryLedger::new();
        let e = |id: &str| LedgerEntry {
            provider: ProviderKind::Aws,
            instance_id: id.into(),
            worker_id: WorkerId::from_string("w"),
        };
        assert_eq!(l.lookup(ProviderKind::Aws, "t").await.unwrap(), None);
        l.record("t", e("i-1")).await.unwrap();
        l.record("t", e("i-2")).await.unwrap();
        assert_eq!(
            l.lookup(ProviderKind::Aws, "t").await.unwrap(),
            Some(e("i-1"))
        );
        assert_eq!(l.lookup(ProviderKind::Gcp, "t").await.unwrap(), None);
        assert_eq!(l.len(), 1);
    }
}
