//! `cerver-bench`: measures Cerver against the cost it is meant to beat, a bare
//! `python3 -I -S -c 'print(1)'` spawn measured in the same run, and reports:
//!
//! - run latency: `print(1)` over HTTP in one warm sandbox;
//! - create latency: `POST /sandbox` from a warm pool (paced so it can refill), and cold
//!   (`--pool-size 0`);
//! - host memory per idle sandbox (cgroup usage, PSS of the helper trees, MemAvailable).
//!
//! It talks only to servers it starts itself on 127.0.0.1, and exits 0 whether or not the
//! targets are met (it is a report); non-zero only when something fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use cerver_bench::procs;
use cerver_bench::server::Server;
use cerver_bench::stats::Summary;

const MIB: f64 = 1024.0 * 1024.0;
/// Targets: run p50 and create p50 relative to the bare spawn p50; memory per idle sandbox.
const RUN_RATIO_TARGET: f64 = 0.5;
const CREATE_RATIO_TARGET: f64 = 1.0;
/// Containers engine: create p50 at most this multiple of a bare interpreter spawn.
const CONTAINERS_CREATE_RATIO_TARGET: f64 = 5.0;
const MEMORY_TARGET_MIB: f64 = 8.0;
/// How long a server may take to fill its pool (or settle) before the benchmark gives up.
const POOL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(
    name = "cerver-bench",
    version,
    about = "Benchmark a cerver release binary against a bare python3 spawn"
)]
struct Args {
    /// The `cerver` binary to benchmark (build it with --release).
    #[arg(long)]
    server: PathBuf,
    /// Timed iterations of the bare spawn, the run and the warm create.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Untimed warm-up iterations before the bare spawn and run series.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// `--pool-size` of the server used for the run and warm-create figures.
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
    /// Pause between warm creates (outside the timed section), in ms, so the pool can refill
    /// as a real client's pacing would allow.
    #[arg(long, default_value_t = 100)]
    create_gap_ms: u64,
    /// Timed creates on the `--pool-size 0` server (cold creates).
    #[arg(long, default_value_t = 20)]
    cold_iterations: usize,
    /// Idle sandboxes created for the memory measurement.
    #[arg(long, default_value_t = 20)]
    idle_sandboxes: usize,
    /// Pause before each memory snapshot, in ms.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// The interpreter of the bare-spawn baseline.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(&args) {
        eprintln!("cerver-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(args: &Args) -> anyhow::Result<()> {
    if args.iterations == 0 || args.cold_iterations == 0 || args.idle_sandboxes == 0 {
        bail!("--iterations, --cold-iterations and --idle-sandboxes must be at least 1");
    }
    if !args.server.is_file() {
        bail!(
            "--server {}: no such file (build it with `cargo build --release -p cerver`)",
            args.server.display()
        );
    }
    let started = Instant::now();
    let load_before = loadavg();

    progress(&format!(
        "bare spawn: {} x {} -I -S -c 'print(1)'",
        args.iterations,
        args.python.display()
    ));
    let bare = bare_spawn(&args.python, args.warmup, args.iterations)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench_server(args, bare))?;
    report.print(args, started.elapsed(), &load_before);
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("cerver-bench: {msg}");
}

