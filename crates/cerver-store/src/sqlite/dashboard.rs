//! The queries behind the dashboard: key names, when keys were last used, usage history.

use sqlx::SqlitePool;

use crate::error::Result;
use crate::shared::count;

/// How stale a key's `last_used_at` may get: the touch is skipped while the recorded time is
/// newer than this, so busy keys cost one write a minute, not one per request.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

pub async fn set_key_name(pool: &SqlitePool, key_id: &str, name: Option<&str>) -> Result<bool> {
    let done = sqlx::query("UPDATE api_keys SET name = ?2 WHERE id = ?1")
        .bind(key_id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn touch_key(pool: &SqlitePool, key_id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE api_keys SET last_used_at = ?2 \
         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
    )
    .bind(key_id)
    .bind(now)
    .bind(LAST_USED_RESOLUTION_MS)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn requests_between(
    pool: &SqlitePool,
    user_id: &str,
    first_day: i64,
    last_day: i64,
) -> Result<Vec<(i64, u64)>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT day, count FROM daily_usage \
         WHERE user_id = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day",
    )
    .bind(user_id)
    .bind(first_day)
    .bind(last_day)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(d, n)| (d, count(n))).collect())
}
