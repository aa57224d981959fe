-- The dashboard's history of each pool: one point per reconcile round (at most one per
-- pool every ~10 s), written by the replica planning the pool (see store/src/series.rs).
--
-- Capacity columns count task SLOTS (a worker offering 4 slots adds 4), the unit of
-- targets and forecasts, so they stack against the target on one axis. Raw points are
-- deleted after raw_history_days by the retention job; reads downsample them.
CREATE TABLE pool_series (
    pool_id        TEXT NOT NULL,
    at             BIGINT NOT NULL,   -- Unix ms
    requested      BIGINT NOT NULL,   -- slots of workers in `requested`
    booting        BIGINT NOT NULL,   -- slots of workers in `booting`
    ready_idle     BIGINT NOT NULL,   -- slots of `ready` workers running nothing
    ready_busy     BIGINT NOT NULL,   -- slots of `ready` workers running a task
    draining       BIGINT NOT NULL,   -- slots of workers in `draining`
    busy_slots     BIGINT NOT NULL,   -- slots running a task (ready and draining)
    target_slots   BIGINT NOT NULL,   -- the plan's target
    forecast_mean  DOUBLE PRECISION NOT NULL, -- expected busy slots at now + lead
    forecast_upper DOUBLE PRECISION NOT NULL, -- slots needed at the pool's service level
    pending        BIGINT NOT NULL,   -- latest queue sample
    running        BIGINT NOT NULL,
    cost_per_hour  DOUBLE PRECISION NOT NULL, -- launch-config prices x live instances
    PRIMARY KEY (pool_id, at)
);

-- Retention deletes by time across pools.
CREATE INDEX pool_series_by_time ON pool_series (at);
