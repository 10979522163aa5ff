//! Cluster mode: what forwarding between nodes costs a run, and what the database does per
//! request. A throw-away Postgres (the tests' fixture: `initdb` + `pg_ctl` as `postgres`, a
//! unix socket in a temporary directory) and two `cerver serve` nodes on it; one sandbox on
//! node 1, `print(1)` run through node 1 (the holder) and through node 2 (forwarded),
//! interleaved so that both series see the same machine. The database's own counters
//! (`pg_stat_database`: transactions, rows written) are read around a batch of runs and of
//! creates.

#[path = "../../../cerver-store/tests/common/pg.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cerver_bench::api::Api;

use crate::report::Series;

const SECRET: &str = "bench-cluster-secret-0123456789";

/// What the cluster section measured.
pub struct Figures {
    pub series: Vec<Series>,
    pub notes: Vec<String>,
}

/// A node: a `cerver serve` child on the shared database, stopped on drop.
struct Node {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn admin(binary: &Path, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("admin")
        .args(args)
        .args(["--database-url", url])
        .output()
        .context("run cerver admin")?;
    if !out.status.success() {
        bail!(
            "cerver admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn start_node(binary: &Path, url: &str, name: &str) -> anyhow::Result<Node> {
    let dir = std::env::temp_dir().join(format!("cerver-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--pool-size", "1"])
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--database-url",
            url,
            "--node-name",
            name,
            "--cluster-secret",
            SECRET,
        ])
        .env("CERVER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start a node")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    break addr.trim().to_string();
                }
            }
            _ => bail!("node {name} exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Node { child, dir, base })
}

/// (transactions committed, rows inserted + updated + deleted) of the `cerver` database.
fn db_counters(pg: &pg::PgCluster) -> anyhow::Result<(u64, u64)> {
    let out = pg.psql(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted \
         FROM pg_stat_database WHERE datname = 'cerver'",
    );
    let mut fields = out.split('|').map(|f| f.trim().parse::<u64>());
    match (fields.next(), fields.next()) {
        (Some(Ok(x)), Some(Ok(w))) => Ok((x, w)),
        _ => bail!("pg_stat_database: {out:?}"),
    }
}

/// Per operation, from counters read around `n` of them (Postgres 15's backends report their
/// statistics at most once a second while busy and within 10 s once idle: 11 s are waited).
async fn per_op(pg: &pg::PgCluster, before: (u64, u64), n: usize) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = db_counters(pg)?;
    let n = n as f64;
    Ok((
        (after.0 - before.0) as f64 / n,
        (after.1 - before.1) as f64 / n,
    ))
}

pub async fn measure(binary: &Path, warmup: usize, iterations: usize) -> anyhow::Result<Figures> {
    let pg = pg::PgCluster::start();
    let url = pg.url();
    admin(binary, &url, &["list-users"])?;
    let key = admin(
        binary,
        &url,
        &[
            "create-key",
            "--email",
            "bench@example.com",
            "--plan",
            "pro",
        ],
    )?;
    let key = key.lines().last().unwrap_or_default().to_string();
    let one = start_node(binary, &url, "n1")?;
    let two = start_node(binary, &url, "n2")?;
    let timeout = Duration::from_secs(60);
    let (via_holder, via_other) = (
        Api::new(&one.base, &key, timeout)?,
        Api::new(&two.base, &key, timeout)?,
    );
    let (id, _) = via_holder.create(serde_json::json!({})).await?;
    for _ in 0..warmup {
        via_holder.run(&id, "print(1)", "1").await?;
        via_other.run(&id, "print(1)", "1").await?;
    }
    let (mut here, mut forwarded) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let t = Instant::now();
        via_holder.run(&id, "print(1)", "1").await?;
        here.push(t.elapsed());
        let t = Instant::now();
        via_other.run(&id, "print(1)", "1").await?;
        forwarded.push(t.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = db_counters(&pg)?;
    for _ in 0..iterations {
        via_holder.run(&id, "print(1)", "1").await?;
    }
    let (run_tx, run_rows) = per_op(&pg, before, iterations).await?;
    let creates = iterations.min(20);
    let before = db_counters(&pg)?;
    for _ in 0..creates {
        let (sb, _) = via_holder.create(serde_json::json!({})).await?;
        via_holder.delete(&sb).await?;
    }
    let (create_tx, create_rows) = per_op(&pg, before, creates).await?;
    let notes = vec![format!(
        "cluster (2 nodes, one Postgres): database transactions per run {run_tx:.2} \
         (rows written {run_rows:.2}); per create + delete {create_tx:.2} (rows written \
         {create_rows:.2}); the node table is read at most once a second per node and each \
         node writes its heartbeat every 5 s"
    )];
    drop((one, two));
    Ok(Figures {
        series: vec![
            Series::new(
                "cluster_run_holder",
                "cluster: warm run via the holding node",
                here,
            ),
            Series::new(
                "cluster_run_forwarded",
                "cluster: warm run via another node (forwarded)",
                forwarded,
            ),
        ],
        notes,
    })
}