/// Spawns `python -I -S -c 'print(1)'` and waits for it (output captured), `iterations`
/// times after `warmup` untimed ones.
fn bare_spawn(python: &Path, warmup: usize, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let start = Instant::now();
        let out = Command::new(python)
            .args(["-I", "-S", "-c", "print(1)"])
            .output()
            .with_context(|| format!("spawn {}", python.display()))?;
        let elapsed = start.elapsed();
        if !out.status.success() || out.stdout != b"1\n" {
            bail!(
                "{} -I -S -c 'print(1)': {} stdout {:?} stderr {:?}",
                python.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

struct Memory {
    sandboxes: usize,
    /// Engines of the idle sandboxes.
    engines: Vec<String>,
    helpers_seen: usize,
    /// Per sandbox, MiB: drop of MemAvailable (system-wide).
    mem_available: f64,
    /// Per sandbox, MiB: growth of the summed sandbox-cgroup counters; `None` when the v1
    /// memory controller is not there or no sandbox cgroup could be read.
    cgroup: Option<CgroupPer>,
    /// Per sandbox, MiB: growth of the summed PSS of the `__jail` trees; `None` when no
    /// process could be read.
    pss: Option<PssPer>,
}

/// Per-sandbox growth of the sandbox cgroups' counters, MiB.
#[derive(Clone, Copy)]
struct CgroupPer {
    usage: f64,
    rss: f64,
    cache: f64,
    /// Sandbox cgroups read after creating the sandboxes.
    cgroups: usize,
}

/// Per-sandbox growth of the `__jail` trees' PSS, MiB.
#[derive(Clone, Copy)]
struct PssPer {
    pss: f64,
    anon: f64,
    file: f64,
    shmem: f64,
    /// Processes read after creating the sandboxes.
    processes: usize,
}

impl Memory {
    /// The figure judged against the target: the larger of the two per-sandbox attributions
    /// (cgroup counts kernel memory charged to the sandbox, PSS counts the helper outside the
    /// cgroup); MemAvailable only when neither could be read, as it is system-wide and noisy.
    fn judged(&self) -> (f64, &'static str) {
        match (self.cgroup.map(|c| c.usage), self.pss.map(|p| p.pss)) {
            (Some(c), Some(p)) if c >= p => (c, "cgroup usage, >= PSS"),
            (Some(_), Some(p)) => (p, "PSS, > cgroup usage"),
            (Some(c), None) => (c, "cgroup usage; PSS n/a"),
            (None, Some(p)) => (p, "PSS; cgroup n/a"),
            (None, None) => (self.mem_available, "MemAvailable drop; cgroup, PSS n/a"),
        }
    }
}

struct Report {
    bare: Summary,
    run: Summary,
    /// The runs' `duration` as the server reported it (whole ms).
    run_server: Summary,
    create_warm: Summary,
    create_cold: Summary,
    /// Containers engine: create (warm pool), first run in a new sandbox, create (no pool).
    containers_create: Summary,
    containers_first_run: Summary,
    containers_cold: Summary,
    /// `six==1.16.0` into a new containers sandbox, then into another (from the wheel cache).
    install_cold: Duration,
    install_cached: Duration,
    pool_fill: Duration,
    /// `__jail` helpers of the full warm pool (the server keeps a pool per engine).
    pool_helpers: usize,
    /// Engine of the run sandbox (the server's default for an empty create body).
    engine: String,
    memory: Memory,
}

async fn bench_server(args: &Args, bare: Vec<Duration>) -> anyhow::Result<Report> {
    let bare = Summary::of(&bare).expect("at least one iteration");

    // Warm server: run and warm-create figures.
    progress(&format!(
        "starting {} --pool-size {}",
        args.server.display(),
        args.pool_size
    ));
    let mut warm = Server::start(&args.server, args.pool_size, "warm")?;
    let pool_fill = warm
        .wait_for_helpers(args.pool_size, true, POOL_TIMEOUT)
        .await?;
    let pool_helpers = procs::jail_trees(warm.pid()).helpers;

    progress(&format!(
        "run: {} warm-up + {} x print(1) over HTTP in one sandbox",
        args.warmup, args.iterations
    ));
    let (id, engine) = warm.create().await?;
    let mut run = Vec::with_capacity(args.iterations);
    let mut run_server = Vec::with_capacity(args.iterations);
    for i in 0..args.warmup + args.iterations {
        let start = Instant::now();
        let reported = warm.run(&id, "print(1)", "1").await?;
        if i >= args.warmup {
            run.push(start.elapsed());
            run_server.push(reported);
        }
    }
    warm.delete(&id).await?;

    progress(&format!(
        "create: {} x create+delete, {} ms apart (pool {})",
        args.iterations, args.create_gap_ms, args.pool_size
    ));
    warm.wait_for_helpers(pool_helpers, false, POOL_TIMEOUT)
        .await?;
    let create_warm = create_series(
        &warm,
        args.iterations,
        Duration::from_millis(args.create_gap_ms),
    )
    .await?;

    progress(&format!(
        "containers: {} x (create, first print(1), delete), {} ms apart (pool {})",
        args.iterations, args.create_gap_ms, args.pool_size
    ));
    let mut containers_create = Vec::with_capacity(args.iterations);
    let mut containers_first_run = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let start = Instant::now();
        let (id, _) = warm.create_with(Some("containers")).await?;
        containers_create.push(start.elapsed());
        let run_start = Instant::now();
        warm.run(&id, "print(1)", "1").await?;
        containers_first_run.push(run_start.elapsed());
        warm.delete(&id).await?;
        tokio::time::sleep(Duration::from_millis(args.create_gap_ms)).await;
    }

    progress("install: six==1.16.0 into a new containers sandbox, twice");
    let mut installs = Vec::new();
    for _ in 0..2 {
        let (id, _) = warm.create_with(Some("containers")).await?;
        let start = Instant::now();
        warm.install(&id, "six==1.16.0").await?;
        installs.push(start.elapsed());
        warm.delete(&id).await?;
    }
    if !warm.stop() {
        bail!(
            "the --pool-size {} server did not exit on SIGTERM",
            args.pool_size
        );
    }

    // Cold server: cold-create and memory figures.
    let containers_warm = containers_create.clone();
    progress(&format!("starting {} --pool-size 0", args.server.display()));
    let mut cold = Server::start(&args.server, 0, "cold")?;
    progress(&format!(
        "cold create: 1 warm-up + {} x create+delete",
        args.cold_iterations
    ));
    create_series(&cold, 1, Duration::from_millis(args.create_gap_ms)).await?;
    let create_cold = create_series(
        &cold,
        args.cold_iterations,
        Duration::from_millis(args.create_gap_ms),
    )
    .await?;
    let mut containers_cold = Vec::with_capacity(args.cold_iterations);
    for _ in 0..args.cold_iterations {
        let start = Instant::now();
        let (id, _) = cold.create_with(Some("containers")).await?;
        containers_cold.push(start.elapsed());
        cold.delete(&id).await?;
        tokio::time::sleep(Duration::from_millis(args.create_gap_ms)).await;
    }

    progress(&format!("memory: {} idle sandboxes", args.idle_sandboxes));
    let memory = measure_memory(
        &cold,
        args.idle_sandboxes,
        Duration::from_millis(args.settle_ms),
    )
    .await?;
    if !cold.stop() {
        bail!("the --pool-size 0 server did not exit on SIGTERM");
    }

    Ok(Report {
        bare,
        run: Summary::of(&run).expect("at least one iteration"),
        run_server: Summary::of(&run_server).expect("at least one iteration"),
        create_warm: Summary::of(&create_warm).expect("at least one iteration"),
        create_cold: Summary::of(&create_cold).expect("at least one iteration"),
        containers_create: Summary::of(&containers_warm).expect("at least one iteration"),
        containers_first_run: Summary::of(&containers_first_run).expect("at least one iteration"),
        containers_cold: Summary::of(&containers_cold).expect("at least one iteration"),
        install_cold: installs[0],
        install_cached: installs[1],
        pool_fill,
        pool_helpers,
        engine,
        memory,
    })
}

/// `n` x (timed `POST /sandbox`, untimed `DELETE`, untimed sleep of `gap`).
async fn create_series(server: &Server, n: usize, gap: Duration) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let (id, _) = server.create().await?;
        samples.push(start.elapsed());
        server.delete(&id).await?;
        tokio::time::sleep(gap).await;
    }
    Ok(samples)
}

