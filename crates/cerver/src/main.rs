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
    /// Most connections the port proxy holds open at once, all sandboxes together (then 503).
    #[arg(long, env = "CERVER_MAX_PROXIED_CONNECTIONS", default_value_t = 1024)]
    max_proxied_connections: usize,
    /// File replacing the built-in list of destinations containers sandboxes never reach
    /// (`crates/cerver-runtime/policy/blocked4.txt` documents the format). Host-wide: give
    /// every server on the host the same file.
    #[arg(long, env = "CERVER_EGRESS_BLOCKLIST")]
    egress_blocklist: Option<PathBuf>,
    /// Allow-list mode: a file (same format) of the only destinations containers sandboxes
    /// reach besides the host's resolvers; the blocked list still wins. Host-wide.
    #[arg(long, env = "CERVER_EGRESS_ALLOWLIST")]
    egress_allowlist: Option<PathBuf>,
    /// Sign-up and login requests per client address per hour (also the burst; then 429).
    #[arg(long, env = "CERVER_AUTH_MAILS_PER_HOUR", default_value_t = 30)]
    auth_mails_per_hour: u32,
    /// Verification-link and session requests per client address per minute (then 429).
    #[arg(long, env = "CERVER_AUTH_LOOKUPS_PER_MINUTE", default_value_t = 60)]
    auth_lookups_per_minute: u32,
    /// TOML file with per-engine sandbox limits (`[workers]`, `[containers]`) and `[mail]`.
    #[arg(long, env = "CERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL of this server in links sent by email (default: the listen address).
    #[arg(long, env = "CERVER_PUBLIC_URL")]
    public_url: Option<String>,
    /// SMTP relay for sign-up and login mails; without one, mails are written to
    /// `<data-dir>/mail/` and their links logged.
    #[arg(long, env = "CERVER_SMTP_HOST")]
    smtp_host: Option<String>,
    #[arg(long, env = "CERVER_SMTP_PORT")]
    smtp_port: Option<u16>,
    #[arg(long, env = "CERVER_SMTP_USERNAME")]
    smtp_username: Option<String>,
    #[arg(long, env = "CERVER_SMTP_PASSWORD", hide_env_values = true)]
    smtp_password: Option<String>,
    /// none | starttls | tls
    #[arg(long, env = "CERVER_SMTP_TLS")]
    smtp_tls: Option<cerver_mail::TlsMode>,
    /// `From` of the mails, e.g. `Cerver <noreply@example.com>`.
    #[arg(long, env = "CERVER_MAIL_FROM")]
    mail_from: Option<String>,
    /// Domain of exposed ports' host names, `<label>-<port>.<domain>` (default
    /// `sandbox.localhost`, which resolves to loopback).
    #[arg(long, env = "CERVER_SANDBOX_DOMAIN")]
    sandbox_domain: Option<String>,
    /// Scheme of exposed ports' URLs: http (default) or https (behind a TLS-terminating proxy).
    #[arg(long, env = "CERVER_SANDBOX_SCHEME")]
    sandbox_scheme: Option<String>,
    /// Port of exposed ports' URLs (default: the listen port; left out when the scheme's default).
    #[arg(long, env = "CERVER_SANDBOX_PUBLIC_PORT")]
    sandbox_public_port: Option<u16>,
    /// Require a per-port access token (in the URL `/host` gives) on every exposed port.
    #[arg(long, env = "CERVER_PORT_TOKENS", num_args = 0..=1, default_missing_value = "true")]
    port_tokens: Option<bool>,
    /// Token a non-loopback peer sends (`Authorization: Bearer`) to read `GET /metrics`;
    /// without one, only loopback peers can.
    #[arg(long, env = "CERVER_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

/// The optional configuration file: per-engine overrides of the sandbox limits. Fields left out
/// keep their defaults (see `cerver_runtime::config`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    mail: cerver_mail::MailConfig,
    #[serde(default)]
    workers: LimitOverrides,
    #[serde(default)]
    containers: LimitOverrides,
    #[serde(default)]
    ports: PortsFile,
}

