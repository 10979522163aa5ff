//! Every `Store` operation against a real database, concurrency included: each contract test
//! is an `async fn(Db)` run on both backends by [`both!`] (a SQLite file in a temporary
//! directory, a throw-away Postgres cluster). The store is used through `Arc<dyn Store>`, as
//! callers will. Opening is backend-specific and tested per backend.

#[macro_use]
mod common;
#[path = "store/nodes.rs"]
mod nodes;
#[path = "store/postgres.rs"]
mod postgres_only;

use std::sync::Arc;

use cerver_store::keys::{generate_key, generate_secret, hash_key};
use cerver_store::{
    DB_FILE_NAME, KeyRef, NewSandbox, Plan, SqliteOptions, SqliteStore, Store, StoreError,
    TokenKind, User, now_ms, utc_day,
};
use serde_json::json;
use tempfile::TempDir;

use common::Db;
use nodes::{
    dead_nodes_sandboxes_end_and_labels_find_their_node,
    nodes_register_renew_their_lease_and_drain,
    one_sandbox_slot_claimed_on_three_nodes_at_once_goes_once, quota_is_exact_across_three_nodes,
    sandboxes_belong_to_the_node_that_recorded_them,
};

const HOUR: i64 = 3_600_000;

async fn open_sqlite(dir: &TempDir, max_connections: u32) -> SqliteStore {
    let options = SqliteOptions {
        max_connections,
        ..SqliteOptions::default()
    };
    SqliteStore::open_with(dir.path(), &options).await.unwrap()
}

async fn user(store: &dyn Store, email: &str) -> User {
    store
        .create_user_if_missing(email, Plan::Trial)
        .await
        .unwrap()
}

fn sandbox(id: &str, user_id: &str, created_at: i64, expires_at: i64) -> NewSandbox {
    NewSandbox {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        engine: "workers".to_owned(),
        created_at,
        expires_at,
        metadata: json!({}),
    }
}

// ---- opening and migrations ----

