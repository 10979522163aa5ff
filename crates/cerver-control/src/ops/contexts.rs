//! Contexts: persistent interpreters in a sandbox (create, list, delete, restart); runs in
//! them go through [`crate::ops::runs`] with a `context_id`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cerver_types::{ContextInfo, ContextList, DeleteContextResponse};

use crate::contexts::{MAX_CONTEXTS, info};
use crate::env::{run_env, validate_env};
use crate::{Caller, Control, ControlError, Entry};

/// Longest `cwd` accepted.
const MAX_CWD: usize = 4096;

/// A context as a caller asks for it.
#[derive(Debug, Clone, Default)]
pub struct CreateContext {
    pub cwd: Option<String>,
    pub envs: BTreeMap<String, String>,
}

fn not_found(context_id: &str) -> ControlError {
    ControlError::ContextNotFound(context_id.to_string())
}

/// Starts a persistent interpreter in the sandbox.
pub async fn create(
    c: &Control,
    caller: &Caller,
    id: &str,
    req: CreateContext,
) -> Result<ContextInfo, ControlError> {
    let cwd = req.cwd.unwrap_or_default();
    if cwd.len() > MAX_CWD || cwd.contains('\0') {
        return Err(ControlError::invalid(
            "cwd must be a path of at most 4096 bytes without NUL",
        ));
    }
    validate_env(&req.envs)?;
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    let context_id = format!("ctx_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    if !entry.contexts.reserve(&context_id, cwd, req.envs) {
        return Err(ControlError::Limit(format!(
            "this sandbox already has {MAX_CONTEXTS} contexts; delete one first"
        )));
    }
    start(&entry, &context_id, true).await
}

/// Starts (or restarts) the context of slot `context_id`. A failed first start frees the
/// slot; a failed restart leaves it `dead`, to be restarted again or deleted.
async fn start(
    entry: &Arc<Entry>,
    context_id: &str,
    fresh: bool,
) -> Result<ContextInfo, ControlError> {
    let slot = entry
        .contexts
        .get(context_id)
        .ok_or_else(|| not_found(context_id))?;
    let env = run_env(entry, &slot.envs);
    let started = entry.sandbox.start_context(env, slot.cwd.clone()).await;
    let context = match started {
        Ok(c) => c,
        Err(e) => {
            if fresh {
                entry.contexts.remove(context_id);
            }
            return Err(e.into());
        }
    };
    if !entry.contexts.fill(context_id, context.clone()) {
        context.kill().await;
        return Err(not_found(context_id));
    }
    let slot = entry
        .contexts
        .get(context_id)
        .ok_or_else(|| not_found(context_id))?;
    Ok(info(context_id, &slot))
}

pub async fn list(c: &Control, caller: &Caller, id: &str) -> Result<ContextList, ControlError> {
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    Ok(ContextList {
        contexts: entry.contexts.list(),
    })
}

/// Ends the context's interpreter and everything it started.
pub async fn delete(
    c: &Control,
    caller: &Caller,
    id: &str,
    context_id: &str,
) -> Result<DeleteContextResponse, ControlError> {
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    let slot = entry
        .contexts
        .remove(context_id)
        .ok_or_else(|| not_found(context_id))?;
    if let Some(ctx) = slot.context {
        ctx.kill().await;
    }
    Ok(DeleteContextResponse {
        success: true,
        context_id: context_id.to_string(),
    })
}

/// A fresh interpreter under the same id, cwd and envs (the old one is killed, its state lost).
pub async fn restart(
    c: &Control,
    caller: &Caller,
    id: &str,
    context_id: &str,
) -> Result<ContextInfo, ControlError> {
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    let slot = entry
        .contexts
        .get(context_id)
        .ok_or_else(|| not_found(context_id))?;
    if let Some(ctx) = slot.context {
        ctx.kill().await;
    }
    start(&entry, context_id, false).await
}

/// The live context a run asks for.
pub(crate) fn context_of(
    entry: &Entry,
    context_id: &str,
) -> Result<Arc<cerver_runtime::Context>, ControlError> {
    entry
        .contexts
        .get(context_id)
        .and_then(|s| s.context)
        .ok_or_else(|| not_found(context_id))
}
