//! The `cerver` binary: `cerver serve` runs the server; `cerver __jail` is the sandbox helper
//! the server spawns for each sandbox (it must stay single-threaded, so it runs before any
//! async runtime exists).
//!
//! # Layout
//! - `settings`: the one [`settings::Settings`] type and its layers (file < env < flags).
//! - `serve`: wiring the server together and the ordered shutdown.
//! - `http`: the HTTP server loop with its connection bounds.

mod http;
mod serve;
mod settings;

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
    /// Manage users and keys (works while the server runs on the same data dir).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        /// The server's data directory.
        #[arg(long, env = "CERVER_DATA_DIR", default_value = "./data", global = true)]
        data_dir: PathBuf,
    },
    /// Internal: build and supervise one sandbox (spawned by the server, which writes the
    /// sandbox configuration as JSON to its stdin: argv would be visible inside the sandbox).
    #[command(name = "__jail", hide = true)]
    Jail,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the user if needed and a new API key; prints the key alone on the last line.
    CreateKey {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "trial")]
        plan: String,
    },
    /// Move a user to another plan (trial, free, pro); takes effect at once.
    SetPlan {
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: String,
    },
    /// Revoke a key, given whole (`--key`) or by its displayed prefix (`--prefix`).
    RevokeKey {
        #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
        key: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// List users with their plans and key counts.
    ListUsers,
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
            let mut config = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().take(1 << 20), &mut config)
                .context("read jail configuration")?;
            let cfg = serde_json::from_str(&config).context("invalid jail configuration")?;
            std::process::exit(cerver_jail::helper::main(cfg));
        }
        Command::Admin { command, data_dir } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(admin(command, data_dir)),
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

async fn admin(command: AdminCommand, data_dir: PathBuf) -> anyhow::Result<()> {
    use cerver_store::{KeyRef, Plan, SqliteStore, Store};
    let store = SqliteStore::open(&data_dir)
        .await
        .context("open the database")?;
    let plan_of = |p: &str| -> anyhow::Result<Plan> {
        p.parse()
            .map_err(|_| anyhow::anyhow!("unknown plan {p:?}: use trial, free or pro"))
    };
    match command {
        AdminCommand::CreateKey { email, plan } => {
            let (key, user) = cerver_control::accounts::create_key(&store, &email, plan_of(&plan)?)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("user {} ({}), plan {}", user.email, user.id, user.plan);
            println!("{key}");
        }
        AdminCommand::SetPlan { email, plan } => {
            let user = store
                .set_plan(&email.to_lowercase(), plan_of(&plan)?)
                .await?;
            println!("{} is now on the {} plan", user.email, user.plan);
        }
        AdminCommand::RevokeKey { key, prefix } => {
            let hash;
            let which = match (&key, &prefix) {
                (Some(k), _) => {
                    hash = cerver_store::keys::hash_key(k);
                    KeyRef::Hash(&hash)
                }
                (None, Some(p)) => KeyRef::Prefix(p),
                (None, None) => anyhow::bail!("give --key or --prefix"),
            };
            let revoked = store.revoke_key(which).await?;
            println!("revoked {}", revoked.prefix);
        }
        AdminCommand::ListUsers => {
            for u in store.list_users().await? {
                println!(
                    "{}\t{}\t{}\tkeys: {} active / {} total",
                    u.user.email, u.user.plan, u.user.id, u.active_keys, u.total_keys
                );
            }
        }
    }
    store.close().await;
    // Tell a running server that accounts changed (it drops its cached keys at once).
    cerver_control::accounts::bump_generation(&data_dir).context("mark accounts as changed")?;
    Ok(())
}