#[tokio::test]
async fn open_creates_the_data_dir_and_file_in_wal_mode() {
    let dir = TempDir::new().unwrap();
    let data_dir = dir.path().join("nested/data");
    let store = SqliteStore::open(&data_dir).await.unwrap();
    assert_eq!(store.path(), data_dir.join(DB_FILE_NAME));
    assert!(store.path().is_file());
    // The WAL file exists while a connection is open in WAL mode.
    user(&store, "a@example.com").await;
    assert!(data_dir.join(format!("{DB_FILE_NAME}-wal")).is_file());
    store.close().await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_data_survives_reopening() {
    let dir = TempDir::new().unwrap();
    let store = open_sqlite(&dir, 2).await;
    let alice = user(&store, "alice@example.com").await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;

    let store = open_sqlite(&dir, 2).await;
    store.migrate().await.unwrap();
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_creating_the_database_at_once_both_succeed() {
    let dir = TempDir::new().unwrap();
    let (a, b, c) = tokio::join!(
        open_sqlite(&dir, 2),
        open_sqlite(&dir, 2),
        open_sqlite(&dir, 2)
    );
    let alice = user(&a, "alice@example.com").await;
    assert_eq!(b.user_by_id(&alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(c.user_by_id(&alice.id).await.unwrap(), Some(alice));
}

async fn two_stores_on_one_database_see_each_other(db: Db) {
    // The server and the admin CLI (or two nodes): two pools on the same database.
    let server = db.open().await;
    let admin = db.open().await;

    let alice = user(&*server, "alice@example.com").await;
    let promoted = admin
        .set_plan("alice@example.com", Plan::Pro)
        .await
        .unwrap();
    assert_eq!(promoted.plan, Plan::Pro);
    assert_eq!(
        server.user_by_id(&alice.id).await.unwrap().unwrap().plan,
        Plan::Pro
    );

    let key = generate_key(Plan::Pro);
    server
        .insert_key(&alice.id, &key.prefix, &key.hash)
        .await
        .unwrap();
    admin.revoke_key(KeyRef::Prefix(&key.prefix)).await.unwrap();
    assert!(server.key_by_hash(&key.hash).await.unwrap().is_none());

    // Both write the same counter at once: still exact.
    let day = utc_day(now_ms());
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 {
            server.clone()
        } else {
            admin.clone()
        };
        let id = alice.id.clone();
        tasks.push(tokio::spawn(async move {
            store.try_consume_request(&id, day, 40).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::QuotaExceeded { limit: 40 }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 40);
    assert_eq!(admin.requests_on(&alice.id, day).await.unwrap(), 40);
}

// ---- users ----

async fn users_are_created_once_by_lower_cased_email(db: Db) {
    let store = db.open().await;
    let before = now_ms();
    let alice = store
        .create_user_if_missing("  Alice@Example.COM ", Plan::Trial)
        .await
        .unwrap();
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.plan, Plan::Trial);
    assert!(alice.created_at >= before && alice.created_at <= now_ms());

    // Idempotent: same user back, plan unchanged.
    let again = store
        .create_user_if_missing("alice@example.com", Plan::Pro)
        .await
        .unwrap();
    assert_eq!(again, alice);

    assert_eq!(
        store.user_by_email("ALICE@example.com").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(store.user_by_id("nope").await.unwrap(), None);
    assert!(matches!(
        store.create_user_if_missing("  ", Plan::Trial).await,
        Err(StoreError::InvalidInput(_))
    ));
}

async fn concurrent_sign_ups_of_one_email_make_one_user(db: Db) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_user_if_missing("same@example.com", Plan::Trial)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn set_plan_changes_the_plan(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    for plan in [Plan::Free, Plan::Pro, Plan::Trial] {
        let updated = store.set_plan("Alice@example.com", plan).await.unwrap();
        assert_eq!(
            updated,
            User {
                plan,
                ..alice.clone()
            }
        );
        assert_eq!(
            store.user_by_id(&alice.id).await.unwrap().unwrap().plan,
            plan
        );
    }
    assert!(matches!(
        store.set_plan("nobody@example.com", Plan::Pro).await,
        Err(StoreError::UserNotFound)
    ));
}

async fn list_users_counts_keys(db: Db) {
    let store = db.open().await;
    assert!(store.list_users().await.unwrap().is_empty());
    let alice = user(&*store, "alice@example.com").await;
    let bob = user(&*store, "bob@example.com").await;
    let mut alice_keys = Vec::new();
    for _ in 0..3 {
        let key = generate_key(Plan::Trial);
        alice_keys.push(
            store
                .insert_key(&alice.id, &key.prefix, &key.hash)
                .await
                .unwrap(),
        );
    }
    store
        .revoke_key(KeyRef::Id(&alice_keys[0].id))
        .await
        .unwrap();

    let users = store.list_users().await.unwrap();
    assert_eq!(users.len(), 2);
    let of = |email: &str| users.iter().find(|u| u.user.email == email).unwrap();
    assert_eq!(of("alice@example.com").user, alice);
    assert_eq!(of("alice@example.com").active_keys, 2);
    assert_eq!(of("alice@example.com").total_keys, 3);
    assert_eq!(of("bob@example.com").user, bob);
    assert_eq!(of("bob@example.com").active_keys, 0);
    assert_eq!(of("bob@example.com").total_keys, 0);
}

// ---- API keys ----

async fn keys_are_found_by_hash_until_revoked(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let key = generate_key(Plan::Trial);
    let stored = store
        .insert_key(&alice.id, &key.prefix, &key.hash)
        .await
        .unwrap();
    assert_eq!(stored.user_id, alice.id);
    assert_eq!(stored.prefix, key.prefix);
    assert!(stored.is_active());

    // Authentication: hash the presented key, look it up.
    let (found, owner) = store
        .key_by_hash(&hash_key(&key.full))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, stored);
    assert_eq!(owner, alice);
    assert!(
        store
            .key_by_hash(&hash_key("sk_trial_wrong"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.keys_of(&alice.id).await.unwrap(),
        vec![stored.clone()]
    );

    let revoked = store.revoke_key(KeyRef::Hash(&key.hash)).await.unwrap();
    assert_eq!(revoked.id, stored.id);
    let revoked_at = revoked.revoked_at.expect("revoked");
    assert!(store.key_by_hash(&key.hash).await.unwrap().is_none());

    // Revoking again is harmless and keeps the first time.
    let again = store.revoke_key(KeyRef::Id(&stored.id)).await.unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at));
    // Revoked keys are still listed.
    assert_eq!(store.keys_of(&alice.id).await.unwrap(), vec![again]);
}

async fn revoke_by_id_prefix_and_hash(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let keys: Vec<_> = (0..3).map(|_| generate_key(Plan::Free)).collect();
    let mut stored = Vec::new();
    for key in &keys {
        stored.push(
            store
                .insert_key(&alice.id, &key.prefix, &key.hash)
                .await
                .unwrap(),
        );
    }
    let by_id = store.revoke_key(KeyRef::Id(&stored[0].id)).await.unwrap();
    let by_prefix = store
        .revoke_key(KeyRef::Prefix(&keys[1].prefix))
        .await
        .unwrap();
    let by_hash = store.revoke_key(KeyRef::Hash(&keys[2].hash)).await.unwrap();
    assert_eq!(
        [by_id.id, by_prefix.id, by_hash.id],
        [
            stored[0].id.clone(),
            stored[1].id.clone(),
            stored[2].id.clone()
        ]
    );
    for key in &keys {
        assert!(store.key_by_hash(&key.hash).await.unwrap().is_none());
    }
    assert!(
        store
            .keys_of(&alice.id)
            .await
            .unwrap()
            .iter()
            .all(|k| !k.is_active())
    );
}

async fn key_errors(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let key = generate_key(Plan::Trial);
    store
        .insert_key(&alice.id, &key.prefix, &key.hash)
        .await
        .unwrap();

    assert!(matches!(
        store
            .insert_key(&alice.id, "sk_trial_other", &key.hash)
            .await,
        Err(StoreError::Duplicate(_))
    ));
    let other = generate_key(Plan::Trial);
    assert!(matches!(
        store
            .insert_key("no-such-user", &other.prefix, &other.hash)
            .await,
        Err(StoreError::UserNotFound)
    ));
    for missing in [
        KeyRef::Id("nope"),
        KeyRef::Prefix("sk_trial_nope"),
        KeyRef::Hash(&other.hash),
    ] {
        assert!(matches!(
            store.revoke_key(missing).await,
            Err(StoreError::KeyNotFound)
        ));
    }

    // Two keys with the same display prefix: revoking by prefix is refused.
    let twin = generate_key(Plan::Trial);
    store
        .insert_key(&alice.id, &key.prefix, &twin.hash)
        .await
        .unwrap();
    assert!(matches!(
        store.revoke_key(KeyRef::Prefix(&key.prefix)).await,
        Err(StoreError::AmbiguousKey { matches: 2 })
    ));
    assert!(store.key_by_hash(&key.hash).await.unwrap().is_some());
    assert!(store.keys_of("no-such-user").await.unwrap().is_empty());
}

// ---- one-time tokens ----

async fn tokens_are_single_use_kind_bound_and_expire(db: Db) {
    let store = db.open().await;
    let now = now_ms();

    let signup = generate_secret();
    store
        .insert_token(
            &signup.hash,
            TokenKind::Signup,
            "New@Example.com",
            now + HOUR,
        )
        .await
        .unwrap();
    // The other kind does not consume it.
    assert_eq!(
        store
            .consume_token(&signup.hash, TokenKind::Login, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_token(&signup.hash, TokenKind::Signup, now)
            .await
            .unwrap()
            .as_deref(),
        Some("new@example.com")
    );
    assert_eq!(
        store
            .consume_token(&signup.hash, TokenKind::Signup, now)
            .await
            .unwrap(),
        None
    );

    // Expired: at and after `expires_at`, never consumed.
    let login = generate_secret();
    store
        .insert_token(&login.hash, TokenKind::Login, "a@example.com", now + 1000)
        .await
        .unwrap();
    for at in [now + 1000, now + 5000] {
        assert_eq!(
            store
                .consume_token(&login.hash, TokenKind::Login, at)
                .await
                .unwrap(),
            None
        );
    }
    // Just before expiry it still works (once).
    assert_eq!(
        store
            .consume_token(&login.hash, TokenKind::Login, now + 999)
            .await
            .unwrap()
            .as_deref(),
        Some("a@example.com")
    );

    assert_eq!(
        store
            .consume_token(&hash_key("unknown"), TokenKind::Login, now)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store
            .insert_token(&login.hash, TokenKind::Login, "a@example.com", now + HOUR)
            .await,
        Err(StoreError::Duplicate(_))
    ));
}

async fn a_token_consumed_concurrently_is_used_once(db: Db) {
    let store = db.open_with(8).await;
    let now = now_ms();
    let token = generate_secret();
    store
        .insert_token(&token.hash, TokenKind::Login, "a@example.com", now + HOUR)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let hash = token.hash.clone();
            tokio::spawn(async move { store.consume_token(&hash, TokenKind::Login, now).await })
        })
        .collect();
    let mut consumed = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            consumed += 1;
        }
    }
    assert_eq!(consumed, 1);
}

// ---- sessions ----

async fn sessions_are_found_until_expiry_or_logout(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let now = now_ms();
    let id = generate_secret();
    let session = store
        .insert_session(&id.hash, &alice.id, now + HOUR)
        .await
        .unwrap();
    assert_eq!(session.user_id, alice.id);
    assert_eq!(session.expires_at, now + HOUR);

    let (found, owner) = store.session(&id.hash, now).await.unwrap().unwrap();
    assert_eq!(found, session);
    assert_eq!(owner, alice);
    assert!(store.session(&id.hash, now + HOUR).await.unwrap().is_none());
    assert!(
        store
            .session(&hash_key("other"), now)
            .await
            .unwrap()
            .is_none()
    );

    assert!(matches!(
        store.insert_session(&id.hash, &alice.id, now + HOUR).await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        store
            .insert_session(&hash_key("x"), "no-such-user", now + HOUR)
            .await,
        Err(StoreError::UserNotFound)
    ));

    assert!(store.delete_session(&id.hash).await.unwrap());
    assert!(!store.delete_session(&id.hash).await.unwrap());
    assert!(store.session(&id.hash, now).await.unwrap().is_none());
}

async fn purge_removes_expired_and_used_rows_only(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let now = now_ms();
    let [expired, used, fresh] = [(); 3].map(|_| generate_secret());
    store
        .insert_token(&expired.hash, TokenKind::Signup, "a@example.com", now - 1)
        .await
        .unwrap();
    store
        .insert_token(&used.hash, TokenKind::Signup, "a@example.com", now + HOUR)
        .await
        .unwrap();
    store
        .insert_token(&fresh.hash, TokenKind::Signup, "a@example.com", now + HOUR)
        .await
        .unwrap();
    store
        .consume_token(&used.hash, TokenKind::Signup, now)
        .await
        .unwrap();
    let [old_session, live_session] = [(); 2].map(|_| generate_secret());
    store
        .insert_session(&old_session.hash, &alice.id, now)
        .await
        .unwrap();
    store
        .insert_session(&live_session.hash, &alice.id, now + HOUR)
        .await
        .unwrap();

    assert_eq!(store.purge_expired(now).await.unwrap(), 3);
    assert_eq!(store.purge_expired(now).await.unwrap(), 0);
    assert!(
        store
            .consume_token(&fresh.hash, TokenKind::Signup, now)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .session(&live_session.hash, now)
            .await
            .unwrap()
            .is_some()
    );
}

// ---- usage ----

async fn requests_are_counted_per_user_per_day_up_to_the_limit(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let bob = user(&*store, "bob@example.com").await;
    let day = utc_day(now_ms());

    for expected_left in (0..3).rev() {
        assert_eq!(
            store.try_consume_request(&alice.id, day, 3).await.unwrap(),
            expected_left
        );
    }
    assert!(matches!(
        store.try_consume_request(&alice.id, day, 3).await,
        Err(StoreError::QuotaExceeded { limit: 3 })
    ));
    assert_eq!(store.requests_on(&alice.id, day).await.unwrap(), 3);

    // A higher limit (an upgrade) lets more through the same day.
    assert_eq!(
        store.try_consume_request(&alice.id, day, 5).await.unwrap(),
        1
    );
    // Another day and another user have their own counters.
    assert_eq!(
        store
            .try_consume_request(&alice.id, day + 1, 3)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.try_consume_request(&bob.id, day, 3).await.unwrap(), 2);
    assert_eq!(store.requests_on(&alice.id, day).await.unwrap(), 4);
    assert_eq!(store.requests_on(&bob.id, day - 1).await.unwrap(), 0);

    assert!(matches!(
        store.try_consume_request(&bob.id, day, 0).await,
        Err(StoreError::QuotaExceeded { limit: 0 })
    ));
    assert!(matches!(
        store.try_consume_request("no-such-user", day, 3).await,
        Err(StoreError::UserNotFound)
    ));
}

#[test]
fn utc_days_split_at_midnight() {
    assert_eq!(utc_day(0), 0);
    assert_eq!(utc_day(86_399_999), 0);
    assert_eq!(utc_day(86_400_000), 1);
    assert_eq!(utc_day(-1), -1);
}

async fn quota_is_exact_under_150_concurrent_requests(db: Db) {
    let store: Arc<dyn Store> = db.open_with(8).await;
    let alice = user(&*store, "alice@example.com").await;
    let day = utc_day(now_ms());

    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let store = store.clone();
            let id = alice.id.clone();
            tokio::spawn(async move { store.try_consume_request(&id, day, 100).await })
        })
        .collect();
    let mut remaining = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(left) => remaining.push(left),
            Err(StoreError::QuotaExceeded { limit: 100 }) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(remaining.len(), 100);
    assert_eq!(refused, 50);
    // Each success saw a different count: 99, 98, …, 0 remaining.
    remaining.sort_unstable();
    assert_eq!(remaining, (0..100).collect::<Vec<u64>>());
    assert_eq!(store.requests_on(&alice.id, day).await.unwrap(), 100);
}

