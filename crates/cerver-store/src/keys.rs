//! Secrets: API keys, one-time tokens and session ids.
//!
//! Every secret is 32 base62 characters drawn from the operating system's CSPRNG (about 190
//! bits), handed to its owner once, and stored only as its SHA-256 hex ([`hash_key`]). A key
//! looks like `sk_live_` + body; its *prefix* (`sk_live_` + the first 6 characters of the body)
//! is kept for display so that people can tell their keys apart.
//!
//! # Why looking a key up by its hash is constant-time enough
//!
//! Authentication hashes the presented key and asks the database for that hash
//! ([`Store::key_by_hash`](crate::Store::key_by_hash)); the B-tree comparison is not
//! constant-time. What its timing can leak is how many leading bytes of the *hash of the
//! attacker's guess* match a stored hash. Steering a guess so that its SHA-256 shares a chosen
//! prefix is a preimage attack, so that leak does not help find a key (crates.io reasons the
//! same way). Where two secrets are compared in memory, use [`constant_time_eq`].

use std::fmt;

use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::Plan;

/// Prefix of trial keys.
pub const TRIAL_KEY_PREFIX: &str = "sk_trial_";
/// Prefix of free and pro keys.
pub const LIVE_KEY_PREFIX: &str = "sk_live_";
/// Characters in the random body of a key or token: 32 × log2(62) ≈ 190 bits.
pub const BODY_LEN: usize = 32;
/// Characters of the body kept in a key's display prefix.
pub const DISPLAY_CHARS: usize = 6;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated API key. `Debug` shows the prefix only: the full key must never reach
/// a log.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key to hand to the user, once.
    pub full: String,
    /// What to store and show: `sk_…_` + the first [`DISPLAY_CHARS`] of the body.
    pub prefix: String,
    /// What to store and look up: SHA-256 hex of `full`.
    pub hash: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A freshly generated one-time token or session id. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSecret {
    /// The value to send (in a link or a cookie), once.
    pub token: String,
    /// What to store and look up: SHA-256 hex of `token`.
    pub hash: String,
}

impl fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecret").finish_non_exhaustive()
    }
}

/// The key prefix of a plan: `sk_trial_` for trial, `sk_live_` for free and pro.
pub fn key_prefix(plan: Plan) -> &'static str {
    match plan {
        Plan::Trial => TRIAL_KEY_PREFIX,
        Plan::Free | Plan::Pro => LIVE_KEY_PREFIX,
    }
}

/// Generates an API key for `plan`.
///
/// # Panics
/// If the operating system's random source fails, which Linux's `getrandom(2)` does not do
/// once the system is booted.
pub fn generate_key(plan: Plan) -> NewKey {
    let scheme = key_prefix(plan);
    let body = random_body();
    let prefix = format!("{scheme}{}", &body[..DISPLAY_CHARS]);
    let full = format!("{scheme}{body}");
    let hash = hash_key(&full);
    NewKey { full, prefix, hash }
}

/// Generates a one-time token (sign-up or login link) or a session id.
///
/// # Panics
/// As [`generate_key`].
pub fn generate_secret() -> NewSecret {
    let token = random_body();
    let hash = hash_key(&token);
    NewSecret { token, hash }
}

/// SHA-256 of a key or token, as 64 lower-case hex characters: the only form in which a secret
/// is stored.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `key` has the shape of a key this module generates (scheme + [`BODY_LEN`] base62
/// characters): a cheap check before hashing and asking the database.
pub fn is_well_formed_key(key: &str) -> bool {
    let body = key
        .strip_prefix(TRIAL_KEY_PREFIX)
        .or_else(|| key.strip_prefix(LIVE_KEY_PREFIX));
    body.is_some_and(|b| b.len() == BODY_LEN && b.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// Compares two secrets in time that depends on their lengths only, not on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// [`BODY_LEN`] base62 characters from the OS CSPRNG, without modulo bias (`random_range`
/// rejects out-of-range draws).
fn random_body() -> String {
    let mut rng = OsRng.unwrap_err();
    (0..BODY_LEN)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn keys_have_the_plan_scheme_and_a_display_prefix() {
        for plan in Plan::ALL {
            let key = generate_key(plan);
            let scheme = key_prefix(plan);
            assert!(key.full.starts_with(scheme));
            assert_eq!(key.full.len(), scheme.len() + BODY_LEN);
            assert_eq!(key.prefix.len(), scheme.len() + DISPLAY_CHARS);
            assert!(key.full.starts_with(&key.prefix));
            assert_eq!(key.hash, hash_key(&key.full));
            assert!(is_well_formed_key(&key.full));
        }
        assert!(generate_key(Plan::Trial).full.starts_with("sk_trial_"));
        assert!(generate_key(Plan::Free).full.starts_with("sk_live_"));
        assert!(generate_key(Plan::Pro).full.starts_with("sk_live_"));
    }

    #[test]
    fn keys_are_distinct_and_use_the_whole_alphabet() {
        let keys: Vec<NewKey> = (0..1000).map(|_| generate_key(Plan::Free)).collect();
        let distinct: HashSet<&str> = keys.iter().map(|k| k.full.as_str()).collect();
        assert_eq!(distinct.len(), keys.len());
        let used: HashSet<u8> = keys
            .iter()
            .flat_map(|k| k.full[LIVE_KEY_PREFIX.len()..].bytes())
            .collect();
        // 32 000 draws over 62 symbols: all of them show up unless the sampler is broken.
        assert_eq!(used.len(), 62);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let secret = generate_secret();
        assert_eq!(secret.token.len(), BODY_LEN);
        assert_eq!(secret.hash, hash_key(&secret.token));
        assert_eq!(secret.hash.len(), 64);
    }

    #[test]
    fn malformed_keys_are_recognised() {
        assert!(!is_well_formed_key(""));
        assert!(!is_well_formed_key("sk_live_short"));
        assert!(!is_well_formed_key(&format!(
            "sk_test_{}",
            "a".repeat(BODY_LEN)
        )));
        assert!(!is_well_formed_key(&format!(
            "sk_live_{}-",
            "a".repeat(BODY_LEN - 1)
        )));
        assert!(is_well_formed_key(&format!(
            "sk_live_{}",
            "a".repeat(BODY_LEN)
        )));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = generate_key(Plan::Pro);
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.prefix));
        assert!(!shown.contains(&key.full));
        let secret = generate_secret();
        assert!(!format!("{secret:?}").contains(&secret.token));
    }
}
