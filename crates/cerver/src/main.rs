//! The `cerver` binary: `cerver serve` runs the server; `cerver __jail` is the sandbox helper
//! the server spawns for each sandbox (it must stay single-threaded, so it runs before any
//! async runtime exists).
//!
//! # Layout
//! - `settings`: the one [`settings::Settings`] type and its layers (file < env < flags).
//! - `serve`: wiring the server together and the ordered shutdown.
//! - `http`: the HTTP server loop with its connection bounds.
//! - `cluster`: the cluster settings and the node's lease in the store.
//! - `admin`: `cerver admin …`, on the data dir's SQLite or on `--database-url`.

mod admin;
mod cluster;
mod http;
mod serve;
mod settings;
mod size;

use std::io::Read as _;
use std::path::PathBuf;

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
    Serve(Box<ServeArgs>),
    /// Manage users, keys and nodes (works while the server runs, on its data dir or on the
    /// cluster's database).
    Admin(admin::AdminArgs),
    /// Internal: build and supervise one sandbox (spawned by the server, which writes the
    /// sandbox configuration as JSON to its stdin: argv would be visible inside the sandbox).
    #[command(name = "__jail", hide = true)]
    Jail,
    /// Internal: the template interpreter that forks every sandbox's helper (spawned by the
    /// server, configuration as JSON on stdin).
    #[command(name = "__template", hide = true)]
    Template,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with any of the settings (see the README); environment and flags win over it.
    #[arg(long, env = "CERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Print the settings in effect (as TOML, secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: settings::SettingFlags,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Jail => {
            let cfg = stdin_config("jail", 1 << 20)?;
            std::process::exit(cerver_jail::helper::main(cfg));
        }
        Command::Template => {
            let cfg = stdin_config("template", 1 << 16)?;
            std::process::exit(cerver_jail::template::main(cfg));
        }
        Command::Admin(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(admin::run(args)),
        Command::Serve(args) => {
            let settings = settings::load(args.config.as_deref(), &args.settings)?;
            if args.print_config {
                print!("{}", settings::printable(&settings)?);
                return Ok(());
            }
            init_logging(settings.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve::serve(settings))
        }
    }
}

/// The JSON configuration an internal subcommand reads from its stdin (at most `limit` bytes).
fn stdin_config<T: serde::de::DeserializeOwned>(what: &str, limit: u64) -> anyhow::Result<T> {
    let mut config = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().take(limit), &mut config)
        .with_context(|| format!("read {what} configuration"))?;
    serde_json::from_str(&config).with_context(|| format!("invalid {what} configuration"))
}

fn init_logging(format: settings::LogFormat) {
    // The MCP library logs every stateless request's start and end at info.
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERVER_LOG")
        .unwrap_or_else(|_| "info,rmcp=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        settings::LogFormat::Text => builder.init(),
        settings::LogFormat::Json => builder.json().init(),
    }
}

/// Holds an exclusive lock on the data directory for the server's lifetime: two servers on one
/// data dir would reap each other's sandboxes.
pub(crate) fn lock_data_dir(
    dir: &std::path::Path,
) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create data dir {}", dir.display()))?;
    // Private to root: the store keeps each live sandbox's env values (to rebuild it after a
    // restart) and the workspace images hold tenants' files.
    // (Without root the start-up checks refuse to run anyway, and say why.)
    if nix::unistd::geteuid().is_root() {
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
        std::fs::set_permissions(dir, private)
            .with_context(|| format!("make data dir {} private", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("server.lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another cerver server is already using the data dir {}",
            dir.display()
        )
    })
}
