//! Pause and resume. A paused sandbox is stopped like a sandbox at server shutdown
//! ([`cerver_runtime::Sandbox::stop`]: every process ends, its memory, network and server slot
//! are released, its disk image stays) and recorded in the store with its lifetime frozen (the
//! lifetime left at the pause, in its durable JSON's `"paused"` member). Resume rebuilds it on
//! its image like a restart does ([`Control::rebuild_sandbox`]), with the deadline recomputed
//! from the frozen remainder.
//!
//! Paused sandboxes do not count against the plan's sandbox limit (the store's count skips
//! them), so resume claims a plan slot again, atomically (429 at the limit). They are capped per
//! user at [`PAUSED_PER_PLAN_SLOT`]× the plan's limit and deleted by the reaper after
//! `ControlConfig::paused_retention` (their store expiry is the end of the retention, so a
//! restarted server closes them the same way). Pause and resume of all sandboxes are
//! serialized by one lock (`Control::transitions`): they are rare, and a resume racing a
//! delete or a second resume would otherwise need a state machine per sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cerver_store::{SandboxRecord, StoreError};

use crate::durable::{Durable, PausedState, at_ms, ms_of};
use crate::registry::{LifetimeView, store_err};
use crate::{Caller, Control, ControlError, Engine, Entry};

/// Paused sandboxes a user may keep, per sandbox their plan allows at once.
pub const PAUSED_PER_PLAN_SLOT: u64 = 10;

/// A paused sandbox: its record and what rebuilding it takes.
pub struct Paused {
    pub id: String,
    pub owner: String,
    pub engine: Engine,
    pub metadata: BTreeMap<String, String>,
    pub created_at: SystemTime,
    pub(crate) record: SandboxRecord,
    pub(crate) durable: Durable,
    /// When the reaper deletes it.
    pub(crate) retained_until: SystemTime,
}

impl Paused {
    /// Its frozen lifetime; `expires_at_unix` is when it would expire if resumed now.
    pub fn lifetime(&self) -> LifetimeView {
        let remaining_ms = self.durable.paused.map_or(0, |p| p.remaining_ms);
        let timeout_ms = self.durable.timeout_ms;
        LifetimeView {
            timeout_ms,
            expires_at_unix: crate::unix(SystemTime::now() + Duration::from_millis(remaining_ms)),
            remaining_ms,
            capped: false,
        }
    }

    pub fn envs(&self) -> impl Iterator<Item = &String> {
        self.durable.envs.keys()
    }
}

/// A sandbox as the caller sees it: running or paused.
pub enum Found {
    Ready(Arc<Entry>),
    Paused(Arc<Paused>),
}

impl Control {
    /// The caller's paused sandbox `id`, if it is one.
    pub fn paused(&self, owner: &str, id: &str) -> Option<Arc<Paused>> {
        let found = self.paused.lock().unwrap().get(id).cloned();
        found.filter(|p| p.owner == owner)
    }

    /// The caller's paused sandboxes.
    pub fn list_paused(&self, owner: &str) -> Vec<Arc<Paused>> {
        let paused = self.paused.lock().unwrap();
        paused
            .values()
            .filter(|p| p.owner == owner)
            .cloned()
            .collect()
    }

    /// At start: registers a recorded paused sandbox (not rebuilt until resumed).
    pub(crate) fn register_paused(&self, record: &SandboxRecord, engine: Engine, d: Durable) {
        let paused = Paused {
            id: record.id.clone(),
            owner: record.user_id.clone(),
            engine,
            metadata: serde_json::from_value(record.metadata.clone()).unwrap_or_default(),
            created_at: at_ms(record.created_at),
            record: record.clone(),
            durable: d,
            retained_until: at_ms(record.expires_at),
        };
        let mut map = self.paused.lock().unwrap();
        map.insert(record.id.clone(), Arc::new(paused));
    }

    /// `POST /sandbox/:id/pause`. Pausing a paused sandbox answers it as it is.
    pub async fn pause(&self, caller: &Caller, id: &str) -> Result<Found, ControlError> {
        let owner = caller.user.id.as_str();
        let _one = self.transitions.lock().await;
        if let Some(p) = self.paused(owner, id) {
            return Ok(Found::Paused(p));
        }
        let entry = self.get(owner, id)?;
        if self.upgrading.lock().unwrap().contains(id) {
            return Err(ControlError::Conflict(
                "the sandbox is being upgraded; pause it when the upgrade is done".into(),
            ));
        }
        let cap = caller
            .limits
            .max_sandboxes
            .saturating_mul(PAUSED_PER_PLAN_SLOT);
        let count = self.store.paused_sandbox_count(owner).await;
        if count.map_err(store_err)? >= cap {
            crate::metrics::quota_rejected("paused_sandboxes");
            return Err(ControlError::Limit(format!(
                "the {} plan allows {cap} paused sandbox(es); delete one first",
                caller.user.plan
            )));
        }
        let now = SystemTime::now();
        let mut durable = Durable::of(&entry);
        durable.paused = Some(PausedState {
            remaining_ms: entry.lifetime().remaining_ms,
            at_ms: ms_of(now),
        });
        let retained_until = now + self.cfg.paused_retention;
        let state = durable.to_json();
        let expires = ms_of(retained_until);
        let recorded = self.store.set_sandbox_paused(id, &state, expires).await;
        if !recorded.map_err(store_err)? {
            return Err(ControlError::NotFound);
        }
        let record = self.store.sandbox(id).await.map_err(store_err)?;
        let record = record.ok_or(ControlError::NotFound)?;
        let paused = Arc::new(Paused {
            id: entry.id.clone(),
            owner: entry.owner.clone(),
            engine: entry.engine,
            metadata: entry.metadata.clone(),
            created_at: entry.created_at,
            record,
            durable,
            retained_until,
        });
        self.paused
            .lock()
            .unwrap()
            .insert(entry.id.clone(), paused.clone());
        self.sandboxes.lock().unwrap().remove(&entry.id);
        entry.sandbox.stop().await;
        entry.slot.lock().unwrap().take();
        crate::metrics::sandbox_destroyed(entry.engine);
        tracing::info!(sandbox.id = %entry.id, "sandbox paused");
        Ok(Found::Paused(paused))
    }

