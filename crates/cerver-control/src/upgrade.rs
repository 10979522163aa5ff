//! The workers → containers upgrade an install does first: a new containers sandbox under the
//! same id, the workspace carried over as a tar stream (packed in the old sandbox and unpacked
//! in the new one, both as the sandbox user, by the scripts in `upgrade/`). Processes of the
//! old sandbox end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cerver_jail::layout::WORKSPACE;
use cerver_runtime::Engine;
use cerver_runtime::run::code_spec;

use crate::env::run_env;
use crate::install::MAX_INSTALL_LOG;
use crate::processes::ProcessTable;
use crate::{Control, ControlError, Entry};

const PACK_WORKSPACE: &str = include_str!("upgrade/pack_workspace.py");
const UNPACK_WORKSPACE: &str = include_str!("upgrade/unpack_workspace.py");

fn script(source: &str) -> String {
    source.replace("@WORKSPACE@", WORKSPACE)
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

fn carry_over_failed(stderr: &[u8], error: Option<&str>) -> ControlError {
    ControlError::Conflict(format!(
        "could not carry the workspace over to a containers sandbox: {}",
        last_line(stderr, error)
    ))
}

/// Largest workspace an upgrade carries over (it is packed into the server's memory).
const MAX_CARRIED_WORKSPACE: u64 = 256 << 20;

impl Control {
    /// Replaces a workers sandbox by a containers one under the same id, carrying its
    /// workspace files over.
    pub(crate) async fn upgrade(&self, old: &Arc<Entry>) -> Result<Arc<Entry>, ControlError> {
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
        // The workspace is held in the server's memory until it is unpacked.
        let _transfer = self.transfer_permit(old)?;
        let step_timeout = self.cfg.upgrade_step_timeout;
        // The tar stream passes through the server's memory: bounded by the workspace quota,
        // and never past MAX_CARRIED_WORKSPACE (disk workspaces are much larger than before).
        let carried = old
            .sandbox
            .limits()
            .workspace_bytes
            .min(MAX_CARRIED_WORKSPACE);
        let limit = carried as usize + (16 << 20);
        let env = run_env(old, &BTreeMap::new());
        let pack_spec = code_spec(script(PACK_WORKSPACE), env.clone());
        let pack = old.sandbox.start(&pack_spec, None, step_timeout).await?;
        let pack = pack.collect(limit).await;
        if !self.is_registered(old) {
            return Err(ControlError::NotFound); // deleted or expired meanwhile
        }
        if pack.stdout_truncated {
            return Err(ControlError::Conflict(
                "the workspace is too large to carry over to a containers sandbox".into(),
            ));
        }
        if pack.exit.exit_code != 0 {
            return Err(carry_over_failed(&pack.stderr, pack.exit.error.as_deref()));
        }
        // The new sandbox needs a server slot of its own while the old one still exists.
        let slot = self.sandbox_slot()?;
        let sandbox = self.runtime.create(Engine::Containers).await?;
        if let Err(e) = sandbox.limit_egress(old.egress_rates).await {
            sandbox.destroy().await;
            return Err(e.into());
        }
        let unpack_spec = code_spec(script(UNPACK_WORKSPACE), env);
        let unpack = sandbox
            .start(&unpack_spec, Some(pack.stdout.into()), step_timeout)
            .await?
            .collect(MAX_INSTALL_LOG)
            .await;
        if unpack.exit.exit_code != 0 {
            sandbox.destroy().await;
            if !self.is_registered(old) {
                return Err(ControlError::NotFound);
            }
            return Err(carry_over_failed(
                &unpack.stderr,
                unpack.exit.error.as_deref(),
            ));
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
            processes: ProcessTable::new(self.cfg.processes),
            // And so do its contexts (an install's upgrade starts a new interpreter set).
            contexts: Default::default(),
            slot: Mutex::new(Some(slot)),
            egress_rates: old.egress_rates,
            transfers: old.transfers.clone(),
        });
        self.swap_in(old, new).await
    }

    /// Registers `new` in place of `old`, only if `old` is still the registered one: a delete
    /// or the reaper may have removed it meanwhile, and the new sandbox must not outlive that.
    async fn swap_in(&self, old: &Arc<Entry>, new: Arc<Entry>) -> Result<Arc<Entry>, ControlError> {
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
        self.persist(&new).await;
        old.sandbox.destroy().await;
        old.slot.lock().unwrap().take();
        tracing::info!(sandbox.id = %new.id, "sandbox upgraded to containers");
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_workspace() {
        for s in [PACK_WORKSPACE, UNPACK_WORKSPACE] {
            let s = script(s);
            assert!(s.contains(&format!("\"{WORKSPACE}\"")), "{s}");
            assert!(!s.contains('@'), "{s}");
        }
    }
}
