//! Persistence of the control plane: accounts, API keys, plans, one-time tokens, dashboard
//! sessions, daily usage and sandbox records.
//!
//! Callers hold an `Arc<dyn Store>` ([`open_store`]) and never see SQL. Two backends implement
//! it, each with its own migrations: [`SqliteStore`], one file in the data dir (a single
//! server, the default), and [`PgStore`], one Postgres database shared by every node of a
//! cluster. The same contract tests run on both.
//!
//! The store records facts and enforces the two limits that must be exact under concurrency —
//! requests per day ([`Store::try_consume_request`]) and active sandboxes per user
//! ([`Store::try_insert_sandbox_if_below`], [`Store::try_resume_sandbox_if_below`]) — each in a
//! single atomic step, so that no check-then-act race can let a user past a limit, whether the
//! racers are tasks, processes or nodes (how each backend does it: the module docs of
//! `sqlite.rs` and `postgres.rs`). *Which* limit applies to a plan is policy
//! and belongs to the control plane.
//!
//! Secrets never reach the database: keys, tokens and session ids are stored as SHA-256 hashes
//! made by [`keys`].
//!
//! # Layout
//!
//! | path | what lives there |
//! |---|---|
//! | `src/lib.rs` | the [`Store`] trait: every operation and its contract |
//! | `src/model.rs` | records ([`User`], [`ApiKey`], [`Session`], [`SandboxRecord`], [`Node`], …), [`Plan`], the clock helpers [`now_ms`] and [`utc_day`] |
//! | `src/error.rs` | [`StoreError`], the one error enum |
//! | `src/keys.rs` | generating and hashing keys, tokens and session ids |
//! | `src/sqlite.rs`, `src/sqlite/` | [`SqliteStore`]: opening `<data-dir>/cerver.db` (WAL, foreign keys, busy timeout), the queries |
//! | `src/postgres.rs`, `src/postgres/` | [`PgStore`]: a pool on a Postgres URL, the queries (accounts, sandboxes, nodes) |
//! | `src/shared.rs` | the embedded-migrations source and conversions both backends use |
//! | `migrations/sqlite/`, `migrations/postgres/` | each backend's schema, one `NNNN_name.sql` per step, embedded in the binary |
//! | `tests/store.rs` | every operation on both backends (a real file, a throw-away Postgres cluster from `tests/common/pg.rs`), concurrency included |
//!
//! # Conventions
//!
//! - Ids are TEXT (UUID v4), timestamps INTEGER milliseconds since the Unix epoch (UTC), usage
//!   days whole days since 1970-01-01 UTC ([`utc_day`]).
//! - Emails are trimmed and lower-cased ([`normalize_email`]) on the way in, in every call.
//! - Operations whose result depends on the time take `now` from the caller, so that tests and
//!   the control plane agree on one clock; creation times are the store's own clock.

mod error;
pub mod keys;
mod model;
mod postgres;
mod shared;
mod sqlite;

use async_trait::async_trait;

pub use error::{Result, StoreError};
pub use model::{
    ApiKey, DAY_MS, KeyRef, NewSandbox, Node, NodeInfo, Plan, SandboxRecord, Session, TokenKind,
    User, UserSummary, normalize_email, now_ms, utc_day,
};
pub use postgres::{PgOptions, PgStore};
pub use sqlite::{DB_FILE_NAME, SqliteOptions, SqliteStore};

/// Everything the control plane persists. Implementations are shared across tasks
/// (`Arc<dyn Store>`) and must be safe to use from several processes on the same database
/// (the server and the admin CLI).
#[async_trait]
pub trait Store: Send + Sync {
    // ---- users ----

    /// Returns the user with `email`, creating it on `plan` if there is none. Idempotent: an
    /// existing user keeps its plan.
    async fn create_user_if_missing(&self, email: &str, plan: Plan) -> Result<User>;

    /// The user with `email` (compared lower-cased).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;

    /// The user with `id`.
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;

    /// Moves the user with `email` to `plan`. Fails with [`StoreError::UserNotFound`].
    async fn set_plan(&self, email: &str, plan: Plan) -> Result<User>;

    /// Every user, oldest first, with their key counts.
    async fn list_users(&self) -> Result<Vec<UserSummary>>;

    // ---- API keys ----

    /// Records a key by its display prefix and hash. Fails with [`StoreError::UserNotFound`]
    /// or, if the hash is already stored, [`StoreError::Duplicate`].
    async fn insert_key(&self, user_id: &str, prefix: &str, hash: &str) -> Result<ApiKey>;