// ---- sandboxes ----

async fn sandbox_records_round_trip_and_count_while_active(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let now = now_ms();

    let mut first = sandbox("sb-1", &alice.id, now, now + HOUR);
    first.engine = "containers".to_owned();
    first.metadata = json!({"project": "my-app", "user_id": "123"});
    let recorded = store.insert_sandbox(first.clone()).await.unwrap();
    assert_eq!(recorded.deleted_at, None);
    assert!(recorded.is_active(now));
    assert_eq!(store.sandbox("sb-1").await.unwrap(), Some(recorded.clone()));
    assert_eq!(store.sandbox("nope").await.unwrap(), None);

    store
        .insert_sandbox(sandbox("sb-2", &alice.id, now + 1, now + HOUR))
        .await
        .unwrap();
    store
        .insert_sandbox(sandbox("sb-old", &alice.id, now - 2 * HOUR, now - HOUR))
        .await
        .unwrap();
    assert_eq!(store.active_sandbox_count(&alice.id, now).await.unwrap(), 2);
    let active: Vec<String> = store
        .active_sandboxes_of(&alice.id, now)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(active, ["sb-1", "sb-2"]);

    // Expiry can be moved; it changes what counts.
    assert!(store.set_sandbox_expiry("sb-2", now - 1).await.unwrap());
    assert_eq!(store.active_sandbox_count(&alice.id, now).await.unwrap(), 1);
    assert!(store.set_sandbox_expiry("sb-2", now + HOUR).await.unwrap());
    assert!(!store.set_sandbox_expiry("nope", now).await.unwrap());

    assert!(store.mark_sandbox_deleted("sb-1", now + 5).await.unwrap());
    assert!(!store.mark_sandbox_deleted("sb-1", now + 6).await.unwrap());
    assert!(!store.mark_sandbox_deleted("nope", now).await.unwrap());
    let deleted = store.sandbox("sb-1").await.unwrap().unwrap();
    assert_eq!(deleted.deleted_at, Some(now + 5));
    assert_eq!(
        deleted.metadata,
        json!({"project": "my-app", "user_id": "123"})
    );
    assert!(!store.set_sandbox_expiry("sb-1", now + HOUR).await.unwrap());
    assert_eq!(store.active_sandbox_count(&alice.id, now).await.unwrap(), 1);

    // Left active = never marked deleted, expired or not.
    let left: Vec<String> = store
        .sandboxes_left_active()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ["sb-old", "sb-2"]);

    // The durable state (rebuilding after a restart) is recorded with the expiry, only on a
    // sandbox not deleted, must be JSON, and comes back with the record.
    assert_eq!(store.sandbox("sb-2").await.unwrap().unwrap().durable, None);
    let state = r#"{"disk":"sb-0123","envs":{"A":"b"},"timeout_ms":1000,"exposed_ports":[8000]}"#;
    assert!(
        store
            .set_sandbox_durable("sb-2", state, now + 2 * HOUR)
            .await
            .unwrap()
    );
    let kept = store.sandbox("sb-2").await.unwrap().unwrap();
    assert_eq!(kept.durable.as_deref(), Some(state));
    assert_eq!(kept.expires_at, now + 2 * HOUR);
    assert!(!store.set_sandbox_durable("sb-1", state, now).await.unwrap());
    assert!(
        store
            .set_sandbox_durable("sb-2", "not json", now)
            .await
            .is_err()
    );
    let left = store.sandboxes_left_active().await.unwrap();
    assert_eq!(left[1].durable.as_deref(), Some(state));

    assert!(matches!(
        store
            .insert_sandbox(sandbox("sb-2", &alice.id, now, now + HOUR))
            .await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        store
            .insert_sandbox(sandbox("sb-x", "no-such-user", now, now + HOUR))
            .await,
        Err(StoreError::UserNotFound)
    ));
}

