//! Host side of Cerver sandboxes.
//!
//! # Layout
//! - [`Runtime`]: start-up checks, crash recovery, the warm pool, creating sandboxes.
//! - [`sandbox::Sandbox`]: one live sandbox (helper process + control socket); teardown.
//! - [`run`]: executing code or file operations and streaming their output.
//! - [`process`]: background processes (no timeout, output kept in bounded ring buffers).
//! - [`files`]: workspace path rules and the file operations.
//! - [`config`]: settings and per-engine limits.
//!
//! The privileged set-up happens in `cerver __jail` (crate `cerver-jail`); this crate never
//! forks the server process itself and contains no `unsafe`.

pub mod config;
pub mod context;
pub mod disk;
pub mod files;
pub mod metrics;
pub mod network;
pub mod packages;
pub mod preflight;
pub mod process;
pub mod rates;
pub mod results;
pub mod run;
pub mod sandbox;
pub mod selection;
pub mod template;
mod uids;
pub mod wheelhouse;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub use config::{Engine, RuntimeConfig};
pub use context::Context;
pub use files::{FileEntry, FileErrorKind, FileList};
pub use process::{Process, ProcessOutput, ProcessSnapshot, ProcessStatus};
pub use results::{ErrorInfo, RichResult};
pub use run::{RunEvent, RunExit, RunHandle, RunOutput};
pub use sandbox::Sandbox;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The host cannot isolate sandboxes.
    #[error("this host cannot run isolated sandboxes: {0}")]
    Unsupported(String),
    /// Creating a sandbox failed.
    #[error("could not create sandbox: {0}")]
    Create(String),
    /// The sandbox has been destroyed or died.
    #[error("the sandbox is no longer running")]
    Gone,
    /// The sandbox could not start a process: it did not start in time, or the zygote failed
    /// for a reason other than the process limit.
    #[error("the sandbox could not start the process: {0}")]
    CannotStart(String),
    /// The sandbox is at its process limit (a fork failed with `EAGAIN`).
    #[error("the sandbox is at its process limit: {0}")]
    ProcessLimit(String),
    /// A path given to a file operation is not acceptable.
    #[error("{0}")]
    BadPath(String),
    /// A file operation failed inside the sandbox.
    #[error("{message}")]
    File {
        kind: FileErrorKind,
        message: String,
    },
    /// Something unexpected on the host side.
    #[error("internal error: {0}")]
    Internal(String),
    /// This host lacks what the request needs (e.g. the containers engine's firewall).
    #[error("{0}")]
    Unavailable(String),
    /// The server's disk budget is spent (`disk::DiskBudget`): no new sandbox disk.
    #[error("{0}")]
    DiskFull(String),
    /// The context's interpreter is not running (it was killed or died).
    #[error("the context's interpreter is not running: {}", context::RESTART_HINT)]
    ContextDead,
}

/// Least time between two restarts of a template interpreter that died.
const TEMPLATE_RESTART_GAP: std::time::Duration = std::time::Duration::from_secs(10);

/// Caps the memory of all of this server's sandboxes together (their parent cgroup).
async fn cap_sandboxes(parent: &str, bytes: Option<u64>) -> Result<(), RuntimeError> {
    use cerver_jail::cgroup;
    let bytes = bytes.or_else(|| cgroup::host_memory().map(cgroup::default_parent_memory));
    let Some(bytes) = bytes else {
        return Err(RuntimeError::Create(
            "cannot read the host's memory size".into(),
        ));
    };
    let parent = parent.to_string();
    tokio::task::spawn_blocking(move || cgroup::cap_parent(&parent, bytes))
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))?
        .map_err(|e| RuntimeError::Create(e.to_string()))?;
    tracing::info!(bytes, "memory cap of all sandboxes together");
    Ok(())
}

struct Pool {
    engine: Engine,
    ready: Mutex<VecDeque<Arc<Sandbox>>>,
    wanted: Notify,
}

pub struct Runtime {
    cfg: RuntimeConfig,
    cgroup_parent: String,
    pools: Vec<Arc<Pool>>,
    /// The containers engine's network, or why it is unavailable on this host.
    egress: Result<network::EgressPlan, String>,
    /// The installer binary found at start.
    installer: Option<std::path::PathBuf>,
    /// Host-side wheel fetches run one at a time.
    fetch_lock: tokio::sync::Mutex<()>,
    /// The sandboxes' disk images.
    disks: Arc<disk::Disks>,
    /// The zygote's programs, compiled once by the sandboxes' interpreter when that works, in
    /// one sealed memfd that every helper gets (`cerver_jail::zygote::program_memfd`).
    zygote_program: Arc<std::os::fd::OwnedFd>,
    /// The template interpreter that forks workers helpers, when this host has one (`None`:
    /// it could not start, and is not tried again).
    template: Mutex<Option<Arc<template::Template>>>,
    /// When a dead template was last restarted.
    template_restarted: Mutex<Option<std::time::Instant>>,
}