/// One memory snapshot of a server's sandboxes.
struct Snapshot {
    mem_available: u64,
    cgroup: Option<procs::CgroupSum>,
    pss: procs::PssSum,
    helpers: usize,
}

fn snapshot(server: &Server, cgroup_dir: &Path) -> anyhow::Result<Snapshot> {
    let trees = procs::jail_trees(server.pid());
    Ok(Snapshot {
        mem_available: procs::mem_available()?,
        cgroup: procs::cgroup_usage_sum(cgroup_dir),
        pss: procs::pss_sum(&trees.pids),
        helpers: trees.helpers,
    })
}

/// Memory before and after creating `k` idle sandboxes (each warmed by one `print(1)`) on a
/// server with no pool; deletes them afterwards.
async fn measure_memory(server: &Server, k: usize, settle: Duration) -> anyhow::Result<Memory> {
    let cgroup_dir = procs::cgroup_dir(&server.data_dir)?;
    server.wait_for_helpers(0, false, POOL_TIMEOUT).await?;
    tokio::time::sleep(settle).await;
    let before = snapshot(server, &cgroup_dir)?;

    let mut ids = Vec::with_capacity(k);
    let mut engines = std::collections::BTreeSet::new();
    for _ in 0..k {
        let (id, engine) = server.create().await?;
        engines.insert(engine);
        server.run(&id, "print(1)", "1").await?;
        ids.push(id);
    }
    server.wait_for_helpers(k, false, POOL_TIMEOUT).await?;
    tokio::time::sleep(settle).await;
    let after = snapshot(server, &cgroup_dir)?;

    for id in &ids {
        server.delete(id).await?;
    }

    let per = |before: u64, after: u64| (after as f64 - before as f64) / k as f64 / MIB;
    Ok(Memory {
        sandboxes: k,
        engines: engines.into_iter().collect(),
        helpers_seen: after.helpers - before.helpers.min(after.helpers),
        mem_available: per(after.mem_available, before.mem_available),
        cgroup: match (before.cgroup, after.cgroup) {
            (Some(b), Some(a)) if a.read > 0 => Some(CgroupPer {
                usage: per(b.usage, a.usage),
                rss: per(b.rss, a.rss),
                cache: per(b.cache, a.cache),
                cgroups: a.read,
            }),
            _ => None,
        },
        pss: (after.pss.read > 0).then(|| {
            let (b, a) = (before.pss, after.pss);
            PssPer {
                pss: per(b.pss, a.pss),
                anon: per(b.anon, a.anon),
                file: per(b.file, a.file),
                shmem: per(b.shmem, a.shmem),
                processes: a.read,
            }
        }),
    })
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn first_line(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
}

impl Report {
    fn print(&self, args: &Args, elapsed: Duration, load_before: &str) {
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = first_line(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total = first_line(&meminfo, "MemTotal").unwrap_or_else(|| "unknown".into());

        println!();
        println!("cerver-bench");
        println!(
            "  machine   nproc {nproc}, kernel {}, cpu {cpu}, MemTotal {mem_total}",
            kernel.trim()
        );
        println!(
            "  loadavg   {load_before} at start, {} at end (other work on the host skews every figure)",
            loadavg()
        );
        println!("  server    {}", args.server.display());
        println!(
            "  baseline  {} -I -S -c 'print(1)' (spawn + wait, output captured)",
            args.python.display()
        );
        println!();
        println!(
            "latency (ms)                                     n      min      p50      p90      p99      max"
        );
        let row = |name: &str, s: &Summary| {
            println!(
                "  {name:<44} {:>4} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                s.n, s.min, s.p50, s.p90, s.p99, s.max
            );
        };
        row("bare spawn python3 -I -S -c 'print(1)'", &self.bare);
        row("run print(1) over HTTP, one warm sandbox", &self.run);
        row("  same runs, server-reported duration", &self.run_server);
        row(
            &format!(
                "create, warm pool ({}, {} ms gap)",
                args.pool_size, args.create_gap_ms
            ),
            &self.create_warm,
        );
        row("create, cold (--pool-size 0)", &self.create_cold);
        row("containers: create, warm pool", &self.containers_create);
        row(
            "containers: first print(1) after create",
            &self.containers_first_run,
        );
        row(
            "containers: create, cold (--pool-size 0)",
            &self.containers_cold,
        );
        println!(
            "  containers: install six==1.16.0 in a new sandbox: {:.0} ms, then {:.0} ms in another (the first\n  fetches the wheel unless the host-wide wheel cache already holds it)",
            self.install_cold.as_secs_f64() * 1000.0,
            self.install_cached.as_secs_f64() * 1000.0
        );
        println!(
            "  notes: {} untimed warm-up bare spawns and runs, 1 untimed cold create; the warm",
            args.warmup
        );
        println!(
            "  server (--pool-size {}, a pool per engine: {} helpers) was full {:.1} s after start;",
            args.pool_size,
            self.pool_helpers,
            self.pool_fill.as_secs_f64()
        );
        println!(
            "  an empty POST /sandbox body made {} sandboxes; server durations are whole ms.",
            self.engine
        );
        println!();

        let m = &self.memory;
        println!(
            "memory per idle sandbox (MiB; {} {} sandboxes on --pool-size 0, each ran print(1), settled {} ms)",
            m.sandboxes,
            m.engines.join("+"),
            args.settle_ms
        );
        match m.cgroup {
            Some(c) => println!(
                "  sandbox cgroups memory.usage_in_bytes  {:>8.2}   ({} cgroups; rss {:.2}, cache {:.2}, rest/kernel {:.2})",
                c.usage,
                c.cgroups,
                c.rss,
                c.cache,
                c.usage - c.rss - c.cache
            ),
            None => println!("  sandbox cgroups memory.usage_in_bytes       n/a   (not readable)"),
        }
        match m.pss {
            Some(p) => println!(
                "  PSS of the __jail helper trees         {:>8.2}   ({} processes in {} helper trees; anon {:.2}, file {:.2}, shmem {:.2})",
                p.pss, p.processes, m.helpers_seen, p.anon, p.file, p.shmem
            ),
            None => println!("  PSS of the __jail helper trees              n/a   (not readable)"),
        }
        println!(
            "  MemAvailable drop                      {:>8.2}   (system-wide: other activity on the host adds noise)",
            m.mem_available
        );
        println!();

        let run_ratio = self.run.p50 / self.bare.p50;
        let create_ratio = self.create_warm.p50 / self.bare.p50;
        let (mem, source) = m.judged();
        println!("targets                                     value   target");
        println!(
            "  run p50 / bare spawn p50              {run_ratio:>10.3}   <= {RUN_RATIO_TARGET:<6.1} {}",
            verdict(run_ratio <= RUN_RATIO_TARGET)
        );
        println!(
            "  create p50 / bare spawn p50           {create_ratio:>10.3}   <= {CREATE_RATIO_TARGET:<6.1} {}",
            verdict(create_ratio <= CREATE_RATIO_TARGET)
        );
        println!(
            "  memory per idle sandbox (MiB)         {mem:>10.2}   <= {MEMORY_TARGET_MIB:<6.1} {}   ({source})",
            verdict(mem <= MEMORY_TARGET_MIB)
        );
        let containers_ratio = self.containers_create.p50 / self.bare.p50;
        println!(
            "  containers create p50 / bare p50      {containers_ratio:>10.3}   <= {CONTAINERS_CREATE_RATIO_TARGET:<6.1} {}",
            verdict(containers_ratio <= CONTAINERS_CREATE_RATIO_TARGET)
        );
        println!(
            "  (info) cold create p50 / bare p50     {:>10.3}",
            self.create_cold.p50 / self.bare.p50
        );
        println!(
            "  (info) containers cold create / bare  {:>10.3}",
            self.containers_cold.p50 / self.bare.p50
        );
        println!(
            "  (info) cached install (s)             {:>10.3}   <= 1.0    {}",
            self.install_cached.as_secs_f64(),
            verdict(self.install_cached.as_secs_f64() <= 1.0)
        );
        println!();
        println!("total benchmark time {:.1} s", elapsed.as_secs_f64());
    }
}
