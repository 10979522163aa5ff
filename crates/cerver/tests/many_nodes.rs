//! Cluster mode end to end: a throw-away Postgres 15 cluster and three real `cerver serve`
//! nodes on loopback, each with its own data dir. A sandbox created on one node is used
//! through the others (runs, live streams, files, background processes, the port proxy);
//! quotas hold exactly across nodes; a `kill -9`ed node's sandboxes answer 503 and then end;
//! a drained node places creates elsewhere; node-to-node requests need the cluster secret.

mod common;
#[path = "../../cerver-store/tests/common/pg.rs"]
mod pg;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, WEB_SERVER, client_with_key, rand_suffix};
use futures::SinkExt;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "cluster-secret-for-tests-0123456789";

/// Postgres and the nodes started on it; the nodes stop before the database.
struct Cluster {
    nodes: Vec<Server>,
    pg: pg::PgCluster,
}

fn admin(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cerver"))
        .arg("admin")
        .args(args)
        .args(["--database-url", url])
        .output()
        .expect("run cerver admin")
}

/// A key made by `cerver admin create-key --database-url` (no data dir).
fn key(url: &str, email: &str, plan: &str) -> String {
    let out = admin(url, &["create-key", "--email", email, "--plan", plan]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

fn node(url: &str, name: &str, key: &str, extra: &[&str]) -> Server {
    let data_dir = std::env::temp_dir().join(format!("cerver-test-{name}-{}", rand_suffix()));
    node_with(url, name, key, data_dir, extra)
}

fn node_in(url: &str, name: &str, key: &str, data_dir: std::path::PathBuf) -> Server {
    node_with(url, name, key, data_dir, &[])
}

fn node_with(
    url: &str,
    name: &str,
    key: &str,
    data_dir: std::path::PathBuf,
    extra: &[&str],
) -> Server {
    let mut args = vec![
        "--database-url",
        url,
        "--node-name",
        name,
        "--cluster-secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    Server::start_keyed(data_dir, key.to_string(), &args)
}

impl Cluster {
    fn start(n: usize, extra: &[&str]) -> Cluster {
        let pg = pg::PgCluster::start();
        let url = pg.url();
        // The first node creates the schema before the admin CLI and the others use it.
        let migrate = admin(&url, &["list-users"]);
        assert!(
            migrate.status.success(),
            "{}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let key = key(&url, "tester@example.com", "pro");
        let names = ["a", "b", "c", "d"];
        let nodes = names[..n]
            .iter()
            .map(|name| node(&url, name, &key, extra))
            .collect();
        Cluster { nodes, pg }
    }

    fn url(&self) -> String {
        self.pg.url()
    }
}

fn node_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("x-cerver-node")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_serves_any_sandbox() {
    let c = Cluster::start(3, &[]);
    let [a, b, cc] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let id = a.sandbox().await;
    // Runs through the other nodes land in the same sandbox.
    assert_eq!(
        b.output(&id, "open('x','w').write('1'); print('hi')").await,
        "hi"
    );
    assert_eq!(cc.output(&id, "print(open('x').read())").await, "1");
    let r = b
        .client
        .post(b.url(&format!("/sandbox/{id}/run")))
        .json(&json!({"code": "print(2)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(node_of(&r).as_deref(), Some("a"), "served by the owner");
    assert!(r.headers().contains_key("x-ratelimit-remaining"));

    // Files both ways through different nodes.
    let (status, v) = cc
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "data/f.txt", "content": "through c"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = b.get(&format!("/sandbox/{id}/files?path=data/f.txt")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"], "through c");

    // A stream through another node arrives live: the first line long before the end.
    let started = Instant::now();
    let r = cc
        .client
        .post(cc.url(&format!("/sandbox/{id}/run/stream")))
        .json(&json!({"code": "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('last')"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    let mut first_at = None;
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_at.is_none() && seen.contains("first") {
            first_at = Some(started.elapsed());
        }
        if seen.contains("\"exit\"") {
            break;
        }
    }
    let first_at = first_at.expect("the first line arrived");
    assert!(seen.contains("last"), "{seen}");
    assert!(
        first_at < Duration::from_millis(1500),
        "the first event waited for the end ({first_at:?}): buffered, not live"
    );

    // Background processes: started through b, listed and killed through c.
    let v = b
        .run_with(
            &id,
            json!({"code": "import time\ntime.sleep(60)", "background": true}),
        )
        .await;
    let pid = v["pid"].as_i64().expect("a pid");
    let (status, v) = cc.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.to_string().contains(&pid.to_string()), "{v}");
    let (status, _) = cc.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200);

    // Every node lists the sandbox; deleting it through c ends it everywhere.
    for n in [a, b, cc] {
        let (status, v) = n.get("/sandboxes").await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = v["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sandbox_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id.as_str()], "{v}");
    }
    let (status, _) = cc.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    for n in [a, b, cc] {
        let (status, v) = n.get(&format!("/sandbox/{id}")).await;
        assert_eq!(status, 404, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_are_exact_across_nodes() {
    let c = Cluster::start(3, &[]);
    let url = c.url();
    // 150 parallel requests of a fresh trial key spread over three nodes: exactly 100 pass.
    let trial = key(&url, "trial@example.com", "trial");
    let client = client_with_key(&trial);
    let asks = (0..150).map(|i| {
        let node = &c.nodes[i % 3];
        let client = client.clone();
        let url = node.url("/sandbox/00000000-0000-4000-8000-000000000000");
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(asks).await;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(limited, 50, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 404 || *s == 429),
        "{statuses:?}"
    );

    // A trial user never holds two sandboxes by creating on two nodes at once.
    let trial = key(&url, "trial2@example.com", "trial");
    let client = client_with_key(&trial);
    let creates = (0..6).map(|i| {
        let client = client.clone();
        let url = c.nodes[i % 3].url("/sandbox");
        async move {
            let r = client.post(url).json(&json!({})).send().await.unwrap();
            r.status().as_u16()
        }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_answers_503_then_its_sandboxes_end() {
    let mut c = Cluster::start(2, &["--node-lease-secs", "3"]);
    let url = c.url();
    let trial = key(&url, "t@example.com", "trial");
    let client = client_with_key(&trial);
    let b_url = c.nodes[1].url("/sandbox");
    let r = client.post(&b_url).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = c.nodes.pop().unwrap();
    let b_dir = b.crash();
    let a = &c.nodes[0];
    let r = client
        .get(a.url(&format!("/sandbox/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "node_unavailable", "{v}");
    // Once the lease has run out the sandbox is gone and no longer counts against the limit.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .get(a.url(&format!("/sandbox/{id}")))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "still {}", r.status());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = client
        .post(a.url("/sandbox"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let _ = std::fs::remove_dir_all(b_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_places_creates_elsewhere_and_secrets_are_checked() {
    let c = Cluster::start(2, &[]);
    let out = admin(&c.url(), &["drain", "--node", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = &c.nodes[0];
    // The node table is re-read within a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = a
        .client
        .post(a.url("/sandbox"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(node_of(&r).as_deref(), Some("b"));
    let out = admin(&c.url(), &["nodes"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(table.contains('a') && table.contains('b'), "{table}");

    // A node-to-node header with the wrong secret is refused; the right one is honoured.
    let r = a
        .client
        .get(a.url("/sandboxes"))
        .header("x-cerver-cluster-secret", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = a
        .client
        .get(a.url("/sandboxes"))
        .header("x-cerver-cluster-secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(node_of(&r).as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_port_proxy_reaches_a_sandbox_on_another_node() {
    let c = Cluster::start(2, &[]);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let id = a.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = b
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "index.html", "content": "hello from a"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    b.run_with(&id, json!({"code": WEB_SERVER, "background": true}))
        .await;
    let (status, v) = b.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(status, 200, "{v}");
    let host = v["host"].as_str().unwrap().to_string();
    // Served by a's sandbox, asked of b (the server may take a moment to listen).
    let mut page = String::new();
    for _ in 0..100 {
        let r = reqwest::Client::new()
            .get(b.url("/index.html"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            page = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page, "hello from a");
    // A WebSocket echo through b to a's sandbox.
    let stream = tokio::net::TcpStream::connect(b.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{host}/ws"), stream)
        .await
        .expect("the WebSocket upgrade went through both nodes");
    assert_eq!(response.status(), 101);
    for msg in [Message::text("hello"), Message::binary(vec![7u8; 70_000])] {
        ws.send(msg.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an echo")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, msg);
    }
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarted_within_its_lease_keeps_its_sandboxes() {
    let mut c = Cluster::start(2, &[]);
    let b = c.nodes.pop().unwrap();
    let id = b.sandbox().await;
    b.output(&id, "open('kept','w').write('yes')").await;
    let key = b.key.clone();
    let dir = b.crash();
    let b = node_in(&c.url(), "b", &key, dir);
    let a = &c.nodes[0];
    // a learns b's new address within a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = a
            .post(
                &format!("/sandbox/{id}/run"),
                json!({"code": "print(open('kept').read())"}),
            )
            .await;
        if status == 200 {
            assert_eq!(v["output"], "yes", "{v}");
            break;
        }
        assert_eq!(v["code"], "node_unavailable", "{v}");
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);
}
