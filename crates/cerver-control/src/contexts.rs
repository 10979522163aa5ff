//! A sandbox's contexts (persistent interpreters): at most [`MAX_CONTEXTS`], each with the
//! settings it was created with so that a restart gives the same interpreter afresh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cerver_runtime::Context;
use cerver_types::ContextInfo;

/// Most contexts one sandbox holds.
pub const MAX_CONTEXTS: usize = 8;

#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) cwd: String,
    pub(crate) envs: BTreeMap<String, String>,
    pub(crate) created_at: SystemTime,
    /// `None` while it is being started (the slot is taken).
    pub(crate) context: Option<Arc<Context>>,
}

/// The contexts of one sandbox, by id, in creation order.
#[derive(Default)]
pub(crate) struct ContextTable {
    slots: Mutex<Vec<(String, Slot)>>,
}

impl ContextTable {
    /// Takes a slot for a new context, or `None` at the bound.
    pub(crate) fn reserve(&self, id: &str, cwd: String, envs: BTreeMap<String, String>) -> bool {
        let mut slots = self.slots.lock().unwrap();
        if slots.len() >= MAX_CONTEXTS {
            return false;
        }
        let slot = Slot {
            cwd,
            envs,
            created_at: SystemTime::now(),
            context: None,
        };
        slots.push((id.to_string(), slot));
        true
    }

    pub(crate) fn get(&self, id: &str) -> Option<Slot> {
        let slots = self.slots.lock().unwrap();
        slots.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone())
    }

    /// Puts the started `context` in its slot (false: the slot was deleted meanwhile).
    pub(crate) fn fill(&self, id: &str, context: Arc<Context>) -> bool {
        let mut slots = self.slots.lock().unwrap();
        match slots.iter_mut().find(|(i, _)| i == id) {
            Some((_, slot)) => {
                slot.context = Some(context);
                slot.created_at = SystemTime::now();
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap();
        let at = slots.iter().position(|(i, _)| i == id)?;
        Some(slots.remove(at).1)
    }

    pub(crate) fn list(&self) -> Vec<ContextInfo> {
        let slots = self.slots.lock().unwrap();
        slots.iter().map(|(id, s)| info(id, s)).collect()
    }
}

pub(crate) fn info(id: &str, slot: &Slot) -> ContextInfo {
    let alive = slot.context.as_ref().is_some_and(|c| c.is_alive());
    ContextInfo {
        context_id: id.to_string(),
        status: if alive { "running" } else { "dead" }.into(),
        cwd: slot.cwd.clone(),
        pid: slot.context.as_ref().map_or(0, |c| c.pid()),
        created_at: slot
            .created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}