    /// The non-revoked key with `hash`, and its user: the authentication lookup.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<(ApiKey, User)>>;

    /// Revokes one key and returns it. Idempotent: revoking a revoked key keeps its first
    /// `revoked_at`. Fails with [`StoreError::KeyNotFound`], or
    /// [`StoreError::AmbiguousKey`] when a prefix matches several keys.
    async fn revoke_key(&self, key: KeyRef<'_>) -> Result<ApiKey>;

    /// Names (or, with `None`, unnames) the key with `id`; whether there was one.
    async fn set_key_name(&self, key_id: &str, name: Option<&str>) -> Result<bool>;

    /// Records that the key with `id` authenticated a request at `now`, unless its recorded
    /// last use is less than a minute older; whether it wrote.
    async fn touch_key(&self, key_id: &str, now: i64) -> Result<bool>;

    /// All keys of a user, revoked ones included, oldest first.
    async fn keys_of(&self, user_id: &str) -> Result<Vec<ApiKey>>;

    // ---- one-time tokens ----

    /// Records a one-time token by its hash. Fails with [`StoreError::Duplicate`] if the hash
    /// is already stored.
    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        email: &str,
        expires_at: i64,
    ) -> Result<()>;

    /// Uses up the token with `hash` and `kind` and returns its email — atomically, once: a
    /// second call, a call at or after `expires_at`, or a call with the other kind returns
    /// `None`.
    async fn consume_token(&self, hash: &str, kind: TokenKind, now: i64) -> Result<Option<String>>;

    // ---- dashboard sessions ----

