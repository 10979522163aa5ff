//! [`SqliteStore`]: the [`Store`] on one SQLite file, `<data-dir>/cerver.db`.
//!
//! The `impl Store` block is here with the usage and sandbox statements (the atomic ones side
//! by side); users, keys, tokens and sessions are in `sqlite/accounts.rs`, the dashboard's
//! queries in `sqlite/dashboard.rs`, the nodes in `sqlite/nodes.rs`.
//!
//! The file is opened in WAL mode, so readers never block the writer and the server and an
//! admin CLI can use it at once; writers queue on SQLite's write lock for up to the busy
//! timeout. Every write that enforces a limit is atomic on its own:
//!
//! - the daily request counter is one `INSERT … ON CONFLICT DO UPDATE … WHERE count < limit
//!   RETURNING count` statement;
//! - one-time tokens are used up by one `UPDATE … WHERE used_at IS NULL AND expires_at > now
//!   RETURNING email` statement;
//! - a sandbox slot is claimed in a `BEGIN IMMEDIATE` transaction, which takes the write lock
//!   before counting, so no other connection (or process) can insert between count and insert.
//!
//! A single write statement outside an explicit transaction takes the write lock before it
//! reads anything, so it waits on the busy timeout instead of failing with `SQLITE_BUSY`; the
//! only explicit transaction here begins `IMMEDIATE` for the same reason. Two processes
//! creating the file at the same moment are handled at open: switching a new file to WAL and
//! applying the first migration are retried (see `connect_pool` and [`SqliteStore::migrate`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Executor, Row, Sqlite};

mod accounts;
mod dashboard;
mod nodes;

use crate::Store;
use crate::error::{Result, StoreError};
use crate::model::{
    ApiKey, KeyRef, NewSandbox, Node, NodeInfo, Plan, SandboxRecord, Session, TokenKind, User,
    UserSummary,
};
use crate::shared::{Embedded, count, sql_limit};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "cerver.db";

/// The schema steps, in order: (version, description, SQL). They are compiled into the binary;
/// a test checks that this list and the files in `migrations/` agree.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "dashboard",
        include_str!("../migrations/sqlite/0002_dashboard.sql"),
    ),
    (
        3,
        "durable",
        include_str!("../migrations/sqlite/0003_durable.sql"),
    ),
    (
        4,
        "nodes",
        include_str!("../migrations/sqlite/0004_nodes.sql"),
    ),
];

