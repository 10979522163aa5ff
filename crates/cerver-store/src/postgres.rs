//! [`PgStore`]: the [`Store`] on a Postgres database shared by every node of a cluster.
//!
//! The same schema in spirit as SQLite's (its own migrations in `migrations/postgres/`), the
//! same contracts, and the same exactness under concurrency — now across processes on many
//! machines:
//!
//! - the daily request counter is one `INSERT … ON CONFLICT DO UPDATE … WHERE count < limit
//!   RETURNING count` statement. Postgres locks the conflicting row and re-evaluates the
//!   `WHERE` on its latest committed version (READ COMMITTED), so concurrent callers queue on
//!   that row and exactly `limit` of them get a row back;
//! - one-time tokens are used up by one `UPDATE … WHERE used_at IS NULL … RETURNING`;
//! - a sandbox slot (insert or resume) is claimed in a transaction that first locks the
//!   owner's `users` row (`SELECT … FOR UPDATE`), then counts and writes. Claims of one user
//!   are serialised on that lock and each count runs after the previous holder committed
//!   (READ COMMITTED takes a fresh snapshot per statement), so no two can both see room for
//!   the last slot. Chosen over SERIALIZABLE, which would be just as exact but fails one side
//!   of every conflict with a serialization error to retry; the row lock only makes it wait,
//!   and only other claims of the same user.
//!
//! Sandboxes are recorded with the store's node ([`PgOptions::node`]), and
//! [`Store::sandboxes_left_active`] returns only that node's: a node restarting must not reap
//! the sandboxes other nodes hold.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

mod accounts;
mod nodes;
mod sandboxes;

use crate::Store;
use crate::error::{Result, StoreError};
use crate::model::{
    ApiKey, KeyRef, NewSandbox, Node, NodeInfo, Plan, SandboxRecord, Session, TokenKind, User,
    UserSummary,
};
use crate::shared::{Embedded, count, sql_limit};

/// The schema steps, in order: (version, description, SQL); a test checks them against the
/// files in `migrations/postgres/`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "nodes",
        include_str!("../migrations/postgres/0002_nodes.sql"),
    ),
];

/// How to connect.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections in the pool (each node holds its own pool).
    pub max_connections: u32,
    /// How long a call waits for a free connection (or for the database to answer a connect).
    pub acquire_timeout: Duration,
    /// The node recorded on inserted sandboxes, whose sandboxes
    /// [`Store::sandboxes_left_active`] returns; `None`: every node's (the admin CLI).
    pub node: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            node: None,
        }
    }
}

/// The [`Store`] on Postgres. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    node: Option<String>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`, or a unix socket with
    /// `?host=/dir`) and brings the schema up to date.
    pub async fn connect(url: &str, options: &PgOptions) -> Result<PgStore> {
        let connect: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        let store = PgStore {
            pool,
            node: options.node.clone(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Checks that `url` is one [`connect`](Self::connect) can use, without connecting.
    pub fn check_url(url: &str) -> Result<()> {
        url.parse::<PgConnectOptions>()?;
        Ok(())
    }

    /// Applies the embedded migrations not yet applied. Idempotent, and safe from several
    /// nodes at once: `sqlx` holds a Postgres advisory lock while it migrates.
    pub async fn migrate(&self) -> Result<()> {
        Migrator::new(Embedded(MIGRATIONS))
            .await?
            .run(&self.pool)
            .await?;
        Ok(())
    }
}

// Column lists, aliased so that rows of joins decode with the same functions.
macro_rules! user_columns {
    () => {
        "u.id AS u_id, u.email AS u_email, u.plan AS u_plan, u.created_at AS u_created_at"
    };
}
macro_rules! user_returning {
    () => {
        "id AS u_id, email AS u_email, plan AS u_plan, created_at AS u_created_at"
    };
}
macro_rules! key_columns {
    () => {
        "k.id AS k_id, k.user_id AS k_user_id, k.prefix AS k_prefix, \
         k.created_at AS k_created_at, k.revoked_at AS k_revoked_at, k.name AS k_name, \
         k.last_used_at AS k_last_used_at"
    };
}
macro_rules! key_returning {
    () => {
        "id AS k_id, user_id AS k_user_id, prefix AS k_prefix, \
         created_at AS k_created_at, revoked_at AS k_revoked_at, name AS k_name, \
         last_used_at AS k_last_used_at"
    };
}
macro_rules! session_columns {
    () => {
        "s.id_hash AS s_id_hash, s.user_id AS s_user_id, s.created_at AS s_created_at, \
         s.expires_at AS s_expires_at"
    };
}
pub(crate) use {key_columns, key_returning, session_columns, user_columns, user_returning};

fn user_from(row: &PgRow) -> Result<User> {
    Ok(User {
        id: row.try_get("u_id")?,
        email: row.try_get("u_email")?,
        plan: row.try_get::<&str, _>("u_plan")?.parse()?,
        created_at: row.try_get("u_created_at")?,
    })
}

fn key_from(row: &PgRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("k_id")?,
        user_id: row.try_get("k_user_id")?,
        prefix: row.try_get("k_prefix")?,
        created_at: row.try_get("k_created_at")?,
        revoked_at: row.try_get("k_revoked_at")?,
        name: row.try_get("k_name")?,
        last_used_at: row.try_get("k_last_used_at")?,
    })
}

