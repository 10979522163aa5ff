//! The control plane: which sandboxes exist, how long they live, what environment their code
//! gets, and the limits on what callers ask for. It knows no HTTP: the API crate turns requests
//! into calls here and [`ControlError`]s into responses.
//!
//! # Layout
//! - [`accounts`]: sign-up, keys, login links, sessions, the per-request daily quota.
//! - [`plans`]: what each plan allows.
//! - [`ports`]: public names, URLs and access tokens of exposed ports.
//! - [`processes`]: background processes of a sandbox (their table and bounds).
//! - this file: the sandbox registry. Every lookup is scoped to the caller (another user's
//!   sandbox is "not found"); sandbox slots per plan are claimed in the store, exactly.

pub mod accounts;
pub mod client_limits;
pub mod packages;
pub mod plans;
pub mod ports;
pub mod processes;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cerver_runtime::{Engine, FileList, RunHandle, Runtime, RuntimeError, Sandbox};
use cerver_store::{NewSandbox, Store, StoreError};

pub use accounts::{Accounts, Caller, Usage};

/// Default sandbox lifetime (documented: 300000 ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;
/// Default run timeout in seconds (documented: 30).
pub const DEFAULT_RUN_TIMEOUT_S: f64 = 30.0;
/// Environment limits: they end up in every process's environment block.
const MAX_ENV_VARS: usize = 256;
const MAX_ENV_NAME: usize = 256;
const MAX_ENV_BYTES: usize = 64 * 1024;
const MAX_METADATA: usize = 64;
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest code accepted for one run.
pub const MAX_CODE_BYTES: usize = 1 << 20;
/// Most bytes of the installer's log kept per stream.
const MAX_INSTALL_LOG: usize = 64 << 10;
/// How long packing or unpacking a workspace may take during an upgrade.
const UPGRADE_STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Run inside the old sandbox: the workspace as a tar stream on stdout.
/// Only the standard library is on its path: the workspace (first on a run's path) is the
/// user's, and a `tarfile.py` there must not run instead.
const PACK_WORKSPACE: &str = r#"import sys
sys.path[:] = [p for p in sys.path if p.startswith("/usr/")]
import tarfile
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as t:
    t.add("/home/user", arcname=".")
"#;
/// Run inside the new sandbox: the tar stream from stdin into the workspace.
const UNPACK_WORKSPACE: &str = r#"import sys
sys.path[:] = [p for p in sys.path if p.startswith("/usr/")]
import tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    t.extractall("/home/user")
"#;

/// The result of `POST /sandbox/:id/install`.
#[derive(Debug, Clone)]
pub struct InstallOutcome {
    pub success: bool,
    pub upgraded: bool,
    /// The installer's log (bounded).
    pub log: String,
}

fn install_outcome(out: cerver_runtime::run::RunOutput, upgraded: bool) -> InstallOutcome {
    let mut log = String::from_utf8_lossy(&out.stderr).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    if let Some(e) = &out.exit.error {
        log.push_str(e);
    }
    InstallOutcome {
        success: out.exit.exit_code == 0,
        upgraded,
        log,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// No such sandbox (or not the caller's).
    #[error("sandbox not found")]
    NotFound,
    /// The sandbox has no background process with this pid.
    #[error("no background process with pid {0} in this sandbox")]
    ProcessNotFound(i32),
    /// A limit was hit.
    #[error("{0}")]
    Limit(String),
    /// No or an invalid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's plan does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's daily request budget is spent.
    #[error("{message}")]
    RateLimited { message: String, usage: Usage },
    /// A dependency (e.g. mail delivery) is not available right now.
    #[error("{0}")]
    Unavailable(String),
    /// The request conflicts with the sandbox's state (e.g. its workspace cannot be carried
    /// over in an upgrade).
    #[error("{0}")]
    Conflict(String),
    /// Something unexpected (logged with detail, shown bare).
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Settings of the control plane.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Longest sandbox lifetime a caller may ask for (ms).
    pub max_timeout_ms: u64,
    /// Most sandboxes alive at once on this server.
    pub max_sandboxes: usize,
    /// Most runs in flight per sandbox.
    pub max_concurrent_runs: usize,
    /// Most connections proxied to one sandbox's exposed ports at once.
    pub max_proxy_connections: usize,
    /// Most connections proxied to all sandboxes at once (the whole server).
    pub max_proxy_connections_total: usize,
    /// How exposed ports are named and reached.
    pub ports: ports::PortConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            max_timeout_ms: 24 * 3600 * 1000,
            max_sandboxes: 200,
            max_concurrent_runs: 16,
            max_proxy_connections: 64,
            max_proxy_connections_total: 1024,
            ports: ports::PortConfig::default(),
        }
    }
}

