//! The sandbox registry: which sandboxes exist, whose they are and how long they live. Every
//! lookup is scoped to the caller (another user's sandbox is "not found"); sandbox slots per
//! plan are claimed in the store, exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cerver_runtime::{Engine, Sandbox};
use cerver_store::{NewSandbox, StoreError};

use crate::env::{parse_engine, validate_env, validate_metadata};
use crate::processes::ProcessTable;
use crate::{Caller, Control, ControlError, ports};

/// Default sandbox lifetime (documented: 300000 ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;

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
    pub(crate) lifetime: Mutex<Lifetime>,
    pub(crate) runs: Arc<tokio::sync::Semaphore>,
    /// The label in port host names (see [`ports::host_label`]).
    pub(crate) label: String,
    /// Ports whose URL the owner asked for (`GET /sandbox/:id/host`): only these are proxied.
    pub(crate) exposed_ports: Mutex<BTreeSet<u16>>,
    pub(crate) proxy_connections: Arc<tokio::sync::Semaphore>,
    pub(crate) processes: ProcessTable,
    /// Its contexts (persistent interpreters).
    pub(crate) contexts: crate::contexts::ContextTable,
    /// This sandbox's server-wide slot, given back when it is destroyed.
    pub(crate) slot: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    /// The sandbox's file-transfer slots (`transfers.rs`).
    pub(crate) transfers: Arc<tokio::sync::Semaphore>,
    /// The egress bounds of the owner's plan (kept for an upgrade's new sandbox).
    pub(crate) egress_rates: cerver_runtime::rates::EgressRates,
}

#[derive(Clone, Copy)]
pub(crate) struct Lifetime {
    pub(crate) timeout_ms: u64,
    pub(crate) expires_at: SystemTime,
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

    /// One of the sandbox's run slots, or a `Limit` error when all are taken.
    pub(crate) fn run_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ControlError> {
        self.runs
            .clone()
            .try_acquire_owned()
            .map_err(|_| ControlError::Limit("too many runs in progress in this sandbox".into()))
    }
}

pub(crate) fn view(l: Lifetime, capped: bool) -> LifetimeView {
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

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

pub(crate) fn store_err(e: StoreError) -> ControlError {
    ControlError::Internal(format!("store: {e}"))
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

impl Control {
    /// A new sandbox id whose label no live or pending sandbox has (a fresh uuid until then).
    fn new_sandbox_id(&self) -> (String, LabelClaim<'_>) {
        let sandboxes = self.sandboxes.lock().unwrap();
        let mut pending = self.pending_labels.lock().unwrap();
        loop {
            let id = uuid::Uuid::new_v4().to_string();
            let label = ports::host_label(&id);
            let paused = self.paused.lock().unwrap();
            let taken = pending.contains(&label)
                || sandboxes.values().any(|e| e.label() == label)
                || paused.keys().any(|id| ports::host_label(id) == label);
            drop(paused);
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

    /// The egress bounds of the caller's plan.
    fn egress_rates_for(&self, caller: &Caller) -> cerver_runtime::rates::EgressRates {
        if caller.limits.reduced_egress {
            self.cfg.trial_egress_rates
        } else {
            self.cfg.egress_rates
        }
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
        validate_metadata(&opts.metadata)?;
        let (timeout_ms, capped) =
            self.timeout_ms(opts.timeout_ms, self.max_timeout_for(caller))?;
        // Taken atomically, before anything is built; given back if creation fails.
        let slot = self.sandbox_slot()?;
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
                crate::metrics::quota_rejected("sandboxes");
                return Err(ControlError::Limit(format!(
                    "the {} plan allows {limit} sandbox(es) at a time; delete one first",
                    caller.user.plan
                )));
            }
            Err(e) => return Err(store_err(e)),
        }
        let egress_rates = self.egress_rates_for(caller);
        let created = match self.runtime.create(engine).await {
            Ok(sb) => match sb.limit_egress(egress_rates).await {
                Ok(()) => Ok(sb),
                Err(e) => Err((Some(sb), e)),
            },
            Err(e) => Err((None, e)),
        };
        let sandbox = match created {
            Ok(sb) => sb,
            Err((built, e)) => {
                if let Some(sb) = built {
                    sb.destroy().await;
                }
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
            processes: ProcessTable::new(self.cfg.processes),
            contexts: Default::default(),
            slot: Mutex::new(Some(slot)),
            egress_rates,
            transfers: crate::transfers::sandbox_slots(&self.cfg),
        });
        tracing::info!(sandbox.id = %entry.id, user.id = %owner, engine = engine.as_str(), "sandbox created");
        crate::metrics::sandbox_created(engine);
        self.sandboxes
            .lock()
            .unwrap()
            .insert(entry.id.clone(), entry.clone());
        self.persist(&entry).await;
        Ok((entry, view(lifetime, capped)))
    }

    /// The caller's live sandbox `id` (a paused one: a conflict naming resume).
    pub fn get(&self, owner: &str, id: &str) -> Result<Arc<Entry>, ControlError> {
        let entry = self.sandboxes.lock().unwrap().get(id).cloned();
        match entry {
            Some(e) if e.owner == owner && e.is_live() => Ok(e),
            _ if self.paused(owner, id).is_some() => Err(ControlError::Conflict(
                "the sandbox is paused; resume it first (POST /sandbox/{id}/resume)".into(),
            )),
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
        if self.delete_paused(owner, id).await {
            return Ok(());
        }
        let entry = self.get(owner, id)?;
        self.remove(&entry).await;
        Ok(())
    }

    /// One of the server's `max_sandboxes` slots, or the limit error when all are taken.
    /// Whether this server has a free sandbox slot (where a cluster places a create).
    pub fn has_room(&self) -> bool {
        self.sandbox_slots.available_permits() > 0
    }

    /// Whether this server holds the sandbox `id` (live, being upgraded or paused), whoever
    /// owns it: requests for it are served here, never forwarded to another node.
    pub fn holds(&self, id: &str) -> bool {
        self.sandboxes.lock().unwrap().contains_key(id)
            || self.paused.lock().unwrap().contains_key(id)
    }

    pub(crate) fn sandbox_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ControlError> {
        self.sandbox_slots.clone().try_acquire_owned().map_err(|_| {
            ControlError::Limit("this server runs its maximum number of sandboxes".into())
        })
    }

    /// Whether `entry` is still the one registered under its id.
    pub(crate) fn is_registered(&self, entry: &Arc<Entry>) -> bool {
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
            current.slot.lock().unwrap().take();
        }
        if let Err(e) = self
            .store
            .mark_sandbox_deleted(&entry.id, cerver_store::now_ms())
            .await
        {
            tracing::error!(sandbox.id = %entry.id, "could not record the deletion: {e}");
        }
        entry.sandbox.destroy().await;
        entry.slot.lock().unwrap().take();
        tracing::info!(sandbox.id = %entry.id, "sandbox destroyed");
        crate::metrics::sandbox_destroyed(entry.engine);
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
        self.persist(&entry).await;
        Ok(view(l, capped))
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
            self.persist_later(entry.clone());
        }
        Ok(self.cfg.ports.exposure(&entry.id, port))
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

/// Removes expired and dead sandboxes twice a second, for as long as the control plane lives.
pub(crate) async fn reaper(control: std::sync::Weak<Control>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(c) = control.upgrade() else { return };
        c.reap_expired().await;
        c.reap_paused().await;
    }
}
