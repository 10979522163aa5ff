//! Accounts: sign-up by email, API keys, login links and sessions, and the per-request quota.
//!
//! Secrets (keys, tokens, session ids) leave this module once, to the person they belong to;
//! the store keeps only their SHA-256 hashes. Answers to sign-up and login never reveal whether
//! an address is known.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use cerver_mail::Mailer;
use cerver_store::keys::{generate_key, generate_secret, hash_key, is_well_formed_key};
use cerver_store::{Plan, Store, StoreError, TokenKind, User, now_ms, utc_day};

use crate::ControlError;
use crate::client_limits::{ClientLimitConfig, ClientLimiter, RouteClass};
use crate::plans::{PlanLimits, limits};

mod dashboard;
pub use dashboard::{AccountView, ApiKey, csrf_token};

/// How long a sign-up verification link works.
const SIGNUP_TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;
/// How long a login link works.
const LOGIN_TOKEN_TTL_MS: i64 = 15 * 60 * 1000;
/// How long a dashboard session lasts.
pub const SESSION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
pub const DAY_MS: i64 = 24 * 3600 * 1000;
/// Bound on the key cache (it is emptied whenever accounts change).
const MAX_CACHED_KEYS: usize = 100_000;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub limits: PlanLimits,
}

/// The caller's daily request budget after this request (for `X-RateLimit-*`).
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub limit: u64,
    pub remaining: u64,
    /// When the budget resets (the next UTC midnight), unix seconds.
    pub reset_unix: u64,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    mailer: Mailer,
    /// Base of the links in mails, e.g. `http://127.0.0.1:8080`.
    public_url: String,
    /// Users by key hash, valid while the accounts generation file is unchanged (the admin CLI
    /// rewrites it after every change, so revocations and plan changes apply at once).
    keys: std::sync::Mutex<KeyCache>,
    generation_file: PathBuf,
    /// Today's request counts, exact (one server per data dir holds its lock): loaded from the
    /// store on first use, written back by [`Accounts::flush_usage`] (every
    /// [`USAGE_FLUSH_INTERVAL`] and at shutdown), so requests never wait for a database write.
    usage: tokio::sync::Mutex<HashMap<(String, i64), Counter>>,
    mail_budget: std::sync::Mutex<MailBudget>,
    /// When each key's last use was last written (see [`dashboard::KeyUse`]).
    key_use: dashboard::KeyUse,
    /// Per-client-address limits on the routes that need no key.
    clients: ClientLimiter,
    /// Other servers share the store (cluster mode): see [`Accounts::shared`].
    shared: bool,
}

/// In a shared store, how long a cached key stays trusted: a key revoked (or a plan changed)
/// on another node stops working here within this.
const SHARED_KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Mails anyone can trigger (sign-up and login need no key) are bounded, per address and in
/// total, so that the server cannot be used to flood an inbox or fill the mail spool.
const MAILS_PER_ADDRESS_PER_HOUR: u32 = 5;
const MAILS_PER_MINUTE: u32 = 60;

#[derive(Default)]
struct MailBudget {
    /// Address → (start of its one-hour window, mails sent in it).
    per_address: HashMap<String, (i64, u32)>,
    /// Start of the current one-minute window and mails sent in it.
    minute: (i64, u32),
}

impl MailBudget {
    /// Takes one mail from the budget of `email` at `now` (ms); false when spent.
    fn take(&mut self, email: &str, now: i64) -> bool {
        const HOUR: i64 = 3600 * 1000;
        const MINUTE: i64 = 60 * 1000;
        if now - self.minute.0 >= MINUTE {
            self.minute = (now, 0);
        }
        if self.minute.1 >= MAILS_PER_MINUTE {
            return false;
        }
        self.per_address.retain(|_, (start, _)| now - *start < HOUR);
        let (_, sent) = self
            .per_address
            .entry(email.to_string())
            .or_insert((now, 0));
        if *sent >= MAILS_PER_ADDRESS_PER_HOUR {
            return false;
        }
        *sent += 1;
        self.minute.1 += 1;
        true
    }
}

