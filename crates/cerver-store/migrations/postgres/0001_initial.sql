-- The control plane's schema on Postgres: the SQLite steps 0001-0003 in one (a Postgres
-- database starts from here). Ids are TEXT, times BIGINT milliseconds since the Unix epoch
-- (UTC). JSON is kept as TEXT, as on SQLite, checked to parse. Secrets (API keys, one-time
-- tokens, session ids) are stored only as SHA-256 hex hashes.

CREATE TABLE users (
    id         TEXT   NOT NULL PRIMARY KEY,
    -- Lower-cased by the store before it gets here.
    email      TEXT   NOT NULL UNIQUE,
    plan       TEXT   NOT NULL CHECK (plan IN ('trial', 'free', 'pro')),
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT   NOT NULL PRIMARY KEY,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- For display only (`sk_live_` + the first 6 characters of the body): not unique.
    prefix       TEXT   NOT NULL,
    -- SHA-256 hex of the full key; the key itself is never stored.
    hash         TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    -- Chosen by the owner, for display.
    name         TEXT,
    -- Written at most about once a minute per key.
    last_used_at BIGINT
);

CREATE INDEX api_keys_by_user ON api_keys (user_id);
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);

-- Sign-up verification and login magic links: single use, short-lived.
CREATE TABLE one_time_tokens (
    hash       TEXT   NOT NULL PRIMARY KEY,
    kind       TEXT   NOT NULL CHECK (kind IN ('signup', 'login')),
    email      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX one_time_tokens_by_expiry ON one_time_tokens (expires_at);

-- Dashboard sessions, keyed by the hash of the cookie value.
CREATE TABLE sessions (
    id_hash    TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Requests per user per UTC day (`day` = whole days since 1970-01-01).
CREATE TABLE daily_usage (
    user_id TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day     BIGINT NOT NULL,
    count   BIGINT NOT NULL CHECK (count >= 0),
    PRIMARY KEY (user_id, day)
);

-- One row per sandbox ever created: quotas count the live ones, and a restarted server reaps
-- those never marked deleted. `durable`: what a restarted server needs to rebuild it.
CREATE TABLE sandboxes (
    id         TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    engine     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    deleted_at BIGINT,
    metadata   TEXT   NOT NULL DEFAULT '{}' CHECK (metadata::jsonb IS NOT NULL),
    durable    TEXT   CHECK (durable IS NULL OR durable::jsonb IS NOT NULL)
);

CREATE INDEX sandboxes_live_by_user ON sandboxes (user_id, expires_at) WHERE deleted_at IS NULL;
