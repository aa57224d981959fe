-- History that lasts: hourly rollups of queue samples and task runs, kept long after
-- the raw rows are pruned (see store/src/history.rs).
--
-- The retention job moves raw rows older than the raw retention into these tables: in
-- one transaction it deletes a batch of raw rows and adds them to their hour's rollup,
-- so every sample and run is counted exactly once, in raw or in a rollup, whatever
-- crashes or runs twice. Sums (not means) are stored so merging is exact.

-- One row per pool and hour of queue samples.
CREATE TABLE queue_rollups (
    pool_id      TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,   -- Unix ms, a multiple of 3,600,000
    samples      INTEGER NOT NULL,
    pending_sum  INTEGER NOT NULL,
    pending_max  INTEGER NOT NULL,
    running_sum  INTEGER NOT NULL,
    running_max  INTEGER NOT NULL,
    arrivals     INTEGER NOT NULL,
    completions  INTEGER NOT NULL,
    PRIMARY KEY (pool_id, bucket_start)
) WITHOUT ROWID;

-- One row per pool and hour of finished tasks (by finish time): the count, the sum of
-- durations and a log-scale histogram (8 buckets per octave of milliseconds, sparse:
-- pairs of bucket index and LEB128 count).
CREATE TABLE task_run_rollups (
    pool_id      TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    runs         INTEGER NOT NULL,
    duration_sum INTEGER NOT NULL,   -- ms
    histogram    BLOB NOT NULL,
    PRIMARY KEY (pool_id, bucket_start)
) WITHOUT ROWID;

-- The job and the read API find a pool's runs by finish time.
CREATE INDEX task_runs_by_finish ON task_runs (pool_id, finished_at);
