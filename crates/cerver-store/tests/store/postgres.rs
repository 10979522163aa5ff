//! Opening a Postgres store (the rest of its contract runs in `both!` with SQLite's), and
//! `open_store` choosing the backend.

use cerver_store::{DB_FILE_NAME, PgOptions, PgStore, Store, StoreError, open_store};
use tempfile::TempDir;

use super::user;
use crate::common::pg::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connecting_to_a_new_database_at_once_all_migrate_it() {
    let cluster = PgCluster::start();
    let options = PgOptions::default();
    let url = cluster.url();
    let (a, b, c) = tokio::join!(
        PgStore::connect(&url, &options),
        PgStore::connect(&url, &options),
        PgStore::connect(&url, &options),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let alice = user(&a, "alice@example.com").await;
    assert_eq!(b.user_by_id(&alice.id).await.unwrap(), Some(alice.clone()));
    c.migrate().await.unwrap();
    a.close().await;
    // Reconnecting finds the schema up to date and the data there.
    let again = PgStore::connect(&url, &options).await.unwrap();
    assert_eq!(again.user_by_id(&alice.id).await.unwrap(), Some(alice));
}

#[tokio::test]
async fn open_store_uses_postgres_given_a_url_and_sqlite_otherwise() {
    let cluster = PgCluster::start();
    let dir = TempDir::new().unwrap();
    let pg = open_store(Some(&cluster.url()), dir.path(), Some("n1"))
        .await
        .unwrap();
    user(&*pg, "alice@example.com").await;
    assert!(!dir.path().join(DB_FILE_NAME).exists(), "no SQLite file");
    let lite = open_store(None, dir.path(), None).await.unwrap();
    assert!(dir.path().join(DB_FILE_NAME).is_file());
    assert_eq!(lite.list_users().await.unwrap().len(), 0);
    assert_eq!(pg.list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_or_missing_database_is_an_error() {
    let cluster = PgCluster::start();
    let options = PgOptions {
        acquire_timeout: std::time::Duration::from_secs(2),
        ..PgOptions::default()
    };
    let missing = cluster.url_of("no_such_db");
    assert!(matches!(
        PgStore::connect(&missing, &options).await,
        Err(StoreError::Database(_))
    ));
    assert!(PgStore::connect("not a url", &options).await.is_err());
}
