//! `cerver-bench`: measures Cerver side by side with what a user would otherwise do, in one
//! run: baseline A, a bare `python3 -I -S -c 'print(1)'` spawn; baseline B, the same under
//! bubblewrap ([`baseline`]); then ours ([`latency`]): creates (warm pool, cold), create +
//! first run, warm runs, a 10 MiB output, a 50-line script, SSE first byte, a 1 MiB file,
//! containers creates and a cached install; warm-run throughput at several client counts and
//! memory/latency at 10, 100 and 1,000 idle sandboxes ([`scale`]). Output: a table on stdout
//! ([`report`], [`targets`]), a JSON file and PNG plots ([`plots`]).
//!
//! It talks only to servers it starts itself on 127.0.0.1. It exits 0 whether or not the
//! targets are met (it is a report), non-zero when something fails; with `--quick` (what
//! scripts/test runs) also when one of its own checks (`bench: N passed, N failed`) fails.

mod baseline;
mod cluster;
mod latency;
mod plots;
mod report;
mod scale;
mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;

use cerver_bench::server::Server;

use crate::latency::Counts;
use crate::report::{Report, Series, Skipped};

/// How long a server may take to fill its pool (or settle) before the benchmark gives up.
const POOL_TIMEOUT: Duration = Duration::from_secs(120);
/// The memory levels (idle sandboxes), up to `--max-level`.
const LEVELS: [usize; 3] = [10, 100, 1000];

#[derive(Parser)]
#[command(
    name = "cerver-bench",
    version,
    about = "Benchmark a cerver binary side by side with a bare and a bubblewrapped python3 spawn"
)]
struct Args {
    /// The `cerver` binary to benchmark (build it with --release).
    #[arg(long)]
    server: PathBuf,
    /// A few-second run (what scripts/test runs): few iterations, 1 and 4 clients, 10 idle
    /// sandboxes, no containers; overrides the counts below.
    #[arg(long)]
    quick: bool,
    /// Timed iterations of the baselines, warm runs and creates.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Untimed warm-up iterations before the baselines and the run series.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Timed iterations of the slower series (10 MiB output, script, stream, files, installs).
    #[arg(long, default_value_t = 30)]
    heavy_iterations: usize,
    /// `--pool-size` of the server used for the run and warm-create figures.
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
    /// Pause between creates (outside the timed section), in ms, so the pool can refill.
    #[arg(long, default_value_t = 100)]
    create_gap_ms: u64,
    /// Timed creates on the `--pool-size 0` server (cold creates).
    #[arg(long, default_value_t = 20)]
    cold_iterations: usize,
    /// Concurrent clients of the throughput levels.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    clients: Vec<usize>,
    /// Seconds of runs at each throughput level.
    #[arg(long, default_value_t = 5.0)]
    throughput_secs: f64,
    /// Highest memory level (of 10, 100, 1000 idle sandboxes); 0 skips the memory levels.
    #[arg(long, default_value_t = 1000)]
    max_level: usize,
    /// Creates (and runs) timed at each memory level.
    #[arg(long, default_value_t = 10)]
    level_probes: usize,
    /// Workspace image size (MiB) of the memory levels' sandboxes (`--workers-workspace-mb`
    /// of their server).
    #[arg(long, default_value_t = 64)]
    levels_workspace_mb: u64,
    /// Pause before each memory snapshot, in ms.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Skip the containers figures (create, first run, cached install).
    #[arg(long)]
    no_containers: bool,
    /// Skip the cluster figures (two nodes on a throw-away Postgres: forwarding cost,
    /// database work per run and per create).
    #[arg(long)]
    no_cluster: bool,
    /// What the cached-install figure installs.
    #[arg(long, default_value = "six==1.16.0")]
    install: String,
    /// The interpreter of the baselines.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: PathBuf,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench/bench.json")]
    json: PathBuf,
    /// Where the PNG plots go.
    #[arg(long, default_value = "target/bench")]
    plots: PathBuf,
}

