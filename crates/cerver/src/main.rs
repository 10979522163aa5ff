//! The `cerver` binary: `cerver serve` runs the server; `cerver __jail` is the sandbox helper
//! the server spawns for each sandbox (it must stay single-threaded, so it runs before any
//! async runtime exists).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::io::Read as _;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cerver",
    version,
    about = "Run untrusted Python in secure sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API server.
    Serve(ServeArgs),
    /// Internal: build and supervise one sandbox (spawned by the server, which writes the
    /// sandbox configuration as JSON to its stdin: argv would be visible inside the sandbox).
    #[command(name = "__jail", hide = true)]
    Jail,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CERVER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the server's state.
    #[arg(long, env = "CERVER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Root filesystem whose /usr sandboxes use (e.g. one built with mmdebstrap).
    #[arg(long, env = "CERVER_ROOTFS", default_value = "/")]
    rootfs: PathBuf,
    /// Warm sandboxes kept ready per engine.
    #[arg(long, env = "CERVER_POOL_SIZE", default_value_t = 2)]
    pool_size: usize,
    /// Most sandboxes alive at once.
    #[arg(long, env = "CERVER_MAX_SANDBOXES", default_value_t = 200)]
    max_sandboxes: usize,
    /// TOML file with per-engine sandbox limits (`[workers]`, `[containers]`).
    #[arg(long, env = "CERVER_CONFIG")]
    config: Option<PathBuf>,
}

/// The optional configuration file: per-engine overrides of the sandbox limits. Fields left out
/// keep their defaults (see `cerver_runtime::config`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    workers: LimitOverrides,
    #[serde(default)]
    containers: LimitOverrides,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitOverrides {
    memory_mb: Option<u64>,
    pids: Option<u64>,
    cpu_shares: Option<u64>,
    cpu_cores: Option<f64>,
    open_files: Option<u64>,
    workspace_mb: Option<u64>,
    tmp_mb: Option<u64>,
    shm_mb: Option<u64>,
    file_mb: Option<u64>,
}

impl LimitOverrides {
    fn apply(&self, l: &mut cerver_jail::protocol::Limits) {
        const MB: u64 = 1 << 20;
        let set = |dst: &mut u64, v: Option<u64>, scale: u64| {
            if let Some(v) = v {
                *dst = v.saturating_mul(scale);
            }
        };
        set(&mut l.memory_bytes, self.memory_mb, MB);
        set(&mut l.pids, self.pids, 1);
        set(&mut l.cpu_shares, self.cpu_shares, 1);
        set(&mut l.open_files, self.open_files, 1);
        set(&mut l.workspace_bytes, self.workspace_mb, MB);
        set(&mut l.tmp_bytes, self.tmp_mb, MB);
        set(&mut l.shm_bytes, self.shm_mb, MB);
        set(&mut l.file_bytes, self.file_mb, MB);
        if let Some(c) = self.cpu_cores {
            l.cpu_cores = c;
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<ConfigFile> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Jail => {
            let mut config = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().take(1 << 20), &mut config)
                .context("read jail configuration")?;
            let cfg = serde_json::from_str(&config).context("invalid jail configuration")?;
            std::process::exit(cerver_jail::helper::main(cfg));
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("CERVER_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(args))
        }
    }
}

/// Holds an exclusive lock on the data directory for the server's lifetime: two servers on one
/// data dir would reap each other's sandboxes.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("create data dir {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("server.lock"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            anyhow::anyhow!(
                "another cerver server is already using the data dir {}",
                dir.display()
            )
        },
    )?;
    Ok(file)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let helper = std::env::current_exe().context("locate the cerver binary")?;
    let file = load_config(args.config.as_deref())?;
    let mut rt_cfg = cerver_runtime::RuntimeConfig::new(data_dir, helper);
    rt_cfg.rootfs = args.rootfs;
    rt_cfg.pool_size = args.pool_size;
    file.workers.apply(&mut rt_cfg.workers);
    file.containers.apply(&mut rt_cfg.containers);
    let runtime = match cerver_runtime::Runtime::start(rt_cfg).await {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cerver: refusing to start: {e}");
            std::process::exit(2);
        }
    };
    let control_cfg = cerver_control::ControlConfig {
        max_sandboxes: args.max_sandboxes,
        ..Default::default()
    };
    let control = cerver_control::Control::new(runtime, control_cfg);
    let app = cerver_api::router(cerver_api::AppState {
        control: control.clone(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "cerver listening");
    // Tests and scripts read the bound address (useful with port 0) from this line.
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: destroying sandboxes");
    shutdown(control).await;
    Ok(())
}

async fn shutdown(control: Arc<cerver_control::Control>) {
    control.shutdown().await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