/// How to open the database.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Connections in the pool. SQLite runs one writer at a time whatever this is; more
    /// connections let reads proceed alongside it.
    pub max_connections: u32,
    /// How long a statement waits for another connection's (or process's) write lock before
    /// failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The [`Store`] on a SQLite file. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Recorded as the node of every sandbox inserted through this store.
    node: Option<String>,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/cerver.db` with default options and brings its
    /// schema up to date.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(data_dir, &SqliteOptions::default()).await
    }

    /// Opens (creating if needed) `<data_dir>/cerver.db` and brings its schema up to date.
    pub async fn open_with(data_dir: &Path, options: &SqliteOptions) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE_NAME);
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits on power loss.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = connect_pool(connect, options).await?;
        let store = SqliteStore {
            pool,
            path,
            node: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded migrations not yet applied. Idempotent; [`open`](Self::open) calls
    /// it.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = Migrator::new(Embedded(MIGRATIONS)).await?;
        // Processes creating the database at the same moment all try each step; a loser fails
        // on what a winner made (its transaction rolls back). Running again finds the winner's
        // step recorded and goes on with the next one, which it may lose again: one retry per
        // step is enough.
        let mut attempts = MIGRATIONS.len() + 1;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(_) if attempts > 1 => attempts -= 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The same store, recording `node` as the node of the sandboxes it inserts. A SQLite
    /// database belongs to one server, so [`Store::sandboxes_left_active`] still returns every
    /// node's (the server may have been renamed).
    pub fn with_node(self, node: &str) -> SqliteStore {
        SqliteStore {
            node: Some(node.to_owned()),
            ..self
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the pool, retrying while a brand-new file is being switched to WAL by another
/// connection: that switch takes an exclusive lock that SQLite's busy timeout does not wait
/// for, so two processes creating the database at once would otherwise fail with
/// `SQLITE_BUSY`. Once the file is in WAL mode the pragma takes no such lock.
async fn connect_pool(
    connect: SqliteConnectOptions,
    options: &SqliteOptions,
) -> Result<SqlitePool> {
    let deadline = Instant::now() + options.busy_timeout;
    loop {
        let attempt = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect.clone())
            .await;
        match attempt {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Whether `err` is SQLite's `SQLITE_BUSY` (any extended form).
fn is_busy(err: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == SQLITE_BUSY),
        _ => false,
    }
}

/// A sandbox that is not paused (pause state lives in the durable JSON; see
/// [`Store::set_sandbox_paused`]).
macro_rules! unpaused {
    () => {
        "(durable IS NULL OR json_extract(durable, '$.paused') IS NULL)"
    };
}

macro_rules! sandbox_columns {
    () => {
        "id, user_id, engine, created_at, expires_at, deleted_at, metadata, durable, node"
    };
}

fn sandbox_from(row: &SqliteRow) -> Result<SandboxRecord> {
    let metadata: &str = row.try_get("metadata")?;
    Ok(SandboxRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        engine: row.try_get("engine")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        deleted_at: row.try_get("deleted_at")?,
        metadata: serde_json::from_str(metadata)
            .map_err(|e| StoreError::Corrupt(format!("sandbox metadata: {e}")))?,
        durable: row.try_get("durable")?,
        node: row.try_get("node")?,
    })
}

async fn insert_sandbox_on<'e, E>(
    executor: E,
    sandbox: &NewSandbox,
    node: Option<&str>,
) -> Result<()>
where
    E: Executor<'e, Database = Sqlite>,
{
    let metadata = serde_json::to_string(&sandbox.metadata)
        .map_err(|_| StoreError::InvalidInput("sandbox metadata is not serialisable"))?;
    sqlx::query(
        "INSERT INTO sandboxes (id, user_id, engine, created_at, expires_at, metadata, node) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(&sandbox.id)
    .bind(&sandbox.user_id)
    .bind(&sandbox.engine)
    .bind(sandbox.created_at)
    .bind(sandbox.expires_at)
    .bind(metadata)
    .bind(node)
    .execute(executor)
    .await
    .map_err(|e| StoreError::from_insert(e, "sandbox id"))?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user_if_missing(&self, email: &str, plan: Plan) -> Result<User> {
        accounts::create_user_if_missing(&self.pool, email, plan).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        accounts::user_by_email(&self.pool, email).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        accounts::user_by_id(&self.pool, id).await
    }

    async fn set_plan(&self, email: &str, plan: Plan) -> Result<User> {
        accounts::set_plan(&self.pool, email, plan).await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>> {
        accounts::list_users(&self.pool).await
    }

    async fn insert_key(&self, user_id: &str, prefix: &str, hash: &str) -> Result<ApiKey> {
        accounts::insert_key(&self.pool, user_id, prefix, hash).await
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<(ApiKey, User)>> {
        accounts::key_by_hash(&self.pool, hash).await
    }

    async fn revoke_key(&self, key: KeyRef<'_>) -> Result<ApiKey> {
        accounts::revoke_key(&self.pool, key).await
    }

    async fn set_key_name(&self, key_id: &str, name: Option<&str>) -> Result<bool> {
        dashboard::set_key_name(&self.pool, key_id, name).await
    }

    async fn touch_key(&self, key_id: &str, now: i64) -> Result<bool> {
        dashboard::touch_key(&self.pool, key_id, now).await
    }

    async fn keys_of(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        accounts::keys_of(&self.pool, user_id).await
    }

    async fn insert_token(
        &self,
        hash: &str,
        kind: TokenKind,
        email: &str,
        expires_at: i64,
    ) -> Result<()> {
        accounts::insert_token(&self.pool, hash, kind, email, expires_at).await
    }

    async fn consume_token(&self, hash: &str, kind: TokenKind, now: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE one_time_tokens SET used_at = ?1 \
             WHERE hash = ?2 AND kind = ?3 AND used_at IS NULL AND expires_at > ?1 \
             RETURNING email",
        )
        .bind(now)
        .bind(hash)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn insert_session(
        &self,
        id_hash: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<Session> {
        accounts::insert_session(&self.pool, id_hash, user_id, expires_at).await
    }

    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<(Session, User)>> {
        accounts::session(&self.pool, id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = ?1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_expired(&self, now: i64) -> Result<u64> {
        accounts::purge_expired(&self.pool, now).await
    }

    async fn try_consume_request(&self, user_id: &str, day: i64, limit: u64) -> Result<u64> {
        if limit == 0 {
            return Err(StoreError::QuotaExceeded { limit });
        }
        // Insert the day's first request, or add one if still under the limit; when the limit
        // is reached the conflict's WHERE fails, nothing changes and no row comes back.
        let counted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO daily_usage (user_id, day, count) VALUES (?1, ?2, 1) \
             ON CONFLICT (user_id, day) DO UPDATE SET count = count + 1 \
             WHERE daily_usage.count < ?3 \
             RETURNING count",
        )
        .bind(user_id)
        .bind(day)
        .bind(sql_limit(limit))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::from_insert(e, "usage row"))?;
        match counted {
            Some(n) => Ok(limit.saturating_sub(count(n))),
            None => Err(StoreError::QuotaExceeded { limit }),
        }
    }

    async fn requests_on(&self, user_id: &str, day: i64) -> Result<u64> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT count FROM daily_usage WHERE user_id = ?1 AND day = ?2")
                .bind(user_id)
                .bind(day)
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.map_or(0, count))
    }

    async fn requests_between(
        &self,
        user_id: &str,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vec<(i64, u64)>> {
        dashboard::requests_between(&self.pool, user_id, first_day, last_day).await
    }

    async fn record_requests(&self, user_id: &str, day: i64, count: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO daily_usage (user_id, day, count) VALUES (?1, ?2, ?3) \
             ON CONFLICT (user_id, day) DO UPDATE SET count = max(count, excluded.count)",
        )
        .bind(user_id)
        .bind(day)
        .bind(count as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_sandbox(&self, sandbox: NewSandbox) -> Result<SandboxRecord> {
        insert_sandbox_on(&self.pool, &sandbox, self.node.as_deref()).await?;
        Ok(self.recorded(sandbox))
    }

    async fn try_insert_sandbox_if_below(
        &self,
        sandbox: NewSandbox,
        limit: u64,
        now: i64,
    ) -> Result<SandboxRecord> {
        // IMMEDIATE takes the write lock now (waiting up to the busy timeout), so the count
        // below cannot be overtaken by another connection's insert before ours commits.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let active: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM sandboxes \
                 WHERE user_id = ?1 AND deleted_at IS NULL AND expires_at > ?2 AND ",
            unpaused!()
        ))
        .bind(&sandbox.user_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if count(active) >= limit {
            // Dropping `tx` rolls back.
            return Err(StoreError::SandboxLimit { limit });
        }
        insert_sandbox_on(&mut *tx, &sandbox, self.node.as_deref()).await?;
        tx.commit().await?;
        Ok(self.recorded(sandbox))
    }

    async fn mark_sandbox_deleted(&self, id: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET deleted_at = ?1 WHERE id = ?2 AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_sandbox_engine(&self, id: &str, engine: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE sandboxes SET engine = ?1 WHERE id = ?2 AND deleted_at IS NULL")
                .bind(engine)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_sandbox_expiry(&self, id: &str, expires_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET expires_at = ?1 WHERE id = ?2 AND deleted_at IS NULL",
        )
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_sandbox_durable(&self, id: &str, state: &str, expires_at: i64) -> Result<bool> {
        // A late write for a running sandbox never unpauses one that was paused meanwhile.
        let done = sqlx::query(concat!(
            "UPDATE sandboxes SET durable = ?1, expires_at = ?2 \
             WHERE id = ?3 AND deleted_at IS NULL AND ",
            unpaused!()
        ))
        .bind(state)
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            sandbox_columns!(),
            " FROM sandboxes WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sandbox_from).transpose()
    }

    async fn active_sandboxes_of(&self, user_id: &str, now: i64) -> Result<Vec<SandboxRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            sandbox_columns!(),
            " FROM sandboxes WHERE user_id = ?1 AND deleted_at IS NULL AND expires_at > ?2 \
             ORDER BY created_at, id"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from).collect()
    }

    async fn active_sandbox_count(&self, user_id: &str, now: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM sandboxes \
                 WHERE user_id = ?1 AND deleted_at IS NULL AND expires_at > ?2 AND ",
            unpaused!()
        ))
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(count(n))
    }

    async fn sandboxes_left_active(&self) -> Result<Vec<SandboxRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            sandbox_columns!(),
            " FROM sandboxes WHERE deleted_at IS NULL ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from).collect()
    }

    async fn set_sandbox_paused(&self, id: &str, state: &str, expires_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sandboxes SET durable = ?1, expires_at = ?2 \
             WHERE id = ?3 AND deleted_at IS NULL",
        )
        .bind(state)
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn try_resume_sandbox_if_below(
        &self,
        id: &str,
        user_id: &str,
        limit: u64,
        now: i64,
        state: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let active: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM sandboxes \
             WHERE user_id = ?1 AND deleted_at IS NULL AND expires_at > ?2 AND ",
            unpaused!()
        ))
        .bind(user_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if count(active) >= limit {
            return Err(StoreError::SandboxLimit { limit });
        }
        let done = sqlx::query(
            "UPDATE sandboxes SET durable = ?1, expires_at = ?2 \
             WHERE id = ?3 AND user_id = ?4 AND deleted_at IS NULL",
        )
        .bind(state)
        .bind(expires_at)
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn paused_sandbox_count(&self, user_id: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sandboxes WHERE user_id = ?1 AND deleted_at IS NULL \
             AND durable IS NOT NULL AND json_extract(durable, '$.paused') IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(count(n))
    }

    async fn register_node(&self, info: &NodeInfo, now: i64, lease_ms: i64) -> Result<Node> {
        nodes::register(&self.pool, info, now, lease_ms).await
    }

    async fn heartbeat_node(
        &self,
        name: &str,
        now: i64,
        lease_ms: i64,
        live_sandboxes: u64,
    ) -> Result<Node> {
        nodes::heartbeat(&self.pool, name, now, lease_ms, live_sandboxes).await
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        nodes::list(&self.pool).await
    }

    async fn set_node_draining(&self, name: &str, draining: bool) -> Result<Node> {
        nodes::set_draining(&self.pool, name, draining).await
    }

    async fn node_of_label(&self, label: &str) -> Result<Option<String>> {
        nodes::node_of_label(&self.pool, label).await
    }

    async fn end_sandboxes_of_dead_nodes(&self, except: &str, now: i64) -> Result<u64> {
        nodes::end_sandboxes_of_dead_nodes(&self.pool, except, now).await
    }

    /// Closes every connection (checkpointing the WAL when the last one goes).
    async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqliteStore {
    /// What an insert recorded: the sandbox, held by this store's node.
    fn recorded(&self, sandbox: NewSandbox) -> SandboxRecord {
        SandboxRecord {
            node: self.node.clone(),
            ..sandbox.into()
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every file in `migrations/sqlite/` is listed in `MIGRATIONS`, and nothing else is.
    #[test]
    fn migration_list_matches_the_directory() {
        crate::shared::assert_migrations_match("sqlite", super::MIGRATIONS);
    }
}