#[derive(Clone, Copy)]
struct Counter {
    count: u64,
    persisted: u64,
}

/// Expired tokens and sessions are purged every this many flushes (about a minute).
const PURGE_EVERY_TICKS: u64 = 240;

/// How often request counts are written to the store; a crash loses at most this much.
pub const USAGE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
struct KeyCache {
    generation: Option<(u64, SystemTime)>,
    /// When the cache was last emptied (a shared store's entries live [`SHARED_KEY_CACHE_TTL`]).
    emptied_at: Option<std::time::Instant>,
    /// Key hash → (key id, its user).
    users: HashMap<String, (String, User)>,
}

/// File whose change tells a running server that accounts changed behind its back.
const GENERATION_FILE: &str = "accounts.generation";

/// Marks the accounts of `data_dir` as changed (after the admin CLI wrote to the store).
pub fn bump_generation(data_dir: &Path) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{GENERATION_FILE}.tmp"));
    std::fs::write(&tmp, format!("{}\n", generate_secret().token))?;
    std::fs::rename(tmp, data_dir.join(GENERATION_FILE))
}

fn store_err(e: StoreError) -> ControlError {
    ControlError::Internal(format!("store: {e}"))
}

/// A recipient for mail, and the address as stored (lower-cased). Addresses are hostile input.
fn parse_address(email: &str) -> Result<(cerver_mail::Address, String), ControlError> {
    let to = cerver_mail::parse_email(email)
        .map_err(|_| ControlError::BadRequest("a valid email address is required".into()))?;
    let stored = to.to_string().to_lowercase();
    Ok((to, stored))
}

