-- The control loop: fenced reconcile leases, worker revisions, the latest plan and
-- forecast of each pool, and a log of the plans that acted.

-- Bumped every time the lease changes hands; every write the holder makes checks it,
-- so a replica that lost its lease (paused, partitioned) cannot write any more.
ALTER TABLE pools ADD COLUMN lease_fence BIGINT NOT NULL DEFAULT 0;

-- Compare-and-swap counter: the loop and heartbeats never overwrite each other.
ALTER TABLE workers ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
CREATE INDEX workers_live ON workers (state, pool_id);

-- The latest plan and forecast of each pool, for the API, the dashboard and other
-- replicas.
CREATE TABLE pool_status (
    pool_id  TEXT PRIMARY KEY NOT NULL,
    at       BIGINT NOT NULL,
    owner    TEXT NOT NULL,                 -- replica that planned
    fence    BIGINT NOT NULL,                   -- its lease fence
    plan     TEXT NOT NULL,                 -- Plan as JSON
    forecast TEXT NOT NULL                  -- Forecast as JSON (with points)
);

-- Plans that had actions, for history (dashboard marks) and audits of who acted.
CREATE TABLE plan_log (
    pool_id TEXT NOT NULL,
    at      BIGINT NOT NULL,
    owner   TEXT NOT NULL,
    fence   BIGINT NOT NULL,
    plan    TEXT NOT NULL,
    PRIMARY KEY (pool_id, at, owner)
);
CREATE INDEX plan_log_by_time ON plan_log (at);
