//! API clients: who may call the operator API, with which scopes.
//!
//! A client's bearer token is `cap_<id>_<secret>`; the store keeps the id, the client's
//! name and scopes, and only the SHA-256 of the secret (hex), so a copy of the database
//! does not hand out access. Checking a presented secret against the hash, in constant
//! time, is the API's job (`api::auth`); scopes are kept as the strings the operator
//! wrote and parsed there too.

use capstan_core::Timestamp;

use crate::{Store, StoreError, on_backend};

/// A stored API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The `<id>` part of its token; public.
    pub id: String,
    /// What the operator called it (shown in audit entries).
    pub name: String,
    /// Hex SHA-256 of the token's secret part.
    pub secret_sha256: String,
    /// Scope strings, e.g. `pools:write:ci/*`.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// Who created it (a client, or `bootstrap:<user>` on the store directly).
    pub created_by: String,
    /// After this the token is refused. None: no expiry.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<Timestamp>,
    /// Latest request it authenticated (recorded at most about once a minute).
    pub last_used_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, name, secret_sha256, scopes, created_at, created_by, expires_at, \
     revoked_at, last_used_at";

type ClientRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn record(row: ClientRow) -> Result<ClientRecord, StoreError> {
    let (id, name, secret_sha256, scopes, created, created_by, expires, revoked, used) = row;
    let ts = |v: Option<i64>| v.map(Timestamp::from_unix_ms);
    Ok(ClientRecord {
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("client {id} scopes: {e}")))?,
        id,
        name,
        secret_sha256,
        created_at: Timestamp::from_unix_ms(created),
        created_by,
        expires_at: ts(expires),
        revoked_at: ts(revoked),
        last_used_at: ts(used),
    })
}

impl Store {
    /// Stores a new client; `Ok(false)` when the id is taken (ids are minted randomly by
    /// the caller, which mints again).
    pub async fn insert_client(&self, c: &ClientRecord) -> Result<bool, StoreError> {
        let scopes = serde_json::to_string(&c.scopes)
            .map_err(|e| StoreError::Corrupt(format!("client scopes: {e}")))?;
        let inserted = on_backend!(self, pool => {
            sqlx::query(&format!(
                "INSERT INTO api_clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO NOTHING"
            ))
            .bind(&c.id)
            .bind(&c.name)
            .bind(&c.secret_sha256)
            .bind(&scopes)
            .bind(c.created_at.unix_ms())
            .bind(&c.created_by)
            .bind(c.expires_at.map(Timestamp::unix_ms))
            .bind(c.revoked_at.map(Timestamp::unix_ms))
            .bind(c.last_used_at.map(Timestamp::unix_ms))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// The client with this id, revoked or not.
    pub async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row: Option<ClientRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_clients WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(record).transpose()
    }

    /// Every client, revoked ones included, oldest first.
    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows: Vec<ClientRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_clients ORDER BY created_at, id"))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(record).collect()
    }

    /// Revokes client `id` at `now` (a second revoke keeps the first time).
    pub async fn revoke_client(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let updated = on_backend!(self, pool => {
            sqlx::query(
                "UPDATE api_clients SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
            )
            .bind(now.unix_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::ClientNotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Records that client `id` authenticated a request at `now`.
    pub async fn touch_client(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        on_backend!(self, pool => {
            sqlx::query(
                "UPDATE api_clients SET last_used_at = $1
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(now.unix_ms())
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
