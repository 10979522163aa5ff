//! `cerver-soak`: a bounded load on one `cerver serve` it starts on 127.0.0.1. Many users at
//! once (keys minted with the admin CLI) create, run, stream, write/read/list files and
//! delete, one containers sandbox installs a cached wheel (when the engine and a wheel are
//! there), while a fork bomb, a memory bomb and an output bomb run in sandboxes of their own.
//! It stops by itself after `--duration-secs`, deletes what is left, and checks:
//!
//! - no 5xx and no failed expectation;
//! - the everyday API requests' p99 within `--p99-bound-ms`;
//! - the server's descendants, open fds and RSS back to (near) their level before the load;
//! - no orphaned host objects: as many sandbox cgroups under the server's instance parent,
//!   in every hierarchy, as sandboxes (the warm pool's), no process left but their trees.
//!
//! Exit status: 0 when every check passes, 1 otherwise (or when something fails to start).

mod load;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use cerver_bench::procs;
use cerver_bench::server::{Server, client_with_key};
use cerver_bench::stats::Summary;
use clap::Parser;

use load::{Record, User};

#[derive(Parser)]
#[command(name = "cerver-soak", version, about = "Soak a cerver binary on loopback")]
struct Args {
    /// The `cerver` binary to soak.
    #[arg(long)]
    server: PathBuf,
    /// How long the load lasts.
    #[arg(long, default_value_t = 180)]
    duration_secs: u64,
    /// Users doing everyday work at once (each its own key and sandboxes).
    #[arg(long, default_value_t = 12)]
    users: usize,
    /// Bound on the everyday requests' p99, in ms (runs are `print`s; the abusive sandboxes'
    /// requests are not in it).
    #[arg(long, default_value_t = 3000)]
    p99_bound_ms: u64,
    /// Allowed growth of the server's RSS after the load, in MiB (allocator caches).
    #[arg(long, default_value_t = 64)]
    rss_slack_mib: u64,
    /// `--pool-size` of the server.
    #[arg(long, default_value_t = 2)]
    pool_size: usize,
}

/// What is measured of the server before and after the load.
#[derive(Debug, Clone, Copy)]
struct Level {
    helpers: usize,
    descendants: usize,
    fds: usize,
    rss: u64,
    veths: usize,
}

impl Level {
    fn of(server: &Server) -> Level {
        let pid = server.pid();
        Level {
            helpers: procs::jail_trees(pid).helpers,
            descendants: procs::descendants(pid).len(),
            fds: procs::fd_count(pid),
            rss: procs::rss_bytes(pid),
            veths: procs::host_veths(),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;
/// How long the server may take to come back to its level after the load.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(soak(&args)) {
        Ok(true) => println!("soak: PASS"),
        Ok(false) => {
            println!("soak: FAIL");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("cerver-soak: error: {e:#}");
            println!("soak: FAIL");
            std::process::exit(1);
        }
    }
}

async fn soak(args: &Args) -> anyhow::Result<bool> {
    if !args.server.is_file() {
        bail!("--server {}: no such file", args.server.display());
    }
    let sandboxes = (args.users + 8).to_string();
    let server = Server::start_with(
        &args.server,
        args.pool_size,
        "soak",
        &["--max-sandboxes", &sandboxes, "--max-timeout-ms", "900000"],
    )?;
    let mut keys = Vec::new();
    for i in 0..args.users + 4 {
        keys.push(server.mint_key(&args.server, &format!("soak{i}@example.com"))?);
    }
    // Warm up (one everyday cycle), then wait for the pool to be full and idle.
    let everyday = Arc::new(Mutex::new(Record::default()));
    let abusive = Arc::new(Mutex::new(Record::default()));
    let user = |key: &str, record: &Arc<Mutex<Record>>| -> anyhow::Result<User> {
        Ok(User {
            base: server.base.clone(),
            client: client_with_key(key, Duration::from_secs(120))?,
            record: record.clone(),
        })
    };
    user(&keys[0], &Arc::new(Mutex::new(Record::default())))?
        .everyday(0)
        .await?;
    server
        .wait_for_helpers(args.pool_size, true, Duration::from_secs(120))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = Level::of(&server);
    eprintln!("cerver-soak: before the load: {before:?}");

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, key) in keys.iter().take(args.users).enumerate() {
        let u = user(key, &everyday)?;
        tasks.spawn(async move {
            let mut n = i as u64 * 1_000_000;
            while Instant::now() < deadline {
                n += 1;
                if let Err(e) = u.everyday(n).await {
                    u.error(e);
                }
            }
        });
    }
    for (kind, key) in ["fork bomb", "memory bomb", "output bomb"]
        .into_iter()
        .zip(&keys[args.users..])
    {
        let u = user(key, &abusive)?;
        tasks.spawn(async move {
            if let Err(e) = u.abuse(kind, deadline).await {
                u.error(e);
            }
        });
    }
    let install = cached_wheel();
    match &install {
        Some((req, module)) => {
            let u = user(&keys[args.users + 3], &abusive)?;
            let (req, module) = (req.clone(), module.clone());
            tasks.spawn(async move {
                match u.install_from_cache(&req, &module).await {
                    // No containers engine here: said below, not a failure.
                    Err(e) if e.to_string().contains("HTTP 503") => {}
                    Err(e) => u.error(e),
                    Ok(()) => {}
                }
            });
        }
        None => eprintln!("cerver-soak: no cached wheel of six: install skipped"),
    }
    while tasks.join_next().await.is_some() {}
    let load_time = started.elapsed();
    server.check_alive()?;