impl Args {
    fn apply_quick(&mut self) {
        if !self.quick {
            return;
        }
        self.iterations = 20;
        self.warmup = 2;
        self.heavy_iterations = 3;
        self.cold_iterations = 3;
        self.clients = vec![1, 4];
        self.throughput_secs = 1.0;
        self.max_level = 10;
        self.level_probes = 3;
        self.settle_ms = 200;
        self.create_gap_ms = 50;
        self.no_containers = true;
    }

    fn levels(&self) -> Vec<usize> {
        if self.max_level == 0 {
            return Vec::new();
        }
        let mut levels: Vec<usize> = LEVELS.into_iter().filter(|l| *l < self.max_level).collect();
        levels.push(self.max_level);
        levels
    }

    fn counts(&self) -> Counts {
        Counts {
            warmup: self.warmup,
            iterations: self.iterations,
            heavy: self.heavy_iterations,
            gap: Duration::from_millis(self.create_gap_ms),
        }
    }
}

fn main() {
    let mut args = Args::parse();
    args.apply_quick();
    match real_main(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("cerver-bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

pub fn progress(msg: &str) {
    eprintln!("cerver-bench: {msg}");
}

/// Returns whether the run's own checks passed (they decide the exit status with `--quick`).
fn real_main(args: &Args) -> anyhow::Result<bool> {
    if args.iterations == 0 || args.heavy_iterations == 0 || args.cold_iterations == 0 {
        bail!("--iterations, --heavy-iterations and --cold-iterations must be at least 1");
    }
    if args.clients.contains(&0) || args.clients.iter().any(|c| *c > scale::PER_USER) {
        bail!("--clients: each level must be 1..={}", scale::PER_USER);
    }
    if !args.server.is_file() {
        bail!(
            "--server {}: no such file (build it with `cargo build --release -p cerver`)",
            args.server.display()
        );
    }
    raise_open_files();
    let started = Instant::now();
    let load_start = loadavg();

    progress("baseline A: bare python3 -I -S -c 'print(1)'");
    let bare = baseline::bare(&args.python, args.warmup, args.iterations)?;
    let mut baselines = vec![Series::new(
        "bare",
        "A: bare python3 -I -S -c 'print(1)'",
        bare,
    )];
    let mut skipped = Vec::new();
    progress("baseline B: the same under bubblewrap");
    match baseline::bwrap(&args.python, args.warmup, args.iterations)? {
        Some(s) => baselines.push(Series::new("bwrap", "B: the same under bwrap", s)),
        None => skipped.push(Skipped {
            what: "baseline B".into(),
            why: format!("{} not found (Debian package bubblewrap)", baseline::BWRAP),
        }),
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = rt.block_on(bench_servers(args, baselines, skipped))?;
    report.elapsed = started.elapsed();
    report.machine = machine(&args.python, &load_start);
    report.print();
    targets::print(&report);
    Ok(checks(args, &report))
}

async fn bench_servers(
    args: &Args,
    baselines: Vec<Series>,
    skipped: Vec<Skipped>,
) -> anyhow::Result<Report> {
    let mut report = Report {
        machine: json!({}),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        baselines,
        ours: Vec::new(),
        skipped,
        first_install: None,
        throughput: Vec::new(),
        throughput_failure: None,
        memory: scale::Memory {
            levels: Vec::new(),
            failure: None,
        },
        notes: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let containers = warm_server(args, &mut report).await?;
    cold_server(args, containers, &mut report).await?;
    cluster_figures(args, &mut report).await?;
    Ok(report)
}

/// On a server with a warm pool: runs, creates, containers and throughput. Returns whether
/// the containers figures were measured.
async fn warm_server(args: &Args, report: &mut Report) -> anyhow::Result<bool> {
    let n = args.counts();
    progress(&format!(
        "starting {} --pool-size {}",
        args.server.display(),
        args.pool_size
    ));
    let warm = Server::start_with(
        &args.server,
        args.pool_size,
        "warm",
        &["--max-sandboxes", "200"],
    )?;
    let fill = warm
        .wait_for_helpers(args.pool_size, true, POOL_TIMEOUT)
        .await?;
    report.notes.push(format!(
        "the warm server (--pool-size {}, a pool per engine) was full {:.1} s after start",
        args.pool_size,
        fill.as_secs_f64()
    ));
    progress("ours: runs in one warm sandbox");
    report
        .ours
        .extend(latency::in_one_sandbox(&warm, &n).await?);
    progress("ours: creates from the warm pool");
    report
        .ours
        .extend(latency::creates(&warm, &n, "workers").await?);
    let unavailable = if args.no_containers {
        Some("--no-containers".to_string())
    } else {
        latency::containers_unavailable(&warm).await
    };
    match &unavailable {
        Some(why) => report.skipped.push(Skipped {
            what: "containers create, first run, cached install".into(),
            why: why.clone(),
        }),
        None => {
            progress("ours: containers creates and cached installs");
            report
                .ours
                .extend(latency::creates(&warm, &n, "containers").await?);
            let (first, s) = latency::cached_installs(&warm, &args.install, n.heavy).await?;
            report.first_install = Some(first);
            report.ours.push(s);
        }
    }
    for &clients in &args.clients {
        progress(&format!(
            "throughput: {clients} clients for {} s",
            args.throughput_secs
        ));
        match scale::throughput(&warm, clients, args.throughput_secs).await {
            Ok(t) => report.throughput.push(t),
            Err(e) => {
                report.throughput_failure = Some(format!("at {clients} clients: {e:#}"));
                break;
            }
        }
    }
    Ok(unavailable.is_none())
}

/// Two nodes on one throw-away Postgres: a run through the holding node and through another.
async fn cluster_figures(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let why = if args.no_cluster {
        Some("--no-cluster".to_string())
    } else if !Path::new("/usr/lib/postgresql").is_dir() {
        Some("no Postgres server binaries in /usr/lib/postgresql (scripts/setup)".to_string())
    } else {
        None
    };
    if let Some(why) = why {
        report.skipped.push(Skipped {
            what: "cluster figures".into(),
            why,
        });
        return Ok(());
    }
    progress("cluster: two nodes on a throw-away Postgres");
    let figures = cluster::measure(&args.server, args.warmup, args.iterations).await?;
    report.ours.extend(figures.series);
    report.notes.extend(figures.notes);
    Ok(())
}

/// On servers without a pool: cold creates, then the memory levels.
async fn cold_server(args: &Args, containers: bool, report: &mut Report) -> anyhow::Result<()> {
    let gap = Duration::from_millis(args.create_gap_ms);
    let levels = args.levels();
    let max = levels.last().copied().unwrap_or(0);
    // The server-wide limit is what 1,000 sandboxes test; pro users are limited to
    // PER_USER each, so the levels are spread over several, plus one that times creates.
    let max_sandboxes = (max + args.level_probes + 20).max(50).to_string();
    progress(&format!(
        "starting {} --pool-size 0 --max-sandboxes {max_sandboxes}",
        args.server.display()
    ));
    let cold = Server::start_with(
        &args.server,
        0,
        "cold",
        &["--max-sandboxes", &max_sandboxes],
    )?;
    // The same server without the template interpreter (each sandbox execs its helper and its
    // python3): its cold creates interleaved with the first's, so that load hits both alike.
    let cold_exec = Server::start_with(
        &args.server,
        0,
        "cold-exec",
        &[
            "--max-sandboxes",
            &max_sandboxes,
            "--template-interpreter",
            "false",
        ],
    )?;
    progress("ours: cold creates (with and without the template interpreter, interleaved)");
    let (with, without) =
        latency::cold_creates_interleaved(&cold, &cold_exec, args.cold_iterations, gap).await?;
    report.ours.push(with);
    report.ours.push(without);
    progress("ours: runs with and without the template interpreter (interleaved)");
    let runs = latency::template_or_exec_runs(&cold, &cold_exec, args.heavy_iterations).await?;
    report.ours.extend(runs);
    drop(cold_exec);
    if containers {
        let cold_creates = latency::cold_creates(&cold, args.cold_iterations, gap, "containers");
        report.ours.push(cold_creates.await?);
    }
    drop(cold);
    if levels.is_empty() {
        report
            .notes
            .push("memory levels skipped (--max-level 0)".into());
        return Ok(());
    }
    // A third server for the levels: its sandboxes' images are smaller than the default, since
    // the server refuses a sandbox unless 10% of its disk stays free with every image grown
    // to its full size (1,000 x 1 GiB is more than this machine's disk).
    let workspace = args.levels_workspace_mb.to_string();
    progress(&format!(
        "starting {} --pool-size 0 --max-sandboxes {max_sandboxes} --workers-workspace-mb {workspace}",
        args.server.display()
    ));
    let server = Server::start_with(
        &args.server,
        0,
        "levels",
        &[
            "--max-sandboxes",
            &max_sandboxes,
            "--workers-workspace-mb",
            &workspace,
        ],
    )?;
    report.notes.push(format!(
        "memory levels: a server with --workers-workspace-mb {workspace} (images of that size; \
         the default 1 GiB would need about {} GiB of free disk for {max} sandboxes)",
        max * 11 / 10
    ));
    let mut users = Vec::new();
    for i in 0..max.div_ceil(scale::PER_USER) + 1 {
        let key = server.mint_key(&args.server, &format!("bench{i}@example.com"))?;
        users.push(server.api_with_key(&key)?);
    }
    let settle = Duration::from_millis(args.settle_ms);
    report.memory = scale::memory(&server, &users, &levels, args.level_probes, settle).await?;
    Ok(())
}

/// Writes the JSON file and the plots, and checks what CI relies on: both were written and
/// every requested figure was measured. Prints `bench: N passed, N failed`.
fn checks(args: &Args, report: &Report) -> bool {
    let mut results: Vec<(String, bool)> = Vec::new();
    let json = write_json(&args.json, report);
    results.push((
        format!("JSON report written to {}", args.json.display()),
        json.is_ok(),
    ));
    if let Err(e) = json {
        eprintln!("cerver-bench: {e:#}");
    }
    match plots::draw(report, &args.plots) {
        Ok(files) => {
            for f in files {
                let png =
                    std::fs::read(&f).is_ok_and(|b| b.len() > 1000 && b.starts_with(b"\x89PNG"));
                results.push((format!("plot {}", f.display()), png));
            }
        }
        Err(e) => results.push((format!("plots in {}: {e:#}", args.plots.display()), false)),
    }
    let all_series = report.baselines.iter().chain(&report.ours);
    let empty: Vec<&str> = all_series
        .filter(|s| s.samples.is_empty())
        .map(|s| s.key.as_str())
        .collect();
    results.push((
        format!("every latency series has samples (empty: {empty:?})"),
        empty.is_empty(),
    ));
    let levels: Vec<usize> = report.throughput.iter().map(|t| t.clients).collect();
    results.push((
        format!(
            "throughput at {:?} clients (measured {levels:?})",
            args.clients
        ),
        levels == args.clients,
    ));
    let reached: Vec<usize> = report.memory.levels.iter().map(|l| l.sandboxes).collect();
    results.push((
        format!(
            "memory at {:?} sandboxes (reached {reached:?})",
            args.levels()
        ),
        reached == args.levels(),
    ));
    println!();
    let failed = results.iter().filter(|r| !r.1).count();
    for (what, ok) in &results {
        println!("  [{}] {what}", if *ok { "PASS" } else { "FAIL" });
    }
    println!("bench: {} passed, {failed} failed", results.len() - failed);
    failed == 0 || !args.quick
}

fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report.to_json())?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    if back["baselines"]["bare"]["p50"].as_f64().is_none() {
        bail!("{}: no baseline in what was written", path.display());
    }
    Ok(())
}

/// Lifts the soft open-files limit to the hard one: the servers inherit it, and 1,000
/// sandboxes hold several descriptors each in the server.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
}

fn machine(python: &Path, load_start: &str) -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let version = std::process::Command::new(python)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "cpu": first_line(&read("/proc/cpuinfo"), "model name").unwrap_or_else(|| "unknown".into()),
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0).to_string(),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "mem_total": first_line(&read("/proc/meminfo"), "MemTotal").unwrap_or_default(),
        "python": format!("{} ({version})", python.display()),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    })
}
