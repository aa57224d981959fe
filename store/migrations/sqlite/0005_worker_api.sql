-- The worker API: one-time registration tokens and worker credentials, both kept only
-- as SHA-256 digests, and the run times of finished tasks (they feed the predictor's
-- run-time model and the what-if replay).

-- Digest of the registration token written into the instance's user-data; set with the
-- launch intent, before the provider call.
ALTER TABLE workers ADD COLUMN registration_digest TEXT;
-- When the token was exchanged; a second use is refused.
ALTER TABLE workers ADD COLUMN registration_used_at INTEGER;
-- Digest of the credential minted at registration; valid for this worker's routes only.
ALTER TABLE workers ADD COLUMN credential_digest TEXT;

-- One row per finished task, as reported by heartbeats. A heartbeat that is retried
-- after a lost answer reports the same (worker_id, finished_at) again and changes
-- nothing. recorded_at is the server's clock, so the loop reads new rows in order even
-- when a heartbeat arrives late.
CREATE TABLE task_runs (
    pool_id     TEXT NOT NULL,
    worker_id   TEXT NOT NULL,
    finished_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (worker_id, finished_at)
);
CREATE INDEX task_runs_by_pool ON task_runs (pool_id, recorded_at);
