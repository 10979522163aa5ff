-- Cluster mode (issue 11): the nodes sharing this database, each with a lease it renews by
-- heartbeat (alive while lease_expires_at is in the future), and the node holding each sandbox.
CREATE TABLE nodes (
    name             TEXT    NOT NULL PRIMARY KEY,
    advertise_url    TEXT,
    started_at       BIGINT  NOT NULL,
    heartbeat_at     BIGINT  NOT NULL,
    lease_expires_at BIGINT  NOT NULL,
    draining         BOOLEAN NOT NULL DEFAULT FALSE,
    live_sandboxes   BIGINT  NOT NULL DEFAULT 0 CHECK (live_sandboxes >= 0),
    capacity         BIGINT  CHECK (capacity IS NULL OR capacity >= 0)
);

ALTER TABLE sandboxes ADD COLUMN node TEXT;
CREATE INDEX sandboxes_live_by_node ON sandboxes (node) WHERE deleted_at IS NULL;
