//! The records the store keeps, and the two clocks they are measured with (Unix milliseconds,
//! UTC day numbers).

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::StoreError;

/// Milliseconds in a day: usage is counted per UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// Now, in milliseconds since the Unix epoch (the unit of every timestamp in the store).
pub fn now_ms() -> i64 {
    // A clock before 1970 or past year 292 million is not worth an error path.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The UTC day of a timestamp: whole days since 1970-01-01, the key of the daily usage counter.
pub fn utc_day(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

/// Lower-cases and trims an email, the form in which it is stored and looked up.
pub fn normalize_email(email: &str) -> Result<String, StoreError> {
    let email = email.trim().to_lowercase();
    if email.is_empty() {
        return Err(StoreError::InvalidInput("empty email"));
    }
    Ok(email)
}

/// A user's plan. The limits of each plan are policy and live in the control plane; the store
/// only records which plan a user is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plan {
    /// Signed up, verified, not upgraded: `sk_trial_` keys.
    Trial,
    /// `sk_live_` keys, free tier.
    Free,
    /// `sk_live_` keys, paid tier.
    Pro,
}

impl Plan {
    /// Every plan, cheapest first.
    pub const ALL: [Plan; 3] = [Plan::Trial, Plan::Free, Plan::Pro];

    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Trial => "trial",
            Plan::Free => "free",
            Plan::Pro => "pro",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown plan {s:?}")))
    }
}

/// What a one-time token is for: a token of one kind cannot be consumed as the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Email verification at sign-up; consuming it issues the first API key.
    Signup,
    /// Magic link to the dashboard; consuming it opens a session.
    Login,
}

impl TokenKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Signup => "signup",
            TokenKind::Login => "login",
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// Lower-cased.
    pub email: String,
    pub plan: Plan,
    pub created_at: i64,
}

/// A user with the number of their keys, as the admin listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub user: User,
    /// Keys not revoked.
    pub active_keys: u64,
    /// All keys, revoked ones included.
    pub total_keys: u64,
}

/// An API key as stored: never the key itself, only its display prefix (and, in the
/// database, its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    /// `sk_trial_` / `sk_live_` + the first 6 characters of the body, for display.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// A name its owner gave it in the dashboard.
    pub name: Option<String>,
    /// When it last authenticated a request (kept to about a minute).
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// Whether the key still authenticates.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Which key [`Store::revoke_key`](crate::Store::revoke_key) should revoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// The key's id.
    Id(&'a str),
    /// The display prefix (refused with [`StoreError::AmbiguousKey`] if several keys share it).
    Prefix(&'a str),
    /// The SHA-256 hex of the full key (see [`hash_key`](crate::keys::hash_key)).
    Hash(&'a str),
}

/// A dashboard session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 hex of the session cookie's value.
    pub id_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A sandbox to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSandbox {
    pub id: String,
    pub user_id: String,
    pub engine: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The caller's key-value pairs; stored as JSON text.
    pub metadata: serde_json::Value,
}

/// A recorded sandbox. It is *active* while `deleted_at` is `None` and `expires_at` is in the
/// future; it is *left active* while `deleted_at` is `None`, whatever its expiry.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub user_id: String,
    pub engine: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub deleted_at: Option<i64>,
    pub metadata: serde_json::Value,
    /// What a restarted server needs to rebuild it (the control plane's JSON), if recorded.
    pub durable: Option<String>,
    /// The node that holds it (the store's node when it was recorded; `None` for records made
    /// before nodes existed or by a store opened without one).
    pub node: Option<String>,
}

impl SandboxRecord {
    /// Whether the sandbox counts against its owner's quota at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.deleted_at.is_none() && self.expires_at > now
    }
}

impl From<NewSandbox> for SandboxRecord {
    fn from(s: NewSandbox) -> Self {
        SandboxRecord {
            id: s.id,
            user_id: s.user_id,
            engine: s.engine,
            created_at: s.created_at,
            expires_at: s.expires_at,
            deleted_at: None,
            metadata: s.metadata,
            durable: None,
            node: None,
        }
    }
}

/// What a node tells the store about itself when it registers (see
/// [`Store::register_node`](crate::Store::register_node)).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Unique in the cluster (default: the host name).
    pub name: String,
    /// Where other nodes reach this one, e.g. `http://10.0.0.5:8080`.
    pub advertise_url: Option<String>,
    /// Most sandboxes this node holds at once, if bounded.
    pub capacity: Option<u64>,
}

/// A node of the cluster as recorded: alive while its lease has not run out.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub advertise_url: Option<String>,
    /// When the node (last) registered, i.e. started.
    pub started_at: i64,
    /// Its last heartbeat (or registration).
    pub heartbeat_at: i64,
    /// Its lease runs until then; each heartbeat moves it on.
    pub lease_expires_at: i64,
    /// No new sandboxes are to be placed on it (set by `cerver admin drain`).
    pub draining: bool,
    /// Sandboxes it held at its last heartbeat.
    pub live_sandboxes: u64,
    /// Most sandboxes it holds at once, if bounded.
    pub capacity: Option<u64>,
}

impl Node {
    /// Whether its lease is still running at `now`.
    pub fn is_alive(&self, now: i64) -> bool {
        self.lease_expires_at > now
    }
}