/// What a caller may set when creating a sandbox.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub engine: Option<String>,
    pub envs: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub metadata: BTreeMap<String, String>,
}

/// A sandbox and what the control plane knows about it.
pub struct Entry {
    pub id: String,
    pub owner: String,
    pub engine: Engine,
    pub sandbox: Arc<Sandbox>,
    pub envs: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: SystemTime,
    lifetime: Mutex<Lifetime>,
    runs: Arc<tokio::sync::Semaphore>,
    /// The label in port host names (see [`ports::host_label`]).
    label: String,
    /// Ports whose URL the owner asked for (`GET /sandbox/:id/host`): only these are proxied.
    exposed_ports: Mutex<BTreeSet<u16>>,
    proxy_connections: Arc<tokio::sync::Semaphore>,
    processes: processes::ProcessTable,
}

#[derive(Clone, Copy)]
struct Lifetime {
    timeout_ms: u64,
    expires_at: SystemTime,
}

/// A snapshot of an entry's lifetime.
#[derive(Debug, Clone, Copy)]
pub struct LifetimeView {
    pub timeout_ms: u64,
    pub expires_at_unix: u64,
    pub remaining_ms: u64,
    /// The requested timeout was lowered to the maximum.
    pub capped: bool,
}

impl Entry {
    pub fn lifetime(&self) -> LifetimeView {
        let l = *self.lifetime.lock().unwrap();
        view(l, false)
    }

    /// The sandbox's label in port host names (unique among live sandboxes).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether `port` was exposed through `GET /sandbox/:id/host` (which checks the plan).
    pub fn is_exposed(&self, port: u16) -> bool {
        self.exposed_ports.lock().unwrap().contains(&port)
    }

    /// One of the sandbox's proxied-connection slots, or `None` when all are taken.
    pub fn proxy_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.proxy_connections.clone().try_acquire_owned().ok()
    }

    /// Whether the sandbox is alive and within its lifetime.
    pub fn is_live(&self) -> bool {
        self.sandbox.is_alive() && self.lifetime().remaining_ms > 0
    }
}

fn view(l: Lifetime, capped: bool) -> LifetimeView {
    let remaining = l
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    LifetimeView {
        timeout_ms: l.timeout_ms,
        expires_at_unix: unix(l.expires_at),
        remaining_ms: remaining.as_millis() as u64,
        capped,
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

pub struct Control {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    cfg: ControlConfig,
    sandboxes: Mutex<HashMap<String, Arc<Entry>>>,
    /// Sandboxes being upgraded (workers → containers); see [`UpgradeClaim`].
    upgrading: Mutex<HashSet<String>>,
    /// Labels of sandboxes being created (not yet in `sandboxes`); see [`LabelClaim`].
    pending_labels: Mutex<HashSet<String>>,
    /// Becomes true when the server starts shutting down (followers of processes and proxied
    /// exchanges stop).
    closing: tokio::sync::watch::Sender<bool>,
    /// The server's proxied-connection slots, shared by all sandboxes.
    proxy_connections: Arc<tokio::sync::Semaphore>,
}

/// A sandbox id held while that sandbox is upgraded, released when dropped.
struct UpgradeClaim<'a> {
    control: &'a Control,
    id: String,
}

impl<'a> UpgradeClaim<'a> {
    fn take(control: &'a Control, id: &str) -> Option<UpgradeClaim<'a>> {
        control
            .upgrading
            .lock()
            .unwrap()
            .insert(id.to_string())
            .then(|| UpgradeClaim {
                control,
                id: id.to_string(),
            })
    }
}

impl Drop for UpgradeClaim<'_> {
    fn drop(&mut self) {
        self.control.upgrading.lock().unwrap().remove(&self.id);
    }
}

/// The last line of a sandbox step's error output (or its run error), at most 300 bytes: what
/// a message to the caller may quote of it.
fn last_line(stderr: &[u8], error: Option<&str>) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .or(error)
        .unwrap_or("failed");
    line.chars().take(300).collect()
}

