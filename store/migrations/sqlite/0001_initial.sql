-- capstan schema, SQLite flavour. Times are Unix milliseconds (INTEGER).

CREATE TABLE pools (
    id               TEXT PRIMARY KEY NOT NULL,
    spec             TEXT NOT NULL,             -- PoolSpec as JSON
    generation       INTEGER NOT NULL,          -- bumped on every change
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    lease_owner      TEXT,                      -- replica reconciling the pool
    lease_expires_at INTEGER
);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY NOT NULL,
    pool_id           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    launch_config_id  TEXT,
    instance_id       TEXT,
    idempotency_token TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    capacity          INTEGER NOT NULL,
    busy_slots        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    state_changed_at  INTEGER NOT NULL,
    registered_at     INTEGER,
    last_heartbeat_at INTEGER,
    idle_since        INTEGER,
    failure           TEXT
);
CREATE INDEX workers_by_pool ON workers (pool_id, state);

CREATE TABLE queue_samples (
    pool_id     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    pending     INTEGER NOT NULL,
    running     INTEGER NOT NULL,
    arrivals    INTEGER NOT NULL,
    completions INTEGER NOT NULL,
    PRIMARY KEY (pool_id, at)
);
CREATE INDEX queue_samples_by_time ON queue_samples (at);

CREATE TABLE pool_errors (
    pool_id          TEXT NOT NULL,
    launch_config_id TEXT NOT NULL,             -- '' when not about one launch config
    kind             TEXT NOT NULL,
    message          TEXT NOT NULL,
    count            INTEGER NOT NULL,
    first_seen       INTEGER NOT NULL,
    last_seen        INTEGER NOT NULL,
    PRIMARY KEY (pool_id, launch_config_id, kind, message)
);

CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    pool_id        TEXT NOT NULL,
    old_generation INTEGER,
    new_generation INTEGER
);
CREATE INDEX audit_log_by_pool ON audit_log (pool_id, id);
