//! Every setting of `cerver serve`, in one serde type.
//!
//! Layers, later ones winning: the defaults below, the TOML file (`--config` /
//! `CERVER_CONFIG`), the `CERVER_*` environment variables, then the command-line flags. Each
//! setting has one dotted key (its place in the TOML file), one environment variable and one
//! flag, listed in [`KEYS`]; the layers are merged into one TOML table and deserialized once,
//! so an unknown key or a value of the wrong type is an error naming it.
//!
//! Hand-rolled rather than `figment`/`config`: a table of ~45 keys with their historical
//! environment names (`CERVER_SMTP_HOST` for `mail.host`) is as short as the adapter to a
//! layering crate would be, and keeps the flags generated from the same table.
//!
//! One file past 600 lines on purpose: the type, its defaults, the key table and the layering
//! are read together whenever a setting is added (the key table alone is ~100 lines).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches};
use serde::{Deserialize, Serialize};

const MB: u64 = 1 << 20;

/// Everything `cerver serve` can be told. Field docs are the README's table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub rootfs: PathBuf,
    /// Fork sandboxes from one warm template interpreter (when the host has libpython).
    pub template_interpreter: bool,
    pub pool_size: usize,
    pub max_sandboxes: usize,
    pub max_proxied_connections: usize,
    pub max_proxied_connections_per_sandbox: usize,
    pub max_concurrent_runs: usize,
    /// File reads, writes, listings and upgrades under way at once on the server (then 429).
    pub max_file_transfers: usize,
    /// The same, per sandbox.
    pub max_file_transfers_per_sandbox: usize,
    pub max_timeout_ms: u64,
    /// A proxied exchange is cut after this long without a byte moving.
    pub proxy_idle_timeout_secs: u64,
    /// How long packing or unpacking a workspace may take during an upgrade.
    pub upgrade_step_timeout_secs: u64,
    /// How long the host may take to fetch wheels into the shared cache for one install.
    pub wheel_fetch_timeout_secs: u64,
    /// Size of the shared wheel cache, in MiB (least recently used wheels evicted past it).
    pub wheel_cache_mb: u64,
    /// Most one host wheel fetch may download, in MiB (pip is stopped past it).
    pub wheel_fetch_mb: u64,
    /// Largest single file a host wheel fetch may download, in MiB.
    pub wheel_file_mb: u64,
    /// The package index host wheel fetches use; none: pip's default.
    pub wheel_index_url: Option<String>,
    /// Output kept per stream of a background process (its ring buffer).
    pub process_output_ring_bytes: usize,
    /// Memory of all this server's sandboxes together (the parent cgroup's cap), in MiB;
    /// none: the host's memory minus a reserve.
    pub sandboxes_memory_mb: Option<u64>,
    /// Sizes (quotas) of the sandboxes' disk images together, in MiB; with or without it, a
    /// new sandbox also needs 10% of the data dir's filesystem to stay free with every image
    /// full (else 507).
    pub max_disk_mb: Option<u64>,
    /// The same cap as a size (`20G`, `512M`, bytes): the documented name; `max_disk_mb` is
    /// its older alias (setting both is an error).
    pub max_disk: Option<String>,
    /// How long a paused sandbox is kept (then deleted), in seconds; default 7 days.
    pub paused_retention_secs: u64,
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    /// On SIGTERM: how long in-flight requests, runs and streams may take to finish.
    pub shutdown_grace_secs: u64,
    /// Token a non-loopback peer sends (`Authorization: Bearer`) to read `GET /metrics`;
    /// without one, only loopback peers can (printed only as redacted).
    pub metrics_token: Option<String>,
    /// File replacing the built-in list of destinations containers sandboxes never reach.
    pub egress_blocklist: Option<PathBuf>,
    /// Allow-list mode: the only destinations containers sandboxes reach (besides resolvers).
    pub egress_allowlist: Option<PathBuf>,
    /// Bandwidth a containers sandbox may send, in Mbit/s (0: unbounded).
    pub egress_mbit: u64,
    /// New connections per second a containers sandbox may open (burst twice as many; 0:
    /// unbounded).
    pub egress_connections_per_second: u32,
    /// The same two bounds for the trial plan.
    pub trial_egress_mbit: u64,
    pub trial_egress_connections_per_second: u32,
    pub auth: AuthSettings,
    pub http: HttpSettings,
    pub processes: ProcessSettings,
    pub ports: PortSettings,
    pub mail: MailSettings,
    pub workers: LimitOverrides,
    pub containers: LimitOverrides,
    pub cluster: crate::cluster::ClusterSettings,
}