impl Runtime {
    /// Checks the host, removes what a crashed predecessor left behind, and starts filling the
    /// warm pools.
    pub async fn start(cfg: RuntimeConfig) -> Result<Arc<Runtime>, RuntimeError> {
        preflight::check(&cfg)?;
        let instance = preflight::instance_id(&cfg.data_dir)?;
        let cgroup_parent = format!("cerver/{instance}");
        let parent = cgroup_parent.clone();
        let reaped = tokio::task::spawn_blocking(move || cerver_jail::cgroup::reap_stale(&parent))
            .await
            .unwrap_or(0);
        if reaped > 0 {
            tracing::warn!(reaped, "removed sandboxes left behind by a previous server");
        }
        // Images a previous server left are kept until the control plane has rebuilt its
        // sandboxes (`reap_disks`).
        let disks = Arc::new(disk::Disks::new(&cfg.data_dir, cfg.disk_budget)?);
        cap_sandboxes(&cgroup_parent, cfg.sandboxes_memory_bytes).await?;
        let pools = [Engine::Workers, Engine::Containers]
            .into_iter()
            .map(|engine| {
                Arc::new(Pool {
                    engine,
                    ready: Mutex::new(VecDeque::new()),
                    wanted: Notify::new(),
                })
            })
            .collect();
        let egress = network::setup(cfg.egress_subnet, &cfg.egress).await;
        match &egress {
            Ok(_) => rates::reap_stale(&cfg.uid_lock_dir).await,
            Err(reason) => tracing::warn!("containers engine unavailable: {reason}"),
        }
        let installer = cfg
            .installer
            .clone()
            .or_else(|| find_on_path("uv"))
            .filter(|path| {
                // A sandbox's init binds it after leaving host root: every directory above it
                // must be open to everyone (e.g. not under a 0700 home), or every containers
                // sandbox would fail to start.
                let reachable = packages::reachable_by_anyone(path);
                if !reachable {
                    tracing::warn!(
                        installer = %path.display(),
                        "the installer is not readable and executable by every user; not using it"
                    );
                }
                reachable
            });
        match &installer {
            Some(path) => tracing::info!(installer = %path.display(), "package installer"),
            None => tracing::warn!("no usable `uv` found: package installs will fail"),
        }
        std::fs::create_dir_all(&cfg.wheelhouse).map_err(|e| {
            RuntimeError::Create(format!("wheel cache {}: {e}", cfg.wheelhouse.display()))
        })?;
        selection::prepare(&cfg.wheelhouse).map_err(|e| {
            RuntimeError::Create(format!(
                "wheel selections next to {}: {e}",
                cfg.wheelhouse.display()
            ))
        })?;
        let compiled = precompile_zygote(&cfg).await;
        let zygote_program = cerver_jail::zygote::program_memfd(compiled.as_deref())
            .map(Arc::new)
            .map_err(|e| RuntimeError::Create(e.to_string()))?;
        let template = template::Template::start(&cfg, &zygote_program)
            .await
            .map(Arc::new);
        let rt = Arc::new(Runtime {
            cfg,
            cgroup_parent,
            pools,
            egress,
            installer,
            fetch_lock: tokio::sync::Mutex::new(()),
            disks,
            zygote_program,
            template: Mutex::new(template),
            template_restarted: Mutex::new(None),
        });
        if rt.cfg.pool_size > 0 {
            for pool in &rt.pools {
                tokio::spawn(refill(Arc::downgrade(&rt), pool.clone()));
            }
        }
        Ok(rt)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    fn pool(&self, engine: Engine) -> &Arc<Pool> {
        self.pools
            .iter()
            .find(|p| p.engine == engine)
            .expect("a pool per engine")
    }

    /// A ready sandbox: taken from the warm pool when one is there, built otherwise.
    pub async fn create(&self, engine: Engine) -> Result<Arc<Sandbox>, RuntimeError> {
        let pool = self.pool(engine);
        loop {
            let taken = pool.ready.lock().unwrap().pop_front();
            pool.wanted.notify_one();
            match taken {
                Some(sb) if sb.is_alive() => return Ok(sb),
                Some(sb) => sb.destroy().await,
                None => break,
            }
        }
        Ok(Arc::new(self.spawn(engine).await?))
    }

    /// Rebuilds a sandbox on the disk image a previous server left under `label` (same files,
    /// fresh processes).
    pub async fn revive(&self, engine: Engine, label: &str) -> Result<Arc<Sandbox>, RuntimeError> {
        // A sandbox of a server that was just killed may still be tearing down (its helper
        // noticed the lifeline): wait for its loop device to let go of the image.
        let image = self.disks.dir(label).join(disk::IMAGE);
        for _ in 0..100 {
            let check = image.clone();
            let busy = tokio::task::spawn_blocking(move || disk::in_use(&check))
                .await
                .unwrap_or(true);
            if !busy {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(Arc::new(self.spawn_with(engine, Some(label)).await?))
    }

    /// Deletes the disk image kept under `label` (a paused sandbox that is deleted).
    pub async fn remove_disk(&self, label: &str) {
        self.disks.remove(label).await;
    }

    /// Deletes the sandbox images that no live sandbox uses and `keep` does not name (what a
    /// previous server left and nobody rebuilt); returns how many.
    pub async fn reap_disks(&self, keep: std::collections::HashSet<String>) -> usize {
        let disks = self.disks.clone();
        tokio::task::spawn_blocking(move || disks.reap(|label| keep.contains(label)))
            .await
            .unwrap_or(0)
    }

    /// The live template interpreter; one that died is started again, at most every
    /// [`TEMPLATE_RESTART_GAP`] (until then, and if that fails, helpers are exec'd).
    async fn template(&self) -> Option<Arc<template::Template>> {
        let current = self.template.lock().unwrap().clone()?;
        if current.is_alive() {
            return Some(current);
        }
        {
            let mut last = self.template_restarted.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < TEMPLATE_RESTART_GAP) {
                return None;
            }
            *last = Some(std::time::Instant::now());
        }
        let fresh = template::Template::start(&self.cfg, &self.zygote_program).await?;
        let fresh = Arc::new(fresh);
        *self.template.lock().unwrap() = Some(fresh.clone());
        Some(fresh)
    }

    async fn spawn(&self, engine: Engine) -> Result<Sandbox, RuntimeError> {
        self.spawn_with(engine, None).await
    }

    async fn spawn_with(
        &self,
        engine: Engine,
        revive: Option<&str>,
    ) -> Result<Sandbox, RuntimeError> {
        let setup = match engine {
            Engine::Workers => sandbox::Setup {
                disks: Some(self.disks.clone()),
                zygote_program: Some(self.zygote_program.clone()),
                template: self.template().await,
                ..Default::default()
            },
            Engine::Containers => sandbox::Setup {
                disks: Some(self.disks.clone()),
                zygote_program: Some(self.zygote_program.clone()),
                // Not forked from the template: every fork of it has the same hash secret,
                // and a containers sandbox serves the network, where another tenant who can
                // compute its string hashes could send it colliding keys (ARCHITECTURE.md).
                template: None,
                egress: Some(self.egress.clone().map_err(|reason| {
                    RuntimeError::Unavailable(format!(
                        "the containers engine is unavailable on this host: {reason}"
                    ))
                })?),
                packages: Some(cerver_jail::protocol::Packages {
                    installer: self.installer.clone(),
                    // Sandboxes see selections of the cache, never its listing.
                    wheelhouse: selection::root(&self.cfg.wheelhouse),
                    venv_bytes: self.cfg.venv_bytes,
                }),
            },
        };
        Sandbox::spawn(&self.cfg, &self.cgroup_parent, engine, setup, revive).await
    }

    /// Warm sandboxes ready now, per engine.
    pub fn pool_ready(&self) -> Vec<(Engine, usize)> {
        self.pools
            .iter()
            .map(|p| (p.engine, p.ready.lock().unwrap().len()))
            .collect()
    }

    /// The installer binary, when the host has one.
    pub fn installer(&self) -> Option<&std::path::Path> {
        self.installer.as_deref()
    }

    /// Destroys the pooled sandboxes (live ones belong to their owners).
    pub async fn shutdown(&self) {
        for pool in &self.pools {
            let drained: Vec<_> = pool.ready.lock().unwrap().drain(..).collect();
            for sb in drained {
                sb.destroy().await;
            }
        }
    }
}

/// Compiles the zygote's programs with the sandboxes' interpreter (`cerver_jail::zygote::
/// precompile`). A failure is logged and leaves each zygote to compile its sources itself.
async fn precompile_zygote(cfg: &RuntimeConfig) -> Option<Vec<u8>> {
    // A healthy interpreter needs ~50 ms; a stuck one must not hold up the server's start.
    const PRECOMPILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    let python = cfg.rootfs.join(cfg.python.trim_start_matches('/'));
    let compiled = tokio::time::timeout(
        PRECOMPILE_TIMEOUT,
        tokio::task::spawn_blocking(move || cerver_jail::zygote::precompile(&python)),
    )
    .await;
    let failure = match compiled {
        Ok(Ok(Ok(bytes))) => {
            tracing::debug!(bytes = bytes.len(), "zygote precompiled");
            return Some(bytes);
        }
        Ok(Ok(Err(e))) => e.to_string(),
        Ok(Err(e)) => format!("precompile the zygote: {e}"),
        Err(_) => format!("precompile the zygote: no answer in {PRECOMPILE_TIMEOUT:?}"),
    };
    tracing::warn!("{failure}; every zygote compiles its own program");
    None
}

/// The absolute path of `name` on `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

async fn refill(rt: std::sync::Weak<Runtime>, pool: Arc<Pool>) {
    loop {
        let Some(runtime) = rt.upgrade() else { return };
        let have = pool.ready.lock().unwrap().len();
        if have < runtime.cfg.pool_size {
            if pool.engine == Engine::Containers && runtime.egress.is_err() {
                return; // logged at start; nothing to keep warm
            }
            match runtime.spawn(pool.engine).await {
                Ok(sb) => pool.ready.lock().unwrap().push_back(Arc::new(sb)),
                Err(e) => {
                    tracing::error!(engine = pool.engine.as_str(), "warm pool: {e}");
                    drop(runtime);
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
            continue;
        }
        drop(runtime);
        pool.wanted.notified().await;
    }
}
