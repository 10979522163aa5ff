//! The control plane: which sandboxes exist, how long they live, what environment their code
//! gets, and the limits on what callers ask for. It knows no HTTP: [`ops`] is the one set of
//! operations that the HTTP handlers and the MCP tools both call, and [`ControlError`] is what
//! they map to their protocol.
//!
//! # Layout
//! - [`ops`]: every sandbox operation as a plain async function over domain types (create,
//!   get, list, delete, timeout, run, stream, processes, files, install, host).
//! - `durable`: sandboxes across server restarts (recorded, stopped, rebuilt).
//! - [`pause`]: pause (stopped, disk kept, lifetime frozen) and resume (rebuilt).
//! - [`registry`]: the sandbox registry, lifetimes and the reaper. Every lookup is scoped to
//!   the caller (another user's sandbox is "not found"); plan slots are claimed in the store.
//! - [`env`]: the environment runs get (defaults ← sandbox ← run) and the input limits.
//! - [`runs`]: starting a run (its timeout checked once) and shaping its result.
//! - [`stream`]: runs and processes as a stream of documented events.
//! - [`processes`]: background processes of a sandbox (their table and bounds).
//! - [`install`], [`upgrade`]: package installs and the workers → containers upgrade.
//! - [`accounts`], [`plans`], [`ports`], [`packages`]: users and keys, what plans allow,
//!   exposed ports, requirement parsing; [`client_limits`]: per-client-address limits on the
//!   routes that need no key.
//! - [`config`], [`error`]: settings (policy with today's values as defaults) and errors.
//! - [`metrics`]: metric names and events (from the runtime) and the scrape-time gauges.

pub mod accounts;
pub mod client_limits;
pub mod cluster;
pub mod config;
pub mod contexts;
mod durable;
pub mod env;
pub mod error;
pub mod install;
pub mod lines;
pub mod metrics;
pub mod ops;
pub mod packages;
pub mod pause;
pub mod plans;
pub mod ports;
pub mod processes;
pub mod registry;
pub mod runs;
pub mod stream;
mod transfers;
pub mod upgrade;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cerver_runtime::Runtime;
use cerver_store::Store;

pub use accounts::{Accounts, Caller, Usage};
/// Domain enums the API names (they live in the runtime, which the API does not depend on).
pub use cerver_runtime::Engine;
pub use config::{ControlConfig, ProcessLimits};
pub use error::{ControlError, FileErrorKind};
pub use install::InstallOutcome;
pub use registry::{CreateOptions, DEFAULT_TIMEOUT_MS, Entry, LifetimeView, unix};
pub use runs::{DEFAULT_RUN_TIMEOUT_S, RunParams};
pub use stream::EventStream;

pub struct Control {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    cfg: ControlConfig,
    sandboxes: Mutex<HashMap<String, Arc<Entry>>>,
    /// Paused sandboxes (not running, not in `sandboxes`); see `pause.rs`.
    paused: Mutex<HashMap<String, Arc<pause::Paused>>>,
    /// Held by every pause, resume and deletion of a paused sandbox (see `pause.rs`).
    transitions: tokio::sync::Mutex<()>,
    /// Sandboxes being upgraded (workers → containers); see `upgrade.rs`.
    upgrading: Mutex<HashSet<String>>,
    /// Labels of sandboxes being created (not yet in `sandboxes`); see `registry.rs`.
    pending_labels: Mutex<HashSet<String>>,
    /// Becomes true when the server starts shutting down (followers of processes and proxied
    /// exchanges stop).
    closing: tokio::sync::watch::Sender<bool>,
    /// The server's proxied-connection slots, shared by all sandboxes.
    proxy_connections: Arc<tokio::sync::Semaphore>,
    /// The server's sandbox slots (`max_sandboxes`): one is held for every sandbox that
    /// exists, from before it is built until it is destroyed (two during an upgrade).
    sandbox_slots: Arc<tokio::sync::Semaphore>,
    /// The server's transfer slots (`transfers.rs`).
    transfers: Arc<tokio::sync::Semaphore>,
}

impl Control {
    /// Sandboxes survive a server restart: the ones the store still shows as active and not
    /// expired are rebuilt from their disk images, the others closed (see `durable.rs`).
    pub async fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        cfg: ControlConfig,
    ) -> Result<Arc<Control>, ControlError> {
        let proxy_connections =
            Arc::new(tokio::sync::Semaphore::new(cfg.max_proxy_connections_total));
        let sandbox_slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_sandboxes));
        let transfers = Arc::new(tokio::sync::Semaphore::new(cfg.max_transfers.max(1)));
        let control = Arc::new(Control {
            sandbox_slots,
            transfers,
            runtime,
            store,
            cfg,
            sandboxes: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            transitions: tokio::sync::Mutex::new(()),
            upgrading: Mutex::new(HashSet::new()),
            pending_labels: Mutex::new(HashSet::new()),
            closing: tokio::sync::watch::Sender::new(false),
            proxy_connections,
        });
        control.revive_all().await?;
        tokio::spawn(registry::reaper(Arc::downgrade(&control)));
        Ok(control)
    }

    /// The control plane's settings.
    pub fn config(&self) -> &ControlConfig {
        &self.cfg
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

    /// The server is shutting down: streams that follow background processes and proxied
    /// exchanges (both may last forever) end, so that the graceful shutdown does not wait for
    /// them.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes true when the server starts shutting down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }
}
