//! Users, API keys, one-time tokens and sessions on SQLite.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use crate::error::{Result, StoreError};
use crate::model::{
    ApiKey, KeyRef, Plan, Session, TokenKind, User, UserSummary, normalize_email, now_ms,
};
use crate::shared::{count, new_id};

// Column lists, aliased so that rows of joins decode with the same functions. `RETURNING`
// cannot name a table, hence the unqualified forms.
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

fn user_from(row: &SqliteRow) -> Result<User> {
    Ok(User {
        id: row.try_get("u_id")?,
        email: row.try_get("u_email")?,
        plan: row.try_get::<&str, _>("u_plan")?.parse()?,
        created_at: row.try_get("u_created_at")?,
    })
}

fn key_from(row: &SqliteRow) -> Result<ApiKey> {
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

fn session_from(row: &SqliteRow) -> Result<Session> {
    Ok(Session {
        id_hash: row.try_get("s_id_hash")?,
        user_id: row.try_get("s_user_id")?,
        created_at: row.try_get("s_created_at")?,
        expires_at: row.try_get("s_expires_at")?,
    })
}

pub async fn create_user_if_missing(pool: &SqlitePool, email: &str, plan: Plan) -> Result<User> {
    let email = normalize_email(email)?;
    // Racing callers both insert; one wins, the other does nothing, both read the winner.
    sqlx::query(
        "INSERT INTO users (id, email, plan, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(new_id())
    .bind(&email)
    .bind(plan.as_str())
    .bind(now_ms())
    .execute(pool)
    .await?;
    user_by_email(pool, &email)
        .await?
        .ok_or(StoreError::UserNotFound)
}

pub async fn user_by_email(pool: &SqlitePool, email: &str) -> Result<Option<User>> {
    let email = normalize_email(email)?;
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u WHERE u.email = ?1"
    ))
    .bind(email)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(user_from).transpose()
}

pub async fn user_by_id(pool: &SqlitePool, id: &str) -> Result<Option<User>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u WHERE u.id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(user_from).transpose()
}

pub async fn set_plan(pool: &SqlitePool, email: &str, plan: Plan) -> Result<User> {
    let email = normalize_email(email)?;
    let row = sqlx::query(concat!(
        "UPDATE users SET plan = ?1 WHERE email = ?2 RETURNING ",
        user_returning!()
    ))
    .bind(plan.as_str())
    .bind(email)
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(user_from)
        .transpose()?
        .ok_or(StoreError::UserNotFound)
}

pub async fn list_users(pool: &SqlitePool) -> Result<Vec<UserSummary>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        user_columns!(),
        ", COUNT(k.id) AS total_keys, COUNT(k.id) - COUNT(k.revoked_at) AS active_keys \
         FROM users u LEFT JOIN api_keys k ON k.user_id = u.id \
         GROUP BY u.id ORDER BY u.created_at, u.email"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(UserSummary {
                user: user_from(row)?,
                active_keys: count(row.try_get("active_keys")?),
                total_keys: count(row.try_get("total_keys")?),
            })
        })
        .collect()
}

pub async fn insert_key(
    pool: &SqlitePool,
    user_id: &str,
    prefix: &str,
    hash: &str,
) -> Result<ApiKey> {
    let row = sqlx::query(concat!(
        "INSERT INTO api_keys (id, user_id, prefix, hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING ",
        key_returning!()
    ))
    .bind(new_id())
    .bind(user_id)
    .bind(prefix)
    .bind(hash)
    .bind(now_ms())
    .fetch_one(pool)
    .await
    .map_err(|e| StoreError::from_insert(e, "API key hash"))?;
    key_from(&row)
}

pub async fn key_by_hash(pool: &SqlitePool, hash: &str) -> Result<Option<(ApiKey, User)>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        ", ",
        user_columns!(),
        " FROM api_keys k JOIN users u ON u.id = k.user_id \
         WHERE k.hash = ?1 AND k.revoked_at IS NULL"
    ))
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    row.map(|row| Ok((key_from(&row)?, user_from(&row)?)))
        .transpose()
}

pub async fn revoke_key(pool: &SqlitePool, key: KeyRef<'_>) -> Result<ApiKey> {
    let (select, value) = match key {
        KeyRef::Id(v) => ("SELECT id FROM api_keys WHERE id = ?1", v),
        KeyRef::Prefix(v) => ("SELECT id FROM api_keys WHERE prefix = ?1", v),
        KeyRef::Hash(v) => ("SELECT id FROM api_keys WHERE hash = ?1", v),
    };
    let ids: Vec<String> = sqlx::query_scalar(select)
        .bind(value)
        .fetch_all(pool)
        .await?;
    let id = match ids.as_slice() {
        [] => return Err(StoreError::KeyNotFound),
        [id] => id,
        many => {
            return Err(StoreError::AmbiguousKey {
                matches: many.len() as u64,
            });
        }
    };
    let row = sqlx::query(concat!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2 RETURNING ",
        key_returning!()
    ))
    .bind(now_ms())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(key_from)
        .transpose()?
        .ok_or(StoreError::KeyNotFound)
}

pub async fn keys_of(pool: &SqlitePool, user_id: &str) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys k WHERE k.user_id = ?1 ORDER BY k.created_at, k.id"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(key_from).collect()
}

pub async fn insert_token(
    pool: &SqlitePool,
    hash: &str,
    kind: TokenKind,
    email: &str,
    expires_at: i64,
) -> Result<()> {
    let email = normalize_email(email)?;
    sqlx::query(
        "INSERT INTO one_time_tokens (hash, kind, email, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(hash)
    .bind(kind.as_str())
    .bind(email)
    .bind(now_ms())
    .bind(expires_at)
    .execute(pool)
    .await
    .map_err(|e| StoreError::from_insert(e, "token hash"))?;
    Ok(())
}

pub async fn insert_session(
    pool: &SqlitePool,
    id_hash: &str,
    user_id: &str,
    expires_at: i64,
) -> Result<Session> {
    let session = Session {
        id_hash: id_hash.to_owned(),
        user_id: user_id.to_owned(),
        created_at: now_ms(),
        expires_at,
    };
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&session.id_hash)
    .bind(&session.user_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(pool)
    .await
    .map_err(|e| StoreError::from_insert(e, "session"))?;
    Ok(session)
}

pub async fn session(
    pool: &SqlitePool,
    id_hash: &str,
    now: i64,
) -> Result<Option<(Session, User)>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        session_columns!(),
        ", ",
        user_columns!(),
        " FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_hash = ?1 AND s.expires_at > ?2"
    ))
    .bind(id_hash)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    row.map(|row| Ok((session_from(&row)?, user_from(&row)?)))
        .transpose()
}

pub async fn purge_expired(pool: &SqlitePool, now: i64) -> Result<u64> {
    let tokens =
        sqlx::query("DELETE FROM one_time_tokens WHERE expires_at <= ?1 OR used_at IS NOT NULL")
            .bind(now)
            .execute(pool)
            .await?;
    let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(tokens.rows_affected() + sessions.rows_affected())
}