impl Settings {
    /// The server-wide disk cap in bytes (`max_disk`, or its alias `max_disk_mb`), if set.
    pub fn disk_cap_bytes(&self) -> anyhow::Result<Option<u64>> {
        match (&self.max_disk, self.max_disk_mb) {
            (Some(_), Some(_)) => anyhow::bail!("set max_disk or max_disk_mb, not both"),
            (Some(size), None) => crate::size::parse_size(size)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("max_disk: {e}")),
            (None, mb) => Ok(mb.map(|mb| mb.saturating_mul(MB))),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let control = cerver_control::ControlConfig::default();
        let runtime = cerver_runtime::RuntimeConfig::new(PathBuf::new(), PathBuf::new());
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            rootfs: PathBuf::from("/"),
            template_interpreter: runtime.template_interpreter,
            pool_size: 2,
            max_sandboxes: control.max_sandboxes,
            max_proxied_connections: control.max_proxy_connections_total,
            max_proxied_connections_per_sandbox: control.max_proxy_connections,
            max_concurrent_runs: control.max_concurrent_runs,
            max_file_transfers: control.max_transfers,
            max_file_transfers_per_sandbox: control.max_transfers_per_sandbox,
            max_timeout_ms: control.max_timeout_ms,
            proxy_idle_timeout_secs: control.proxy_idle_timeout.as_secs(),
            upgrade_step_timeout_secs: control.upgrade_step_timeout.as_secs(),
            wheel_fetch_timeout_secs: runtime.wheel_fetch_timeout.as_secs(),
            wheel_cache_mb: runtime.max_wheelhouse_bytes / MB,
            wheel_fetch_mb: runtime.max_wheel_fetch_bytes / MB,
            wheel_file_mb: runtime.max_wheel_bytes / MB,
            wheel_index_url: None,
            process_output_ring_bytes: runtime.output_ring_bytes,
            sandboxes_memory_mb: None,
            max_disk_mb: None,
            max_disk: None,
            paused_retention_secs: control.paused_retention.as_secs(),
            public_url: None,
            log_format: LogFormat::Text,
            shutdown_grace_secs: 30,
            metrics_token: None,
            egress_blocklist: None,
            egress_allowlist: None,
            egress_mbit: control.egress_rates.bytes_per_second / 125_000,
            egress_connections_per_second: control.egress_rates.connections_per_second,
            trial_egress_mbit: control.trial_egress_rates.bytes_per_second / 125_000,
            trial_egress_connections_per_second: control.trial_egress_rates.connections_per_second,
            auth: AuthSettings::default(),
            http: HttpSettings::default(),
            processes: ProcessSettings::default(),
            ports: PortSettings::default(),
            mail: MailSettings::default(),
            workers: LimitOverrides::default(),
            containers: LimitOverrides::default(),
            cluster: crate::cluster::ClusterSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[auth]`: per-client-address limits on the routes that need no key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Sign-up and login requests per client address per hour (also the burst; then 429).
    pub mails_per_hour: u32,
    /// Verification-link and session requests per client address per minute (then 429).
    pub lookups_per_minute: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        let d = cerver_control::client_limits::ClientLimitConfig::default();
        AuthSettings {
            mails_per_hour: d.mails_per_hour,
            lookups_per_minute: d.lookups_per_minute,
        }
    }
}

/// Bounds of the HTTP server itself (issue 16: idle or slow clients must not starve others).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// How long a client may take to send a request's head (also the wait for the first one).
    pub header_read_timeout_secs: u64,
    /// How long a keep-alive connection may sit with no byte moving before it is closed.
    pub idle_timeout_secs: u64,
    /// Most client connections open at once; further ones are closed at accept.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 10_000,
        }
    }
}

/// `[processes]`: bounds on one sandbox's background processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSettings {
    pub max_running: usize,
    pub max_ended: usize,
    pub max_ended_output_bytes: usize,
    pub max_followers: usize,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        let p = cerver_control::ProcessLimits::default();
        ProcessSettings {
            max_running: p.max_running,
            max_ended: p.max_ended,
            max_ended_output_bytes: p.max_ended_output_bytes,
            max_followers: p.max_followers,
        }
    }
}

impl ProcessSettings {
    pub fn limits(&self) -> cerver_control::ProcessLimits {
        cerver_control::ProcessLimits {
            max_running: self.max_running,
            max_ended: self.max_ended,
            max_ended_output_bytes: self.max_ended_output_bytes,
            max_followers: self.max_followers,
        }
    }
}

/// `[ports]`: how exposed ports are named and reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortSettings {
    pub domain: String,
    pub scheme: String,
    pub public_port: Option<u16>,
    pub tokens: bool,
}

impl Default for PortSettings {
    fn default() -> Self {
        PortSettings {
            domain: "sandbox.localhost".into(),
            scheme: "http".into(),
            public_port: None,
            tokens: false,
        }
    }
}

/// `[mail]`, as `cerver_mail::MailConfig` reads it (the password printed only as redacted).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<String>,
    pub from: Option<String>,
    pub timeout_secs: Option<u64>,
}

impl MailSettings {
    pub fn to_config(&self) -> anyhow::Result<cerver_mail::MailConfig> {
        let tls = match &self.tls {
            Some(t) => t.parse().map_err(|e| anyhow::anyhow!("mail.tls: {e}"))?,
            None => cerver_mail::TlsMode::default(),
        };
        Ok(cerver_mail::MailConfig {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
            password: self.password.clone().map(cerver_mail::Secret::new),
            tls,
            from: self.from.clone(),
            timeout_secs: self.timeout_secs,
        })
    }
}

/// `[workers]` / `[containers]`: per-engine overrides of the sandbox limits; fields left out
/// keep the engine's defaults (see `cerver_runtime::config`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpu_cores: Option<f64>,
    pub open_files: Option<u64>,
    pub workspace_mb: Option<u64>,
    pub tmp_mb: Option<u64>,
    pub shm_mb: Option<u64>,
    pub file_mb: Option<u64>,
}

impl LimitOverrides {
    pub fn apply(&self, l: &mut cerver_jail::protocol::Limits) {
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

/// The TOML type a raw environment or flag value becomes.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

/// One setting: its dotted key in the file, its variable and its flag.
pub struct Key {
    pub path: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
    kind: Kind,
}

pub(crate) const fn key(
    path: &'static str,
    env: &'static str,
    flag: &'static str,
    kind: Kind,
) -> Key {
    Key {
        path,
        env,
        flag,
        kind,
    }
}

macro_rules! limit_keys {
    ($engine:literal, $env:literal) => {
        [
            key(
                concat!($engine, ".memory_mb"),
                concat!("CERVER_", $env, "_MEMORY_MB"),
                concat!($engine, "-memory-mb"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".pids"),
                concat!("CERVER_", $env, "_PIDS"),
                concat!($engine, "-pids"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".cpu_shares"),
                concat!("CERVER_", $env, "_CPU_SHARES"),
                concat!($engine, "-cpu-shares"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".cpu_cores"),
                concat!("CERVER_", $env, "_CPU_CORES"),
                concat!($engine, "-cpu-cores"),
                Kind::Float,
            ),
            key(
                concat!($engine, ".open_files"),
                concat!("CERVER_", $env, "_OPEN_FILES"),
                concat!($engine, "-open-files"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".workspace_mb"),
                concat!("CERVER_", $env, "_WORKSPACE_MB"),
                concat!($engine, "-workspace-mb"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".tmp_mb"),
                concat!("CERVER_", $env, "_TMP_MB"),
                concat!($engine, "-tmp-mb"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".shm_mb"),
                concat!("CERVER_", $env, "_SHM_MB"),
                concat!($engine, "-shm-mb"),
                Kind::Int,
            ),
            key(
                concat!($engine, ".file_mb"),
                concat!("CERVER_", $env, "_FILE_MB"),
                concat!($engine, "-file-mb"),
                Kind::Int,
            ),
        ]
    };
}

const WORKER_KEYS: [Key; 9] = limit_keys!("workers", "WORKERS");
const CONTAINER_KEYS: [Key; 9] = limit_keys!("containers", "CONTAINERS");

#[rustfmt::skip]
const GENERAL_KEYS: [Key; 53] = [
    key("listen", "CERVER_LISTEN", "listen", Kind::Str),
    key("data_dir", "CERVER_DATA_DIR", "data-dir", Kind::Str),
    key("rootfs", "CERVER_ROOTFS", "rootfs", Kind::Str),
    key("template_interpreter", "CERVER_TEMPLATE_INTERPRETER", "template-interpreter", Kind::Bool),
    key("pool_size", "CERVER_POOL_SIZE", "pool-size", Kind::Int),
    key("max_sandboxes", "CERVER_MAX_SANDBOXES", "max-sandboxes", Kind::Int),
    key("max_proxied_connections", "CERVER_MAX_PROXIED_CONNECTIONS", "max-proxied-connections", Kind::Int),
    key("max_proxied_connections_per_sandbox", "CERVER_MAX_PROXIED_CONNECTIONS_PER_SANDBOX", "max-proxied-connections-per-sandbox", Kind::Int),
    key("max_concurrent_runs", "CERVER_MAX_CONCURRENT_RUNS", "max-concurrent-runs", Kind::Int),
    key("max_timeout_ms", "CERVER_MAX_TIMEOUT_MS", "max-timeout-ms", Kind::Int),
    key("max_file_transfers", "CERVER_MAX_FILE_TRANSFERS", "max-file-transfers", Kind::Int),
    key("max_file_transfers_per_sandbox", "CERVER_MAX_FILE_TRANSFERS_PER_SANDBOX", "max-file-transfers-per-sandbox", Kind::Int),
    key("proxy_idle_timeout_secs", "CERVER_PROXY_IDLE_TIMEOUT_SECS", "proxy-idle-timeout-secs", Kind::Int),
    key("upgrade_step_timeout_secs", "CERVER_UPGRADE_STEP_TIMEOUT_SECS", "upgrade-step-timeout-secs", Kind::Int),
    key("wheel_fetch_timeout_secs", "CERVER_WHEEL_FETCH_TIMEOUT_SECS", "wheel-fetch-timeout-secs", Kind::Int),
    key("wheel_cache_mb", "CERVER_WHEEL_CACHE_MB", "wheel-cache-mb", Kind::Int),
    key("wheel_fetch_mb", "CERVER_WHEEL_FETCH_MB", "wheel-fetch-mb", Kind::Int),
    key("wheel_file_mb", "CERVER_WHEEL_FILE_MB", "wheel-file-mb", Kind::Int),
    key("wheel_index_url", "CERVER_WHEEL_INDEX_URL", "wheel-index-url", Kind::Str),
    key("process_output_ring_bytes", "CERVER_PROCESS_OUTPUT_RING_BYTES", "process-output-ring-bytes", Kind::Int),
    key("sandboxes_memory_mb", "CERVER_SANDBOXES_MEMORY_MB", "sandboxes-memory-mb", Kind::Int),
    key("max_disk_mb", "CERVER_MAX_DISK_MB", "max-disk-mb", Kind::Int),
    key("max_disk", "CERVER_MAX_DISK", "max-disk", Kind::Str),
    key("paused_retention_secs", "CERVER_PAUSED_RETENTION_SECS", "paused-retention-secs", Kind::Int),
    key("processes.max_running", "CERVER_PROCESSES_MAX_RUNNING", "processes-max-running", Kind::Int),
    key("processes.max_ended", "CERVER_PROCESSES_MAX_ENDED", "processes-max-ended", Kind::Int),
    key("processes.max_ended_output_bytes", "CERVER_PROCESSES_MAX_ENDED_OUTPUT_BYTES", "processes-max-ended-output-bytes", Kind::Int),
    key("processes.max_followers", "CERVER_PROCESSES_MAX_FOLLOWERS", "processes-max-followers", Kind::Int),
    key("public_url", "CERVER_PUBLIC_URL", "public-url", Kind::Str),
    key("log_format", "CERVER_LOG_FORMAT", "log-format", Kind::Str),
    key("shutdown_grace_secs", "CERVER_SHUTDOWN_GRACE_SECS", "shutdown-grace-secs", Kind::Int),
    key("metrics_token", "CERVER_METRICS_TOKEN", "metrics-token", Kind::Str),
    key("egress_blocklist", "CERVER_EGRESS_BLOCKLIST", "egress-blocklist", Kind::Str),
    key("egress_allowlist", "CERVER_EGRESS_ALLOWLIST", "egress-allowlist", Kind::Str),
    key("egress_mbit", "CERVER_EGRESS_MBIT", "egress-mbit", Kind::Int),
    key("egress_connections_per_second", "CERVER_EGRESS_CONNECTIONS_PER_SECOND", "egress-connections-per-second", Kind::Int),
    key("trial_egress_mbit", "CERVER_TRIAL_EGRESS_MBIT", "trial-egress-mbit", Kind::Int),
    key("trial_egress_connections_per_second", "CERVER_TRIAL_EGRESS_CONNECTIONS_PER_SECOND", "trial-egress-connections-per-second", Kind::Int),
    key("auth.mails_per_hour", "CERVER_AUTH_MAILS_PER_HOUR", "auth-mails-per-hour", Kind::Int),
    key("auth.lookups_per_minute", "CERVER_AUTH_LOOKUPS_PER_MINUTE", "auth-lookups-per-minute", Kind::Int),
    key("http.header_read_timeout_secs", "CERVER_HEADER_READ_TIMEOUT_SECS", "header-read-timeout-secs", Kind::Int),
    key("http.idle_timeout_secs", "CERVER_IDLE_TIMEOUT_SECS", "idle-timeout-secs", Kind::Int),
    key("http.max_connections", "CERVER_MAX_CONNECTIONS", "max-connections", Kind::Int),
    key("ports.domain", "CERVER_SANDBOX_DOMAIN", "sandbox-domain", Kind::Str),
    key("ports.scheme", "CERVER_SANDBOX_SCHEME", "sandbox-scheme", Kind::Str),
    key("ports.public_port", "CERVER_SANDBOX_PUBLIC_PORT", "sandbox-public-port", Kind::Int),
    key("ports.tokens", "CERVER_PORT_TOKENS", "port-tokens", Kind::Bool),
    key("mail.host", "CERVER_SMTP_HOST", "smtp-host", Kind::Str),
    key("mail.port", "CERVER_SMTP_PORT", "smtp-port", Kind::Int),
    key("mail.username", "CERVER_SMTP_USERNAME", "smtp-username", Kind::Str),
    key("mail.password", "CERVER_SMTP_PASSWORD", "smtp-password", Kind::Str),
    key("mail.tls", "CERVER_SMTP_TLS", "smtp-tls", Kind::Str),
    key("mail.from", "CERVER_MAIL_FROM", "mail-from", Kind::Str),
];

const TIMEOUT_KEY: Key = key(
    "mail.timeout_secs",
    "CERVER_SMTP_TIMEOUT_SECS",
    "smtp-timeout-secs",
    Kind::Int,
);

/// Every setting's key, variable and flag.
pub fn keys() -> impl Iterator<Item = &'static Key> {
    GENERAL_KEYS
        .iter()
        .chain(std::iter::once(&TIMEOUT_KEY))
        .chain(WORKER_KEYS.iter())
        .chain(CONTAINER_KEYS.iter())
        .chain(crate::cluster::KEYS.iter())
}

/// The flags of every setting, as given on the command line (path, raw value).
#[derive(Debug, Default)]
pub struct SettingFlags(Vec<(&'static str, String)>);

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let given = keys()
            .filter(|k| m.value_source(k.flag) == Some(ValueSource::CommandLine))
            .filter_map(|k| Some((k.path, m.get_one::<String>(k.flag)?.clone())))
            .collect();
        Ok(SettingFlags(given))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        keys().fold(cmd, |cmd, k| {
            let arg = Arg::new(k.flag)
                .long(k.flag)
                .value_name("VALUE")
                .help(format!("`{}` in the file; env {}", k.path, k.env));
            let arg = match k.kind {
                Kind::Bool => arg.num_args(0..=1).default_missing_value("true"),
                _ => arg,
            };
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Loads the settings: defaults < file < `CERVER_*` environment < flags.
pub fn load(file: Option<&Path>, flags: &SettingFlags) -> anyhow::Result<Settings> {
    let mut table = match file {
        None => toml::Table::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            // Parsed alone first, so that a mistake in the file is reported with its line.
            toml::from_str::<Settings>(&text)
                .with_context(|| format!("invalid configuration file {}", path.display()))?;
            toml::from_str::<toml::Table>(&text)?
        }
    };
    for k in keys() {
        let Ok(raw) = std::env::var(k.env) else {
            continue;
        };
        if raw.is_empty() && !matches!(k.kind, Kind::Str) {
            continue;
        }
        let value = typed(k, &raw).with_context(|| format!("environment variable {}", k.env))?;
        set_path(&mut table, k.path, value);
    }
    for (path, raw) in &flags.0 {
        let k = keys().find(|k| k.path == *path).context("unknown flag")?;
        let value = typed(k, raw).with_context(|| format!("--{}", k.flag))?;
        set_path(&mut table, k.path, value);
    }
    let settings = Settings::deserialize(toml::Value::Table(table)).context("invalid settings")?;
    settings.disk_cap_bytes()?;
    settings.cluster.validate()?;
    Ok(settings)
}

fn typed(k: &Key, raw: &str) -> anyhow::Result<toml::Value> {
    let raw = raw.trim();
    Ok(match k.kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => toml::Value::Integer(raw.parse().context("not a whole number")?),
        Kind::Float => toml::Value::Float(raw.parse().context("not a number")?),
        Kind::Bool => toml::Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => anyhow::bail!("not true or false"),
        }),
    })
}

/// Sets `a.b` in `table`, making the section if needed (a non-table in the way is replaced:
/// deserializing would reject it anyway).
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    match path.split_once('.') {
        None => {
            table.insert(path.to_string(), value);
        }
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

/// The settings as TOML, secrets (the SMTP password, the metrics token, the cluster secret,
/// the database password) redacted.
pub fn printable(settings: &Settings) -> anyhow::Result<String> {
    let mut shown = settings.clone();
    if shown.mail.password.is_some() {
        shown.mail.password = Some("[redacted]".into());
    }
    shown.cluster.redacted();
    if shown.metrics_token.is_some() {
        shown.metrics_token = Some("[redacted]".into());
    }
    Ok(toml::to_string(&shown)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_all_deserialize() {
        // Each column is unique on its own (a path and a flag may be the same word: `listen`).
        let (mut paths, mut envs, mut flags) = Default::default();
        let seen = |set: &mut std::collections::HashSet<&str>, v| assert!(set.insert(v), "{v}");
        for k in keys() {
            seen(&mut paths, k.path);
            seen(&mut envs, k.env);
            seen(&mut flags, k.flag);
            let raw = match k.kind {
                Kind::Str if k.path == "listen" => "127.0.0.1:1",
                Kind::Str if k.path == "log_format" => "json",
                Kind::Str => "x",
                Kind::Int => "7",
                Kind::Float => "1.5",
                Kind::Bool => "true",
            };
            let mut table = toml::Table::new();
            set_path(&mut table, k.path, typed(k, raw).unwrap());
            Settings::deserialize(toml::Value::Table(table))
                .unwrap_or_else(|e| panic!("{}: {e}", k.path));
        }
    }

    #[test]
    fn the_defaults_print_and_read_back() {
        let text = printable(&Settings::default()).unwrap();
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.listen, Settings::default().listen);
    }
}