/// `[ports]` of the configuration file; flags and `CERVER_*` variables win over it.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PortsFile {
    domain: Option<String>,
    scheme: Option<String>,
    public_port: Option<u16>,
    tokens: Option<bool>,
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
        Command::Admin { command, data_dir } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(admin(command, data_dir)),
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    // The MCP library logs every stateless request's start and end at info.
                    tracing_subscriber::EnvFilter::try_from_env("CERVER_LOG")
                        .unwrap_or_else(|_| "info,rmcp=warn".into()),
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(*args))
        }
    }
}

/// Holds an exclusive lock on the data directory for the server's lifetime: two servers on one
/// data dir would reap each other's sandboxes.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create data dir {}", dir.display()))?;
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let helper = std::env::current_exe().context("locate the cerver binary")?;
    let file = load_config(args.config.as_deref())?;
    let mut ports = cerver_control::ports::PortConfig {
        domain: args
            .sandbox_domain
            .or(file.ports.domain)
            .unwrap_or_else(|| "sandbox.localhost".into()),
        scheme: args
            .sandbox_scheme
            .or(file.ports.scheme)
            .unwrap_or_else(|| "http".into()),
        public_port: args.sandbox_public_port.or(file.ports.public_port),
        tokens: if args.port_tokens.or(file.ports.tokens).unwrap_or(false) {
            Some(
                cerver_control::ports::PortTokens::load_or_create(&data_dir)
                    .context("port token secret")?,
            )
        } else {
            None
        },
    }
    .validated()
    .map_err(|e| anyhow::anyhow!("port exposure configuration: {e}"))?;
    let mut rt_cfg = cerver_runtime::RuntimeConfig::new(data_dir.clone(), helper);
    rt_cfg.rootfs = args.rootfs;
    rt_cfg.pool_size = args.pool_size;
    rt_cfg.egress.blocklist = args.egress_blocklist;
    rt_cfg.egress.allowlist = args.egress_allowlist;
    file.workers.apply(&mut rt_cfg.workers);
    file.containers.apply(&mut rt_cfg.containers);
    let runtime = match cerver_runtime::Runtime::start(rt_cfg).await {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cerver: refusing to start: {e}");
            std::process::exit(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The public port defaults to the listen port, known once bound.
    ports.public_port.get_or_insert(addr.port());
    let store: Arc<dyn cerver_store::Store> = Arc::new(
        cerver_store::SqliteStore::open(&data_dir)
            .await
            .context("open the database")?,
    );
    let mut mail = file.mail;
    mail.host = args.smtp_host.or(mail.host);
    mail.port = args.smtp_port.or(mail.port);
    mail.username = args.smtp_username.or(mail.username);
    mail.password = args
        .smtp_password
        .map(cerver_mail::Secret::new)
        .or(mail.password);
    mail.tls = args.smtp_tls.unwrap_or(mail.tls);
    mail.from = args.mail_from.or(mail.from);
    let mailer = cerver_mail::Mailer::new(&mail, &data_dir).context("mail configuration")?;
    let public_url = args.public_url.unwrap_or_else(|| format!("http://{addr}"));
    let accounts = Arc::new(
        cerver_control::Accounts::new(store.clone(), mailer, public_url, &data_dir)
            .with_client_limits(cerver_control::client_limits::ClientLimitConfig {
                mails_per_hour: args.auth_mails_per_hour,
                lookups_per_minute: args.auth_lookups_per_minute,
            }),
    );
    accounts.start_usage_flusher();
    let control_cfg = cerver_control::ControlConfig {
        max_sandboxes: args.max_sandboxes,
        max_proxy_connections_total: args.max_proxied_connections,
        ports,
        ..Default::default()
    };
    let control = cerver_control::Control::new(runtime, store, control_cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = cerver_api::router(cerver_api::AppState {
        control: control.clone(),
        accounts: accounts.clone(),
        metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
    });
    tracing::info!(%addr, "cerver listening");
    // Tests and scripts read the bound address (useful with port 0) from this line.
    println!("listening on http://{addr}");
    let closing = control.clone();
    // The peer address feeds the port proxy's `X-Forwarded-For`.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Followers of background processes and proxied streams or WebSockets (which end
        // only with their sandbox, destroyed after `serve` returns) would otherwise keep the
        // server up forever.
        closing.begin_shutdown();
    })
    .await?;
    tracing::info!("shutting down: destroying sandboxes");
    shutdown(control).await;
    accounts.flush_usage().await;
    Ok(())
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