async fn sandbox_slots_free_up_on_delete_and_expiry(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice@example.com").await;
    let bob = user(&*store, "bob@example.com").await;
    let now = now_ms();

    store
        .try_insert_sandbox_if_below(sandbox("a1", &alice.id, now, now + HOUR), 2, now)
        .await
        .unwrap();
    store
        .try_insert_sandbox_if_below(sandbox("a2", &alice.id, now, now + 10), 2, now)
        .await
        .unwrap();
    assert!(matches!(
        store
            .try_insert_sandbox_if_below(sandbox("a3", &alice.id, now, now + HOUR), 2, now)
            .await,
        Err(StoreError::SandboxLimit { limit: 2 })
    ));
    assert_eq!(store.sandbox("a3").await.unwrap(), None);
    // Bob's slots are his own.
    store
        .try_insert_sandbox_if_below(sandbox("b1", &bob.id, now, now + HOUR), 1, now)
        .await
        .unwrap();
    // Once a2 has expired, a slot is free.
    store
        .try_insert_sandbox_if_below(sandbox("a3", &alice.id, now, now + HOUR), 2, now + 10)
        .await
        .unwrap();
    // Once a1 is deleted, another.
    store.mark_sandbox_deleted("a1", now + 11).await.unwrap();
    store
        .try_insert_sandbox_if_below(sandbox("a4", &alice.id, now, now + HOUR), 2, now + 11)
        .await
        .unwrap();
    assert_eq!(
        store
            .active_sandbox_count(&alice.id, now + 11)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store
            .try_insert_sandbox_if_below(sandbox("a5", &alice.id, now, now + HOUR), 0, now)
            .await,
        Err(StoreError::SandboxLimit { limit: 0 })
    ));
}