fn usage_at(limit: u64, remaining: u64, now: i64) -> Usage {
    let next_midnight = (utc_day(now) + 1) * DAY_MS;
    Usage {
        limit,
        remaining,
        reset_unix: (next_midnight / 1000) as u64,
    }
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        mailer: Mailer,
        public_url: String,
        data_dir: &Path,
    ) -> Accounts {
        Accounts {
            store,
            mailer,
            public_url: public_url.trim_end_matches('/').to_string(),
            keys: Default::default(),
            generation_file: data_dir.join(GENERATION_FILE),
            usage: Default::default(),
            mail_budget: Default::default(),
            key_use: Default::default(),
            clients: ClientLimiter::new(ClientLimitConfig::default()),
            shared: false,
        }
    }

    /// Marks the store as shared with other servers (cluster mode on Postgres): each request
    /// is then counted in the store, exactly across every server
    /// ([`Store::try_consume_request`], one round trip), instead of in this server's memory,
    /// and cached keys are looked up again after [`SHARED_KEY_CACHE_TTL`].
    pub fn shared(mut self) -> Accounts {
        self.shared = true;
        self
    }

    /// Replaces the per-client-address limits (settings; the defaults suit production).
    pub fn with_client_limits(mut self, cfg: ClientLimitConfig) -> Accounts {
        self.clients = ClientLimiter::new(cfg);
        self
    }

    /// Charges an unauthenticated request to its client address (from the socket); 429 with
    /// the seconds to wait when the client is over its limit.
    pub fn check_client(
        &self,
        client: std::net::IpAddr,
        class: RouteClass,
    ) -> Result<(), ControlError> {
        self.clients.check(client, class).map_err(|wait| {
            let now = now_ms();
            ControlError::RateLimited {
                message: "too many requests from this address; try again later".into(),
                usage: Usage {
                    limit: self.clients.limit(class),
                    remaining: 0,
                    reset_unix: (now / 1000) as u64 + wait,
                },
            }
        })
    }

    /// The key id and user of a key hash: from the cache while the accounts generation is
    /// unchanged.
    async fn user_of_key(&self, hash: &str) -> Result<Option<(String, User)>, ControlError> {
        let generation = std::fs::metadata(&self.generation_file)
            .ok()
            .and_then(|m| Some((m.ino(), m.modified().ok()?)));
        {
            let mut cache = self.keys.lock().unwrap();
            let stale = self.shared
                && cache
                    .emptied_at
                    .is_none_or(|at| at.elapsed() >= SHARED_KEY_CACHE_TTL);
            if cache.generation != generation || stale {
                cache.users.clear();
                cache.generation = generation;
                cache.emptied_at = Some(std::time::Instant::now());
            }
            if let Some(found) = cache.users.get(hash) {
                return Ok(Some(found.clone()));
            }
        }
        let found = self.store.key_by_hash(hash).await.map_err(store_err)?;
        let Some((key, user)) = found else {
            return Ok(None);
        };
        let mut cache = self.keys.lock().unwrap();
        if cache.generation == generation && cache.users.len() < MAX_CACHED_KEYS {
            cache
                .users
                .insert(hash.to_string(), (key.id.clone(), user.clone()));
        }
        Ok(Some((key.id, user)))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The address a one-time link was for; each link works once, before it expires.
    async fn consume(
        &self,
        token: &str,
        kind: TokenKind,
        what: &str,
    ) -> Result<String, ControlError> {
        let invalid =
            || ControlError::BadRequest(format!("this {what} link is invalid, used or expired"));
        if token.is_empty() || token.len() > 256 {
            return Err(invalid());
        }
        self.store
            .consume_token(&hash_key(token), kind, now_ms())
            .await
            .map_err(store_err)?
            .ok_or_else(invalid)
    }

    /// Mails a verification link. The answer is the same whether or not the address is known.
    pub async fn signup(&self, email: &str) -> Result<(), ControlError> {
        let (to, email) = parse_address(email)?;
        // The budget first: a refused request must not leave a token row behind.
        self.take_mail_budget(&email)?;
        let secret = generate_secret();
        self.store
            .insert_token(
                &secret.hash,
                TokenKind::Signup,
                &email,
                now_ms() + SIGNUP_TOKEN_TTL_MS,
            )
            .await
            .map_err(store_err)?;
        let link = format!(
            "{}/auth/verify-signup?token={}",
            self.public_url, secret.token
        );
        self.send(cerver_mail::signup_message(&to, &link)).await
    }

    /// Consumes a sign-up link and mints the user's key (shown once). A link works once.
    pub async fn verify_signup(&self, token: &str) -> Result<(String, User), ControlError> {
        let email = self
            .consume(token, TokenKind::Signup, "verification")
            .await?;
        let user = self
            .store
            .create_user_if_missing(&email, Plan::Trial)
            .await
            .map_err(store_err)?;
        let key = mint_key(self.store.as_ref(), &user).await?;
        tracing::info!(user.id = %user.id, "sign-up verified, key issued");
        Ok((key, user))
    }

    /// Mails a login link to a known address; answers the same for unknown ones.
    pub async fn login(&self, email: &str) -> Result<(), ControlError> {
        let (to, email) = parse_address(email)?;
        if self
            .store
            .user_by_email(&email)
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Ok(());
        }
        self.take_mail_budget(&email)?;
        let secret = generate_secret();
        self.store
            .insert_token(
                &secret.hash,
                TokenKind::Login,
                &email,
                now_ms() + LOGIN_TOKEN_TTL_MS,
            )
            .await
            .map_err(store_err)?;
        let link = format!(
            "{}/auth/login/verify?token={}",
            self.public_url, secret.token
        );
        self.send(cerver_mail::login_message(&to, &link)).await
    }

    /// Consumes a login link and opens a session; returns the session secret (for a cookie).
    pub async fn verify_login(&self, token: &str) -> Result<(String, User), ControlError> {
        let email = self.consume(token, TokenKind::Login, "login").await?;
        let user = self
            .store
            .user_by_email(&email)
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                ControlError::BadRequest("this login link is invalid, used or expired".into())
            })?;
        let secret = generate_secret();
        self.store
            .insert_session(&secret.hash, &user.id, now_ms() + SESSION_TTL_MS)
            .await
            .map_err(store_err)?;
        Ok((secret.token, user))
    }

    /// The user of a dashboard session, if it is valid.
    pub async fn session_user(&self, session: &str) -> Result<Option<User>, ControlError> {
        if session.is_empty() || session.len() > 256 {
            return Ok(None);
        }
        Ok(self
            .store
            .session(&hash_key(session), now_ms())
            .await
            .map_err(store_err)?
            .map(|(_, user)| user))
    }

    /// Resolves an API key and charges one request to its owner's daily budget.
    pub async fn authenticate(&self, key: &str) -> Result<(Caller, Usage), ControlError> {
        self.authenticate_as(key, true).await
    }

    /// Resolves an API key; charges one request to its owner's daily budget only if `charge`
    /// (a request another node forwarded was charged by the node that received it).
    pub async fn authenticate_as(
        &self,
        key: &str,
        charge: bool,
    ) -> Result<(Caller, Usage), ControlError> {
        let unauthorized = || ControlError::Unauthorized("invalid API key".into());
        if !is_well_formed_key(key) {
            return Err(unauthorized());
        }
        let (key_id, user) = self
            .user_of_key(&hash_key(key))
            .await?
            .ok_or_else(unauthorized)?;
        self.note_key_use(&key_id);
        let limits = limits(user.plan);
        let now = now_ms();
        let day = utc_day(now);
        if !charge {
            // The node that charged it reports the budget to the client (its `X-RateLimit-*`
            // headers replace these), so no database round trip is spent on it here.
            let usage = usage_at(limits.requests_per_day, limits.requests_per_day, now);
            return Ok((Caller { user, limits }, usage));
        }
        if self.shared {
            return self.charge_in_store(user, limits, now).await;
        }
        let count = {
            let mut usage = self.usage.lock().await;
            let slot = (user.id.clone(), day);
            if !usage.contains_key(&slot) {
                let before = self
                    .store
                    .requests_on(&user.id, day)
                    .await
                    .map_err(store_err)?;
                usage.insert(
                    slot.clone(),
                    Counter {
                        count: before,
                        persisted: before,
                    },
                );
            }
            let counter = usage.get_mut(&slot).expect("inserted above");
            if counter.count >= limits.requests_per_day {
                crate::metrics::quota_rejected("requests");
                return Err(ControlError::RateLimited {
                    message: format!(
                        "daily request limit of {} reached for the {} plan",
                        limits.requests_per_day, user.plan
                    ),
                    usage: usage_at(limits.requests_per_day, 0, now),
                });
            }
            counter.count += 1;
            counter.count
        };
        let remaining = limits.requests_per_day - count;
        Ok((
            Caller { user, limits },
            usage_at(limits.requests_per_day, remaining, now),
        ))
    }

    /// Charges one request to `user`'s budget in the shared store (exact across servers).
    async fn charge_in_store(
        &self,
        user: User,
        limits: crate::plans::PlanLimits,
        now: i64,
    ) -> Result<(Caller, Usage), ControlError> {
        let charged = self
            .store
            .try_consume_request(&user.id, utc_day(now), limits.requests_per_day)
            .await;
        match charged {
            Ok(remaining) => Ok((
                Caller { user, limits },
                usage_at(limits.requests_per_day, remaining, now),
            )),
            Err(StoreError::QuotaExceeded { .. }) => {
                crate::metrics::quota_rejected("requests");
                Err(ControlError::RateLimited {
                    message: format!(
                        "daily request limit of {} reached for the {} plan",
                        limits.requests_per_day, user.plan
                    ),
                    usage: usage_at(limits.requests_per_day, 0, now),
                })
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// Writes the request counts that changed since the last flush, and forgets past days.
    pub async fn flush_usage(&self) {
        let today = utc_day(now_ms());
        let changed: Vec<((String, i64), u64)> = {
            let mut usage = self.usage.lock().await;
            let changed = usage
                .iter_mut()
                .filter(|(_, c)| c.count > c.persisted)
                .map(|(slot, c)| {
                    c.persisted = c.count;
                    (slot.clone(), c.count)
                })
                .collect();
            usage.retain(|(_, day), _| *day >= today);
            changed
        };
        for ((user_id, day), count) in changed {
            if let Err(e) = self.store.record_requests(&user_id, day, count).await {
                tracing::error!(user.id = %user_id, "could not record usage: {e}");
            }
        }
    }

    /// Flushes request counts every [`USAGE_FLUSH_INTERVAL`] for as long as `self` lives.
    pub fn start_usage_flusher(self: &Arc<Self>) {
        let accounts = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH_INTERVAL);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                let Some(accounts) = accounts.upgrade() else {
                    return;
                };
                accounts.flush_usage().await;
                // Used and expired links and sessions would otherwise pile up forever.
                ticks += 1;
                if ticks.is_multiple_of(PURGE_EVERY_TICKS)
                    && let Err(e) = accounts.store.purge_expired(now_ms()).await
                {
                    tracing::error!("could not purge expired tokens and sessions: {e}");
                }
            }
        });
    }

    /// Takes one mail to `email` (lower-cased) from the budget; 429 when it is spent.
    fn take_mail_budget(&self, email: &str) -> Result<(), ControlError> {
        let now = now_ms();
        let allowed = self
            .mail_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(email, now);
        if allowed {
            return Ok(());
        }
        crate::metrics::quota_rejected("mails");
        Err(ControlError::RateLimited {
            message: "too many emails requested; try again later".into(),
            usage: Usage {
                limit: u64::from(MAILS_PER_ADDRESS_PER_HOUR),
                remaining: 0,
                reset_unix: (now / 1000 + 3600) as u64,
            },
        })
    }

    /// Delivers a mail whose budget was taken with [`Accounts::take_mail_budget`].
    async fn send(&self, msg: cerver_mail::Message) -> Result<(), ControlError> {
        self.mailer.send(&msg).await.map_err(|e| {
            tracing::error!("mail delivery failed: {e}");
            ControlError::Unavailable("the email could not be sent; try again later".into())
        })
    }
}

