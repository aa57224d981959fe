//! The store as the providers' persistence: [`StoreInventory`] implements
//! `providers::static_pool::StaticInventory` over the `static_machines` table (the
//! store's `launch_ledger` table is there for the cloud providers' `LaunchLedger`,
//! adapted the same way once the actuator drives them).
//!
//! The adapter lives here, in the crate that knows both: the store stays free of the
//! cloud SDKs, the providers free of SQL. The API registers static machines through
//! it; the reconcile loop leases them through the same adapter.

use async_trait::async_trait;
use capstan_core::PoolId;
use providers::static_pool::{InventoryError, StaticInventory, StaticMachine};
use store::{StaticMachineRow, Store};

/// A [`StaticInventory`] that survives restarts and is shared by replicas.
#[derive(Debug, Clone)]
pub struct StoreInventory(pub Store);

fn backend(e: impl std::fmt::Display) -> InventoryError {
    InventoryError::Backend(e.to_string())
}

fn to_row(m: &StaticMachine) -> Result<StaticMachineRow, InventoryError> {
    Ok(StaticMachineRow {
        name: m.name.clone(),
        pool_id: m.pool_id.to_string(),
        revision: i64::try_from(m.revision).map_err(backend)?,
        machine: serde_json::to_string(m).map_err(backend)?,
    })
}

fn from_row(row: StaticMachineRow) -> Result<StaticMachine, InventoryError> {
    serde_json::from_str(&row.machine)
        .map_err(|e| backend(format!("static machine {:?} unreadable: {e}", row.name)))
}

#[async_trait]
impl StaticInventory for StoreInventory {
    async fn insert(&self, machine: StaticMachine) -> Result<(), InventoryError> {
        if self
            .0
            .insert_static_machine(&to_row(&machine)?)
            .await
            .map_err(backend)?
        {
            Ok(())
        } else {
            Err(InventoryError::AlreadyExists(machine.name))
        }
    }

    async fn get(&self, name: &str) -> Result<Option<StaticMachine>, InventoryError> {
        self.0
            .static_machine(name)
            .await
            .map_err(backend)?
            .map(from_row)
            .transpose()
    }

    async fn list(&self, pool: Option<&PoolId>) -> Result<Vec<StaticMachine>, InventoryError> {
        self.0
            .list_static_machines(pool)
            .await
            .map_err(backend)?
            .into_iter()
            .map(from_row)
            .collect()
    }

    async fn update(
        &self,
        machine: &StaticMachine,
        expected_revision: u64,
    ) -> Result<bool, InventoryError> {
        let expected = i64::try_from(expected_revision).map_err(backend)?;
        self.0
            .update_static_machine(&to_row(machine)?, expected)
            .await
            .map_err(backend)
    }

    async fn remove(&self, name: &str) -> Result<bool, InventoryError> {
        self.0.remove_static_machine(name).await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use capstan_core::{LaunchConfig, Market};
    use providers::Provider;
    use providers::clock::Clock;
    use providers::static_pool::StaticProvider;

    use capstan_core::Timestamp;

    use store::scratch::{with_postgres, with_sqlite};

    use super::*;

    #[derive(Debug)]
    struct FixedClock;
    impl Clock for FixedClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix_secs(1_800_000_000)
        }
    }

    store::on_both_backends!(static_machines_persist_hashed_secrets_and_leases);

    async fn static_machines_persist_hashed_secrets_and_leases(store: Store) {
        let pool = PoolId::new("lab/macs").unwrap();
        let provider = StaticProvider::new(
            Arc::new(StoreInventory(store.clone())),
            Arc::new(FixedClock),
        );
        let (_, secret) = provider
            .register_machine(pool.clone(), "mac-1", 2, BTreeMap::new())
            .await
            .unwrap();
        // Only the hash is stored.
        let row = store.static_machine("mac-1").await.unwrap().unwrap();
        assert!(
            !row.machine.contains(secret.expose()),
            "plain secret stored"
        );
        // A fresh provider over the same store (a restart) verifies the secret.
        let restarted = StaticProvider::new(
            Arc::new(StoreInventory(store.clone())),
            Arc::new(FixedClock),
        );
        assert!(
            restarted
                .verify_secret("mac-1", secret.expose())
                .await
                .unwrap()
        );
        assert!(!restarted.verify_secret("mac-1", "wrong").await.unwrap());
        let lc = LaunchConfig {
            id: "any".into(),
            region: String::new(),
            zone: None,
            instance_type: "mac".into(),
            market: Market::OnDemand,
            capacity: 2,
            priority: 0,
            max_capacity: None,
            price_per_hour: None,
            provider_config: Default::default(),
        };
        let offerings = restarted.offerings(&pool, &lc).await.unwrap();
        assert!(!offerings.is_empty());
    }
}
