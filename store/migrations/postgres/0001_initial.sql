-- capstan schema, PostgreSQL flavour. Times are Unix milliseconds (BIGINT).

CREATE TABLE pools (
    id               TEXT PRIMARY KEY NOT NULL,
    spec             TEXT NOT NULL,             -- PoolSpec as JSON
    generation       BIGINT NOT NULL,          -- bumped on every change
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    lease_owner      TEXT,                      -- replica reconciling the pool
    lease_expires_at BIGINT
);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY NOT NULL,
    pool_id           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    launch_config_id  TEXT,
    instance_id       TEXT,
    idempotency_token TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    capacity          BIGINT NOT NULL,
    busy_slots        BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    state_changed_at  BIGINT NOT NULL,
    registered_at     BIGINT,
    last_heartbeat_at BIGINT,
    idle_since        BIGINT,
    failure           TEXT
);
CREATE INDEX workers_by_pool ON workers (pool_id, state);

CREATE TABLE queue_samples (
    pool_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    pending     BIGINT NOT NULL,
    running     BIGINT NOT NULL,
    arrivals    BIGINT NOT NULL,
    completions BIGINT NOT NULL,
    PRIMARY KEY (pool_id, at)
);
CREATE INDEX queue_samples_by_time ON queue_samples (at);

CREATE TABLE pool_errors (
    pool_id          TEXT NOT NULL,
    launch_config_id TEXT NOT NULL,             -- '' when not about one launch config
    kind             TEXT NOT NULL,
    message          TEXT NOT NULL,
    count            BIGINT NOT NULL,
    first_seen       BIGINT NOT NULL,
    last_seen        BIGINT NOT NULL,
    PRIMARY KEY (pool_id, launch_config_id, kind, message)
);

CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    at             BIGINT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    pool_id        TEXT NOT NULL,
    old_generation BIGINT,
    new_generation BIGINT
);
CREATE INDEX audit_log_by_pool ON audit_log (pool_id, id);