fn session_from(row: &PgRow) -> Result<Session> {
    Ok(Session {
        id_hash: row.try_get("s_id_hash")?,
        user_id: row.try_get("s_user_id")?,
        created_at: row.try_get("s_created_at")?,
        expires_at: row.try_get("s_expires_at")?,
    })
}

#[async_trait]
impl Store for PgStore {
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
        let done = sqlx::query("UPDATE api_keys SET name = $2 WHERE id = $1")
            .bind(key_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_key(&self, key_id: &str, now: i64) -> Result<bool> {
        accounts::touch_key(&self.pool, key_id, now).await
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
            "UPDATE one_time_tokens SET used_at = $1 \
             WHERE hash = $2 AND kind = $3 AND used_at IS NULL AND expires_at > $1 \
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
        let done = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
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
        // See the module doc: the conflicting row is locked and the WHERE re-checked on its
        // latest version, so this is exact across connections and nodes.
        let counted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO daily_usage (user_id, day, count) VALUES ($1, $2, 1) \
             ON CONFLICT (user_id, day) DO UPDATE SET count = daily_usage.count + 1 \
             WHERE daily_usage.count < $3 \
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
            sqlx::query_scalar("SELECT count FROM daily_usage WHERE user_id = $1 AND day = $2")
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
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT day, count FROM daily_usage \
             WHERE user_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
        )
        .bind(user_id)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(d, n)| (d, count(n))).collect())
    }

    async fn record_requests(&self, user_id: &str, day: i64, count: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO daily_usage (user_id, day, count) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, day) \
             DO UPDATE SET count = GREATEST(daily_usage.count, excluded.count)",
        )
        .bind(user_id)
        .bind(day)
        .bind(sql_limit(count))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_sandbox(&self, sandbox: NewSandbox) -> Result<SandboxRecord> {
        sandboxes::insert(&self.pool, sandbox, self.node.as_deref()).await
    }

    async fn try_insert_sandbox_if_below(
        &self,
        sandbox: NewSandbox,
        limit: u64,
        now: i64,
    ) -> Result<SandboxRecord> {
        sandboxes::try_insert_if_below(&self.pool, sandbox, self.node.as_deref(), limit, now).await
    }

    async fn mark_sandbox_deleted(&self, id: &str, at: i64) -> Result<bool> {
        sandboxes::update(
            &self.pool,
            "UPDATE sandboxes SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
            id,
            at,
        )
        .await
    }

    async fn set_sandbox_engine(&self, id: &str, engine: &str) -> Result<bool> {
        sandboxes::update(
            &self.pool,
            "UPDATE sandboxes SET engine = $2 WHERE id = $1 AND deleted_at IS NULL",
            id,
            engine,
        )
        .await
    }

    async fn set_sandbox_expiry(&self, id: &str, expires_at: i64) -> Result<bool> {
        sandboxes::update(
            &self.pool,
            "UPDATE sandboxes SET expires_at = $2 WHERE id = $1 AND deleted_at IS NULL",
            id,
            expires_at,
        )
        .await
    }

    async fn set_sandbox_durable(&self, id: &str, state: &str, expires_at: i64) -> Result<bool> {
        sandboxes::set_durable(&self.pool, id, state, expires_at).await
    }

    async fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        sandboxes::by_id(&self.pool, id).await
    }

    async fn active_sandboxes_of(&self, user_id: &str, now: i64) -> Result<Vec<SandboxRecord>> {
        sandboxes::active_of(&self.pool, user_id, now).await
    }

    async fn active_sandbox_count(&self, user_id: &str, now: i64) -> Result<u64> {
        sandboxes::active_count(&self.pool, user_id, now).await
    }

    async fn sandboxes_left_active(&self) -> Result<Vec<SandboxRecord>> {
        sandboxes::left_active(&self.pool, self.node.as_deref()).await
    }

    async fn set_sandbox_paused(&self, id: &str, state: &str, expires_at: i64) -> Result<bool> {
        sandboxes::set_paused(&self.pool, id, state, expires_at).await
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
        let resume = sandboxes::Resume {
            id,
            user_id,
            state,
            expires_at,
        };
        sandboxes::try_resume_if_below(&self.pool, resume, limit, now).await
    }

    async fn paused_sandbox_count(&self, user_id: &str) -> Result<u64> {
        sandboxes::paused_count(&self.pool, user_id).await
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

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    /// Every file in `migrations/postgres/` is listed in `MIGRATIONS`, and nothing else is.
    #[test]
    fn migration_list_matches_the_directory() {
        crate::shared::assert_migrations_match("postgres", super::MIGRATIONS);
    }
}