    /// Records a session by the hash of its id. Fails with [`StoreError::UserNotFound`] or
    /// [`StoreError::Duplicate`].
    async fn insert_session(
        &self,
        id_hash: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<Session>;

    /// The session with `id_hash` if it has not expired at `now`, and its user.
    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<(Session, User)>>;

    /// Deletes a session (logout); whether there was one.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;

    /// Deletes expired or used one-time tokens and expired sessions; how many rows went.
    async fn purge_expired(&self, now: i64) -> Result<u64>;

    // ---- usage ----

    /// Counts one request of `user_id` on UTC `day` if fewer than `limit` were counted, and
    /// returns how many are left; otherwise fails with [`StoreError::QuotaExceeded`] and counts
    /// nothing. Exact under any concurrency: check and increment are one statement.
    async fn try_consume_request(&self, user_id: &str, day: i64, limit: u64) -> Result<u64>;

    /// Requests counted for `user_id` on UTC `day`.
    async fn requests_on(&self, user_id: &str, day: i64) -> Result<u64>;

    /// `(day, requests)` of `user_id` for the UTC days `first_day..=last_day` that have any,
    /// oldest first.
    async fn requests_between(
        &self,
        user_id: &str,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vec<(i64, u64)>>;

    /// Records that `user_id` has made at least `count` requests on UTC `day` (the count never
    /// goes down): how a server that counts exactly in memory persists its counters.
    async fn record_requests(&self, user_id: &str, day: i64, count: u64) -> Result<()>;

    // ---- sandboxes ----

    /// Records a sandbox without any limit (the caller has checked, or none applies). Fails
    /// with [`StoreError::UserNotFound`] or [`StoreError::Duplicate`].
    async fn insert_sandbox(&self, sandbox: NewSandbox) -> Result<SandboxRecord>;

    /// Records a sandbox if its user has fewer than `limit` active sandboxes at `now`, else fails
    /// with [`StoreError::SandboxLimit`]. Exact under any concurrency: count and insert happen
    /// under one write lock.
    async fn try_insert_sandbox_if_below(
        &self,
        sandbox: NewSandbox,
        limit: u64,
        now: i64,
    ) -> Result<SandboxRecord>;

    /// Marks a sandbox deleted at `at`; whether this call did (false if unknown or already
    /// deleted).
    async fn mark_sandbox_deleted(&self, id: &str, at: i64) -> Result<bool>;

    /// Records a not-deleted sandbox's new engine (an in-place upgrade); whether there was one.
    async fn set_sandbox_engine(&self, id: &str, engine: &str) -> Result<bool>;

    /// Moves a not-deleted sandbox's expiry to `expires_at`; whether there was one.
    async fn set_sandbox_expiry(&self, id: &str, expires_at: i64) -> Result<bool>;

    /// Records a not-deleted, unpaused sandbox's durable state (JSON, the control plane's) and
    /// its expiry together; whether there was one.
    async fn set_sandbox_durable(&self, id: &str, state: &str, expires_at: i64) -> Result<bool>;

    /// The sandbox with `id`, deleted or not.
    async fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>>;

    /// The user's active sandboxes at `now` (not deleted, not expired), oldest first.
    async fn active_sandboxes_of(&self, user_id: &str, now: i64) -> Result<Vec<SandboxRecord>>;

    /// How many active, unpaused sandboxes the user has at `now` (what the sandbox limit
    /// counts).
    async fn active_sandbox_count(&self, user_id: &str, now: i64) -> Result<u64>;

    /// Every sandbox never marked deleted, expired or not: after a restart these have no
    /// process behind them and are to be reaped and marked deleted.
    async fn sandboxes_left_active(&self) -> Result<Vec<SandboxRecord>>;

    /// Pauses a not-deleted sandbox: records its durable state (JSON with a `"paused"` member,
    /// which takes it out of the sandbox limit's count) and its expiry (the end of the paused
    /// retention); whether there was one.
    async fn set_sandbox_paused(&self, id: &str, state: &str, expires_at: i64) -> Result<bool>;

    /// Resumes the user's paused sandbox `id` (its durable state becomes `state`, which has no
    /// `"paused"` member, and its expiry `expires_at`) if the user has fewer than `limit`
    /// active unpaused sandboxes at `now`, else fails with [`StoreError::SandboxLimit`]. Count
    /// and update under one write lock, like [`try_insert_sandbox_if_below`](Self::try_insert_sandbox_if_below).
    async fn try_resume_sandbox_if_below(
        &self,
        id: &str,
        user_id: &str,
        limit: u64,
        now: i64,
        state: &str,
        expires_at: i64,
    ) -> Result<bool>;

    /// How many paused, not-deleted sandboxes the user has.
    async fn paused_sandbox_count(&self, user_id: &str) -> Result<u64>;

    // ---- nodes ----

    /// Records that node `info.name` started at `now` with a lease until `now + lease_ms`,
    /// replacing its URL and capacity if it was known (a restart); a drained node stays
    /// drained. Its load starts at zero.
    async fn register_node(&self, info: &NodeInfo, now: i64, lease_ms: i64) -> Result<Node>;

    /// Renews the lease of node `name` to `now + lease_ms` and records its load; fails with
    /// [`StoreError::NodeNotFound`] if it never registered.
    async fn heartbeat_node(
        &self,
        name: &str,
        now: i64,
        lease_ms: i64,
        live_sandboxes: u64,
    ) -> Result<Node>;

    /// Every registered node, dead ones included (see [`Node::is_alive`]), by name.
    async fn list_nodes(&self) -> Result<Vec<Node>>;

    /// Marks node `name` draining (no new sandboxes are to be placed there) or not; fails
    /// with [`StoreError::NodeNotFound`].
    async fn set_node_draining(&self, name: &str, draining: bool) -> Result<Node>;

    /// The node holding the newest not-deleted sandbox whose id starts with `label` (a port
    /// host name's label: the id's first hex characters), if any and if it has one.
    async fn node_of_label(&self, label: &str) -> Result<Option<String>>;

    /// Marks deleted at `now` every not-deleted sandbox held by a node other than `except`
    /// whose lease ran out at or before `now`; how many. How a cluster ends a dead node's
    /// sandboxes (they stop counting against their users' limits).
    async fn end_sandboxes_of_dead_nodes(&self, except: &str, now: i64) -> Result<u64>;

    /// Closes every connection; calls after this fail. Cheap to call twice.
    async fn close(&self);
}

/// Opens the store a server or the admin CLI uses: Postgres when `database_url` is given
/// (`postgres://…`), else SQLite in `data_dir`. Sandboxes recorded through it belong to
/// `node`, if given (see [`SandboxRecord::node`]).
pub async fn open_store(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
    node: Option<&str>,
) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match database_url {
        Some(url) => {
            let options = PgOptions {
                node: node.map(str::to_owned),
                ..PgOptions::default()
            };
            std::sync::Arc::new(PgStore::connect(url, &options).await?)
        }
        None => {
            let store = SqliteStore::open(data_dir).await?;
            std::sync::Arc::new(match node {
                Some(node) => store.with_node(node),
                None => store,
            })
        }
    })
}
