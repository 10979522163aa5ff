//! The nodes table on Postgres (see [`Store::register_node`](crate::Store::register_node)).

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::{Result, StoreError};
use crate::model::{Node, NodeInfo};
use crate::shared::{count, sql_limit};

const COLUMNS: &str = "name, advertise_url, started_at, heartbeat_at, lease_expires_at, \
                       draining, live_sandboxes, capacity";

fn node_from(row: &PgRow) -> Result<Node> {
    Ok(Node {
        name: row.try_get("name")?,
        advertise_url: row.try_get("advertise_url")?,
        started_at: row.try_get("started_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        draining: row.try_get("draining")?,
        live_sandboxes: count(row.try_get("live_sandboxes")?),
        capacity: row.try_get::<Option<i64>, _>("capacity")?.map(count),
    })
}

pub async fn register(pool: &PgPool, info: &NodeInfo, now: i64, lease_ms: i64) -> Result<Node> {
    let row = sqlx::query(&format!(
        "INSERT INTO nodes (name, advertise_url, started_at, heartbeat_at, lease_expires_at, \
                            capacity) \
         VALUES ($1, $2, $3, $3, $3 + $4, $5) \
         ON CONFLICT (name) DO UPDATE SET advertise_url = excluded.advertise_url, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
             lease_expires_at = excluded.lease_expires_at, live_sandboxes = 0, \
             capacity = excluded.capacity \
         RETURNING {COLUMNS}"
    ))
    .bind(&info.name)
    .bind(&info.advertise_url)
    .bind(now)
    .bind(lease_ms)
    .bind(info.capacity.map(sql_limit))
    .fetch_one(pool)
    .await?;
    node_from(&row)
}

pub async fn heartbeat(
    pool: &PgPool,
    name: &str,
    now: i64,
    lease_ms: i64,
    live: u64,
) -> Result<Node> {
    let row = sqlx::query(&format!(
        "UPDATE nodes SET heartbeat_at = $2, lease_expires_at = $2 + $3, live_sandboxes = $4 \
         WHERE name = $1 RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(now)
    .bind(lease_ms)
    .bind(sql_limit(live))
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(node_from)
        .transpose()?
        .ok_or_else(|| StoreError::NodeNotFound(name.to_owned()))
}

pub async fn list(pool: &PgPool) -> Result<Vec<Node>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes ORDER BY name"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(node_from).collect()
}

pub async fn set_draining(pool: &PgPool, name: &str, draining: bool) -> Result<Node> {
    let row = sqlx::query(&format!(
        "UPDATE nodes SET draining = $2 WHERE name = $1 RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(draining)
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(node_from)
        .transpose()?
        .ok_or_else(|| StoreError::NodeNotFound(name.to_owned()))
}

pub async fn node_of_label(pool: &PgPool, label: &str) -> Result<Option<String>> {
    // Labels are hex digits only (checked by the caller's host parsing); refuse anything else
    // rather than let `%` or `_` act as wildcards.
    if label.is_empty() || !label.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let node: Option<Option<String>> = sqlx::query_scalar(
        "SELECT node FROM sandboxes WHERE deleted_at IS NULL AND id LIKE $1 || '%' \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(label.to_ascii_lowercase())
    .fetch_optional(pool)
    .await?;
    Ok(node.flatten())
}

pub async fn end_sandboxes_of_dead_nodes(pool: &PgPool, except: &str, now: i64) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sandboxes SET deleted_at = $2 WHERE deleted_at IS NULL AND node <> $1 \
         AND node IN (SELECT name FROM nodes WHERE lease_expires_at <= $2)",
    )
    .bind(except)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
