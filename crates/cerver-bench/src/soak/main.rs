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
#[command(
    name = "cerver-soak",
    version,
    about = "Soak a cerver binary on loopback"
)]
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
    /// The short mode of scripts/test: 35 s with 6 users (overrides the two options).
    #[arg(long)]
    short: bool,
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
    let mut args = Args::parse();
    if args.short {
        args.duration_secs = 35;
        args.users = 6;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The last line counts the checks, as scripts/test adds them up.
    match rt.block_on(soak(&args)) {
        Ok((passed, 0)) => println!("soak: {passed} passed, 0 failed"),
        Ok((passed, failed)) => {
            println!("soak: {passed} passed, {failed} failed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("cerver-soak: error: {e:#}");
            println!("soak: 0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}

/// Runs the soak; returns how many checks passed and failed.
async fn soak(args: &Args) -> anyhow::Result<(usize, usize)> {
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
    // Warm up (one everyday cycle; is there a containers engine?), then wait for the pool to
    // be full and idle.
    let everyday = Arc::new(Mutex::new(Record::default()));
    let abusive = Arc::new(Mutex::new(Record::default()));
    let user = |key: &str, record: &Arc<Mutex<Record>>| -> anyhow::Result<User> {
        Ok(User {
            base: server.base.clone(),
            client: client_with_key(key, Duration::from_secs(120))?,
            record: record.clone(),
        })
    };
    let warm = user(&keys[0], &Arc::new(Mutex::new(Record::default())))?;
    warm.everyday(0).await?;
    let install = match cached_wheel() {
        Some(wheel) if warm.containers_available().await? => Some(wheel),
        Some(_) => {
            eprintln!("cerver-soak: no containers engine here: install skipped");
            None
        }
        None => {
            eprintln!("cerver-soak: no cached wheel of six: install skipped");
            None
        }
    };
    drop(warm);
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
    if let Some((req, module)) = install.clone() {
        let u = user(&keys[args.users + 3], &abusive)?;
        tasks.spawn(async move {
            if let Err(e) = u.install_from_cache(&req, &module).await {
                u.error(e);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let load_time = started.elapsed();
    server.check_alive()?;
    // Whatever a failed cycle left behind goes now, as a client would delete it.
    let mut left = 0;
    for key in &keys {
        left += user(key, &everyday)?.delete_all().await?;
    }
    if left > 0 {
        eprintln!("cerver-soak: deleted {left} sandboxes left by failed cycles");
    }

    let after = settle(&server, &before).await;
    report(
        args, &server, &before, &after, load_time, &everyday, &abusive, &install,
    )
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

/// Open fds the server may hold beyond its level before the load: the store's SQLite pool
/// opens up to 4 connections under load and keeps them (database, WAL and shared-memory
/// files: 3 fds each).
const FD_SLACK: usize = 12;

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
) -> anyhow::Result<(usize, usize)> {
    let e = everyday.lock().unwrap();
    let a = abusive.lock().unwrap();
    let (mut passed, mut failed) = (0, 0);
    let mut check = |pass: bool, what: String| {
        println!("  [{}] {what}", if pass { "PASS" } else { "FAIL" });
        if pass {
            passed += 1;
        } else {
            failed += 1;
        }
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
        format!(
            "no 5xx ({} seen: {:?})",
            server_errors.len(),
            server_errors.iter().take(5).collect::<Vec<_>>()
        ),
    );
    let errors: Vec<&String> = e.errors.iter().chain(&a.errors).collect();
    check(
        errors.is_empty(),
        format!(
            "every expectation held ({} failed: {:?})",
            errors.len(),
            errors.iter().take(5).collect::<Vec<_>>()
        ),
    );
    let abuse_cycles = ["fork bomb", "memory bomb", "output bomb"]
        .iter()
        .all(|k| a.cycles.get(k).copied().unwrap_or(0) > 0);
    check(
        abuse_cycles,
        "each bomb ran at least once, and its sandbox ran code afterwards".into(),
    );
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
        Some((req, _)) if a.cycles.contains_key("install") => check(
            true,
            format!("a containers sandbox installed {req} from the wheel cache"),
        ),
        Some((req, _)) => check(
            false,
            format!("a containers sandbox installed {req} from the wheel cache"),
        ),
        None => println!(
            "  [SKIP] install from the cache: no containers engine or no cached wheel of six"
        ),
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
        format!(
            "open fds back: {} (before: {}, slack {FD_SLACK})",
            after.fds, before.fds
        ),
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
            format!(
                "{n} sandbox cgroups in {} for {} sandboxes",
                dir.display(),
                after.helpers
            ),
        );
    }
    println!(
        "  [INFO] host veths (cerv*, every server on this host): {} before, {} after",
        before.veths, after.veths
    );
    Ok((passed, failed))
}
