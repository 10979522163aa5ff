-- Cluster mode (issue 11): the nodes sharing this database, each with a lease it renews by
-- heartbeat (alive while lease_expires_at is in the future), and the node holding each sandbox.
-- A single-node server records itself here too.
CREATE TABLE nodes (
    name             TEXT    NOT NULL PRIMARY KEY,
    advertise_url    TEXT,
    started_at       INTEGER NOT NULL,
    heartbeat_at     INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL,
    draining         INTEGER NOT NULL DEFAULT 0 CHECK (draining IN (0, 1)),
    live_sandboxes   INTEGER NOT NULL DEFAULT 0 CHECK (live_sandboxes >= 0),
    capacity         INTEGER CHECK (capacity IS NULL OR capacity >= 0)
) STRICT;

-- NULL for sandboxes recorded before this step.
ALTER TABLE sandboxes ADD COLUMN node TEXT;
CREATE INDEX sandboxes_live_by_node ON sandboxes (node) WHERE deleted_at IS NULL;