/// A label held for a sandbox being created, released when the claim is dropped (by then the
/// sandbox is in the registry, or its creation failed).
struct LabelClaim<'a> {
    control: &'a Control,
    label: String,
}

impl Drop for LabelClaim<'_> {
    fn drop(&mut self) {
        self.control
            .pending_labels
            .lock()
            .unwrap()
            .remove(&self.label);
    }
}

fn store_err(e: StoreError) -> ControlError {
    ControlError::Internal(format!("store: {e}"))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

/// A run request after validation.
pub struct RunParams {
    pub code: String,
    pub envs: BTreeMap<String, String>,
    pub timeout_s: Option<f64>,
}

fn validate_env(envs: &BTreeMap<String, String>) -> Result<(), ControlError> {
    if envs.len() > MAX_ENV_VARS {
        return Err(ControlError::BadRequest(format!(
            "at most {MAX_ENV_VARS} environment variables"
        )));
    }
    let mut total = 0;
    for (k, v) in envs {
        let valid_name = !k.is_empty()
            && k.len() <= MAX_ENV_NAME
            && !k.contains(['=', '\0'])
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(ControlError::BadRequest(format!(
                "invalid environment variable name {:?}",
                k.chars().take(64).collect::<String>()
            )));
        }
        if v.contains('\0') {
            return Err(ControlError::BadRequest(format!(
                "environment variable {k} contains a NUL byte"
            )));
        }
        total += k.len() + v.len() + 2;
    }
    if total > MAX_ENV_BYTES {
        return Err(ControlError::BadRequest(format!(
            "environment larger than {MAX_ENV_BYTES} bytes"
        )));
    }
    Ok(())
}