    /// `POST /sandbox/:id/resume`. Resuming a ready sandbox answers it as it is.
    pub async fn resume(&self, caller: &Caller, id: &str) -> Result<Arc<Entry>, ControlError> {
        let owner = caller.user.id.as_str();
        let _one = self.transitions.lock().await;
        let Some(p) = self.paused(owner, id) else {
            return self.get(owner, id);
        };
        let slot = self.sandbox_slot()?;
        let remaining = p.durable.paused.map_or(0, |s| s.remaining_ms);
        let now = SystemTime::now();
        let expires_at = now + Duration::from_millis(remaining);
        let mut durable = p.durable.clone();
        durable.paused = None;
        let claim = self
            .store
            .try_resume_sandbox_if_below(
                id,
                owner,
                caller.limits.max_sandboxes,
                ms_of(now),
                &durable.to_json(),
                ms_of(expires_at),
            )
            .await;
        match claim {
            Ok(true) => {}
            Ok(false) => return Err(ControlError::NotFound),
            Err(StoreError::SandboxLimit { limit }) => {
                crate::metrics::quota_rejected("sandboxes");
                return Err(ControlError::Limit(format!(
                    "the {} plan allows {limit} running sandbox(es) at a time; pause or delete one before resuming this one",
                    caller.user.plan
                )));
            }
            Err(e) => return Err(store_err(e)),
        }
        let sandbox = match self.rebuild_sandbox(p.engine, &durable).await {
            Ok(sandbox) => sandbox,
            Err(e) => {
                // Paused again, as it was: its files stay.
                let state = p.durable.to_json();
                let until = ms_of(p.retained_until);
                let _ = self.store.set_sandbox_paused(id, &state, until).await;
                return Err(e.into());
            }
        };
        let mut record = p.record.clone();
        record.expires_at = ms_of(expires_at);
        let entry = self.rebuilt_entry(&record, p.engine, sandbox, durable, slot);
        self.sandboxes
            .lock()
            .unwrap()
            .insert(entry.id.clone(), entry.clone());
        self.paused.lock().unwrap().remove(id);
        tracing::info!(sandbox.id = %id, "sandbox resumed");
        Ok(entry)
    }

    /// Auto-resume: a request that needs the sandbox running resumes a paused one first.
    pub async fn wake(&self, caller: &Caller, id: &str) -> Result<(), ControlError> {
        if self.paused(&caller.user.id, id).is_some() {
            self.resume(caller, id).await?;
        }
        Ok(())
    }

    /// Deletes the caller's paused sandbox `id` (record closed, image deleted); false when it
    /// is not a paused one.
    pub(crate) async fn delete_paused(&self, owner: &str, id: &str) -> bool {
        let _one = self.transitions.lock().await;
        let Some(p) = self.paused(owner, id) else {
            return false;
        };
        self.drop_paused(&p).await;
        true
    }

    async fn drop_paused(&self, p: &Paused) {
        self.paused.lock().unwrap().remove(&p.id);
        let now = cerver_store::now_ms();
        if let Err(e) = self.store.mark_sandbox_deleted(&p.id, now).await {
            tracing::error!(sandbox.id = %p.id, "could not record the deletion: {e}");
        }
        self.runtime.remove_disk(p.durable.disk()).await;
        tracing::info!(sandbox.id = %p.id, "paused sandbox deleted");
    }

    /// The reaper: deletes paused sandboxes past their retention.
    pub(crate) async fn reap_paused(&self) {
        let now = SystemTime::now();
        let old: Vec<_> = {
            let paused = self.paused.lock().unwrap();
            let past = paused.values().filter(|p| p.retained_until <= now);
            past.cloned().collect()
        };
        for p in old {
            let _one = self.transitions.lock().await;
            if self.paused.lock().unwrap().contains_key(&p.id) {
                tracing::info!(sandbox.id = %p.id, "paused sandbox retention ended");
                self.drop_paused(&p).await;
            }
        }
    }
}
