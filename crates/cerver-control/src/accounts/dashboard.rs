//! The dashboard's account operations, called by thin HTTP handlers: the account overview
//! (plan, limits, usage history), the user's own API keys (list, create, revoke), session
//! CSRF tokens and logout.
//!
//! Every operation takes the signed-in [`User`] and touches only that user's rows: another
//! user's key is "not found", never "forbidden".

use std::collections::HashMap;
use std::sync::Mutex;

use cerver_store::keys::{constant_time_eq, generate_key, hash_key};
use cerver_store::{KeyRef, User, now_ms, utc_day};

pub use cerver_store::ApiKey;

use super::{Accounts, Caller, DAY_MS, MAX_CACHED_KEYS, bump_generation, store_err};
use crate::ControlError;
use crate::plans::{PlanLimits, limits};

/// Days of history in the account overview, today included.
pub const HISTORY_DAYS: i64 = 14;
/// Unrevoked keys one user may hold (creating keys is the one thing a session can repeat).
pub const MAX_ACTIVE_KEYS: usize = 20;
/// Longest key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 64;
/// A key's last use is written at most this often (the store skips fresher writes too).
const KEY_USE_RESOLUTION_MS: i64 = 60_000;

/// When each key's last use was last sent to the store, so that a busy key costs one write a
/// minute rather than one per request. Bounded like the key cache.
#[derive(Default)]
pub(super) struct KeyUse {
    written: Mutex<HashMap<String, i64>>,
}

/// What the dashboard shows about an account.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub user: User,
    pub limits: PlanLimits,
    /// Requests counted today (UTC), exact.
    pub requests_today: u64,
    /// `(UTC day, requests)` for the last [`HISTORY_DAYS`] days, oldest first, today last;
    /// days without requests are 0.
    pub history: Vec<(i64, u64)>,
    /// When today's budget resets (the next UTC midnight), ms.
    pub resets_at_ms: i64,
}

/// The CSRF token of a session: derived from the session secret (SHA-256 under its own
/// prefix), so it needs no storage, dies with the session and cannot be computed without it.
pub fn csrf_token(session: &str) -> String {
    hash_key(&format!("cerver-csrf:{session}"))
}

impl Accounts {
    /// The base of the server's public links, e.g. `https://cerver.example.com`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether `presented` is the CSRF token of `session` (compared in constant time).
    pub fn csrf_matches(&self, session: &str, presented: &str) -> bool {
        constant_time_eq(csrf_token(session).as_bytes(), presented.as_bytes())
    }

    /// The caller a dashboard session acts as (the same plan limits as its API keys).
    pub fn caller_of(&self, user: User) -> Caller {
        Caller {
            limits: limits(user.plan),
            user,
        }
    }

