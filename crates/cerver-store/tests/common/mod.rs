//! What the store tests share: a database on either backend, so that every contract is checked
//! on SQLite and on Postgres (see [`both!`]).
#![allow(dead_code)]

pub mod pg;

use std::sync::Arc;

use cerver_store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store};
use tempfile::TempDir;

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database: a SQLite file in a temporary directory, or a throw-away Postgres
/// cluster. Dropping it removes it.
pub struct Db {
    pub backend: Backend,
    pub dir: TempDir,
    pub pg: Option<pg::PgCluster>,
}

impl Db {
    pub fn new(backend: Backend) -> Db {
        Db {
            backend,
            dir: TempDir::new().unwrap(),
            pg: (backend == Backend::Postgres).then(pg::PgCluster::start),
        }
    }

    /// A store on it with 4 connections; each call opens another pool on the same database
    /// (as the server and the admin CLI, or two nodes, would).
    pub async fn open(&self) -> Arc<dyn Store> {
        self.open_with(4).await
    }

    pub async fn open_with(&self, max_connections: u32) -> Arc<dyn Store> {
        self.open_as(max_connections, None).await
    }

    /// A store whose sandboxes belong to `node`.
    pub async fn open_as(&self, max_connections: u32, node: Option<&str>) -> Arc<dyn Store> {
        match &self.pg {
            None => {
                let options = SqliteOptions {
                    max_connections,
                    ..SqliteOptions::default()
                };
                let store = SqliteStore::open_with(self.dir.path(), &options)
                    .await
                    .unwrap();
                Arc::new(match node {
                    Some(node) => store.with_node(node),
                    None => store,
                })
            }
            Some(cluster) => {
                let options = PgOptions {
                    max_connections,
                    node: node.map(str::to_owned),
                    ..PgOptions::default()
                };
                Arc::new(PgStore::connect(&cluster.url(), &options).await.unwrap())
            }
        }
    }
}

/// Runs each named `async fn(Db)` once on SQLite and once on Postgres, as tests
/// `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::new($crate::common::Backend::Sqlite)).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::new($crate::common::Backend::Postgres)).await
                }
            )*
        }
    };
}
