//! The dashboard's store operations against a real SQLite file: key names, last use (written at
//! most once a minute), usage history.

use std::sync::Arc;

use cerver_store::keys::generate_key;
use cerver_store::{Plan, SqliteStore, Store};
use tempfile::TempDir;

const MINUTE: i64 = 60_000;

async fn open(dir: &TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.path()).await.unwrap())
}

#[tokio::test]
async fn keys_carry_a_name_and_their_last_use() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let user = store
        .create_user_if_missing("a@example.com", Plan::Free)
        .await
        .unwrap();
    let key = generate_key(Plan::Free);
    let k = store
        .insert_key(&user.id, &key.prefix, &key.hash)
        .await
        .unwrap();
    assert_eq!((k.name.as_deref(), k.last_used_at), (None, None));

    assert!(store.set_key_name(&k.id, Some("laptop")).await.unwrap());
    assert!(!store.set_key_name("no-such-id", Some("x")).await.unwrap());

    let t0 = 1_000 * MINUTE;
    assert!(store.touch_key(&k.id, t0).await.unwrap(), "first use");
    assert!(
        !store.touch_key(&k.id, t0 + MINUTE - 1).await.unwrap(),
        "within the minute: no write"
    );
    let keys = store.keys_of(&user.id).await.unwrap();
    assert_eq!(keys[0].name.as_deref(), Some("laptop"));
    assert_eq!(keys[0].last_used_at, Some(t0));
    assert!(store.touch_key(&k.id, t0 + MINUTE).await.unwrap());
    let (found, _) = store.key_by_hash(&key.hash).await.unwrap().unwrap();
    assert_eq!(found.last_used_at, Some(t0 + MINUTE));
    assert_eq!(found.name.as_deref(), Some("laptop"));
}

#[tokio::test]
async fn usage_history_lists_the_days_that_have_requests() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let a = store
        .create_user_if_missing("a@example.com", Plan::Free)
        .await
        .unwrap();
    let b = store
        .create_user_if_missing("b@example.com", Plan::Free)
        .await
        .unwrap();
    for (day, n) in [(99, 7), (100, 3), (105, 11), (120, 1)] {
        store.record_requests(&a.id, day, n).await.unwrap();
    }
    store.record_requests(&b.id, 100, 50).await.unwrap();
    let history = store.requests_between(&a.id, 100, 113).await.unwrap();
    assert_eq!(history, vec![(100, 3), (105, 11)]);
    assert!(
        store
            .requests_between(&a.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
