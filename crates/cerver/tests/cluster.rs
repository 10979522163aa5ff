//! Cluster mode's storage half (issue 11) end to end: the real `cerver serve --database-url`
//! on a throw-away Postgres cluster, the admin CLI on the same database without any data
//! dir, the node's registration, lease and drain.

mod common;
#[path = "../../cerver-store/tests/common/pg.rs"]
mod pg;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cerver_store::{PgOptions, PgStore, Store};
use common::Server;
use pg::PgCluster;

/// Runs `cerver admin ARGS --database-url URL` in an empty directory with no data dir set.
fn admin(url: &str, args: &[&str]) -> (Output, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .arg("admin")
        .args(args)
        .args(["--database-url", url])
        .env_remove("CERVER_DATA_DIR")
        .current_dir(cwd.path())
        .output()
        .expect("run cerver admin");
    (out, cwd)
}

fn ok_stdout(url: &str, args: &[&str]) -> String {
    let (out, cwd) = admin(url, args);
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "admin {args:?} wrote into its working directory (no data dir is needed)"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `cerver admin nodes` line of `node`, split into cells.
fn node_row(url: &str, node: &str) -> Vec<String> {
    let table = ok_stdout(url, &["nodes"]);
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .unwrap_or_else(|| panic!("{node} not listed:\n{table}"));
    line.split_whitespace().map(String::from).collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_runs_code_and_its_node_is_listed_and_drained() {
    let pg = PgCluster::start();
    let url = pg.url();
    let out = ok_stdout(
        &url,
        &["create-key", "--email", "pg@example.com", "--plan", "pro"],
    );
    let key = out.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("sk_"), "{out}");

    let data_dir = std::env::temp_dir().join(format!("cerver-test-{}", common::rand_suffix()));
    let server = Server::start_keyed(
        data_dir.clone(),
        key,
        &[
            "--database-url",
            &url,
            "--node-name",
            "node-a",
            "--advertise-url",
            "http://127.0.0.1:9",
            "--node-lease-secs",
            "3",
        ],
    );
    // Accounts come from Postgres: the data dir has no SQLite database.
    assert!(!data_dir.join(cerver_store::DB_FILE_NAME).exists());
    let id = server.sandbox().await;
    assert_eq!(
        server.output(&id, "print('hi from pg')").await,
        "hi from pg"
    );

    // The sandbox is recorded in Postgres, held by this node.
    let store = PgStore::connect(&url, &PgOptions::default()).await.unwrap();
    let record = store.sandbox(&id).await.unwrap().expect("sandbox recorded");
    assert_eq!(record.node.as_deref(), Some("node-a"));
    assert!(record.deleted_at.is_none());

    // Registered, alive, and its heartbeat reports the sandbox (a beat per second here).
    wait_for("the heartbeat to report one sandbox", || {
        node_row(&url, "node-a")[4] == "1"
    });
    let row = node_row(&url, "node-a");
    assert_eq!(&row[..4], ["node-a", "http://127.0.0.1:9", "alive", "no"]);
    let first_beat = store.list_nodes().await.unwrap()[0].heartbeat_at;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let node = store.list_nodes().await.unwrap().remove(0);
    assert!(node.heartbeat_at > first_beat, "the lease is renewed");
    assert!(node.is_alive(cerver_store::now_ms()));

    // Drain and undo; an unknown node is a clear error with a failing exit status.
    let drained = ok_stdout(&url, &["drain", "--node", "node-a"]);
    assert!(drained.contains("draining"), "{drained}");
    assert_eq!(node_row(&url, "node-a")[3], "yes");
    let (out, _) = admin(&url, &["drain", "--node", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node named \"nope\""), "{err}");
    ok_stdout(&url, &["drain", "--node", "node-a", "--undo"]);
    assert_eq!(node_row(&url, "node-a")[3], "no");

    // Killed, the node stops renewing: its lease runs out and it is listed dead.
    let dir = server.crash();
    wait_for("the lease to run out", || {
        node_row(&url, "node-a")[2] == "dead"
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_cluster_settings_are_refused_and_secrets_never_print() {
    let print = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cerver"))
            .args(["serve", "--print-config"])
            .args(args)
            .env_remove("CERVER_DATABASE_URL")
            .env_remove("CERVER_CLUSTER_SECRET")
            .output()
            .unwrap()
    };
    for (args, needle) in [
        (&["--database-url", "mysql://db/cerver"][..], "postgres://"),
        (&["--node-name", "has space"][..], "node name"),
        (&["--advertise-url", "10.0.0.5:8080"][..], "advertise_url"),
        (&["--cluster-secret", "short"][..], "at least 16"),
    ] {
        let out = print(args);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = print(&[
        "--database-url",
        "postgres://cerver:hunter2-pass@db:5432/cerver",
        "--cluster-secret",
        "a-very-secret-cluster-key",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("postgres://cerver:[redacted]@db:5432/cerver"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && !text.contains("a-very-secret"),
        "{text}"
    );
}

fn start_node(url: &str, name: &str, key: &str) -> Server {
    let data_dir = std::env::temp_dir().join(format!("cerver-test-{}", common::rand_suffix()));
    Server::start_keyed(
        data_dir,
        key.to_owned(),
        &["--database-url", url, "--node-name", name],
    )
}

fn new_key(url: &str, email: &str, plan: &str) -> String {
    let out = ok_stdout(url, &["create-key", "--email", email, "--plan", plan]);
    out.lines().last().unwrap().trim().to_owned()
}

/// The quotas across nodes: 150 parallel requests of a fresh trial key spread over two
/// nodes admit exactly 100; a trial user creating on both nodes at once gets one sandbox; a key
/// revoked with the admin CLI stops working on every node within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_share_exact_quotas_and_revocations() {
    let pg = PgCluster::start();
    let url = pg.url();
    let trial = new_key(&url, "trial@example.com", "trial");
    let nodes = [
        start_node(&url, "node-a", &trial),
        start_node(&url, "node-b", &trial),
    ];
    let mut tasks = Vec::new();
    for i in 0..150 {
        let (client, url) = (nodes[i % 2].client.clone(), nodes[i % 2].url("/sandboxes"));
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        [(200, 100), (429, 50)].into(),
        "exactly the daily budget"
    );

    // One sandbox at a time for a trial user, whichever nodes the creates reach.
    let other = common::client_with_key(&new_key(&url, "trial2@example.com", "trial"));
    let creates = nodes.iter().map(|n| {
        let (client, url) = (other.clone(), n.url("/sandbox"));
        async move {
            let r = client
                .post(url)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    let mut created = futures::future::join_all(creates).await;
    created.sort_unstable();
    assert_eq!(created[0], 200, "{created:?}");
    assert!((400..500).contains(&created[1]), "{created:?}");

    // A revocation reaches every node (their key caches expire within seconds).
    let pro = new_key(&url, "pro@example.com", "pro");
    let client = common::client_with_key(&pro);
    for n in &nodes {
        let r = client.get(n.url("/sandboxes")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    ok_stdout(&url, &["revoke-key", "--key", &pro]);
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in &nodes {
        loop {
            let r = client.get(n.url("/sandboxes")).send().await.unwrap();
            if r.status() == 401 {
                break;
            }
            assert!(Instant::now() < deadline, "revoked key still accepted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Single-node SQLite mode registers its node too, so `cerver admin nodes` answers the same
/// everywhere; a wrong database URL is a clear error.
#[test]
fn a_sqlite_server_lists_its_node_and_a_bad_url_is_refused() {
    let server = Server::start_with(&["--node-name", "solo"]);
    let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .args(["admin", "nodes", "--data-dir"])
        .arg(&server.data_dir)
        .env_remove("CERVER_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("solo "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    // Without --advertise-url a node advertises the address it listens on.
    assert_eq!(row[1], server.base, "{table}");
    assert_eq!(&row[2..4], ["alive", "no"]);

    let (out, _) = admin("mysql://db/cerver", &["nodes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres://"), "{err}");
}
