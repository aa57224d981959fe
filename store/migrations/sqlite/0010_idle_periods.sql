-- The idle periods of a pool's workers that ended (a task took the worker, or the
-- worker went away while idle), so the idle timeout capstan chooses from them
-- survives a take-over: a replica that takes the pool replays them with the queue
-- history (see store/src/idle_periods.rs). Deleted after raw_history_days by the
-- retention job.
CREATE TABLE idle_periods (
    pool_id   TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    ended_at  INTEGER NOT NULL,   -- Unix ms: when the round saw the period end
    idle_ms   INTEGER NOT NULL,   -- how long the worker had been idle then
    reused    INTEGER NOT NULL,   -- 1: a task ended it; 0: the worker went away
    PRIMARY KEY (pool_id, ended_at, worker_id)
) WITHOUT ROWID;

-- Retention deletes by time across pools.
CREATE INDEX idle_periods_by_time ON idle_periods (ended_at);
