//! The sandbox registry on Postgres, with the per-user slot claims (see the module doc of
//! `postgres.rs` for why a lock on the owner's row makes them exact).

use sqlx::postgres::PgRow;
use sqlx::{Executor, PgPool, Postgres, Row};

use crate::error::{Result, StoreError};
use crate::model::{NewSandbox, SandboxRecord};
use crate::shared::count;

/// A sandbox that is not paused: its durable JSON has no `"paused"` member, or a null one
/// (what SQLite's `json_extract(…) IS NULL` means).
macro_rules! unpaused {
    () => {
        "COALESCE(jsonb_typeof(durable::jsonb -> 'paused'), 'null') = 'null'"
    };
}

macro_rules! columns {
    () => {
        "id, user_id, engine, created_at, expires_at, deleted_at, metadata, durable, node"
    };
}

/// Counts the user's active, unpaused sandboxes (what the sandbox limit counts).
const ACTIVE_COUNT: &str = concat!(
    "SELECT COUNT(*) FROM sandboxes \
     WHERE user_id = $1 AND deleted_at IS NULL AND expires_at > $2 AND ",
    unpaused!()
);

fn sandbox_from(row: &PgRow) -> Result<SandboxRecord> {
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

async fn insert_on<'e, E>(executor: E, sandbox: &NewSandbox, node: Option<&str>) -> Result<()>
where
    E: Executor<'e, Database = Postgres>,
{
    let metadata = serde_json::to_string(&sandbox.metadata)
        .map_err(|_| StoreError::InvalidInput("sandbox metadata is not serialisable"))?;
    sqlx::query(
        "INSERT INTO sandboxes (id, user_id, engine, created_at, expires_at, metadata, node) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

fn recorded(sandbox: NewSandbox, node: Option<&str>) -> SandboxRecord {
    SandboxRecord {
        node: node.map(str::to_owned),
        ..sandbox.into()
    }
}

pub async fn insert(
    pool: &PgPool,
    sandbox: NewSandbox,
    node: Option<&str>,
) -> Result<SandboxRecord> {
    insert_on(pool, &sandbox, node).await?;
    Ok(recorded(sandbox, node))
}

/// Begins a transaction holding the lock on `user_id`'s row until it ends: how slot claims of
/// one user are serialised. `None` if there is no such user.
async fn lock_user(
    pool: &PgPool,
    user_id: &str,
) -> Result<Option<sqlx::Transaction<'static, Postgres>>> {
    let mut tx = pool.begin().await?;
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(found.map(|_| tx))
}

pub async fn try_insert_if_below(
    pool: &PgPool,
    sandbox: NewSandbox,
    node: Option<&str>,
    limit: u64,
    now: i64,
) -> Result<SandboxRecord> {
    let Some(mut tx) = lock_user(pool, &sandbox.user_id).await? else {
        return Err(StoreError::UserNotFound);
    };
    let active: i64 = sqlx::query_scalar(ACTIVE_COUNT)
        .bind(&sandbox.user_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    if count(active) >= limit {
        // Dropping `tx` rolls back (and releases the lock).
        return Err(StoreError::SandboxLimit { limit });
    }
    insert_on(&mut *tx, &sandbox, node).await?;
    tx.commit().await?;
    Ok(recorded(sandbox, node))
}

/// A resume to record: the sandbox, its owner, its new durable state and expiry.
pub struct Resume<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub state: &'a str,
    pub expires_at: i64,
}

pub async fn try_resume_if_below(
    pool: &PgPool,
    resume: Resume<'_>,
    limit: u64,
    now: i64,
) -> Result<bool> {
    let Some(mut tx) = lock_user(pool, resume.user_id).await? else {
        // No such user, so no sandbox of theirs to resume.
        return Ok(false);
    };
    let active: i64 = sqlx::query_scalar(ACTIVE_COUNT)
        .bind(resume.user_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    if count(active) >= limit {
        return Err(StoreError::SandboxLimit { limit });
    }
    let done = sqlx::query(
        "UPDATE sandboxes SET durable = $1, expires_at = $2 \
         WHERE id = $3 AND user_id = $4 AND deleted_at IS NULL",
    )
    .bind(resume.state)
    .bind(resume.expires_at)
    .bind(resume.id)
    .bind(resume.user_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// Runs a one-value `UPDATE … WHERE id = $1` (the value is `$2`); whether it changed a row.
pub async fn update<'q, T>(pool: &PgPool, sql: &'q str, id: &'q str, value: T) -> Result<bool>
where
    T: 'q + Send + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    let done = sqlx::query(sql).bind(id).bind(value).execute(pool).await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_durable(pool: &PgPool, id: &str, state: &str, expires_at: i64) -> Result<bool> {
    // A late write for a running sandbox never unpauses one that was paused meanwhile.
    let done = sqlx::query(concat!(
        "UPDATE sandboxes SET durable = $1, expires_at = $2 \
         WHERE id = $3 AND deleted_at IS NULL AND ",
        unpaused!()
    ))
    .bind(state)
    .bind(expires_at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_paused(pool: &PgPool, id: &str, state: &str, expires_at: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE sandboxes SET durable = $1, expires_at = $2 WHERE id = $3 AND deleted_at IS NULL",
    )
    .bind(state)
    .bind(expires_at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn by_id(pool: &PgPool, id: &str) -> Result<Option<SandboxRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM sandboxes WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(sandbox_from).transpose()
}

pub async fn active_of(pool: &PgPool, user_id: &str, now: i64) -> Result<Vec<SandboxRecord>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM sandboxes WHERE user_id = $1 AND deleted_at IS NULL AND expires_at > $2 \
         ORDER BY created_at, id"
    ))
    .bind(user_id)
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter().map(sandbox_from).collect()
}

pub async fn active_count(pool: &PgPool, user_id: &str, now: i64) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(ACTIVE_COUNT)
        .bind(user_id)
        .bind(now)
        .fetch_one(pool)
        .await?;
    Ok(count(n))
}

/// Sandboxes never marked deleted: `node`'s only, when given (other nodes' are theirs to
/// reap), every node's otherwise.
pub async fn left_active(pool: &PgPool, node: Option<&str>) -> Result<Vec<SandboxRecord>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM sandboxes WHERE deleted_at IS NULL AND ($1::text IS NULL OR node = $1) \
         ORDER BY created_at, id"
    ))
    .bind(node)
    .fetch_all(pool)
    .await?;
    rows.iter().map(sandbox_from).collect()
}

pub async fn paused_count(pool: &PgPool, user_id: &str) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(concat!(
        "SELECT COUNT(*) FROM sandboxes WHERE user_id = $1 AND deleted_at IS NULL \
         AND durable IS NOT NULL AND NOT ",
        unpaused!()
    ))
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(count(n))
}