async fn mint_key(store: &dyn Store, user: &User) -> Result<String, ControlError> {
    let key = generate_key(user.plan);
    store
        .insert_key(&user.id, &key.prefix, &key.hash)
        .await
        .map_err(store_err)?;
    Ok(key.full)
}

/// Creates the user if needed (or moves them to `plan`) and a new key for them: the admin
/// CLI's `create-key`, which works on the data dir while the server runs.
pub async fn create_key(
    store: &dyn Store,
    email: &str,
    plan: Plan,
) -> Result<(String, User), ControlError> {
    let email = cerver_mail::parse_email(email)
        .map_err(|_| ControlError::BadRequest("a valid email address is required".into()))?
        .to_string()
        .to_lowercase();
    let mut user = store
        .create_user_if_missing(&email, plan)
        .await
        .map_err(store_err)?;
    if user.plan != plan {
        user = store.set_plan(&email, plan).await.map_err(store_err)?;
    }
    let key = mint_key(store, &user).await?;
    Ok((key, user))
}

#[cfg(test)]
mod tests {
    use super::{MAILS_PER_ADDRESS_PER_HOUR, MAILS_PER_MINUTE, MailBudget};

    #[test]
    fn mail_budget_bounds_each_address_and_the_total() {
        let mut b = MailBudget::default();
        for _ in 0..MAILS_PER_ADDRESS_PER_HOUR {
            assert!(b.take("a@x.io", 0));
        }
        assert!(
            !b.take("a@x.io", 1000),
            "sixth mail to one address within the hour"
        );
        assert!(b.take("a@x.io", 3600 * 1000), "a new hour");
        let mut b = MailBudget::default();
        let sent = (0..200)
            .filter(|i| b.take(&format!("u{i}@x.io"), 0))
            .count();
        assert_eq!(sent, MAILS_PER_MINUTE as usize);
        assert!(b.take("late@x.io", 60 * 1000), "a new minute");
    }
}