fn parse_engine(engine: Option<&str>) -> Result<Engine, ControlError> {
    match engine.unwrap_or("workers") {
        "workers" => Ok(Engine::Workers),
        "containers" => Ok(Engine::Containers),
        other => Err(ControlError::BadRequest(format!(
            "unknown engine {:?}: use \"workers\" or \"containers\"",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

impl Control {
    /// Sandboxes do not survive a server restart: records the store still shows as active are
    /// closed first.
    pub async fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        cfg: ControlConfig,
    ) -> Result<Arc<Control>, ControlError> {
        let now = cerver_store::now_ms();
        for record in store.sandboxes_left_active().await.map_err(store_err)? {
            store
                .mark_sandbox_deleted(&record.id, now)
                .await
                .map_err(store_err)?;
        }
        let proxy_connections =
            Arc::new(tokio::sync::Semaphore::new(cfg.max_proxy_connections_total));
        let control = Arc::new(Control {
            runtime,
            store,
            cfg,
            sandboxes: Mutex::new(HashMap::new()),
            upgrading: Mutex::new(HashSet::new()),
            pending_labels: Mutex::new(HashSet::new()),
            closing: tokio::sync::watch::Sender::new(false),
            proxy_connections,
        });
        tokio::spawn(reaper(Arc::downgrade(&control)));
        Ok(control)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// How exposed ports are named and reached.
    pub fn ports(&self) -> &ports::PortConfig {
        &self.cfg.ports
    }

    /// One of the server's proxied-connection slots (all sandboxes together), or `None` when
    /// all are taken.
    pub fn proxy_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.proxy_connections.clone().try_acquire_owned().ok()
    }

    /// A new sandbox id whose label no live or pending sandbox has (a fresh uuid until then).
    fn new_sandbox_id(&self) -> (String, LabelClaim<'_>) {
        let sandboxes = self.sandboxes.lock().unwrap();
        let mut pending = self.pending_labels.lock().unwrap();
        loop {
            let id = uuid::Uuid::new_v4().to_string();
            let label = ports::host_label(&id);
            let taken = pending.contains(&label) || sandboxes.values().any(|e| e.label() == label);
            if !taken {
                pending.insert(label.clone());
                return (
                    id,
                    LabelClaim {
                        control: self,
                        label,
                    },
                );
            }
        }
    }

    /// The live sandbox labelled `label` (port host names), whoever owns it.
    pub fn by_label(&self, label: &str) -> Option<Arc<Entry>> {
        let found = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .find(|e| e.label() == label)
            .cloned();
        found.filter(|e| e.is_live())
    }

    /// The caller's maximum sandbox lifetime: their plan's, within the server's.
    pub fn max_timeout_for(&self, caller: &Caller) -> u64 {
        caller.limits.max_timeout_ms.min(self.cfg.max_timeout_ms)
    }

    fn timeout_ms(&self, requested: Option<u64>, max: u64) -> Result<(u64, bool), ControlError> {
        let ms = requested.unwrap_or(DEFAULT_TIMEOUT_MS.min(max));
        if ms == 0 {
            return Err(ControlError::BadRequest(
                "timeout_ms must be positive".into(),
            ));
        }
        if ms > max {
            return Ok((max, true));
        }
        Ok((ms, false))
    }

    pub async fn create(
        &self,
        caller: &Caller,
        opts: CreateOptions,
    ) -> Result<(Arc<Entry>, LifetimeView), ControlError> {
        let owner = caller.user.id.as_str();
        let engine = parse_engine(opts.engine.as_deref())?;
        validate_env(&opts.envs)?;
        let metadata_bytes: usize = opts.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if opts.metadata.len() > MAX_METADATA || metadata_bytes > MAX_METADATA_BYTES {
            return Err(ControlError::BadRequest(format!(
                "metadata is limited to {MAX_METADATA} pairs and {MAX_METADATA_BYTES} bytes"
            )));
        }
        let (timeout_ms, capped) =
            self.timeout_ms(opts.timeout_ms, self.max_timeout_for(caller))?;
        if self.sandboxes.lock().unwrap().len() >= self.cfg.max_sandboxes {
            return Err(ControlError::Limit(
                "this server runs its maximum number of sandboxes".into(),
            ));
        }
        let now = SystemTime::now();
        let lifetime = Lifetime {
            timeout_ms,
            expires_at: now + Duration::from_millis(timeout_ms),
        };
        let (id, label_claim) = self.new_sandbox_id();
        // Claim one of the plan's sandbox slots atomically, then build the sandbox.
        let record = NewSandbox {
            id: id.clone(),
            user_id: owner.to_string(),
            engine: engine.as_str().to_string(),
            created_at: unix_ms(now),
            expires_at: unix_ms(lifetime.expires_at),
            metadata: serde_json::to_value(&opts.metadata).unwrap_or_default(),
        };
        let claim = self
            .store
            .try_insert_sandbox_if_below(record, caller.limits.max_sandboxes, unix_ms(now))
            .await;
        match claim {
            Ok(_) => {}
            Err(StoreError::SandboxLimit { limit }) => {
                return Err(ControlError::Limit(format!(
                    "the {} plan allows {limit} sandbox(es) at a time; delete one first",
                    caller.user.plan
                )));
            }
            Err(e) => return Err(store_err(e)),
        }
        let sandbox = match self.runtime.create(engine).await {
            Ok(sb) => sb,
            Err(e) => {
                let _ = self
                    .store
                    .mark_sandbox_deleted(&id, cerver_store::now_ms())
                    .await;
                return Err(e.into());
            }
        };
        let entry = Arc::new(Entry {
            id,
            owner: owner.to_string(),
            engine,
            sandbox,
            envs: opts.envs,
            metadata: opts.metadata,
            created_at: now,
            lifetime: Mutex::new(lifetime),
            runs: Arc::new(tokio::sync::Semaphore::new(self.cfg.max_concurrent_runs)),
            label: label_claim.label.clone(),
            exposed_ports: Mutex::new(BTreeSet::new()),
            proxy_connections: Arc::new(tokio::sync::Semaphore::new(
                self.cfg.max_proxy_connections,
            )),
            processes: Default::default(),
        });
        tracing::info!(sandbox.id = %entry.id, user.id = %owner, engine = engine.as_str(), "sandbox created");
        self.sandboxes
            .lock()
            .unwrap()
            .insert(entry.id.clone(), entry.clone());
        Ok((entry, view(lifetime, capped)))
    }

    /// The caller's live sandbox `id`.
    pub fn get(&self, owner: &str, id: &str) -> Result<Arc<Entry>, ControlError> {
        let entry = self.sandboxes.lock().unwrap().get(id).cloned();
        match entry {
            Some(e) if e.owner == owner && e.is_live() => Ok(e),
            _ => Err(ControlError::NotFound),
        }
    }

    pub fn list(&self, owner: &str) -> Vec<Arc<Entry>> {
        let mut list: Vec<_> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.owner == owner && e.sandbox.is_alive())
            .cloned()
            .collect();
        list.sort_by_key(|e| e.created_at);
        list
    }

    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), ControlError> {
        let entry = self.get(owner, id)?;
        self.remove(&entry).await;
        Ok(())
    }

    /// Whether `entry` is still the one registered under its id.
    fn is_registered(&self, entry: &Arc<Entry>) -> bool {
        self.sandboxes
            .lock()
            .unwrap()
            .get(&entry.id)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
    }

    async fn remove(&self, entry: &Entry) {
        // Whatever is registered under the id goes: `entry` itself, or the containers sandbox
        // that an upgrade put in its place after the caller looked it up.
        let current = self.sandboxes.lock().unwrap().remove(&entry.id);
        if let Some(current) = current
            && !std::ptr::eq(Arc::as_ptr(&current), entry)
        {
            current.sandbox.destroy().await;
        }
        if let Err(e) = self
            .store
            .mark_sandbox_deleted(&entry.id, cerver_store::now_ms())
            .await
        {
            tracing::error!(sandbox.id = %entry.id, "could not record the deletion: {e}");
        }
        entry.sandbox.destroy().await;
        tracing::info!(sandbox.id = %entry.id, "sandbox destroyed");
    }

    /// Sets the remaining lifetime to `timeout_ms` from now (capped at the caller's maximum).
    pub async fn set_timeout(
        &self,
        caller: &Caller,
        id: &str,
        timeout_ms: u64,
    ) -> Result<LifetimeView, ControlError> {
        let entry = self.get(&caller.user.id, id)?;
        let (ms, capped) = self.timeout_ms(Some(timeout_ms), self.max_timeout_for(caller))?;
        let l = Lifetime {
            timeout_ms: ms,
            expires_at: SystemTime::now() + Duration::from_millis(ms),
        };
        *entry.lifetime.lock().unwrap() = l;
        self.store
            .set_sandbox_expiry(id, unix_ms(l.expires_at))
            .await
            .map_err(store_err)?;
        Ok(view(l, capped))
    }

    /// The environment code sees: defaults, then the sandbox's envs, then the run's overrides.
    pub fn run_env(
        entry: &Entry,
        overrides: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("CERVER_SANDBOX_ID", entry.id.as_str()),
            ("CERVER_ENGINE", entry.engine.as_str()),
            ("HOME", "/home/user"),
            ("USER", "user"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("PYTHONUNBUFFERED", "1"),
            ("TMPDIR", "/tmp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if entry.engine == Engine::Containers {
            // As in an activated venv: `python`, `pip`-installed scripts come from it.
            env.insert("PATH".into(), cerver_runtime::packages::VENV_PATH.into());
            env.insert("VIRTUAL_ENV".into(), cerver_runtime::packages::VENV.into());
        }
        env.extend(entry.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Starts a run; its timeout never goes past the sandbox's remaining lifetime.
    pub async fn run(
        &self,
        owner: &str,
        id: &str,
        params: RunParams,
    ) -> Result<RunHandle, ControlError> {
        let entry = self.get(owner, id)?;
        if params.code.len() > MAX_CODE_BYTES {
            return Err(ControlError::BadRequest(format!(
                "code is larger than {MAX_CODE_BYTES} bytes"
            )));
        }
        validate_env(&params.envs)?;
        let timeout_s = params.timeout_s.unwrap_or(DEFAULT_RUN_TIMEOUT_S);
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(ControlError::BadRequest(
                "timeout must be a positive number of seconds".into(),
            ));
        }
        let remaining = Duration::from_millis(entry.lifetime().remaining_ms);
        let timeout = Duration::from_secs_f64(timeout_s.min(1e9)).min(remaining);
        let permit =
            entry.runs.clone().try_acquire_owned().map_err(|_| {
                ControlError::Limit("too many runs in progress in this sandbox".into())
            })?;
        let env = Self::run_env(&entry, &params.envs);
        let spec = cerver_runtime::run::code_spec(params.code, env);
        let handle = entry.sandbox.start(&spec, None, timeout).await?;
        Ok(handle.with_permit(permit))
    }

    pub async fn write_file(
        &self,
        owner: &str,
        id: &str,
        path: &str,
        content: Bytes,
    ) -> Result<u64, ControlError> {
        let entry = self.get(owner, id)?;
        let max = self.runtime.config().max_file_bytes;
        Ok(entry.sandbox.write_file(path, content, max).await?)
    }

    pub async fn read_file(
        &self,
        owner: &str,
        id: &str,
        path: &str,
    ) -> Result<Vec<u8>, ControlError> {
        let entry = self.get(owner, id)?;
        let max = self.runtime.config().max_file_bytes;
        Ok(entry.sandbox.read_file(path, max).await?)
    }

    pub async fn list_files(
        &self,
        owner: &str,
        id: &str,
        path: &str,
    ) -> Result<FileList, ControlError> {
        let entry = self.get(owner, id)?;
        let max = self.runtime.config().max_list_entries;
        Ok(entry.sandbox.list_files(path, max).await?)
    }

    /// `POST /sandbox/:id/install`: validates the requirements, upgrades a workers sandbox
    /// to containers in place, then installs inside the sandbox (see
    /// `cerver_runtime::packages` for how downloads are shared).
    pub async fn install(
        &self,
        owner: &str,
        id: &str,
        packages: Option<&str>,
        package: Option<&str>,
    ) -> Result<InstallOutcome, ControlError> {
        let entry = self.get(owner, id)?;
        let requirements = packages::parse(packages, package)?;
        if self.runtime.installer().is_none() {
            return Err(ControlError::Unavailable(
                "this server has no package installer (uv); ask its operator to install it".into(),
            ));
        }
        // One deadline for the whole install, whatever the steps it takes.
        let deadline = tokio::time::Instant::now() + self.runtime.config().install_timeout;
        let (entry, upgraded) = match entry.engine {
            Engine::Workers => (self.upgrade(&entry).await?, true),
            Engine::Containers => (entry, false),
        };
        let _permit =
            entry.runs.clone().try_acquire_owned().map_err(|_| {
                ControlError::Limit("too many runs in progress in this sandbox".into())
            })?;
        // Fast path: everything is already in the shared wheel cache.
        let offline = self
            .run_installer(&entry, &requirements, true, deadline)
            .await?;
        if offline.exit.exit_code == 0 {
            return Ok(install_outcome(offline, upgraded));
        }
        let fetched =
            tokio::time::timeout_at(deadline, self.runtime.fetch_wheels(&requirements)).await;
        match fetched.unwrap_or_else(|_| Err("the install's time ran out".into())) {
            Ok(()) => {
                let offline = self
                    .run_installer(&entry, &requirements, true, deadline)
                    .await?;
                if offline.exit.exit_code == 0 {
                    return Ok(install_outcome(offline, upgraded));
                }
            }
            Err(e) => tracing::info!(sandbox.id = %entry.id, "wheel fetch: {e}"),
        }
        let online = self
            .run_installer(&entry, &requirements, false, deadline)
            .await?;
        Ok(install_outcome(online, upgraded))
    }

    async fn run_installer(
        &self,
        entry: &Entry,
        requirements: &[String],
        offline: bool,
        deadline: tokio::time::Instant,
    ) -> Result<cerver_runtime::run::RunOutput, ControlError> {
        let spec = cerver_runtime::packages::install_spec(requirements, offline);
        let remaining = Duration::from_millis(entry.lifetime().remaining_ms);
        let timeout = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(remaining)
            .max(Duration::from_millis(1));
        let handle = entry.sandbox.start(&spec, None, timeout).await?;
        Ok(handle.collect(MAX_INSTALL_LOG).await)
    }

    /// Replaces a workers sandbox by a containers one under the same id, carrying its
    /// workspace files over (a tar stream from the old sandbox into the new one, both packed
    /// and unpacked inside the sandboxes as the sandbox user). Processes of the old sandbox
    /// end.
    async fn upgrade(&self, old: &Arc<Entry>) -> Result<Arc<Entry>, ControlError> {
        // One upgrade per sandbox at a time; other sandboxes' upgrades do not wait.
        let Some(_upgrading) = UpgradeClaim::take(self, &old.id) else {
            return Err(ControlError::Limit(
                "this sandbox is being upgraded to containers already".into(),
            ));
        };
        // Another install may have upgraded it just before.
        if let Ok(current) = self.get(&old.owner, &old.id)
            && current.engine == Engine::Containers
        {
            return Ok(current);
        }
        let limit = old.sandbox.limits().workspace_bytes as usize + (16 << 20);
        let env = Self::run_env(old, &BTreeMap::new());
        let pack = old
            .sandbox
            .start(
                &cerver_runtime::run::code_spec(PACK_WORKSPACE.into(), env.clone()),
                None,
                UPGRADE_STEP_TIMEOUT,
            )
            .await?
            .collect(limit)
            .await;
        if !self.is_registered(old) {
            return Err(ControlError::NotFound); // deleted or expired meanwhile
        }
        if pack.stdout_truncated {
            return Err(ControlError::Conflict(
                "the workspace is too large to carry over to a containers sandbox".into(),
            ));
        }
        if pack.exit.exit_code != 0 {
            return Err(ControlError::Conflict(format!(
                "could not carry the workspace over to a containers sandbox: {}",
                last_line(&pack.stderr, pack.exit.error.as_deref())
            )));
        }
        let sandbox = self.runtime.create(Engine::Containers).await?;
        let unpack = sandbox
            .start(
                &cerver_runtime::run::code_spec(UNPACK_WORKSPACE.into(), env),
                Some(pack.stdout.into()),
                UPGRADE_STEP_TIMEOUT,
            )
            .await?
            .collect(MAX_INSTALL_LOG)
            .await;
        if unpack.exit.exit_code != 0 {
            sandbox.destroy().await;
            if !self.is_registered(old) {
                return Err(ControlError::NotFound);
            }
            return Err(ControlError::Conflict(format!(
                "could not carry the workspace over to a containers sandbox: {}",
                last_line(&unpack.stderr, unpack.exit.error.as_deref())
            )));
        }
        let new = Arc::new(Entry {
            id: old.id.clone(),
            owner: old.owner.clone(),
            engine: Engine::Containers,
            sandbox,
            envs: old.envs.clone(),
            metadata: old.metadata.clone(),
            created_at: old.created_at,
            lifetime: Mutex::new(*old.lifetime.lock().unwrap()),
            runs: old.runs.clone(),
            label: old.label.clone(),
            exposed_ports: Mutex::new(old.exposed_ports.lock().unwrap().clone()),
            proxy_connections: old.proxy_connections.clone(),
            // The old sandbox's processes end with it.
            processes: Default::default(),
        });
        // Swap only if the old entry is still the registered one: a delete or the reaper may
        // have removed it meanwhile, and the new sandbox must not outlive that.
        let swapped = {
            let mut map = self.sandboxes.lock().unwrap();
            let current = map.get(&old.id).is_some_and(|e| Arc::ptr_eq(e, old));
            if current {
                map.insert(new.id.clone(), new.clone());
            }
            current
        };
        if !swapped {
            new.sandbox.destroy().await;
            return Err(ControlError::NotFound);
        }
        if let Err(e) = self
            .store
            .set_sandbox_engine(&new.id, Engine::Containers.as_str())
            .await
        {
            tracing::error!(sandbox.id = %new.id, "could not record the upgrade: {e}");
        }
        old.sandbox.destroy().await;
        tracing::info!(sandbox.id = %new.id, "sandbox upgraded to containers");
        Ok(new)
    }

    /// `GET /sandbox/:id/host?port=N`: the plan is checked first, then the sandbox, the port and
    /// the engine. From then on the port is reachable through the proxy under the answer's host.
    pub fn host(
        &self,
        caller: &Caller,
        id: &str,
        port: &str,
    ) -> Result<ports::Exposure, ControlError> {
        if !caller.limits.port_exposure {
            return Err(ControlError::Forbidden(format!(
                "the {} plan does not include port exposure; upgrade to free or pro",
                caller.user.plan
            )));
        }
        let entry = self.get(&caller.user.id, id)?;
        let port = match port.parse::<u16>() {
            Ok(p) if p >= 1 && !port.starts_with(['0', '+']) => p,
            _ => {
                return Err(ControlError::BadRequest(
                    "port must be a number from 1 to 65535".into(),
                ));
            }
        };
        if entry.engine == Engine::Workers {
            return Err(ControlError::BadRequest(
                "port exposure needs a sandbox created with \"engine\": \"containers\"".into(),
            ));
        }
        if entry.exposed_ports.lock().unwrap().insert(port) {
            tracing::info!(sandbox.id = %entry.id, port, "port exposed");
        }
        Ok(self.cfg.ports.exposure(&entry.id, port))
    }

    /// Destroys every sandbox (server shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<_> = self
            .sandboxes
            .lock()
            .unwrap()
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in all {
            self.remove(&e).await;
        }
        self.runtime.shutdown().await;
    }

    async fn reap_expired(&self) {
        let now = SystemTime::now();
        let expired: Vec<_> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.lifetime.lock().unwrap().expires_at <= now || !e.sandbox.is_alive())
            .cloned()
            .collect();
        for e in expired {
            tracing::info!(sandbox.id = %e.id, "sandbox expired");
            self.remove(&e).await;
        }
    }
}

async fn reaper(control: std::sync::Weak<Control>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(c) = control.upgrade() else { return };
        c.reap_expired().await;
    }
}
