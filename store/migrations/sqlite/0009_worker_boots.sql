-- The boot times of a pool's recently registered workers (terminated ones included)
-- rebuild the slow-boot hedge's memory when a replica takes the pool
-- (Store::recent_boots).
CREATE INDEX workers_registered ON workers (pool_id, registered_at);
