-- GitHub Actions as a queue source: the workflow jobs each pool is asked to run, as
-- learnt from `workflow_job` webhooks and from polling the REST API (which catches
-- deliveries GitHub never resent), and the delivery ids already processed (a replayed
-- delivery changes nothing).

-- One row per (pool, job). `status` only moves forward (waiting < queued <
-- in_progress < completed), so a late or replayed event never undoes a newer one.
-- GitHub's own times: queued_at (the job's created_at), started_at, completed_at.
-- The server's clock: arrival_recorded_at (when the job first counted as queued or
-- later) and completion_recorded_at (when it was seen completed); a queue sample's
-- arrivals and completions are the rows whose recorded time falls in its interval.
CREATE TABLE github_jobs (
    pool_id                TEXT NOT NULL,
    job_id                 INTEGER NOT NULL,
    run_id                 INTEGER NOT NULL,
    status                 TEXT NOT NULL,
    queued_at              INTEGER NOT NULL,
    started_at             INTEGER,
    completed_at           INTEGER,
    arrival_recorded_at    INTEGER,
    completion_recorded_at INTEGER,
    updated_at             INTEGER NOT NULL,
    PRIMARY KEY (pool_id, job_id)
);
CREATE INDEX github_jobs_by_status ON github_jobs (pool_id, status);
CREATE INDEX github_jobs_by_update ON github_jobs (updated_at);

-- When each pool's GitHub-derived queue sample was last written: the start of the next
-- sample's interval. Updating this row first in every change also serialises the
-- changes of one pool (a row lock on PostgreSQL; SQLite has one writer anyway), so two
-- deliveries at once never write samples from stale counts.
CREATE TABLE github_pool_cursors (
    pool_id    TEXT PRIMARY KEY NOT NULL,
    sampled_at INTEGER NOT NULL
);

-- `X-GitHub-Delivery` ids already processed, kept for a retention period.
CREATE TABLE github_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX github_deliveries_by_age ON github_deliveries (received_at);