async fn sandbox_slots_are_exact_under_20_concurrent_claims(db: Db) {
    // Two pools, as server and admin CLI would have, to also cross the process-level lock.
    let a: Arc<dyn Store> = db.open_with(6).await;
    let b: Arc<dyn Store> = db.open_with(6).await;
    let alice = user(&*a, "alice@example.com").await;
    let now = now_ms();

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let new = sandbox(&format!("sb-{i}"), &alice.id, now, now + HOUR);
            tokio::spawn(async move { store.try_insert_sandbox_if_below(new, 5, now).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::SandboxLimit { limit: 5 }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(a.active_sandbox_count(&alice.id, now).await.unwrap(), 5);
    assert_eq!(b.sandboxes_left_active().await.unwrap().len(), 5);
}

async fn recorded_request_counts_never_go_down(db: Db) {
    let store = db.open().await;
    let alice = user(store.as_ref(), "counts@example.com").await;
    let day = 20_000;
    store.record_requests(&alice.id, day, 5).await.unwrap();
    assert_eq!(store.requests_on(&alice.id, day).await.unwrap(), 5);
    store.record_requests(&alice.id, day, 3).await.unwrap();
    assert_eq!(
        store.requests_on(&alice.id, day).await.unwrap(),
        5,
        "a late, smaller write"
    );
    store.record_requests(&alice.id, day, 9).await.unwrap();
    assert_eq!(store.requests_on(&alice.id, day).await.unwrap(), 9);
    assert_eq!(store.requests_on(&alice.id, day + 1).await.unwrap(), 0);
}

async fn paused_sandboxes_leave_the_limit_count_and_resume_claims_a_slot(db: Db) {
    let store = db.open().await;
    let alice = user(&*store, "alice-pause@example.com").await;
    let now = now_ms();
    let running = r#"{"disk":"d","paused":null}"#;
    let paused = r#"{"disk":"d","paused":{"remaining_ms":5000,"at":1}}"#;
    store
        .try_insert_sandbox_if_below(sandbox("p1", &alice.id, now, now + HOUR), 1, now)
        .await
        .unwrap();
    assert!(
        store
            .set_sandbox_durable("p1", running, now + HOUR)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_sandbox_paused("p1", paused, now + 2 * HOUR)
            .await
            .unwrap()
    );
    assert_eq!(store.active_sandbox_count(&alice.id, now).await.unwrap(), 0);
    assert_eq!(store.paused_sandbox_count(&alice.id).await.unwrap(), 1);
    // A late write for the running sandbox does not unpause it.
    assert!(
        !store
            .set_sandbox_durable("p1", running, now + HOUR)
            .await
            .unwrap()
    );
    // The paused one frees the slot; resuming it at the limit fails and changes nothing.
    store
        .try_insert_sandbox_if_below(sandbox("p2", &alice.id, now, now + HOUR), 1, now)
        .await
        .unwrap();
    assert!(matches!(
        store
            .try_resume_sandbox_if_below("p1", &alice.id, 1, now, running, now + HOUR)
            .await,
        Err(StoreError::SandboxLimit { limit: 1 })
    ));
    assert_eq!(store.paused_sandbox_count(&alice.id).await.unwrap(), 1);
    store.mark_sandbox_deleted("p2", now).await.unwrap();
    assert!(
        store
            .try_resume_sandbox_if_below("p1", &alice.id, 1, now, running, now + HOUR)
            .await
            .unwrap()
    );
    assert_eq!(store.paused_sandbox_count(&alice.id).await.unwrap(), 0);
    assert_eq!(store.active_sandbox_count(&alice.id, now).await.unwrap(), 1);
    // Another user's id is not resumed.
    assert!(
        !store
            .try_resume_sandbox_if_below("p1", "someone-else", 5, now, running, now + HOUR)
            .await
            .unwrap()
    );
}

// Every contract above and in `store/nodes.rs`, on SQLite and on Postgres.
both! {
    two_stores_on_one_database_see_each_other,
    users_are_created_once_by_lower_cased_email,
    concurrent_sign_ups_of_one_email_make_one_user,
    set_plan_changes_the_plan,
    list_users_counts_keys,
    keys_are_found_by_hash_until_revoked,
    revoke_by_id_prefix_and_hash,
    key_errors,
    tokens_are_single_use_kind_bound_and_expire,
    a_token_consumed_concurrently_is_used_once,
    sessions_are_found_until_expiry_or_logout,
    purge_removes_expired_and_used_rows_only,
    requests_are_counted_per_user_per_day_up_to_the_limit,
    quota_is_exact_under_150_concurrent_requests,
    sandbox_records_round_trip_and_count_while_active,
    sandbox_slots_free_up_on_delete_and_expiry,
    sandbox_slots_are_exact_under_20_concurrent_claims,
    recorded_request_counts_never_go_down,
    paused_sandboxes_leave_the_limit_count_and_resume_claims_a_slot,
    nodes_register_renew_their_lease_and_drain,
    sandboxes_belong_to_the_node_that_recorded_them,
    quota_is_exact_across_three_nodes,
    one_sandbox_slot_claimed_on_three_nodes_at_once_goes_once,
    dead_nodes_sandboxes_end_and_labels_find_their_node,
}
