-- The operator API: pools get a provider column (list filter) and a deletion mark;
-- API clients hold scoped bearer tokens, of which only a SHA-256 of the secret is kept.

ALTER TABLE pools ADD COLUMN provider TEXT NOT NULL DEFAULT '';
UPDATE pools SET provider = json_extract(spec, '$.provider');
ALTER TABLE pools ADD COLUMN deleting_since INTEGER;   -- set: draining, then removed
CREATE INDEX pools_by_provider ON pools (provider, id);

CREATE TABLE api_clients (
    id            TEXT PRIMARY KEY NOT NULL,   -- the <id> of cap_<id>_<secret>
    name          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,               -- hex SHA-256 of the secret; the secret itself is never stored
    scopes        TEXT NOT NULL,               -- JSON array of scope strings
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);