    /// Ends a session; ending an unknown one is not an error.
    pub async fn logout(&self, session: &str) -> Result<(), ControlError> {
        if session.is_empty() || session.len() > 256 {
            return Ok(());
        }
        self.store
            .delete_session(&hash_key(session))
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Plan, limits, today's usage and the last [`HISTORY_DAYS`] days.
    pub async fn account(&self, user: &User) -> Result<AccountView, ControlError> {
        let now = now_ms();
        let today = utc_day(now);
        let first = today - (HISTORY_DAYS - 1);
        let stored = self
            .store
            .requests_between(&user.id, first, today)
            .await
            .map_err(store_err)?;
        // The server counts in memory and flushes every 250 ms: the live count is the truth.
        let live = self
            .usage
            .lock()
            .await
            .get(&(user.id.clone(), today))
            .map(|c| c.count);
        let mut history: Vec<(i64, u64)> = (first..=today).map(|d| (d, 0)).collect();
        for (day, n) in stored {
            history[(day - first) as usize].1 = n;
        }
        let last = history.last_mut().expect("HISTORY_DAYS > 0");
        last.1 = last.1.max(live.unwrap_or(0));
        Ok(AccountView {
            requests_today: last.1,
            limits: limits(user.plan),
            user: user.clone(),
            history,
            resets_at_ms: (today + 1) * DAY_MS,
        })
    }

    /// The user's unrevoked keys, oldest first.
    pub async fn keys(&self, user: &User) -> Result<Vec<ApiKey>, ControlError> {
        let keys = self.store.keys_of(&user.id).await.map_err(store_err)?;
        Ok(keys.into_iter().filter(ApiKey::is_active).collect())
    }

    /// Mints a key for the user, optionally named; the full key is returned once.
    pub async fn create_key(
        &self,
        user: &User,
        name: Option<&str>,
    ) -> Result<(String, ApiKey), ControlError> {
        let name = match name.map(str::trim) {
            None | Some("") => None,
            Some(n) if n.chars().count() > MAX_KEY_NAME_CHARS => {
                return Err(ControlError::BadRequest(format!(
                    "a key name has at most {MAX_KEY_NAME_CHARS} characters"
                )));
            }
            Some(n) if n.chars().any(char::is_control) => {
                return Err(ControlError::BadRequest(
                    "a key name cannot contain control characters".into(),
                ));
            }
            Some(n) => Some(n),
        };
        if self.keys(user).await?.len() >= MAX_ACTIVE_KEYS {
            return Err(ControlError::Conflict(format!(
                "at most {MAX_ACTIVE_KEYS} active keys per account: revoke one first"
            )));
        }
        let key = generate_key(user.plan);
        let mut record = self
            .store
            .insert_key(&user.id, &key.prefix, &key.hash)
            .await
            .map_err(store_err)?;
        if let Some(name) = name {
            self.store
                .set_key_name(&record.id, Some(name))
                .await
                .map_err(store_err)?;
            record.name = Some(name.to_string());
        }
        tracing::info!(user.id = %user.id, key.id = %record.id, "key created in the dashboard");
        Ok((key.full, record))
    }

    /// Revokes one of the user's own keys; it stops working at once. Another user's key, an
    /// unknown id and an already revoked key are all [`ControlError::KeyNotFound`].
    pub async fn revoke_own_key(&self, user: &User, key_id: &str) -> Result<(), ControlError> {
        if !self.keys(user).await?.iter().any(|k| k.id == key_id) {
            return Err(ControlError::KeyNotFound);
        }
        self.store
            .revoke_key(KeyRef::Id(key_id))
            .await
            .map_err(store_err)?;
        self.forget_cached_keys();
        tracing::info!(user.id = %user.id, key.id = %key_id, "key revoked in the dashboard");
        Ok(())
    }

    /// Empties the key cache now, and moves the accounts generation on so that a lookup that
    /// read the store before the change cannot put a stale entry back.
    fn forget_cached_keys(&self) {
        if let Some(dir) = self.generation_file.parent()
            && let Err(e) = bump_generation(dir)
        {
            tracing::error!("could not write the accounts generation: {e}");
        }
        let generation = std::fs::metadata(&self.generation_file)
            .ok()
            .and_then(|m| Some((std::os::unix::fs::MetadataExt::ino(&m), m.modified().ok()?)));
        let mut cache = self.keys.lock().unwrap();
        cache.users.clear();
        cache.generation = generation;
    }

    /// Records a key's use, writing to the store at most once a minute per key, off the
    /// request's path.
    pub(super) fn note_key_use(&self, key_id: &str) {
        let now = now_ms();
        {
            let mut written = self.key_use.written.lock().unwrap();
            if written
                .get(key_id)
                .is_some_and(|t| now - t < KEY_USE_RESOLUTION_MS)
            {
                return;
            }
            if written.len() >= MAX_CACHED_KEYS {
                written.clear();
            }
            written.insert(key_id.to_string(), now);
        }
        let store = self.store.clone();
        let key_id = key_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&key_id, now).await {
                tracing::warn!(key.id = %key_id, "could not record a key's last use: {e}");
            }
        });
    }
}