    let after = settle(&server, &before).await;
    let ok = report(args, &server, &before, &after, load_time, &everyday, &abusive, &install)?;
    Ok(ok)
}

/// A wheel of `six` in the host's wheel cache, as (`six==<version>`, `six`).
fn cached_wheel() -> Option<(String, String)> {
    let dir = std::fs::read_dir("/var/cache/cerver/wheels").ok()?;
    dir.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let version = name.strip_prefix("six-")?.split('-').next()?.to_string();
        Some((format!("six=={version}"), "six".to_string()))
    })
}

/// Waits (up to [`SETTLE_TIMEOUT`]) for the server to come back to `before`: as many
/// helpers and descendants, fds and RSS within their slack; returns the last level seen.
async fn settle(server: &Server, before: &Level) -> Level {
    let start = Instant::now();
    loop {
        let now = Level::of(server);
        let back = now.helpers == before.helpers
            && now.descendants <= before.descendants
            && now.fds <= before.fds + FD_SLACK;
        if back || start.elapsed() > SETTLE_TIMEOUT {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Open fds the server may hold beyond its level before the load (log files rotated, a
/// connection still closing).
const FD_SLACK: usize = 4;

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    server: &Server,
    before: &Level,
    after: &Level,
    load_time: Duration,
    everyday: &Mutex<Record>,
    abusive: &Mutex<Record>,
    install: &Option<(String, String)>,
) -> anyhow::Result<bool> {
    let e = everyday.lock().unwrap();
    let a = abusive.lock().unwrap();
    let mut ok = true;
    let mut check = |pass: bool, what: String| {
        println!("  [{}] {what}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    };
    println!(
        "soak: {} users for {:.0} s, {} requests ({} everyday, {} abusive); cycles {:?}",
        args.users,
        load_time.as_secs_f64(),
        e.requests + a.requests,
        e.requests,
        a.requests,
        e.cycles.iter().chain(&a.cycles).collect::<Vec<_>>()
    );
    let server_errors: Vec<&String> = e.server_errors.iter().chain(&a.server_errors).collect();
    check(
        server_errors.is_empty(),
        format!("no 5xx ({} seen: {:?})", server_errors.len(), server_errors.iter().take(5).collect::<Vec<_>>()),
    );
    let errors: Vec<&String> = e.errors.iter().chain(&a.errors).collect();
    check(
        errors.is_empty(),
        format!("every expectation held ({} failed: {:?})", errors.len(), errors.iter().take(5).collect::<Vec<_>>()),
    );
    let abuse_cycles = ["fork bomb", "memory bomb", "output bomb"]
        .iter()
        .all(|k| a.cycles.get(k).copied().unwrap_or(0) > 0);
    check(abuse_cycles, "each bomb ran at least once, and its sandbox ran code afterwards".into());
    match Summary::of(&e.latencies) {
        Some(s) => check(
            s.p99 <= args.p99_bound_ms as f64,
            format!(
                "everyday API latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms (bound {} ms), max {:.1} ms over {} requests",
                s.p50, s.p90, s.p99, args.p99_bound_ms, s.max, s.n
            ),
        ),
        None => check(false, "no everyday request completed".into()),
    }
    match install {
        Some((req, _)) if a.cycles.contains_key("install") => {
            check(true, format!("a containers sandbox installed {req} from the wheel cache"))
        }
        Some(_) => println!("  [SKIP] install from the cache: the containers engine is not available"),
        None => println!("  [SKIP] install from the cache: no cached wheel of six"),
    }
    check(
        after.helpers == before.helpers && after.descendants <= before.descendants,
        format!(
            "processes back: {} sandbox helpers and {} descendants (before: {} and {})",
            after.helpers, after.descendants, before.helpers, before.descendants
        ),
    );
    check(
        after.fds <= before.fds + FD_SLACK,
        format!("open fds back: {} (before: {}, slack {FD_SLACK})", after.fds, before.fds),
    );
    check(
        after.rss <= before.rss + args.rss_slack_mib * 1024 * 1024,
        format!(
            "RSS back: {:.1} MiB (before: {:.1} MiB, slack {} MiB)",
            after.rss as f64 / MIB,
            before.rss as f64 / MIB,
            args.rss_slack_mib
        ),
    );
    for (dir, n) in procs::sandbox_cgroups(&server.data_dir)? {
        check(
            n == after.helpers,
            format!("{n} sandbox cgroups in {} for {} sandboxes", dir.display(), after.helpers),
        );
    }
    println!(
        "  [INFO] host veths (cerv*, every server on this host): {} before, {} after",
        before.veths, after.veths
    );
    Ok(ok)
}
