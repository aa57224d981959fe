-- The level a reused worker idled at: the pool's busy slots once the task took it
-- (the most recently freed worker takes the next task, so a worker keeps its level
-- while it idles). Periods at or below the held level for tasks shorter than a boot
-- are left out of the chosen idle timeout's data (reconciler/src/controller.rs), on a
-- take-over as when they ended. NULL: not known (retired workers, older rows).
ALTER TABLE idle_periods ADD COLUMN level BIGINT;
