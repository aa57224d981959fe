-- What the providers persist through the store: which idempotency token created which
-- instance, and the inventory of static (operator-owned) machines.

CREATE TABLE launch_ledger (
    provider    TEXT NOT NULL,
    token       TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    worker_id   TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (provider, token)
);

CREATE TABLE static_machines (
    name     TEXT PRIMARY KEY NOT NULL,
    pool_id  TEXT NOT NULL,
    revision INTEGER NOT NULL,            -- compare-and-set counter
    machine  TEXT NOT NULL                -- the provider's machine record as JSON (holds only a secret's SHA-256)
);
CREATE INDEX static_machines_by_pool ON static_machines (pool_id, name);
