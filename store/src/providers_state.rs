//! State the provider plugins persist through the store: the launch ledger (which
//! idempotency token created which instance) and the static-machine inventory.
//!
//! The store keeps these as plain rows and documents, without depending on the
//! `providers` crate (which pulls in the cloud SDKs); the binary adapts them to the
//! providers' `LaunchLedger` and `StaticInventory` traits.

use capstan_core::{PoolId, Timestamp};

use crate::{Store, StoreError, on_backend};

/// One recorded create: `token` on `provider` made `instance_id` for `worker_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Provider name (`aws`, `gcp`, ...).
    pub provider: String,
    /// The provider's instance id.
    pub instance_id: String,
    /// The worker it was created for.
    pub worker_id: String,
}

/// A stored static machine: the provider's record as JSON plus the keys the store
/// queries and compares on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMachineRow {
    /// Unique machine name.
    pub name: String,
    /// The pool it serves.
    pub pool_id: String,
    /// Compare-and-set counter.
    pub revision: i64,
    /// The provider's machine record (JSON).
    pub machine: String,
}

impl Store {
    /// The create recorded for (`provider`, `token`), if any.
    pub async fn ledger_lookup(
        &self,
        provider: &str,
        token: &str,
    ) -> Result<Option<LedgerRow>, StoreError> {
        let row: Option<(String, String)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT instance_id, worker_id FROM launch_ledger WHERE provider = $1 AND token = $2",
            )
            .bind(provider)
            .bind(token)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(instance_id, worker_id)| LedgerRow {
            provider: provider.to_owned(),
            instance_id,
            worker_id,
        }))
    }

    /// Records that `token` created `row`'s instance. A token already recorded keeps
    /// its first instance (a token creates one instance, ever); that is not an error.
    pub async fn ledger_record(
        &self,
        token: &str,
        row: &LedgerRow,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        on_backend!(self, pool => {
            sqlx::query(
                "INSERT INTO launch_ledger (provider, token, instance_id, worker_id, recorded_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, token) DO NOTHING",
            )
            .bind(&row.provider)
            .bind(token)
            .bind(&row.instance_id)
            .bind(&row.worker_id)
            .bind(now.unix_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Adds a static machine; `Ok(false)` when the name is taken (nothing changes).
    pub async fn insert_static_machine(&self, row: &StaticMachineRow) -> Result<bool, StoreError> {
        let inserted = on_backend!(self, pool => {
            sqlx::query(
                "INSERT INTO static_machines (name, pool_id, revision, machine)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&row.name)
            .bind(&row.pool_id)
            .bind(row.revision)
            .bind(&row.machine)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// The static machine named `name`.
    pub async fn static_machine(&self, name: &str) -> Result<Option<StaticMachineRow>, StoreError> {
        let row: Option<(String, String, i64, String)> = on_backend!(self, pool => {
            sqlx::query_as("SELECT name, pool_id, revision, machine FROM static_machines WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(
            row.map(|(name, pool_id, revision, machine)| StaticMachineRow {
                name,
                pool_id,
                revision,
                machine,
            }),
        )
    }

    /// Static machines of `pool` (or of every pool), ordered by name.
    pub async fn list_static_machines(
        &self,
        pool: Option<&PoolId>,
    ) -> Result<Vec<StaticMachineRow>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = on_backend!(self, p => {
            sqlx::query_as(
                "SELECT name, pool_id, revision, machine FROM static_machines
                 WHERE ($1 IS NULL OR pool_id = $1) ORDER BY name",
            )
            .bind(pool.map(PoolId::as_str))
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(name, pool_id, revision, machine)| StaticMachineRow {
                name,
                pool_id,
                revision,
                machine,
            })
            .collect())
    }

    /// Replaces machine `row.name` with `row` if its stored revision is
    /// `expected_revision`; returns whether it did (compare-and-set, so two replicas
    /// cannot lease one machine twice).
    pub async fn update_static_machine(
        &self,
        row: &StaticMachineRow,
        expected_revision: i64,
    ) -> Result<bool, StoreError> {
        let updated = on_backend!(self, pool => {
            sqlx::query(
                "UPDATE static_machines SET pool_id = $1, revision = $2, machine = $3
                 WHERE name = $4 AND revision = $5",
            )
            .bind(&row.pool_id)
            .bind(row.revision)
            .bind(&row.machine)
            .bind(&row.name)
            .bind(expected_revision)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Removes machine `name`; returns whether it existed.
    pub async fn remove_static_machine(&self, name: &str) -> Result<bool, StoreError> {
        let removed = on_backend!(self, pool => {
            sqlx::query("DELETE FROM static_machines WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed == 1)
    }
}
