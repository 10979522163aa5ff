//! Sandbox lifecycle: create, get, list, delete, set the lifetime, install, expose a port.

use cerver_types::{
    DeleteResponse, HostResponse, InstallResponse, SandboxInfo, SandboxList, SetTimeoutResponse,
};

use crate::pause::{Found, Paused};
use crate::{Caller, Control, ControlError, CreateOptions, Entry, LifetimeView, unix};

fn capped_notice(capped: bool, max_ms: u64) -> Option<String> {
    capped.then(|| format!("timeout_ms was capped to the maximum of {max_ms} ms"))
}

fn info_of(e: &Entry, lifetime: LifetimeView, max_ms: u64) -> SandboxInfo {
    SandboxInfo {
        sandbox_id: e.id.clone(),
        engine: e.engine.as_str().into(),
        status: "ready".into(),
        timeout_ms: lifetime.timeout_ms,
        expires_at: lifetime.expires_at_unix,
        time_remaining_ms: lifetime.remaining_ms,
        created_at: unix(e.created_at),
        envs: e.envs.keys().cloned().collect(),
        metadata: e.metadata.clone(),
        notice: capped_notice(lifetime.capped, max_ms),
    }
}

pub async fn create(
    c: &Control,
    caller: &Caller,
    opts: CreateOptions,
) -> Result<SandboxInfo, ControlError> {
    let (entry, lifetime) = c.create(caller, opts).await?;
    Ok(info_of(&entry, lifetime, c.max_timeout_for(caller)))
}

/// A paused sandbox: `time_remaining_ms` frozen, `expires_at` when it would expire if resumed
/// now.
fn paused_info(p: &Paused) -> SandboxInfo {
    let l = p.lifetime();
    SandboxInfo {
        sandbox_id: p.id.clone(),
        engine: p.engine.as_str().into(),
        status: "paused".into(),
        timeout_ms: l.timeout_ms,
        expires_at: l.expires_at_unix,
        time_remaining_ms: l.remaining_ms,
        created_at: unix(p.created_at),
        envs: p.envs().cloned().collect(),
        metadata: p.metadata.clone(),
        notice: None,
    }
}

pub fn get(c: &Control, caller: &Caller, id: &str) -> Result<SandboxInfo, ControlError> {
    if let Some(p) = c.paused(&caller.user.id, id) {
        return Ok(paused_info(&p));
    }
    let e = c.get(&caller.user.id, id)?;
    Ok(info_of(&e, e.lifetime(), c.max_timeout_for(caller)))
}

/// The caller's active and paused sandboxes, oldest first.
pub fn list(c: &Control, caller: &Caller) -> SandboxList {
    let max = c.max_timeout_for(caller);
    let mut all: Vec<(std::time::SystemTime, SandboxInfo)> = c
        .list(&caller.user.id)
        .iter()
        .map(|e| (e.created_at, info_of(e, e.lifetime(), max)))
        .collect();
    let paused = c.list_paused(&caller.user.id);
    all.extend(paused.iter().map(|p| (p.created_at, paused_info(p))));
    all.sort_by_key(|(at, _)| *at);
    SandboxList {
        sandboxes: all.into_iter().map(|(_, info)| info).collect(),
    }
}

/// `POST /sandbox/:id/pause`: idempotent (a paused sandbox is answered as it is).
pub async fn pause(c: &Control, caller: &Caller, id: &str) -> Result<SandboxInfo, ControlError> {
    match c.pause(caller, id).await? {
        Found::Paused(p) => Ok(paused_info(&p)),
        Found::Ready(e) => Ok(info_of(&e, e.lifetime(), c.max_timeout_for(caller))),
    }
}

/// `POST /sandbox/:id/resume`: idempotent (a ready sandbox is answered as it is).
pub async fn resume(c: &Control, caller: &Caller, id: &str) -> Result<SandboxInfo, ControlError> {
    let e = c.resume(caller, id).await?;
    Ok(info_of(&e, e.lifetime(), c.max_timeout_for(caller)))
}

pub async fn delete(
    c: &Control,
    caller: &Caller,
    id: &str,
) -> Result<DeleteResponse, ControlError> {
    c.delete(&caller.user.id, id).await?;
    Ok(DeleteResponse {
        success: true,
        sandbox_id: id.to_string(),
    })
}

/// The remaining lifetime becomes `timeout_ms` from now (capped at the caller's maximum).
pub async fn set_timeout(
    c: &Control,
    caller: &Caller,
    id: &str,
    timeout_ms: u64,
) -> Result<SetTimeoutResponse, ControlError> {
    c.wake(caller, id).await?;
    let l = c.set_timeout(caller, id, timeout_ms).await?;
    Ok(SetTimeoutResponse {
        sandbox_id: id.to_string(),
        timeout_ms: l.timeout_ms,
        expires_at: l.expires_at_unix,
        time_remaining_ms: l.remaining_ms,
        notice: capped_notice(l.capped, c.max_timeout_for(caller)),
    })
}

/// Installs `packages` (whitespace-separated) and/or `package` into the sandbox.
pub async fn install(
    c: &Control,
    caller: &Caller,
    id: &str,
    packages: Option<&str>,
    package: Option<&str>,
) -> Result<InstallResponse, ControlError> {
    c.wake(caller, id).await?;
    let outcome = c.install(&caller.user.id, id, packages, package).await?;
    let (output, error) = if outcome.success {
        (Some(outcome.log), None)
    } else {
        (None, Some(outcome.log))
    };
    Ok(InstallResponse {
        success: outcome.success,
        upgraded: outcome.upgraded,
        output,
        error,
    })
}

/// Exposes `port` (as given, unparsed) of the sandbox through the proxy.
pub fn host(
    c: &Control,
    caller: &Caller,
    id: &str,
    port: &str,
) -> Result<HostResponse, ControlError> {
    let e = c.host(caller, id, port)?;
    Ok(HostResponse {
        sandbox_id: e.sandbox_id,
        port: e.port,
        url: e.url,
        host: e.host,
    })
}
