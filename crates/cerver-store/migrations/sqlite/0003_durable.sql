-- Durable sandboxes (issue 10): what a restarted server needs to rebuild a sandbox that has
-- not expired, as one JSON document per sandbox (its disk label, env, lifetime, exposed ports,
-- pause state), written by the control plane. NULL: not rebuildable (reaped at start).
ALTER TABLE sandboxes ADD COLUMN durable TEXT CHECK (durable IS NULL OR json_valid(durable));
