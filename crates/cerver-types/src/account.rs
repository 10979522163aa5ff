//! The dashboard's JSON API (`/account*`, session-authenticated): the account overview and the
//! user's API keys. Times are Unix seconds (UTC).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /account`: who is signed in, their plan, its limits and their usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountResponse {
    pub email: String,
    /// `trial`, `free` or `pro`.
    pub plan: String,
    pub limits: PlanLimitsInfo,
    pub usage: UsageInfo,
    /// Send it as `X-CSRF-Token` with every state-changing request made with the session
    /// cookie.
    pub csrf_token: String,
}

/// What the plan allows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanLimitsInfo {
    /// Authenticated API requests per UTC day.
    pub requests_per_day: u64,
    /// Sandboxes alive at once.
    pub max_sandboxes: u64,
    /// Longest sandbox lifetime, ms.
    pub max_timeout_ms: u64,
    /// Whether ports of containers sandboxes may be exposed.
    pub port_exposure: bool,
}

/// Requests counted against the daily limit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageInfo {
    /// Requests today (UTC).
    pub today: u64,
    /// The plan's daily limit.
    pub daily_limit: u64,
    /// When today's budget resets (the next UTC midnight).
    pub resets_at: u64,
    /// The last 14 days, oldest first, today last.
    pub days: Vec<UsageDay>,
}

/// One UTC day of usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    /// The day's start (midnight UTC).
    pub date: u64,
    pub requests: u64,
}

/// One API key as the dashboard shows it: never the key itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    pub key_id: String,
    /// The name its owner gave it, if any.
    pub name: Option<String>,
    /// The key's first characters, e.g. `sk_live_a1B2c3`.
    pub prefix: String,
    /// The prefix followed by a mask, e.g. `sk_live_a1B2c3••••••••`.
    pub masked: String,
    pub created_at: u64,
    /// When it last authenticated a request (to about a minute); `null` if never.
    pub last_used_at: Option<u64>,
}

/// `GET /account/keys`: the account's active keys, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// `POST /account/keys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(examples(json!({"name": "laptop"})))]
pub struct CreateKeyRequest {
    /// A name to tell the key apart (at most 64 characters).
    #[serde(default)]
    pub name: Option<String>,
}

/// Answer of `POST /account/keys`: the new key, shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The full key. It is not stored and cannot be shown again.
    pub api_key: String,
    pub key: KeyInfo,
}

/// Answer of `DELETE /account/keys/{key_id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedKey {
    pub key_id: String,
    /// `true`: the key stopped working.
    pub revoked: bool,
}
