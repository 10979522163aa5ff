-- The dashboard: a name for each API key (chosen by its owner, for display) and when it was last
-- used (written at most about once a minute per key, so authentication stays a read).
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
